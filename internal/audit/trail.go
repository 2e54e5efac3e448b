package audit

// The audit trail as auditors read it: rows chosen by a filter, newest
// first — by time, then by place in the chain, since copies of the back
// office on different clocks may append a row of an earlier time after a
// later one — a page at a time by keyset (a page far back costs what the
// first costs), or all of them streamed to a writer.

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Results a Filter selects by.
const (
	ResultOK      = "ok"
	ResultRefused = "refused"
)

// refusedSuffix ends every action that records a refusal
// (sign-in-refused, access-refused…); migration 018 indexes those rows.
const refusedSuffix = "-refused"

// Refused says whether the row records a refusal.
func (e Entry) Refused() bool { return strings.HasSuffix(e.Action, refusedSuffix) }

// Filter chooses rows of the trail; a zero field chooses every row.
type Filter struct {
	From, To time.Time // From <= at < To
	Action   string
	Actions  []string // any of these (with Action: both must hold)
	Actor    string   // a UZI number
	Result   string   // ResultOK or ResultRefused
	Reason   string
	// UpTo is the newest row (seq) a reader may see: the head when the
	// reader began, so that pages and downloads made later hold the same
	// rows, whatever was appended since.
	UpTo int64
}

// Cursor is a row's place in the trail's order: the keyset a page
// continues from.
type Cursor struct {
	At  time.Time
	Seq int64
}

// CursorOf is r's place.
func CursorOf(r Row) Cursor { return Cursor{At: r.At, Seq: r.Seq} }

// where is the filter as SQL conditions on audit_log, with their
// arguments appended to args (placeholders numbered after them).
func (f Filter) where(args []any) (string, []any) {
	conds := []string{"true"}
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, strings.ReplaceAll(cond, "?", fmt.Sprintf("$%d", len(args))))
	}
	if f.UpTo > 0 {
		add("seq <= ?", f.UpTo)
	}
	if !f.From.IsZero() {
		add("at >= ?", f.From)
	}
	if !f.To.IsZero() {
		add("at < ?", f.To)
	}
	if f.Action != "" {
		add("action = ?", f.Action)
	}
	if len(f.Actions) > 0 {
		add("action = any(?)", f.Actions)
	}
	if f.Actor != "" {
		add("actor = ?", f.Actor)
	}
	if f.Reason != "" {
		add("reason = ?", f.Reason)
	}
	// The same expression as migration 018's partial index, so that the
	// planner can use it.
	switch f.Result {
	case ResultRefused:
		conds = append(conds, `action like '%`+refusedSuffix+`'`)
	case ResultOK:
		conds = append(conds, `action not like '%`+refusedSuffix+`'`)
	}
	return strings.Join(conds, " and "), args
}

// Page reads at most limit rows of f, newest first: the first page when
// both cursors are nil, the rows older than after, or the rows newer than
// before (still newest first). A page ends where its last row is: the
// next page is after CursorOf(rows[len-1]), the previous before
// CursorOf(rows[0]).
func Page(ctx context.Context, q Querier, f Filter, after, before *Cursor, limit int) ([]Row, error) {
	sql, args := pageSQL(f, after, before, limit)
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: read trail: %w", err)
	}
	defer rows.Close()
	out := make([]Row, 0, limit)
	for rows.Next() {
		var r Row
		if err := r.scan(rows); err != nil {
			return nil, fmt.Errorf("audit: read trail: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read trail: %w", err)
	}
	if before != nil {
		slices.Reverse(out)
	}
	return out, nil
}

// pageSQL is Page's query: an index range read in (at, seq) order
// (migration 018), whichever filter.
func pageSQL(f Filter, after, before *Cursor, limit int) (string, []any) {
	where, args := f.where(nil)
	order := "at desc, seq desc"
	switch {
	case after != nil:
		args = append(args, after.At, after.Seq)
		where += fmt.Sprintf(" and (at, seq) < ($%d, $%d)", len(args)-1, len(args))
	case before != nil:
		args = append(args, before.At, before.Seq)
		where += fmt.Sprintf(" and (at, seq) > ($%d, $%d)", len(args)-1, len(args))
		order = "at, seq" // the nearest newer rows, turned round below
	}
	args = append(args, limit)
	return rowColumns + " where " + where + " order by " + order + fmt.Sprintf(" limit $%d", len(args)), args
}

// Each calls fn with every row of f, newest first, in the order of Page,
// reading them as they come from the database: a year of rows is never
// held in memory. It stops at fn's first error and returns it.
func Each(ctx context.Context, q Querier, f Filter, fn func(Row) error) error {
	where, args := f.where(nil)
	rows, err := q.Query(ctx, rowColumns+" where "+where+" order by at desc, seq desc", args...)
	if err != nil {
		return fmt.Errorf("audit: read trail: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r Row
		if err := r.scan(rows); err != nil {
			return fmt.Errorf("audit: read trail: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: read trail: %w", err)
	}
	return nil
}

// Head is the newest row's seq, 0 when the log is empty.
func Head(ctx context.Context, q Querier) (int64, error) {
	rows, err := q.Query(ctx, `select coalesce(max(seq), 0) from audit_log`)
	if err != nil {
		return 0, fmt.Errorf("audit: read head: %w", err)
	}
	defer rows.Close()
	var head int64
	for rows.Next() {
		if err := rows.Scan(&head); err != nil {
			return 0, fmt.Errorf("audit: read head: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("audit: read head: %w", err)
	}
	return head, nil
}

// Neighbours are a row and the rows before and after it in the chain, as
// the chain check of one row shows them.
type Neighbours struct {
	Prev, Row, Next *Row
}

// Around reads the row seq and its neighbours in the chain; Row is nil
// when there is no such row.
func Around(ctx context.Context, q Querier, seq int64) (Neighbours, error) {
	var n Neighbours
	rows, err := q.Query(ctx, rowColumns+` where seq between $1 and $2 order by seq`, seq-1, seq+1)
	if err != nil {
		return n, fmt.Errorf("audit: read row: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r := &Row{}
		if err := r.scan(rows); err != nil {
			return n, fmt.Errorf("audit: read row: %w", err)
		}
		switch r.Seq {
		case seq - 1:
			n.Prev = r
		case seq:
			n.Row = r
		case seq + 1:
			n.Next = r
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("audit: read row: %w", err)
	}
	return n, nil
}

// Holds says whether the row's hash is that of its content: whoever
// edited a field without recomputing the hash is found here.
func (r Row) Holds() bool { return bytes.Equal(r.hash(), r.Hash) }
