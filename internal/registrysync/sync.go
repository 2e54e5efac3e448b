// Package registrysync mirrors the national register into PostgreSQL and
// pushes license changes to the public tier. A full sync reads the register
// page by page and replaces the mirror in one transaction; an incremental
// sync applies what changed since the last cookie (RFC 4533). Every run is
// recorded; failures leave the previous mirror whole, and the loop retries
// with backoff until the register answers again.
package registrysync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/directory"
)

// Config of the sync job.
type Config struct {
	Interval     time.Duration `env:"VOUCH_REGISTRY_SYNC_INTERVAL, default=30s"`
	FullInterval time.Duration `env:"VOUCH_REGISTRY_FULL_SYNC_INTERVAL, default=24h"`
	RetryMin     time.Duration `env:"VOUCH_REGISTRY_RETRY_MIN, default=1s"`
	RetryMax     time.Duration `env:"VOUCH_REGISTRY_RETRY_MAX, default=1m"`
	Bucket       string        `env:"VOUCH_LICENSE_BUCKET, default=vouch-licenses"`
	// MaxShrink is the largest fraction of the mirror one sync may remove;
	// 1 turns the guard off.
	MaxShrink float64 `env:"VOUCH_REGISTRY_MAX_SHRINK, default=0.1"`
	// ClockSkew is how far the register's clock may be from ours; a
	// register without syncrepl is asked for changes since that long
	// before the last run began.
	ClockSkew time.Duration `env:"VOUCH_REGISTRY_CLOCK_SKEW, default=5m"`
	// CRLSources are files or http(s) URLs of the issuing CAs' CRLs.
	CRLSources []string `env:"VOUCH_UZI_CRL_SOURCES"`
	// LockIdle ends a sync's transaction (and so frees the sync's lock)
	// when it has waited that long for its process, idle: a copy frozen
	// mid-sync holds the others back no longer. Longer than the sync
	// waits between two statements (an LDAP page, reading the license
	// bucket whole to reconcile it).
	LockIdle time.Duration `env:"VOUCH_REGISTRY_LOCK_IDLE, default=5m"`
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
	bucket  LicenseBucket
	log     *slog.Logger
	metrics *Metrics
	crls    *crlFetcher
	now     func() time.Time

	// acceptShrink lets one forced full sync past the shrink guard.
	acceptShrink bool

	// reconciled is cleared when Run starts, so that the loop compares the
	// whole bucket with the mirror at its first run, and when the bucket
	// had to be created again; it is set after every reconciliation. While
	// it is set, a reconciliation runs only when the last one (in the
	// database, whoever ran it) is older than FullInterval.
	reconciled bool

	// afterPage, when set (tests), runs after each page of a full sync has
	// been read, so a test can take the register down mid-sync.
	afterPage func(pages int)
	// fault, when set (tests), is asked at each step of a change's way to
	// the bucket and fails that step when it returns an error: a crash
	// between any two steps.
	fault func(step string) error
}

// LicenseBucket is where the public tier reads license states
// (bus.Bucket).
type LicenseBucket interface {
	Ensure(ctx context.Context) (created bool, err error)
	PutAll(ctx context.Context, entries []bus.KeyValue) error
	Each(ctx context.Context, fn func(key string, value []byte) error) error
	Empty(ctx context.Context) (bool, error)
	// Identity names the bucket and when the bus created it: a
	// reconciliation holds only for the bucket it compared.
	Identity(ctx context.Context) (string, error)
}

var _ LicenseBucket = (*bus.Bucket)(nil)

// Steps on a change's way to the bucket, named for fault injection.
const (
	stepOutboxWritten = "outbox-written" // in the sync's transaction, before commit
	stepCommitted     = "committed"      // after commit, before publishing
	stepPublished     = "published"      // acknowledged by the bus, not yet deleted from the outbox
)

func (s *Syncer) step(name string) error {
	if s.fault == nil {
		return nil
	}
	return s.fault(name)
}

// lockKey is the advisory lock of the sync job ("vouch-re").
const lockKey = 0x766f7563682d7265

