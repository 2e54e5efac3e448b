package cardagent

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ebfe/scard"
	"github.com/google/go-cmp/cmp"
)

// These tests follow the readers through a scripted PC/SC (fakePCSC)
// instead of pcscd: what Readers publishes, when it lists the readers
// again, and how it recovers when PC/SC fails.

// waitLong bounds a wait for something the code under test does at once;
// only a broken Readers reaches it.
const waitLong = 10 * time.Second

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// listAnswer is one answer of fakePCSC.ListReaders.
type listAnswer struct {
	names []string
	err   error
}

// pcscStep answers one GetStatusChange: it sets the states' EventState, or
// fails.
type pcscStep func(states []scard.ReaderState) error

// fakePCSC is a scripted PC/SC context. ListReaders gives lists in turn
// (the last one again and again); each GetStatusChange runs the next step;
// past the script it reports idle and blocks until Cancel.
type fakePCSC struct {
	lists []listAnswer
	steps []pcscStep

	mu        sync.Mutex
	listed    int
	calls     [][]scard.ReaderState // what each GetStatusChange was given
	timeouts  []time.Duration
	released  int
	idle      chan struct{} // closed at the first call past the script
	idleOnce  sync.Once
	cancelled chan struct{}
	cancel    sync.Once
}

func newFakePCSC(lists []listAnswer, steps ...pcscStep) *fakePCSC {
	return &fakePCSC{lists: lists, steps: steps, idle: make(chan struct{}), cancelled: make(chan struct{})}
}

var _ pcscContext = (*fakePCSC)(nil)

func (f *fakePCSC) ListReaders() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.lists[min(f.listed, len(f.lists)-1)]
	f.listed++
	return slices.Clone(a.names), a.err
}

func (f *fakePCSC) GetStatusChange(states []scard.ReaderState, timeout time.Duration) error {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(states))
	f.timeouts = append(f.timeouts, timeout)
	i := len(f.calls) - 1
	f.mu.Unlock()
	if i < len(f.steps) {
		return f.steps[i](states)
	}
	f.idleOnce.Do(func() { close(f.idle) })
	<-f.cancelled
	return scard.ErrCancelled
}

func (f *fakePCSC) Cancel() error { f.cancel.Do(func() { close(f.cancelled) }); return nil }

func (f *fakePCSC) Release() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released++
	return nil
}

func (f *fakePCSC) releases() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.released
}

// waitIdle waits until every step ran and Readers waits for the next change.
func (f *fakePCSC) waitIdle(t *testing.T) {
	t.Helper()
	select {
	case <-f.idle:
	case <-time.After(waitLong):
		t.Fatal("Readers never waited for a change past the script")
	}
}

// callReaders is the readers each GetStatusChange was asked about, with
// the state Readers said it knew.
func (f *fakePCSC) callReaders() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out [][]string
	for _, c := range f.calls {
		var names []string
		for _, s := range c {
			names = append(names, s.Reader+"="+stateName(s.CurrentState))
		}
		out = append(out, names)
	}
	return out
}

func stateName(s scard.StateFlag) string {
	switch s {
	case scard.StateUnaware:
		return "unaware"
	case scard.StatePresent:
		return "present"
	case scard.StateEmpty:
		return "empty"
	case scard.StatePresent | scard.StateExclusive:
		return "exclusive"
	}
	return "other"
}

const pnpChanged = scard.StateFlag(0x10000) // the pseudo reader's count of readers

// events is a step in which the readers named are in the state given (and
// flagged changed when that is not what Readers knew); the others are as
// Readers knew them.
func events(ev map[string]scard.StateFlag) pcscStep {
	return func(states []scard.ReaderState) error {
		for i := range states {
			s := &states[i]
			e, ok := ev[s.Reader]
			switch {
			case !ok:
				s.EventState = s.CurrentState
			case e != s.CurrentState:
				s.EventState = e | scard.StateChanged
			default:
				s.EventState = e
			}
		}
		return nil
	}
}

func fails(err error) pcscStep {
	return func([]scard.ReaderState) error { return err }
}

