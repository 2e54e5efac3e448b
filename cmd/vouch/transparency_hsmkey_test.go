package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/transparency"
)

// TestTransparencyHSMLogKey: an Ed25519 key made on a SoftHSM token is the
// log's key by VOUCH_TRANSPARENCY_KEY_URI; `transparency keygen -uri`
// prints its verifier key, the one the writer signs with; config check
// refuses both a key file and a key URI, and a URI that does not parse.
func TestTransparencyHSMLogKey(t *testing.T) {
	man := testenv.Cards(t)
	mod, err := p11.Open(man.Module)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	label := fmt.Sprintf("vouch-cmd-log-%d", os.Getpid())
	// The back end's PIN for this token too: VOUCH_HSM_PIN is one PIN.
	if err := mod.InitToken(label, testpki.CardSOPIN, man.Backend.PIN); err != nil {
		t.Fatal(err)
	}
	s, err := mod.Login(p11.URI{Token: label}, man.Backend.PIN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GenerateKey(p11.KeySpec{Label: "log", ID: []byte{0x70}, Ed25519: true}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	uri := "pkcs11:token=" + label + ";object=log;type=private"

	t.Setenv("VOUCH_HSM_PIN", man.Backend.PIN)
	var out bytes.Buffer
	if err := realMain(context.Background(), []string{"transparency", "keygen", "-origin", "vouch.test/log", "-uri", uri}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	vkey := strings.TrimSpace(out.String())
	v, err := note.NewVerifier(vkey)
	if err != nil || v.Name() != "vouch.test/log" {
		t.Fatalf("keygen -uri printed %q: %v", vkey, err)
	}
	// -uri and -out together, or neither, is a usage error.
	if err := realMain(context.Background(), []string{"transparency", "keygen", "-origin", "vouch.test/log", "-uri", uri, "-out", filepath.Join(t.TempDir(), "k")}, io.Discard, io.Discard); err == nil {
		t.Error("keygen with -uri and -out: no error")
	}
	// The P-256 back-end key is not a log key.
	if err := realMain(context.Background(), []string{"transparency", "keygen", "-origin", "vouch.test/log", "-uri", man.Backend.ExportURI}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "Ed25519") {
		t.Errorf("keygen -uri of a P-256 key: %v", err)
	}

	cfg := transparencyWriterConfig{HSMKeyURI: man.Backend.ExportURI, HSMPIN: man.Backend.PIN}
	cfg.Log = transparency.Config{Dir: t.TempDir(), Origin: "vouch.test/log", KeyURI: uri, Interval: 1, AuditInterval: 1, CheckpointInterval: 1e9, Batch: 1}
	w, closeKeys, err := startTransparency(cfg, export.Config{}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	closeKeys()
	if w.LogVerifierKey() != vkey {
		t.Fatalf("the writer signs with %s, keygen -uri printed %s", w.LogVerifierKey(), vkey)
	}

	keyFile := filepath.Join(t.TempDir(), "log.key")
	if err := realMain(context.Background(), []string{"transparency", "keygen", "-origin", "vouch.test/log", "-out", keyFile}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	base := []string{"DATABASE_URL=postgres://vouch@127.0.0.1/vouch", "VOUCH_TRANSPARENCY_DIR=/var/lib/vouch/export/log",
		"VOUCH_TRANSPARENCY_ORIGIN=vouch.test/log", "VOUCH_TRANSPARENCY_HSM_KEY_URI=pkcs11:token=vouch-backend;object=transparency", "VOUCH_HSM_PIN=1234"}
	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"key in the HSM", append(slices.Clone(base), "VOUCH_TRANSPARENCY_KEY_URI="+uri), ""},
		{"key file", append(slices.Clone(base), "VOUCH_TRANSPARENCY_KEY_FILE="+keyFile), ""},
		{"both", append(slices.Clone(base), "VOUCH_TRANSPARENCY_KEY_URI="+uri, "VOUCH_TRANSPARENCY_KEY_FILE="+keyFile), "not both"},
		{"neither", base, "VOUCH_TRANSPARENCY_KEY_FILE or VOUCH_TRANSPARENCY_KEY_URI"},
		{"bad URI", append(slices.Clone(base), "VOUCH_TRANSPARENCY_KEY_URI=http://x"), "VOUCH_TRANSPARENCY_KEY_URI"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, kv := range os.Environ() {
				if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "VOUCH_") || k == "DATABASE_URL" {
					t.Setenv(k, "")
					os.Unsetenv(k)
				}
			}
			for _, kv := range c.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			problems := checkRole(context.Background(), "transparency", checkTransparencyLog, c.env)
			text := fmt.Sprint(problems)
			if c.want == "" && len(problems) > 0 || c.want != "" && !strings.Contains(text, c.want) {
				t.Fatalf("problems %s, want one naming %q", text, c.want)
			}
		})
	}
}
