package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestAuditVerifyDownload: `vouch audit verify-download` verifies a
// download with its signature and the key (status 0, what it holds), and
// says NOT VERIFIED (status 1) for a file with one byte changed or
// another key; a missing argument or key is status 2.
func TestAuditVerifyDownload(t *testing.T) {
	db := testenv.Database(t)
	ctx := context.Background()
	for i, a := range []string{audit.ActionSignIn, audit.ActionVouch, audit.ActionVouchRefused, audit.ActionSignOut} {
		if err := db.InTx(ctx, func(tx pgx.Tx) error {
			_, err := audit.Append(ctx, tx, audit.Entry{Actor: "900000024", Action: a, UserAgent: "=1+1"}, time.Now().Add(time.Duration(i)*time.Second))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalPKIXPublicKey(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile, otherFile := writeKey("key.pem", key), writeKey("other.pem", other)
	var file bytes.Buffer
	enc, err := audit.NewEncoder(&file, audit.FormatCSV, audit.Meta{UpTo: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Each(ctx, db.Pool(), audit.Filter{UpTo: 4}, enc.Write); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	sig, err := audit.SignDownload(key, audit.Statement{Format: audit.FormatCSV, SHA256: sha256.Sum256(file.Bytes()), Rows: 4, UpTo: 4})
	if err != nil {
		t.Fatal(err)
	}
	csvPath, sigPath := filepath.Join(dir, "a.csv"), filepath.Join(dir, "a.csv.sig")
	for p, b := range map[string][]byte{csvPath: file.Bytes(), sigPath: sig} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) (string, error) {
		var stdout, stderr bytes.Buffer
		err := realMain(ctx, append([]string{"audit"}, args...), &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}
	if out, err := run("verify-download", "-key", otherFile, "-key", keyFile, csvPath, sigPath); err != nil || !strings.Contains(out, "verified: ") || !strings.Contains(out, "rows:     4") {
		t.Fatalf("%v %q", err, out)
	}
	if out, err := run("verify-download", "-key", otherFile, csvPath, sigPath); err != exitError(1) || !strings.Contains(out, "NOT VERIFIED") {
		t.Errorf("another key: %v %q", err, out)
	}
	bad := bytes.Clone(file.Bytes())
	bad[len(bad)-3] ^= 1
	if err := os.WriteFile(csvPath, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run("verify-download", "-key", keyFile, csvPath, sigPath); err != exitError(1) || !strings.Contains(out, "altered") {
		t.Errorf("one byte changed: %v %q", err, out)
	}
	t.Setenv("VOUCH_ATTESTATION_KEYS", "")
	if out, err := run("verify-download", csvPath, sigPath); err != exitError(2) {
		t.Errorf("no key: %v %q", err, out)
	}
	if out, err := run("verify-download", "-key", keyFile, csvPath); err != exitError(2) {
		t.Errorf("no signature: %v %q", err, out)
	}
	// The group's help names both commands, and verify still runs.
	if out, err := run("-h"); err != nil || !strings.Contains(out, "verify-download") || !strings.Contains(out, "-head") {
		t.Errorf("-h: %v %q", err, out)
	}
	t.Setenv("DATABASE_URL", db.Pool().Config().ConnString())
	if out, err := run("verify"); err != nil || !strings.Contains(out, "intact: 4 rows") {
		t.Errorf("verify: %v %q", err, out)
	}
}
