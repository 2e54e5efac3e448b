// Package registrysync mirrors the national register into PostgreSQL and
// pushes license changes to the public tier. A full sync reads the register
// page by page and replaces the mirror in one transaction; an incremental
// sync applies what changed since the last cookie (RFC 4533). Every run is
// recorded; failures leave the previous mirror whole, and the loop retries
// with backoff until the register answers again.
package registrysync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"vouch/internal/database"
	"vouch/internal/directory"
)

// Config of the sync job.
type Config struct {
	Interval     time.Duration `env:"VOUCH_REGISTRY_SYNC_INTERVAL, default=30s"`
	FullInterval time.Duration `env:"VOUCH_REGISTRY_FULL_SYNC_INTERVAL, default=24h"`
	RetryMin     time.Duration `env:"VOUCH_REGISTRY_RETRY_MIN, default=1s"`
	RetryMax     time.Duration `env:"VOUCH_REGISTRY_RETRY_MAX, default=1m"`
	Bucket       string        `env:"VOUCH_LICENSE_BUCKET, default=vouch-licenses"`
	// ClockSkew is how far the register's clock may be from ours; a
	// register without syncrepl is asked for changes since that long
	// before the last run began.
	ClockSkew time.Duration `env:"VOUCH_REGISTRY_CLOCK_SKEW, default=5m"`
	// CRLSources are files or http(s) URLs of the issuing CAs' CRLs.
	CRLSources []string `env:"VOUCH_UZI_CRL_SOURCES"`
}

// Result counts what one run did.
type Result struct {
	Kind    string // full or incremental
	Entries int64  // entries read (full) or changed (incremental)
	Changes int    // license states that changed
	Skipped int    // malformed entries left out
}

// Syncer runs syncs. Several may run in a deployment; an advisory lock lets
// one at a time write.
type Syncer struct {
	cfg     Config
	dir     *directory.Client
	db      *database.DB
	kv      jetstream.KeyValue
	js      jetstream.JetStream
	log     *slog.Logger
	metrics *Metrics
	crls    *crlFetcher
	now     func() time.Time

	// afterPage, when set (tests), runs after each page of a full sync has
	// been read, so a test can take the register down mid-sync.
	afterPage func(pages int)
}

// lockKey is the advisory lock of the sync job ("vouch-re").
const lockKey = 0x766f7563682d7265

// New prepares a syncer and the license bucket.
func New(ctx context.Context, cfg Config, dir *directory.Client, db *database.DB, js jetstream.JetStream, crls *CRLConfig, log *slog.Logger, m *Metrics) (*Syncer, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cfg.Bucket, History: 5,
		Description: "license states by UZI number; a key that is not active refuses uploads"})
	if err != nil {
		return nil, fmt.Errorf("registrysync: license bucket: %w", err)
	}
	s := &Syncer{cfg: cfg, dir: dir, db: db, kv: kv, js: js, log: log, metrics: m, now: time.Now}
	if crls != nil {
		s.crls = &crlFetcher{cfg: *crls, db: db, log: log}
	}
	return s, nil
}

// Once brings the mirror up to date: a full sync when there is no cookie,
// the register asks for one, or the last full sync is older than
// FullInterval; an incremental sync otherwise.
func (s *Syncer) Once(ctx context.Context) (Result, error) {
	if s.crls != nil {
		if err := s.crls.fetchAll(ctx, s.now()); err != nil {
			s.log.Warn("CRL fetch failed; the stored CRLs stay in force until they expire", "err", err)
		}
	}
	cookie, _, err := loadState(ctx, s.db.Pool())
	if err != nil {
		return Result{}, err
	}
	if cookie == nil || s.fullDue(ctx) {
		return s.Full(ctx)
	}
	r, err := s.Incremental(ctx, cookie)
	if errors.Is(err, directory.ErrRefreshRequired) {
		s.log.Info("register asks for a full refresh")
		return s.Full(ctx)
	}
	return r, err
}

func (s *Syncer) fullDue(ctx context.Context) bool {
	var last *time.Time
	err := s.db.Pool().QueryRow(ctx, `select max(finished_at) from registry_sync_runs where kind = 'full' and error is null`).Scan(&last)
	return err != nil || last == nil || s.now().Sub(*last) >= s.cfg.FullInterval
}

// Run syncs until ctx ends: once at start, then every Interval; a failed run
// is retried with exponential backoff and jitter, and never ends the loop.
func (s *Syncer) Run(ctx context.Context) error {
	backoff := s.cfg.RetryMin
	for {
		_, err := s.Once(ctx)
		wait := s.cfg.Interval
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("registry sync failed; retrying", "err", err, "in", backoff)
			wait = backoff + time.Duration(rand.Int64N(int64(backoff)/2+1))
			backoff = min(backoff*2, s.cfg.RetryMax)
		} else {
			backoff = s.cfg.RetryMin
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// withLock runs f holding the sync job's advisory lock on one connection.
func (s *Syncer) withLock(ctx context.Context, f func(tx pgx.Tx) error) error {
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		var got bool
		if err := tx.QueryRow(ctx, `select pg_try_advisory_xact_lock($1)`, int64(lockKey)).Scan(&got); err != nil {
			return fmt.Errorf("registrysync: lock: %w", err)
		}
		if !got {
			return ErrBusy
		}
		return f(tx)
	})
}

