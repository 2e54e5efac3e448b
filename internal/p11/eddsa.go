//go:build cgo

package p11

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"encoding/asn1"
	"errors"
	"fmt"
)

// PKCS#11 v3.0 names for Edwards-curve keys (pkcs11t.h), which
// github.com/miekg/pkcs11 v1.1.2 does not define.
const (
	CKK_EC_EDWARDS              = 0x40   // key type of an Ed25519/Ed448 key
	CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055 // makes one
	CKM_EDDSA                   = 0x1057 // signs with one (pure EdDSA without parameters)
)

// CKA_EC_PARAMS of an Ed25519 key: PKCS#11 v3.0 allows the curve's OID
// (1.3.101.112, RFC 8410) or the printable string "edwards25519".
var (
	oidEd25519DER   = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}
	ed25519NameDER  = append([]byte{0x13, 12}, "edwards25519"...)
	errNotEd25519   = errors.New("the Edwards key is not an Ed25519 key (CKA_EC_PARAMS)")
	errEd25519Point = errors.New("the Ed25519 public key is not 32 bytes (CKA_EC_POINT)")
)

// parseEd25519 reads an Ed25519 public key object's CKA_EC_PARAMS and
// CKA_EC_POINT. The point is a DER OCTET STRING of 32 bytes, or the 32
// bytes bare on some tokens; anything else (Ed448, a longer or shorter
// string, trailing bytes) is refused rather than cut to size.
func parseEd25519(params, point []byte) (ed25519.PublicKey, error) {
	if !bytes.Equal(params, oidEd25519DER) && !bytes.Equal(params, ed25519NameDER) {
		return nil, errNotEd25519
	}
	if len(point) == ed25519.PublicKeySize {
		return ed25519.PublicKey(bytes.Clone(point)), nil
	}
	var inner []byte
	rest, err := asn1.Unmarshal(point, &inner)
	if err != nil || len(rest) != 0 || len(inner) != ed25519.PublicKeySize {
		return nil, errEd25519Point
	}
	return ed25519.PublicKey(inner), nil
}

// signEd25519 signs msg itself (EdDSA hashes it: no prehash, so opts must
// be crypto.Hash(0)) with CKM_EDDSA and checks the signature against the
// public key before it is returned: a token that signed wrongly, or with
// another key, gives an error, never a bad signature.
func (g *Signer) signEd25519(pub ed25519.PublicKey, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() != crypto.Hash(0) {
		return nil, errors.New("p11: Ed25519 signs the message itself: opts must be crypto.Hash(0)")
	}
	if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
		return nil, errors.New("p11: Ed25519ctx is not supported")
	}
	sig, err := g.sign(CKM_EDDSA, msg)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(pub, msg, sig) {
		return nil, fmt.Errorf("p11: the token's Ed25519 signature (%d bytes) does not verify", len(sig))
	}
	return sig, nil
}
