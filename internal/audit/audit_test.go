package audit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// fill appends n rows, from several goroutines at once, and returns the
// chain's head.
func fill(t *testing.T, db *database.DB, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- db.InTx(context.Background(), func(tx pgx.Tx) error {
				_, err := audit.Append(context.Background(), tx, audit.Entry{
					Actor: fmt.Sprintf("9000000%02d", i), Action: audit.ActionSignIn, IP: "192.0.2.1", UserAgent: "test",
				}, time.Now())
				return err
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func verify(t *testing.T, db *database.DB, known []byte) (audit.Report, error) {
	t.Helper()
	var rep audit.Report
	err := db.InTx(context.Background(), func(tx pgx.Tx) (err error) {
		rep, err = audit.Verify(context.Background(), tx, known)
		return err
	})
	return rep, err
}

// tamper runs sql as the database's owner with the append-only triggers
// off: what an attacker with the owner's rights can do.
func tamper(t *testing.T, db *database.DB, sql ...string) {
	t.Helper()
	err := db.InTx(context.Background(), func(tx pgx.Tx) error {
		for _, q := range append(append([]string{`alter table audit_log disable trigger user`}, sql...), `alter table audit_log enable trigger user`) {
			if _, err := tx.Exec(context.Background(), q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestChainHolds(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	if rep, err := verify(t, db, nil); err != nil || rep.Rows != 0 {
		t.Fatalf("empty log: %+v, %v", rep, err)
	}
	fill(t, db, 20)
	// A rolled-back append leaves no gap.
	err := db.InTx(context.Background(), func(tx pgx.Tx) error {
		if _, err := audit.Append(context.Background(), tx, audit.Entry{Action: audit.ActionVouch}, time.Now()); err != nil {
			return err
		}
		return errors.New("roll back")
	})
	if err == nil {
		t.Fatal("rolled back append committed")
	}
	fill(t, db, 1)
	rep, err := verify(t, db, nil)
	if err != nil || rep.Rows != 21 || len(rep.Head) != 32 {
		t.Fatalf("intact chain: %+v, %v", rep, err)
	}
	if again, err := verify(t, db, rep.Head); err != nil || again.HeadHex() != rep.HeadHex() {
		t.Fatalf("with its own head: %+v, %v", again, err)
	}
}

func TestVerifyFindsTampering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		sql    []string
		known  bool // pass the head noted before tampering
		want   audit.Problem
		intact bool // passes without the noted head
	}{
		{name: "edited actor", sql: []string{`update audit_log set actor = 'mallory' where seq = 3`}, want: audit.Problem{Seq: 3, Kind: audit.Edited}},
		{name: "edited time", sql: []string{`update audit_log set at = at + interval '1 second' where seq = 4`}, want: audit.Problem{Seq: 4, Kind: audit.Edited}},
		{name: "edited reason", sql: []string{`update audit_log set reason = 'ok' where seq = 2`}, want: audit.Problem{Seq: 2, Kind: audit.Edited}},
		{name: "edited user agent", sql: []string{`update audit_log set user_agent = 'x' where seq = 2`}, want: audit.Problem{Seq: 2, Kind: audit.Edited}},
		{name: "edited ip", sql: []string{`update audit_log set ip = '198.51.100.7' where seq = 2`}, want: audit.Problem{Seq: 2, Kind: audit.Edited}},
		{name: "edited action", sql: []string{`update audit_log set action = 'sign-out' where seq = 5`}, want: audit.Problem{Seq: 5, Kind: audit.Edited}},
		{name: "edited subject", sql: []string{`update audit_log set subject = 'x' where seq = 5`}, want: audit.Problem{Seq: 5, Kind: audit.Edited}},
		{name: "edited detail", sql: []string{`update audit_log set detail = '{}' where seq = 5`}, want: audit.Problem{Seq: 5, Kind: audit.Edited}},
		{name: "hash replaced", sql: []string{`update audit_log set hash = sha256(hash) where seq = 6`}, want: audit.Problem{Seq: 6, Kind: audit.Edited}},
		{name: "link replaced", sql: []string{`update audit_log set prev_hash = sha256(prev_hash) where seq = 6`}, want: audit.Problem{Seq: 6, Kind: audit.Edited}},
		{name: "deleted in the middle", sql: []string{`delete from audit_log where seq = 4`}, want: audit.Problem{Seq: 5, Kind: audit.Deleted}},
		{name: "deleted first", sql: []string{`delete from audit_log where seq = 1`}, want: audit.Problem{Seq: 2, Kind: audit.Start}},
		{name: "inserted in the middle", sql: []string{
			`update audit_log set seq = seq + 1000 where seq >= 3`,
			`update audit_log set seq = seq - 999 where seq >= 1000`,
			`insert into audit_log (seq, at, actor, action, prev_hash, hash)
				select 3, now(), 'mallory', 'vouch', hash, sha256(hash) from audit_log where seq = 2`,
		}, want: audit.Problem{Seq: 3, Kind: audit.Edited}},
		{name: "last deleted", sql: []string{`delete from audit_log where seq = 8`}, known: true, want: audit.Problem{Kind: audit.Missing}, intact: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := testenv.Database(t)
			fill(t, db, 8)
			before, err := verify(t, db, nil)
			if err != nil {
				t.Fatal(err)
			}
			tamper(t, db, tt.sql...)
			var known []byte
			if tt.known {
				known = before.Head
			}
			_, err = verify(t, db, known)
			var p audit.Problem
			if !errors.As(err, &p) || p != tt.want {
				t.Fatalf("got %v, want %+v", err, tt.want)
			}
			if _, err := verify(t, db, nil); (err == nil) != tt.intact {
				t.Errorf("without the noted head: %v", err)
			}
		})
	}
}

// TestRewrittenChain: whoever rewrites every hash after an edit passes a
// plain check; the head an auditor noted before finds it.
func TestRewrittenChain(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	fill(t, db, 5)
	before, err := verify(t, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite: take every row out, and append the edited history again
	// through Append, which computes the hashes.
	var rows []audit.Entry
	err = db.InTx(context.Background(), func(tx pgx.Tx) error {
		r, err := tx.Query(context.Background(), `select actor, action from audit_log order by seq`)
		if err != nil {
			return err
		}
		rows, err = pgx.CollectRows(r, func(r pgx.CollectableRow) (audit.Entry, error) {
			var e audit.Entry
			return e, r.Scan(&e.Actor, &e.Action)
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tamper(t, db, `delete from audit_log`)
	rows[2].Actor = "mallory"
	for _, e := range rows {
		if err := db.InTx(context.Background(), func(tx pgx.Tx) error {
			_, err := audit.Append(context.Background(), tx, e, time.Now())
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := verify(t, db, nil); err != nil {
		t.Fatalf("a rewritten chain is self-consistent: %v", err)
	}
	var p audit.Problem
	if _, err := verify(t, db, before.Head); !errors.As(err, &p) || p.Kind != audit.Missing {
		t.Fatalf("against the noted head: %v, want %s", err, audit.Missing)
	}
}

// TestAppendKeepsFieldsReadable: an attacker's user agent is cut short and
// its control characters replaced; the chain still verifies.
func TestAppendKeepsFieldsReadable(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ua := "evil\r\n\x1b[31mred" + strings.Repeat("é", 2000)
	var row audit.Row
	err := db.InTx(context.Background(), func(tx pgx.Tx) (err error) {
		row, err = audit.Append(context.Background(), tx, audit.Entry{Action: audit.ActionSignInRefused, UserAgent: ua, Reason: "bad\x00", Detail: "\xff"}, time.Now())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(row.UserAgent, "\r\n\x1b") || len(row.UserAgent) > 1024 || !strings.HasPrefix(row.UserAgent, "evil") {
		t.Errorf("user agent kept as %q…", row.UserAgent[:20])
	}
	if strings.ContainsRune(row.Reason, 0) || row.Detail != `{"truncated":true}` {
		t.Errorf("reason %q, detail %q", row.Reason, row.Detail)
	}
	if _, err := verify(t, db, nil); err != nil {
		t.Fatal(err)
	}
	err = db.InTx(context.Background(), func(tx pgx.Tx) error {
		_, err := audit.Append(context.Background(), tx, audit.Entry{}, time.Now())
		return err
	})
	if err == nil {
		t.Error("an entry without an action was written")
	}
}
