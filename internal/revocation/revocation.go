// Package revocation keeps the serial numbers that the UZI CAs have revoked,
// loaded from their CRLs after checking each CRL's signature against its
// issuer. Fetching CRLs on a schedule is the registry sync's job; this
// package answers "may this certificate still be used?" — and answers no
// when it cannot know, because the issuer's CRL is missing or out of date.
package revocation

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"sync"
	"time"
)

// Why a certificate may not be used.
var (
	ErrRevoked = errors.New("revocation: certificate revoked")
	ErrUnknown = errors.New("revocation: no current CRL for the issuer")
)

type issuerState struct {
	der        [32]byte // SHA-256 of the CRL in force
	serials    map[string]struct{}
	number     *big.Int
	thisUpdate time.Time
	nextUpdate time.Time
}

// Set is a concurrency-safe set of revoked certificates, per issuer. An
// issuer is its name and its key together: a CRL is filed under the CA
// certificate whose key verified it, and answers only for certificates that
// the same key issued, so two CAs sharing a name (a key rollover) never
// answer for each other.
type Set struct {
	mu      sync.RWMutex
	issuers map[[32]byte]*issuerState
}

// issuerKey names an issuer by its DER subject and SubjectPublicKeyInfo.
func issuerKey(issuer *x509.Certificate) [32]byte {
	h := sha256.New()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(issuer.RawSubject)))
	h.Write(n[:])
	h.Write(issuer.RawSubject)
	h.Write(issuer.RawSubjectPublicKeyInfo)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// NewSet returns an empty set: every certificate's status is unknown.
func NewSet() *Set { return &Set{issuers: map[[32]byte]*issuerState{}} }

// CRL is a certificate revocation list that passed every rule: signed by
// Issuer's key, complete, numbered and current when it was parsed.
type CRL struct {
	List   *x509.RevocationList
	Issuer *x509.Certificate
	DER    []byte
}

// Parse is the one rule set for CRLs, whoever reads them (a verifier's
// files, the sync's downloads, the stored copies): der must be a complete
// CRL — not a delta, not partitioned by distribution point, no critical
// extension not understood — with a CRL number (without one a replay could
// not be told from an update) and a nextUpdate (without one it could never
// be known stale), dated no later than a little past now, not stale at now,
// and signed by the key of one of cas whose subject it names. Several CAs
// may share the name (a key rollover): the CRL belongs to the one whose key
// signed it.
func Parse(der []byte, cas []*x509.Certificate, now time.Time) (*CRL, error) {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("revocation: parse CRL: %w", err)
	}
	var issuer *x509.Certificate
	var sigErr error
	for _, ca := range cas {
		if string(crl.RawIssuer) != string(ca.RawSubject) {
			continue
		}
		if sigErr = crl.CheckSignatureFrom(ca); sigErr == nil {
			issuer = ca
			break
		}
	}
	switch {
	case issuer == nil && sigErr != nil:
		return nil, fmt.Errorf("revocation: CRL of %q: %w", crl.Issuer, sigErr)
	case issuer == nil:
		return nil, fmt.Errorf("revocation: CRL of %q: its issuer is not a configured CA", crl.Issuer)
	}
	name := issuer.Subject
	if !SignatureAccepted(crl.SignatureAlgorithm) {
		// x509 accepts SHA-1 on CRLs, though not on certificates.
		return nil, fmt.Errorf("revocation: CRL of %s is signed with %s, which is not accepted", name, crl.SignatureAlgorithm)
	}
	if part := partial(crl); part != nil {
		return nil, fmt.Errorf("revocation: CRL of %s has extension %v: a delta or partitioned CRL is not a complete list", name, part)
	}
	switch {
	case crl.Number == nil:
		return nil, fmt.Errorf("revocation: CRL of %s has no CRL number: a replay could not be told from an update", name)
	case crl.NextUpdate.IsZero():
		return nil, fmt.Errorf("revocation: CRL of %s has no nextUpdate, so it could never be known stale", name)
	case crl.ThisUpdate.After(now.Add(maxFuture)):
		return nil, fmt.Errorf("revocation: CRL of %s is dated %s, in the future", name, crl.ThisUpdate)
	case now.After(crl.NextUpdate):
		return nil, fmt.Errorf("revocation: CRL of %s is stale (next update was %s)", name, crl.NextUpdate)
	}
	return &CRL{List: crl, Issuer: issuer, DER: der}, nil
}

// signatureAlgorithms are those a CRL or a certificate may be signed with
// (docs/protocol.md §6, "Signature algorithms"): RSA PKCS#1 v1.5 and ECDSA,
// each with SHA-256, SHA-384 or SHA-512. The UZI CAs sign with RSA PKCS#1
// v1.5 and SHA-256; RSASSA-PSS and Ed25519, which x509 would accept, no UZI
// CA uses, and a phone's platform verifier may lack them.
var signatureAlgorithms = []x509.SignatureAlgorithm{
	x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
	x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512,
}

// SignatureAccepted reports whether a certificate or CRL signed with alg
// may be used at all; the verifier of bundles applies the same list to
// certificates.
func SignatureAccepted(alg x509.SignatureAlgorithm) bool {
	return slices.Contains(signatureAlgorithms, alg)
}

// IssuerKey names the CA whose key signed c, as Set files it.
func (c *CRL) IssuerKey() [32]byte { return issuerKey(c.Issuer) }

