// Package retention deletes what Vouch keeps no longer: published keys
// past the days published, authorizations after 30 days, expired login
// challenges and sessions, the ingest's HTTP access logs after 48 hours and
// audit rows after six years, then checks that the audit chain still holds
// (vouch_audit_chain_ok). `vouch cleanup` runs it once or in a loop.
// An admin may set other periods in the back office (internal/settings,
// SetPeriods), within the law's bounds, which this package keeps too.
//
// Each rule runs on its own: one that fails (a full disk, a lock) is
// reported and the others still delete.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/exposure"
)

// How long each thing is kept.
const (
	// AuthorizationKeep: an authorization is valid 24 hours; its row stays
	// so that a replay is answered, then goes.
	AuthorizationKeep = 30 * 24 * time.Hour
	// AccessLogKeep: no access log line may be 48 hours old.
	AccessLogKeep = 48 * time.Hour
	// AuditKeepYears: the audit log is kept six years (the database refuses
	// less).
	AuditKeepYears = 6
	// MinAuthorizationKeep: an authorization's row answers a replay while
	// it is valid (24 hours), and a day after.
	MinAuthorizationKeep = 48 * time.Hour
)

// Periods are how long authorizations, access logs and audit rows are
// kept: an admin's settings (internal/settings).
type Periods struct {
	Authorizations time.Duration
	AccessLogs     time.Duration
	AuditYears     int
}

// defaultPeriods are the periods when none is set.
var defaultPeriods = Periods{Authorizations: AuthorizationKeep, AccessLogs: AccessLogKeep, AuditYears: AuditKeepYears}

// SetPeriods has c read the periods from periods at every run (an admin's
// settings, kept current by a settings.Store). A period outside the law's
// bounds — access logs over 48 hours, audit rows under six years,
// authorizations under MinAuthorizationKeep, or none — is not used: the
// default is, whatever the settings say.
func (c *Cleaner) SetPeriods(periods func() Periods) { c.periodsOf = periods }

// periods are the periods in effect now.
func (c *Cleaner) periods() Periods {
	p := defaultPeriods
	if c.periodsOf == nil {
		return p
	}
	set := c.periodsOf()
	if set.Authorizations >= MinAuthorizationKeep {
		p.Authorizations = set.Authorizations
	}
	if set.AccessLogs > 0 && set.AccessLogs <= AccessLogKeep {
		p.AccessLogs = set.AccessLogs
	}
	if set.AuditYears >= AuditKeepYears {
		p.AuditYears = set.AuditYears
	}
	return p
}

// Config is the cleanup's configuration.
type Config struct {
	// Interval is how often the loop runs.
	Interval time.Duration `env:"VOUCH_CLEANUP_INTERVAL, default=1h"`
	// KeysMaxAgeDays is how many days of keys are published: the same
	// variable ingest and the aggregator read.
	KeysMaxAgeDays int `env:"VOUCH_KEYS_MAX_AGE_DAYS, default=14"`
	// AccessLogDir is the ingest's access log directory; "" when this
	// machine has none.
	AccessLogDir string `env:"VOUCH_INGEST_ACCESS_LOG_DIR"`
	// SessionMax is the back office's absolute session lifetime: a session
	// older is dead whatever it did.
	SessionMax time.Duration `env:"VOUCH_SESSION_MAX, default=12h"`
}

func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = time.Hour
	}
	if c.KeysMaxAgeDays == 0 {
		c.KeysMaxAgeDays = exposure.DefaultMaxAgeDays
	}
	if c.SessionMax == 0 {
		c.SessionMax = 12 * time.Hour
	}
	return c
}

// Validate says what is wrong with c, all of it.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Interval < time.Minute {
		errs = append(errs, fmt.Errorf("VOUCH_CLEANUP_INTERVAL must be at least 1m, got %s", c.Interval))
	}
	if c.KeysMaxAgeDays < exposure.FloorMaxAgeDays || c.KeysMaxAgeDays > 30 {
		errs = append(errs, fmt.Errorf("VOUCH_KEYS_MAX_AGE_DAYS must be %d..30, got %d", exposure.FloorMaxAgeDays, c.KeysMaxAgeDays))
	}
	if c.SessionMax <= 0 {
		errs = append(errs, fmt.Errorf("VOUCH_SESSION_MAX must be positive, got %s", c.SessionMax))
	}
	return errors.Join(errs...)
}

