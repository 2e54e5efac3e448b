package p11_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
)

// parseURITests is TestParseURI's table and FuzzParseURI's seed corpus.
var parseURITests = []struct {
	in   string
	want p11.URI
	err  bool
}{
	{"pkcs11:token=vouch-gp;object=sign;id=%02;type=private?module-name=softhsm2&module-path=/usr/lib/x.so",
		p11.URI{Token: "vouch-gp", Object: "sign", ID: []byte{2}, Type: "private", ModulePath: "/usr/lib/x.so"}, false},
	{"pkcs11:serial=abc123;id=%01%FF", p11.URI{Serial: "abc123", ID: []byte{1, 0xff}}, false},
	{"pkcs11:token=My%20Card;manufacturer=SoftHSM", p11.URI{Token: "My Card"}, false},
	// Percent-encoded, '&', '=' and '?' are meant, and kept.
	{"pkcs11:token=a%26b%3Dc%3Fd?module-path=/x%3Fy.so", p11.URI{Token: "a&b=c?d", ModulePath: "/x?y.so"}, false},
	{"pkcs11:object=sign", p11.URI{}, true},         // no token
	{"pkcs11:token=a;tokn=b", p11.URI{}, true},      // typo refused
	{"pkcs11:token=a;type=secret", p11.URI{}, true}, // unsupported type
	{"pkcs11:token=%zz", p11.URI{}, true},
	{"http://x", p11.URI{}, true},
	{"pkcs11:token=t?module-path=/x.so;pin-value=1234", p11.URI{}, true}, // a ";" would hide the PIN in module-path
	{"pkcs11:token=t?pin-value=1234", p11.URI{}, true},                   // PINs never come from a URI
	{"pkcs11:token=t?pin-source=/run/pin", p11.URI{}, true},
	{"pkcs11:token=t;pin-value=1234", p11.URI{}, true},
	{"pkcs11:token=t?module-path=/x.so?pin-value=1234", p11.URI{}, true}, // a second '?'
	{"pkcs11:token=t&pin-value=1234", p11.URI{}, true},                   // '&' and '=' in a path value
	{"pkcs11:token=t?module-path=/x.so=1234", p11.URI{}, true},           // '=' in a query value
	{"pkcs11:token=t?module-pth=/x.so", p11.URI{}, true},                 // unknown query attribute
}

func TestParseURI(t *testing.T) {
	t.Parallel()
	for _, tt := range parseURITests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := p11.ParseURI(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if tt.err {
				return
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			again, err := p11.ParseURI(got.String())
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(got, again); d != "" {
				t.Errorf("String round trip (-want +got):\n%s", d)
			}
		})
	}
}

// TestParseURIKeepsPINOut: a PIN typed into a URI, however mistyped, is
// refused, and neither the error nor anything made from the URI shows it.
// The inputs are the reviewer's, which once put the PIN into an error, a
// token label or a module path (and from there into "card not found" and
// "cannot load module").
func TestParseURIKeepsPINOut(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, attr string }{
		{"pkcs11:token=vouch-gp?pin-value=98&7654", "pin-value"},
		{"pkcs11:token=vouch-gp&pin-value=98&7654", ""},
		{"pkcs11:token=vouch-gp?module-path=/usr/lib/softhsm/libsofthsm2.so?pin-value=987654", ""},
		{"pkcs11:token=vouch-gp?pin-value=987654", "pin-value"},
		{"pkcs11:token=vouch-gp?module-path=/x.so&pin-source=/run/987654", "pin-source"},
		{"pkcs11:token=vouch-gp;pin-value=987654", "pin-value"},
		{"pkcs11:token=vouch-gp?pin-value=98%zz7654", "pin-value"},
		{"pkcs11:token=vouch-gp?987654", ""},
		{"pkcs11:token=vouch-gp?987654=1", ""},
		{"pkcs11:token=vouch-gp;987654", ""},
		{"pkcs11:token=vouch-gp;type=987654", ""},
		{"pkcs11:token=vouch-gp;object=98%zz7654", ""},
		{"pkcs11:token=vouch-gp?module-path=/x.so=987654", ""},
		{"pkcs11:token=vouch-gp?module-path=/x.so;pin-value=987654", ""},
	} {
		u, err := p11.ParseURI(tt.in)
		if err == nil {
			t.Errorf("ParseURI(%q) = %s, want an error", tt.in, u)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "7654") || strings.Contains(msg, "987654") {
			t.Errorf("ParseURI(%q) error shows the PIN: %s", tt.in, msg)
		}
		if tt.attr != "" && !strings.Contains(err.Error(), tt.attr+" refused: PINs are never taken from a URI") {
			t.Errorf("ParseURI(%q) error does not name %s as refused: %v", tt.in, tt.attr, err)
		}
	}
}

