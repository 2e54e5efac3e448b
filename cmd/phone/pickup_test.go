package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// issueBundle has a test card on SoftHSM vouch for phone and the back
// end's attestation key countersign, as the back office does.
func issueBundle(t *testing.T, man *testpki.Manifest, cardName string, phone ed25519.PublicKey) []byte {
	t.Helper()
	return issueBundleFor(t, man, cardName, phonecode.FromPublicKey(phone))
}

// issueBundleFor is a bundle for the phone with code.
func issueBundleFor(t *testing.T, man *testpki.Manifest, cardName string, code phonecode.Code) []byte {
	t.Helper()
	now := time.Now()
	tr, err := trustFromEnvForTest(t)
	if err != nil {
		t.Fatal(err)
	}
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		t.Fatal(err)
	}
	var cardURI string
	for _, c := range man.Cards {
		if c.Name == cardName {
			cardURI = c.SignURI
		}
	}
	cu, err := p11.ParseURI(cardURI)
	if err != nil {
		t.Fatal(err)
	}
	au, err := p11.ParseURI(man.Backend.AttestationURI)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := p11.Open(man.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	card, err := mod.Signer(cu, testpki.CardPIN)
	if err != nil {
		t.Fatal(err)
	}
	defer card.Close()
	card.SetPINPrompt(func() ([]byte, error) { return []byte(testpki.CardPIN), nil })
	att, err := mod.Signer(au, man.Backend.PIN)
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	cert := card.Certificate()
	id, err := v.VerifyCard(cert.Raw, uzi.PurposeVouch, now)
	if err != nil {
		t.Fatal(err)
	}
	var aid [protocol.AuthorizationIDLen]byte
	rand.Read(aid[:])
	st, err := protocol.NewStatement(tr.Jurisdiction, aid, code, now, "", cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	enc, sig, err := protocol.SignStatement(card, st)
	if err != nil {
		t.Fatal(err)
	}
	aenc, asig, err := protocol.Attest(att, enc, id, protocol.LicenseActive, st.ExpiresAt, now)
	if err != nil {
		t.Fatal(err)
	}
	return (&protocol.Bundle{Statement: enc, StatementSignature: sig, Cert: cert.Raw, Attestation: aenc, AttestationSignature: asig}).Marshal()
}

func trustFromEnvForTest(t *testing.T) (protocol.Trust, error) {
	return phoneTrust(t.Context(), time.Now())
}

// TestPickup polls a phone API that answers "pending" before "ready", then
// verifies the bundle offline; it refuses a tampered bundle, one for
// another phone, and one attested by a key it does not trust.
func TestPickup(t *testing.T) {
	man := testenv.Cards(t)
	for _, kv := range man.Env() {
		t.Setenv(kv[0], kv[1])
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "phone.key")
	priv, err := createKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	good := issueBundle(t, man, "gp", pub)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	forOther := issueBundle(t, man, "gp", otherPub)
	tampered := bytes.Clone(good)
	tampered[len(tampered)-10] ^= 1 // inside the attestation's signature

	tests := []struct {
		name    string
		bundle  []byte
		env     [2]string
		want    string
		pending int
	}{
		{"vouched after waiting", good, [2]string{}, "OK  bundle", 3},
		{"tampered", tampered, [2]string{}, "REFUSED  attestation-signature-invalid", 0},
		{"for another phone", forOther, [2]string{}, "REFUSED  code-mismatch", 0},
		{"attestation key not trusted", good, [2]string{"VOUCH_ATTESTATION_KEYS", man.Backend.ExportPub}, "REFUSED  attestation-unknown-key", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env[0] != "" {
				t.Setenv(tt.env[0], tt.env[1])
			}
			api := &fakeAPI{t: t, pending: tt.pending, bundle: tt.bundle}
			srv := httptest.NewServer(api)
			defer srv.Close()
			out := filepath.Join(t.TempDir(), "bundle.bin")
			var stdout bytes.Buffer
			err := realMain(context.Background(), []string{"pickup", "-key", keyFile, "-api", srv.URL, "-out", out, "-poll", "10ms", "-poll-max", "20ms", "-timeout", "20s"}, &stdout)
			if !strings.HasPrefix(stdout.String(), tt.want) {
				t.Errorf("output %q (err %v), want %q", stdout.String(), err, tt.want)
			}
			if api.pickups != tt.pending+1 {
				t.Errorf("%d pickups, want %d", api.pickups, tt.pending+1)
			}
			saved, rerr := os.ReadFile(out)
			if tt.want == "OK  bundle" {
				if err != nil || !bytes.Equal(saved, good) {
					t.Errorf("pickup: %v; saved %d bytes", err, len(saved))
				}
				return
			}
			var exit exitError
			if !errors.As(err, &exit) || exit != 1 {
				t.Errorf("refusal ended with %v, want exit status 1", err)
			}
			if !errors.Is(rerr, os.ErrNotExist) {
				t.Errorf("a refused bundle was saved: %v", rerr)
			}
		})
	}
	t.Run("never vouched", func(t *testing.T) {
		srv := httptest.NewServer(&fakeAPI{t: t, pending: 1 << 30})
		defer srv.Close()
		err := realMain(context.Background(), []string{"pickup", "-key", keyFile, "-api", srv.URL, "-out", filepath.Join(t.TempDir(), "b"), "-poll", "10ms", "-poll-max", "50ms", "-timeout", "300ms"}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "not vouched within") {
			t.Errorf("got %v", err)
		}
	})
}
