package protocol

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// RevocationChecker says whether cert, issued by issuer, may still be used at
// now: nil, an error matching ErrRevoked when issuer revoked it, or another
// error when its status cannot be known (no current CRL of that issuer key),
// which refuses too. The server gives one built from the CAs' CRLs; a phone
// verifying offline has none.
type RevocationChecker interface {
	Check(cert, issuer *x509.Certificate, now time.Time) error
}

// ErrRevoked is what a RevocationChecker's error matches when the
// certificate is revoked (revocation.ErrRevoked is it).
var ErrRevoked = revocation.ErrRevoked

// Trust is what a verifier trusts. It is configuration, not input.
type Trust struct {
	Roots []*x509.Certificate // UZI root CAs
	// IssuingCAs are the CAs that issue cards, per card type: the UZI
	// register has one per type, and a card must come from its type's.
	IssuingCAs map[uzi.CardType][]*x509.Certificate
	// Intermediates are CAs between the issuing CAs and the roots; they
	// never issue cards themselves.
	Intermediates   []*x509.Certificate
	AttestationKeys []*ecdsa.PublicKey // the back end's attestation keys (several during rotation)
	Jurisdiction    string
	Profile         uzi.Profile
	Revocation      RevocationChecker // nil: not checked (offline phones)
	ClockSkew       time.Duration     // tolerated for times in the future; default 5 minutes
}

// CAs lists every configured CA — roots, intermediates, issuing CAs — in
// a fixed order: the possible issuers of the CRLs a verifier needs.
func (t Trust) CAs() []*x509.Certificate {
	out := append(slices.Clone(t.Roots), t.Intermediates...)
	for _, typ := range slices.Sorted(maps.Keys(t.IssuingCAs)) {
		out = append(out, t.IssuingCAs[typ]...)
	}
	return out
}

// Card keys are RSA-2048 with exponent 65537, as on UZI cards. Weaker keys
// are breakable; larger ones (RSA-4096 costs about ten RSA-2048 verifies)
// would let anyone holding such a card make every bundle check slow. A card
// generation with larger keys needs this bound, the spec and the benchmark
// changed together.
const (
	minRSABits = 2048
	maxRSABits = 2048
	rsaE       = 65537
)

// issuingCA is a configured card-issuing CA with its verified paths to a
// root: several when an intermediate was renewed or cross-certified.
type issuingCA struct {
	cert     *x509.Certificate
	cardType uzi.CardType
	chains   []caChain
}

// caChain is one path from an issuing CA to a root, verified once: the
// certificates and the window in which all of them are valid.
type caChain struct {
	certs     []*x509.Certificate // the issuing CA, its issuers, ..., the root
	notBefore time.Time           // latest NotBefore along the path
	notAfter  time.Time           // earliest NotAfter along the path
}

func (ch caChain) validAt(t time.Time) bool { return !t.Before(ch.notBefore) && !t.After(ch.notAfter) }

// Verifier checks bundles and login signatures against a Trust. It builds a
// card's path only from the configured issuing CAs, so a bundle cannot make
// it search or verify anything the configuration did not name, and caches
// the cards it has verified, since one clinician's card signs many bundles;
// the cache keeps the verdict of the CA's signature, never of time, usage or
// revocation.
type Verifier struct {
	trust   Trust
	issuers map[string][]*issuingCA // by DER subject
	keys    map[[32]byte]*ecdsa.PublicKey
	cards   *lru.Cache[[32]byte, *verifiedCard]
}

// NewVerifier prepares a verifier. Every issuing CA must have a path to a
// configured root through the configured intermediates.
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
	v := &Verifier{trust: t, issuers: map[string][]*issuingCA{}, keys: map[[32]byte]*ecdsa.PublicKey{}}
	if err := checkIssuingCAs(t); err != nil {
		return nil, err
	}
	for typ, cas := range t.IssuingCAs {
		for _, ca := range cas {
			ic, err := caPaths(ca, typ, t.Roots, t.Intermediates)
			if err != nil {
				return nil, err
			}
			for _, other := range v.issuers[string(ca.RawSubject)] {
				if string(other.cert.RawSubjectPublicKeyInfo) == string(ca.RawSubjectPublicKeyInfo) && other.cardType != typ {
					return nil, fmt.Errorf("protocol: CA %q is configured for card types %s and %s: a CA issues one type", ca.Subject, other.cardType, typ)
				}
			}
			v.issuers[string(ca.RawSubject)] = append(v.issuers[string(ca.RawSubject)], ic)
		}
	}
	for _, k := range t.AttestationKeys {
		id, err := KeyID(k)
		if err != nil {
			return nil, err
		}
		v.keys[id] = k
	}
	var err error
	if v.cards, err = lru.New[[32]byte, *verifiedCard](4096); err != nil {
		return nil, err
	}
	return v, nil
}

