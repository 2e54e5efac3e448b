package revocation_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
	"strings"
	"testing"
	"time"

	"vouch/internal/revocation"
	"vouch/internal/testpki"
)

func TestSet(t *testing.T) {
	t.Parallel()
	now := time.Now()
	pki, err := testpki.New(now)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	issue := func(name string) *x509.Certificate {
		c, _ := testpki.CardByName(name)
		cert, err := pki.Issue(c, testpki.UsageSign, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	revoked, kept := issue("revoked"), issue("gp")
	crl, err := pki.CRL(testpki.CACareProvider, []*big.Int{revoked.SerialNumber}, now)
	if err != nil {
		t.Fatal(err)
	}
	care := pki.CAs[testpki.CACareProvider].Cert
	s := revocation.NewSet()
	if s.Revoked(revoked) {
		t.Fatal("revoked before any CRL")
	}
	// Refusals change nothing.
	for name, add := range map[string]func() error{
		"wrong issuer": func() error { return s.AddCRL(crl, pki.CAs[testpki.CANamedEmployee].Cert, now) },
		"stale":        func() error { return s.AddCRL(crl, care, now.Add(30*24*time.Hour)) },
		"garbage":      func() error { return s.AddCRL([]byte("not a CRL"), care, now) },
	} {
		if err := add(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if s.Revoked(revoked) {
			t.Errorf("%s: a refused CRL took effect", name)
		}
	}
	if err := s.AddCRL(crl, care, now); err != nil {
		t.Fatal(err)
	}
	if !s.Revoked(revoked) || s.Revoked(kept) {
		t.Errorf("revoked=%v kept=%v", s.Revoked(revoked), s.Revoked(kept))
	}
	// Same serial from another issuer is another certificate.
	other := *revoked
	other.RawIssuer = []byte(strings.Repeat("x", 8))
	if s.Revoked(&other) {
		t.Error("serial matched across issuers")
	}
	// An older CRL replayed is refused: it would lift the revocation.
	old, _ := pki.CRL(testpki.CACareProvider, nil, now.Add(-time.Hour))
	if err := s.AddCRL(old, care, now); err == nil || !s.Revoked(revoked) {
		t.Errorf("an older CRL was accepted: %v", err)
	}
	// A newer CRL replaces the old one: unrevocation (a lifted hold) takes effect.
	empty, _ := pki.CRL(testpki.CACareProvider, nil, now.Add(time.Second))
	if err := s.AddCRL(empty, care, now); err != nil {
		t.Fatal(err)
	}
	if s.Revoked(revoked) {
		t.Error("old CRL entry survived a newer CRL")
	}
}
