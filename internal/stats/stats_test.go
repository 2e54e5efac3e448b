package stats_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/stats"
	"github.com/vouch-nl/vouch/internal/testenv"
)

var zone = mustZone("Europe/Amsterdam")

func mustZone(name string) *time.Location {
	z, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return z
}

func date(s string) stats.Day {
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return d
}

// at is a time of day d in the zone.
func at(d string, hour, minute int) time.Time {
	t := date(d)
	return time.Date(t.Year(), t.Month(), t.Day(), hour, minute, 0, 0, zone)
}

// seed is the raw rows the tests count.
type seed struct{ db *database.DB }

func (s seed) vouch(t *testing.T, when time.Time, uzi, role string) {
	t.Helper()
	code := make([]byte, 10)
	_, _ = rand.Read(code)
	err := s.db.InTx(t.Context(), func(tx pgx.Tx) error {
		_, err := tx.Exec(t.Context(), `insert into authorizations (id, phone_code, statement, uzi_number, role_code, created_at, expires_at)
			values (gen_random_uuid(), $1, 'st', $2, $3, $4, $5)`, code, uzi, role, when, when.Add(24*time.Hour))
		if err != nil {
			return err
		}
		_, err = audit.Append(t.Context(), tx, audit.Entry{Actor: uzi, Action: audit.ActionVouch}, when)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (s seed) audit(t *testing.T, when time.Time, e audit.Entry) {
	t.Helper()
	if err := s.db.InTx(t.Context(), func(tx pgx.Tx) error {
		_, err := audit.Append(t.Context(), tx, e, when)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// batch is an export file made at end with keys uploaded here, imported
// and padding.
func (s seed) batch(t *testing.T, start, end time.Time, uploaded, imported, padding int) {
	t.Helper()
	ctx := t.Context()
	var id int64
	if err := s.db.Pool().QueryRow(ctx, `insert into export_batches (start_at, end_at) values ($1, $2) returning id`, start, end).Scan(&id); err != nil {
		t.Fatal(err)
	}
	for origin, n := range map[string]int{"": uploaded, "site-b": imported, "padding": padding} {
		for range n {
			k := make([]byte, 16)
			_, _ = rand.Read(k)
			if _, err := s.db.Pool().Exec(ctx, `insert into exposure_keys (key_data, rolling_start, rolling_period, received_hour, origin, batch_id)
				values ($1, 2900000, 144, $2, $3, $4)`, k, start.Truncate(time.Hour), origin, id); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// stored is every statistics row, for comparing runs.
func stored(t *testing.T, db *database.DB) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`select day, figure, label, value from stats_daily order by 1, 2, 3`,
		`select day, uzi_number, vouched from stats_clinician_daily order by 1, 2`,
		`select day from stats_days order by 1`,
	} {
		rows, err := db.Pool().Query(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(&b, vals...)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func dayRows(t *testing.T, db *database.DB, day string) []stats.Row {
	t.Helper()
	rows, err := db.Pool().Query(t.Context(), `select figure, label, value from stats_daily where day = $1 order by 1, 2`, date(day))
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[stats.Row])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCompute counts seeded rows of one day, and of none else, in the
// zone's day (23:30 on the 1st is not the 2nd, 00:30 on the 3rd neither).
func TestCompute(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	s := seed{db}
	for i := range 12 {
		s.vouch(t, at("2026-11-02", 9, i), "111111111", "01.015")
	}
	s.vouch(t, at("2026-11-02", 10, 0), "222222222", "30.000")
	s.vouch(t, at("2026-11-02", 23, 59), "222222222", "30.000")
	s.vouch(t, at("2026-11-01", 23, 30), "333333333", "01.015") // the day before
	s.vouch(t, at("2026-11-03", 0, 30), "333333333", "01.015")  // the day after
	s.audit(t, at("2026-11-02", 8, 0), audit.Entry{Actor: "111111111", Action: audit.ActionSignIn})
	s.audit(t, at("2026-11-02", 8, 1), audit.Entry{Actor: "111111111", Action: audit.ActionSignInRefused, Reason: "license-suspended"})
	s.audit(t, at("2026-11-02", 8, 2), audit.Entry{Action: audit.ActionRequestRefused, Reason: "rate-limited",
		Detail: `{"count":41,"first":"2026-11-02T07:01:00Z","last":"2026-11-02T07:01:59Z"}`})
	s.audit(t, at("2026-11-02", 8, 3), audit.Entry{Action: audit.ActionRequestRefused, Reason: "rate-limited",
		Detail: `{"count":"9999999999999"}`}) // not the back office's count: one
	s.audit(t, at("2026-11-02", 8, 4), audit.Entry{Actor: "111111111", Action: audit.ActionLock})
	// Files at 00:00 the day before, 06:00 and 16:00: the newest file was
	// 30 h old at 06:00 (from the day before's), then 10 h, then 8 h.
	s.batch(t, at("2026-10-31", 0, 0), at("2026-11-01", 0, 0), 1, 0, 0)
	s.batch(t, at("2026-11-01", 0, 0), at("2026-11-02", 6, 0), 20, 3, 5)
	s.batch(t, at("2026-11-02", 6, 0), at("2026-11-02", 16, 0), 2, 0, 0)

	c := stats.NewCounter(db.Pool(), zone)
	now := at("2026-11-03", 1, 0)
	days, err := c.Compute(t.Context(), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(days) != 28 || !days[len(days)-1].Equal(date("2026-11-02")) {
		t.Fatalf("counted %d days up to %v, want the 28 days up to 2026-11-02", len(days), days[len(days)-1])
	}
	want := []stats.Row{
		{Figure: "export-age", Value: 30 * 60},
		{Figure: "export-files", Value: 2},
		{Figure: "export-keys", Value: 30},
		{Figure: "keys-published", Label: "imported", Value: 3},
		{Figure: "keys-published", Label: "uploaded", Value: 22},
		{Figure: "refusals", Label: "license-suspended", Value: 1},
		{Figure: "refusals", Label: "rate-limited", Value: 42},
		{Figure: "sign-ins", Value: 1},
		{Figure: "vouches", Label: "01", Value: 12},
		{Figure: "vouches", Label: "30", Value: 2},
	}
	if diff := cmp.Diff(want, dayRows(t, db, "2026-11-02")); diff != "" {
		t.Errorf("2026-11-02 (-want +got):\n%s", diff)
	}
	cl, err := stats.LoadClinicians(t.Context(), db.Pool(), date("2026-11-02"), date("2026-11-02"))
	if err != nil {
		t.Fatal(err)
	}
	wantCl := []stats.ClinicianSummary{{UZI: "111111111", Vouched: 12, MaxPerDay: 12, ActiveDays: 1}, {UZI: "222222222", Vouched: 2, MaxPerDay: 2, ActiveDays: 1}}
	if diff := cmp.Diff(wantCl, cl); diff != "" {
		t.Errorf("per clinician (-want +got):\n%s", diff)
	}
}

// TestComputeIsIncrementalAndIdempotent: a second run counts no day
// again; a day counted again gives the same rows; two copies at once
// count each day once.
func TestComputeIsIncrementalAndIdempotent(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	s := seed{db}
	for i := range 15 {
		s.vouch(t, at("2026-11-02", 9, i), "111111111", "01.015")
	}
	c := stats.NewCounter(db.Pool(), zone)
	now := at("2026-11-03", 1, 0)

	// Two copies at once.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			_, err := c.Compute(t.Context(), now)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	first := stored(t, db)
	if !strings.Contains(first, "vouches 01 15") {
		t.Fatalf("rows:\n%s\nwant vouches 01 15 once", first)
	}

	// Incremental: a row that arrives late for a counted day is not
	// counted by the next run, which counts only the new day.
	s.vouch(t, at("2026-11-02", 11, 0), "111111111", "01.015")
	days, err := c.Compute(t.Context(), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]stats.Day{date("2026-11-03")}, days); diff != "" {
		t.Errorf("second run counted (-want +got):\n%s", diff)
	}
	if got := dayRows(t, db, "2026-11-02"); got[0].Value != 15 {
		t.Errorf("2026-11-02 counted again by an incremental run: %v", got)
	}

	// Again on purpose: the day's rows are replaced, twice the same.
	if err := c.ComputeDay(t.Context(), date("2026-11-02"), now); err != nil {
		t.Fatal(err)
	}
	again := stored(t, db)
	if err := c.ComputeDay(t.Context(), date("2026-11-02"), now); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(again, stored(t, db)); diff != "" {
		t.Errorf("a rerun changed the rows (-first +second):\n%s", diff)
	}
	if !strings.Contains(again, "vouches 01 16") {
		t.Errorf("rows after counting the day again:\n%s\nwant vouches 01 16", again)
	}
}

// TestComputeDayNotOver: a day is counted once it is over, Settle after.
func TestComputeDayNotOver(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	c := stats.NewCounter(db.Pool(), zone)
	for _, now := range []time.Time{at("2026-11-02", 23, 0), at("2026-11-03", 0, 5)} {
		if err := c.ComputeDay(t.Context(), date("2026-11-02"), now); !errors.Is(err, stats.ErrNotOver) {
			t.Errorf("at %v: err = %v, want ErrNotOver", now, err)
		}
	}
	days, err := c.Compute(t.Context(), at("2026-11-03", 0, 5))
	if err != nil {
		t.Fatal(err)
	}
	if last := days[len(days)-1]; !last.Equal(date("2026-11-01")) {
		t.Errorf("at 00:05 the last day counted is %v, want 2026-11-01", last)
	}
}

// TestPublicFiles: the files hold no card holder, no count under 10, no
// part of a figure (which professions vouched in a span would say that
// one did, however few), and no day that ended less than 48 hours ago.
func TestPublicFiles(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	s := seed{db}
	for i := range 23 {
		s.vouch(t, at("2026-11-02", 9, i), "111111111", "01.015")
	}
	for i := range 3 {
		s.vouch(t, at("2026-11-02", 10, i), "222222222", "03.000")
	}
	for i := range 11 {
		s.vouch(t, at("2026-11-03", 9, i), "111111111", "01.015")
	}
	c := stats.NewCounter(db.Pool(), zone)
	// 2026-11-03 ended 47 hours before now: not public yet.
	now := at("2026-11-05", 23, 0)
	if _, err := c.Compute(t.Context(), now); err != nil {
		t.Fatal(err)
	}
	j, csv, err := stats.PublicFiles(t.Context(), db.Pool(), now, zone)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"json": j, "csv": csv} {
		for _, bad := range []string{"111111111", "222222222", "2026-11-03", ",3\n", ",23\n", `"value": 3`, `"value": 23`, "vouches,01", "vouches,03", `"label": "01"`} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s holds %q:\n%s", name, bad, b)
			}
		}
	}
	for _, want := range []string{"2026-11-02,day,vouches,,26\n", "2026-11-02,day,sign-ins,,<10\n", "2026-11-01,day,vouches,,<10\n"} {
		if !bytes.Contains(csv, []byte(want)) {
			t.Errorf("csv lacks %q:\n%s", want, csv)
		}
	}
	var f struct {
		Public bool
		Rows   []stats.FileRow
	}
	if err := json.Unmarshal(j, &f); err != nil || !f.Public || len(f.Rows) == 0 {
		t.Fatalf("json: %v %+v", err, f)
	}

	// An hour later 2026-11-03 is 48 hours over, and public.
	_, csv, err = stats.PublicFiles(t.Context(), db.Pool(), now.Add(time.Hour), zone)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(csv, []byte("2026-11-03,day,vouches,,11\n")) {
		t.Errorf("48 hours after 2026-11-03 it is not public:\n%s", csv)
	}
}