// checkIssuingCAs refuses a configuration in which an issuing CA is a
// root or an intermediate: CA files are often chain bundles, and a root in
// the care-provider file would make every certificate the root signed a
// care provider's card.
func checkIssuingCAs(t Trust) error {
	var all []*x509.Certificate
	for _, typ := range slices.Sorted(maps.Keys(t.IssuingCAs)) {
		all = append(all, t.IssuingCAs[typ]...)
	}
	others := append(slices.Clone(t.Roots), t.Intermediates...)
	for _, ca := range all {
		if string(ca.RawIssuer) == string(ca.RawSubject) && ca.CheckSignatureFrom(ca) == nil {
			return fmt.Errorf("protocol: issuing CA %q is self-signed: a root is not an issuing CA (is the file a chain bundle?)", ca.Subject)
		}
		for _, o := range others {
			if o.Equal(ca) {
				return fmt.Errorf("protocol: issuing CA %q is also configured as a root or intermediate", ca.Subject)
			}
		}
		for _, o := range append(slices.Clone(all), t.Intermediates...) {
			if !o.Equal(ca) && string(o.RawIssuer) == string(ca.RawSubject) && o.CheckSignatureFrom(ca) == nil {
				return fmt.Errorf("protocol: issuing CA %q issued CA %q: an issuing CA issues cards only (is the file a chain bundle?)", ca.Subject, o.Subject)
			}
		}
	}
	return nil
}

// Bounds on path building; a configuration needs far less.
const (
	maxPathDepth = 6  // certificates from issuing CA to root
	maxPaths     = 16 // paths kept per issuing CA
)

// caPaths checks a configured issuing CA and finds every path from it to a
// root through the configured intermediates. Each path is verified by the
// x509 package (signatures, CA constraints, path lengths, name
// constraints) at a moment all its certificates are valid, so that it does
// not depend on the clock; validity at the time of use is checked on every
// call, where the paths valid then are tried in turn.
func caPaths(ca *x509.Certificate, typ uzi.CardType, roots, inter []*x509.Certificate) (*issuingCA, error) {
	if !ca.BasicConstraintsValid || !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("protocol: issuing CA %q is not a CA certificate", ca.Subject)
	}
	ic := &issuingCA{cert: ca, cardType: typ}
	var lastErr error
	var walk func(path []*x509.Certificate)
	walk = func(path []*x509.Certificate) {
		last := path[len(path)-1]
		try := func(parent *x509.Certificate, isRoot bool) {
			if len(ic.chains) >= maxPaths || slices.ContainsFunc(path, parent.Equal) ||
				string(parent.RawSubject) != string(last.RawIssuer) || last.CheckSignatureFrom(parent) != nil {
				return
			}
			next := append(slices.Clone(path), parent)
			switch {
			case isRoot:
				if ch, err := verifyChain(next); err == nil {
					ic.chains = append(ic.chains, ch)
				} else {
					lastErr = err
				}
			case len(next) < maxPathDepth:
				walk(next)
			}
		}
		for _, r := range roots {
			try(r, true)
		}
		for _, c := range inter {
			try(c, false)
		}
	}
	walk([]*x509.Certificate{ca})
	if len(ic.chains) == 0 {
		if lastErr == nil {
			lastErr = errors.New("no configured root or intermediate issued it")
		}
		return nil, fmt.Errorf("protocol: issuing CA %q has no path to a trusted root: %w", ca.Subject, lastErr)
	}
	return ic, nil
}