// BucketDescription describes the license bucket in the bus's monitoring.
const BucketDescription = "license states by UZI number; a key that may not vouch refuses uploads"

// New prepares a syncer that writes license states to bucket.
func New(ctx context.Context, cfg Config, dir *directory.Client, db *database.DB, bucket LicenseBucket, crls *CRLConfig, log *slog.Logger, m *Metrics) (*Syncer, error) {
	s := &Syncer{cfg: cfg, dir: dir, db: db, bucket: bucket, log: log, metrics: m, now: time.Now, reconciled: true}
	if crls != nil {
		s.crls = &crlFetcher{cfg: *crls, db: db, log: log, metrics: m}
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
		return s.Full(ctx) // publishes what is pending first, reconciles after when due
	}
	// What an earlier run committed but did not publish goes out first, in
	// order; at the loop's start the whole bucket is compared with the
	// mirror.
	if err := s.settle(ctx, false); err != nil {
		return Result{}, err
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
	s.reconciled = false
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
//
// Several copies of the sync may run; the lock lets one at a time write.
// It is transaction-scoped, not a lease (internal/lease), because that is
// enough here: everything a sync writes to the database — the mirror, the
// cookie, the outbox, the run's record — is written in the transaction
// that holds the lock, so it lands only if that transaction commits, and a
// copy that lost its session (killed, cut off, its transaction ended by
// LockIdle, a failover) lost its uncommitted writes with the lock. There
// is no gap between holding and writing for a stale copy to write in, as
// there is for a lease renewed apart from the writes.
//
// What the lock cannot fence is the license bucket, outside the database:
// a copy whose session was lost while its PutAll was on its way may land
// records after a newer copy's. They are the outbox's states, in order,
// only older; the next change of those card holders or the periodic
// reconciliation (FullInterval) corrects them. Fencing them where they land
// needs a conditional write in the bucket (a per-key revision or sequence
// check), which the bucket does not offer yet.
func (s *Syncer) withLock(ctx context.Context, f func(tx pgx.Tx) error) error {
	idle := s.cfg.LockIdle
	if idle <= 0 {
		idle = 5 * time.Minute
	}
	return s.db.InTx(ctx, func(tx pgx.Tx) error {
		// JIT compiling pays off for queries that run long and often; the
		// sync's run once over a table and spent more compiling than running.
		var got bool
		if err := tx.QueryRow(ctx, `select pg_try_advisory_xact_lock($1), set_config('jit', 'off', true),
			set_config('idle_in_transaction_session_timeout', $2, true)`,
			int64(lockKey), fmt.Sprint(idle.Milliseconds())).Scan(&got, nil, nil); err != nil {
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

// Full reads the whole register and replaces the mirror with it, then
// publishes the license states that changed, and reconciles the whole
// bucket with the new mirror when that is due.
func (s *Syncer) Full(ctx context.Context) (Result, error) {
	// The bucket first: publishing what is pending into a lost bucket
	// would fail every full sync for good.
	if err := s.ensureBucket(ctx); err != nil {
		return Result{}, err
	}
	if err := s.drain(ctx, false); err != nil {
		return Result{}, err
	}
	res, err := s.full(ctx)
	if err != nil {
		return res, err
	}
	return res, s.settle(ctx, false)
}

func (s *Syncer) full(ctx context.Context) (res Result, err error) {
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
	why := newLeaving()
	skip := func(dn string, err error) {
		skipped.Add(1)
		why.skipped(err)
		s.log.Warn("register entry skipped", "dn", dn, "err", err)
	}
	defer func() { res.Skipped = int(skipped.Load()) }()
	reconciled := false
	err = s.withLock(ctx, func(tx pgx.Tx) error {
		scan := func(ctx context.Context) (<-chan []directory.Entry, func() error) {
			skipped.Store(0) // a second scan counts afresh
			pages := make(chan []directory.Entry, 4)
			scanErr := make(chan error, 1)
			sctx, cancel := context.WithCancel(ctx)
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
			// wait ends the scan (the COPY may have stopped reading) and
			// says whether the register failed mid-scan.
			wait := func() error {
				cancel()
				for range pages {
				}
				if err := <-scanErr; err != nil && !errors.Is(err, context.Canceled) {
					return err
				}
				return nil
			}
			return pages, wait
		}
		n, err := fullSwap(ctx, tx, scan, skip, func(what string) {
			s.log.Debug("full sync: "+what, "seconds", s.now().Sub(start).Seconds())
		})
		s.log.Debug("full sync: mirror built", "seconds", s.now().Sub(start).Seconds())
		if err != nil {
			return err // the register failed mid-scan, or the COPY: roll back, keep the old mirror
		}
		res.Entries = n
		var before int
		if err := tx.QueryRow(ctx, `select count(*) from registry_entries`).Scan(&before); err != nil {
			return fmt.Errorf("count mirror: %w", err)
		}
		// A first sync into an empty mirror need not announce everyone who
		// may vouch: an absent key means "as attested", and the
		// reconciliation after it (due: there was none) corrects an old
		// refusal in the bucket.
		out := s.outbox(tx, start, before > 0)
		leaving := 0
		firstIntoEmpty, bucketID := false, ""
		if before == 0 {
			// Everyone is new, and only who may not vouch is announced:
			// no comparison to make, and only those rows to read.
			if err := firstTransitions(ctx, tx, start, func(ctx context.Context, t transition) error { return out.add(ctx, t) }); err != nil {
				return err
			}
			res.Changes = int(n)
			// Into an empty bucket, what this run announces is the whole
			// bucket the mirror implies: as good as a reconciliation. (Under
			// the lock nobody else writes the bucket.) Its identity is read
			// first: if it is replaced after, the reconciliation recorded is
			// of the old one, and the next run compares the new one.
			if bucketID, err = s.bucket.Identity(ctx); err != nil {
				return fmt.Errorf("registrysync: license bucket: %w", err)
			}
			if firstIntoEmpty, err = s.bucket.Empty(ctx); err != nil {
				return fmt.Errorf("registrysync: license bucket: %w", err)
			}
		} else if res.Changes, err = fullTransitions(ctx, tx, func(ctx context.Context, t transition) error {
			if t.New == nil {
				leaving++
				t.GoneAs = why.why(*t.Old)
			}
			return out.add(ctx, t)
		}); err != nil {
			return err
		}
		// The guard counts who leaves, not the total: half the register
		// replaced by as many strangers is no less wrong than half gone.
		// Refused, the transaction and the outbox rows written go back.
		if s.beyondShrink(leaving, before) {
			return fmt.Errorf("%w: %d of the mirror's %d card holders are no longer in the register, which now lists %d (run registry-sync -once -full -accept-shrink to accept)",
				ErrShrink, leaving, before, n)
		}
		if err := out.flush(ctx); err != nil {
			return err
		}
		s.log.Debug("full sync: compared", "seconds", s.now().Sub(start).Seconds(), "changes", res.Changes)
		if err := swapTables(ctx, tx); err != nil {
			return err
		}
		s.log.Debug("full sync: swapped", "seconds", s.now().Sub(start).Seconds())
		if err := saveState(ctx, tx, cookie, start); err != nil {
			return err
		}
		if firstIntoEmpty {
			if err := recordReconciled(ctx, tx, start, bucketID); err != nil {
				return err
			}
		}
		if err := s.step(stepOutboxWritten); err != nil {
			return err
		}
		reconciled = firstIntoEmpty
		return nil
	})
	if err == nil && reconciled {
		s.reconciled = true
	}
	return res, err
}

// FullAcceptingShrink is a full sync that accepts however much the register
// shrank: an operator's answer to ErrShrink.
func (s *Syncer) FullAcceptingShrink(ctx context.Context) (Result, error) {
	s.acceptShrink = true
	defer func() { s.acceptShrink = false }()
	return s.Full(ctx)
}

// Incremental applies the register's changes since cookie, then publishes
// the license states that changed. The changes are read under the sync's
// lock, from the cookie as stored then: another instance may have moved it
// meanwhile.
func (s *Syncer) Incremental(ctx context.Context, cookie []byte) (Result, error) {
	res, err := s.incremental(ctx, cookie)
	if err != nil {
		return res, err
	}
	// Once settled the bucket before this run; what is left is this run's
	// own changes.
	if err := s.ensureBucket(ctx); err != nil {
		return res, err
	}
	return res, s.drain(ctx, false)
}

func (s *Syncer) incremental(ctx context.Context, cookie []byte) (res Result, err error) {
	res.Kind = "incremental"
	start := s.now()
	defer func() { s.record(start, &res, err) }()
	runID, err := startRun(ctx, s.db.Pool(), "incremental", start)
	if err != nil {
		return res, err
	}
	defer func() {
		if ferr := finishRun(context.WithoutCancel(ctx), s.db.Pool(), runID, res, err, s.now()); ferr != nil && err == nil {
			err = ferr
		}
	}()
	err = s.withLock(ctx, func(tx pgx.Tx) error {
		if cur, err := cookieTx(ctx, tx); err != nil {
			return err
		} else if cur != nil {
			cookie = cur
		}
		ch, err := s.changes(ctx, cookie, start, func(dn string, err error) {
			res.Skipped++
			s.log.Warn("register entry skipped", "dn", dn, "err", err)
		})
		if err != nil {
			return err
		}
		var since *time.Time
		if err := tx.QueryRow(ctx, `select synced_at from registry_sync_state where id`).Scan(&since); err != nil {
			return fmt.Errorf("registrysync: sync state: %w", err)
		}
		if err := s.apply(ctx, tx, ch, start, &res); err != nil {
			return err
		}
		if since != nil {
			n, err := s.clockChanges(ctx, tx, *since, start)
			if err != nil {
				return err
			}
			res.Changes += n
		}
		return s.step(stepOutboxWritten)
	})
	return res, err
}

func (s *Syncer) changes(ctx context.Context, cookie []byte, start time.Time, skip func(string, error)) (*directory.Changes, error) {
	if !directory.IsTimestampCookie(cookie) {
		return s.dir.Changes(ctx, cookie, skip)
	}
	ch, err := s.dir.ChangesSince(ctx, cookie, skip)
	if err == nil {
		ch.Cookie = directory.TimestampCookie(start.Add(-s.cfg.ClockSkew))
	}
	return ch, err
}

// Why a card holder leaves the mirror; published as their status.
const (
	StatusRemoved   = "removed"   // no longer in the register
	StatusInvalid   = "invalid"   // their entry changed into something unreadable
	StatusDuplicate = "duplicate" // the register lists them twice
)

// leaving is the one rule for why a card holder leaves the mirror, and so
// for the status the bucket gives them: both syncs note here what they
// learnt of the register's entries, and ask it of everyone who leaves. A
// card holder the register lists more than once is a duplicate, whatever
// else it says of them; one whose entry it still holds, unreadable, is
// invalid; anyone else is removed.
type leaving struct {
	mu        sync.Mutex      // the full sync's scan notes from its own goroutine
	duplicate map[string]bool // UZI numbers
	invalid   map[string]bool // entryUUIDs
}

func newLeaving() *leaving {
	return &leaving{duplicate: map[string]bool{}, invalid: map[string]bool{}}
}

func (l *leaving) listedTwice(uzi string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.duplicate[uzi] = true
}

func (l *leaving) unreadable(entryUUID string) {
	if entryUUID == "" {
		return // nothing ties it to a mirrored card holder
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.invalid[entryUUID] = true
}

// skipped notes why an entry was left out of a sync, when that says why a
// card holder leaves.
func (l *leaving) skipped(err error) {
	var twice *listedTwiceError
	var bad *directory.EntryError
	switch {
	case errors.As(err, &twice):
		l.listedTwice(twice.UZI)
	case errors.As(err, &bad):
		l.unreadable(bad.EntryUUID)
	}
}

// why is the status of a card holder who leaves the mirror with state st.
func (l *leaving) why(st licenseState) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.duplicate[st.UZI]:
		return StatusDuplicate
	case st.EntryUUID != "" && l.invalid[st.EntryUUID]:
		return StatusInvalid
	}
	return StatusRemoved
}

// apply writes one batch of changes. The rules, all failing closed: a card
// holder whose entry became unreadable, or who is now listed twice, leaves
// the mirror (and may not vouch) until the register is clear again; one who
// was deleted and re-added, or whose UZI number changed, is not lost on the
// way; more removals than MaxShrink allows refuse the whole batch.
func (s *Syncer) apply(ctx context.Context, tx pgx.Tx, ch *directory.Changes, start time.Time, res *Result) error {
	upUZI := map[string]bool{}
	upUUID := map[string]bool{}
	uzis := make([]string, 0, len(ch.Upserts))
	for _, e := range ch.Upserts {
		upUZI[e.UZI] = true
		uzis = append(uzis, e.UZI)
		if e.EntryUUID != "" {
			upUUID[e.EntryUUID] = true
		}
	}
	old, err := states(ctx, tx, `uzi_number = any($1)`, uzis)
	if err != nil {
		return err
	}
	why := newLeaving()
	for _, u := range ch.Invalid {
		why.unreadable(u)
	}
	gone := map[string]goneState{}
	leave := func(m map[string]licenseState) {
		for u, st := range m {
			gone[u] = goneState{licenseState: st, why: why.why(st)}
		}
	}
	var m map[string]licenseState
	if len(ch.Invalid) > 0 {
		if m, err = states(ctx, tx, `entry_uuid::text = any($1)`, ch.Invalid); err != nil {
			return err
		}
		leave(m)
	}
	switch {
	case ch.PresentPhase:
		keep := append(append([]string{}, ch.Present...), keys(upUUID)...)
		m, err = notPresent(ctx, tx, keep)
	case len(ch.Deleted) > 0:
		m, err = states(ctx, tx, `entry_uuid::text = any($1)`, ch.Deleted)
	}
	if err != nil {
		return err
	}
	leave(m)
	// An entry whose UZI number changed: its old row goes.
	if m, err = states(ctx, tx, `entry_uuid::text = any($1) and not (uzi_number = any($2))`, keys(upUUID), uzis); err != nil {
		return err
	}
	leave(m)
	goneUUID := map[string]bool{}
	for u, g := range gone {
		if upUZI[u] && g.why == StatusRemoved {
			delete(gone, u) // deleted and re-added, or renamed onto: still there
			continue
		}
		goneUUID[g.EntryUUID] = true
	}
	var trans []transition
	var upserts []directory.Entry
	for _, e := range ch.Upserts {
		o, had := old[e.UZI]
		if had && o.EntryUUID != "" && e.EntryUUID != "" && o.EntryUUID != e.EntryUUID && !goneUUID[o.EntryUUID] {
			// Another entry claims this UZI number. Registers do not always
			// report the deletion of an entry re-added under the same name,
			// so ask: one entry now means a replacement, two a duplicate.
			dup, err := s.listedTwice(ctx, e)
			if err != nil {
				return err
			}
			if dup {
				why.listedTwice(e.UZI)
				gone[e.UZI] = goneState{licenseState: o, why: why.why(o)}
				continue
			}
		}
		if _, out := gone[e.UZI]; out {
			continue // invalid or duplicate wins over an update in the same batch
		}
		upserts = append(upserts, e)
		n := licenseState{UZI: e.UZI, Status: e.License, ValidFrom: timePtr(e.ValidFrom), ValidUntil: timePtr(e.ValidUntil)}
		t := transition{UZI: e.UZI, New: &n}
		if had {
			if o.Status == n.Status && eqTime(o.ValidFrom, n.ValidFrom) && eqTime(o.ValidUntil, n.ValidUntil) {
				continue
			}
			t.Old = &o
		}
		trans = append(trans, t)
	}
	if err := s.checkShrink(ctx, tx, len(gone)); err != nil {
		return err
	}
	for _, g := range gone {
		o := g.licenseState
		trans = append(trans, transition{UZI: o.UZI, Old: &o, GoneAs: g.why})
	}
	out := s.outbox(tx, start, true)
	for _, t := range trans {
		if err := out.add(ctx, t); err != nil {
			return err
		}
	}
	if err := out.flush(ctx); err != nil {
		return err
	}
	res.Changes = len(trans)
	// Rows leave first, so a UUID that moves to another UZI number is free.
	if len(gone) > 0 {
		if _, err := tx.Exec(ctx, `delete from registry_entries where uzi_number = any($1)`, keys(gone)); err != nil {
			return fmt.Errorf("delete from mirror: %w", err)
		}
	}
	if err := upsert(ctx, tx, upserts, start); err != nil {
		return err
	}
	res.Entries = int64(len(upserts) + len(gone))
	return saveState(ctx, tx, ch.Cookie, start)
}

// clockChanges publishes the card holders whose license became valid, or
// stopped being valid, by the clock alone since the last sync: nothing in
// the register changed, but whether they may vouch did, and the bucket's
// may_vouch must say so.
func (s *Syncer) clockChanges(ctx context.Context, tx pgx.Tx, since, now time.Time) (int, error) {
	m, err := states(ctx, tx, `(valid_from > $1 and valid_from <= $2) or (valid_until > $1 and valid_until <= $2)`, since, now)
	if err != nil {
		return 0, err
	}
	out := s.outbox(tx, now, true)
	for _, st := range m {
		if err := out.put(ctx, st.UZI, transition{UZI: st.UZI, New: &st}.record(now)); err != nil {
			return 0, err
		}
	}
	return len(m), out.flush(ctx)
}

// listedTwice asks the register whether e's UZI number has more than one
// entry.
func (s *Syncer) listedTwice(ctx context.Context, e directory.Entry) (bool, error) {
	got, err := s.dir.Lookup(ctx, e.UZI)
	switch {
	case err == nil:
		return got.EntryUUID != e.EntryUUID, nil
	case errors.Is(err, directory.ErrUnavailable):
		return false, err
	case errors.Is(err, directory.ErrNotFound):
		return false, nil // gone again since: the next batch says so
	}
	return true, nil // several entries, or unreadable: not one clear holder
}

type goneState struct {
	licenseState
	why string
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// ErrShrink means a sync would remove more of the mirror than MaxShrink
// allows: more likely a register answering wrongly than a country's
// clinicians leaving at once. An operator accepts it with a forced full sync.
var ErrShrink = errors.New("registrysync: the register shrank beyond the allowed fraction")

func (s *Syncer) checkShrink(ctx context.Context, tx pgx.Tx, removed int) error {
	if removed == 0 || s.cfg.MaxShrink >= 1 || s.acceptShrink {
		return nil
	}
	var total int
	if err := tx.QueryRow(ctx, `select count(*) from registry_entries`).Scan(&total); err != nil {
		return fmt.Errorf("registrysync: count mirror: %w", err)
	}
	if s.beyondShrink(removed, total) {
		return fmt.Errorf("%w: %d of %d card holders would leave the mirror (run registry-sync -once -full -accept-shrink to accept)", ErrShrink, removed, total)
	}
	return nil
}

// minShrinkBase: below this many card holders (tests, tiny registers) the
// shrink guard does not apply.
const minShrinkBase = 100

// beyondShrink is the shrink guard's rule, for both syncs: removing
// leaving of a mirror of total card holders is refused when it is more
// than MaxShrink of them, unless an operator accepted it. A MaxShrink of 1
// never refuses: no more can leave than there are.
func (s *Syncer) beyondShrink(leaving, total int) bool {
	return !s.acceptShrink && total >= minShrinkBase && float64(leaving) > s.cfg.MaxShrink*float64(total)
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
	Status     string     `json:"status"` // active, suspended, revoked, deceased; or removed, invalid, duplicate (leaving)
	MayVouch   bool       `json:"may_vouch"`
	ValidFrom  *time.Time `json:"valid_from,omitempty"`
	ValidUntil *time.Time `json:"valid_until,omitempty"`
	ChangedAt  time.Time  `json:"changed_at"`
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
