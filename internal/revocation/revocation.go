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
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Why a certificate may not be used.
var (
	ErrRevoked = errors.New("revocation: certificate revoked")
	ErrUnknown = errors.New("revocation: no current CRL for the issuer")
)

type issuerState struct {
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

// AddCRL verifies a DER CRL against its issuer and replaces that issuer's
// entries with it. A CRL that is not signed by issuer, that is past its
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
	part := partial(crl)
	switch {
	case string(crl.RawIssuer) != string(issuer.RawSubject):
		return fmt.Errorf("revocation: CRL of %q filed under %s", crl.Issuer, issuer.Subject)
	case part != nil:
		return fmt.Errorf("revocation: CRL of %s has extension %v: a delta or partitioned CRL is not a complete list", issuer.Subject, part)
	case crl.ThisUpdate.After(now.Add(maxFuture)):
		return fmt.Errorf("revocation: CRL of %s is dated %s, in the future", issuer.Subject, crl.ThisUpdate)
	case crl.NextUpdate.IsZero():
		return fmt.Errorf("revocation: CRL of %s has no nextUpdate, so it could never be known stale", issuer.Subject)
	case now.After(crl.NextUpdate):
		return fmt.Errorf("revocation: CRL of %s is stale (next update was %s)", issuer.Subject, crl.NextUpdate)
	}
	st := &issuerState{serials: make(map[string]struct{}, len(crl.RevokedCertificateEntries)), number: crl.Number,
		thisUpdate: crl.ThisUpdate, nextUpdate: crl.NextUpdate}
	for _, e := range crl.RevokedCertificateEntries {
		st.serials[e.SerialNumber.Text(16)] = struct{}{}
	}
	key := issuerKey(issuer)
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.issuers[key]; ok {
		if (cur.number != nil && (crl.Number == nil || crl.Number.Cmp(cur.number) < 0)) || crl.ThisUpdate.Before(cur.thisUpdate) {
			return fmt.Errorf("revocation: CRL of %s (number %v, %s) is older than the one in force", issuer.Subject, crl.Number, crl.ThisUpdate)
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

// Load adds every CRL stored in uzi_crls whose issuer is among issuers. CRLs
// that fail their checks are reported, not loaded; the others still are.
func (s *Set) Load(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, issuers []*x509.Certificate, now time.Time) error {
	rows, err := q.Query(ctx, `select issuer, der from uzi_crls`)
	if err != nil {
		return fmt.Errorf("revocation: read CRLs: %w", err)
	}
	defer rows.Close()
	var errs []error
	for rows.Next() {
		var issuer, der []byte
		if err := rows.Scan(&issuer, &der); err != nil {
			return fmt.Errorf("revocation: read CRLs: %w", err)
		}
		for _, ca := range issuers {
			if string(ca.RawSubject) == string(issuer) {
				if err := s.AddCRL(der, ca, now); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("revocation: read CRLs: %w", err)
	}
	return errors.Join(errs...)
}
