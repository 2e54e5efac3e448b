//go:build !mutation

package export_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestAggregateSignsAgainAfterRotation: a key added signs every file of
// the window again at the next run, so that a phone of the new key alone
// verifies them all; files the new key signed stay when the old key
// leaves; the old key alone verifies none of the files made after.
func TestAggregateSignsAgainAfterRotation(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	ctx := context.Background()
	oldKey, newKey := softSigner(t, 7, "v1"), softSigner(t, 8, "v2")
	storeKeys(t, db, "", dayKey(t, 3), dayKey(t, 4))
	before, err := newAggregator(t, cfg, db, nil, oldKey).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}

	both, err := newAggregator(t, cfg, db, nil, oldKey, newKey).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(both.Files, before.Files) || len(both.Files) != len(before.Files) {
		t.Fatalf("files %v after the new key was added, %v before: want the same number, each signed again", both.Files, before.Files)
	}
	published(t, cfg.Dir, pubOf(newKey)) // fails the test if one does not verify
	published(t, cfg.Dir, pubOf(oldKey))

	// Running again with the same keys reads the files, keeps them.
	again, err := newAggregator(t, cfg, db, nil, oldKey, newKey).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again.Files, both.Files) {
		t.Fatalf("the same keys signed the files again: %v, then %v", both.Files, again.Files)
	}

	storeKeys(t, db, "", dayKey(t, 2))
	a := newAggregator(t, cfg, db, nil, newKey)
	export.SetNow(a, func() time.Time { return noon.Add(time.Minute) }) // a new batch
	newOnly, err := a.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(newOnly.Files) != len(both.Files)+1 || !slices.Equal(newOnly.Files[:len(both.Files)], both.Files) {
		t.Fatalf("files %v after the old key left, %v before: want those kept and one more", newOnly.Files, both.Files)
	}
	_, files := published(t, cfg.Dir, pubOf(newKey))
	if len(keySet(files)) != 3 {
		t.Errorf("%d keys published, want 3", len(keySet(files)))
	}
	last, err := os.ReadFile(filepath.Join(cfg.Dir, newOnly.Files[len(newOnly.Files)-1]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := export.Open(last, []*ecdsa.PublicKey{pubOf(oldKey)}); !errors.Is(err, export.ErrSignature) {
		t.Errorf("a file made after the old key left, under the old key: %v, want ErrSignature", err)
	}
}