// runReaders runs Readers.run on establish until the test ends; after is
// Readers' retry timer.
func runReaders(t *testing.T, establish func() (pcscContext, error), after func(time.Duration) <-chan time.Time) (r *Readers, stop func()) {
	t.Helper()
	r = newReaders(discard, establish)
	r.after = after
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(waitLong):
				t.Error("Readers did not stop when its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// never is a retry timer that does not fire.
func never(time.Duration) <-chan time.Time { return nil }

func TestReadersWatch(t *testing.T) {
	t.Parallel()
	const pnp = pnpNotification
	present, empty := scard.StatePresent, scard.StateEmpty
	tests := []struct {
		name  string
		lists []listAnswer
		steps []pcscStep
		want  []Reader   // Current at the end
		calls [][]string // the readers of every GetStatusChange
	}{{
		name:  "readers and what is in them",
		lists: []listAnswer{{names: []string{"A", "B", "C"}}},
		steps: []pcscStep{events(map[string]scard.StateFlag{
			"A": present, "B": empty, "C": present | scard.StateExclusive,
		})},
		want: []Reader{{Name: "A", Present: true}, {Name: "B"}, {Name: "C", Present: true, Exclusive: true}},
		calls: [][]string{
			{pnp + "=unaware", "A=unaware", "B=unaware", "C=unaware"},
			// Then it waits for a change of what it saw, without the
			// changed flag.
			{pnp + "=unaware", "A=present", "B=empty", "C=exclusive"},
		},
	}, {
		name:  "no reader",
		lists: []listAnswer{{err: scard.ErrNoReadersAvailable}},
		steps: []pcscStep{events(nil)},
		want:  []Reader{},
		calls: [][]string{{pnp + "=unaware"}, {pnp + "=unaware"}},
	}, {
		name:  "a card goes in",
		lists: []listAnswer{{names: []string{"A"}}},
		steps: []pcscStep{
			events(map[string]scard.StateFlag{"A": empty}),
			events(map[string]scard.StateFlag{"A": present}),
		},
		want:  []Reader{{Name: "A", Present: true}},
		calls: [][]string{{pnp + "=unaware", "A=unaware"}, {pnp + "=unaware", "A=empty"}, {pnp + "=unaware", "A=present"}},
	}, {
		// The pseudo reader changes: the readers are listed again, and
		// what was known of a reader that stays is kept.
		name:  "a reader plugged in",
		lists: []listAnswer{{names: []string{"A"}}, {names: []string{"A", "B"}}},
		steps: []pcscStep{
			events(map[string]scard.StateFlag{"A": present}),
			events(map[string]scard.StateFlag{pnp: pnpChanged}),
			events(map[string]scard.StateFlag{"B": empty}),
		},
		want: []Reader{{Name: "A", Present: true}, {Name: "B"}},
		calls: [][]string{
			{pnp + "=unaware", "A=unaware"},
			{pnp + "=unaware", "A=present"}, // the pseudo reader did not change: no new list
			{pnp + "=unaware", "A=present", "B=unaware"},
			{pnp + "=unaware", "A=present", "B=empty"},
		},
	}, {
		name:  "a reader unplugged",
		lists: []listAnswer{{names: []string{"A", "B"}}, {names: []string{"A"}}},
		steps: []pcscStep{
			events(map[string]scard.StateFlag{"A": present, "B": empty}),
			events(map[string]scard.StateFlag{"B": scard.StateUnknown}),
		},
		want: []Reader{{Name: "A", Present: true}},
		calls: [][]string{
			{pnp + "=unaware", "A=unaware", "B=unaware"},
			{pnp + "=unaware", "A=present", "B=empty"},
			{pnp + "=unaware", "A=present"},
		},
	}, {
		name:  "a reader unavailable",
		lists: []listAnswer{{names: []string{"A", "B"}}, {names: []string{"B"}}},
		steps: []pcscStep{
			events(map[string]scard.StateFlag{"A": present, "B": empty}),
			events(map[string]scard.StateFlag{"A": scard.StateUnavailable}),
		},
		want: []Reader{{Name: "B"}},
		calls: [][]string{
			{pnp + "=unaware", "A=unaware", "B=unaware"},
			{pnp + "=unaware", "A=present", "B=empty"},
			{pnp + "=unaware", "B=empty"},
		},
	}, {
		name:  "a reader gone while waiting",
		lists: []listAnswer{{names: []string{"A", "B"}}, {names: []string{"A"}}},
		steps: []pcscStep{
			events(map[string]scard.StateFlag{"A": present, "B": empty}),
			fails(scard.ErrUnknownReader),
			events(nil),
		},
		want: []Reader{{Name: "A", Present: true}},
		calls: [][]string{
			{pnp + "=unaware", "A=unaware", "B=unaware"},
			{pnp + "=unaware", "A=present", "B=empty"},
			{pnp + "=unaware", "A=present"},
			{pnp + "=unaware", "A=present"},
		},
	}, {
		name:  "a reader unavailable while waiting",
		lists: []listAnswer{{names: []string{"A", "B"}}, {names: []string{"B"}}},
		steps: []pcscStep{
			events(map[string]scard.StateFlag{"A": present, "B": empty}),
			fails(scard.ErrReaderUnavailable),
			events(nil),
		},
		want: []Reader{{Name: "B"}},
		calls: [][]string{
			{pnp + "=unaware", "A=unaware", "B=unaware"},
			{pnp + "=unaware", "A=present", "B=empty"},
			{pnp + "=unaware", "B=empty"},
			{pnp + "=unaware", "B=empty"},
		},
	}, {
		name:  "a wait that timed out",
		lists: []listAnswer{{names: []string{"A"}}},
		steps: []pcscStep{
			events(map[string]scard.StateFlag{"A": present}),
			fails(scard.ErrTimeout),
		},
		want:  []Reader{{Name: "A", Present: true}},
		calls: [][]string{{pnp + "=unaware", "A=unaware"}, {pnp + "=unaware", "A=present"}, {pnp + "=unaware", "A=present"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakePCSC(tt.lists, tt.steps...)
			r, stop := runReaders(t, func() (pcscContext, error) { return f, nil }, never)
			f.waitIdle(t)
			if d := cmp.Diff(tt.want, r.Current()); d != "" {
				t.Errorf("readers (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.calls, f.callReaders()); d != "" {
				t.Errorf("GetStatusChange calls (-want +got):\n%s", d)
			}
			// Readers is told of a change: it does not poll.
			for i, d := range f.timeouts {
				if d < time.Second {
					t.Errorf("GetStatusChange %d waits only %s", i, d)
				}
			}
			stop()
			if f.releases() != 1 {
				t.Errorf("the PC/SC context was released %d times, want once", f.releases())
			}
		})
	}
}

// TestReadersRetry: when PC/SC is not there, or fails, the readers are
// none (at once, so nobody waits), and PC/SC is tried again after a while.
func TestReadersRetry(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		first func() (pcscContext, error) // the first context: fails, or its watch does
	}{
		{"PC/SC not running", func() (pcscContext, error) { return nil, scard.ErrNoService }},
		{"listing the readers fails", func() (pcscContext, error) {
			return newFakePCSC([]listAnswer{{err: scard.ErrNoService}}), nil
		}},
		{"waiting fails", func() (pcscContext, error) {
			return newFakePCSC([]listAnswer{{names: []string{"A"}}}, fails(scard.ErrNoService)), nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			second := newFakePCSC([]listAnswer{{names: []string{"A"}}}, events(map[string]scard.StateFlag{"A": scard.StatePresent}))
			var mu sync.Mutex
			var established []pcscContext
			establish := func() (pcscContext, error) {
				mu.Lock()
				defer mu.Unlock()
				if len(established) == 0 {
					sc, err := tt.first()
					established = append(established, sc)
					return sc, err
				}
				established = append(established, second)
				return second, nil
			}
			retry := make(chan time.Time)
			waits := make(chan time.Duration, 10)
			r, _ := runReaders(t, establish, func(d time.Duration) <-chan time.Time { waits <- d; return retry })
			changed, cancel := r.Subscribe()
			defer cancel()

			// Told at once that there are none.
			select {
			case <-r.first:
			case <-time.After(waitLong):
				t.Fatal("no answer after PC/SC failed")
			}
			if got := r.Current(); got == nil || len(got) != 0 {
				t.Fatalf("readers after a failure: %#v, want none", got)
			}
			select {
			case d := <-waits:
				if d < time.Second {
					t.Errorf("tries PC/SC again after only %s", d)
				}
			case <-time.After(waitLong):
				t.Fatal("Readers does not wait to try PC/SC again")
			}
			mu.Lock()
			first := established[0]
			mu.Unlock()
			if f, ok := first.(*fakePCSC); ok && f.releases() != 1 {
				t.Errorf("the failed context was released %d times", f.releases())
			}
			select {
			case retry <- time.Time{}:
			case <-time.After(waitLong):
				t.Fatal("Readers does not try PC/SC again")
			}
			second.waitIdle(t)
			select {
			case <-changed:
			default:
				t.Error("no event when PC/SC came back with a reader")
			}
			if d := cmp.Diff([]Reader{{Name: "A", Present: true}}, r.Current()); d != "" {
				t.Errorf("readers after PC/SC came back (-want +got):\n%s", d)
			}
		})
	}
}

// TestReadersStop: the context's end cancels the wait for a change and
// ends the watch, without another try.
func TestReadersStop(t *testing.T) {
	t.Parallel()
	f := newFakePCSC([]listAnswer{{names: []string{"A"}}}, events(map[string]scard.StateFlag{"A": scard.StateEmpty}))
	var mu sync.Mutex
	n := 0
	r, stop := runReaders(t, func() (pcscContext, error) { mu.Lock(); defer mu.Unlock(); n++; return f, nil },
		func(time.Duration) <-chan time.Time { t.Error("retries after the context ended"); return nil })
	f.waitIdle(t)
	stop()
	select {
	case <-f.cancelled:
	default:
		t.Error("the wait was not cancelled")
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 1 || f.releases() != 1 {
		t.Errorf("established %d, released %d; want 1, 1", n, f.releases())
	}
	if d := cmp.Diff([]Reader{{Name: "A"}}, r.Current()); d != "" {
		t.Errorf("readers (-want +got):\n%s", d)
	}
}

func TestReaderFromState(t *testing.T) {
	t.Parallel()
	atr := []byte{0x3b, 0x8f, 0x80}
	tests := []struct {
		name  string
		state scard.StateFlag
		want  Reader
	}{
		{"empty", scard.StateEmpty, Reader{Name: "R"}},
		{"a card", scard.StatePresent | scard.StateChanged, Reader{Name: "R", Present: true, ATR: atr}},
		{"held by another program", scard.StatePresent | scard.StateExclusive, Reader{Name: "R", Present: true, Exclusive: true, ATR: atr}},
		{"shared with another program", scard.StatePresent | scard.StateInuse, Reader{Name: "R", Present: true, ATR: atr}},
		{"a mute card", scard.StatePresent | scard.StateMute, Reader{Name: "R", Present: true, Mute: true, ATR: atr}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := scard.ReaderState{Reader: "R", EventState: tt.state}
			if tt.want.ATR != nil {
				s.Atr = slices.Clone(atr)
			}
			got := readerFromState(&s)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatalf("(-want +got):\n%s", d)
			}
			if len(s.Atr) > 0 {
				s.Atr[0] = 0 // PC/SC's buffer, reused
				if got.ATR[0] != atr[0] {
					t.Error("the reader shares PC/SC's ATR buffer")
				}
			}
		})
	}
}

func TestReadersProbe(t *testing.T) {
	t.Parallel()
	atr := []byte{0x3b, 0x01}
	answer := func(ev scard.StateFlag, err error) pcscStep {
		return func(states []scard.ReaderState) error {
			if err != nil {
				return err
			}
			states[0].EventState = ev | scard.StateChanged
			states[0].Atr = atr
			return nil
		}
	}
	tests := []struct {
		name   string
		step   pcscStep // nil: PC/SC is not running
		want   Reader
		wantOK bool
	}{
		{"PC/SC not running", nil, Reader{}, false},
		{"PC/SC fails", answer(0, scard.ErrNoService), Reader{}, false},
		{"unknown reader", answer(scard.StateUnknown, nil), Reader{}, false},
		{"reader unavailable", answer(scard.StateUnavailable, nil), Reader{}, false},
		{"empty", answer(scard.StateEmpty, nil), Reader{Name: "R", ATR: atr}, true},
		{"a card", answer(scard.StatePresent, nil), Reader{Name: "R", Present: true, ATR: atr}, true},
		{"a card held elsewhere", answer(scard.StatePresent|scard.StateExclusive, nil), Reader{Name: "R", Present: true, Exclusive: true, ATR: atr}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakePCSC(nil, tt.step)
			r := newReaders(discard, func() (pcscContext, error) {
				if tt.step == nil {
					return nil, scard.ErrNoService
				}
				return f, nil
			})
			got, ok := r.Probe("R")
			if ok != tt.wantOK {
				t.Errorf("ok %v, want %v", ok, tt.wantOK)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			if tt.step == nil {
				return
			}
			// Now, not the next change: every state unaware, no waiting.
			if d := cmp.Diff([][]string{{"R=unaware"}}, f.callReaders()); d != "" || f.timeouts[0] != 0 {
				t.Errorf("asked %s (timeout %s)", d, f.timeouts[0])
			}
			if f.releases() != 1 {
				t.Errorf("released %d times", f.releases())
			}
		})
	}
}

// TestReadersPublish: subscribers hear of a change in any reader, not of
// the first answer (which ends Current's wait) nor of the same again.
func TestReadersPublish(t *testing.T) {
	t.Parallel()
	base := []Reader{{Name: "A", Present: true, ATR: []byte{1, 2}}, {Name: "B"}}
	tests := []struct {
		name    string
		next    func(rs []Reader)
		changed bool
	}{
		{"the same", func([]Reader) {}, false},
		{"another reader", func(rs []Reader) { rs[1].Name = "C" }, true},
		{"card pulled", func(rs []Reader) { rs[0].Present = false }, true},
		{"card held by another program", func(rs []Reader) { rs[0].Exclusive = true }, true},
		{"card gone mute", func(rs []Reader) { rs[0].Mute = true }, true},
		{"another card", func(rs []Reader) { rs[0].ATR = []byte{1, 3} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newReaders(discard, nil)
			changed, cancel := r.Subscribe()
			defer cancel()

			r.publish(clone(base))
			select {
			case <-r.first:
			default:
				t.Fatal("the first answer did not end Current's wait")
			}
			if len(changed) != 0 {
				t.Error("an event for the first answer")
			}
			next := clone(base)
			tt.next(next)
			r.publish(next)
			if got := len(changed) == 1; got != tt.changed {
				t.Errorf("event %v, want %v", got, tt.changed)
			}
			if d := cmp.Diff(next, r.Current()); d != "" {
				t.Errorf("current (-want +got):\n%s", d)
			}
			// The same again: no more events.
			<-r.first
			for len(changed) > 0 {
				<-changed
			}
			r.publish(clone(next))
			if len(changed) != 0 {
				t.Error("an event for the same readers again")
			}
		})
	}
}

func clone(rs []Reader) []Reader {
	out := slices.Clone(rs)
	for i := range out {
		out[i].ATR = slices.Clone(out[i].ATR)
	}
	return out
}

// TestReadersFirstAnswerEmpty: no reader at all is an answer too, and
// ends Current's wait.
func TestReadersFirstAnswerEmpty(t *testing.T) {
	t.Parallel()
	r := newReaders(discard, nil)
	changed, cancel := r.Subscribe()
	defer cancel()
	r.publish([]Reader{})
	select {
	case <-r.first:
	default:
		t.Fatal("no reader did not end Current's wait")
	}
	if got := r.Current(); got == nil || len(got) != 0 {
		t.Errorf("current: %#v", got)
	}
	r.publish([]Reader{{Name: "A"}})
	if len(changed) != 1 {
		t.Error("no event when a reader came")
	}
}

// TestReadersCurrentWaits: a question asked before PC/SC's first answer
// gets that answer.
func TestReadersCurrentWaits(t *testing.T) {
	t.Parallel()
	r := newReaders(discard, nil)
	got := make(chan []Reader)
	go func() { got <- r.Current() }()
	want := []Reader{{Name: "A", Present: true}}
	r.publish(want)
	if d := cmp.Diff(want, <-got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestReadersSubscribe(t *testing.T) {
	t.Parallel()
	r := newReaders(discard, nil)
	a, cancelA := r.Subscribe()
	b, cancelB := r.Subscribe()
	defer cancelB()
	r.publish([]Reader{{Name: "A"}})

	r.publish([]Reader{{Name: "A", Present: true}})
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("events: %d, %d; want 1, 1", len(a), len(b))
	}
	// A change while one waits to be read: still one, and publish does
	// not block.
	r.publish([]Reader{{Name: "A"}})
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("events: %d, %d; want 1, 1", len(a), len(b))
	}
	<-a
	<-b

	cancelA()
	r.publish([]Reader{{Name: "A", Present: true}})
	if len(a) != 0 {
		t.Error("an event after the subscription was cancelled")
	}
	if len(b) != 1 {
		t.Error("cancelling one subscription ended another")
	}
}