// ErrOlder means a CRL is older than the one in force: a replayed old CRL
// would lift revocations.
var ErrOlder = errors.New("revocation: CRL older than the one in force")

// NotOlder is the replay rule: c may replace a CRL of the same issuer with
// the given number and thisUpdate only if neither is newer than c's.
func (c *CRL) NotOlder(number *big.Int, thisUpdate time.Time) error {
	if c.List.Number.Cmp(number) < 0 || c.List.ThisUpdate.Before(thisUpdate) {
		return fmt.Errorf("%w: %s has number %v of %s, the one in force %v of %s", ErrOlder, c.Issuer.Subject,
			c.List.Number, c.List.ThisUpdate.UTC().Format(time.RFC3339), number, thisUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}

// AddCRL checks a DER CRL against its issuer (Parse) and replaces that
// issuer's entries with it; a refused CRL changes nothing.
func (s *Set) AddCRL(der []byte, issuer *x509.Certificate, now time.Time) error {
	c, err := Parse(der, []*x509.Certificate{issuer}, now)
	if err != nil {
		return err
	}
	return s.Add(c)
}

// Add puts a parsed CRL in force for its issuer, unless it is older than
// the one in force.
func (s *Set) Add(c *CRL) error {
	st := &issuerState{der: sha256.Sum256(c.DER), serials: make(map[string]struct{}, len(c.List.RevokedCertificateEntries)), number: c.List.Number,
		thisUpdate: c.List.ThisUpdate, nextUpdate: c.List.NextUpdate}
	for _, e := range c.List.RevokedCertificateEntries {
		st.serials[e.SerialNumber.Text(16)] = struct{}{}
	}
	key := c.IssuerKey()
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.issuers[key]; ok {
		if err := c.NotOlder(cur.number, cur.thisUpdate); err != nil {
			return err
		}
	}
	s.issuers[key] = st
	return nil
}

// MaxCRLSize bounds what reading one CRL, from a file or a download, may
// cost. A national CA's CRL is a few MB.
const MaxCRLSize = 32 << 20

// ReadCRL reads at most MaxCRLSize bytes and one more, which tells a larger
// CRL: that is refused without being read further.
func ReadCRL(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxCRLSize+1))
	if err != nil {
		return nil, fmt.Errorf("revocation: read CRL: %w", err)
	}
	if len(b) > MaxCRLSize {
		return nil, fmt.Errorf("revocation: CRL larger than %d MiB", MaxCRLSize>>20)
	}
	return b, nil
}

// maxFuture is how far a CRL's thisUpdate may lie ahead of our clock.
const maxFuture = 5 * time.Minute

// Extensions that make a CRL less than the complete list of its issuer's
// revocations: a delta CRL, or one partitioned by distribution point.
var (
	oidDeltaCRL = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidIDP      = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidCRLNum   = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidAKI      = asn1.ObjectIdentifier{2, 5, 29, 35}
)

// partial returns the extension that makes crl a partial list — a delta or
// distribution-point CRL, or any critical extension not understood — or nil.
func partial(crl *x509.RevocationList) asn1.ObjectIdentifier {
	for _, e := range crl.Extensions {
		switch {
		case e.Id.Equal(oidDeltaCRL), e.Id.Equal(oidIDP):
			return e.Id
		case e.Critical && !e.Id.Equal(oidCRLNum) && !e.Id.Equal(oidAKI):
			return e.Id
		}
	}
	return nil
}

// Check returns nil when issuer — the CA certificate whose key signed cert —
// has a current CRL that does not list cert, ErrRevoked when it is listed,
// and ErrUnknown when there is no CRL of that issuer current at now. The
// caller has verified cert's signature under issuer; a cert that does not
// even name issuer is unknown.
func (s *Set) Check(cert, issuer *x509.Certificate, now time.Time) error {
	if string(cert.RawIssuer) != string(issuer.RawSubject) {
		return ErrUnknown
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	st, ok := s.issuers[issuerKey(issuer)]
	if !ok || now.After(st.nextUpdate) {
		return ErrUnknown
	}
	if _, revoked := st.serials[cert.SerialNumber.Text(16)]; revoked {
		return fmt.Errorf("%w: serial %x", ErrRevoked, cert.SerialNumber)
	}
	return nil
}

// Refresh reads every CRL src yields and puts in force each that Parse
// accepts against cas and that is not older than the one in force. A CRL
// equal to the one in force changes nothing. The others still take effect
// when one fails; the failures are joined.
func (s *Set) Refresh(ctx context.Context, src Source, cas []*x509.Certificate, now time.Time) error {
	ders, err := src.CRLs(ctx)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, der := range ders {
		if s.inForce(sha256.Sum256(der), now) {
			continue // read again unchanged: verified when it was added
		}
		c, err := Parse(der, cas, now)
		if err == nil {
			err = s.Add(c)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// inForce reports whether the CRL with this SHA-256 is in force and current.
func (s *Set) inForce(sum [32]byte, now time.Time) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, st := range s.issuers {
		if st.der == sum && !now.After(st.nextUpdate) {
			return true
		}
	}
	return false
}

// Missing lists the CAs among cas that have no CRL current at now: every
// certificate they issued is refused until one arrives. A server's
// readiness check reports them.
func (s *Set) Missing(cas []*x509.Certificate, now time.Time) []*x509.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*x509.Certificate
	for _, ca := range cas {
		if st, ok := s.issuers[issuerKey(ca)]; !ok || now.After(st.nextUpdate) {
			out = append(out, ca)
		}
	}
	return out
}