// verifyChain has the x509 package verify one path, given only that path's
// certificates, at the first moment all of them are valid.
func verifyChain(certs []*x509.Certificate) (caChain, error) {
	ch := caChain{certs: certs, notBefore: certs[0].NotBefore, notAfter: certs[0].NotAfter}
	for _, c := range certs[1:] {
		if c.NotBefore.After(ch.notBefore) {
			ch.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(ch.notAfter) {
			ch.notAfter = c.NotAfter
		}
	}
	if !ch.notBefore.Before(ch.notAfter) {
		return ch, errors.New("its certificates are never valid at the same time")
	}
	// Every signature on the path is one of the accepted algorithms; the
	// root's own signature is not checked (it is trusted as configured).
	for _, c := range certs[:len(certs)-1] {
		if !revocation.SignatureAccepted(c.SignatureAlgorithm) {
			return ch, fmt.Errorf("%q is signed with %s, which is not accepted", c.Subject, c.SignatureAlgorithm)
		}
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(certs[len(certs)-1])
	for _, c := range certs[1 : len(certs)-1] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: ch.notBefore,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return ch, err
}

// KeyID names an attestation key: SHA-256 of its SubjectPublicKeyInfo.
func KeyID(pub crypto.PublicKey) ([32]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [32]byte{}, fmt.Errorf("protocol: key id: %w", err)
	}
	return sha256.Sum256(der), nil
}

// verifiedCard is a card certificate whose issuing CA's signature verified.
type verifiedCard struct {
	cert *x509.Certificate
	// cas are the configured certificates of the issuing CA whose key
	// signed the card: one, or several when the CA's certificate was
	// renewed with the same key. They share a card type.
	cas      []*issuingCA
	pub      *rsa.PublicKey        // nil when the key is unsupported
	critical asn1.ObjectIdentifier // a critical extension not allowed, or nil
	id       uzi.Identity
	idErr    error
}

// card checks a card certificate for purpose at now: its issuing CA's
// signature, that it is a card's certificate for this purpose, its validity
// and the path's, and revocation. The order is docs/protocol.md §6 step 3–4.
func (v *Verifier) card(der []byte, purpose uzi.Purpose, now time.Time) (*verifiedCard, *Refusal) {
	key := sha256.Sum256(der)
	vc, ok := v.cards.Get(key)
	if !ok {
		var r *Refusal
		if vc, r = v.issued(der); r != nil {
			return nil, r
		}
		v.cards.Add(key, vc)
	}
	c := vc.cert
	// The paths to a root through the CA's certificates (renewals with the
	// same key) and their issuers: those valid now are tried in turn; if
	// none is, the first says why.
	var chains, valid []caChain
	for _, ca := range vc.cas {
		chains = append(chains, ca.chains...)
	}
	for _, ch := range chains {
		if ch.validAt(now) {
			valid = append(valid, ch)
		}
	}
	first := chains[0]
	switch {
	case c.BasicConstraintsValid && c.IsCA, c.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		return nil, refuse(ReasonCertNotEndEntity, errors.New("CA flag or certificate-signing key usage"))
	case vc.critical != nil:
		return nil, refuse(ReasonCertExtension, fmt.Errorf("critical extension %v", vc.critical))
	case vc.pub == nil:
		return nil, refuse(ReasonCertKey, fmt.Errorf("%T key", c.PublicKey))
	case now.Before(c.NotBefore) || len(valid) == 0 && now.Before(first.notBefore):
		return nil, refuse(ReasonCertNotYetValid, fmt.Errorf("valid from %s, CA from %s", c.NotBefore, first.notBefore))
	case now.After(c.NotAfter) || len(valid) == 0:
		return nil, refuse(ReasonCertExpired, fmt.Errorf("valid until %s, CA until %s", c.NotAfter, first.notAfter))
	}
	if r := usage(c, purpose); r != nil {
		return nil, r
	}
	if !v.trust.Profile.HasPolicy(c, purpose) {
		return nil, refuse(ReasonCertPolicy, fmt.Errorf("no policy %s among %v", v.trust.Profile.Policy(purpose), c.Policies))
	}
	rc := v.trust.Revocation
	if rc == nil {
		return vc, nil
	}
	// The card, then every CA on a path but the root, each against the CRL
	// of the key that issued it. One path that passes is enough; if none
	// does, the first path's refusal says why.
	var refusal *Refusal
	for _, ch := range valid {
		r := revoked(rc, append([]*x509.Certificate{c}, ch.certs...), now)
		if r == nil {
			return vc, nil
		}
		if refusal == nil {
			refusal = r
		}
	}
	return nil, refusal
}

// revoked checks each certificate of path but the last against the CRL of
// the next, its issuer.
func revoked(rc RevocationChecker, path []*x509.Certificate, now time.Time) *Refusal {
	for i := 0; i+1 < len(path); i++ {
		if err := rc.Check(path[i], path[i+1], now); errors.Is(err, ErrRevoked) {
			return refuse(ReasonCertRevoked, fmt.Errorf("%q: %w", path[i].Subject, err))
		} else if err != nil {
			return refuse(ReasonRevocationUnknown, fmt.Errorf("%q: %w", path[i].Subject, err))
		}
	}
	return nil
}

// issued parses a card certificate and verifies its issuing CA's signature;
// what it returns may be cached.
func (v *Verifier) issued(der []byte) (*verifiedCard, *Refusal) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, refuse(ReasonMalformed, fmt.Errorf("certificate: %w", err))
	}
	cas := v.issuers[string(c.RawIssuer)]
	if len(cas) == 0 {
		return nil, refuse(ReasonUnknownCA, fmt.Errorf("issuer %q is not a configured issuing CA", c.Issuer))
	}
	// The first CA whose key verifies the signature issued the card; its
	// other certificates with the same key (renewals) are the same issuer.
	var signer *issuingCA
	var sigErr error
	for _, cand := range cas {
		if sigErr = c.CheckSignatureFrom(cand.cert); sigErr == nil {
			signer = cand
			break
		}
	}
	if signer == nil {
		return nil, refuse(ReasonCertSignature, sigErr)
	}
	// The CA's signature verified, but only the listed algorithms count
	// (docs/protocol.md §6): x509 also accepts RSASSA-PSS and Ed25519,
	// which no UZI CA signs with and which a phone may not verify.
	if !revocation.SignatureAccepted(c.SignatureAlgorithm) {
		return nil, refuse(ReasonCertSignature, fmt.Errorf("signed with %s, which is not accepted", c.SignatureAlgorithm))
	}
	vc := &verifiedCard{cert: c, critical: criticalUnknown(c)}
	for _, cand := range cas {
		if string(cand.cert.RawSubjectPublicKeyInfo) == string(signer.cert.RawSubjectPublicKeyInfo) {
			vc.cas = append(vc.cas, cand)
		}
	}
	if pub, ok := c.PublicKey.(*rsa.PublicKey); ok && pub.N.BitLen() >= minRSABits && pub.N.BitLen() <= maxRSABits && pub.E == rsaE {
		vc.pub = pub
	}
	vc.id, vc.idErr = uzi.FromCertificate(c)
	return vc, nil
}