// FuzzParseURI: ParseURI never panics; what it accepts renders with String
// and parses back to the same URI; any input holding "pin-value=" or
// "pin-source=" is refused; and no error ever shows a PIN, checked with a
// marker PIN put after "pin-value=" at every place of each input.
func FuzzParseURI(f *testing.F) {
	for _, tt := range parseURITests {
		f.Add(tt.in)
	}
	f.Add("pkcs11:token=a;id=")
	f.Add("pkcs11:token=a?pin-source=/run/pin&module-name=softhsm2")
	f.Add("pkcs11x:token=a?pin-value=1234")
	f.Add("pkcs11:token=a?pin-value=12%zz")
	f.Add("pkcs11:token=a?module-path=/x.so")
	f.Add("pkcs11:token=a;object=b")
	const marker = "Marker-PIN-4711"
	f.Fuzz(func(t *testing.T, in string) {
		u, err := p11.ParseURI(in)
		if err == nil {
			if strings.Contains(in, "pin-value=") || strings.Contains(in, "pin-source=") {
				t.Fatalf("ParseURI(%q) accepted a PIN attribute: %s", in, u)
			}
			s := u.String()
			again, err := p11.ParseURI(s)
			if err != nil {
				t.Fatalf("ParseURI(%q) (from %q): %v", s, in, err)
			}
			if d := cmp.Diff(u, again); d != "" {
				t.Fatalf("%q -> %q round trip (-want +got):\n%s", in, s, d)
			}
		}
		if strings.Contains(in, marker) || len(in) > 256 {
			return // the marker must be ours; long inputs would take long
		}
		// Wherever the PIN lands (path, query, a value, a name, before
		// or after a mistyped separator), ParseURI refuses it unseen.
		for i := 0; i <= len(in); i++ {
			for _, pin := range []string{marker, marker + "%zz", marker + "&x", marker + ";x", marker + "?x"} {
				for _, sep := range []string{"", "?", "&", ";"} {
					withPIN := in[:i] + sep + "pin-value=" + pin + in[i:]
					u, err := p11.ParseURI(withPIN)
					if err == nil {
						t.Fatalf("ParseURI(%q) = %s, accepted a PIN", withPIN, u)
					}
					if strings.Contains(err.Error(), marker) {
						t.Fatalf("ParseURI(%q) error shows the PIN: %v", withPIN, err)
					}
				}
			}
		}
	})
}

