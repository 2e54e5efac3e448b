package backoffice

import (
	"fmt"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/audit"
)

// TestRefusalCounts: refusals are counted per source, action and reason
// within a minute; a new minute closes the last, which is taken once; past
// MaxRefusalSources sources the rest are counted together under "*".
func TestRefusalCounts(t *testing.T) {
	t.Parallel()
	var r refusals
	t0 := time.Date(2026, 12, 7, 13, 0, 5, 0, time.UTC)
	refused := func(ip, reason string) audit.Entry {
		return audit.Entry{Action: audit.ActionRequestRefused, IP: ip, Reason: reason, Subject: "POST /x"}
	}
	for i := range MaxRefusalSources + 5 {
		r.add(refused(fmt.Sprintf("192.0.2.%d", i), "cross-origin"), t0.Add(time.Duration(i)*time.Millisecond))
	}
	r.add(refused("192.0.2.0", "cross-origin"), t0.Add(50*time.Second))
	r.add(refused("192.0.2.0", "signed-out"), t0.Add(50*time.Second)) // a new key past the cap: also "*"
	if got := r.take(t0.Add(54*time.Second), false); len(got) != 0 {
		t.Fatalf("the minute under way was taken: %d", len(got))
	}
	r.add(refused("192.0.2.0", "cross-origin"), t0.Add(56*time.Second)) // the next minute
	got := r.take(t0.Add(56*time.Second), false)
	if len(got) != 1 {
		t.Fatalf("%d minutes taken, want the closed one", len(got))
	}
	m := got[0]
	if len(m.order) != MaxRefusalSources+2 {
		t.Fatalf("%d rows, want %d sources and two overflows", len(m.order), MaxRefusalSources)
	}
	first := m.counts[refusalKey{ip: "192.0.2.0", action: audit.ActionRequestRefused, reason: "cross-origin"}]
	if first == nil || first.n != 2 || !first.firstAt.Equal(t0) || !first.last.Equal(t0.Add(50*time.Second)) {
		t.Errorf("first source: %+v", first)
	}
	over := m.counts[refusalKey{ip: "*", action: audit.ActionRequestRefused, reason: "cross-origin"}]
	if over == nil || over.n != 5 || over.first.IP != "*" {
		t.Errorf("overflow: %+v", over)
	}
	if o := m.counts[refusalKey{ip: "*", action: audit.ActionRequestRefused, reason: "signed-out"}]; o == nil || o.n != 1 {
		t.Errorf("overflow of another reason: %+v", o)
	}
	if again := r.take(t0.Add(56*time.Second), false); len(again) != 0 {
		t.Errorf("a minute taken twice")
	}
	if last := r.take(t0.Add(57*time.Second), true); len(last) != 1 || last[0].counts[refusalKey{ip: "192.0.2.0", action: audit.ActionRequestRefused, reason: "cross-origin"}].n != 1 {
		t.Errorf("everything: %+v", last)
	}
	if none := r.take(t0.Add(3*time.Minute), true); len(none) != 0 {
		t.Errorf("taken after everything: %d", len(none))
	}
}