// Extensions a card certificate may mark critical: the ones UZI cards mark
// and this verifier processes. Go's parser treats a critical SAN holding a
// DNS name or e-mail address as handled, and it does not enforce name
// constraints on a leaf, so its own list is not the verifier's.
var criticalAllowed = []asn1.ObjectIdentifier{
	{2, 5, 29, 15}, // keyUsage
	{2, 5, 29, 19}, // basicConstraints
	{2, 5, 29, 37}, // extKeyUsage
}

// criticalUnknown returns the first critical extension of c not in
// criticalAllowed, or nil.
func criticalUnknown(c *x509.Certificate) asn1.ObjectIdentifier {
	for _, e := range c.Extensions {
		if !e.Critical {
			continue
		}
		known := false
		for _, id := range criticalAllowed {
			known = known || e.Id.Equal(id)
		}
		if !known {
			return e.Id
		}
	}
	return nil
}

// OID of Microsoft's document-signing extended key usage, which UZI
// signature certificates carry beside emailProtection.
var oidDocumentSigning = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 10, 3, 12}

// usage checks key usage and extended key usage against the UZI card
// layout: the authentication certificate has digitalSignature alone and
// clientAuth; the signature certificate nonRepudiation alone and
// emailProtection or document signing. anyExtendedKeyUsage is never enough.
func usage(c *x509.Certificate, purpose uzi.Purpose) *Refusal {
	var ku x509.KeyUsage
	var eku func() bool
	switch purpose {
	case uzi.PurposeLogin:
		ku = x509.KeyUsageDigitalSignature
		eku = func() bool { return hasEKU(c, x509.ExtKeyUsageClientAuth) }
	case uzi.PurposeVouch:
		ku = x509.KeyUsageContentCommitment
		eku = func() bool {
			if hasEKU(c, x509.ExtKeyUsageEmailProtection) {
				return true
			}
			for _, o := range c.UnknownExtKeyUsage {
				if o.Equal(oidDocumentSigning) {
					return true
				}
			}
			return false
		}
	default:
		return refuse(ReasonCertUsage, fmt.Errorf("purpose %q", purpose))
	}
	switch {
	case c.KeyUsage != ku:
		return refuse(ReasonCertUsage, fmt.Errorf("key usage %b, want exactly %b", c.KeyUsage, ku))
	case hasEKU(c, x509.ExtKeyUsageAny) || !eku():
		return refuse(ReasonCertUsage, fmt.Errorf("extended key usage %v %v", c.ExtKeyUsage, c.UnknownExtKeyUsage))
	}
	return nil
}

