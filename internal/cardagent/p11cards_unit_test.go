package cardagent

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeReaders is a ReaderSource whose Probe answers in turn (the last one
// again and again) and counts the questions.
type fakeReaders struct {
	current []Reader
	probes  []probeAnswer

	mu     sync.Mutex
	asked  []string
	onCall func(n int) // called with the number of the question, from 1
}

type probeAnswer struct {
	r  Reader
	ok bool
}

func (f *fakeReaders) Current() []Reader { return f.current }

func (f *fakeReaders) Probe(name string) (Reader, bool) {
	f.mu.Lock()
	f.asked = append(f.asked, name)
	n := len(f.asked)
	f.mu.Unlock()
	if f.onCall != nil {
		f.onCall(n)
	}
	a := f.probes[min(n, len(f.probes))-1]
	return a.r, a.ok
}

// fakeClock is the clock of pulled: sleeping moves it on.
type fakeClock struct {
	t     time.Time
	slept time.Duration
}

func (c *fakeClock) now() time.Time { return c.t }

func (c *fakeClock) sleep(d time.Duration) { c.t = c.t.Add(d); c.slept += d }

// maxProbes bounds the questions of a test of pulled: far more than it asks
// in pulledWait, far fewer than a loop that does not wait would.
const maxProbes = 200

func TestPulled(t *testing.T) {
	t.Parallel()
	in := probeAnswer{Reader{Name: "R", Present: true}, true}
	out := probeAnswer{Reader{Name: "R"}, true}
	gone := probeAnswer{Reader{}, false}
	tests := []struct {
		name       string
		answers    []probeAnswer
		want       bool
		wantProbes int           // 0: only check the bounds below
		minSlept   time.Duration // it waits at least this long
	}{
		{"already out", []probeAnswer{out}, true, 1, 0},
		{"out after a while", []probeAnswer{in, in, in, out}, true, 4, 150 * time.Millisecond},
		{"the reader is gone", []probeAnswer{gone}, false, 1, 0},
		{"the reader goes", []probeAnswer{in, gone}, false, 2, 50 * time.Millisecond},
		// The card stays in: it asks for pulledWait, then gives up.
		{"still in", []probeAnswer{in}, false, 0, pulledWait},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
			readers := &fakeReaders{probes: tt.answers}
			readers.onCall = func(n int) {
				if n > maxProbes {
					t.Errorf("asked PC/SC %d times in %s: it does not wait between questions", n, clk.slept)
					readers.probes = []probeAnswer{gone} // end the loop
				}
			}
			c := &P11Cards{readers: readers, now: clk.now, sleep: clk.sleep}
			if got := c.pulled("R"); got != tt.want {
				t.Errorf("pulled: %v, want %v", got, tt.want)
			}
			n := len(readers.asked)
			if tt.wantProbes != 0 && n != tt.wantProbes {
				t.Errorf("asked %d times, want %d", n, tt.wantProbes)
			}
			if clk.slept < tt.minSlept || clk.slept > pulledWait+time.Second {
				t.Errorf("waited %s, want between %s and about %s", clk.slept, tt.minSlept, pulledWait)
			}
			if n > 1 && clk.slept/time.Duration(n-1) < 10*time.Millisecond {
				t.Errorf("asked %d times in %s", n, clk.slept)
			}
			for _, r := range readers.asked {
				if r != "R" {
					t.Errorf("asked about reader %q", r)
				}
			}
		})
	}
}

func TestPulledWithoutReaders(t *testing.T) {
	t.Parallel()
	c := &P11Cards{now: func() time.Time { t.Error("pulled without readers looks at the clock"); return time.Time{} }}
	if c.pulled("R") {
		t.Error("pulled without readers")
	}
}

func TestHeldElsewhere(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		answer *probeAnswer // nil: no ReaderSource
		want   bool
	}{
		{"no readers", nil, false},
		{"reader not known", &probeAnswer{Reader{}, false}, false},
		{"reader not known, said exclusive", &probeAnswer{Reader{Exclusive: true}, false}, false},
		{"shared", &probeAnswer{Reader{Name: "R", Present: true}, true}, false},
		{"held by another program", &probeAnswer{Reader{Name: "R", Present: true, Exclusive: true}, true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := &P11Cards{}
			var readers *fakeReaders
			if tt.answer != nil {
				readers = &fakeReaders{probes: []probeAnswer{*tt.answer}}
				c.readers = readers
			}
			if got := c.heldElsewhere("R"); got != tt.want {
				t.Errorf("heldElsewhere: %v, want %v", got, tt.want)
			}
			if readers != nil {
				if d := cmp.Diff([]string{"R"}, readers.asked); d != "" {
					t.Errorf("asked (-want +got):\n%s", d)
				}
			}
		})
	}
}
