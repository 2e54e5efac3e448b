package revocation_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
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
		cert, err := pki.IssueNamed(name, testpki.UsageSign, key.Public())
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
	revokedNow := func(c *x509.Certificate) bool { return errors.Is(s.Check(c, care, now), revocation.ErrRevoked) }
	if err := s.Check(kept, care, now); !errors.Is(err, revocation.ErrUnknown) {
		t.Fatalf("status before any CRL: %v, want unknown", err)
	}
	delta, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(now.Unix() + 1), ThisUpdate: now,
		NextUpdate: now.Add(time.Hour), ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: []byte{2, 1, 1}}}},
		care, pki.CAs[testpki.CACareProvider].Key)
	if err != nil {
		t.Fatal(err)
	}
	idp, _ := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(now.Unix() + 1), ThisUpdate: now,
		NextUpdate: now.Add(time.Hour), ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: []byte{0x30, 0}}}},
		care, pki.CAs[testpki.CACareProvider].Key)
	future, _ := pki.CRL(testpki.CACareProvider, nil, now.Add(time.Hour))
	// Refusals change nothing.
	for name, add := range map[string]func() error{
		"delta CRL":           func() error { return s.AddCRL(delta, care, now) },
		"partitioned CRL":     func() error { return s.AddCRL(idp, care, now) },
		"dated in the future": func() error { return s.AddCRL(future, care, now) },
		"wrong issuer":        func() error { return s.AddCRL(crl, pki.CAs[testpki.CANamedEmployee].Cert, now) },
		"stale":               func() error { return s.AddCRL(crl, care, now.Add(30*24*time.Hour)) },
		"garbage":             func() error { return s.AddCRL([]byte("not a CRL"), care, now) },
	} {
		if err := add(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if revokedNow(revoked) {
			t.Errorf("%s: a refused CRL took effect", name)
		}
	}
	if err := s.AddCRL(crl, care, now); err != nil {
		t.Fatal(err)
	}
	if !revokedNow(revoked) || revokedNow(kept) {
		t.Errorf("revoked=%v kept=%v", revokedNow(revoked), revokedNow(kept))
	}
	// Same serial from another issuer is another certificate.
	other := *revoked
	other.RawIssuer = []byte(strings.Repeat("x", 8))
	if err := s.Check(&other, care, now); !errors.Is(err, revocation.ErrUnknown) {
		t.Errorf("a certificate that does not name the issuer: %v, want unknown", err)
	}
	// A CA with the same name but another key (a rollover, or an
	// impostor) has no CRL of its own: its certificates are unknown, and
	// the care-provider CA's CRL does not answer for them.
	rekeyed := *care
	rekeyed.RawSubjectPublicKeyInfo = append([]byte{}, care.RawSubjectPublicKeyInfo...)
	rekeyed.RawSubjectPublicKeyInfo[len(rekeyed.RawSubjectPublicKeyInfo)-1] ^= 1
	if err := s.Check(kept, &rekeyed, now); !errors.Is(err, revocation.ErrUnknown) {
		t.Errorf("same issuer name, other key: %v, want unknown", err)
	}
	if err := s.Check(kept, care, now); err != nil {
		t.Errorf("good certificate: %v", err)
	}
	// Past the CRL's next update nobody can know: fail closed.
	if err := s.Check(kept, care, now.Add(8*24*time.Hour)); !errors.Is(err, revocation.ErrUnknown) {
		t.Errorf("stale CRL: %v, want unknown", err)
	}
	// An older CRL replayed is refused: it would lift the revocation.
	old, _ := pki.CRL(testpki.CACareProvider, nil, now.Add(-time.Hour))
	if err := s.AddCRL(old, care, now); err == nil || !revokedNow(revoked) {
		t.Errorf("an older CRL was accepted: %v", err)
	}
	// A newer CRL replaces the old one: unrevocation (a lifted hold) takes effect.
	empty, _ := pki.CRL(testpki.CACareProvider, nil, now.Add(time.Second))
	if err := s.AddCRL(empty, care, now); err != nil {
		t.Fatal(err)
	}
	if revokedNow(revoked) {
		t.Error("old CRL entry survived a newer CRL")
	}
}
