package cardagent

import (
	"context"
	"fmt"
	"sync"
)

// Opener opens the card source: in the host, the PKCS#11 module and the
// PC/SC readers. changed (nil: never) receives whenever a reader changes.
type Opener func(ctx context.Context) (cards Cards, changed <-chan struct{}, err error)

// LazyCards is a Cards that opens its source on the first List or Sign,
// not before. The agent asks it only for a request whose origin it
// accepted, so a refused page never has the module loaded or a card read:
// the refusal takes the same time whatever is in the readers.
type LazyCards struct {
	ctx     context.Context // bounds the forwarding of events
	open    Opener
	mu      sync.Mutex
	cards   Cards
	changed chan struct{}
}

// NewLazyCards makes a LazyCards; its events are forwarded until ctx ends.
func NewLazyCards(ctx context.Context, open Opener) *LazyCards {
	return &LazyCards{ctx: ctx, open: open, changed: make(chan struct{}, 1)}
}

// Changed receives whenever the opened source reports a change; nothing
// before it is opened (nothing is watched then).
func (l *LazyCards) Changed() <-chan struct{} { return l.changed }

// Opened tells whether the source was opened.
func (l *LazyCards) Opened() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cards != nil
}

// get opens the source once; a failed open is tried again at the next
// request (a module that could not load now may later).
func (l *LazyCards) get(ctx context.Context) (Cards, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cards != nil {
		return l.cards, nil
	}
	c, ch, err := l.open(ctx)
	if err != nil {
		return nil, fmt.Errorf("cardagent: open the cards: %w", err)
	}
	l.cards = c
	if ch != nil {
		go l.forward(ch)
	}
	return c, nil
}

// forward hands the source's events on, folding those the reader of
// Changed has not taken yet into one.
func (l *LazyCards) forward(ch <-chan struct{}) {
	for {
		select {
		case <-l.ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			select {
			case l.changed <- struct{}{}:
			default:
			}
		}
	}
}

// List lists the cards, opening the source first if need be.
func (l *LazyCards) List(ctx context.Context) ([]Card, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.List(ctx)
}

// Sign signs with a card, opening the source first if need be.
func (l *LazyCards) Sign(ctx context.Context, token string, cert, digest []byte, pin string) ([]byte, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.Sign(ctx, token, cert, digest, pin)
}