func hasEKU(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	for _, u := range c.ExtKeyUsage {
		if u == want {
			return true
		}
	}
	return false
}

// Result is what a verified bundle says.
type Result struct {
	Statement   *Statement
	Attestation *Attestation
	Identity    uzi.Identity
	Signer      *x509.Certificate
}

// Verify checks a bundle completely: encoding, the card's certificate
// (issuing CA, usage, validity and revocation), the card's signature, the
// card profile, the statement (jurisdiction, validity, consent, and — when
// phone is not nil — that its code is the phone key's), and the back end's
// attestation. It returns the result, or a *Refusal whose Reason says why.
func (v *Verifier) Verify(raw []byte, phone ed25519.PublicKey, now time.Time) (*Result, error) {
	if len(raw) > MaxBundleSize {
		return nil, refuse(ReasonTooLarge, fmt.Errorf("%d bytes", len(raw)))
	}
	b, err := ParseBundle(raw)
	if err != nil {
		return nil, refuse(decodeReason(err), err)
	}
	res, r := v.signedStatement(b.Statement, b.StatementSignature, b.Cert, phone, now)
	if r != nil {
		return nil, r
	}
	digest := sha256.Sum256(b.Statement)
	at, r := v.attestation(b, res.Statement, res.Identity, digest, now)
	if r != nil {
		return nil, r
	}
	res.Attestation = at
	return res, nil
}

// VerifyStatement checks a statement the card signed, before the back end
// countersigns it: the card's signature certificate (DER), its signature
// over the encoded statement, that the statement names that certificate,
// the card profile for vouching and the statement itself, as Verify does
// for a bundle. The result has no attestation.
func (v *Verifier) VerifyStatement(statement, sig, cert []byte, now time.Time) (*Result, error) {
	if len(statement)+len(sig)+len(cert) > MaxBundleSize {
		return nil, refuse(ReasonTooLarge, fmt.Errorf("%d bytes", len(statement)+len(sig)+len(cert)))
	}
	res, r := v.signedStatement(statement, sig, cert, nil, now)
	if r != nil {
		return nil, r
	}
	return res, nil
}

// signedStatement is the part of Verify before the attestation.
func (v *Verifier) signedStatement(statement, sig, cert []byte, phone ed25519.PublicKey, now time.Time) (*Result, *Refusal) {
	st, err := ParseStatement(statement)
	if err != nil {
		return nil, refuse(decodeReason(err), fmt.Errorf("statement: %w", err))
	}
	vc, r := v.card(cert, uzi.PurposeVouch, now)
	if r != nil {
		return nil, r
	}
	digest := sha256.Sum256(statement)
	if err := rsa.VerifyPKCS1v15(vc.pub, crypto.SHA256, digest[:], sig); err != nil {
		return nil, refuse(ReasonSignature, err)
	}
	certHash := sha256.Sum256(cert)
	if subtle.ConstantTimeCompare(certHash[:], st.SignerCertHash[:]) != 1 {
		return nil, refuse(ReasonSignerMismatch, nil)
	}
	if r := v.profile(vc, uzi.PurposeVouch); r != nil {
		return nil, r
	}
	if r := v.statement(st, phone, now); r != nil {
		return nil, r
	}
	return &Result{Statement: st, Identity: vc.id, Signer: vc.cert}, nil
}

