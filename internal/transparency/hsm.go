package transparency

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// SigTypeECDSA is the C2SP signed-note signature type of the checkpoint's
// second signature, by the back end's P-256 HSM key: 0x02, "ECDSA
// signatures as implemented by github.com/transparency-dev/witness", an
// ASN.1 ECDSA signature over SHA-256 of the note text, whose key ID is the
// first four bytes of SHA-256 over the public key's DER (SPKI) encoding.
// transparency-dev/formats' note.NewECDSAVerifier verifies it.
const SigTypeECDSA byte = 0x02

// hsmSigner is a note signer for a P-256 key in an HSM: it signs the
// checkpoint under the log's origin as a second signature line, which
// verifiers that know only the Ed25519 key ignore (signed-note: unknown
// keys are skipped).
type hsmSigner struct {
	name string
	hash uint32
	key  crypto.Signer
	pub  *ecdsa.PublicKey
}

// newHSMSigner checks that key is a P-256 key and makes its note signer
// under origin, and its verifier key.
func newHSMSigner(origin string, key crypto.Signer) (*hsmSigner, string, error) {
	pub, ok := key.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, "", errors.New("transparency: the HSM key must be an ECDSA P-256 key")
	}
	vkey, hash, err := ECDSAVerifierKey(origin, pub)
	if err != nil {
		return nil, "", err
	}
	return &hsmSigner{name: origin, hash: hash, key: key, pub: pub}, vkey, nil
}

// ECDSAVerifierKey is the verifier key (<origin>+<key ID>+base64(0x02 ||
// DER SPKI)) of the back end's P-256 key as a checkpoint signer, and its
// key ID.
func ECDSAVerifierKey(origin string, pub *ecdsa.PublicKey) (vkey string, keyID uint32, err error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", 0, fmt.Errorf("transparency: HSM public key: %w", err)
	}
	h := sha256.Sum256(der)
	keyID = binary.BigEndian.Uint32(h[:4])
	return fmt.Sprintf("%s+%08x+%s", origin, keyID, base64.StdEncoding.EncodeToString(append([]byte{SigTypeECDSA}, der...))), keyID, nil
}

func (s *hsmSigner) Name() string    { return s.name }
func (s *hsmSigner) KeyHash() uint32 { return s.hash }

// Sign signs msg, the checkpoint's text, and checks the signature before
// it is published: a signature the HSM got wrong never leaves.
func (s *hsmSigner) Sign(msg []byte) ([]byte, error) {
	digest := sha256.Sum256(msg)
	sig, err := s.key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("transparency: HSM signature: %w", err)
	}
	if !ecdsa.VerifyASN1(s.pub, digest[:], sig) {
		return nil, errors.New("transparency: the HSM's signature does not verify")
	}
	return sig, nil
}

var _ note.Signer = (*hsmSigner)(nil)
