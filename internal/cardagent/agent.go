// Package cardagent is the clinician's card agent: the native messaging
// host behind the Vouch browser extension. It lists the cards it can see
// and has a card sign exactly two kinds of message — a Vouch login
// challenge bound to a configured back-office origin, and a Vouch
// authorization statement for that card — never a hash a caller chose.
// Before a signature it describes what will be signed, from its own reading
// of the message, for the extension's own window to show beside the PIN
// field. docs/cardagent.md describes the channel, every message and the
// threats each check stops.
package cardagent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/vouch-nl/vouch/internal/protocol"
)

// Request is a message from the extension. Origin is set by the
// extension's service worker from the sender it saw (sender.origin), never
// from anything the page wrote; the agent checks it against the configured
// back-office origins for every request.
type Request struct {
	ID     string `json:"id"`   // echoed in the response
	Type   string `json:"type"` // TypeOrigins, TypeCards, TypeDescribe or TypeSign
	Origin string `json:"origin"`
	// With TypeDescribe and TypeSign:
	Token     string `json:"token,omitempty"`     // the card, as Cards listed it
	Kind      string `json:"kind,omitempty"`      // KindLogin or KindStatement
	Challenge []byte `json:"challenge,omitempty"` // KindLogin: the server's 32 random bytes
	Statement []byte `json:"statement,omitempty"` // KindStatement: the encoded statement
	// PIN is typed into the extension's own window; empty on a reader with
	// a PIN pad. Never logged, never echoed.
	PIN string `json:"pin,omitempty"`
}

// Request types and kinds.
const (
	// TypeOrigins asks which back-office origins the agent signs for; the
	// extension's service worker asks it itself (with no origin), to inject
	// its content script into those origins' pages and no other.
	TypeOrigins  = "origins"
	TypeCards    = "cards"
	TypeDescribe = "describe"
	TypeSign     = "sign"

	KindLogin     = "login"
	KindStatement = "statement"
)

// Response answers a Request (same ID), or is an event (ID empty).
type Response struct {
	ID        string   `json:"id,omitempty"`
	Type      string   `json:"type"` // "origins", "cards", "description", "signature" or "error"
	Origins   []string `json:"origins,omitempty"`
	Cards     []Card   `json:"cards,omitempty"`
	Display   *Display `json:"display,omitempty"`
	Signature []byte   `json:"signature,omitempty"`
	// Certificate is the DER certificate of the key that signed.
	Certificate []byte `json:"certificate,omitempty"`
	Error       string `json:"error,omitempty"` // an Err* code
	// TriesLeft, with ErrPINWrong: what the card tells (1, or 2 for
	// "few"); 0 when it does not say.
	TriesLeft int `json:"triesLeft,omitempty"`
}

// Display is what the extension's PIN window shows, as the agent read it
// from the message itself: the page cannot make it say something else.
type Display struct {
	Origin     string    `json:"origin"`
	Action     string    `json:"action"` // KindLogin or KindStatement
	Holder     string    `json:"holder"` // the card holder's name on the card
	Code       string    `json:"code,omitempty"`
	Onset      string    `json:"onset,omitempty"`
	ValidUntil time.Time `json:"validUntil,omitzero"`
}

// Error codes: stable, for the extension and the page to show in the
// clinician's language.
const (
	ErrMalformed       = "malformed"         // not a request this agent understands
	ErrOrigin          = "origin-refused"    // the asking page is not the configured back office
	ErrNotVouch        = "not-vouch-message" // a challenge or statement that is not a Vouch one
	ErrWrongCard       = "wrong-card"        // a statement for another card
	ErrStale           = "statement-stale"   // a statement not issued just now
	ErrNoCard          = "no-card"           // no such card in a reader
	ErrPINWrong        = "pin-wrong"
	ErrPINBlocked      = "pin-blocked"
	ErrPINNeeded       = "pin-needed"
	ErrCardRemoved     = "card-removed"
	ErrCardInUse       = "card-in-use"
	ErrCardError       = "card-error" // the card failed otherwise; the log has why
	ErrNoSigningCert   = "no-certificate"
	ErrPINPadCancelled = "cancelled" // on the reader's PIN pad, or it timed out
)

// ChallengeSize is the size of a back-office login challenge.
const ChallengeSize = 32

// MaxClockSkew is how far a statement's issue time may be from the agent's
// clock: the back office makes it the moment the clinician asks to sign.
const MaxClockSkew = 10 * time.Minute

// Card is a reader and what is in it, as the page may know it: whose card
// it is and its certificates, which are public.
type Card struct {
	Reader string `json:"reader"`
	State  string `json:"state"` // CardReady, CardInUse, CardUnreadable or ReaderEmpty
	// With CardReady:
	Token    string `json:"token,omitempty"` // stable name of the card while it is in
	Holder   string `json:"holder,omitempty"`
	UZI      string `json:"uzi,omitempty"`
	Type     string `json:"type,omitempty"` // the UZI card type: Z, N, M or S
	PINPad   bool   `json:"pinPad,omitempty"`
	AuthCert []byte `json:"authCert,omitempty"` // DER
	SignCert []byte `json:"signCert,omitempty"` // DER
}