// DB runs statements and transactions: a pool.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Report is what one run deleted.
type Report struct {
	Keys, Authorizations, Challenges, Sessions, AccessLogs, AuditRows int64
}

// Cleaner applies the rules.
type Cleaner struct {
	cfg     Config
	db      DB
	now     func() time.Time
	log     *slog.Logger
	deleted *prometheus.CounterVec
	// chainOK and chainChecked are what the last audit chain check found
	// (VerifyAudit): an operator's alert needs both a broken chain and a
	// check that stopped running. Vectors without labels, so that neither
	// is exported before the first check: a 0 there would page for a
	// broken chain nobody found.
	chainOK      *prometheus.GaugeVec
	chainChecked *prometheus.GaugeVec
	// periodsOf are the admin's periods (SetPeriods); nil: the defaults.
	periodsOf func() Periods
}

// New checks cfg and returns a Cleaner. now is the clock (nil: time.Now);
// reg may be nil.
func New(cfg Config, db DB, now func() time.Time, reg prometheus.Registerer, log *slog.Logger) (*Cleaner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	c := &Cleaner{cfg: cfg.withDefaults(), db: db, now: now, log: log,
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vouch_cleanup_deleted_total", Help: "Rows and files deleted past retention."}, []string{"what"}),
		chainOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vouch_audit_chain_ok",
			Help: "1 if the audit chain held at the last check, 0 if it was broken (vouch audit verify says where)."}, nil),
		chainChecked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vouch_audit_chain_checked_timestamp_seconds",
			Help: "When the audit chain was last checked to the end, whatever the result."}, nil),
	}
	if reg != nil {
		reg.MustRegister(c.deleted, c.chainOK, c.chainChecked)
	}
	return c, nil
}

