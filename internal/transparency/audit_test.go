package transparency

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// The database's owner can get past the audit log's triggers and rewrite
// its hash chain so that it verifies again; the heads in the log are what
// catch it, with no head noted by hand. An authorization deleted from the
// log's view (a row the writer never saw) is found too.
func TestAuditFindsTamperedAuditLog(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		tamper func(t *testing.T, db *database.DB)
		want   string // in a problem; "" none
	}{
		{"untouched", func(*testing.T, *database.DB) {}, ""},
		{"last rows deleted", func(t *testing.T, db *database.DB) {
			owner(t, db, `delete from audit_log where seq > 7`)
		}, "audit row 10, whose chain head the log holds at leaf 20, is gone: the audit log was truncated"},
		{"rewritten from row 5", func(t *testing.T, db *database.DB) {
			owner(t, db, `delete from audit_log where seq >= 5`)
			appendAudit(t, db, 6) // rows 5…10 again, chained, other times
		}, "audit row 10's chain hash is"},
		{"one row edited", func(t *testing.T, db *database.DB) {
			owner(t, db, `update audit_log set actor = '999999999' where seq = 3`)
		}, "row 3 was edited"},
		{"rows after the last head, never logged", func(t *testing.T, db *database.DB) {
			appendAudit(t, db, 2) // after the writer stopped, and old enough
		}, "audit rows after row 10 (the first of"},
		{"an authorization never logged", func(t *testing.T, db *database.DB) {
			insertAuthorizations(t, db, 1) // after the writer stopped, and old enough
		}, "is not in the log"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := testenv.Database(t)
			dir := t.TempDir()
			skey, vkey := newKey(t, testOrigin)
			insertAuthorizations(t, db, 20)
			appendAudit(t, db, 10)
			runUntilLogged(t, db, testConfig(dir, skey), vkey, 21)
			c.tamper(t, db)
			v, _ := Verifier(vkey)
			src, _ := OpenSource(dir)
			// An authorization inserted now is "old" for an audit ten
			// minutes from now.
			rep, err := Audit(ctx, db, src, v, &State{Days: map[string]*DayCount{}}, time.Minute, time.Now().Add(10*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(rep.Problems, "\n")
			switch {
			case c.want == "" && got != "":
				t.Fatalf("problems in an untouched log:\n%s", got)
			case c.want != "" && !strings.Contains(got, c.want):
				t.Fatalf("problems:\n%s\nwant one with %q", got, c.want)
			}
			if c.name == "rewritten from row 5" {
				// The chain itself verifies: only the log shows the rewrite.
				err := pgx.BeginFunc(ctx, db.Pool(), func(tx pgx.Tx) error { _, err := audit.Verify(ctx, tx, nil); return err })
				if err != nil {
					t.Fatalf("the rewritten chain does not verify on its own (the test rewrote it badly): %v", err)
				}
			}
		})
	}
}

// owner runs sql as the database's owner would, past the audit log's
// append-only triggers.
func owner(t *testing.T, db *database.DB, sql string) {
	t.Helper()
	ctx := context.Background()
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `alter table audit_log disable trigger user`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `alter table audit_log enable trigger user`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// runUntilLogged runs a writer until leaves are logged and published, then
// stops it.
func runUntilLogged(t *testing.T, db *database.DB, cfg Config, vkey string, leaves int64) {
	t.Helper()
	w, err := NewWriter(cfg, db, testLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitLogged(t, db, cfg.Dir, vkey, leaves)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
