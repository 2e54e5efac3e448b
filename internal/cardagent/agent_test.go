package cardagent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
)

const origin = "https://vouch.example"

// fakeCards is a unit test's card: it records what it was asked to sign.
type fakeCards struct {
	cards  []Card
	listed int
	signed [][]byte // digests
	pins   []string
	err    error // returned by Sign
}

func (f *fakeCards) List(context.Context) ([]Card, error) { f.listed++; return f.cards, nil }

func (f *fakeCards) Sign(_ context.Context, token string, cert, digest []byte, pin string) ([]byte, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.signed = append(f.signed, digest)
	f.pins = append(f.pins, pin)
	return []byte("sig:" + token), nil
}

var gpCard = Card{Token: "tok-gp", Reader: "reader 0", State: CardReady, Holder: "Dr. A. Huisarts", AuthCert: []byte("auth-der"), SignCert: []byte("sign-der")}

func newAgent(t *testing.T, cards Cards) *Agent {
	t.Helper()
	a, err := New([]string{origin}, cards, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a.now = func() time.Time { return now }
	return a
}

var now = time.Date(2026, 11, 22, 9, 30, 0, 0, time.UTC)

func statement(t *testing.T, mod func(*protocol.Statement)) []byte {
	t.Helper()
	code, err := phonecode.Parse("ABCD-EFGH-JKMN-PQRS-T")
	if err != nil {
		code = phonecode.Code{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	}
	st, err := protocol.NewStatement("NL", [16]byte{1}, code, now, "2026-11-20", gpCard.SignCert)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(st)
	}
	return st.Marshal()
}

func TestAgentRefuses(t *testing.T) {
	t.Parallel()
	good := statement(t, nil)
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"another origin", Request{Type: TypeCards, Origin: "https://evil.example"}, ErrOrigin},
		{"no origin", Request{Type: TypeCards}, ErrOrigin},
		{"origin with a path", Request{Type: TypeCards, Origin: origin + "/"}, ErrOrigin},
		{"another origin signing", Request{Type: TypeSign, Origin: "http://127.0.0.1:8080", Token: "tok-gp", Kind: KindLogin, Challenge: make([]byte, 32), PIN: "1"}, ErrOrigin},
		{"unknown type", Request{Type: "sign-hash", Origin: origin}, ErrMalformed},
		{"unknown kind", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: "hash", Challenge: make([]byte, 32), PIN: "1"}, ErrMalformed},
		{"no card", Request{Type: TypeSign, Origin: origin, Token: "tok-other", Kind: KindLogin, Challenge: make([]byte, 32), PIN: "1"}, ErrNoCard},
		{"short challenge", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindLogin, Challenge: make([]byte, 31), PIN: "1"}, ErrNotVouch},
		{"a digest as challenge", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindLogin, Challenge: make([]byte, 33), PIN: "1"}, ErrNotVouch},
		{"login with a statement", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindLogin, Challenge: make([]byte, 32), Statement: good, PIN: "1"}, ErrNotVouch},
		{"statement with a challenge", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement, Challenge: make([]byte, 32), Statement: good, PIN: "1"}, ErrNotVouch},
		{"a hash as statement", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement, Statement: make([]byte, 32), PIN: "1"}, ErrNotVouch},
		{"statement with a byte more", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement, Statement: append(bytes.Clone(good), 0), PIN: "1"}, ErrNotVouch},
		{"statement without consent", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement,
			Statement: statement(t, func(s *protocol.Statement) { s.Consent = false }), PIN: "1"}, ErrNotVouch},
		{"another card's statement", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement,
			Statement: statement(t, func(s *protocol.Statement) { s.SignerCertHash = sha256.Sum256([]byte("other")) }), PIN: "1"}, ErrWrongCard},
		{"an old statement", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement,
			Statement: statement(t, func(s *protocol.Statement) { s.IssuedAt = s.IssuedAt.Add(-11 * time.Minute) }), PIN: "1"}, ErrStale},
		{"a future statement", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement,
			Statement: statement(t, func(s *protocol.Statement) {
				s.IssuedAt, s.ExpiresAt = s.IssuedAt.Add(11*time.Minute), s.ExpiresAt.Add(11*time.Minute)
			}), PIN: "1"}, ErrStale},
		{"valid for longer", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement,
			Statement: statement(t, func(s *protocol.Statement) { s.ExpiresAt = s.ExpiresAt.Add(time.Second) }), PIN: "1"}, ErrStale},
		{"expiring at issue", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement,
			Statement: statement(t, func(s *protocol.Statement) { s.ExpiresAt = s.IssuedAt }), PIN: "1"}, ErrStale},
		{"no PIN", Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindLogin, Challenge: make([]byte, 32)}, ErrPINNeeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeCards{cards: []Card{gpCard}}
			a := newAgent(t, f)
			resp := a.Handle(context.Background(), Request{ID: "7", Type: tt.req.Type, Origin: tt.req.Origin, Token: tt.req.Token,
				Kind: tt.req.Kind, Challenge: tt.req.Challenge, Statement: tt.req.Statement, PIN: tt.req.PIN})
			if resp.Type != "error" || resp.Error != tt.want || resp.ID != "7" {
				t.Fatalf("got %+v, want error %s", resp, tt.want)
			}
			if len(f.signed) != 0 || resp.Signature != nil {
				t.Error("the card signed")
			}
			if tt.want == ErrOrigin && f.listed != 0 {
				t.Error("another origin's request reached the cards")
			}
		})
	}
}

