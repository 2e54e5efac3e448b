package cardagent

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestAgentFindsCard: which card a Describe or Sign reaches, from what
// Cards lists: a ready card by its token; a card another program holds is
// in use, whatever else is in the readers.
func TestAgentFindsCard(t *testing.T) {
	t.Parallel()
	busy := Card{Token: "tok-gp", Reader: "reader 0", State: CardInUse}
	otherBusy := Card{Token: "tok-other", Reader: "reader 1", State: CardInUse}
	unreadable := Card{Token: "tok-gp", Reader: "reader 0", State: CardUnreadable}
	empty := Card{Reader: "reader 2", State: ReaderEmpty}
	noToken := gpCard
	noToken.Token = ""
	tests := []struct {
		name  string
		cards []Card
		token string
		want  string // the error code; "" a signature
	}{
		{"ready", []Card{gpCard}, "tok-gp", ""},
		{"ready among others", []Card{empty, otherBusy, gpCard}, "tok-gp", ""},
		{"held by another program", []Card{busy}, "tok-gp", ErrCardInUse},
		{"held by another program, beside others", []Card{empty, otherBusy, busy}, "tok-gp", ErrCardInUse},
		{"another card held by another program", []Card{otherBusy}, "tok-gp", ErrNoCard},
		{"another card held, this one not in", []Card{empty, otherBusy}, "tok-gp", ErrNoCard},
		{"unreadable", []Card{unreadable}, "tok-gp", ErrNoCard},
		{"no cards", []Card{}, "tok-gp", ErrNoCard},
		{"no token asked, a card without one", []Card{noToken}, "", ErrNoCard},
		{"no token asked, a reader held without one", []Card{{Reader: "reader 0", State: CardInUse}}, "", ErrNoCard},
	}
	for _, tt := range tests {
		for _, typ := range []string{TypeDescribe, TypeSign} {
			t.Run(tt.name+"/"+typ, func(t *testing.T) {
				t.Parallel()
				f := &fakeCards{cards: tt.cards}
				resp := newAgent(t, f).Handle(context.Background(), Request{ID: "9", Type: typ, Origin: origin, Token: tt.token,
					Kind: KindLogin, Challenge: make([]byte, ChallengeSize), PIN: "123456"})
				want := Response{ID: "9", Type: "error", Error: tt.want}
				switch {
				case tt.want != "":
				case typ == TypeDescribe:
					want = Response{ID: "9", Type: "description", Display: &Display{Origin: origin, Action: KindLogin, Holder: gpCard.Holder}}
				default:
					want = Response{ID: "9", Type: "signature", Signature: []byte("sig:tok-gp"), Certificate: gpCard.AuthCert}
				}
				if d := cmp.Diff(want, resp); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
				if signed := len(f.signed) != 0; signed != (typ == TypeSign && tt.want == "") {
					t.Errorf("signed: %v", signed)
				}
			})
		}
	}
}

// errCards is a Cards whose List fails.
type errCards struct{ err error }

func (c errCards) List(context.Context) ([]Card, error) { return nil, c.err }

func (c errCards) Sign(context.Context, string, []byte, []byte, string) ([]byte, error) {
	return nil, errors.New("signed after a failed list")
}

func TestAgentListFails(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want string
	}{
		{ErrCardBusy, ErrCardInUse},
		{errors.New("CKR_DEVICE_ERROR"), ErrCardError},
	} {
		for _, typ := range []string{TypeCards, TypeDescribe, TypeSign} {
			a := newAgent(t, errCards{tt.err})
			resp := a.Handle(context.Background(), Request{Type: typ, Origin: origin, Token: "tok-gp", Kind: KindLogin, Challenge: make([]byte, ChallengeSize), PIN: "1"})
			if d := cmp.Diff(Response{Type: "error", Error: tt.want}, resp); d != "" {
				t.Errorf("%s, %v (-want +got):\n%s", typ, tt.err, d)
			}
		}
	}
}

// msgWriter is the browser's end of Serve's output: every Write is one
// framed message, passed on whole.
type msgWriter struct {
	msgs chan []byte
	err  error // returned by every Write, when set
}

