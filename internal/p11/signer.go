//go:build cgo

package p11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync/atomic"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// Signer is a private key on a token, as a crypto.Signer.
type Signer struct {
	s         *Session
	key       pkcs11.ObjectHandle
	pub       crypto.PublicKey
	cert      *x509.Certificate // nil when the token holds none for this key
	alwaysPIN bool              // CKA_ALWAYS_AUTHENTICATE: the PIN again for every signature
	ownsSess  bool
	prompt    atomic.Pointer[PINPrompt]

	// The key's handle was found at login generation keyGen; after a later
	// login it is found again by refind (class, id, label and type).
	keyGen uint64
	refind []*pkcs11.Attribute
}

var _ crypto.Signer = (*Signer)(nil)

// PINPrompt asks the person at the reader for the card's PIN. Sign calls it
// once for every signature with a key that wants the PIN each time
// (CKA_ALWAYS_AUTHENTICATE, such as a card's non-repudiation key), before it
// touches the card and with no lock held, so a person may take their time.
// Sign zeroes the returned slice once the card has it: return a fresh slice
// each time and keep no copy. An empty PIN means the reader's PIN pad, where
// there is one. An error (such as the person cancelling) stops the
// signature; Sign returns it wrapped.
type PINPrompt func() ([]byte, error)

// SetPINPrompt sets how the signer asks for the PIN at each signature with a
// key that wants it every time; nil removes it. Without a prompt such a key
// signs only on a reader with a PIN pad, which asks itself, and otherwise
// fails with ErrPINNeeded. Other keys never call the prompt: the PIN given at
// login covers them.
func (g *Signer) SetPINPrompt(p PINPrompt) {
	if p == nil {
		g.prompt.Store(nil)
		return
	}
	g.prompt.Store(&p)
}

// Signer logs in to the token u names and returns the private key it names
// (by id or label) as a crypto.Signer, with its certificate when the token
// holds exactly one under the key's id and it is the key's (see
// Session.Signer). Close the signer when done with it.
func (m *Module) Signer(u URI, pin string) (*Signer, error) {
	s, err := m.Login(u, pin)
	if err != nil {
		return nil, err
	}
	sig, err := s.Signer(u)
	if err != nil {
		s.Close()
		return nil, err
	}
	sig.ownsSess = true
	return sig, nil
}

// Signer finds a private key in an open session. Its certificate is the one
// object of class certificate under the key's CKA_ID, the link PKCS#11 tools
// make between a key and its certificate; a key without a CKA_ID has none
// here (a label is a name anyone may repeat, so looking a certificate up by
// it would be a guess). Two certificates under the ID, or one whose public
// key is not the key's, are refused: a signer must never hand out another
// key's certificate.
func (s *Session) Signer(u URI) (*Signer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gen := s.login.gen.Load() // before the search: a login after it finds the key again
	key, err := s.findOne(pkcs11.CKO_PRIVATE_KEY, u)
	if err != nil {
		return nil, err
	}
	a, err := s.attrs(key, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_ID, pkcs11.CKA_LABEL, pkcs11.CKA_ALWAYS_AUTHENTICATE)
	if err != nil {
		return nil, err
	}
	sig := &Signer{s: s, key: key, keyGen: gen, alwaysPIN: len(a[pkcs11.CKA_ALWAYS_AUTHENTICATE]) == 1 && a[pkcs11.CKA_ALWAYS_AUTHENTICATE][0] == 1}
	id := a[pkcs11.CKA_ID]
	sig.refind = []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, a[pkcs11.CKA_LABEL]),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, a[pkcs11.CKA_KEY_TYPE]),
	}
	kt := keyType(a[pkcs11.CKA_KEY_TYPE])
	if kt != pkcs11.CKK_RSA && kt != pkcs11.CKK_EC && kt != CKK_EC_EDWARDS {
		return nil, fmt.Errorf("p11: key type %x not supported", a[pkcs11.CKA_KEY_TYPE])
	}
	own, err := s.keyPublic(key, kt, id)
	if err != nil {
		return nil, fmt.Errorf("p11: public key of %s: %w", u, err)
	}
	cert, err := s.certificate(id)
	if err != nil {
		return nil, fmt.Errorf("p11: certificate of %s: %w", u, err)
	}
	if cert != nil {
		if own == nil {
			// Nothing to check the certificate against; trusting it could
			// pair the key with another key's certificate.
			return nil, fmt.Errorf("p11: %s: no public key beside the key to check its certificate against", u)
		}
		if !samePublicKey(own, cert.PublicKey) {
			return nil, fmt.Errorf("%w (%s, certificate %q)", ErrCertificateMismatch, u, cert.Subject.CommonName)
		}
		sig.cert, sig.pub = cert, cert.PublicKey
		return sig, nil
	}
	if r, ok := own.(*rsa.PublicKey); ok && r.E == 0 {
		// The private key hides its exponent: the public key object
		// completes it, once its modulus shows it is this key's.
		po, err := s.publicKey(kt, id)
		if err != nil {
			return nil, fmt.Errorf("p11: public key of %s: %w", u, err)
		}
		if po != nil && !samePublicKey(r, po) {
			return nil, fmt.Errorf("p11: the public key object under the id of %s is another key's", u)
		}
		own = po
	}
	if own == nil {
		return nil, fmt.Errorf("p11: no certificate or public key for %s: %w", u, ErrKeyNotFound)
	}
	sig.pub = own
	return sig, nil
}

