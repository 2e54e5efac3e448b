//go:build cgo

package p11_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"testing"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testpki"
)

// TestEd25519Signer makes an Ed25519 key on SoftHSM (CKM_EDDSA), finds it
// by URI as a crypto.Signer whose public key is the one made, and checks
// that its signatures verify with crypto/ed25519, that a changed message
// does not, and that a prehash (or any opts but crypto.Hash(0)) is refused.
func TestEd25519Signer(t *testing.T) {
	m, _ := openModule(t)
	label := fmt.Sprintf("vouch-ed25519-%d", os.Getpid())
	if err := m.InitToken(label, testpki.CardSOPIN, testpki.CardPIN); err != nil {
		t.Fatal(err)
	}
	s, err := m.Login(p11.URI{Token: label}, testpki.CardPIN)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	made, err := s.GenerateKey(p11.KeySpec{Label: "log", ID: []byte{0xed}, Ed25519: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := made.(ed25519.PublicKey); !ok {
		t.Fatalf("GenerateKey returned %T, want ed25519.PublicKey", made)
	}
	if _, err := s.GenerateKey(p11.KeySpec{Label: "x", RSABits: 2048, Ed25519: true}); err == nil {
		t.Error("a key both RSA and Ed25519 was made")
	}
	sig, err := m.Signer(p11.URI{Token: label, Object: "log", Type: "private"}, testpki.CardPIN)
	if err != nil {
		t.Fatal(err)
	}
	defer sig.Close()
	pub, ok := sig.Public().(ed25519.PublicKey)
	if !ok || !pub.Equal(made) {
		t.Fatalf("Public() = %T %x, want the key made (%x)", sig.Public(), sig.Public(), made)
	}
	msg := []byte("vouch.example.nl/transparency/log\n1\nAAAA\n")
	got, err := sig.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(pub, msg, got) {
		t.Fatal("the HSM's signature does not verify")
	}
	msg[0] ^= 1
	if ed25519.Verify(pub, msg, got) {
		t.Fatal("the signature verifies over a changed message")
	}
	if _, err := sig.Sign(rand.Reader, msg, &ed25519.Options{}); err != nil {
		t.Errorf("plain Ed25519 by ed25519.Options: %v", err)
	}
	digest := sha256.Sum256(msg)
	for name, opts := range map[string]crypto.SignerOpts{
		"SHA-256":    crypto.SHA256,
		"Ed25519ph":  &ed25519.Options{Hash: crypto.SHA512},
		"Ed25519ctx": &ed25519.Options{Context: "x"},
	} {
		if _, err := sig.Sign(rand.Reader, digest[:], opts); err == nil {
			t.Errorf("%s: signed, want refused", name)
		}
	}
}

// TestEd25519SignerFailsClosed: a signature that does not verify under the
// signer's public key (the token signed with another key) is an error, and
// no signature is returned.
func TestEd25519SignerFailsClosed(t *testing.T) {
	m, _ := openModule(t)
	label := fmt.Sprintf("vouch-ed25519-fc-%d", os.Getpid())
	if err := m.InitToken(label, testpki.CardSOPIN, testpki.CardPIN); err != nil {
		t.Fatal(err)
	}
	s, err := m.Login(p11.URI{Token: label}, testpki.CardPIN)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.GenerateKey(p11.KeySpec{Label: "a", ID: []byte{1}, Ed25519: true}); err != nil {
		t.Fatal(err)
	}
	other, err := s.GenerateKey(p11.KeySpec{Label: "b", ID: []byte{2}, Ed25519: true})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Signer(p11.URI{ID: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	p11.SetPublicForTest(sig, other)
	got, err := sig.Sign(rand.Reader, []byte("checkpoint"), crypto.Hash(0))
	if err == nil || got != nil {
		t.Fatalf("Sign with another key than the public key shown: %x, %v; want an error", got, err)
	}
}