func TestAgentSigns(t *testing.T) {
	t.Parallel()
	f := &fakeCards{cards: []Card{gpCard, {Token: "tok-pad", State: CardReady, Holder: "Pad", PINPad: true, AuthCert: []byte("pad-auth")}}}
	a := newAgent(t, f)
	ctx := context.Background()
	challenge := bytes.Repeat([]byte{7}, 32)

	// What the PIN window shows comes from the agent's reading.
	st := statement(t, nil)
	resp := a.Handle(ctx, Request{Type: TypeDescribe, Origin: origin, Token: "tok-gp", Kind: KindStatement, Statement: st})
	want := &Display{Origin: origin, Action: KindStatement, Holder: gpCard.Holder, Code: mustCode(t, st).String(), Onset: "2026-11-20", ValidUntil: now.Add(24 * time.Hour)}
	if d := cmp.Diff(want, resp.Display); d != "" || len(f.signed) != 0 {
		t.Fatalf("describe: %s (signed %d)", d, len(f.signed))
	}

	resp = a.Handle(ctx, Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement, Statement: st, PIN: "123456"})
	digest := sha256.Sum256(st)
	if resp.Type != "signature" || string(resp.Signature) != "sig:tok-gp" || !bytes.Equal(resp.Certificate, gpCard.SignCert) ||
		!bytes.Equal(f.signed[0], digest[:]) || f.pins[0] != "123456" {
		t.Fatalf("statement: %+v", resp)
	}

	resp = a.Handle(ctx, Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindLogin, Challenge: challenge, PIN: "123456"})
	login := sha256.Sum256(protocol.LoginMessage(origin, challenge))
	if resp.Type != "signature" || !bytes.Equal(resp.Certificate, gpCard.AuthCert) || !bytes.Equal(f.signed[1], login[:]) {
		t.Fatalf("login: %+v", resp)
	}

	// A PIN pad asks itself: no PIN is needed from the window.
	if resp := a.Handle(ctx, Request{Type: TypeSign, Origin: origin, Token: "tok-pad", Kind: KindLogin, Challenge: challenge}); resp.Type != "signature" {
		t.Fatalf("PIN pad: %+v", resp)
	}
	// A card without a signature certificate cannot vouch.
	if resp := a.Handle(ctx, Request{Type: TypeSign, Origin: origin, Token: "tok-pad", Kind: KindStatement, Statement: st}); resp.Error != ErrNoSigningCert {
		t.Fatalf("no signature certificate: %+v", resp)
	}
	if resp := a.Handle(ctx, Request{Type: TypeCards, Origin: origin}); len(resp.Cards) != 2 {
		t.Fatalf("cards: %+v", resp)
	}
}

func mustCode(t *testing.T, st []byte) phonecode.Code {
	s, err := protocol.ParseStatement(st)
	if err != nil {
		t.Fatal(err)
	}
	return s.PhoneCode
}

func TestAgentCardFailures(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err   error
		code  string
		tries int
	}{
		{&PINError{TriesLeft: 2}, ErrPINWrong, 2},
		{&PINError{}, ErrPINWrong, 0},
		{ErrPINLocked, ErrPINBlocked, 0},
		{ErrRemoved, ErrCardRemoved, 0},
		{ErrCardBusy, ErrCardInUse, 0},
		{ErrCardNotFound, ErrNoCard, 0},
		{ErrNoPINPrompt, ErrPINNeeded, 0},
		{errors.New("CKR_GENERAL_ERROR at slot 3"), ErrCardError, 0},
	} {
		f := &fakeCards{cards: []Card{gpCard}, err: tt.err}
		resp := newAgent(t, f).Handle(context.Background(), Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindLogin, Challenge: make([]byte, 32), PIN: "1"})
		if resp.Error != tt.code || resp.TriesLeft != tt.tries || strings.Contains(resp.Error, "CKR") {
			t.Errorf("%v: %+v, want %s", tt.err, resp, tt.code)
		}
	}
}

