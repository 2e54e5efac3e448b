package cardagent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// ReaderSource says which card readers there are and what is in them
// (Readers, from PC/SC).
type ReaderSource interface {
	Current() []Reader
	// Probe asks about one reader now; ok is false when it is not there.
	Probe(name string) (r Reader, ok bool)
}

var _ ReaderSource = (*Readers)(nil)

// P11Cards finds cards as PKCS#11 tokens of one module, and their readers
// through PC/SC: a card middleware (OpenSC, or a UZI card's own) names each
// token's slot after the reader it is in. Every token with a UZI
// certificate is a card; a reader with a card but no such token is listed
// with what is wrong (held by another program, or not a card the module
// reads); an empty reader is listed empty, so the clinician sees where to
// put the card.
type P11Cards struct {
	m       *p11.Module
	readers ReaderSource // nil: tokens only (SoftHSM's test cards have no reader)
	// The clock of pulled (time.Now and time.Sleep; a fake in unit tests).
	now   func() time.Time
	sleep func(time.Duration)
}

var _ Cards = (*P11Cards)(nil)

// NewP11Cards uses the open module m and, when not nil, the readers.
func NewP11Cards(m *p11.Module, readers ReaderSource) *P11Cards {
	return &P11Cards{m: m, readers: readers, now: time.Now, sleep: time.Sleep}
}

// List reads every token's certificates, without a PIN, and every reader's
// state.
func (c *P11Cards) List(ctx context.Context) ([]Card, error) {
	var readers []Reader
	if c.readers != nil {
		readers = c.readers.Current()
	}
	toks, err := c.m.Tokens()
	if err != nil {
		return nil, p11Error(err)
	}
	out := []Card{}
	seen := map[string]bool{}
	for _, t := range toks {
		card, ok := c.card(t)
		if !ok {
			continue
		}
		if i := slices.IndexFunc(readers, func(r Reader) bool { return r.Name == t.SlotDescription }); i >= 0 {
			if !readers[i].Present {
				continue // pulled since the module last looked
			}
			seen[t.SlotDescription] = true
			card.Reader = t.SlotDescription
		}
		out = append(out, card)
	}
	for _, r := range readers {
		switch {
		case seen[r.Name]:
		case !r.Present:
			out = append(out, Card{Reader: r.Name, State: ReaderEmpty})
		case r.Exclusive:
			out = append(out, Card{Reader: r.Name, State: CardInUse})
		default:
			out = append(out, Card{Reader: r.Name, State: CardUnreadable})
		}
	}
	slices.SortStableFunc(out, func(a, b Card) int {
		switch {
		case a.Reader < b.Reader:
			return -1
		case a.Reader > b.Reader:
			return 1
		}
		return 0
	})
	return out, nil
}

// card reads a token as a card: its UZI certificates, by key usage.
func (c *P11Cards) card(t p11.Token) (Card, bool) {
	certs, err := c.m.Certificates(t)
	if err != nil {
		return Card{}, false // pulled while we looked, or not a card
	}
	// A token in no reader (SoftHSM's test cards) is known by its label.
	card := Card{Token: t.Serial, Reader: t.Label, State: CardReady, PINPad: t.ProtectedPath}
	for _, pc := range certs {
		switch use := pc.Cert.KeyUsage; {
		case use&x509.KeyUsageContentCommitment != 0:
			card.SignCert = pc.Cert.Raw
		case use&x509.KeyUsageDigitalSignature != 0:
			card.AuthCert = pc.Cert.Raw
		default:
			continue
		}
		if card.Holder == "" {
			card.Holder = pc.Cert.Subject.CommonName
		}
		if id, err := uzi.FromCertificate(pc.Cert); err == nil && card.UZI == "" {
			card.UZI, card.Type = id.UZI, string(id.CardType)
		}
	}
	return card, card.AuthCert != nil || card.SignCert != nil
}

// Sign logs in to the card with pin and has the key beside cert sign.
func (c *P11Cards) Sign(ctx context.Context, token string, cert, digest []byte, pin string) ([]byte, error) {
	toks, err := c.m.Tokens()
	if err != nil {
		return nil, p11Error(err)
	}
	var id []byte
	found, reader := false, ""
	for _, t := range toks {
		if t.Serial != token {
			continue
		}
		found, reader = true, t.SlotDescription
		if c.heldElsewhere(t.SlotDescription) {
			return nil, ErrCardBusy
		}
		certs, err := c.m.Certificates(t)
		if err != nil {
			return nil, p11Error(err)
		}
		for _, pc := range certs {
			if bytes.Equal(pc.Cert.Raw, cert) {
				id = pc.ID
			}
		}
	}
	switch {
	case !found:
		return nil, ErrCardNotFound
	case id == nil:
		return nil, fmt.Errorf("cardagent: the certificate is not on card %s", token)
	}
	s, err := c.m.Signer(p11.URI{Serial: token, ID: id}, pin)
	if err != nil {
		return nil, p11Error(err)
	}
	defer s.Close()
	// A signature key asks for the PIN again at every signature (UZI's
	// non-repudiation key): the same PIN, given once by the person.
	s.SetPINPrompt(func() ([]byte, error) { return []byte(pin), nil })
	if !bytes.Equal(s.Certificate().Raw, cert) {
		return nil, fmt.Errorf("cardagent: the key found is not the certificate's")
	}
	sig, err := s.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		if c.pulled(reader) {
			// A middleware reports a card pulled mid-command as whatever
			// the broken exchange gave (OpenSC: CKR_GENERAL_ERROR); the
			// reader says what happened.
			return nil, fmt.Errorf("%w: %v", ErrRemoved, err)
		}
		return nil, p11Error(err)
	}
	return sig, nil
}

// heldElsewhere reports whether PC/SC says another program holds the card
// in reader exclusively.
func (c *P11Cards) heldElsewhere(reader string) bool {
	if c.readers == nil {
		return false
	}
	r, ok := c.readers.Probe(reader)
	return ok && r.Exclusive
}

// pulledWait bounds how long a failed signature waits for PC/SC to notice
// the card left: the reader driver polls, so the failure can come first.
const pulledWait = time.Second

// pulled reports whether the reader is known to PC/SC and is, or within
// pulledWait becomes, empty.
func (c *P11Cards) pulled(reader string) bool {
	if c.readers == nil {
		return false
	}
	for deadline := c.now().Add(pulledWait); ; c.sleep(50 * time.Millisecond) {
		r, ok := c.readers.Probe(reader)
		if !ok {
			return false
		}
		if !r.Present {
			return true
		}
		if c.now().After(deadline) {
			return false
		}
	}
}

// p11Error maps the PKCS#11 layer's errors onto the agent's.
func p11Error(err error) error {
	var pe *p11.PINError
	switch {
	case errors.As(err, &pe):
		return &PINError{TriesLeft: max(pe.TriesLeft, 0)}
	case errors.Is(err, p11.ErrPINLocked):
		return fmt.Errorf("%w: %v", ErrPINLocked, err)
	case errors.Is(err, p11.ErrTokenRemoved):
		return fmt.Errorf("%w: %v", ErrRemoved, err)
	case errors.Is(err, p11.ErrTokenNotFound):
		return fmt.Errorf("%w: %v", ErrCardNotFound, err)
	case errors.Is(err, p11.ErrPINNeeded):
		return fmt.Errorf("%w: %v", ErrNoPINPrompt, err)
	case errors.Is(err, p11.ErrCancelled):
		return fmt.Errorf("%w: %v", ErrCancelled, err)
	}
	return err
}