// ErrBusy means another instance is syncing right now.
var ErrBusy = errors.New("registrysync: another sync is running")

// Full reads the whole register and replaces the mirror with it.
func (s *Syncer) Full(ctx context.Context) (res Result, err error) {
	res.Kind = "full"
	start := s.now()
	defer func() { s.record(start, &res, err) }()
	runID, err := startRun(ctx, s.db.Pool(), "full", start)
	if err != nil {
		return res, err
	}
	defer func() {
		if ferr := finishRun(context.WithoutCancel(ctx), s.db.Pool(), runID, res, err, s.now()); ferr != nil && err == nil {
			err = ferr
		}
	}()
	// A full sync allocates a little per entry and keeps nothing: collecting
	// half as often saves CPU for a few MB more at peak.
	defer debug.SetGCPercent(debug.SetGCPercent(200))
	// The cookie is taken before the scan: whatever changes during the scan
	// is replayed by the next incremental sync, and replays are idempotent.
	cookie, err := s.dir.Cookie(ctx)
	if errors.Is(err, directory.ErrNoSyncrepl) {
		s.log.Info("the register offers no syncrepl; incremental syncs use modifyTimestamp")
		cookie, err = directory.TimestampCookie(start.Add(-s.cfg.ClockSkew)), nil
	}
	if err != nil {
		return res, err
	}
	s.log.Debug("full sync: cookie taken", "seconds", s.now().Sub(start).Seconds())
	var skipped atomic.Int64 // the scan goroutine and the COPY both skip
	skip := func(dn string, err error) {
		skipped.Add(1)
		s.log.Warn("register entry skipped", "dn", dn, "err", err)
	}
	defer func() { res.Skipped = int(skipped.Load()) }()
	err = s.withLock(ctx, func(tx pgx.Tx) error {
		pages := make(chan []directory.Entry, 4)
		scanErr := make(chan error, 1)
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			defer close(pages)
			n := 0
			scanErr <- s.dir.Scan(sctx, func(p []directory.Entry) error {
				n++
				select {
				case pages <- p:
				case <-sctx.Done():
					return sctx.Err()
				}
				if s.afterPage != nil {
					s.afterPage(n)
				}
				return nil
			}, skip)
		}()
		n, err := fullSwap(ctx, tx, pages, start, skip, func(what string) {
			s.log.Debug("full sync: "+what, "seconds", s.now().Sub(start).Seconds())
		})
		s.log.Debug("full sync: mirror built", "seconds", s.now().Sub(start).Seconds())
		cancel()
		if serr := <-scanErr; serr != nil && !errors.Is(serr, context.Canceled) {
			return serr // the register failed mid-scan: roll back, keep the old mirror
		}
		if err != nil {
			return err
		}
		res.Entries = n
		pub := s.publisher(start)
		if res.Changes, err = fullTransitions(ctx, tx, func(t transition) error { return pub.add(ctx, t) }); err != nil {
			return err
		}
		if err := pub.flush(ctx); err != nil {
			return err
		}
		s.log.Debug("full sync: compared and published", "seconds", s.now().Sub(start).Seconds(), "changes", res.Changes)
		if err := swapTables(ctx, tx); err != nil {
			return err
		}
		s.log.Debug("full sync: swapped", "seconds", s.now().Sub(start).Seconds())
		return saveState(ctx, tx, cookie, start)
	})
	return res, err
}