func (w *msgWriter) Write(b []byte) (int, error) {
	if w.err != nil {
		w.msgs <- nil
		return 0, w.err
	}
	w.msgs <- bytes.Clone(b)
	return len(b), nil
}

func frame(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteMessage(&b, v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestServeEvents: a change in the readers reaches the browser as an
// event between the answers, and Serve goes on answering.
func TestServeEvents(t *testing.T) {
	t.Parallel()
	a := newAgent(t, &fakeCards{cards: []Card{gpCard}})
	in, browser := io.Pipe()
	defer in.Close() // ends a write that Serve would not read
	out := &msgWriter{msgs: make(chan []byte, 10)}
	changed := make(chan struct{})
	served := make(chan error, 1)
	go func() { served <- a.Serve(context.Background(), in, out, changed) }()
	next := func(what string) string {
		t.Helper()
		select {
		case b := <-out.msgs:
			msg, err := ReadMessage(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			return string(msg)
		case err := <-served:
			t.Fatalf("Serve ended before %s: %v", what, err)
		case <-time.After(waitLong):
			t.Fatalf("no %s", what)
		}
		return ""
	}

	for i := range 2 {
		select {
		case changed <- struct{}{}:
		case err := <-served:
			t.Fatalf("Serve ended before event %d: %v", i, err)
		case <-time.After(waitLong):
			t.Fatalf("Serve does not take event %d", i)
		}
		if got := next("the event"); got != `{"type":"changed"}` {
			t.Fatalf("event %d: %s", i, got)
		}
		req := frame(t, Request{ID: "1", Type: TypeCards, Origin: origin})
		go browser.Write(req)
		var resp Response
		if err := json.Unmarshal([]byte(next("the answer")), &resp); err != nil {
			t.Fatal(err)
		}
		if resp.ID != "1" || resp.Type != "cards" || len(resp.Cards) != 1 {
			t.Fatalf("answer after event %d: %+v", i, resp)
		}
	}
	browser.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after the browser closed: %v", err)
		}
	case <-time.After(waitLong):
		t.Error("Serve goes on after the browser closed")
	}
}

// TestServeEventWriteFails: when an event cannot be written the channel is
// gone, and Serve ends with the error.
func TestServeEventWriteFails(t *testing.T) {
	t.Parallel()
	a := newAgent(t, &fakeCards{cards: []Card{gpCard}})
	in, browser := io.Pipe()
	defer browser.Close()
	broken := errors.New("broken pipe")
	out := &msgWriter{msgs: make(chan []byte, 10), err: broken}
	changed := make(chan struct{}, 1)
	changed <- struct{}{}
	served := make(chan error, 1)
	go func() { served <- a.Serve(context.Background(), in, out, changed) }()
	select {
	case err := <-served:
		if !errors.Is(err, broken) {
			t.Errorf("Serve: %v, want %v", err, broken)
		}
	case <-time.After(waitLong):
		t.Fatal("Serve goes on after an event could not be written")
	}
}

// TestServeAnswerWriteFails: the same for an answer.
func TestServeAnswerWriteFails(t *testing.T) {
	t.Parallel()
	a := newAgent(t, &fakeCards{cards: []Card{gpCard}})
	broken := errors.New("broken pipe")
	out := &msgWriter{msgs: make(chan []byte, 10), err: broken}
	in := bytes.NewReader(append(frame(t, Request{ID: "1", Type: TypeCards, Origin: origin}), frame(t, Request{ID: "2", Type: TypeCards, Origin: origin})...))
	if err := a.Serve(context.Background(), in, out, nil); !errors.Is(err, broken) {
		t.Errorf("Serve: %v, want %v", err, broken)
	}
	if n := len(out.msgs); n != 1 {
		t.Errorf("%d writes, want 1", n)
	}
}

// TestServeStops: Serve ends with its context, and a message it cannot
// read ends it with the error.
func TestServeStops(t *testing.T) {
	t.Parallel()
	a := newAgent(t, &fakeCards{cards: []Card{gpCard}})
	ctx, cancel := context.WithCancel(context.Background())
	in, browser := io.Pipe()
	defer browser.Close()
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, in, io.Discard, nil) }()
	cancel()
	select {
	case err := <-served:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("Serve goes on after its context ended")
	}

	// Nothing is answered after a message that cannot be read: a writer
	// that refuses every message ends a Serve that would.
	refuse := &msgWriter{msgs: make(chan []byte, 10), err: errors.New("answered a message it could not read")}
	err := a.Serve(context.Background(), bytes.NewReader([]byte{0xff, 0xff, 0, 0}), refuse, nil)
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("Serve on a message too large: %v", err)
	}
	err = a.Serve(context.Background(), bytes.NewReader([]byte{9, 0, 0, 0, '{'}), refuse, nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Serve on a truncated message: %v", err)
	}
}

