// Package stats counts what Vouch did each day and keeps the counts
// forever (migration 019), since the rows they come from do not stay:
// authorizations go after 30 days, keys after 14. A day is counted once it
// is over (Compute, run by `vouch stats`), incrementally: only the days not
// counted yet, each in one transaction that replaces the day's rows, under
// an advisory lock, so a rerun gives the same rows and two copies never
// count a day twice.
//
// What is counted, per day of the configured zone (Figure*): vouches by
// profession, sign-ins, refusals by reason (the audit log), keys published
// and the export's size and age (the export batches). Pickups, uploads and
// their refusals are not recorded in PostgreSQL (ingest keeps no database:
// they are Prometheus counters only), so they are not counted here.
//
// Codes vouched per card holder are kept apart (stats_clinician_daily) and
// shown to auditors only. The public view (Public) holds days whose end is
// PublicDelay past, with every count under MinPublic suppressed, and the
// parts of a total suppressed further until no suppressed count follows
// from the others (suppress.go).
package stats

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Figures: what a daily row counts. A figure with parts has a label per
// part; Total adds them up.
const (
	FigureVouches  = "vouches"        // label: the profession (the role code's first part, 01 doctor …)
	FigureSignIns  = "sign-ins"       // no label
	FigureRefusals = "refusals"       // label: the reason code of the audit row
	FigureKeys     = "keys-published" // label: "uploaded" here or "imported" from a site
	FigureFiles    = "export-files"   // export files made that day; no label
	FigureSize     = "export-keys"    // keys in the files made that day, padding included; no label
	FigureAge      = "export-age"     // the longest the newest file was old during the day, in minutes; no label
)

// Figures lists the figures in the order pages show them.
var Figures = []string{FigureVouches, FigureSignIns, FigureRefusals, FigureKeys, FigureFiles, FigureSize, FigureAge}

// Counts are the figures that count events, which the public view
// suppresses when small; the others (sizes, ages) tell nothing of a person.
func isCount(figure string) bool {
	return figure != FigureAge && figure != FigureSize && figure != FigureFiles
}

// Labels of FigureKeys.
const (
	LabelUploaded = "uploaded"
	LabelImported = "imported"
)

const (
	// Settle is how long after a day ends it is counted: the back office
	// writes counted refusals a minute late.
	Settle = 10 * time.Minute
	// Horizon is how far back a day not counted yet is still counted: the
	// authorizations are kept 30 days.
	Horizon = 28 * 24 * time.Hour
	// PublicDelay: a day is public 48 hours after it ended.
	PublicDelay = 48 * time.Hour
	// MinPublic: a public count under it is shown as "<10".
	MinPublic = 10
)

// lockKey serialises the counting of days across processes.
const lockKey int64 = 0x766f7563_68737461 // "vouchsta"

// Day is a date of the zone, at its midnight in UTC (a date, not an
// instant: stored as a PostgreSQL date).
type Day = time.Time

// dayOf is the date of t in zone.
func dayOf(t time.Time, zone *time.Location) Day {
	y, m, d := t.In(zone).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// bounds is the day's span in zone: [start, end), 23 or 25 hours on the
// days the clocks change.
func bounds(d Day, zone *time.Location) (start, end time.Time) {
	start = time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, zone)
	end = time.Date(d.Year(), d.Month(), d.Day()+1, 0, 0, 0, 0, zone)
	return start, end
}

// Counter counts days into the statistics tables.
type Counter struct {
	pool *pgxpool.Pool
	zone *time.Location
}

// NewCounter counts on pool, days of zone.
func NewCounter(pool *pgxpool.Pool, zone *time.Location) *Counter {
	return &Counter{pool: pool, zone: zone}
}

