//go:build cgo

package p11

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// oidP256DER is the DER encoding of the P-256 curve OID, as CKA_EC_PARAMS.
var oidP256DER = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// KeySpec says what key to make on a token. The private key never leaves it.
type KeySpec struct {
	Label string
	ID    []byte
	// RSABits makes an RSA key of that size; zero makes an ECDSA P-256 key.
	RSABits int
	// Ed25519 makes an Ed25519 key (CKM_EC_EDWARDS_KEY_PAIR_GEN), such as
	// the transparency log's checkpoint key, on a token that has the
	// mechanism.
	Ed25519 bool
	// AlwaysAuthenticate asks for the PIN at every signature, as
	// non-repudiation keys on real cards do.
	AlwaysAuthenticate bool
}

// GenerateKey makes a key pair on the token and returns its public key.
func (s *Session) GenerateKey(spec KeySpec) (crypto.PublicKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	common := func() []*pkcs11.Attribute {
		return []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, spec.Label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, spec.ID),
		}
	}
	pub := append(common(), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true))
	priv := append(common(),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_AUTHENTICATE, spec.AlwaysAuthenticate),
	)
	if spec.RSABits > 0 && spec.Ed25519 {
		return nil, errors.New("p11: a key is RSA or Ed25519, not both")
	}
	var mech *pkcs11.Mechanism
	kt := uint(pkcs11.CKK_EC)
	switch {
	case spec.Ed25519:
		mech, kt = pkcs11.NewMechanism(CKM_EC_EDWARDS_KEY_PAIR_GEN, nil), CKK_EC_EDWARDS
		pub = append(pub, pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidEd25519DER))
	case spec.RSABits > 0:
		kt = pkcs11.CKK_RSA
		mech = pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)
		pub = append(pub,
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, spec.RSABits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
	default:
		mech = pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)
		pub = append(pub, pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidP256DER))
	}
	var pubObj pkcs11.ObjectHandle
	err := s.call(func() error {
		var err error
		pubObj, _, err = s.m.lib.ctx.GenerateKeyPair(s.h, []*pkcs11.Mechanism{mech}, pub, priv)
		return err
	})
	if err != nil {
		return nil, classify("generate key", err)
	}
	// Read from the new public key object itself: a search by spec.ID
	// would find other keys when the ID is empty or repeated.
	pk, err := s.readPublic(pubObj, kt)
	if err != nil {
		return nil, fmt.Errorf("p11: public key of the new key: %w", err)
	}
	return pk, nil
}

// StoreCertificate puts a certificate on the token under the key's id.
func (s *Session) StoreCertificate(label string, id []byte, cert *x509.Certificate) error {
	serial, err := asn1.Marshal(cert.SerialNumber) // CKA_SERIAL_NUMBER is the DER INTEGER
	if err != nil {
		return fmt.Errorf("p11: certificate serial: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_SUBJECT, cert.RawSubject),
		pkcs11.NewAttribute(pkcs11.CKA_ISSUER, cert.RawIssuer),
		pkcs11.NewAttribute(pkcs11.CKA_SERIAL_NUMBER, serial),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, cert.Raw),
	}
	err = s.call(func() error {
		_, err := s.m.lib.ctx.CreateObject(s.h, tmpl)
		return err
	})
	if err != nil {
		return classify("store certificate", err)
	}
	return nil
}

// HasObject reports whether an object of the class exists under id.
func (s *Session) HasObject(private bool, id []byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	class := uint(pkcs11.CKO_CERTIFICATE)
	if private {
		class = pkcs11.CKO_PRIVATE_KEY
	}
	objs, err := s.find(objectTemplate(class, URI{ID: id}), 1)
	if err != nil {
		return false, fmt.Errorf("p11: look up object: %w", err)
	}
	return len(objs) > 0, nil
}
