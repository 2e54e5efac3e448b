package protocol

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"vouch/internal/revocation"
	"vouch/internal/uzi"
)

// RevocationChecker says whether a certificate may still be used at now: nil,
// an error matching ErrRevoked when its CA revoked it, or another error when
// its status cannot be known (no current CRL), which refuses too. The server
// gives one built from the CAs' CRLs; a phone verifying offline has none.
type RevocationChecker interface {
	Check(cert *x509.Certificate, now time.Time) error
}

// ErrRevoked is what a RevocationChecker's error matches when the
// certificate is revoked (revocation.ErrRevoked is it).
var ErrRevoked = revocation.ErrRevoked

// Trust is what a verifier trusts. It is configuration, not input.
type Trust struct {
	Roots           []*x509.Certificate // UZI root CAs
	AttestationKeys []*ecdsa.PublicKey  // the back end's attestation keys (several during rotation)
	Jurisdiction    string
	Profile         uzi.Profile
	Revocation      RevocationChecker // nil: not checked (offline phones)
	ClockSkew       time.Duration     // tolerated for times in the future; default 5 minutes
}

// Verifier checks bundles and login signatures against a Trust. It caches
// chains it has verified, since one clinician's card signs many bundles; the
// cache keeps the verdict of path building, never of time or revocation.
type Verifier struct {
	trust  Trust
	roots  *x509.CertPool
	keys   map[[32]byte]*ecdsa.PublicKey
	chains *lru.Cache[[32]byte, *verifiedChain]
}

// NewVerifier prepares a verifier.
func NewVerifier(t Trust) (*Verifier, error) {
	if len(t.Roots) == 0 {
		return nil, errors.New("protocol: no trusted root CAs configured")
	}
	if t.Jurisdiction == "" {
		return nil, errors.New("protocol: no jurisdiction configured")
	}
	if t.ClockSkew == 0 {
		t.ClockSkew = 5 * time.Minute
	}
	v := &Verifier{trust: t, roots: x509.NewCertPool(), keys: map[[32]byte]*ecdsa.PublicKey{}}
	for _, r := range t.Roots {
		v.roots.AddCert(r)
	}
	for _, k := range t.AttestationKeys {
		id, err := KeyID(k)
		if err != nil {
			return nil, err
		}
		v.keys[id] = k
	}
	var err error
	if v.chains, err = lru.New[[32]byte, *verifiedChain](4096); err != nil {
		return nil, err
	}
	return v, nil
}

// KeyID names an attestation key: SHA-256 of its SubjectPublicKeyInfo.
func KeyID(pub crypto.PublicKey) ([32]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [32]byte{}, fmt.Errorf("protocol: key id: %w", err)
	}
	return sha256.Sum256(der), nil
}

// verifiedChain is a chain whose path to a trusted root was built.
type verifiedChain struct {
	leaf      *x509.Certificate
	pub       *rsa.PublicKey
	id        uzi.Identity
	idErr     error
	notBefore time.Time // latest NotBefore along the chain
	notAfter  time.Time // earliest NotAfter along the chain
}

