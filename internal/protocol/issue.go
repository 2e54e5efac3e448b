package protocol

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/vouch-nl/vouch/internal/uzi"
)

// SignStatement has the card's signature key sign the encoded statement.
func SignStatement(card crypto.Signer, st *Statement) (encoded, sig []byte, err error) {
	if _, ok := card.Public().(*rsa.PublicKey); !ok {
		return nil, nil, errors.New("protocol: card signature key is not RSA")
	}
	encoded = st.Marshal()
	digest := sha256.Sum256(encoded)
	sig, err = card.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("protocol: card signature: %w", err)
	}
	return encoded, sig, nil
}

// Attest has the back end's attestation key countersign a statement for the
// card holder id whose license the register reported as license.
func Attest(key crypto.Signer, statement []byte, id uzi.Identity, license string, expires, now time.Time) (encoded, sig []byte, err error) {
	if _, ok := key.Public().(*ecdsa.PublicKey); !ok {
		return nil, nil, errors.New("protocol: attestation key is not ECDSA")
	}
	kid, err := KeyID(key.Public())
	if err != nil {
		return nil, nil, err
	}
	at := &Attestation{StatementHash: sha256.Sum256(statement), UZI: id.UZI, Role: id.Role, License: license,
		CheckedAt: now.UTC().Truncate(time.Second), ExpiresAt: expires, KeyID: kid}
	encoded = at.Marshal()
	digest := sha256.Sum256(encoded)
	sig, err = key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("protocol: attestation signature: %w", err)
	}
	// Verifiers accept only the low-S form (one encoding per signature).
	if sig, err = LowS(key.Public().(*ecdsa.PublicKey).Curve, sig); err != nil {
		return nil, nil, err
	}
	return encoded, sig, nil
}