// TestServeTwoValues: a message is one JSON value; one with more after it
// is refused, and the next message is answered.
func TestServeTwoValues(t *testing.T) {
	t.Parallel()
	a := newAgent(t, &fakeCards{cards: []Card{gpCard}})
	var in bytes.Buffer
	for _, raw := range []string{
		`{"id":"1","type":"cards","origin":"` + origin + `"} {"id":"x"}`,
		`{"id":"2","type":"cards","origin":"` + origin + `"}`,
	} {
		binary.Write(&in, binary.LittleEndian, uint32(len(raw)))
		in.WriteString(raw)
	}
	var out bytes.Buffer
	if err := a.Serve(context.Background(), &in, &out, nil); err != nil {
		t.Fatal(err)
	}
	var got []Response
	for {
		b, err := ReadMessage(&out)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var r Response
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	want := []Response{{ID: "1", Type: "error", Error: ErrMalformed}, {ID: "2", Type: "cards", Cards: []Card{gpCard}}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestWireLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		n       int // the length a message says it has
		tooLong bool
	}{
		{"empty", 0, false},
		{"the limit", MaxRequest, false},
		{"a byte over", MaxRequest + 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			raw := binary.LittleEndian.AppendUint32(nil, uint32(tt.n))
			raw = append(raw, bytes.Repeat([]byte{'x'}, tt.n)...)
			got, err := ReadMessage(bytes.NewReader(raw))
			switch {
			case tt.tooLong && !errors.Is(err, ErrTooLarge):
				t.Errorf("ReadMessage: %v, want ErrTooLarge", err)
			case !tt.tooLong && (err != nil || len(got) != tt.n):
				t.Errorf("ReadMessage: %d bytes, %v; want %d", len(got), err, tt.n)
			}
		})
	}
	for _, tt := range []struct {
		name    string
		size    int // of the JSON
		tooLong bool
	}{
		{"a reply at the limit", MaxResponse, false},
		{"a reply a byte over", MaxResponse + 1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var w bytes.Buffer
			err := WriteMessage(&w, strings.Repeat("x", tt.size-2)) // and the quotes
			if tt.tooLong {
				if !errors.Is(err, ErrTooLarge) || w.Len() != 0 {
					t.Errorf("WriteMessage: %v, %d bytes written", err, w.Len())
				}
				return
			}
			if err != nil || w.Len() != 4+tt.size || binary.LittleEndian.Uint32(w.Bytes()) != uint32(tt.size) {
				t.Errorf("WriteMessage: %v, %d bytes written", err, w.Len())
			}
		})
	}
}

// TestWireTruncated: an end inside a message is not the clean end between
// messages.
func TestWireTruncated(t *testing.T) {
	t.Parallel()
	for name, raw := range map[string][]byte{
		"in the length":      {1, 0, 0},
		"before the message": {1, 0, 0, 0},
		"in the message":     {3, 0, 0, 0, '{', '}'},
	} {
		_, err := ReadMessage(bytes.NewReader(raw))
		if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			t.Errorf("%s: %v, want io.ErrUnexpectedEOF", name, err)
		}
	}
	if _, err := ReadMessage(bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("nothing: %v, want io.EOF", err)
	}
}