// keyPublic is the private key's public half as far as the token tells it
// without a guess, or nil. An RSA private key carries its modulus and
// usually its exponent (left 0 when it does not show it; samePublicKey then
// compares the modulus alone). An EC private key carries no point: that
// comes from the one EC public key object under the same non-empty CKA_ID.
// The caller holds s.mu.
func (s *Session) keyPublic(key pkcs11.ObjectHandle, kt uint, id []byte) (crypto.PublicKey, error) {
	if kt != pkcs11.CKK_RSA {
		return s.publicKey(kt, id)
	}
	a, err := s.attrs(key, pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT)
	if err != nil {
		// CKA_PUBLIC_EXPONENT is optional on a private key; the modulus
		// is not.
		if a, err = s.attrs(key, pkcs11.CKA_MODULUS); err != nil {
			return nil, err
		}
	}
	if len(a[pkcs11.CKA_MODULUS]) == 0 {
		return nil, errors.New("the RSA key shows no modulus")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(a[pkcs11.CKA_MODULUS])}
	if e := new(big.Int).SetBytes(a[pkcs11.CKA_PUBLIC_EXPONENT]); e.IsInt64() && e.Int64() <= 1<<31-1 {
		pub.E = int(e.Int64())
	}
	return pub, nil
}

// publicKey reads the one public key object of type kt under id; nil when
// id is empty or there is none. The caller holds s.mu.
func (s *Session) publicKey(kt uint, id []byte) (crypto.PublicKey, error) {
	if len(id) == 0 {
		return nil, nil // an empty template would match every public key
	}
	o, ok, err := s.one(append(objectTemplate(pkcs11.CKO_PUBLIC_KEY, URI{ID: id}), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, kt)), "public key")
	if !ok || err != nil {
		return nil, err
	}
	return s.readPublic(o, kt)
}

// one finds the one object tmpl matches: none is not an error, two are,
// since which one belongs to the key would be a guess. The caller holds
// s.mu.
func (s *Session) one(tmpl []*pkcs11.Attribute, what string) (o pkcs11.ObjectHandle, ok bool, err error) {
	objs, err := s.find(tmpl, 2)
	switch {
	case err != nil:
		return 0, false, err
	case len(objs) == 0:
		return 0, false, nil
	case len(objs) > 1:
		return 0, false, fmt.Errorf("more than one %s under the key's id", what)
	}
	return objs[0], true, nil
}

// readPublic reads a public key object. The caller holds s.mu.
func (s *Session) readPublic(o pkcs11.ObjectHandle, kt uint) (crypto.PublicKey, error) {
	switch kt {
	case pkcs11.CKK_RSA:
		pa, err := s.attrs(o, pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT)
		if err != nil {
			return nil, err
		}
		e := new(big.Int).SetBytes(pa[pkcs11.CKA_PUBLIC_EXPONENT])
		if len(pa[pkcs11.CKA_MODULUS]) == 0 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
			return nil, errors.New("RSA public key out of range")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(pa[pkcs11.CKA_MODULUS]), E: int(e.Int64())}, nil
	case pkcs11.CKK_EC:
		pa, err := s.attrs(o, pkcs11.CKA_EC_POINT)
		if err != nil {
			return nil, err
		}
		return parseECPoint(pa[pkcs11.CKA_EC_POINT])
	case CKK_EC_EDWARDS:
		pa, err := s.attrs(o, pkcs11.CKA_EC_PARAMS, pkcs11.CKA_EC_POINT)
		if err != nil {
			return nil, err
		}
		return parseEd25519(pa[pkcs11.CKA_EC_PARAMS], pa[pkcs11.CKA_EC_POINT])
	}
	return nil, fmt.Errorf("key type %#x not supported", kt)
}

