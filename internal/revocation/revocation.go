// Package revocation keeps the serial numbers that the UZI CAs have revoked,
// loaded from their CRLs after checking each CRL's signature against its
// issuer. Fetching CRLs on a schedule is the registry sync's job; this
// package only answers "is this certificate revoked?".
package revocation

import (
	"crypto/x509"
	"fmt"
	"math/big"
	"sync"
	"time"
)

// Set is a concurrency-safe set of revoked certificates, per issuer.
type Set struct {
	mu      sync.RWMutex
	revoked map[string]map[string]struct{} // issuer DER subject -> serial (text)
	numbers map[string]*big.Int            // issuer DER subject -> CRL number in force
}

// NewSet returns an empty set.
func NewSet() *Set {
	return &Set{revoked: map[string]map[string]struct{}{}, numbers: map[string]*big.Int{}}
}

// AddCRL verifies a DER CRL against its issuer and replaces that issuer's
// entries with it. A CRL that is not signed by issuer, or that is past its
// NextUpdate at now, or older (by CRL number) than the one in force — a
// replayed old CRL would lift revocations — is refused and changes nothing.
func (s *Set) AddCRL(der []byte, issuer *x509.Certificate, now time.Time) error {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("revocation: parse CRL: %w", err)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("revocation: CRL of %s: %w", issuer.Subject, err)
	}
	if !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate) {
		return fmt.Errorf("revocation: CRL of %s is stale (next update was %s)", issuer.Subject, crl.NextUpdate)
	}
	serials := make(map[string]struct{}, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		serials[e.SerialNumber.Text(16)] = struct{}{}
	}
	key := string(issuer.RawSubject)
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.numbers[key]; ok && crl.Number != nil && crl.Number.Cmp(cur) < 0 {
		return fmt.Errorf("revocation: CRL of %s has number %s, older than %s in force", issuer.Subject, crl.Number, cur)
	}
	s.revoked[key] = serials
	if crl.Number != nil {
		s.numbers[key] = crl.Number
	}
	return nil
}

// Revoked reports whether cert's issuer has revoked it.
func (s *Set) Revoked(cert *x509.Certificate) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.revoked[string(cert.RawIssuer)][cert.SerialNumber.Text(16)]
	return ok
}