func openModule(t *testing.T) (*p11.Module, *testpki.Manifest) {
	t.Helper()
	man := testenv.Cards(t)
	m, err := p11.Open(man.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, man
}

func card(t *testing.T, man *testpki.Manifest, name string) testpki.ManifestCard {
	t.Helper()
	for _, c := range man.Cards {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no card %s", name)
	return testpki.ManifestCard{}
}

func TestCardSigning(t *testing.T) {
	m, man := openModule(t)
	gp := card(t, man, "gp")
	digest := sha256.Sum256([]byte("statement"))
	for _, uri := range []string{gp.AuthURI, gp.SignURI} {
		u, err := p11.ParseURI(uri)
		if err != nil {
			t.Fatal(err)
		}
		s, err := m.Signer(u, testpki.CardPIN)
		if err != nil {
			t.Fatalf("%s: %v", uri, err)
		}
		// The signature key asks for the PIN again; the other never calls this.
		s.SetPINPrompt(func() ([]byte, error) { return []byte(testpki.CardPIN), nil })
		if s.Certificate() == nil || s.Certificate().Subject.SerialNumber != gp.UZI {
			t.Fatalf("%s: certificate missing or not the card's", uri)
		}
		sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatalf("%s: sign: %v", uri, err)
		}
		if err := rsa.VerifyPKCS1v15(s.Public().(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
			t.Errorf("%s: signature does not verify: %v", uri, err)
		}
		if _, err := s.Sign(rand.Reader, digest[:20], crypto.SHA1); err == nil {
			t.Error("SHA-1 signed")
		}
		s.Close()
	}
}

func TestBackendECDSA(t *testing.T) {
	m, man := openModule(t)
	for _, uri := range []string{man.Backend.ExportURI, man.Backend.AttestationURI} {
		u, err := p11.ParseURI(uri)
		if err != nil {
			t.Fatal(err)
		}
		s, err := m.Signer(u, man.Backend.PIN)
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256([]byte("export"))
		sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
			t.Errorf("%s: ECDSA signature does not verify", uri)
		}
		s.Close()
	}
}

func TestLoginErrors(t *testing.T) {
	m, man := openModule(t)
	gp := card(t, man, "gp")
	u, _ := p11.ParseURI(gp.SignURI)

	_, err := m.Signer(u, "000000")
	var pe *p11.PINError
	if !errors.As(err, &pe) {
		t.Fatalf("wrong PIN: got %v, want PINError", err)
	}
	if pe.Error() == "" || pe.TriesLeft == 0 {
		t.Errorf("PIN error says nothing useful: %+v", pe)
	}
	if _, err := m.Signer(u, ""); err == nil {
		t.Error("empty PIN accepted on a token without a PIN pad")
	}
	if _, err := m.Signer(p11.URI{Token: "vouch-no-such-card"}, testpki.CardPIN); !errors.Is(err, p11.ErrTokenNotFound) {
		t.Errorf("absent card: got %v, want ErrTokenNotFound", err)
	}
	if _, err := m.Signer(p11.URI{Token: gp.Token, Object: "nope"}, testpki.CardPIN); !errors.Is(err, p11.ErrKeyNotFound) {
		t.Errorf("absent key: got %v, want ErrKeyNotFound", err)
	}
	// The correct PIN still works after a wrong one.
	s, err := m.Signer(u, testpki.CardPIN)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestPINErrorMessages(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		tries int
		want  string
	}{
		{1, "one try left"}, {2, "few tries left"}, {-1, "does not say"},
	} {
		if got := (&p11.PINError{TriesLeft: tt.tries}).Error(); !strings.Contains(got, tt.want) {
			t.Errorf("TriesLeft %d: %q lacks %q", tt.tries, got, tt.want)
		}
	}
}

// TestRemovedToken pulls a card while a session is open: signing must fail
// with ErrTokenRemoved, promptly, and keep failing.
func TestRemovedToken(t *testing.T) {
	m, man := openModule(t)
	label := fmt.Sprintf("vouch-pulled-%d", os.Getpid())
	if err := m.InitToken(label, testpki.CardSOPIN, testpki.CardPIN); err != nil {
		t.Fatal(err)
	}
	s, err := m.Login(p11.URI{Token: label}, testpki.CardPIN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GenerateKey(p11.KeySpec{Label: "k", ID: []byte{9}}); err != nil {
		t.Fatal(err)
	}
	sig, err := s.Signer(p11.URI{ID: []byte{9}})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	if _, err := sig.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("softhsm2-util", "--delete-token", "--token", label)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+man.SoftHSMConf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("delete token: %v: %s", err, out)
	}
	_, err = sig.Sign(rand.Reader, digest[:], crypto.SHA256)
	if !errors.Is(err, p11.ErrTokenRemoved) {
		t.Fatalf("sign after removal: got %v, want ErrTokenRemoved", err)
	}
	if _, err := m.Signer(p11.URI{Token: label}, testpki.CardPIN); !errors.Is(err, p11.ErrTokenNotFound) {
		t.Errorf("new signer after removal: got %v, want ErrTokenNotFound", err)
	}
	s.Close()
}

// TestOpenTwice: one module named by two URIs (vouch bundle issue opens the
// card's and the attestation key's module each) loads once; closing one
// Module leaves the other working.
func TestOpenTwice(t *testing.T) {
	m, man := openModule(t)
	again, err := p11.Open(man.Module)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.FindToken(p11.URI{Token: man.Backend.Token}); err != nil {
		t.Fatalf("after closing the second Open: %v", err)
	}
	if _, err := p11.Open("/nonexistent/libvouch-bogus-pkcs11.so"); err == nil || !strings.Contains(err.Error(), "cannot load module /nonexistent/libvouch-bogus-pkcs11.so") {
		t.Errorf("bogus module: %v", err)
	}
}
