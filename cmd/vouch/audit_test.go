package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestAuditVerify: `vouch audit verify` says intact with the head to note,
// finds an edited row (status 1), finds a rewritten history against a
// noted head, and refuses a malformed head (status 2).
func TestAuditVerify(t *testing.T) {
	db := testenv.Database(t)
	t.Setenv("DATABASE_URL", db.Pool().Config().ConnString())
	run := func(args ...string) (string, error) {
		var stdout, stderr bytes.Buffer
		err := realMain(context.Background(), append([]string{"audit", "verify"}, args...), &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}
	if out, err := run(); err != nil || !strings.Contains(out, "intact: 0 rows") {
		t.Fatalf("empty log: %v %q", err, out)
	}
	for _, a := range []string{audit.ActionSignIn, audit.ActionVouch, audit.ActionSignOut} {
		if err := db.InTx(context.Background(), func(tx pgx.Tx) error {
			_, err := audit.Append(context.Background(), tx, audit.Entry{Actor: "900000024", Action: a}, time.Now())
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	out, err := run()
	if err != nil || !strings.Contains(out, "intact: 3 rows") {
		t.Fatalf("%v %q", err, out)
	}
	head := strings.TrimSpace(out[strings.Index(out, "head:")+len("head:"):])
	if out, err := run("-head", head); err != nil {
		t.Fatalf("with its own head: %v %q", err, out)
	}
	if out, err := run("-head", "abc"); err != exitError(2) {
		t.Errorf("malformed head: %v %q", err, out)
	}
	if out, err := run("-head", strings.Repeat("0", 64)); err != exitError(1) || !strings.Contains(out, "rewritten") {
		t.Errorf("a head not in the chain: %v %q", err, out)
	}
	if _, err := db.Pool().Exec(context.Background(), `alter table audit_log disable trigger user;
		update audit_log set actor = '900000001' where seq = 2;
		alter table audit_log enable trigger user`); err != nil {
		t.Fatal(err)
	}
	if out, err := run(); err != exitError(1) || !strings.Contains(out, "BROKEN") || !strings.Contains(out, "row 2") {
		t.Errorf("edited row: %v %q", err, out)
	}
}
