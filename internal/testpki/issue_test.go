package testpki_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
)

// TestIssuer issues bundles concurrently and verifies each as a phone's
// server would: for its phone only, by the card's holder, each with its own
// authorization.
func TestIssuer(t *testing.T) {
	man := testenv.Cards(t)
	iss, err := testpki.OpenIssuer(man, "gp")
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	files := man.TrustFiles()
	tr, err := trust.Config{Roots: files.Roots, CAs: files.CAs(), CRLs: files.CRLs, Jurisdiction: "NL", Profile: "test",
		AttestationKeys: []string{man.Backend.AttestationPub}}.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	pubs := make([]ed25519.PublicKey, n)
	bundles := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		pubs[i], _, _ = ed25519.GenerateKey(rand.Reader)
		wg.Add(1)
		go func() { defer wg.Done(); bundles[i], errs[i] = iss.Issue(pubs[i]) }()
	}
	wg.Wait()
	ids := map[[protocol.AuthorizationIDLen]byte]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("issue %d: %v", i, errs[i])
		}
		res, err := v.Verify(bundles[i], pubs[i], time.Now())
		if err != nil {
			t.Fatalf("bundle %d does not verify: %v", i, err)
		}
		if res.Identity.UZI != iss.Identity().UZI || res.Identity.UZI == "" {
			t.Errorf("bundle %d vouched by %q, want the issuer's %q", i, res.Identity.UZI, iss.Identity().UZI)
		}
		ids[res.Statement.AuthorizationID] = true
		var ref *protocol.Refusal
		if _, err := v.Verify(bundles[i], pubs[(i+1)%n], time.Now()); !errors.As(err, &ref) {
			t.Errorf("bundle %d verified for another phone: %v", i, err)
		}
	}
	if len(ids) != n {
		t.Errorf("%d distinct authorization ids in %d bundles", len(ids), n)
	}
	if iss.Certificate() == nil {
		t.Error("no card certificate")
	}
}

func TestOpenIssuerUnknownCard(t *testing.T) {
	if _, err := testpki.OpenIssuer(testenv.Cards(t), "no-such-card"); err == nil {
		t.Fatal("an issuer for a card the manifest does not have")
	}
}

// TestOpenIssuerFailsCleanly: a card the module refuses (here a wrong
// PIN) is an error, and what was opened is closed; it panicked when the
// failing return had already set the issuer to nil.
func TestOpenIssuerFailsCleanly(t *testing.T) {
	man := *testenv.Cards(t)
	man.Cards = slices.Clone(man.Cards)
	for i := range man.Cards {
		if man.Cards[i].Name == "gp" {
			man.Cards[i].PIN = "000000"
		}
	}
	if iss, err := testpki.OpenIssuer(&man, "gp"); err == nil || iss != nil {
		t.Fatalf("an issuer with the wrong PIN: %v, %v", iss, err)
	}
}

// TestMadeTokenNeverMadeAgain: once the cache's tokens were made, a token
// that looks absent (another process rewriting its file) is looked for
// again and, still absent, is an error — never a second token of its
// label, which broke every later lookup.
func TestMadeTokenNeverMadeAgain(t *testing.T) {
	man := testenv.Cards(t)
	m, err := p11.Open(man.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const label = "vouch-never-made"
	if s, err := testpki.OpenToken(m, label, testpki.CardPIN, true); err == nil {
		s.Close()
		t.Fatal("a token that was never there opened")
	}
	if _, err := m.FindToken(p11.URI{Token: label}); !errors.Is(err, p11.ErrTokenNotFound) {
		t.Fatalf("after the refusal: %v, want no such token", err)
	}
	// Present, it opens at once.
	s, err := testpki.OpenToken(m, man.Cards[0].Token, testpki.CardPIN, true)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestIssueRefusesBadPhoneKey(t *testing.T) {
	iss, err := testpki.OpenIssuer(testenv.Cards(t), "gp")
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	if _, err := iss.Issue(ed25519.PublicKey{1, 2, 3}); err == nil {
		t.Fatal("a bundle for a 3-byte phone key")
	}
}
