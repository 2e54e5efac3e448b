package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/registry"
)

// TestIssueWithSoftHSMCards signs bundles with the real test cards on
// SoftHSM and the back end's attestation key, then verifies them as support
// staff would.
func TestIssueWithSoftHSMCards(t *testing.T) {
	man := testenv.Cards(t)
	files := man.TrustFiles()
	t.Setenv("VOUCH_CARD_PROFILE", "test")
	t.Setenv("VOUCH_UZI_ROOTS", strings.Join(files.Roots, ","))
	t.Setenv("VOUCH_UZI_CAS", files.CAsEnv())
	t.Setenv("VOUCH_UZI_CRLS", strings.Join(files.CRLs, ","))
	t.Setenv("VOUCH_ATTESTATION_KEYS", man.Backend.AttestationPub)
	t.Setenv("VOUCH_CARD_PIN", testpki.CardPIN)
	t.Setenv("VOUCH_HSM_PIN", man.Backend.PIN)
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	t.Setenv("VOUCH_REGISTRY_URL", l.URL)
	t.Setenv("VOUCH_REGISTRY_BIND_DN", l.BindDN)
	t.Setenv("VOUCH_REGISTRY_BIND_PASSWORD", l.BindPassword)

	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	code := phonecode.FromPublicKey(pub).String()
	cardURI := func(name string) string {
		for _, c := range man.Cards {
			if c.Name == name {
				return c.SignURI
			}
		}
		t.Fatalf("no card %s", name)
		return ""
	}
	run2 := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := realMain(context.Background(), args, &out, &errOut)
		return out.String(), errOut.String(), err
	}
	run := func(args ...string) (string, error) {
		out, errOut, err := run2(args...)
		return out + errOut, err
	}
	// Cards that may vouch get a bundle that verifies; the others are
	// refused before anything is signed or written.
	tests := []struct {
		card string
		want string // verdict line
	}{
		{"gp", "OK"},
		{"nurse", "OK"},
		{"staff", "REFUSED  card-staff"},
		{"nameless", "REFUSED  card-nameless"},
		{"server", "REFUSED  card-server"},
		{"pharmacist", "REFUSED  card-role-not-allowed"},
		{"revoked", "REFUSED  cert-revoked"},
		{"expired", "REFUSED  cert-expired"},
		{"unknownca", "REFUSED  chain-unknown-ca"},
		{"gp-prodlike", "REFUSED  card-wrong-profile"},
		{"suspended", "REFUSED  license-suspended"},
	}
	for _, tt := range tests {
		t.Run(tt.card, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "bundle")
			out, errOut, err := run2("bundle", "issue", "-card", cardURI(tt.card), "-attestation", man.Backend.AttestationURI, "-code", code, "-out", file)
			if tt.want != "OK" {
				var exit exitError
				if !errors.As(err, &exit) || exit != 1 || !strings.HasPrefix(out, tt.want) {
					t.Errorf("issue: %v\n%s%s\nwant %s", err, out, errOut, tt.want)
				}
				// The reason alone, in words: no error chain before or
				// after it (that is for -v).
				if errOut != "" || strings.Count(out, "\n") != 2 || strings.Contains(out, "cause") {
					t.Errorf("a refusal says more than its reason:\nstdout:\n%s\nstderr:\n%s", out, errOut)
				}
				if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a refused card's bundle was written: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("issue: %v\n%s%s", err, out, errOut)
			}
			out, _ = run("bundle", "verify", "-phone-key", hex.EncodeToString(pub), file)
			if !strings.HasPrefix(out, tt.want) {
				t.Errorf("verdict:\n%s\nwant %s", out, tt.want)
			}
		})
	}
	// -v adds the technical cause after the reason; in Dutch the reason
	// uses the pages' word for vouching.
	t.Run("staff card, -v, in Dutch", func(t *testing.T) {
		t.Setenv("LC_ALL", "")
		t.Setenv("LC_MESSAGES", "")
		t.Setenv("LANG", "nl_NL.UTF-8")
		out, errOut, err := run2("bundle", "issue", "-v", "-card", cardURI("staff"), "-attestation", man.Backend.AttestationURI, "-code", code, "-out", filepath.Join(t.TempDir(), "b"))
		lines := strings.Split(out, "\n")
		if err != exitError(1) || errOut != "" || len(lines) < 3 || lines[0] != "REFUSED  card-staff" || !strings.HasPrefix(lines[2], "cause: ") {
			t.Errorf("issue -v: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
		}
		if !strings.Contains(lines[1], "instaan") || strings.Contains(out, "autoriseren") {
			t.Errorf("the Dutch reason does not say instaan, as the pages do: %q", lines[1])
		}
	})
	// -publish puts each code's bundle in the authorizations bucket of a
	// running bus under the back office's key, for the phones to pick up;
	// several codes come from -code and -codes together.
	t.Run("publish", func(t *testing.T) {
		const token = "bundle-issue-test-token-0123456789abcdef"
		b, err := bus.Start(t.Context(), bus.Config{StoreDir: t.TempDir(), Listen: true, Host: "127.0.0.1", Port: -1, Token: token, Name: "issue-test"})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		t.Setenv("NATS_URL", b.ClientURL())
		t.Setenv("VOUCH_BUS_TOKEN", token)
		t.Setenv("VOUCH_AUTHORIZATION_BUCKET", "authz-test")
		var phones []ed25519.PublicKey
		var codes []string
		for range 3 {
			p, _, _ := ed25519.GenerateKey(rand.Reader)
			phones = append(phones, p)
			codes = append(codes, phonecode.FromPublicKey(p).String())
		}
		codesFile := filepath.Join(t.TempDir(), "codes.txt")
		if err := os.WriteFile(codesFile, []byte(codes[1]+"\n\n"+codes[2]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := run("bundle", "issue", "-card", cardURI("gp"), "-attestation", man.Backend.AttestationURI, "-code", codes[0], "-codes", codesFile, "-publish")
		if err != nil || !strings.Contains(out, "published 3 bundles to bucket authz-test") {
			t.Fatalf("issue -publish: %v\n%s", err, out)
		}
		kv, err := b.ExpiringBucket(t.Context(), "authz-test", "test", protocol.MaxValidity)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := trustFromEnv(t)
		if err != nil {
			t.Fatal(err)
		}
		v, err := protocol.NewVerifier(tr)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range phones {
			raw, err := kv.Get(t.Context(), backoffice.BucketKey(phonecode.FromPublicKey(p)))
			if err != nil || raw == nil {
				t.Fatalf("phone %d: no bundle in the bucket: %v", i, err)
			}
			// The phone's own key verifies it: the bundle is for its code.
			if _, err := v.Verify(raw, p, time.Now()); err != nil {
				t.Errorf("phone %d: published bundle does not verify: %v", i, err)
			}
			if _, err := v.Verify(raw, phones[(i+1)%len(phones)], time.Now()); err == nil {
				t.Errorf("phone %d: bundle verifies for another phone", i)
			}
		}
		t.Setenv("NATS_URL", "")
		if _, err := run("bundle", "issue", "-card", cardURI("gp"), "-attestation", man.Backend.AttestationURI, "-code", codes[0], "-publish"); err == nil || !strings.Contains(err.Error(), "NATS_URL") {
			t.Errorf("-publish without a bus: %v", err)
		}
	})
	t.Run("several codes to a directory", func(t *testing.T) {
		p1, _, _ := ed25519.GenerateKey(rand.Reader)
		c1 := phonecode.FromPublicKey(p1)
		dir := filepath.Join(t.TempDir(), "bundles")
		out, err := run("bundle", "issue", "-card", cardURI("gp"), "-attestation", man.Backend.AttestationURI, "-code", code+","+c1.String(), "-out", dir)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		out, _ = run("bundle", "verify", "-phone-key", hex.EncodeToString(p1), filepath.Join(dir, c1.Compact()+".bundle"))
		if !strings.HasPrefix(out, "OK") {
			t.Errorf("verdict:\n%s", out)
		}
	})
	t.Run("no register", func(t *testing.T) {
		t.Setenv("VOUCH_REGISTRY_URL", "")
		_, err := run("bundle", "issue", "-card", cardURI("gp"), "-attestation", man.Backend.AttestationURI, "-code", code, "-out", filepath.Join(t.TempDir(), "b"))
		if err == nil || !strings.Contains(err.Error(), "VOUCH_REGISTRY_URL") {
			t.Errorf("attested without a register: %v", err)
		}
	})
	t.Run("roots outside the test PKI", func(t *testing.T) {
		t.Setenv("VOUCH_UZI_ROOTS", man.CAs[testpki.CACareProvider])
		_, err := run("bundle", "issue", "-card", cardURI("gp"), "-attestation", man.Backend.AttestationURI, "-code", code, "-out", filepath.Join(t.TempDir(), "b"))
		if err == nil || !strings.Contains(err.Error(), "not a root of the test PKI") {
			t.Errorf("got %v", err)
		}
	})

	// Each URI's module-path is honoured: a module that cannot load is
	// named, for the key whose URI names it, while the other loads fine.
	t.Run("module of each URI", func(t *testing.T) {
		const bogus = "/nonexistent/libvouch-bogus-pkcs11.so"
		withModule := func(uri string) string {
			u, err := p11.ParseURI(uri)
			if err != nil {
				t.Fatal(err)
			}
			u.ModulePath = bogus
			return u.String()
		}
		for _, tt := range []struct{ name, card, att, want string }{
			{"attestation", cardURI("gp"), withModule(man.Backend.AttestationURI), "attestation key: p11: cannot load module " + bogus},
			{"card", withModule(cardURI("gp")), man.Backend.AttestationURI, "card: p11: cannot load module " + bogus},
		} {
			file := filepath.Join(t.TempDir(), "b")
			out, err := run("bundle", "issue", "-card", tt.card, "-attestation", tt.att, "-code", code, "-out", file)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: got %v\n%s\nwant %q", tt.name, err, out, tt.want)
			}
			if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: a bundle was written: %v", tt.name, err)
			}
		}
	})
	t.Run("wrong PIN", func(t *testing.T) {
		t.Setenv("VOUCH_CARD_PIN", "999999")
		_, err := run("bundle", "issue", "-card", cardURI("gp"), "-attestation", man.Backend.AttestationURI, "-code", code, "-out", filepath.Join(t.TempDir(), "b"))
		if err == nil || !strings.Contains(err.Error(), "wrong PIN") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("mistyped code", func(t *testing.T) {
		bad := "0" + code[1:]
		if bad == code {
			bad = "1" + code[1:]
		}
		_, err := run("bundle", "issue", "-card", cardURI("gp"), "-attestation", man.Backend.AttestationURI, "-code", bad, "-out", filepath.Join(t.TempDir(), "b"))
		if !errors.Is(err, phonecode.ErrCheck) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("production profile refuses", func(t *testing.T) {
		t.Setenv("VOUCH_CARD_PROFILE", "production")
		_, err := run("bundle", "issue", "-card", cardURI("gp"), "-attestation", man.Backend.AttestationURI, "-code", code, "-out", filepath.Join(t.TempDir(), "b"))
		if err == nil || !strings.Contains(err.Error(), "test card profile") {
			t.Errorf("got %v", err)
		}
	})
}

// trustFromEnv is the trust the test's environment configures.
func trustFromEnv(t *testing.T) (protocol.Trust, error) {
	var cfg issueConfig
	if err := loadConfig(t.Context(), &cfg); err != nil {
		return protocol.Trust{}, err
	}
	return cfg.Trust.Load(time.Now())
}
