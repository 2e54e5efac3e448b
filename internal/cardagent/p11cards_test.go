package cardagent_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/cardagent"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
)

const origin = "https://vouch.example"

// TestSoftHSMCards: the agent on the SoftHSM test cards lists whose card is
// in without a PIN, and what it signs verifies with the one verifier.
func TestSoftHSMCards(t *testing.T) {
	man := testenv.Cards(t)
	m, err := p11.Open(man.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, err := cardagent.New([]string{origin}, cardagent.NewP11Cards(m, nil), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resp := a.Handle(ctx, cardagent.Request{Type: cardagent.TypeCards, Origin: origin})
	var gp, staff cardagent.Card
	for _, c := range resp.Cards {
		switch c.Reader {
		case "vouch-gp":
			gp = c
		case "vouch-staff":
			staff = c
		case testpki.BackendToken:
			t.Error("the back end's token is listed as a card")
		}
	}
	if gp.Token == "" || gp.Holder != "A. Huisarts" || gp.AuthCert == nil || gp.SignCert == nil || staff.Token == "" {
		t.Fatalf("cards: %+v", resp.Cards)
	}

	// Login: the verifier accepts the signature for this origin.
	challenge := make([]byte, cardagent.ChallengeSize)
	rand.Read(challenge)
	resp = a.Handle(ctx, cardagent.Request{Type: cardagent.TypeSign, Origin: origin, Token: gp.Token, Kind: cardagent.KindLogin, Challenge: challenge, PIN: testpki.CardPIN})
	if resp.Type != "signature" {
		t.Fatalf("login: %+v", resp)
	}
	v := verifier(t, man)
	res, err := v.VerifyLogin(resp.Certificate, origin, challenge, resp.Signature, time.Now())
	if err != nil || res.Identity.UZI != "900000001" {
		t.Fatalf("VerifyLogin: %v", err)
	}
	if _, err := v.VerifyLogin(resp.Certificate, "https://evil.example", challenge, resp.Signature, time.Now()); err == nil {
		t.Error("the login signature verifies for another origin")
	}

	// Statement: signed by the signature key, over exactly the statement.
	var id [protocol.AuthorizationIDLen]byte
	st, err := protocol.NewStatement("NL", id, phonecode.Code{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}, time.Now(), "", gp.SignCert)
	if err != nil {
		t.Fatal(err)
	}
	raw := st.Marshal()
	resp = a.Handle(ctx, cardagent.Request{Type: cardagent.TypeSign, Origin: origin, Token: gp.Token, Kind: cardagent.KindStatement, Statement: raw, PIN: testpki.CardPIN})
	if resp.Type != "signature" || !bytes.Equal(resp.Certificate, gp.SignCert) {
		t.Fatalf("statement: %+v", resp)
	}
	cert, err := x509.ParseCertificate(resp.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(raw)
	if err := rsa.VerifyPKCS1v15(cert.PublicKey.(*rsa.PublicKey), crypto.SHA256, d[:], resp.Signature); err != nil {
		t.Fatalf("statement signature: %v", err)
	}
	// The staff card cannot sign the GP's statement.
	resp = a.Handle(ctx, cardagent.Request{Type: cardagent.TypeSign, Origin: origin, Token: staff.Token, Kind: cardagent.KindStatement, Statement: raw, PIN: testpki.CardPIN})
	if resp.Error != cardagent.ErrWrongCard {
		t.Fatalf("staff card, GP's statement: %+v", resp)
	}
	// A wrong PIN is said so; the card then still signs with the right one.
	resp = a.Handle(ctx, cardagent.Request{Type: cardagent.TypeSign, Origin: origin, Token: gp.Token, Kind: cardagent.KindLogin, Challenge: challenge, PIN: "000000"})
	if resp.Error != cardagent.ErrPINWrong {
		t.Fatalf("wrong PIN: %+v", resp)
	}
	resp = a.Handle(ctx, cardagent.Request{Type: cardagent.TypeSign, Origin: origin, Token: gp.Token, Kind: cardagent.KindLogin, Challenge: challenge, PIN: testpki.CardPIN})
	if resp.Type != "signature" {
		t.Fatalf("after a wrong PIN: %+v", resp)
	}
}

func verifier(t *testing.T, man *testpki.Manifest) *protocol.Verifier {
	t.Helper()
	files := man.TrustFiles()
	cfg := trust.Config{Roots: files.Roots, CAs: files.CAs(), CRLs: files.CRLs, Jurisdiction: "NL", Profile: "test"}
	tr, err := cfg.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
