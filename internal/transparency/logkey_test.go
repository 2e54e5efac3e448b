package transparency

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"

	flog "github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
)

// hsmLogKey makes an Ed25519 key on a new SoftHSM token and opens it as
// the log key; it returns the key and its pkcs11: URI.
func hsmLogKey(t testing.TB) (*p11.Signer, string) {
	t.Helper()
	man := testenv.Cards(t)
	mod, err := p11.Open(man.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mod.Close() })
	label := fmt.Sprintf("vouch-log-%d-%d", os.Getpid(), len(t.Name()))
	if err := mod.InitToken(label, testpki.CardSOPIN, testpki.CardPIN); err != nil {
		t.Fatal(err)
	}
	s, err := mod.Login(p11.URI{Token: label}, testpki.CardPIN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, err := s.GenerateKey(p11.KeySpec{Label: "log", ID: []byte{0x70}, Ed25519: true}); err != nil {
		t.Fatal(err)
	}
	u := "pkcs11:token=" + label + ";object=log;type=private"
	pu, err := p11.ParseURI(u)
	if err != nil {
		t.Fatal(err)
	}
	key, err := mod.Signer(pu, testpki.CardPIN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(key.Close)
	return key, u
}

// TestHSMLogKeyCheckpoint runs the writer with its Ed25519 key in SoftHSM
// (VOUCH_TRANSPARENCY_KEY_URI) and checks the published checkpoint with
// code that is not the writer's: x/mod's note verifier and
// transparency-dev/formats' checkpoint parser, both from the verifier key
// alone; a one-byte change in the text or in the signature fails both.
func TestHSMLogKeyCheckpoint(t *testing.T) {
	t.Parallel()
	key, u := hsmLogKey(t)
	db := testenv.Database(t)
	dir := t.TempDir()
	cfg := testConfig(dir, "")
	cfg.KeyURI = u
	w, err := NewWriter(cfg, db, testLog(), WithLogKey(key))
	if err != nil {
		t.Fatal(err)
	}
	vkey := w.LogVerifierKey()
	pub := key.Public().(ed25519.PublicKey)
	if want := "+" + base64.StdEncoding.EncodeToString(append([]byte{0x01}, pub...)); !strings.HasPrefix(vkey, testOrigin+"+") || !strings.HasSuffix(vkey, want) {
		t.Fatalf("verifier key %s is not the HSM key's under the origin", vkey)
	}
	insertAuthorizations(t, db, 5)
	appendAudit(t, db, 1)
	runWriter(t, w)
	waitLogged(t, db, dir, vkey, 6)
	raw := checkpointFile(t, dir)

	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(raw, note.VerifierList(v)); err != nil {
		t.Fatalf("x/mod note: %v\n%s", err, raw)
	}
	fv, err := fnote.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, _, err := flog.ParseCheckpoint(raw, testOrigin, fv)
	if err != nil {
		t.Fatalf("formats: %v", err)
	}
	if cp.Size != 6 {
		t.Fatalf("checkpoint size %d, want 6", cp.Size)
	}

	text, sigs, _ := bytes.Cut(raw, []byte("\n\n"))
	line := string(bytes.TrimSuffix(sigs, []byte("\n")))
	name, b64, _ := strings.Cut(strings.TrimPrefix(line, "— "), " ")
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(sig) != 4+ed25519.SignatureSize {
		t.Fatalf("signature line %q", line)
	}
	changedSig := bytes.Clone(sig)
	changedSig[len(changedSig)-1] ^= 1
	changedText := bytes.Clone(text)
	changedText[len(testOrigin)+1] ^= 1 // the size's first digit
	for what, bad := range map[string][]byte{
		"text":      append(append(changedText, "\n\n"...), sigs...),
		"signature": fmt.Appendf(nil, "%s\n\n— %s %s\n", text, name, base64.StdEncoding.EncodeToString(changedSig)),
	} {
		if _, err := note.Open(bad, note.VerifierList(v)); err == nil {
			t.Errorf("x/mod note verifies the checkpoint with a changed %s", what)
		}
		if _, _, _, err := flog.ParseCheckpoint(bad, testOrigin, fv); err == nil {
			t.Errorf("formats verifies the checkpoint with a changed %s", what)
		}
	}
}

// TestLogKeyConfig: exactly one of the key file and the HSM key's URI; the
// HSM key must be Ed25519 and be given when its URI is set.
func TestLogKeyConfig(t *testing.T) {
	t.Parallel()
	skey, _ := newKey(t, testOrigin)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p256 := backendKey(t)
	for _, tt := range []struct {
		name, key, uri string
		opts           []Option
		want           string
	}{
		{"neither", "", "", nil, "VOUCH_TRANSPARENCY_KEY_FILE or VOUCH_TRANSPARENCY_KEY_URI"},
		{"both", skey, "pkcs11:token=t;object=log", []Option{WithLogKey(ed)}, "not both"},
		{"URI without the key", "", "pkcs11:token=t;object=log", nil, "no key from the HSM"},
		{"key without the URI", skey, "", []Option{WithLogKey(ed)}, "needs VOUCH_TRANSPARENCY_KEY_URI"},
		{"P-256 key", "", "pkcs11:token=t;object=log", []Option{WithLogKey(p256)}, "must be an Ed25519 key"},
		{"file", skey, "", nil, ""},
		{"HSM", "", "pkcs11:token=t;object=log", []Option{WithLogKey(ed)}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t.TempDir(), tt.key)
			cfg.KeyURI = tt.uri
			_, err := NewWriter(cfg, nil, testLog(), tt.opts...)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("NewWriter: %v, want %q", err, tt.want)
			}
		})
	}
}

// wrongEd25519 signs with another key than the one it shows.
type wrongEd25519 struct {
	ed25519.PrivateKey
	shown ed25519.PublicKey
}

func (k wrongEd25519) Public() crypto.PublicKey { return k.shown }

// TestLogKeySignatureChecked: a log key whose signature does not verify
// under the key it shows publishes nothing; the key hash is signed-note's.
func TestLogKeySignatureChecked(t *testing.T) {
	t.Parallel()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	s, _, err := newEd25519Signer(testOrigin, wrongEd25519{priv, other})
	if err != nil {
		t.Fatal(err)
	}
	if sig, err := s.Sign([]byte("x\n")); err == nil {
		t.Fatalf("signature %x by another key accepted", sig)
	}
	good, vkey, err := newEd25519Signer(testOrigin, priv)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if v.KeyHash() != good.KeyHash() || v.Name() != good.Name() {
		t.Fatalf("key hash %08x, x/mod's %08x", good.KeyHash(), v.KeyHash())
	}
}