// certificate reads the one certificate under id; nil when id is empty or
// there is none. Two under one id are refused: which is the key's would be a
// guess. The caller holds s.mu.
func (s *Session) certificate(id []byte) (*x509.Certificate, error) {
	if len(id) == 0 {
		return nil, nil // an empty template would match every certificate
	}
	o, ok, err := s.one(objectTemplate(pkcs11.CKO_CERTIFICATE, URI{ID: id}), "certificate")
	if !ok || err != nil {
		return nil, err
	}
	ca, err := s.attrs(o, pkcs11.CKA_VALUE)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(ca[pkcs11.CKA_VALUE])
	if err != nil {
		return nil, fmt.Errorf("on card: %w", err)
	}
	return cert, nil
}

// samePublicKey reports whether b is the key a. An RSA a with exponent 0
// (the token did not show it) is compared by modulus alone.
func samePublicKey(a, b crypto.PublicKey) bool {
	switch a := a.(type) {
	case *rsa.PublicKey:
		b, ok := b.(*rsa.PublicKey)
		return ok && a.N.Cmp(b.N) == 0 && (a.E == 0 || a.E == b.E)
	case *ecdsa.PublicKey:
		b, ok := b.(*ecdsa.PublicKey)
		return ok && a.Equal(b)
	case ed25519.PublicKey:
		b, ok := b.(ed25519.PublicKey)
		return ok && a.Equal(b)
	}
	return false
}

func keyType(b []byte) uint {
	var v uint
	for i := len(b) - 1; i >= 0; i-- { // CK_ULONG in host (little-endian) order
		v = v<<8 | uint(b[i])
	}
	return v
}

// parseECPoint reads CKA_EC_POINT: a DER OCTET STRING around an uncompressed
// P-256 point (some modules omit the wrapper).
func parseECPoint(b []byte) (*ecdsa.PublicKey, error) {
	var point []byte
	if rest, err := asn1.Unmarshal(b, &point); err != nil || len(rest) != 0 {
		point = b
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, fmt.Errorf("p11: EC point: %w", err)
	}
	return pub, nil
}

// Public returns the public key.
func (g *Signer) Public() crypto.PublicKey { return g.pub }

// Certificate is the key's certificate from the token, or nil.
func (g *Signer) Certificate() *x509.Certificate { return g.cert }

// Close closes the signer's session when it opened its own (the last
// session on the token logs out).
func (g *Signer) Close() {
	if g.ownsSess {
		g.s.Close()
	}
}

// digestInfoSHA256 is the DER prefix of a PKCS#1 v1.5 DigestInfo for SHA-256.
var digestInfoSHA256 = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

// Sign signs a SHA-256 digest: RSA PKCS#1 v1.5 for RSA keys, ECDSA (ASN.1
// DER, as crypto.Signer promises) for P-256 keys. Other hashes and PSS are
// refused rather than silently signed differently.
//
// An Ed25519 key signs the message itself instead (opts crypto.Hash(0),
// CKM_EDDSA), and its signature is checked before it is returned.
func (g *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if pub, ok := g.pub.(ed25519.PublicKey); ok {
		return g.signEd25519(pub, digest, opts)
	}
	if opts.HashFunc() != crypto.SHA256 || len(digest) != 32 {
		return nil, errors.New("p11: only SHA-256 digests are signed")
	}
	if _, pss := opts.(*rsa.PSSOptions); pss {
		return nil, errors.New("p11: RSA-PSS is not supported")
	}
	var mech uint
	var data []byte
	switch g.pub.(type) {
	case *rsa.PublicKey:
		mech = pkcs11.CKM_RSA_PKCS
		data = append(append([]byte{}, digestInfoSHA256...), digest...)
	case *ecdsa.PublicKey:
		mech = pkcs11.CKM_ECDSA
		data = digest
	default:
		return nil, errors.New("p11: unsupported key")
	}
	sig, err := g.sign(mech, data)
	if err != nil {
		return nil, err
	}
	if _, ok := g.pub.(*ecdsa.PublicKey); ok {
		return rawToASN1(sig)
	}
	return sig, nil
}

