package cardagent_test

import (
	"crypto/rand"
	"log/slog"
	"testing"
	"time"

	"github.com/ebfe/scard"

	"github.com/vouch-nl/vouch/internal/cardagent"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
)

// readerAgent is the agent as the card agent runs it on a workstation:
// OpenSC's module for the cards, PC/SC for the readers.
type readerAgent struct {
	*cardagent.Agent
	readers *cardagent.Readers
}

func newReaderAgent(t *testing.T) *readerAgent {
	t.Helper()
	m, err := p11.Open(testenv.OpenSCModule)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	log := slog.New(slog.NewTextHandler(testLog{t}, nil))
	readers := cardagent.WatchReaders(t.Context(), log)
	a, err := cardagent.New([]string{origin}, cardagent.NewP11Cards(m, readers), log)
	if err != nil {
		t.Fatal(err)
	}
	return &readerAgent{Agent: a, readers: readers}
}

// testLog shows the agent's log in the test's output.
type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) { l.t.Log(string(b)); return len(b), nil }

// cards lists the readers, by name.
func (a *readerAgent) cards(t *testing.T) map[string]cardagent.Card {
	t.Helper()
	resp := a.Handle(t.Context(), cardagent.Request{Type: cardagent.TypeCards, Origin: origin})
	if resp.Type != "cards" {
		t.Fatalf("cards: %+v", resp)
	}
	out := map[string]cardagent.Card{}
	for _, c := range resp.Cards {
		out[c.Reader] = c
	}
	return out
}

func (a *readerAgent) login(t *testing.T, token, pin string) cardagent.Response {
	t.Helper()
	challenge := make([]byte, cardagent.ChallengeSize)
	rand.Read(challenge)
	return a.Handle(t.Context(), cardagent.Request{Type: cardagent.TypeSign, Origin: origin, Token: token, Kind: cardagent.KindLogin, Challenge: challenge, PIN: pin})
}

// waitChange waits for the readers to report a change, for at most d.
func waitChange(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("no reader event within %s after %s", d, what)
	}
}

// TestReadersAndVirtualCards runs the agent against real PC/SC: pcscd with
// vpcd's two readers, a virtual card in each (the GP's and a staff card,
// their keys on SoftHSM), read through OpenSC's PKCS#11 module, as a
// clinician's workstation reads a card. Tests that use pcscd run one at a
// time (testenv.PCSC).
func TestReadersAndVirtualCards(t *testing.T) {
	man := testenv.Cards(t)
	readers := testenv.PCSC(t)
	a := newReaderAgent(t)
	changed, unsubscribe := a.readers.Subscribe()
	defer unsubscribe()

	got := a.cards(t)
	for _, r := range readers {
		if c := got[r.Name]; c.State != cardagent.ReaderEmpty {
			t.Fatalf("reader %s before any card: %+v", r.Name, c)
		}
	}

	// Two cards at once, told apart by reader, holder and card type.
	_, gpIn := testenv.InsertCard(t, man, "gp", readers[0])
	waitChange(t, changed, time.Second, "the GP's card went in")
	testenv.InsertCard(t, man, "staff", readers[1])
	waitChange(t, changed, time.Second, "the staff card went in")
	got = a.cards(t)
	gp, staff := got[readers[0].Name], got[readers[1].Name]
	if gp.State != cardagent.CardReady || gp.Holder != "A. Huisarts" || gp.UZI != "900000001" || gp.Type != "Z" || gp.AuthCert == nil || gp.SignCert == nil {
		t.Fatalf("the GP's card: %+v", gp)
	}
	if staff.State != cardagent.CardReady || staff.Holder != "G. Medewerker" || staff.Type != "N" || staff.Token == gp.Token {
		t.Fatalf("the staff card: %+v", staff)
	}

	// Both keys sign, and the signatures verify with the one verifier.
	v := verifier(t, man)
	challenge := make([]byte, cardagent.ChallengeSize)
	rand.Read(challenge)
	resp := a.Handle(t.Context(), cardagent.Request{Type: cardagent.TypeSign, Origin: origin, Token: gp.Token, Kind: cardagent.KindLogin, Challenge: challenge, PIN: testpki.CardPIN})
	if resp.Type != "signature" {
		t.Fatalf("login: %+v", resp)
	}
	if res, err := v.VerifyLogin(resp.Certificate, origin, challenge, resp.Signature, time.Now()); err != nil || res.Identity.UZI != "900000001" {
		t.Fatalf("VerifyLogin: %v", err)
	}
	var id [protocol.AuthorizationIDLen]byte
	rand.Read(id[:])
	st, err := protocol.NewStatement("NL", id, phonecode.Code{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, time.Now(), "", gp.SignCert)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the signature key wants the PIN every time; the agent gives it each time
		resp = a.Handle(t.Context(), cardagent.Request{Type: cardagent.TypeSign, Origin: origin, Token: gp.Token, Kind: cardagent.KindStatement, Statement: st.Marshal(), PIN: testpki.CardPIN})
		if resp.Type != "signature" {
			t.Fatalf("statement %d: %+v", i, resp)
		}
	}

	// Pulled out: the event comes at once, and the reader is empty.
	gpIn.Remove()
	waitChange(t, changed, time.Second, "the GP's card was pulled")
	if c := a.cards(t)[readers[0].Name]; c.State != cardagent.ReaderEmpty {
		t.Fatalf("after pulling the GP's card: %+v", c)
	}
	if r := a.login(t, gp.Token, testpki.CardPIN); r.Error != cardagent.ErrNoCard {
		t.Fatalf("signing with a pulled card: %+v", r)
	}
}