func chainKey(der [][]byte) [32]byte {
	h := sha256.New()
	for _, d := range der {
		var n [4]byte
		n[0], n[1], n[2], n[3] = byte(len(d)>>24), byte(len(d)>>16), byte(len(d)>>8), byte(len(d))
		h.Write(n[:])
		h.Write(d)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// chain verifies the path from der[0] to a trusted root and checks the
// certificates' validity at now and the leaf's key usage.
func (v *Verifier) chain(der [][]byte, usage x509.KeyUsage, now time.Time) (*verifiedChain, *Refusal) {
	key := chainKey(der)
	vc, ok := v.chains.Get(key)
	if !ok {
		var r *Refusal
		if vc, r = v.buildChain(der); r != nil {
			return nil, r
		}
		v.chains.Add(key, vc)
	}
	switch {
	case now.Before(vc.notBefore):
		return nil, refuse(ReasonCertNotYetValid, fmt.Errorf("valid from %s", vc.notBefore))
	case now.After(vc.notAfter):
		return nil, refuse(ReasonCertExpired, fmt.Errorf("valid until %s", vc.notAfter))
	case vc.leaf.KeyUsage&usage == 0:
		return nil, refuse(ReasonCertUsage, fmt.Errorf("key usage %b lacks %b", vc.leaf.KeyUsage, usage))
	}
	if v.trust.Revocation != nil {
		if err := v.trust.Revocation.Check(vc.leaf, now); errors.Is(err, ErrRevoked) {
			return nil, refuse(ReasonCertRevoked, err)
		} else if err != nil {
			return nil, refuse(ReasonRevocationUnknown, err)
		}
	}
	return vc, nil
}

func (v *Verifier) buildChain(der [][]byte) (*verifiedChain, *Refusal) {
	certs := make([]*x509.Certificate, len(der))
	for i, d := range der {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, refuse(ReasonMalformed, fmt.Errorf("certificate %d: %w", i, err))
		}
		certs[i] = c
	}
	leaf := certs[0]
	pub, ok := leaf.PublicKey.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() < 2048 {
		return nil, refuse(ReasonCertUsage, errors.New("card key is not RSA-2048 or larger"))
	}
	inter := x509.NewCertPool()
	at := leaf.NotBefore
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	for _, c := range certs {
		if c.NotBefore.After(at) {
			at = c.NotBefore
		}
	}
	// Build the path at a moment all given certificates are valid, so the
	// result does not depend on the clock and can be cached; validity at the
	// time of use is checked separately, on every call.
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		var cie x509.CertificateInvalidError
		if errors.As(err, &cie) && cie.Reason == x509.Expired {
			return nil, refuse(ReasonCertExpired, err)
		}
		return nil, refuse(ReasonUnknownCA, err)
	}
	vc := &verifiedChain{leaf: leaf, pub: pub, notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
	for _, c := range chains[0] {
		if c.NotBefore.After(vc.notBefore) {
			vc.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(vc.notAfter) {
			vc.notAfter = c.NotAfter
		}
	}
	vc.id, vc.idErr = uzi.FromCertificate(leaf)
	return vc, nil
}

// Result is what a verified bundle says.
type Result struct {
	Statement   *Statement
	Attestation *Attestation
	Identity    uzi.Identity
	Signer      *x509.Certificate
}

// Verify checks a bundle completely: encoding, the card's chain, validity,
// key usage and revocation, the card's signature, the card profile, the
// statement (jurisdiction, validity, consent, and — when phone is not nil —
// that its code is the phone key's), and the back end's attestation. It
// returns the result, or a *Refusal whose Reason says why.
func (v *Verifier) Verify(raw []byte, phone ed25519.PublicKey, now time.Time) (*Result, error) {
	if len(raw) > MaxBundleSize {
		return nil, refuse(ReasonTooLarge, fmt.Errorf("%d bytes", len(raw)))
	}
	b, err := ParseBundle(raw)
	if err != nil {
		return nil, refuse(decodeReason(err), err)
	}
	st, err := ParseStatement(b.Statement)
	if err != nil {
		return nil, refuse(decodeReason(err), fmt.Errorf("statement: %w", err))
	}
	vc, r := v.chain(b.Chain, x509.KeyUsageContentCommitment, now)
	if r != nil {
		return nil, r
	}
	digest := sha256.Sum256(b.Statement)
	if err := rsa.VerifyPKCS1v15(vc.pub, crypto.SHA256, digest[:], b.StatementSignature); err != nil {
		return nil, refuse(ReasonSignature, err)
	}
	leafHash := sha256.Sum256(b.Chain[0])
	if subtle.ConstantTimeCompare(leafHash[:], st.SignerCertHash[:]) != 1 {
		return nil, refuse(ReasonSignerMismatch, nil)
	}
	if r := v.card(vc, uzi.PurposeVouch); r != nil {
		return nil, r
	}
	if r := v.statement(st, phone, now); r != nil {
		return nil, r
	}
	at, r := v.attestation(b, st, vc.id, digest, now)
	if r != nil {
		return nil, r
	}
	return &Result{Statement: st, Attestation: at, Identity: vc.id, Signer: vc.leaf}, nil
}

func (v *Verifier) card(vc *verifiedChain, purpose uzi.Purpose) *Refusal {
	if vc.idErr != nil {
		return refuse(Reason(uzi.CodeOf(vc.idErr)), vc.idErr)
	}
	if err := v.trust.Profile.Check(vc.id, purpose); err != nil {
		return refuse(Reason(uzi.CodeOf(err)), err)
	}
	return nil
}

func (v *Verifier) statement(st *Statement, phone ed25519.PublicKey, now time.Time) *Refusal {
	switch {
	case st.Jurisdiction != v.trust.Jurisdiction:
		return refuse(ReasonWrongJurisdiction, fmt.Errorf("statement for %q", st.Jurisdiction))
	case st.ExpiresAt.Sub(st.IssuedAt) > MaxValidity || !st.ExpiresAt.After(st.IssuedAt):
		return refuse(ReasonValidityTooLong, fmt.Errorf("%s to %s", st.IssuedAt, st.ExpiresAt))
	case now.Add(v.trust.ClockSkew).Before(st.IssuedAt):
		return refuse(ReasonNotYetValid, fmt.Errorf("issued at %s", st.IssuedAt))
	case !now.Before(st.ExpiresAt):
		return refuse(ReasonExpired, fmt.Errorf("expired at %s", st.ExpiresAt))
	case !st.Consent:
		return refuse(ReasonNoConsent, nil)
	case phone != nil && !st.PhoneCode.Matches(phone):
		return refuse(ReasonCodeMismatch, nil)
	}
	return nil
}

func (v *Verifier) attestation(b *Bundle, st *Statement, id uzi.Identity, stHash [32]byte, now time.Time) (*Attestation, *Refusal) {
	at, err := ParseAttestation(b.Attestation)
	if err != nil {
		return nil, refuse(decodeReason(err), fmt.Errorf("attestation: %w", err))
	}
	key, ok := v.keys[at.KeyID]
	if !ok {
		return nil, refuse(ReasonAttestationUnknownKey, fmt.Errorf("key %x", at.KeyID[:8]))
	}
	digest := sha256.Sum256(b.Attestation)
	if !ecdsa.VerifyASN1(key, digest[:], b.AttestationSignature) {
		return nil, refuse(ReasonAttestationSignature, nil)
	}
	switch {
	case !bytes.Equal(at.StatementHash[:], stHash[:]):
		return nil, refuse(ReasonAttestationMismatch, errors.New("statement hash"))
	case at.UZI != id.UZI || at.Role != id.Role:
		return nil, refuse(ReasonAttestationMismatch, errors.New("card"))
	case !at.ExpiresAt.Equal(st.ExpiresAt):
		return nil, refuse(ReasonAttestationMismatch, errors.New("expiry"))
	case at.CheckedAt.Before(st.IssuedAt.Add(-v.trust.ClockSkew)) || at.CheckedAt.After(now.Add(v.trust.ClockSkew)):
		return nil, refuse(ReasonAttestationMismatch, errors.New("checked at"))
	case at.License != LicenseActive:
		return nil, refuse(ReasonLicenseNotActive, fmt.Errorf("license %q", at.License))
	}
	return at, nil
}

// LoginResult is who signed in.
type LoginResult struct {
	Identity uzi.Identity
	Cert     *x509.Certificate
}

// VerifyLogin checks a card's login signature over LoginMessage(origin,
// challenge): the authentication certificate's chain, validity, usage and
// revocation, the signature, and that the card may sign in at all.
func (v *Verifier) VerifyLogin(chain [][]byte, origin string, challenge, sig []byte, now time.Time) (*LoginResult, error) {
	if len(chain) == 0 || len(chain) > MaxChainLength {
		return nil, refuse(ReasonMalformed, errors.New("chain length"))
	}
	vc, r := v.chain(chain, x509.KeyUsageDigitalSignature, now)
	if r != nil {
		return nil, r
	}
	digest := sha256.Sum256(LoginMessage(origin, challenge))
	if err := rsa.VerifyPKCS1v15(vc.pub, crypto.SHA256, digest[:], sig); err != nil {
		return nil, refuse(ReasonSignature, err)
	}
	if r := v.card(vc, uzi.PurposeLogin); r != nil {
		return nil, r
	}
	return &LoginResult{Identity: vc.id, Cert: vc.leaf}, nil
}

// Verdict returns the reason of an error from Verify or VerifyLogin: ReasonOK
// for nil, ReasonMalformed for an error that is not a refusal.
func Verdict(err error) Reason {
	if err == nil {
		return ReasonOK
	}
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return ReasonMalformed
}
