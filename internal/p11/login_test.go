package p11_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testpki"
)

// These tests log in and out of the shared test cards. PKCS#11 login state is
// per process, so they cannot disturb other test binaries, but they must not
// run in parallel with the other card tests of this package.

// signWith signs a digest and checks the signature.
func signWith(s *p11.Signer) ([]byte, error) {
	digest := sha256.Sum256([]byte("statement"))
	sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return sig, err
	}
	if err := rsa.VerifyPKCS1v15(s.Public().(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
		return nil, fmt.Errorf("signature does not verify: %w", err)
	}
	return sig, nil
}

func mustSigner(t *testing.T, m *p11.Module, uri string) *p11.Signer {
	t.Helper()
	u, err := p11.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Signer(u, testpki.CardPIN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestLoginWrongPINWhileLoggedIn: C_Login on a token already logged in
// answers CKR_USER_ALREADY_LOGGED_IN without looking at the PIN; a wrong PIN
// must still be refused, and the signers it logged out must say so.
func TestLoginWrongPINWhileLoggedIn(t *testing.T) {
	m, man := openModule(t)
	gp := card(t, man, "gp")
	first := mustSigner(t, m, gp.AuthURI)
	if _, err := signWith(first); err != nil {
		t.Fatal(err)
	}
	u, _ := p11.ParseURI(gp.AuthURI)
	wrong, err := m.Signer(u, "000000")
	if err == nil {
		wrong.Close()
		t.Fatal("a wrong PIN gave a signer, because the card was already logged in")
	}
	var pe *p11.PINError
	if !errors.As(err, &pe) {
		t.Fatalf("wrong PIN: got %v, want PINError", err)
	}
	if _, err := signWith(first); !errors.Is(err, p11.ErrLoggedOut) {
		t.Fatalf("sign after another's wrong PIN: got %v, want ErrLoggedOut", err)
	}
	// Nor does a logged-out signer ask for a PIN it could not use.
	sign := mustSigner(t, m, gp.SignURI)
	asked := 0
	sign.SetPINPrompt(func() ([]byte, error) { asked++; return []byte(testpki.CardPIN), nil })
	if _, err := m.Signer(u, "000000"); err == nil {
		t.Fatal("wrong PIN accepted")
	}
	if _, err := signWith(sign); !errors.Is(err, p11.ErrLoggedOut) || asked != 0 {
		t.Fatalf("logged-out signature key: got %v after %d prompts, want ErrLoggedOut and none", err, asked)
	}

	// The right PIN signs in again; the logged-out signer stays out.
	second := mustSigner(t, m, gp.AuthURI)
	if _, err := signWith(second); err != nil {
		t.Fatal(err)
	}
	if _, err := signWith(first); !errors.Is(err, p11.ErrLoggedOut) {
		t.Fatalf("stale signer after a new login: got %v, want ErrLoggedOut", err)
	}
	// A right PIN while a signer is open is checked too, and keeps it signed in.
	third := mustSigner(t, m, gp.AuthURI)
	for _, s := range []*p11.Signer{second, third} {
		if _, err := signWith(s); err != nil {
			t.Fatal(err)
		}
	}
	first.Close()
	if _, err := signWith(second); err != nil {
		t.Fatalf("closing a logged-out signer logged the others out: %v", err)
	}
}

// TestSignerCloseKeepsOthersLoggedIn: C_Logout logs out every session of the
// process on the token, so closing one signer must not log out the others.
func TestSignerCloseKeepsOthersLoggedIn(t *testing.T) {
	m, man := openModule(t)
	nurse := card(t, man, "nurse")
	a := mustSigner(t, m, nurse.AuthURI)
	b := mustSigner(t, m, nurse.AuthURI)
	a.Close()
	a.Close() // twice must not count twice
	if _, err := signWith(b); err != nil {
		t.Fatalf("sign after another signer closed: %v", err)
	}
	// The last one out logs out: a new signer needs the PIN again, and gets it checked.
	b.Close()
	u, _ := p11.ParseURI(nurse.AuthURI)
	if _, err := m.Signer(u, "000000"); err == nil {
		t.Fatal("wrong PIN accepted after every signer closed")
	}
}

// TestSignerPINPromptEverySignature: a CKA_ALWAYS_AUTHENTICATE key asks the
// prompt once per signature, and Sign wipes the PIN the prompt returned.
func TestSignerPINPromptEverySignature(t *testing.T) {
	m, man := openModule(t)
	s := mustSigner(t, m, card(t, man, "gp").SignURI)
	var given [][]byte
	s.SetPINPrompt(func() ([]byte, error) {
		pin := []byte(testpki.CardPIN)
		given = append(given, pin)
		return pin, nil
	})
	for i := range 3 {
		if _, err := signWith(s); err != nil {
			t.Fatalf("signature %d: %v", i, err)
		}
	}
	if len(given) != 3 {
		t.Errorf("prompt called %d times for 3 signatures", len(given))
	}
	for i, pin := range given {
		if !bytes.Equal(pin, make([]byte, len(pin))) {
			t.Errorf("PIN %d not wiped after use", i)
		}
	}
}

// TestSignerWrongPINAtSignature: a wrong per-signature PIN signs nothing and
// says how many tries are left; the next right one signs.
func TestSignerWrongPINAtSignature(t *testing.T) {
	m, man := openModule(t)
	gp := card(t, man, "gp")
	s := mustSigner(t, m, gp.SignURI)
	auth := mustSigner(t, m, gp.AuthURI)
	pin := "000000"
	s.SetPINPrompt(func() ([]byte, error) { return []byte(pin), nil })
	sig, err := signWith(s)
	var pe *p11.PINError
	if !errors.As(err, &pe) || sig != nil {
		t.Fatalf("wrong PIN at signature: got %x, %v; want PINError and nothing signed", sig, err)
	}
	pin = testpki.CardPIN
	if _, err := signWith(s); err != nil {
		t.Fatalf("right PIN after a wrong one: %v", err)
	}
	if _, err := signWith(auth); err != nil {
		t.Fatalf("a wrong signature PIN logged the card out: %v", err)
	}
}

// TestSignerNoPINPrompt: without a prompt (and without a PIN pad) a key that
// wants the PIN at every signature does not sign, whatever PIN logged in.
func TestSignerNoPINPrompt(t *testing.T) {
	m, man := openModule(t)
	s := mustSigner(t, m, card(t, man, "gp").SignURI)
	if sig, err := signWith(s); !errors.Is(err, p11.ErrPINNeeded) || sig != nil {
		t.Fatalf("no prompt: got %x, %v; want ErrPINNeeded", sig, err)
	}
	cancelled := errors.New("cancelled at the reader")
	s.SetPINPrompt(func() ([]byte, error) { return nil, cancelled })
	if sig, err := signWith(s); !errors.Is(err, cancelled) || sig != nil {
		t.Fatalf("cancelled prompt: got %x, %v", sig, err)
	}
	s.SetPINPrompt(func() ([]byte, error) { return []byte{}, nil })
	if _, err := signWith(s); !errors.Is(err, p11.ErrPINNeeded) {
		t.Fatalf("empty PIN without a pad: got %v, want ErrPINNeeded", err)
	}
	// Keys that do not ask again sign on the login alone.
	if _, err := signWith(mustSigner(t, m, card(t, man, "gp").AuthURI)); err != nil {
		t.Fatal(err)
	}
}

// TestSessionKeepsNoPIN: nothing reachable from a signer or its session holds
// the PIN after login and after a signature.
func TestSessionKeepsNoPIN(t *testing.T) {
	m, man := openModule(t)
	gp := card(t, man, "gp")
	for _, uri := range []string{gp.AuthURI, gp.SignURI} {
		s := mustSigner(t, m, uri)
		s.SetPINPrompt(func() ([]byte, error) { return []byte(testpki.CardPIN), nil })
		if _, err := signWith(s); err != nil {
			t.Fatal(err)
		}
		if path := findBytes(reflect.ValueOf(s), []byte(testpki.CardPIN), "signer", map[uintptr]bool{}); path != "" {
			t.Errorf("%s: the PIN is kept at %s", uri, path)
		}
	}
}

// findBytes walks v for a string or byte slice holding pin and returns where.
// It skips the certificate (whose DER may hold any digits), functions (the
// caller's prompt) and the module's C context.
func findBytes(v reflect.Value, pin []byte, path string, seen map[uintptr]bool) string {
	switch v.Kind() {
	case reflect.String:
		if bytes.Contains([]byte(v.String()), pin) {
			return path
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			if bytes.Contains(v.Bytes(), pin) {
				return path
			}
			return ""
		}
		for i := range v.Len() {
			if p := findBytes(v.Index(i), pin, path+"[]", seen); p != "" {
				return p
			}
		}
	case reflect.Array:
		for i := range v.Len() {
			if p := findBytes(v.Index(i), pin, path+"[]", seen); p != "" {
				return p
			}
		}
	case reflect.Pointer:
		if v.IsNil() || seen[v.Pointer()] {
			return ""
		}
		seen[v.Pointer()] = true
		return findBytes(v.Elem(), pin, path, seen)
	case reflect.Interface:
		if !v.IsNil() {
			return findBytes(v.Elem(), pin, path, seen)
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			if p := findBytes(it.Key(), pin, path+"{}", seen); p != "" {
				return p
			}
			if p := findBytes(it.Value(), pin, path+"{}", seen); p != "" {
				return p
			}
		}
	case reflect.Struct:
		switch v.Type().PkgPath() {
		case "crypto/x509", "github.com/miekg/pkcs11", "math/big", "crypto/rsa":
			return ""
		}
		for i := range v.NumField() {
			if p := findBytes(v.Field(i), pin, path+"."+v.Type().Field(i).Name, seen); p != "" {
				return p
			}
		}
	}
	return ""
}

// TestSignerConcurrentLogins: signers keep signing while others sign in (each
// login logs the token out and in again) and close; none of them notices.
func TestSignerConcurrentLogins(t *testing.T) {
	m, man := openModule(t)
	gp := card(t, man, "gp")
	signers := []*p11.Signer{mustSigner(t, m, gp.AuthURI), mustSigner(t, m, gp.SignURI)}
	signers[1].SetPINPrompt(func() ([]byte, error) { return []byte(testpki.CardPIN), nil })
	done := make(chan struct{})
	errs := make(chan error, len(signers))
	for _, s := range signers {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				if _, err := signWith(s); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range 5 {
		u, _ := p11.ParseURI(gp.AuthURI)
		s, err := m.Signer(u, testpki.CardPIN)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := signWith(s); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	close(done)
	for range signers {
		if err := <-errs; err != nil {
			t.Errorf("sign during other logins: %v", err)
		}
	}
}
