package retention

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// clock is the injected now of every test but the audit's, whose six
// years the database counts by its own clock.
var clock = time.Date(2026, 12, 3, 12, 30, 0, 0, time.UTC)

func cleaner(t *testing.T, cfg Config, db *database.DB, now time.Time) *Cleaner {
	t.Helper()
	c, err := New(cfg, db.Pool(), func() time.Time { return now }, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func exec(t *testing.T, db *database.DB, sql string, args ...any) {
	t.Helper()
	if _, err := db.Pool().Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func column(t *testing.T, db *database.DB, sql string) []string {
	t.Helper()
	rows, err := db.Pool().Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestKeysPastTheDaysPublished(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	oldest := exposure.IntervalNumber(clock.Add(-14 * 24 * time.Hour))
	keys := []struct {
		name          string
		start, period int32
		origin        string
	}{
		{"ended long ago", oldest - 300, 144, ""},
		{"ended exactly at the bound", oldest - 144, 144, ""},
		{"padding ended", oldest - 200, 144, "padding"},
		{"site ended", oldest - 150, 144, "other-site"},
		{"still in the window by one interval", oldest - 143, 144, ""},
		{"padding in the window", oldest + 10, 144, "padding"},
		{"today", exposure.IntervalNumber(clock) / 144 * 144, 144, ""},
	}
	for i, k := range keys {
		exec(t, db, `insert into exposure_keys (key_data, rolling_start, rolling_period, received_hour, origin) values ($1, $2, $3, $4, $5)`,
			append(random(15), byte(i)), k.start, k.period, clock, k.origin+"|"+k.name) // the name rides along to read the result
	}
	n, err := cleaner(t, Config{}, db, clock).Keys(context.Background(), clock)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("deleted %d keys, want 4", n)
	}
	got := column(t, db, `select origin from exposure_keys`)
	want := []string{"padding|padding in the window", "|still in the window by one interval", "|today"}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("keys kept (-want +got):\n%s", diff)
	}
}

func TestAuthorizationsAfter30Days(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	for _, a := range []struct {
		uzi     string
		created time.Time
	}{
		{"old", clock.Add(-31 * 24 * time.Hour)},
		{"just-old", clock.Add(-AuthorizationKeep - time.Second)},
		{"recent", clock.Add(-29 * 24 * time.Hour)},
		{"today", clock},
	} {
		exec(t, db, `insert into authorizations (id, phone_code, statement, uzi_number, created_at, expires_at)
			values (gen_random_uuid(), $1, 's', $2, $3, $4)`, random(10), a.uzi, a.created, a.created.Add(24*time.Hour))
	}
	n, err := cleaner(t, Config{}, db, clock).Authorizations(context.Background(), clock)
	if err != nil || n != 2 {
		t.Errorf("Authorizations = %d, %v; want 2", n, err)
	}
	if diff := cmp.Diff([]string{"recent", "today"}, column(t, db, `select uzi_number from authorizations`)); diff != "" {
		t.Errorf("kept (-want +got):\n%s", diff)
	}
}

func TestExpiredChallengesAndSessions(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	for _, exp := range []time.Duration{-time.Hour, -time.Second, time.Minute} {
		exec(t, db, `insert into login_challenges (hash, purpose, expires_at) values ($1, 'sign-in', $2)`, random(32), clock.Add(exp))
	}
	for _, s := range []struct {
		holder string
		age    time.Duration
	}{{"dead", 13 * time.Hour}, {"alive", 11 * time.Hour}, {"new", 0}} {
		at := clock.Add(-s.age)
		exec(t, db, `insert into backoffice_sessions (hash, uzi_number, holder, role, card_type, role_code, auth_cert_hash, lang, created_at, seen_at)
			values ($1, '900000001', $2, 'clinician', 'Z', '01.015', $3, 'nl', $4, $4)`, random(32), s.holder, random(32), at)
	}
	c := cleaner(t, Config{SessionMax: 12 * time.Hour}, db, clock)
	if n, err := c.Challenges(context.Background(), clock); err != nil || n != 2 {
		t.Errorf("Challenges = %d, %v; want 2", n, err)
	}
	if n, err := c.Sessions(context.Background(), clock); err != nil || n != 1 {
		t.Errorf("Sessions = %d, %v; want 1", n, err)
	}
	if diff := cmp.Diff([]string{"alive", "new"}, column(t, db, `select holder from backoffice_sessions`)); diff != "" {
		t.Errorf("sessions kept (-want +got):\n%s", diff)
	}
}

func TestAccessLogsAfter48Hours(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	name := func(h time.Duration) string { return "access-" + clock.Add(-h).UTC().Format(accessLogLayout) + ".log" }
	files := map[string]time.Time{
		name(72 * time.Hour): clock, // the name counts, not the mtime
		name(49 * time.Hour): clock,
		name(47 * time.Hour): clock,
		name(0):              clock,
		"access-rotated.log": clock.Add(-50 * time.Hour), // no hour in the name: the mtime counts
		"access-fresh.log":   clock.Add(-time.Hour),
		"other.log":          clock.Add(-100 * time.Hour), // not an access log
	}
	for f, mtime := range files {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, []byte("{}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	// 12:30 minus 48h lies inside the hour 48 hours back; that hour began
	// more than 48 hours ago, so its file goes too.
	files[name(48*time.Hour)] = clock
	if err := os.WriteFile(filepath.Join(dir, name(48*time.Hour)), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{AccessLogDir: dir}, nil, func() time.Time { return clock }, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.AccessLogs(context.Background(), clock)
	if err != nil || n != 4 {
		t.Errorf("AccessLogs = %d, %v; want 4", n, err)
	}
	entries, _ := os.ReadDir(dir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{name(47 * time.Hour), name(0), "access-fresh.log", "other.log"}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files kept (-want +got):\n%s", diff)
	}
}

func TestAccessLogDirMissingIsNothing(t *testing.T) {
	t.Parallel()
	c, err := New(Config{AccessLogDir: filepath.Join(t.TempDir(), "none")}, nil, nil, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.AccessLogs(context.Background(), clock); n != 0 || err != nil {
		t.Errorf("AccessLogs = %d, %v; want 0, nil", n, err)
	}
}

func TestAuditRowsAfterSixYears(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	now := time.Now()
	for _, at := range []time.Time{now.AddDate(-7, 0, 0), now.AddDate(-6, 0, -1), now.AddDate(-6, 0, 1), now} {
		if err := db.InTx(context.Background(), func(tx pgx.Tx) error {
			_, err := audit.Append(context.Background(), tx, audit.Entry{Actor: "900000001", Action: audit.ActionSignIn}, at)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := cleaner(t, Config{}, db, now).AuditRows(context.Background(), now)
	if err != nil || n != 2 {
		t.Fatalf("AuditRows = %d, %v; want 2", n, err)
	}
	var rep audit.Report
	if err := db.InTx(context.Background(), func(tx pgx.Tx) (err error) {
		rep, err = audit.Verify(context.Background(), tx, nil)
		return err
	}); err != nil {
		t.Fatalf("the chain does not verify after pruning: %v", err)
	}
	if rep.First != 3 || rep.Rows != 3 {
		t.Errorf("chain: %d rows from %d, want 3 from row 3 (the row inside six years, today's, the prune's)", rep.Rows, rep.First)
	}
}

func TestOnceRunsEveryRuleDespiteAFailure(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	exec(t, db, `insert into authorizations (id, phone_code, statement, uzi_number, created_at, expires_at)
		values (gen_random_uuid(), $1, 's', 'old', $2, $2)`, random(10), clock.AddDate(0, -2, 0))
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := cleaner(t, Config{AccessLogDir: notADir}, db, clock).Once(context.Background())
	if err == nil {
		t.Error("Once hid the access log failure")
	}
	if rep.Authorizations != 1 {
		t.Errorf("report %+v: the other rules did not run", rep)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"below the floor", Config{KeysMaxAgeDays: exposure.FloorMaxAgeDays - 1}, false},
		{"at the floor", Config{KeysMaxAgeDays: exposure.FloorMaxAgeDays}, true},
		{"interval too short", Config{Interval: time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestOnceChecksTheAuditChain(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	for range 3 {
		if err := db.InTx(context.Background(), func(tx pgx.Tx) error {
			_, err := audit.Append(context.Background(), tx, audit.Entry{Actor: "900000001", Action: audit.ActionSignIn}, clock)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	c, err := New(Config{}, db.Pool(), func() time.Time { return clock }, reg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	// Before the first check there is no answer, not a 0 that would page.
	if mfs, err := reg.Gather(); err != nil || slices.ContainsFunc(mfs, func(mf *dto.MetricFamily) bool {
		return strings.HasPrefix(mf.GetName(), "vouch_audit_chain_")
	}) {
		t.Fatalf("audit chain gauges exported before any check (%v)", err)
	}
	if _, err := c.Once(context.Background()); err != nil {
		t.Fatalf("Once on an intact chain: %v", err)
	}
	if ok, at := gauge(t, reg, "vouch_audit_chain_ok"), gauge(t, reg, "vouch_audit_chain_checked_timestamp_seconds"); ok != 1 || at != float64(clock.Unix()) {
		t.Fatalf("intact chain: vouch_audit_chain_ok %v checked at %v, want 1 at %d", ok, at, clock.Unix())
	}

	// What the owner of the database can do: edit a row past the triggers.
	exec(t, db, `begin; alter table audit_log disable trigger user; update audit_log set actor = '900000002' where seq = 2;
		alter table audit_log enable trigger user; commit`)
	later := clock.Add(time.Hour)
	c.now = func() time.Time { return later }
	_, err = c.Once(context.Background())
	var p audit.Problem
	if !errors.As(err, &p) || p.Seq != 2 {
		t.Fatalf("Once on an edited chain = %v, want the audit problem at row 2", err)
	}
	if ok, at := gauge(t, reg, "vouch_audit_chain_ok"), gauge(t, reg, "vouch_audit_chain_checked_timestamp_seconds"); ok != 0 || at != float64(later.Unix()) {
		t.Errorf("broken chain: vouch_audit_chain_ok %v checked at %v, want 0 at %d", ok, at, later.Unix())
	}
}

// gauge is the value of the gauge name in reg, as /metrics serves it.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s exported", name)
	return 0
}
