package cardagent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestOriginsRequest: the worker's own question is answered with the
// configured origins, and only when it carries nothing else (a page's
// origin, a card, a message or a PIN makes it malformed). It touches no
// card.
func TestOriginsRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		req  Request
		want Response
	}{
		{"bare", Request{ID: "o", Type: TypeOrigins}, Response{ID: "o", Type: "origins", Origins: []string{origin, "http://127.0.0.1:8080"}}},
		{"with an origin", Request{ID: "o", Type: TypeOrigins, Origin: origin}, Response{ID: "o", Type: "error", Error: ErrMalformed}},
		{"with a token", Request{ID: "o", Type: TypeOrigins, Token: "tok-gp"}, Response{ID: "o", Type: "error", Error: ErrMalformed}},
		{"with a kind", Request{ID: "o", Type: TypeOrigins, Kind: KindLogin}, Response{ID: "o", Type: "error", Error: ErrMalformed}},
		{"with a challenge", Request{ID: "o", Type: TypeOrigins, Challenge: []byte{}}, Response{ID: "o", Type: "error", Error: ErrMalformed}},
		{"with a statement", Request{ID: "o", Type: TypeOrigins, Statement: []byte{}}, Response{ID: "o", Type: "error", Error: ErrMalformed}},
		{"with a PIN", Request{ID: "o", Type: TypeOrigins, PIN: "123456"}, Response{ID: "o", Type: "error", Error: ErrMalformed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opened := 0
			lazy := NewLazyCards(context.Background(), func(context.Context) (Cards, <-chan struct{}, error) {
				opened++
				return &fakeCards{cards: []Card{gpCard}}, nil, nil
			})
			a, err := New([]string{origin, "http://127.0.0.1:8080"}, lazy, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			got := a.Handle(context.Background(), tt.req)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
			if opened != 0 {
				t.Errorf("the card source was opened %d times", opened)
			}
		})
	}
	// The answer is a copy: a caller changing it changes nothing.
	a := newAgent(t, &fakeCards{})
	got := a.Handle(context.Background(), Request{Type: TypeOrigins})
	got.Origins[0] = "https://evil.example"
	if again := a.Handle(context.Background(), Request{Type: TypeOrigins}); again.Origins[0] != origin {
		t.Errorf("the agent's origins changed through an answer: %v", again.Origins)
	}
}

// TestLazyCardsOpenedOnlyForAcceptedOrigin: a request of a refused origin
// does not open the card source (no module loaded, no card read, so the
// refusal's time tells nothing of the readers); the first accepted one
// opens it, once; a failed open is a card error and is tried again.
func TestLazyCardsOpenedOnlyForAcceptedOrigin(t *testing.T) {
	t.Parallel()
	var opened atomic.Int32
	openErr := errors.New("no module")
	fail := true
	f := &fakeCards{cards: []Card{gpCard}}
	lazy := NewLazyCards(context.Background(), func(context.Context) (Cards, <-chan struct{}, error) {
		opened.Add(1)
		if fail {
			return nil, nil, openErr
		}
		return f, nil, nil
	})
	var logs strings.Builder
	a, err := New([]string{origin}, lazy, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, typ := range []string{TypeCards, TypeDescribe, TypeSign, "bogus"} {
		if r := a.Handle(ctx, Request{ID: "1", Type: typ, Origin: "https://evil.example", Token: "tok-gp", Kind: KindLogin, Challenge: make([]byte, ChallengeSize), PIN: "1"}); r.Error != ErrOrigin {
			t.Errorf("%s from another origin: %+v", typ, r)
		}
	}
	if n := opened.Load(); n != 0 || lazy.Opened() {
		t.Fatalf("refused requests opened the card source %d times", n)
	}
	if r := a.Handle(ctx, Request{ID: "2", Type: TypeCards, Origin: origin}); r.Error != ErrCardError {
		t.Errorf("with a source that does not open: %+v", r)
	}
	if !strings.Contains(logs.String(), "no module") || lazy.Opened() {
		t.Errorf("open failure: logged %q, opened %v", logs.String(), lazy.Opened())
	}
	fail = false
	for range 3 {
		if r := a.Handle(ctx, Request{ID: "3", Type: TypeCards, Origin: origin}); r.Type != "cards" || len(r.Cards) != 1 {
			t.Errorf("cards: %+v", r)
		}
	}
	if r := a.Handle(ctx, Request{ID: "4", Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindLogin, Challenge: make([]byte, ChallengeSize), PIN: "123456"}); r.Type != "signature" {
		t.Errorf("sign: %+v", r)
	}
	if n := opened.Load(); n != 2 || !lazy.Opened() {
		t.Errorf("opened %d times, want 2 (one failed, one for good)", n)
	}
}

// TestLazyCardsSignOpens: a Sign first opens the source too, and a failed
// open fails it.
func TestLazyCardsSignOpens(t *testing.T) {
	t.Parallel()
	f := &fakeCards{cards: []Card{gpCard}}
	fail := true
	lazy := NewLazyCards(context.Background(), func(context.Context) (Cards, <-chan struct{}, error) {
		if fail {
			return nil, nil, errors.New("no module")
		}
		return f, nil, nil
	})
	if _, err := lazy.Sign(context.Background(), "tok-gp", gpCard.AuthCert, make([]byte, 32), "123456"); err == nil {
		t.Error("Sign with a source that does not open succeeded")
	}
	fail = false
	sig, err := lazy.Sign(context.Background(), "tok-gp", gpCard.AuthCert, make([]byte, 32), "123456")
	if err != nil || string(sig) != "sig:tok-gp" {
		t.Errorf("Sign: %q %v", sig, err)
	}
}

// TestLazyCardsEvents: nothing is forwarded before the source is opened;
// after, each change reaches Changed, several untaken ones folded into
// one; forwarding stops when the source's channel closes or ctx ends.
func TestLazyCardsEvents(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := make(chan struct{})
	lazy := NewLazyCards(ctx, func(context.Context) (Cards, <-chan struct{}, error) {
		return &fakeCards{}, src, nil
	})
	select {
	case <-lazy.Changed():
		t.Fatal("an event before the source was opened")
	default:
	}
	if _, err := lazy.List(ctx); err != nil {
		t.Fatal(err)
	}
	src <- struct{}{}
	src <- struct{}{} // taken by the forwarder once the first is in the buffer
	src <- struct{}{}
	select {
	case <-lazy.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("no event forwarded")
	}
	select {
	case <-lazy.Changed():
		t.Fatal("untaken events were not folded into one")
	case <-time.After(50 * time.Millisecond):
	}
	close(src)
	// The forwarder ends; the channel it hands out stays open and quiet.
	select {
	case <-lazy.Changed():
		t.Fatal("an event after the source closed")
	case <-time.After(50 * time.Millisecond):
	}
}

// TestLazyCardsStopsWithContext: once ctx ends, a change is not forwarded.
func TestLazyCardsStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	src := make(chan struct{}, 1)
	lazy := NewLazyCards(ctx, func(context.Context) (Cards, <-chan struct{}, error) {
		return &fakeCards{}, src, nil
	})
	if _, err := lazy.List(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	time.Sleep(50 * time.Millisecond) // the forwarder sees ctx end first
	src <- struct{}{}
	select {
	case <-lazy.Changed():
		t.Fatal("an event forwarded after ctx ended")
	case <-time.After(100 * time.Millisecond):
	}
}
