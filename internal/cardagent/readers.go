package cardagent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ebfe/scard"
)

// Reader is a card reader as PC/SC reports it.
type Reader struct {
	Name      string
	Present   bool // a card is in it
	Exclusive bool // another program holds the card for itself
	Mute      bool // the card does not answer
	ATR       []byte
}

// Readers follows the card readers through PC/SC: a GetStatusChange loop
// that wakes at every insertion, removal, reader plugged or unplugged, and
// tells whoever subscribed.
type Readers struct {
	log *slog.Logger
	// establish opens a PC/SC context (establishPCSC; a fake in unit
	// tests), after waits before PC/SC is tried again (time.After).
	establish func() (pcscContext, error)
	after     func(time.Duration) <-chan time.Time

	first chan struct{} // closed at the first answer, or the first failure, of PC/SC

	mu      sync.Mutex
	current []Reader
	subs    []chan struct{}
}

// pcscContext is what Readers asks of PC/SC: a *scard.Context.
type pcscContext interface {
	ListReaders() ([]string, error)
	GetStatusChange(states []scard.ReaderState, timeout time.Duration) error
	Cancel() error
	Release() error
}

// establishPCSC opens a context of the machine's PC/SC.
func establishPCSC() (pcscContext, error) {
	sc, err := scard.EstablishContext()
	return sc, err
}

// pnpNotification is PC/SC's pseudo reader that changes whenever a reader
// is plugged in or out.
const pnpNotification = `\\?PnP?\Notification`

// WatchReaders starts following the readers until ctx ends. When PC/SC
// is not running it keeps trying, every few seconds: pcscd may start later
// (a reader plugged in starts it on many systems).
func WatchReaders(ctx context.Context, log *slog.Logger) *Readers {
	r := newReaders(log, establishPCSC)
	go r.run(ctx)
	return r
}

func newReaders(log *slog.Logger, establish func() (pcscContext, error)) *Readers {
	return &Readers{log: log, establish: establish, after: time.After, first: make(chan struct{})}
}

// firstWait bounds how long Current waits for PC/SC's first answer.
const firstWait = 2 * time.Second

// Current is the readers as last seen. Right after the start it waits
// (briefly) for PC/SC's first answer, so the first question of a page is
// answered with the readers.
func (r *Readers) Current() []Reader {
	select {
	case <-r.first:
	case <-time.After(firstWait):
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.current)
}

// Probe asks PC/SC now, not the last event, what is in the named reader:
// the one answer that cannot lag behind a card pulled a moment ago. ok is
// false when PC/SC or the reader is not there.
func (r *Readers) Probe(name string) (reader Reader, ok bool) {
	sc, err := r.establish()
	if err != nil {
		return Reader{}, false
	}
	defer sc.Release()
	states := []scard.ReaderState{{Reader: name, CurrentState: scard.StateUnaware}}
	if err := sc.GetStatusChange(states, 0); err != nil {
		return Reader{}, false
	}
	if states[0].EventState&(scard.StateUnknown|scard.StateUnavailable) != 0 {
		return Reader{}, false
	}
	return readerFromState(&states[0]), true
}

func readerFromState(s *scard.ReaderState) Reader {
	return Reader{
		Name:      s.Reader,
		Present:   s.EventState&scard.StatePresent != 0,
		Exclusive: s.EventState&scard.StateExclusive != 0,
		Mute:      s.EventState&scard.StateMute != 0,
		ATR:       slices.Clone(s.Atr),
	}
}

// Subscribe returns a channel that receives (without blocking the loop)
// after every change; cancel ends the subscription.
func (r *Readers) Subscribe() (changed <-chan struct{}, cancel func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs = append(r.subs, ch)
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.subs = slices.DeleteFunc(r.subs, func(c chan struct{}) bool { return c == ch })
	}
}

func (r *Readers) publish(readers []Reader) {
	r.mu.Lock()
	defer r.mu.Unlock()
	first := r.current == nil
	if !first && slices.EqualFunc(readers, r.current, sameReader) {
		return
	}
	r.current = readers
	if first {
		close(r.first) // who asked before waited for this answer
		return
	}
	for _, ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default: // a change is already waiting to be read
		}
	}
}

func sameReader(a, b Reader) bool {
	return a.Name == b.Name && a.Present == b.Present && a.Exclusive == b.Exclusive && a.Mute == b.Mute && bytes.Equal(a.ATR, b.ATR)
}

func (r *Readers) run(ctx context.Context) {
	for ctx.Err() == nil {
		err := r.watch(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("PC/SC unavailable; trying again", "err", err)
		r.publish([]Reader{})
		select {
		case <-ctx.Done():
		case <-r.after(2 * time.Second):
		}
	}
}

// watch runs one PC/SC context until it fails or ctx ends.
func (r *Readers) watch(ctx context.Context) error {
	sc, err := r.establish()
	if err != nil {
		return err
	}
	defer sc.Release()
	stop := context.AfterFunc(ctx, func() { sc.Cancel() })
	defer stop()
	var states []scard.ReaderState
	relist := true
	for {
		if relist {
			names, err := sc.ListReaders()
			if err != nil && !errors.Is(err, scard.ErrNoReadersAvailable) {
				return err
			}
			old := map[string]scard.ReaderState{}
			for _, s := range states {
				old[s.Reader] = s
			}
			states = []scard.ReaderState{{Reader: pnpNotification, CurrentState: scard.StateUnaware}}
			for _, n := range names {
				s, ok := old[n]
				if !ok {
					s = scard.ReaderState{Reader: n, CurrentState: scard.StateUnaware}
				}
				states = append(states, s)
			}
			relist = false
		}
		// The first call with every state unaware returns at once with the
		// present state; later calls wait for a change. The timeout only
		// bounds how long a lost wakeup could go unnoticed.
		err := sc.GetStatusChange(states, 30*time.Second)
		switch {
		case errors.Is(err, scard.ErrTimeout):
			continue
		case errors.Is(err, scard.ErrCancelled):
			return ctx.Err()
		case errors.Is(err, scard.ErrUnknownReader), errors.Is(err, scard.ErrReaderUnavailable):
			relist = true
			continue
		case err != nil:
			return err
		}
		readers := make([]Reader, 0, len(states))
		for i := range states {
			s := &states[i]
			changed := s.EventState&scard.StateChanged != 0
			s.CurrentState = s.EventState &^ scard.StateChanged
			if s.Reader == pnpNotification {
				if changed {
					relist = true
				}
				continue
			}
			if s.EventState&(scard.StateUnknown|scard.StateUnavailable) != 0 {
				relist = true
				continue
			}
			readers = append(readers, readerFromState(s))
		}
		r.publish(readers)
	}
}
