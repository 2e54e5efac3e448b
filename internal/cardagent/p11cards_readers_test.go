package cardagent

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
)

// softHSMCards opens the SoftHSM test cards and finds the GP's and the
// staff card's tokens among them.
func softHSMCards(t *testing.T) (m *p11.Module, gp, staff p11.Token) {
	t.Helper()
	man := testenv.Cards(t)
	m, err := p11.Open(man.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	toks, err := m.Tokens()
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		switch tok.Label {
		case "vouch-gp":
			gp = tok
		case "vouch-staff":
			staff = tok
		}
	}
	if gp.Serial == "" || staff.Serial == "" || gp.SlotDescription == staff.SlotDescription {
		t.Fatalf("tokens: %+v", toks)
	}
	return m, gp, staff
}

// TestP11CardsWithReaders: the SoftHSM test cards, listed as if their slots
// were readers (as OpenSC names a card's slot after its reader): a card is
// found in its reader, a card whose reader PC/SC says is empty is not
// listed (it was pulled since the module looked), and every reader without
// a card the module reads says why; sorted by reader.
func TestP11CardsWithReaders(t *testing.T) {
	t.Parallel()
	m, gp, staff := softHSMCards(t)
	readers := &fakeReaders{current: []Reader{
		{Name: gp.SlotDescription, Present: true}, // first: a match at 0 is a match
		{Name: "~ empty reader"},
		{Name: staff.SlotDescription}, // pulled
		{Name: "! held by another program", Present: true, Exclusive: true},
		{Name: "0 not a card the module reads", Present: true},
		{Name: "1 mute card", Present: true, Mute: true},
	}}
	c := NewP11Cards(m, readers)
	cards, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(cards, func(a, b Card) int { return cmpString(a.Reader, b.Reader) }) {
		t.Errorf("not sorted by reader: %v", readerNames(cards))
	}
	byReader := map[string]Card{}
	for _, card := range cards {
		if _, dup := byReader[card.Reader]; dup {
			t.Errorf("reader %q listed twice", card.Reader)
		}
		byReader[card.Reader] = card
	}
	want := map[string]string{
		"~ empty reader":                ReaderEmpty,
		gp.SlotDescription:              CardReady,
		staff.SlotDescription:           ReaderEmpty,
		"! held by another program":     CardInUse,
		"0 not a card the module reads": CardUnreadable,
		"1 mute card":                   CardUnreadable,
	}
	for reader, state := range want {
		if got := byReader[reader]; got.State != state {
			t.Errorf("reader %q: %+v, want %s", reader, got, state)
		}
	}
	if g := byReader[gp.SlotDescription]; g.Token != gp.Serial || g.Holder != "A. Huisarts" || g.UZI != "900000001" || g.Type != "Z" ||
		g.AuthCert == nil || g.SignCert == nil || slices.Equal(g.AuthCert, g.SignCert) {
		t.Errorf("the GP's card: %+v", g)
	}
	for _, card := range cards {
		switch {
		case card.Token == staff.Serial || card.Reader == staff.Label:
			t.Errorf("the pulled staff card is listed: %+v", card)
		case card.Reader == testpki.BackendToken:
			t.Errorf("the back end's token is listed: %+v", card)
		case card.State != CardReady && card.Token != "":
			t.Errorf("a reader without a card has a token: %+v", card)
		}
	}
	// The cards in no reader the fake knows are known by their labels,
	// among the readers.
	if byReader["vouch-doctor"].State != CardReady {
		t.Errorf("a card in no reader: %v", readerNames(cards))
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func readerNames(cards []Card) []string {
	var out []string
	for _, c := range cards {
		out = append(out, c.Reader)
	}
	return out
}

// TestP11CardsSignWithReaders: a card that PC/SC says another program
// holds is refused before any PIN reaches it; otherwise the key beside the
// certificate asked for signs, and only that.
func TestP11CardsSignWithReaders(t *testing.T) {
	t.Parallel()
	m, gp, staff := softHSMCards(t)
	cards, err := NewP11Cards(m, nil).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var gpCard, staffCard Card
	for _, c := range cards {
		switch c.Token {
		case gp.Serial:
			gpCard = c
		case staff.Serial:
			staffCard = c
		}
	}
	digest := sha256.Sum256([]byte("a Vouch message"))
	shared := probeAnswer{Reader{Name: gp.SlotDescription, Present: true}, true}
	held := probeAnswer{Reader{Name: gp.SlotDescription, Present: true, Exclusive: true}, true}
	tests := []struct {
		name    string
		probe   probeAnswer
		token   string
		cert    []byte
		wantErr error // nil: it signs
		anyErr  bool  // an error that is none of the agent's
	}{
		{"login", shared, gp.Serial, gpCard.AuthCert, nil, false},
		{"statement", shared, gp.Serial, gpCard.SignCert, nil, false},
		{"held by another program", held, gp.Serial, gpCard.AuthCert, ErrCardBusy, false},
		{"the reader not known to PC/SC", probeAnswer{}, gp.Serial, gpCard.AuthCert, nil, false},
		{"no such card", shared, "no-such-serial", gpCard.AuthCert, ErrCardNotFound, false},
		{"another card's certificate", shared, gp.Serial, staffCard.AuthCert, nil, true},
	}
	for _, tt := range tests { // one after the other: one token
		t.Run(tt.name, func(t *testing.T) {
			readers := &fakeReaders{probes: []probeAnswer{tt.probe}}
			c := NewP11Cards(m, readers)
			c.sleep = func(time.Duration) { t.Error("waited for a card to leave after a signature that did not fail") }
			sig, err := c.Sign(context.Background(), tt.token, tt.cert, digest[:], testpki.CardPIN)
			switch {
			case tt.anyErr:
				if err == nil || sig != nil || errors.Is(err, ErrCardBusy) || errors.Is(err, ErrCardNotFound) {
					t.Fatalf("Sign: %x, %v; want an error", sig, err)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) || sig != nil {
					t.Fatalf("Sign: %x, %v; want %v", sig, err, tt.wantErr)
				}
			default:
				if err != nil {
					t.Fatalf("Sign: %v", err)
				}
				cert, err := x509.ParseCertificate(tt.cert)
				if err != nil {
					t.Fatal(err)
				}
				if err := rsa.VerifyPKCS1v15(cert.PublicKey.(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
					t.Errorf("the signature: %v", err)
				}
			}
			if tt.token == gp.Serial {
				if d := cmp.Diff([]string{gp.SlotDescription}, readers.asked); d != "" {
					t.Errorf("asked PC/SC (-want +got):\n%s", d)
				}
			}
		})
	}
}