// TestPINTriesAndBlock: a wrong PIN says so, the card's last try says one
// is left, and the third blocks the card, after which even the right PIN is
// refused as blocked — the card's own counter, read through OpenSC.
func TestPINTriesAndBlock(t *testing.T) {
	man := testenv.Cards(t)
	readers := testenv.PCSC(t)
	a := newReaderAgent(t)
	card, _ := testenv.InsertCard(t, man, "gp", readers[0])
	gp := waitReady(t, a, readers[0].Name)

	if r := a.login(t, gp.Token, "000000"); r.Error != cardagent.ErrPINWrong || r.TriesLeft == 1 {
		t.Fatalf("first wrong PIN: %+v", r)
	}
	if r := a.login(t, gp.Token, "000000"); r.Error != cardagent.ErrPINWrong || r.TriesLeft != 1 {
		t.Fatalf("second wrong PIN (one try left): %+v", r)
	}
	if r := a.login(t, gp.Token, "000000"); r.Error != cardagent.ErrPINBlocked {
		t.Fatalf("third wrong PIN: %+v", r)
	}
	if r := a.login(t, gp.Token, testpki.CardPIN); r.Error != cardagent.ErrPINBlocked {
		t.Fatalf("the right PIN on a blocked card: %+v", r)
	}
	if card.TriesLeft() != 0 {
		t.Errorf("the card counts %d tries left", card.TriesLeft())
	}
}

// TestCardPulledMidSignature: the card leaves the reader while it signs;
// the agent says the card was removed, and returns no signature.
func TestCardPulledMidSignature(t *testing.T) {
	man := testenv.Cards(t)
	readers := testenv.PCSC(t)
	a := newReaderAgent(t)
	card, in := testenv.InsertCard(t, man, "gp", readers[0])
	gp := waitReady(t, a, readers[0].Name)
	card.SetBeforeSign(func(byte) { in.Pull() })
	if r := a.login(t, gp.Token, testpki.CardPIN); r.Error != cardagent.ErrCardRemoved || r.Signature != nil {
		t.Fatalf("pulled mid-signature: %+v", r)
	}
}

// TestCardHeldByAnotherProgram: a program that holds the card for itself
// makes the agent say so — not "card not supported" — and signing waits
// for nothing: it is refused as in use.
func TestCardHeldByAnotherProgram(t *testing.T) {
	man := testenv.Cards(t)
	readers := testenv.PCSC(t)
	testenv.InsertCard(t, man, "gp", readers[0])

	// The other program came first (once OpenSC has the card open, shared,
	// nobody can take it for themselves).
	sc, err := scard.EstablishContext()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Release()
	other, err := connectExclusive(sc, readers[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	a := newReaderAgent(t)
	if c := a.cards(t)[readers[0].Name]; c.State != cardagent.CardInUse {
		t.Errorf("held by another program: %s", c.State)
	}
	other.Disconnect(scard.LeaveCard)
	gp := waitReady(t, a, readers[0].Name)
	if r := a.login(t, gp.Token, testpki.CardPIN); r.Type != "signature" {
		t.Errorf("after the other program let go: %s %s", r.Type, r.Error)
	}
}

// connectExclusive takes the card for this test alone, waiting for the
// reader to have noticed it.
func connectExclusive(sc *scard.Context, reader string) (*scard.Card, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := sc.Connect(reader, scard.ShareExclusive, scard.ProtocolAny)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReady waits until the card in reader is ready to use.
func waitReady(t *testing.T, a *readerAgent, reader string) cardagent.Card {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := a.cards(t)[reader]
		if c.State == cardagent.CardReady {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the card in %s is not ready: %+v", reader, c)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
