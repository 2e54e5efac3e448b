//go:build cgo

package p11

import "crypto"

// SetPublicForTest makes the signer claim another public key, as a token
// that signs with another key than the one it shows would.
func SetPublicForTest(g *Signer, pub crypto.PublicKey) { g.pub = pub }