// States of a reader.
const (
	CardReady      = "ready"
	CardInUse      = "in-use"     // another program holds the card for itself
	CardUnreadable = "unreadable" // a card the module does not read, or one that does not answer
	ReaderEmpty    = "empty"
)

// Cards is what the agent needs of the cards; internal/p11 behind it in
// production (P11Cards), a fake in unit tests.
type Cards interface {
	List(ctx context.Context) ([]Card, error)
	// Sign has the key of the card's certificate cert sign digest (SHA-256)
	// with RSA PKCS #1 v1.5, after the card checked pin.
	Sign(ctx context.Context, token string, cert []byte, digest []byte, pin string) ([]byte, error)
}

// Agent answers requests. It holds no PIN and no signature beyond a call.
type Agent struct {
	origins []string
	cards   Cards
	log     *slog.Logger
	now     func() time.Time
}

// New makes an agent that signs for the back-office origins given (scheme,
// host and port, as a browser writes an origin).
func New(origins []string, cards Cards, log *slog.Logger) (*Agent, error) {
	if len(origins) == 0 {
		return nil, errors.New("cardagent: no back-office origin configured (cardagent install -origin)")
	}
	for _, o := range origins {
		if err := checkOrigin(o); err != nil {
			return nil, err
		}
	}
	return &Agent{origins: slices.Clone(origins), cards: cards, log: log, now: time.Now}, nil
}

// Handle answers one request. A refusal is a Response with an Error, never
// a Go error: the extension shows it.
func (a *Agent) Handle(ctx context.Context, req Request) Response {
	resp := a.handle(ctx, req)
	resp.ID = req.ID
	return resp
}

func fail(code string) Response { return Response{Type: "error", Error: code} }

func (a *Agent) handle(ctx context.Context, req Request) Response {
	if req.Type == TypeOrigins {
		// The worker's own question: it carries no page's origin and
		// nothing else, and touches no card.
		if req.Origin != "" || req.Token != "" || req.Kind != "" || req.Challenge != nil || req.Statement != nil || req.PIN != "" {
			return fail(ErrMalformed)
		}
		return Response{Type: "origins", Origins: slices.Clone(a.origins)}
	}
	// The origin first, before anything is read or any card touched: a
	// page of another origin learns nothing, not even whose card is in.
	if !slices.Contains(a.origins, req.Origin) {
		a.log.Warn("request from an origin that is not the back office", "origin", req.Origin, "type", req.Type)
		return fail(ErrOrigin)
	}
	switch req.Type {
	case TypeCards:
		cards, err := a.cards.List(ctx)
		if err != nil {
			return a.cardFailure("list cards", err)
		}
		return Response{Type: "cards", Cards: cards}
	case TypeDescribe, TypeSign:
	default:
		return fail(ErrMalformed)
	}
	card, err := a.card(ctx, req.Token)
	if err != nil {
		return a.cardFailure("find card", err)
	}
	cert, digest, disp, code := a.prepare(req, card)
	if code != "" {
		a.log.Warn("signature refused", "origin", req.Origin, "kind", req.Kind, "reason", code)
		return fail(code)
	}
	if req.Type == TypeDescribe {
		return Response{Type: "description", Display: disp}
	}
	if req.PIN == "" && !card.PINPad {
		return fail(ErrPINNeeded)
	}
	sig, err := a.cards.Sign(ctx, card.Token, cert, digest, req.PIN)
	if err != nil {
		return a.cardFailure("sign", err)
	}
	a.log.Info("signed", "origin", req.Origin, "kind", req.Kind)
	return Response{Type: "signature", Signature: sig, Certificate: cert}
}

func (a *Agent) card(ctx context.Context, token string) (Card, error) {
	if token == "" {
		// A reader without a usable card is listed without a token: an
		// empty one names no card, not whichever reader is busy.
		return Card{}, ErrCardNotFound
	}
	cards, err := a.cards.List(ctx)
	if err != nil {
		return Card{}, err
	}
	for _, c := range cards {
		if c.Token == token && c.State == CardReady {
			return c, nil
		}
		if c.Token == token && c.State == CardInUse {
			return Card{}, ErrCardBusy
		}
	}
	return Card{}, ErrCardNotFound
}