// sign runs one signing operation with mechanism mech over data, asking
// for the PIN first when the key wants it every time, and returns what the
// token returned.
func (g *Signer) sign(mechanism uint, data []byte) ([]byte, error) {
	mech := pkcs11.NewMechanism(mechanism, nil)
	var pin []byte // nil: the login covers the key, or the reader's pad asks
	if g.alwaysPIN {
		if err := g.s.usable(); err != nil {
			return nil, err // ask no one for a PIN that cannot be used
		}
		var p PINPrompt
		if pp := g.prompt.Load(); pp != nil {
			p = *pp
		}
		var err error
		if pin, err = signaturePIN(p, g.s.token.ProtectedPath); err != nil {
			return nil, err
		}
	}
	s := g.s
	s.mu.Lock()
	defer s.mu.Unlock()
	release, err := s.begin()
	if err != nil {
		clear(pin)
		return nil, err
	}
	defer release()
	// The read lock holds gen still for the whole operation.
	gen := s.login.gen.Load()
	key, stale := g.key, g.keyGen != gen
	refound := false
	var sig []byte
	err = s.timed(func() error {
		// Wiped here, not by Sign: after a timeout this call still runs.
		defer clear(pin)
		ctx := s.m.lib.ctx
		if stale {
			objs, err := findObjects(ctx, s.h, g.refind, 2)
			if err != nil {
				return err
			}
			if len(objs) != 1 {
				return fmt.Errorf("%w (%d found after signing in again)", ErrKeyNotFound, len(objs))
			}
			key, refound = objs[0], true
		}
		if err := ctx.SignInit(s.h, []*pkcs11.Mechanism{mech}, key); err != nil {
			return err
		}
		if g.alwaysPIN {
			if err := ctx.Login(s.h, pkcs11.CKU_CONTEXT_SPECIFIC, pinString(pin)); err != nil {
				endSign(ctx, s.h, data)
				return err
			}
		}
		var err error
		sig, err = ctx.Sign(s.h, data)
		return err
	})
	if !errors.Is(err, ErrTimeout) && refound { // after a timeout the call still runs
		g.key, g.keyGen = key, gen
	}
	if err != nil {
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)) || errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_LEN_RANGE)) ||
			errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_LOCKED)) {
			return nil, s.loginError(err)
		}
		if errors.Is(err, ErrTimeout) {
			return nil, err
		}
		err = classify("sign", err)
		// Modules differ in what they return once a card is gone (SoftHSM
		// says the key handle is invalid); asking whether the token is still
		// there gives one answer for all of them.
		if !errors.Is(err, ErrTokenRemoved) && !s.present() {
			s.dead = ErrTokenRemoved
			return nil, fmt.Errorf("sign: %w (%v)", ErrTokenRemoved, err)
		}
		return nil, err
	}
	return sig, nil
}

// signaturePIN gets the PIN for one signature with a key that wants it every
// time: from the prompt when there is one, else from the reader's pad (nil).
func signaturePIN(prompt PINPrompt, pad bool) ([]byte, error) {
	if prompt == nil {
		if pad {
			return nil, nil
		}
		return nil, ErrPINNeeded
	}
	pin, err := prompt()
	if err != nil {
		clear(pin)
		return nil, fmt.Errorf("p11: PIN prompt: %w", err)
	}
	if len(pin) == 0 && !pad {
		return nil, ErrPINNeeded // an empty PIN would cost a try for nothing
	}
	return pin, nil
}

// pinString shows pin to miekg/pkcs11's string API without a copy on the Go
// heap that could not be wiped: miekg copies it to C memory for the call
// (and frees that copy unwiped; no Go API avoids it). The string must not
// outlive the call, as the slice is zeroed after it.
func pinString(pin []byte) string {
	if len(pin) == 0 {
		return "" // the reader's pad; miekg passes NULL
	}
	return unsafe.String(&pin[0], len(pin))
}

// endSign ends a signing operation whose context-specific login failed, so
// the session can sign again. PKCS#11 says a C_Sign that fails terminates the
// operation, and without the login it must fail with
// CKR_USER_NOT_LOGGED_IN; should a module sign anyway, the signature is
// dropped here, unseen.
func endSign(ctx *pkcs11.Ctx, h pkcs11.SessionHandle, data []byte) {
	_, _ = ctx.Sign(h, data)
}

// rawToASN1 converts PKCS#11's r||s into the ASN.1 form Go verifies.
func rawToASN1(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, fmt.Errorf("p11: ECDSA signature of %d bytes", len(raw))
	}
	n := len(raw) / 2
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:n]), new(big.Int).SetBytes(raw[n:])})
}