func TestNewChecksOrigins(t *testing.T) {
	t.Parallel()
	for _, o := range []string{"https://vouch.example", "https://vouch.example:8443", "http://127.0.0.1:8080", "http://localhost:8080"} {
		if _, err := New([]string{o}, &fakeCards{}, slog.Default()); err != nil {
			t.Errorf("%s: %v", o, err)
		}
	}
	for _, o := range []string{"", "vouch.example", "http://vouch.example", "https://vouch.example/", "https://vouch.example/x",
		"https://u@vouch.example", "https://vouch.example?x", "*", "chrome-extension://abc"} {
		if _, err := New([]string{o}, &fakeCards{}, slog.Default()); err == nil {
			t.Errorf("%q accepted", o)
		}
	}
	if _, err := New(nil, &fakeCards{}, slog.Default()); err == nil {
		t.Error("no origin accepted")
	}
}

func TestServe(t *testing.T) {
	t.Parallel()
	a := newAgent(t, &fakeCards{cards: []Card{gpCard}})
	var in, out bytes.Buffer
	send := func(raw string) {
		b := []byte(raw)
		in.Write([]byte{byte(len(b)), byte(len(b) >> 8), 0, 0})
		in.Write(b)
	}
	send(`{"id":"1","type":"cards","origin":"` + origin + `"}`)
	send(`{"id":"2","type":"cards","origin":"` + origin + `","hash":"AAAA"}`) // a field the agent does not know
	send(`{"id":"3",`)
	send(`{"id":"4","type":"cards","origin":"https://evil.example"}`)
	if err := a.Serve(context.Background(), &in, &out, nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		b, err := ReadMessage(&out)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(b))
	}
	if len(got) != 4 || !strings.Contains(got[0], `"id":"1","type":"cards"`) || !strings.Contains(got[1], `"id":"2","type":"error","error":"malformed"`) ||
		!strings.Contains(got[2], `"error":"malformed"`) || !strings.Contains(got[3], `"id":"4","type":"error","error":"origin-refused"`) {
		t.Fatalf("replies:\n%s", strings.Join(got, "\n"))
	}
}

func TestWire(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := WriteMessage(&b, map[string]string{"a": "b"}); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadMessage(&b); err != nil || string(got) != `{"a":"b"}` {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := ReadMessage(&b); err != io.EOF {
		t.Errorf("end between messages: %v, want io.EOF", err)
	}
	for name, raw := range map[string][]byte{
		"truncated length":  {1, 0},
		"truncated message": {5, 0, 0, 0, '{'},
		"too large":         {0, 0, 1, 0},
		"length of 4 GiB":   {0xff, 0xff, 0xff, 0xff},
	} {
		if _, err := ReadMessage(bytes.NewReader(raw)); err == nil || err == io.EOF {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ReadMessage(bytes.NewReader([]byte{0, 0, 1, 0})); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too large: %v", err)
	}
	if err := WriteMessage(io.Discard, strings.Repeat("x", MaxResponse)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("large reply: %v", err)
	}
}

func FuzzReadMessage(f *testing.F) {
	f.Add([]byte{2, 0, 0, 0, '{', '}'})
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := ReadMessage(bytes.NewReader(raw))
		if err == nil && (len(b) > MaxRequest || len(b) != len(raw)-4 && len(raw) < 4+len(b)) {
			t.Fatalf("read %d bytes from %d", len(b), len(raw))
		}
	})
}

// FuzzServe: whatever the browser sends, the agent answers or stops, and
// never signs what is not a Vouch message.
func FuzzServe(f *testing.F) {
	f.Add([]byte(`{"id":"1","type":"sign","origin":"https://vouch.example","token":"tok-gp","kind":"login","challenge":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","pin":"1"}`))
	f.Add([]byte(`{"type":"sign","origin":"https://vouch.example","token":"tok-gp","kind":"statement","statement":"AA==","pin":"1"}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		fc := &fakeCards{cards: []Card{gpCard}}
		a, _ := New([]string{origin}, fc, slog.New(slog.NewTextHandler(io.Discard, nil)))
		a.now = func() time.Time { return now }
		in := append([]byte{byte(len(msg)), byte(len(msg) >> 8), byte(len(msg) >> 16), byte(len(msg) >> 24)}, msg...)
		_ = a.Serve(context.Background(), bytes.NewReader(in), io.Discard, nil)
		if len(fc.signed) == 0 {
			return
		}
		// Whatever was signed is the digest of a login message for the
		// back office's origin or of a statement for this card.
		var req Request
		if err := json.Unmarshal(msg, &req); err != nil {
			t.Fatalf("signed for a request that does not parse: %v", err)
		}
		login := sha256.Sum256(protocol.LoginMessage(origin, req.Challenge))
		st, err := protocol.ParseStatement(req.Statement)
		stmt := sha256.Sum256(req.Statement)
		switch {
		case req.Origin != origin:
			t.Fatalf("signed for origin %q", req.Origin)
		case req.Kind == KindLogin && len(req.Challenge) == ChallengeSize && bytes.Equal(fc.signed[0], login[:]):
		case req.Kind == KindStatement && err == nil && st.SignerCertHash == sha256.Sum256(gpCard.SignCert) && bytes.Equal(fc.signed[0], stmt[:]):
		default:
			t.Fatalf("signed %x for %+v", fc.signed[0], req)
		}
	})
}