// prepare checks that req asks for one of the two messages the agent
// signs, and returns the certificate whose key signs it, the digest, and
// what the person should see; or an error code.
func (a *Agent) prepare(req Request, card Card) (cert, digest []byte, disp *Display, code string) {
	disp = &Display{Origin: req.Origin, Action: req.Kind, Holder: card.Holder}
	switch req.Kind {
	case KindLogin:
		if len(req.Challenge) != ChallengeSize || req.Statement != nil {
			return nil, nil, nil, ErrNotVouch
		}
		if len(card.AuthCert) == 0 {
			return nil, nil, nil, ErrNoSigningCert
		}
		d := sha256.Sum256(protocol.LoginMessage(req.Origin, req.Challenge))
		return card.AuthCert, d[:], disp, ""
	case KindStatement:
		if req.Challenge != nil {
			return nil, nil, nil, ErrNotVouch
		}
		st, err := protocol.ParseStatement(req.Statement)
		// Strictly the canonical encoding: what is shown is what is signed.
		if err != nil || !bytes.Equal(st.Marshal(), req.Statement) || !st.Consent {
			return nil, nil, nil, ErrNotVouch
		}
		if len(card.SignCert) == 0 {
			return nil, nil, nil, ErrNoSigningCert
		}
		if st.SignerCertHash != sha256.Sum256(card.SignCert) {
			return nil, nil, nil, ErrWrongCard
		}
		now := a.now()
		if st.IssuedAt.Before(now.Add(-MaxClockSkew)) || st.IssuedAt.After(now.Add(MaxClockSkew)) ||
			!st.ExpiresAt.After(st.IssuedAt) || st.ExpiresAt.Sub(st.IssuedAt) > protocol.MaxValidity {
			return nil, nil, nil, ErrStale
		}
		disp.Code, disp.Onset, disp.ValidUntil = st.PhoneCode.String(), st.SymptomOnset, st.ExpiresAt
		d := sha256.Sum256(req.Statement)
		return card.SignCert, d[:], disp, ""
	}
	return nil, nil, nil, ErrMalformed
}

// Errors a Cards implementation returns for the agent to tell apart.
var (
	ErrCardNotFound = errors.New("cardagent: no such card in a reader")
	ErrCardBusy     = errors.New("cardagent: the card is in use by another program")
)

// PINError is a wrong PIN, with what the card said of the tries left (0:
// it did not say).
type PINError struct{ TriesLeft int }

func (e *PINError) Error() string {
	return fmt.Sprintf("cardagent: wrong PIN (%d tries left)", e.TriesLeft)
}

// Errors of the PIN and the card, as Cards implementations report them.
var (
	ErrPINLocked   = errors.New("cardagent: the PIN is blocked")
	ErrRemoved     = errors.New("cardagent: the card was removed")
	ErrNoPINPrompt = errors.New("cardagent: the key needs a PIN and none was given")
	ErrCancelled   = errors.New("cardagent: cancelled on the reader")
)

func (a *Agent) cardFailure(op string, err error) Response {
	var pe *PINError
	switch {
	case errors.As(err, &pe):
		return Response{Type: "error", Error: ErrPINWrong, TriesLeft: pe.TriesLeft}
	case errors.Is(err, ErrPINLocked):
		return fail(ErrPINBlocked)
	case errors.Is(err, ErrCardNotFound):
		return fail(ErrNoCard)
	case errors.Is(err, ErrRemoved):
		return fail(ErrCardRemoved)
	case errors.Is(err, ErrCardBusy):
		return fail(ErrCardInUse)
	case errors.Is(err, ErrNoPINPrompt):
		return fail(ErrPINNeeded)
	case errors.Is(err, ErrCancelled):
		return fail(ErrPINPadCancelled)
	}
	a.log.Error("card failed", "op", op, "err", err)
	return fail(ErrCardError)
}

// Event is a message the agent sends unasked: the readers changed (a card
// went in or out). It carries nothing; the extension asks for the cards
// again, for each page, so every answer passes the origin check.
type Event struct {
	Type string `json:"type"` // "changed"
}

// Serve answers requests from r on w until r ends (the browser closed the
// channel) or ctx ends, and sends an Event whenever changed receives
// (nil: never). A message that cannot be read ends it: the stream is out
// of step after it. A request that cannot be parsed is answered
// ErrMalformed.
func (a *Agent) Serve(ctx context.Context, r io.Reader, w io.Writer, changed <-chan struct{}) error {
	var mu sync.Mutex // replies and events share w
	write := func(v any) error {
		mu.Lock()
		defer mu.Unlock()
		return WriteMessage(w, v)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan error, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				events <- nil
				return
			case <-changed:
				if err := write(Event{Type: "changed"}); err != nil {
					events <- err
					return
				}
			}
		}
	}()
	reqs := make(chan []byte)
	readErr := make(chan error, 1)
	go func() {
		for {
			b, err := ReadMessage(r)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case reqs <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var b []byte
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-events:
			return err
		case err := <-readErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case b = <-reqs:
		}
		var req Request
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		var resp Response
		if err := dec.Decode(&req); err != nil || dec.More() {
			resp = fail(ErrMalformed)
			resp.ID = req.ID
		} else {
			resp = a.Handle(ctx, req)
		}
		clear(b) // it may hold a PIN
		req.PIN = ""
		if err := write(resp); err != nil {
			return err
		}
	}
}

// checkOrigin accepts an origin as a browser writes it: https with a host
// and perhaps a port, or http on a loopback name for tests and demos.
func checkOrigin(o string) error {
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || o != u.Scheme+"://"+u.Host {
		return fmt.Errorf("cardagent: %q is not an origin (https://host[:port])", o)
	}
	switch h := u.Hostname(); {
	case u.Scheme == "https":
	case u.Scheme == "http" && (h == "127.0.0.1" || h == "localhost" || h == "::1"):
	default:
		return fmt.Errorf("cardagent: origin %q: only https, or http on this machine", o)
	}
	return nil
}
