package transparency

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// sigTypeEd25519 is the C2SP signed-note signature type of an Ed25519 key.
const sigTypeEd25519 byte = 0x01

// ed25519Signer is the log's checkpoint signer when its Ed25519 key is in
// an HSM (VOUCH_TRANSPARENCY_KEY_URI) rather than in a key file: the same
// signed-note signature (type 0x01) as note.NewSigner makes from the file,
// so verifiers cannot tell the two apart.
type ed25519Signer struct {
	name string
	hash uint32
	key  crypto.Signer
	pub  ed25519.PublicKey
}

// newEd25519Signer makes the note signer of key under origin, and its
// verifier key (<origin>+<key hash>+base64(0x01 || public key)).
func newEd25519Signer(origin string, key crypto.Signer) (*ed25519Signer, string, error) {
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, "", errors.New("transparency: the log's key (VOUCH_TRANSPARENCY_KEY_URI) must be an Ed25519 key")
	}
	vkey, err := note.NewEd25519VerifierKey(origin, pub)
	if err != nil {
		return nil, "", fmt.Errorf("transparency: the log's key under origin %q: %w", origin, err)
	}
	return &ed25519Signer{name: origin, hash: ed25519KeyHash(origin, pub), key: key, pub: pub}, vkey, nil
}

// ed25519KeyHash is the key hash of signed-note: the first four bytes of
// SHA-256(name || "\n" || 0x01 || public key), big-endian.
func ed25519KeyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', sigTypeEd25519})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

func (s *ed25519Signer) Name() string    { return s.name }
func (s *ed25519Signer) KeyHash() uint32 { return s.hash }

// Sign signs msg, the checkpoint's text (Ed25519 hashes it itself), and
// checks the signature before it is published, whatever the key's signer
// checked.
func (s *ed25519Signer) Sign(msg []byte) ([]byte, error) {
	sig, err := s.key.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("transparency: the log key's signature: %w", err)
	}
	if !ed25519.Verify(s.pub, msg, sig) {
		return nil, errors.New("transparency: the log key's signature does not verify")
	}
	return sig, nil
}

var _ note.Signer = (*ed25519Signer)(nil)