// Run cleans at once and then every Interval until ctx ends. A failed run
// is logged and retried at the next.
//
// Several copies may run (one per machine: each cleans its own machine's
// access logs), at once, and take no lease (internal/lease): none is
// needed, and one would be wrong. Every rule is one statement or one
// transaction that deletes what is past retention, so two copies delete
// each row once between them and a copy frozen past any lease can only
// delete, late, what was due anyway; the audit prune and its own audit
// row are one transaction under the audit log's transaction-scoped
// advisory lock (audit.Prune), so a second copy waits and prunes nothing.
// A lease held by one copy would leave the access logs of the others'
// machines beyond 48 hours.
func (c *Cleaner) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := c.Once(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("cleanup: run incomplete", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Once applies every rule once and reports what went; the error joins
// those of the rules that failed.
func (c *Cleaner) Once(ctx context.Context) (Report, error) {
	now := c.now()
	var rep Report
	var errs []error
	for _, rule := range []struct {
		what string
		n    *int64
		fn   func(context.Context, time.Time) (int64, error)
	}{
		{"keys", &rep.Keys, c.Keys},
		{"authorizations", &rep.Authorizations, c.Authorizations},
		{"login_challenges", &rep.Challenges, c.Challenges},
		{"sessions", &rep.Sessions, c.Sessions},
		{"access_logs", &rep.AccessLogs, c.AccessLogs},
		{"audit_rows", &rep.AuditRows, c.AuditRows},
	} {
		n, err := rule.fn(ctx, now)
		*rule.n = n
		c.deleted.WithLabelValues(rule.what).Add(float64(n))
		if err != nil {
			errs = append(errs, err)
		}
	}
	// After the prune: the anchor it left is where the check starts.
	if _, err := c.VerifyAudit(ctx, now); err != nil {
		errs = append(errs, err)
	}
	c.log.Info("cleanup: done", "keys", rep.Keys, "authorizations", rep.Authorizations, "login_challenges", rep.Challenges,
		"sessions", rep.Sessions, "access_logs", rep.AccessLogs, "audit_rows", rep.AuditRows)
	return rep, errors.Join(errs...)
}

// VerifyAudit recomputes the whole audit chain (audit.Verify) on one
// snapshot and sets vouch_audit_chain_ok and its timestamp, so that a
// broken chain pages someone instead of waiting for an auditor's verify.
// A chain that does not hold is an error wrapping the audit.Problem; one
// that could not be read leaves the gauges as they were.
func (c *Cleaner) VerifyAudit(ctx context.Context, now time.Time) (audit.Report, error) {
	var rep audit.Report
	err := pgx.BeginFunc(ctx, c.db, func(tx pgx.Tx) error {
		// One snapshot: rows appended meanwhile neither help nor hide.
		if _, err := tx.Exec(ctx, `set transaction isolation level repeatable read, read only`); err != nil {
			return err
		}
		var err error
		rep, err = audit.Verify(ctx, tx, nil)
		return err
	})
	var p audit.Problem
	switch {
	case errors.As(err, &p):
		c.chainOK.WithLabelValues().Set(0)
	case err != nil:
		return rep, fmt.Errorf("retention: audit chain check: %w", err)
	default:
		c.chainOK.WithLabelValues().Set(1)
	}
	c.chainChecked.WithLabelValues().Set(float64(now.Unix()))
	if err != nil {
		c.log.Error("cleanup: the audit chain does not hold; run vouch audit verify", "seq", p.Seq, "kind", p.Kind)
		return rep, fmt.Errorf("retention: %w", err)
	}
	return rep, nil
}

// Keys deletes the keys that stopped being valid KeysMaxAgeDays ago or
// earlier — the keys Validate refuses as too old — padding keys too: an
// export of the last days no longer includes them.
func (c *Cleaner) Keys(ctx context.Context, now time.Time) (int64, error) {
	oldest := exposure.IntervalNumber(now.Add(-time.Duration(c.cfg.KeysMaxAgeDays) * 24 * time.Hour))
	// rolling_start < oldest lets the index narrow the scan: a key that
	// ends by oldest started before it.
	tag, err := c.db.Exec(ctx, `delete from exposure_keys
		where rolling_start < $1 and rolling_start + rolling_period <= $1`, oldest)
	if err != nil {
		return 0, fmt.Errorf("retention: keys: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Authorizations deletes the authorizations created 30 days ago or earlier
// (or the admin's period).
func (c *Cleaner) Authorizations(ctx context.Context, now time.Time) (int64, error) {
	tag, err := c.db.Exec(ctx, `delete from authorizations where created_at < $1`, now.Add(-c.periods().Authorizations))
	if err != nil {
		return 0, fmt.Errorf("retention: authorizations: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Challenges deletes the login challenges that expired unused.
func (c *Cleaner) Challenges(ctx context.Context, now time.Time) (int64, error) {
	tag, err := c.db.Exec(ctx, `delete from login_challenges where expires_at < $1`, now)
	if err != nil {
		return 0, fmt.Errorf("retention: login challenges: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Sessions deletes the back office sessions past their absolute lifetime.
func (c *Cleaner) Sessions(ctx context.Context, now time.Time) (int64, error) {
	tag, err := c.db.Exec(ctx, `delete from backoffice_sessions where created_at < $1`, now.Add(-c.cfg.SessionMax))
	if err != nil {
		return 0, fmt.Errorf("retention: sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// accessLogLayout is the UTC hour in an access log's name,
// access-YYYYMMDDHH.log (internal/ingest).
const accessLogLayout = "2006010215"

// AccessLogs deletes the files access-*.log in AccessLogDir whose hour (in
// the name, or the file's modification time when the name has none) began
// 48 hours (or the admin's period) ago or more. Ingest prunes its own too; this covers an ingest
// that stopped.
func (c *Cleaner) AccessLogs(_ context.Context, now time.Time) (int64, error) {
	if c.cfg.AccessLogDir == "" {
		return 0, nil
	}
	entries, err := os.ReadDir(c.cfg.AccessLogDir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("retention: access logs: %w", err)
	}
	var n int64
	var errs []error
	keep := c.periods().AccessLogs
	for _, e := range entries {
		name := e.Name()
		stamp, ok := strings.CutPrefix(name, "access-")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if stamp, ok = strings.CutSuffix(stamp, ".log"); !ok {
			continue
		}
		from, err := time.Parse(accessLogLayout, stamp)
		if err != nil {
			info, err := e.Info()
			if err != nil {
				continue // gone meanwhile
			}
			from = info.ModTime()
		}
		if now.Sub(from) < keep {
			continue
		}
		if err := os.Remove(filepath.Join(c.cfg.AccessLogDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("retention: access logs: %w", err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// AuditRows deletes the audit rows older than six years (or the admin's
// period, never less) from the start of the chain, leaving the anchor
// Verify starts from (audit.Prune).
func (c *Cleaner) AuditRows(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	years := c.periods().AuditYears
	err := pgx.BeginFunc(ctx, c.db, func(tx pgx.Tx) (err error) {
		n, err = audit.Prune(ctx, tx, now.AddDate(-years, 0, 0), now)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("retention: audit rows: %w", err)
	}
	return n, nil
}
