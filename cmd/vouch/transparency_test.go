package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/cdn"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestTransparencyCommands: keygen makes the key; `transparency log` logs
// the stored authorizations into log/ of the export directory; the origin
// (internal/cdn, unchanged) serves the log as it is; `transparency monitor`
// follows it through the origin and prints today's count, twice (the
// second from its state); `transparency audit` proves every authorization.
func TestTransparencyCommands(t *testing.T) {
	db := testenv.Database(t)
	t.Setenv("DATABASE_URL", db.Pool().Config().ConnString())
	exportDir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "log.key")
	run := func(args ...string) (string, error) {
		var stdout, stderr bytes.Buffer
		err := realMain(context.Background(), append([]string{"transparency"}, args...), &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}
	out, err := run("keygen", "-origin", "vouch.test/log", "-out", keyFile)
	if err != nil || !strings.HasPrefix(out, "vouch.test/log+") {
		t.Fatalf("keygen: %v %q", err, out)
	}
	vkey := strings.TrimSpace(out)
	if out, err := run("keygen", "-origin", "vouch.test/log", "-out", keyFile); err == nil {
		t.Fatalf("keygen over an existing key: %q", out)
	}
	t.Setenv("VOUCH_TRANSPARENCY_DIR", filepath.Join(exportDir, "log"))
	t.Setenv("VOUCH_TRANSPARENCY_ORIGIN", "vouch.test/log")
	t.Setenv("VOUCH_TRANSPARENCY_KEY_FILE", keyFile)
	t.Setenv("VOUCH_TRANSPARENCY_INTERVAL", "50ms")
	t.Setenv("VOUCH_TRANSPARENCY_CHECKPOINT_INTERVAL", "100ms")
	t.Setenv("VOUCH_TRANSPARENCY_LEASE", "2s")
	// Without the back end's HSM key, the writer does not start.
	if err := realMain(context.Background(), []string{"transparency", "log"}, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "VOUCH_TRANSPARENCY_HSM_KEY_URI") {
		t.Fatalf("transparency log without an HSM key: %v", err)
	}
	man := testenv.Cards(t)
	t.Setenv("VOUCH_TRANSPARENCY_HSM_KEY_URI", man.Backend.ExportURI)
	t.Setenv("VOUCH_HSM_PIN", man.Backend.PIN)

	ctx := context.Background()
	rows := make([][]any, 12)
	for i := range rows {
		var id [16]byte
		rand.Read(id[:])
		rows[i] = []any{id, make([]byte, 10), []byte{byte(i)}, "900000024", time.Now(), time.Now().Add(24 * time.Hour)}
	}
	if _, err := db.Pool().CopyFrom(ctx, pgx.Identifier{"authorizations"},
		[]string{"id", "phone_code", "statement", "uzi_number", "created_at", "expires_at"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- realMain(wctx, []string{"transparency", "log"}, io.Discard, io.Discard) }()
	t.Cleanup(func() { cancel(); <-done })
	checkpoint := filepath.Join(exportDir, "log", "checkpoint")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(checkpoint); bytes.HasPrefix(b, []byte("vouch.test/log\n12\n")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint of 12 leaves")
		}
	}

	// The checkpoint's second signature is the HSM key's (signed-note
	// type 0x02), verified by transparency-dev/formats.
	pemBytes, err := os.ReadFile(man.Backend.ExportPub)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	sum := sha256.Sum256(blk.Bytes)
	hsmV, err := fnote.NewECDSAVerifier(fmt.Sprintf("vouch.test/log+%x+%s", sum[:4], base64.StdEncoding.EncodeToString(append([]byte{0x02}, blk.Bytes...))))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(checkpoint); func() error { _, err := note.Open(b, note.VerifierList(hsmV)); return err }() != nil {
		t.Fatalf("the checkpoint is not signed by the back end's HSM key:\n%s", b)
	}

	h, err := cdn.NewHandler(exportDir, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	origin := httptest.NewServer(h)
	t.Cleanup(origin.Close)
	state := filepath.Join(t.TempDir(), "monitor.json")
	today := time.Now().UTC().Format("2006-01-02")
	for range 2 {
		out, err := run("monitor", "-key", vkey, "-state", state, origin.URL+"/log/")
		if err != nil || !strings.Contains(out, "12 leaves") || !regexp.MustCompile(today+` +12 +0\n`).MatchString(out) {
			t.Fatalf("monitor: %v\n%s", err, out)
		}
	}
	t.Setenv("VOUCH_TRANSPARENCY_PUBLIC_KEY", vkey)
	out, err = run("audit", "-state", filepath.Join(t.TempDir(), "audit.json"), origin.URL+"/log")
	if err != nil || !strings.Contains(out, "12 authorizations proven") {
		t.Fatalf("audit: %v\n%s", err, out)
	}
	// The private state is not published.
	if resp, err := origin.Client().Get(origin.URL + "/log/.state/treeState"); err != nil || resp.StatusCode != 404 {
		t.Fatalf("the log's private state through the origin: %v %v", err, resp.Status)
	}
}

// vouch config check transparency: a configuration the writer would
// refuse is refused, each problem naming its variable; a good one passes,
// and every variable it sets is one the writer reads.
func TestTransparencyConfigCheck(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "log.key")
	if err := realMain(context.Background(), []string{"transparency", "keygen", "-origin", "vouch.test/log", "-out", keyFile}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	good := []string{"DATABASE_URL=postgres://vouch@127.0.0.1/vouch", "VOUCH_TRANSPARENCY_DIR=/var/lib/vouch/export/log",
		"VOUCH_TRANSPARENCY_ORIGIN=vouch.test/log", "VOUCH_TRANSPARENCY_KEY_FILE=" + keyFile,
		"VOUCH_TRANSPARENCY_HSM_KEY_URI=pkcs11:token=vouch-backend;object=transparency", "VOUCH_HSM_PIN=1234",
		"VOUCH_EXPORT_TARGET=s3://vouch-export/nl", "VOUCH_EXPORT_S3_ENDPOINT=https://s3.example.nl",
		"VOUCH_EXPORT_S3_ACCESS_KEY=a", "VOUCH_EXPORT_S3_SECRET_KEY=b"}
	noKeyFile := slices.DeleteFunc(slices.Clone(good), func(kv string) bool { return strings.HasPrefix(kv, "VOUCH_TRANSPARENCY_KEY_FILE=") })
	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"good", good, ""},
		{"no HSM key", slices.DeleteFunc(slices.Clone(good), func(kv string) bool { return strings.HasPrefix(kv, "VOUCH_TRANSPARENCY_HSM_KEY_URI=") }), "VOUCH_TRANSPARENCY_HSM_KEY_URI"},
		{"another origin", append(slices.Clone(good), "VOUCH_TRANSPARENCY_ORIGIN=vouch.test/other"), "VOUCH_TRANSPARENCY_ORIGIN"},
		{"bad witness policy", append(slices.Clone(good), "VOUCH_TRANSPARENCY_WITNESS_POLICY=witness w1"), "VOUCH_TRANSPARENCY_WITNESS_POLICY"},
		{"bucket without credentials", slices.DeleteFunc(slices.Clone(good), func(kv string) bool { return strings.HasPrefix(kv, "VOUCH_EXPORT_S3_SECRET_KEY=") }), "VOUCH_EXPORT_S3_SECRET_KEY"},
		{"another role's variable", append(slices.Clone(good), "VOUCH_INGEST_ADDR=:8080"), "VOUCH_INGEST_ADDR"},
		{"log key in the HSM", append(slices.Clone(noKeyFile), "VOUCH_TRANSPARENCY_KEY_URI=pkcs11:token=vouch-backend;object=log"), ""},
		{"log key file and URI", append(slices.Clone(good), "VOUCH_TRANSPARENCY_KEY_URI=pkcs11:token=vouch-backend;object=log"), "not both"},
		{"no log key", noKeyFile, "VOUCH_TRANSPARENCY_KEY_FILE or VOUCH_TRANSPARENCY_KEY_URI"},
		{"log key URI that does not parse", append(slices.Clone(noKeyFile), "VOUCH_TRANSPARENCY_KEY_URI=http://x"), "VOUCH_TRANSPARENCY_KEY_URI"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// checkRole reads the process's environment through the
			// lookuper: set exactly c.env.
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

// transparencyEnv sets the log writer's environment for vouch all (a new
// key of origin vouch.test/log, the back end's HSM key on the test token,
// a log directory) and returns the directory and the log's public key.
func transparencyEnv(t *testing.T) (dir, vkey string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "vouch.test/log")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "log.key")
	if err := os.WriteFile(keyFile, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	man := testenv.Cards(t)
	dir = filepath.Join(t.TempDir(), "log")
	for k, v := range map[string]string{"VOUCH_TRANSPARENCY_DIR": dir, "VOUCH_TRANSPARENCY_ORIGIN": "vouch.test/log",
		"VOUCH_TRANSPARENCY_KEY_FILE": keyFile, "VOUCH_TRANSPARENCY_HSM_KEY_URI": man.Backend.ExportURI,
		"VOUCH_HSM_PIN": man.Backend.PIN, "VOUCH_TRANSPARENCY_CHECKPOINT_INTERVAL": "100ms"} {
		t.Setenv(k, v)
	}
	return dir, vkey
}

// waitTransparencyCheckpoint waits until the writer published a
// checkpoint in dir that vkey's key signed.
func waitTransparencyCheckpoint(t *testing.T, dir, vkey string) {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(dir, "checkpoint"))
		if _, err := note.Open(b, note.VerifierList(v)); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint signed by the log's key in %s", dir)
		}
	}
}