// Incremental applies the register's changes since cookie.
func (s *Syncer) Incremental(ctx context.Context, cookie []byte) (res Result, err error) {
	res.Kind = "incremental"
	start := s.now()
	defer func() { s.record(start, &res, err) }()
	skip := func(dn string, err error) {
		res.Skipped++
		s.log.Warn("register entry skipped", "dn", dn, "err", err)
	}
	var ch *directory.Changes
	if directory.IsTimestampCookie(cookie) {
		if ch, err = s.dir.ChangesSince(ctx, cookie, skip); err == nil {
			ch.Cookie = directory.TimestampCookie(start.Add(-s.cfg.ClockSkew))
		}
	} else {
		ch, err = s.dir.Changes(ctx, cookie, skip)
	}
	if errors.Is(err, directory.ErrRefreshRequired) {
		return res, err
	}
	runID, rerr := startRun(ctx, s.db.Pool(), "incremental", start)
	if rerr != nil {
		return res, rerr
	}
	defer func() {
		if ferr := finishRun(context.WithoutCancel(ctx), s.db.Pool(), runID, res, err, s.now()); ferr != nil && err == nil {
			err = ferr
		}
	}()
	if err != nil {
		return res, err
	}
	err = s.withLock(ctx, func(tx pgx.Tx) error {
		uzis := make([]string, len(ch.Upserts))
		for i, e := range ch.Upserts {
			uzis[i] = e.UZI
		}
		old, err := states(ctx, tx, `uzi_number = any($1)`, uzis)
		if err != nil {
			return err
		}
		var trans []transition
		for _, e := range ch.Upserts {
			n := licenseState{UZI: e.UZI, Status: e.License, ValidFrom: timePtr(e.ValidFrom), ValidUntil: timePtr(e.ValidUntil)}
			t := transition{UZI: e.UZI, New: &n}
			if o, ok := old[e.UZI]; ok {
				if o.Status == n.Status && eqTime(o.ValidFrom, n.ValidFrom) && eqTime(o.ValidUntil, n.ValidUntil) {
					continue
				}
				t.Old = &o
			}
			trans = append(trans, t)
		}
		var gone map[string]licenseState
		switch {
		case ch.PresentPhase:
			gone, err = notPresent(ctx, tx, append(append([]string{}, ch.Present...), uuidsOf(ch.Upserts)...))
		case len(ch.Deleted) > 0:
			gone, err = states(ctx, tx, `entry_uuid::text = any($1)`, ch.Deleted)
		}
		if err != nil {
			return err
		}
		for _, o := range gone {
			o := o
			trans = append(trans, transition{UZI: o.UZI, Old: &o})
		}
		pub := s.publisher(start)
		for _, t := range trans {
			if err := pub.add(ctx, t); err != nil {
				return err
			}
		}
		if err := pub.flush(ctx); err != nil {
			return err
		}
		res.Changes = len(trans)
		if err := upsert(ctx, tx, ch.Upserts, start); err != nil {
			return err
		}
		if len(gone) > 0 {
			del := make([]string, 0, len(gone))
			for u := range gone {
				del = append(del, u)
			}
			if _, err := tx.Exec(ctx, `delete from registry_entries where uzi_number = any($1)`, del); err != nil {
				return fmt.Errorf("delete from mirror: %w", err)
			}
		}
		res.Entries = int64(len(ch.Upserts) + len(gone))
		return saveState(ctx, tx, ch.Cookie, start)
	})
	return res, err
}

func uuidsOf(es []directory.Entry) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		if e.EntryUUID != "" {
			out = append(out, e.EntryUUID)
		}
	}
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func eqTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// LicenseRecord is the value in the license bucket, keyed by UZI number.
type LicenseRecord struct {
	Status     string     `json:"status"` // active, suspended, revoked, deceased, or removed
	MayVouch   bool       `json:"may_vouch"`
	ValidFrom  *time.Time `json:"valid_from,omitempty"`
	ValidUntil *time.Time `json:"valid_until,omitempty"`
	ChangedAt  time.Time  `json:"changed_at"`
}

// StatusRemoved is the status of a card holder no longer in the register.
const StatusRemoved = "removed"

// publisher puts license states that changed into the bucket, with at most
// maxPending acknowledgements outstanding, so memory stays flat however many
// change. The caller commits only after flush returns: a change is never in
// the mirror without being on its way to the public tier (a republish after
// a failed commit is harmless). A new card holder who may vouch is not
// published: an absent key means "as attested".
type publisher struct {
	s       *Syncer
	now     time.Time
	pending []jetstream.PubAckFuture
}

const maxPending = 1024

func (s *Syncer) publisher(now time.Time) *publisher { return &publisher{s: s, now: now} }

func (p *publisher) add(ctx context.Context, t transition) error {
	var rec LicenseRecord
	switch {
	case t.New == nil:
		rec = LicenseRecord{Status: StatusRemoved, ChangedAt: p.now}
	case t.Old == nil && t.New.mayVouch(p.now):
		return nil
	default:
		rec = LicenseRecord{Status: t.New.Status, MayVouch: t.New.mayVouch(p.now), ValidFrom: t.New.ValidFrom, ValidUntil: t.New.ValidUntil, ChangedAt: p.now}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	f, err := p.s.js.PublishAsync("$KV."+p.s.cfg.Bucket+"."+t.UZI, b)
	if err != nil {
		return fmt.Errorf("registrysync: publish license of %s: %w", t.UZI, err)
	}
	p.s.metrics.changes.Inc()
	p.pending = append(p.pending, f)
	if len(p.pending) >= maxPending {
		return p.flush(ctx)
	}
	return nil
}

// flush waits for every outstanding acknowledgement.
func (p *publisher) flush(ctx context.Context) error {
	timeout := time.After(30 * time.Second)
	for _, f := range p.pending {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("registrysync: license bucket: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			return errors.New("registrysync: license bucket did not acknowledge in time")
		}
	}
	p.pending = p.pending[:0]
	return nil
}

func (s *Syncer) record(start time.Time, r *Result, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.metrics.runs.WithLabelValues(r.Kind, result).Inc()
	s.metrics.duration.WithLabelValues(r.Kind).Observe(s.now().Sub(start).Seconds())
	s.metrics.skipped.Add(float64(r.Skipped))
	if err == nil {
		s.metrics.entries.WithLabelValues(r.Kind).Set(float64(r.Entries))
		s.metrics.lastSuccess.Set(float64(start.Unix()))
		s.log.Info("registry sync", "kind", r.Kind, "entries", r.Entries, "changes", r.Changes, "skipped", r.Skipped,
			"seconds", s.now().Sub(start).Seconds())
	}
}
