package p11_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testpki"
)

// privateSoftHSMEnv names the test a child process runs in its own SoftHSM.
const privateSoftHSMEnv = "VOUCH_P11_PRIVATE_SOFTHSM"

// inPrivateSoftHSM runs the calling test again in a child process whose
// SoftHSM2 keeps its tokens in a fresh directory, and reports whether this
// is that child, which then does the work. SoftHSM reads SOFTHSM2_CONF once
// per process, and the odd objects such a test makes must stay out of the
// shared test cards.
func inPrivateSoftHSM(t *testing.T) bool {
	t.Helper()
	if os.Getenv(privateSoftHSMEnv) == t.Name() {
		return true
	}
	if _, err := os.Stat(testpki.DefaultModule); err != nil {
		t.Fatalf("SoftHSM2 (%s) is not available (run `make deps`): %v", testpki.DefaultModule, err)
	}
	conf, err := testpki.WriteSoftHSMConf(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf, privateSoftHSMEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s in a private SoftHSM: %v\n%s", t.Name(), err, out)
	}
	return false
}

// selfSigned makes a certificate for pub, signed by a throwaway key.
func selfSigned(t *testing.T, cn string, serial int64, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	issuer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	parent := &x509.Certificate{Subject: pkix.Name{CommonName: "issuer"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, issuer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestSignerCertificateIsTheKeys: a signer hands out a certificate only when
// it is the one certificate under the key's CKA_ID and holds the key's public
// key. A key without a CKA_ID (found by label) gets none, rather than
// whatever certificate the token holds; two certificates under one ID, and a
// certificate of another key, are refused, for RSA and EC keys.
func TestSignerCertificateIsTheKeys(t *testing.T) {
	if !inPrivateSoftHSM(t) {
		return
	}
	m, err := p11.Open(testpki.DefaultModule)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const label = "vouch-odd-objects"
	if err := m.InitToken(label, testpki.CardSOPIN, testpki.CardPIN); err != nil {
		t.Fatal(err)
	}
	s, err := m.Login(p11.URI{Token: label}, testpki.CardPIN)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	gen := func(spec p11.KeySpec) crypto.PublicKey {
		t.Helper()
		pub, err := s.GenerateKey(spec)
		if err != nil {
			t.Fatalf("generate %s: %v", spec.Label, err)
		}
		return pub
	}
	store := func(label string, id []byte, cert *x509.Certificate) {
		t.Helper()
		if err := s.StoreCertificate(label, id, cert); err != nil {
			t.Fatalf("store %s: %v", label, err)
		}
	}
	noID := gen(p11.KeySpec{Label: "no-id", RSABits: 2048}) // first, while it is the only key
	rsaPub := gen(p11.KeySpec{Label: "rsa", ID: []byte{2}, RSABits: 2048})
	store("rsa", []byte{2}, selfSigned(t, "rsa", 2, rsaPub))
	gen(p11.KeySpec{Label: "rsa-other-cert", ID: []byte{3}, RSABits: 2048})
	store("rsa-other-cert", []byte{3}, selfSigned(t, "rsa's", 3, rsaPub))
	ecPub := gen(p11.KeySpec{Label: "ec", ID: []byte{4}})
	store("ec", []byte{4}, selfSigned(t, "ec", 4, ecPub))
	gen(p11.KeySpec{Label: "ec-other-cert", ID: []byte{5}})
	store("ec-other-cert", []byte{5}, selfSigned(t, "ec's", 5, ecPub))
	twoPub := gen(p11.KeySpec{Label: "two-certs", ID: []byte{6}})
	store("two-certs", []byte{6}, selfSigned(t, "two-certs a", 6, twoPub))
	store("two-certs", []byte{6}, selfSigned(t, "two-certs b", 7, twoPub))
	ecBare := gen(p11.KeySpec{Label: "ec-bare", ID: []byte{8}})

	signer := func(object string) (*p11.Signer, error) {
		return s.Signer(p11.URI{Token: label, Object: object})
	}
	// signs checks that the signer signs with the key it shows.
	signs := func(g *p11.Signer) {
		t.Helper()
		digest := sha256.Sum256([]byte("x"))
		sig, err := g.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		switch pub := g.Public().(type) {
		case *rsa.PublicKey:
			err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
		case *ecdsa.PublicKey:
			if !ecdsa.VerifyASN1(pub, digest[:], sig) {
				err = errors.New("ECDSA signature does not verify")
			}
		}
		if err != nil {
			t.Errorf("signature does not verify with the signer's public key: %v", err)
		}
	}

	for _, tt := range []struct {
		object string
		pub    crypto.PublicKey
		cert   bool
	}{
		{"no-id", noID, false}, // no ID, so no certificate: not the first one on the token
		{"rsa", rsaPub, true},
		{"ec", ecPub, true},
		{"ec-bare", ecBare, false},
	} {
		g, err := signer(tt.object)
		if err != nil {
			t.Errorf("%s: %v", tt.object, err)
			continue
		}
		if c := g.Certificate(); (c != nil) != tt.cert {
			t.Errorf("%s: certificate %v, want one: %v", tt.object, c != nil, tt.cert)
		} else if c != nil && c.Subject.CommonName != tt.object {
			t.Errorf("%s: certificate of %s", tt.object, c.Subject.CommonName)
		}
		if !g.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tt.pub) {
			t.Errorf("%s: public key is not the key's", tt.object)
		}
		signs(g)
	}
	for _, tt := range []struct {
		object string
		want   error  // or nil
		text   string // in the message
	}{
		{"rsa-other-cert", p11.ErrCertificateMismatch, "rsa-other-cert"},
		{"ec-other-cert", p11.ErrCertificateMismatch, "ec-other-cert"},
		{"two-certs", nil, "more than one certificate"},
	} {
		g, err := signer(tt.object)
		if err == nil {
			t.Errorf("%s: signer with certificate %q, want an error", tt.object, g.Certificate().Subject.CommonName)
			continue
		}
		if tt.want != nil && !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%s: got %v, want %v naming %q", tt.object, err, tt.want, tt.text)
		}
	}
}
