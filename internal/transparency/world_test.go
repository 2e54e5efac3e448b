package transparency

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/database"
)

const testOrigin = "vouch.test/transparency/log"

// newKey makes a log key: the signer key (the key file's content) and the
// verifier key (what monitors are given).
func newKey(t testing.TB, origin string) (skey, vkey string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	return skey, vkey
}

func testConfig(dir, skey string) Config {
	return Config{Dir: dir, Origin: testOrigin, Key: skey, Interval: 50 * time.Millisecond,
		AuditInterval: 50 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond, Batch: 64, Lease: 3 * time.Second}
}

// insertAuthorizations stores n authorizations as the back office would
// (random bytes stand for the signed fields: the log hashes them).
func insertAuthorizations(t testing.TB, db *database.DB, n int) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	rows := make([][]any, n)
	for i := range rows {
		var id [16]byte
		code, st, sig, att, attSig, cert := make([]byte, 10), make([]byte, 200), make([]byte, 64), make([]byte, 150), make([]byte, 72), make([]byte, 300)
		for _, b := range [][]byte{id[:], code, st, sig, att, attSig, cert} {
			rand.Read(b)
		}
		rows[i] = []any{id, code, st, sig, att, attSig, cert, "123456789", now.Add(time.Duration(i) * time.Microsecond), now.Add(24 * time.Hour)}
	}
	_, err := db.Pool().CopyFrom(ctx, pgx.Identifier{"authorizations"},
		[]string{"id", "phone_code", "statement", "statement_sig", "attestation", "attestation_sig", "signer_cert", "uzi_number", "created_at", "expires_at"},
		pgx.CopyFromRows(rows))
	if err != nil {
		t.Fatal(err)
	}
}

// appendAudit appends n audit rows.
func appendAudit(t testing.TB, db *database.DB, n int) {
	t.Helper()
	ctx := context.Background()
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		for i := 0; i < n; i++ {
			if _, err := audit.Append(ctx, tx, audit.Entry{Actor: "123456789", Action: audit.ActionSignIn}, time.Now()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startWriter runs a writer until the test ends.
func startWriter(t testing.TB, db *database.DB, cfg Config, set ...func(*Writer)) {
	t.Helper()
	w, err := NewWriter(cfg, db, testLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range set {
		f(w)
	}
	runWriter(t, w)
}

// runWriter runs w until the test ends.
func runWriter(t testing.TB, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("writer: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("the writer did not stop")
		}
	})
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t testing.TB, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mirrored is how many leaves the writer recorded.
func mirrored(db *database.DB) (int64, error) {
	var n int64
	err := db.Pool().QueryRow(context.Background(), `select count(*) from transparency_leaves`).Scan(&n)
	return n, err
}

// publishedSize is the size of the published checkpoint (0 before one).
func publishedSize(t testing.TB, dir, vkey string) uint64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	v, err := Verifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := OpenCheckpoint(raw, v)
	if err != nil {
		t.Fatal(err)
	}
	return cp.Size
}

// waitLogged waits until every authorization and the audit head are
// recorded and the published checkpoint covers them.
func waitLogged(t testing.TB, db *database.DB, dir, vkey string, leaves int64) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%d leaves logged and published", leaves), func() (bool, error) {
		n, err := mirrored(db)
		return n == leaves && publishedSize(t, dir, vkey) == uint64(leaves), err
	})
}

// treeStateSize is the log's integrated size from tessera's private state.
func treeStateSize(t testing.TB, dir string) uint64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, ".state", "treeState"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Size uint64 }
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return st.Size
}

func testLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