// Compute counts every day that ended Settle before now, within Horizon,
// and is not counted yet, oldest first. It returns the days it counted.
func (c *Counter) Compute(ctx context.Context, now time.Time) ([]Day, error) {
	last := dayOf(now.Add(-Settle), c.zone).AddDate(0, 0, -1)
	first := dayOf(now.Add(-Horizon), c.zone)
	done, err := c.countedSince(ctx, first)
	if err != nil {
		return nil, err
	}
	var out []Day
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		if done[d] {
			continue
		}
		if err := c.ComputeDay(ctx, d, now); err != nil {
			return out, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (c *Counter) countedSince(ctx context.Context, first Day) (map[Day]bool, error) {
	rows, err := c.pool.Query(ctx, `select day from stats_days where day >= $1`, first)
	if err != nil {
		return nil, fmt.Errorf("stats: days counted: %w", err)
	}
	days, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil {
		return nil, fmt.Errorf("stats: days counted: %w", err)
	}
	done := map[Day]bool{}
	for _, d := range days {
		done[d] = true
	}
	return done, nil
}

// ErrNotOver: a day is counted only once it is over.
var ErrNotOver = errors.New("stats: the day is not over")

// ComputeDay counts day d (again), replacing its rows: the same rows
// whenever the raw rows are the same.
func (c *Counter) ComputeDay(ctx context.Context, d Day, now time.Time) error {
	start, end := bounds(d, c.zone)
	if now.Before(end.Add(Settle)) {
		return fmt.Errorf("%w: %s", ErrNotOver, d.Format(time.DateOnly))
	}
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock($1)`, lockKey); err != nil {
		return fmt.Errorf("stats: lock: %w", err)
	}
	rows, err := countDay(ctx, tx, start, end)
	if err != nil {
		return err
	}
	clin, err := countClinicians(ctx, tx, start, end)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `delete from stats_daily where day = $1`, d); err != nil {
		return fmt.Errorf("stats: replace %s: %w", d.Format(time.DateOnly), err)
	}
	if _, err := tx.Exec(ctx, `delete from stats_clinician_daily where day = $1`, d); err != nil {
		return fmt.Errorf("stats: replace %s: %w", d.Format(time.DateOnly), err)
	}
	var b pgx.Batch
	for _, r := range rows {
		b.Queue(`insert into stats_daily (day, figure, label, value) values ($1, $2, $3, $4)`, d, r.Figure, r.Label, r.Value)
	}
	for _, r := range clin {
		b.Queue(`insert into stats_clinician_daily (day, uzi_number, vouched) values ($1, $2, $3)`, d, r.UZI, r.Vouched)
	}
	b.Queue(`insert into stats_days (day, computed_at) values ($1, $2)
		on conflict (day) do update set computed_at = excluded.computed_at`, d, now)
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("stats: write %s: %w", d.Format(time.DateOnly), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("stats: commit %s: %w", d.Format(time.DateOnly), err)
	}
	return nil
}

// Row is one count of one day.
type Row struct {
	Figure, Label string
	Value         int64
}

// countDay counts [start, end) from the raw rows.
func countDay(ctx context.Context, tx pgx.Tx, start, end time.Time) ([]Row, error) {
	var out []Row
	add := func(what, sql string) error {
		rows, err := tx.Query(ctx, sql, start, end)
		if err != nil {
			return fmt.Errorf("stats: count %s: %w", what, err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Row])
		if err != nil {
			return fmt.Errorf("stats: count %s: %w", what, err)
		}
		for _, r := range got {
			if r.Value > 0 {
				out = append(out, r)
			}
		}
		return nil
	}
	// Vouches by profession: the role code's first part (01.015 → 01).
	if err := add("vouches", `select 'vouches', split_part(coalesce(role_code, ''), '.', 1), count(*)
		from authorizations where created_at >= $1 and created_at < $2 group by 2 order by 2`); err != nil {
		return nil, err
	}
	if err := add("sign-ins", `select 'sign-ins', '', count(*)
		from audit_log where action = 'sign-in' and at >= $1 and at < $2`); err != nil {
		return nil, err
	}
	// Every refusal the audit log records (its action ends in -refused); a
	// row of counted refusals (internal/backoffice, refusals.go) says how
	// many in its detail's count.
	if err := add("refusals", `select 'refusals', coalesce(reason, ''),
		sum(coalesce(substring(detail from '^\{"count":([0-9]{1,9}),')::bigint, 1))::bigint
		from audit_log where action like '%-refused' and at >= $1 and at < $2 group by 2 order by 2`); err != nil {
		return nil, err
	}
	// Keys in the export files made that day (a batch is made at its end).
	if err := add("keys", `select 'keys-published', case when k.origin = '' then 'uploaded' else 'imported' end, count(*)
		from exposure_keys k join export_batches b on b.id = k.batch_id
		where b.end_at >= $1 and b.end_at < $2 and k.origin <> 'padding' group by 2 order by 2`); err != nil {
		return nil, err
	}
	if err := add("export size", `select 'export-keys', '', count(*)
		from exposure_keys k join export_batches b on b.id = k.batch_id
		where b.end_at >= $1 and b.end_at < $2`); err != nil {
		return nil, err
	}
	if err := add("export files", `select 'export-files', '', count(*)
		from export_batches where end_at >= $1 and end_at < $2`); err != nil {
		return nil, err
	}
	age, ok, err := exportAge(ctx, tx, start, end)
	if err != nil {
		return nil, err
	}
	if ok {
		out = append(out, Row{Figure: FigureAge, Value: age})
	}
	return out, nil
}

// exportAge is the longest the newest export file was old during [start,
// end), in whole minutes: the longest gap between files, from the last
// file before the day to the day's end. No file ever before end: none.
func exportAge(ctx context.Context, tx pgx.Tx, start, end time.Time) (int64, bool, error) {
	rows, err := tx.Query(ctx, `select end_at from export_batches
		where end_at < $2 and end_at >= coalesce((select max(end_at) from export_batches where end_at < $1), $1)
		order by end_at`, start, end)
	if err != nil {
		return 0, false, fmt.Errorf("stats: export age: %w", err)
	}
	ends, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil {
		return 0, false, fmt.Errorf("stats: export age: %w", err)
	}
	if len(ends) == 0 {
		return 0, false, nil
	}
	var longest time.Duration
	for i := 1; i < len(ends); i++ {
		longest = max(longest, ends[i].Sub(ends[i-1]))
	}
	longest = max(longest, end.Sub(ends[len(ends)-1]))
	return int64(longest / time.Minute), true, nil
}

// ClinicianRow is the codes one card holder vouched for in a day.
type ClinicianRow struct {
	UZI     string
	Vouched int64
}

func countClinicians(ctx context.Context, tx pgx.Tx, start, end time.Time) ([]ClinicianRow, error) {
	rows, err := tx.Query(ctx, `select uzi_number, count(*) from authorizations
		where created_at >= $1 and created_at < $2 group by 1 order by 1`, start, end)
	if err != nil {
		return nil, fmt.Errorf("stats: count per clinician: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ClinicianRow])
	if err != nil {
		return nil, fmt.Errorf("stats: count per clinician: %w", err)
	}
	return out, nil
}
