// Package revocation keeps the serial numbers that the UZI CAs have revoked,
// loaded from their CRLs after checking each CRL's signature against its
// issuer. Fetching CRLs on a schedule is the registry sync's job; this
// package only answers "is this certificate revoked?".
package revocation

import (
	"crypto/x509"
	"fmt"
	"sync"
	"time"
)

// Set is a concurrency-safe set of revoked certificates, per issuer.
type Set struct {
	mu      sync.RWMutex
	revoked map[string]map[string]struct{} // issuer DER subject -> serial (text)
}

// NewSet returns an empty set.
func NewSet() *Set { return &Set{revoked: map[string]map[string]struct{}{}} }

// AddCRL verifies a DER CRL against its issuer and replaces that issuer's
// entries with it. A CRL that is not signed by issuer, or that is past its
// NextUpdate at now, is refused and changes nothing.
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
	s.mu.Lock()
	s.revoked[string(issuer.RawSubject)] = serials
	s.mu.Unlock()
	return nil
}

// Revoked reports whether cert's issuer has revoked it.
func (s *Set) Revoked(cert *x509.Certificate) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.revoked[string(cert.RawIssuer)][cert.SerialNumber.Text(16)]
	return ok
}
