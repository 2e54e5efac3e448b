package audit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// appendAt appends one row with the time at.
func appendAt(t *testing.T, db *database.DB, at time.Time) {
	t.Helper()
	if err := db.InTx(context.Background(), func(tx pgx.Tx) error {
		_, err := audit.Append(context.Background(), tx, audit.Entry{Actor: "900000001", Action: audit.ActionVouch}, at)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func prune(db *database.DB, before, now time.Time) (n int64, err error) {
	err = db.InTx(context.Background(), func(tx pgx.Tx) (err error) {
		n, err = audit.Prune(context.Background(), tx, before, now)
		return err
	})
	return n, err
}

func TestPruneKeepsTheChainVerifiable(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	now := time.Now()
	sixYears := now.AddDate(-6, 0, 0)
	for _, at := range []time.Time{now.AddDate(-8, 0, 0), now.AddDate(-7, 0, 0), sixYears.Add(-time.Hour), sixYears.Add(time.Hour), now.AddDate(-1, 0, 0), now} {
		appendAt(t, db, at)
	}
	before, err := verify(t, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := prune(db, sixYears, now)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if n != 3 {
		t.Errorf("pruned %d rows, want the 3 older than six years", n)
	}
	rep, err := verify(t, db, before.Head) // a head noted before the prune is still in the chain
	if err != nil {
		t.Fatalf("Verify after prune: %v", err)
	}
	// Kept: the row an hour inside six years, the two newer, and the prune's own entry.
	if rep.Rows != 4 || rep.First != 4 {
		t.Errorf("after prune: %d rows from row %d, want 4 from row 4", rep.Rows, rep.First)
	}
	var kept time.Time
	if err := db.Pool().QueryRow(context.Background(), `select min(at) from audit_log`).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if !kept.After(sixYears) {
		t.Errorf("the oldest row kept is from %s, older than six years", kept)
	}
	var action string
	if err := db.Pool().QueryRow(context.Background(), `select action from audit_log order by seq desc limit 1`).Scan(&action); err != nil || action != audit.ActionPrune {
		t.Errorf("last entry %q (%v), want the prune recorded", action, err)
	}

	for _, q := range []string{`delete from audit_anchor`, `update audit_anchor set seq = 1`} {
		_, err := db.Pool().Exec(context.Background(), q)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s: %v, want refused: anchors are append-only", q, err)
		}
	}

	// Pruning again finds nothing more; the chain still holds and grows.
	if n, err := prune(db, sixYears, now); err != nil || n != 0 {
		t.Errorf("second prune: %d, %v; want 0, nil", n, err)
	}
	appendAt(t, db, now)
	if _, err := verify(t, db, nil); err != nil {
		t.Errorf("Verify after an append: %v", err)
	}
}

func TestPruneAfterWhichDeletionIsFound(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	now := time.Now()
	for _, at := range []time.Time{now.AddDate(-7, 0, 0), now.AddDate(-7, 0, 1), now.AddDate(-1, 0, 0), now} {
		appendAt(t, db, at)
	}
	if _, err := prune(db, now.AddDate(-6, 0, 0), now); err != nil {
		t.Fatal(err)
	}
	// The first row kept, deleted behind the database's back: the anchor
	// no longer matches.
	tamper(t, db, `delete from audit_log where seq = 3`)
	_, err := verify(t, db, nil)
	var p audit.Problem
	if !errors.As(err, &p) || p.Kind != audit.Start {
		t.Errorf("Verify = %v, want the chain's start found missing", err)
	}
}

func TestPruneRefusesRecentRows(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	now := time.Now()
	appendAt(t, db, now.AddDate(-5, 0, 0))
	appendAt(t, db, now)
	// A cutoff inside six years (a caller's clock years ahead): the
	// database keeps six years by its own clock.
	if n, err := prune(db, now.AddDate(1, 0, 0), now); err != nil || n != 0 {
		t.Fatalf("Prune with a cutoff in the future: %d, %v; want nothing deleted", n, err)
	}
	// Setting the prune's session variable by hand lets no young row go.
	err := db.InTx(context.Background(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `select set_config('vouch.audit_prune_below', '100', true)`); err != nil {
			return err
		}
		_, err := tx.Exec(context.Background(), `delete from audit_log`)
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("delete with the variable set: %v, want refused", err)
	}
	// Anchors are append-only too.
	_, err = db.Pool().Exec(context.Background(), `truncate audit_anchor`)
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("truncate audit_anchor: %v, want refused", err)
	}
	if rep, err := verify(t, db, nil); err != nil || rep.Rows != 2 {
		t.Errorf("Verify: %d rows, %v; want 2 intact", rep.Rows, err)
	}
}
