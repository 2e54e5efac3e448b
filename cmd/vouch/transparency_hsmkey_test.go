package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
// prints its verifier key, the one the writer signs with (config check:
// TestTransparencyConfigCheck).
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
}
