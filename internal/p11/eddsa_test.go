//go:build cgo

package p11

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/asn1"
	"testing"
)

// TestParseEd25519 takes the point wrapped in a DER OCTET STRING or bare,
// under either name PKCS#11 v3.0 gives the curve, and refuses the rest.
func TestParseEd25519(t *testing.T) {
	t.Parallel()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, _ := asn1.Marshal([]byte(pub))
	short, _ := asn1.Marshal([]byte(pub[:31]))
	long, _ := asn1.Marshal(append(bytes.Clone(pub), 0))
	ed448 := []byte{0x06, 0x03, 0x2b, 0x65, 0x71}
	for _, tt := range []struct {
		name          string
		params, point []byte
		ok            bool
	}{
		{"OID, OCTET STRING", oidEd25519DER, wrapped, true},
		{"OID, bare", oidEd25519DER, pub, true},
		{"name, OCTET STRING", ed25519NameDER, wrapped, true},
		{"Ed448 OID", ed448, wrapped, false},
		{"P-256 OID", oidP256DER, wrapped, false},
		{"no params", nil, wrapped, false},
		{"31 bytes", oidEd25519DER, short, false},
		{"33 bytes", oidEd25519DER, long, false},
		{"trailing byte", oidEd25519DER, append(bytes.Clone(wrapped), 0), false},
		{"bare 31", oidEd25519DER, pub[:31], false},
		{"empty", oidEd25519DER, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseEd25519(tt.params, tt.point)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if tt.ok && !got.Equal(pub) {
				t.Fatalf("got %x, want %x", got, pub)
			}
		})
	}
}

func FuzzParseEd25519(f *testing.F) {
	f.Add(oidEd25519DER, append([]byte{0x04, 32}, make([]byte, 32)...))
	f.Fuzz(func(t *testing.T, params, point []byte) {
		pub, err := parseEd25519(params, point)
		if err == nil && len(pub) != ed25519.PublicKeySize {
			t.Fatalf("accepted a key of %d bytes", len(pub))
		}
	})
}