func (v *Verifier) profile(vc *verifiedCard, purpose uzi.Purpose) *Refusal {
	if vc.idErr != nil {
		return refuse(Reason(uzi.CodeOf(vc.idErr)), vc.idErr)
	}
	if err := v.trust.Profile.Check(vc.id, vc.cas[0].cardType, purpose); err != nil {
		code := Reason(uzi.CodeOf(err))
		if code == "" {
			code = ReasonMalformed
		}
		return refuse(code, err)
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
	if !lowS(key.Curve, b.AttestationSignature) {
		return nil, refuse(ReasonAttestationSignature, errors.New("not a DER signature with low S"))
	}
	if !ecdsa.VerifyASN1(key, digest[:], b.AttestationSignature) {
		return nil, refuse(ReasonAttestationSignature, nil)
	}
	switch {
	case !bytes.Equal(at.StatementHash[:], stHash[:]):
		return nil, refuse(ReasonAttestationMismatch, errors.New("statement hash"))
	case at.UZI != id.UZI:
		return nil, refuse(ReasonAttestationMismatch, errors.New("UZI number"))
	case at.Role != id.Role:
		return nil, refuse(ReasonAttestationMismatch, errors.New("role"))
	case !at.ExpiresAt.Equal(st.ExpiresAt):
		return nil, refuse(ReasonAttestationMismatch, errors.New("expiry"))
	case at.CheckedAt.Before(st.IssuedAt.Add(-v.trust.ClockSkew)) || at.CheckedAt.After(now.Add(v.trust.ClockSkew)):
		return nil, refuse(ReasonAttestationMismatch, errors.New("checked at"))
	case at.License != LicenseActive:
		return nil, refuse(ReasonLicenseNotActive, fmt.Errorf("license %q", at.License))
	}
	return at, nil
}

// ecdsaSig is an ECDSA signature as ASN.1 DER holds it. encoding/asn1 reads
// DER strictly: minimal lengths and integers, no trailing bytes inside.
type ecdsaSig struct{ R, S *big.Int }

func parseECDSASig(sig []byte) (ecdsaSig, bool) {
	var p ecdsaSig
	rest, err := asn1.Unmarshal(sig, &p)
	return p, err == nil && len(rest) == 0
}

// lowS reports whether sig is a DER ECDSA signature whose S is at most half
// the group order. Of the two valid signatures (r, s) and (r, n−s) only the
// low one is accepted, so a valid bundle has exactly one encoding.
func lowS(curve elliptic.Curve, sig []byte) bool {
	p, ok := parseECDSASig(sig)
	return ok && p.S.Sign() > 0 && p.S.Cmp(new(big.Int).Rsh(curve.Params().N, 1)) <= 0
}

// LowS returns sig (DER ECDSA) with S replaced by n−S when S is high, the
// form verifiers accept. Signers that may produce either call it.
func LowS(curve elliptic.Curve, sig []byte) ([]byte, error) {
	p, ok := parseECDSASig(sig)
	if !ok {
		return nil, errors.New("protocol: not a DER ECDSA signature")
	}
	n := curve.Params().N
	if p.S.Cmp(new(big.Int).Rsh(n, 1)) > 0 {
		p.S = new(big.Int).Sub(n, p.S)
	}
	return asn1.Marshal(p)
}

// VerifyCard checks a card certificate (DER) for purpose at now, as Verify
// and VerifyLogin do before any signature: issuing CA, usage, policy,
// validity, revocation and the card profile. Callers use it to refuse a card
// before its holder is asked for a PIN.
func (v *Verifier) VerifyCard(cert []byte, purpose uzi.Purpose, now time.Time) (uzi.Identity, error) {
	if len(cert) == 0 || len(cert) > MaxCertSize {
		return uzi.Identity{}, refuse(ReasonMalformed, fmt.Errorf("certificate of %d bytes", len(cert)))
	}
	vc, r := v.card(cert, purpose, now)
	if r != nil {
		return uzi.Identity{}, r
	}
	if r := v.profile(vc, purpose); r != nil {
		return uzi.Identity{}, r
	}
	return vc.id, nil
}

// LoginResult is who signed in.
type LoginResult struct {
	Identity uzi.Identity
	Cert     *x509.Certificate
}

// VerifyLogin checks a card's login signature over LoginMessage(origin,
// challenge): the authentication certificate (DER; its issuing CA comes from
// configuration), its usage, validity and revocation, the signature, and that
// the card may sign in at all.
func (v *Verifier) VerifyLogin(cert []byte, origin string, challenge, sig []byte, now time.Time) (*LoginResult, error) {
	if len(cert) == 0 || len(cert) > MaxCertSize {
		return nil, refuse(ReasonMalformed, fmt.Errorf("certificate of %d bytes", len(cert)))
	}
	vc, r := v.card(cert, uzi.PurposeLogin, now)
	if r != nil {
		return nil, r
	}
	digest := sha256.Sum256(LoginMessage(origin, challenge))
	if err := rsa.VerifyPKCS1v15(vc.pub, crypto.SHA256, digest[:], sig); err != nil {
		return nil, refuse(ReasonSignature, err)
	}
	if r := v.profile(vc, uzi.PurposeLogin); r != nil {
		return nil, r
	}
	return &LoginResult{Identity: vc.id, Cert: vc.cert}, nil
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
