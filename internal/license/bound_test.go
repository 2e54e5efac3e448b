package license_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/license"
)

// TestMaxMirrorAgeSetting: an admin's bound (internal/settings) tightens
// VOUCH_LICENSE_MAX_MIRROR_AGE at the next decision, and never loosens it.
func TestMaxMirrorAgeSetting(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.sync.Once(ctx); err != nil {
		t.Fatal(err)
	}
	w.exec(`update registry_sync_state set synced_at = now() - interval '2 hours'`)
	bound := time.Hour
	d := license.New(license.Config{MaxMirrorAge: 24 * time.Hour}, nil, w.db, slog.New(slog.DiscardHandler)).
		WithMaxMirrorAge(func() time.Duration { return bound })
	for _, tt := range []struct {
		bound   time.Duration
		age     string
		allowed bool
	}{
		{time.Hour, "2 hours", false},       // tightened: refused
		{3 * time.Hour, "2 hours", true},    // within the admin's bound
		{48 * time.Hour, "25 hours", false}, // past the configuration's: never loosened
		{0, "2 hours", true},                // none: the configuration's
	} {
		bound = tt.bound
		w.exec(`update registry_sync_state set synced_at = now() - $1::interval`, tt.age)
		dec, err := d.Decide(ctx, gp)
		if dec.Allowed != tt.allowed || (!tt.allowed && (dec.Reason != license.ReasonUnavailable || err == nil)) {
			t.Errorf("bound %s, mirror %s old: %+v %v, want allowed %v", tt.bound, tt.age, dec, err, tt.allowed)
		}
	}
}
