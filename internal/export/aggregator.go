package export

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/lease"
)

// Paths inside the origin's root.
const (
	IndexName  = "index.txt"
	ExportsDir = "exports"
	tmpPrefix  = ".tmp-"
	// lockName is the file whose lock (flock) orders the index's record
	// and its file between the processes writing one directory.
	lockName = ".publish.lock"
)

// LeaseName is the aggregator's lease (internal/lease).
const LeaseName = "export"

// Steps of a run, named for fault injection (OnStep): a crash or a freeze
// after any of them must leave the origin consistent.
const (
	StepBatchRenamed   = "batch-renamed"   // a batch file recorded and in place, the index not yet decided
	StepIndexCommitted = "index-committed" // the index's record committed under the checked epoch, no file written
	StepIndexWritten   = "index-written"   // index.txt replaced, the files that left it not yet recorded as such
	StepRetired        = "retired"         // the files that left recorded, the expired ones not yet deleted
)

// ErrLeaseHeld means another aggregator holds the lease: this run did not
// publish, and that is not a fault.
var ErrLeaseHeld = errors.New("export: another aggregator holds the lease")

// Result is what one run did.
type Result struct {
	Files  []string // the index: relative paths of the batch files
	Keys   int      // keys published
	Held   int      // keys in the window still valid, not yet published
	Padded int      // fake keys added this run
}

// Aggregator builds and publishes the export.
type Aggregator struct {
	cfg     Config
	db      *database.DB
	signers []Signer
	holder  string
	log     *slog.Logger
	m       metrics
	now     func() time.Time
	// beforeIndex, when set (tests), runs under the lease just before the
	// index's record is committed.
	beforeIndex func()
	target      Target // a bucket published to as well (target.go), or nil
	// step, when set (fault-injection tests), is called after each Step*.
	step func(name string)
	// current are the files found signed by exactly the signers, so each
	// is read once per process: the keys change only with a restart.
	current map[string]bool
}

// OnStep makes the aggregator call f after each step of a run (the Step*
// names): fault-injection tests freeze or kill the process there. Set it
// before the first run.
func (a *Aggregator) OnStep(f func(step string)) { a.step = f }

func (a *Aggregator) stepDone(name string) {
	if a.step != nil {
		a.step(name)
	}
}

type metrics struct {
	held, published, files, free prometheus.Gauge
	runs                         *prometheus.CounterVec
	seconds                      prometheus.Histogram
}

// New makes an aggregator; cfg must have been validated. reg may be nil.
func New(cfg Config, db *database.DB, signers []Signer, reg prometheus.Registerer, log *slog.Logger) (*Aggregator, error) {
	if len(signers) == 0 {
		return nil, errors.New("export: no signing key")
	}
	holder, err := lease.Holder()
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	a := &Aggregator{cfg: cfg, db: db, signers: signers, log: log, now: time.Now, holder: holder}
	if a.target, err = OpenTarget(cfg); err != nil {
		return nil, err
	}
	a.m = metrics{
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vouch_export_keys_held",
			Help: "Keys in the export window not published yet because they may still be broadcast."}),
		published: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vouch_export_keys_published",
			Help: "Keys in the current export, padding included."}),
		files: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vouch_export_files",
			Help: "Files in the current index."}),
		free: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vouch_export_free_bytes",
			Help: "Free space in the export directory at the last check; alert well above VOUCH_EXPORT_MIN_FREE."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vouch_export_runs_total",
			Help: "Aggregator runs by result (published, lease_held, error)."}, []string{"result"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vouch_export_run_seconds",
			Help: "Duration of a published run.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{a.m.held, a.m.published, a.m.files, a.m.free, a.m.runs, a.m.seconds} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("export: metrics: %w", err)
			}
		}
	}
	return a, nil
}

// Loop publishes while it holds the lease, and waits for it while
// another copy does. Holding it, it runs now and then every period, its
// heartbeat renewing the lease every third of VOUCH_EXPORT_LEASE; a
// standby tries to take it as often, so a copy killed with -9 costs at
// most a lease and a third before the other publishes. A failed run
// releases the lease, so that another copy gets its turn, and this one
// competes again a period later: never a retry in a hot loop.
func (a *Aggregator) Loop(ctx context.Context) error {
	poll := a.cfg.Lease / 3
	for {
		l, err := lease.Acquire(ctx, a.db.Pool(), LeaseName, a.holder, a.cfg.Lease)
		switch {
		case err == nil:
			a.log.Info("export: lease taken", "epoch", l.Epoch)
			a.lead(ctx, l)
		case errors.Is(err, lease.ErrHeld):
			a.m.runs.WithLabelValues("lease_held").Inc()
		case ctx.Err() == nil:
			a.log.Error("export: lease", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// lead runs the export under l now and every period until the lease is
// lost, a run fails or ctx ends, and releases the lease then.
func (a *Aggregator) lead(ctx context.Context, l *lease.Lease) {
	kept, stop := l.Keep(ctx, a.db.Pool(), a.log)
	t := time.NewTicker(a.cfg.Period)
	defer t.Stop()
	for {
		res, err := a.observe(kept, l)
		switch {
		case err != nil && kept.Err() != nil && ctx.Err() == nil:
			a.log.Warn("export: lease lost during a run; nothing more of it published", "epoch", l.Epoch, "err", err)
		case err != nil && ctx.Err() == nil:
			a.log.Error("export failed", "err", err)
		case err == nil:
			a.log.Info("export published", "files", len(res.Files), "keys", res.Keys, "held", res.Held, "padded", res.Padded)
		}
		if err != nil || kept.Err() != nil {
			stop()
			a.release(ctx, l)
			if err != nil && ctx.Err() == nil {
				select { // another copy's turn
				case <-ctx.Done():
				case <-t.C:
				}
			}
			return
		}
		select {
		case <-kept.Done(): // lost between runs: compete again at once
			stop()
			a.release(ctx, l)
			return
		case <-t.C:
		}
	}
}

// release gives the lease up, so another copy need not wait for it to
// expire; a failed release only delays that.
func (a *Aggregator) release(ctx context.Context, l *lease.Lease) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := l.Release(rctx, a.db.Pool()); err != nil {
		a.log.Warn("export: release lease", "err", err)
	}
}

// Run builds and publishes the export once, if this aggregator can take
// the lease (kept by heartbeat during the run, released after);
// otherwise it returns ErrLeaseHeld.
func (a *Aggregator) Run(ctx context.Context) (Result, error) {
	l, err := lease.Acquire(ctx, a.db.Pool(), LeaseName, a.holder, a.cfg.Lease)
	if errors.Is(err, lease.ErrHeld) {
		a.m.runs.WithLabelValues("lease_held").Inc()
		return Result{}, ErrLeaseHeld
	}
	if err != nil {
		a.m.runs.WithLabelValues("error").Inc()
		return Result{}, fmt.Errorf("export: %w", err)
	}
	kept, stop := l.Keep(ctx, a.db.Pool(), a.log)
	res, err := a.observe(kept, l)
	stop()
	a.release(ctx, l)
	return res, err
}

// observe runs once under l and counts the result.
func (a *Aggregator) observe(ctx context.Context, l *lease.Lease) (Result, error) {
	start := time.Now()
	res, err := a.run(ctx, l)
	if err != nil {
		a.m.runs.WithLabelValues("error").Inc()
		return res, err
	}
	a.m.runs.WithLabelValues("published").Inc()
	a.m.seconds.Observe(time.Since(start).Seconds())
	a.m.held.Set(float64(res.Held))
	a.m.published.Set(float64(res.Keys))
	a.m.files.Set(float64(len(res.Files)))
	return res, nil
}

// run builds and publishes under l. Every write to the database checks
// l's epoch in its own transaction; the index's record is committed so
// before the index goes anywhere, and under the directory's lock, so that
// the index file and the bucket's index follow those commits in order
// (publish). A holder frozen past its lease writes nothing after it
// wakes, even if it took the lease again: that is another epoch.
func (a *Aggregator) run(ctx context.Context, l *lease.Lease) (res Result, err error) {
	now := a.now()
	defer func() {
		if err != nil {
			// Expired files go even when the run failed: a full disk must
			// not keep the next run from publishing.
			if derr := a.deleteExpired(context.WithoutCancel(ctx), now); derr != nil {
				a.log.Warn("export: delete expired files", "err", derr)
			}
		}
	}()
	exports := filepath.Join(a.cfg.Dir, ExportsDir)
	if err := os.MkdirAll(exports, 0o755); err != nil {
		return res, fmt.Errorf("export: %w", err)
	}
	a.removeStaleTemps(exports)
	version, err := a.targetVersion(ctx) // before anything is built: see publishTarget
	if err != nil {
		return res, err
	}
	// What expired goes before anything is written.
	if err := a.deleteExpired(ctx, now); err != nil {
		return res, err
	}
	cut := now.UTC().Truncate(time.Second)
	if res.Padded, res.Held, err = a.makeBatches(ctx, l, cut); err != nil {
		return res, err
	}
	batches, err := a.indexed(ctx, cut)
	if err != nil {
		return res, err
	}
	// A batch that cannot be built now (a full disk) and those after it
	// wait; the index still drops what left the window, so that its grace
	// starts and the space comes back.
	var buildErr error
	var built []batch
	for _, b := range batches {
		// A recorded file that is missing (a directory restored, another
		// origin) is built again: the batch's keys are fixed, so its name
		// and content are the same.
		// A file the current keys did not sign (the keys were rotated
		// since) is built again too: phones that know only the new key
		// must verify every file of the index.
		if b.path == "" || !a.signedNow(b.path) {
			if b.path, buildErr = a.build(ctx, l, b); buildErr != nil {
				break
			}
		}
		built = append(built, b)
		res.Files = append(res.Files, b.path)
	}
	if res.Keys, err = a.countPublished(ctx, built); err != nil {
		return res, err
	}
	if err := a.publish(ctx, l, res, version, now); err != nil {
		return res, errors.Join(buildErr, err)
	}
	if buildErr != nil {
		return res, buildErr
	}
	return res, a.deleteExpired(ctx, now)
}

// publish makes res.Files the index, holding the directory's lock from
// the first step to the last:
//  1. every file it names is there (files are deleted only under this
//     lock, so they still are at the end);
//  2. its record is committed in a transaction that checks l's epoch: a
//     holder that lost the lease, or took it again since the run began,
//     stops here and writes nothing;
//  3. the bucket's index (a target), only over the version read when the
//     run began;
//  4. the index file, replaced atomically;
//  5. the files that left the index recorded as such: their grace starts
//     now that no index names them.
//
// Index files are so written in the order their records committed: a
// holder frozen between its commit (2) and its file (4) keeps the lock,
// and the next holder, which cannot commit before it has the lock, waits
// (its run fails and is tried again). An older index never replaces a
// newer one, and never names a file already deleted.
func (a *Aggregator) publish(ctx context.Context, l *lease.Lease, res Result, version string, now time.Time) error {
	return a.locked(ctx, func() error {
		for _, rel := range res.Files {
			if _, err := os.Stat(filepath.Join(a.cfg.Dir, filepath.FromSlash(rel))); err != nil {
				return fmt.Errorf("export: a file of the index: %w", err)
			}
		}
		if a.beforeIndex != nil {
			a.beforeIndex()
		}
		files := res.Files
		if files == nil {
			files = []string{}
		}
		err := a.db.InTx(ctx, func(tx pgx.Tx) error {
			if err := l.LimitIdle(ctx, tx); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `insert into export_index (generation, epoch, files, keys, published_at)
				values (1, $1, $2, $3, clock_timestamp())
				on conflict (id) do update set generation = export_index.generation + 1, epoch = excluded.epoch,
					files = excluded.files, keys = excluded.keys, published_at = excluded.published_at`,
				l.Epoch, files, res.Keys); err != nil {
				return fmt.Errorf("export: record index: %w", err)
			}
			return l.Check(ctx, tx)
		})
		if err != nil {
			return err
		}
		a.stepDone(StepIndexCommitted)
		index := []byte(indexText(res.Files))
		if err := a.publishTarget(ctx, version, res.Files, index); err != nil {
			return err
		}
		if err := writeAtomic(a.cfg.Dir, IndexName, index); err != nil {
			return err
		}
		a.stepDone(StepIndexWritten)
		if err := a.retire(ctx, res.Files, now); err != nil {
			return err
		}
		a.stepDone(StepRetired)
		return nil
	})
}

// locked runs fn holding the lock of the origin's directory (flock on
// lockName), which orders publications and deletions between the
// processes writing it: on one machine, or on a shared filesystem whose
// locks work across machines (NFSv4). It waits at most a lease for a
// holder; one that keeps it longer is frozen mid-publication, and this
// run fails and is tried again.
func (a *Aggregator) locked(ctx context.Context, fn func() error) error {
	f, err := os.OpenFile(filepath.Join(a.cfg.Dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("export: lock: %w", err)
	}
	defer f.Close() // releases the lock too
	deadline := time.Now().Add(a.cfg.Lease)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("export: lock %s: %w", f.Name(), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("export: %s held by another process for longer than the lease", f.Name())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

// batch is one row of export_batches: the keys that became publishable
// here in [start, end), published in one file.
type batch struct {
	id         int64
	start, end time.Time
	path       string
}

// makeBatches assigns the keys that became publishable since the last
// batch (arrived, their embargo over, not published before) and the
// revisions not published yet to new batches ending at cut, and pads
// each batch to MinKeys. A window with more than MaxKeys keys becomes
// several batches with adjacent windows: every file is 1 of 1 and no two
// share their times. When nothing is new no batch is made, unless the
// index would be empty. It returns the padding added and the keys held
// back by the embargo.
func (a *Aggregator) makeBatches(ctx context.Context, l *lease.Lease, cut time.Time) (padded, held int, err error) {
	oldest := exposure.IntervalNumber(cut.Add(-time.Duration(a.cfg.MaxAgeDays) * 24 * time.Hour))
	// A key is publishable when its end lies Embargo before cut.
	limit := int32(cut.Add(-a.cfg.Embargo).Unix() / exposure.IntervalSeconds)
	err = a.db.InTx(ctx, func(tx pgx.Tx) (err error) {
		if err := l.LimitIdle(ctx, tx); err != nil {
			return err
		}
		const eligible = `batch_id is null and rolling_start + rolling_period > $1 and rolling_start + rolling_period <= $2`
		var n int
		if err := tx.QueryRow(ctx, `select count(*) filter (where rolling_start + rolling_period <= $2),
				count(*) filter (where rolling_start + rolling_period > $2)
			from exposure_keys where batch_id is null and rolling_start + rolling_period > $1`,
			oldest, limit).Scan(&n, &held); err != nil {
			return fmt.Errorf("export: count keys: %w", err)
		}
		var revisions int
		if err := tx.QueryRow(ctx, `select count(*) from exposure_keys
			where revised_report_type is not null and revised_batch_id is null and batch_id is not null`).Scan(&revisions); err != nil {
			return fmt.Errorf("export: count revisions: %w", err)
		}
		var lastEnd *time.Time
		var inWindow bool
		if err := tx.QueryRow(ctx, `select max(end_at), coalesce(bool_or(end_at > $1), false) from export_batches`,
			cut.Add(-time.Duration(a.cfg.MaxAgeDays)*24*time.Hour)).Scan(&lastEnd, &inWindow); err != nil {
			return fmt.Errorf("export: batches: %w", err)
		}
		if n == 0 && revisions == 0 && inWindow {
			return nil
		}
		// A stale holder's batches do not land: two copies would make
		// windows that overlap.
		defer func() {
			if err == nil {
				err = l.Check(ctx, tx)
			}
		}()
		// The first batch covers every arrival in the days published.
		start := cut.Add(-time.Duration(a.cfg.MaxAgeDays) * 24 * time.Hour)
		if lastEnd != nil {
			start = lastEnd.UTC()
		}
		if !start.Before(cut) {
			return nil // the clock went back: nothing new ends before cut
		}
		// Keys go to the windows in the order they became publishable; a
		// window ends no earlier than its last key did, so no file holds a
		// key that was still under embargo when its window ended.
		type boundary struct {
			e    int32
			data []byte
		}
		var lastOf []boundary
		if n > a.cfg.MaxKeys {
			rows, err := tx.Query(ctx, `select e, key_data from (
					select rolling_start + rolling_period as e, key_data,
						row_number() over (order by rolling_start + rolling_period, key_data) as rn
					from exposure_keys where `+eligible+`) k
				where rn % $3 = 0 and rn < $4 order by rn`, oldest, limit, a.cfg.MaxKeys, n)
			if err != nil {
				return fmt.Errorf("export: split keys: %w", err)
			}
			if lastOf, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (boundary, error) {
				var b boundary
				err := r.Scan(&b.e, &b.data)
				return b, err
			}); err != nil {
				return fmt.Errorf("export: split keys: %w", err)
			}
		}
		var ends []time.Time
		prev := start
		for _, b := range lastOf {
			end := time.Unix(int64(b.e)*exposure.IntervalSeconds, 0).UTC().Add(a.cfg.Embargo)
			if !end.After(prev) {
				end = prev.Add(time.Second)
			}
			if !end.Before(cut) {
				break // the rest waits for the next window
			}
			ends = append(ends, end)
			prev = end
		}
		ends = append(ends, cut)
		parts := int64(len(ends))
		ids := make([]int64, parts)
		for i, end := range ends {
			if err := tx.QueryRow(ctx, `insert into export_batches (start_at, end_at) values ($1, $2) returning id`,
				start, end).Scan(&ids[i]); err != nil {
				return fmt.Errorf("export: new batch: %w", err)
			}
			start = end
		}
		// One range update per window, no join: the first run after an
		// upgrade assigns every stored key at once.
		for i, id := range ids {
			var err error
			if i < len(lastOf) {
				_, err = tx.Exec(ctx, `update exposure_keys set batch_id = $3 where `+eligible+`
					and (rolling_start + rolling_period, key_data) <= ($4, $5)`, oldest, limit, id, lastOf[i].e, lastOf[i].data)
			} else {
				_, err = tx.Exec(ctx, `update exposure_keys set batch_id = $3 where `+eligible, oldest, limit, id)
			}
			if err != nil {
				return fmt.Errorf("export: assign keys: %w", err)
			}
		}
		if revisions > 0 {
			// Into the last file, as many as it still holds (padding
			// included); the rest go with the next batch.
			var inLast int
			if err := tx.QueryRow(ctx, `select count(*) from exposure_keys where batch_id = $1`, ids[parts-1]).Scan(&inLast); err != nil {
				return fmt.Errorf("export: assign revisions: %w", err)
			}
			if room := MaxKeysPerFile - max(inLast, a.cfg.MinKeys); room > 0 {
				if _, err := tx.Exec(ctx, `update exposure_keys set revised_batch_id = $1 where key_data in (
						select key_data from exposure_keys
						where revised_report_type is not null and revised_batch_id is null and batch_id is not null
						order by key_data limit $2)`, ids[parts-1], room); err != nil {
					return fmt.Errorf("export: assign revisions: %w", err)
				}
			}
		}
		for _, id := range ids {
			added, err := a.pad(ctx, tx, id, cut, oldest)
			if err != nil {
				return err
			}
			padded += added
		}
		return nil
	})
	return padded, held, err
}

// paddingSource is the fields of the real keys padding is drawn from.
type paddingSource struct {
	start, period int32
	risk, report  int16
	onset         *int16
}

// pad tops batch id up to MinKeys with fake keys. Each copies every field
// but its bytes from a real key of the same batch drawn at random, so each
// field of the padding follows the real keys' distribution in that file
// (the way Google's key server pads: ensureMinNumExposures); a batch with
// no real key draws from the real keys published in the window. The file
// is sorted by key bytes, which are random, so position tells nothing.
// Padding is stored, so a rebuild of the batch gives the same file.
func (a *Aggregator) pad(ctx context.Context, tx pgx.Tx, id int64, cut time.Time, oldest int32) (int, error) {
	if a.cfg.MinKeys == 0 {
		return 0, nil
	}
	read := func(sql string, args ...any) ([]paddingSource, error) {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return nil, fmt.Errorf("export: padding: %w", err)
		}
		src, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (paddingSource, error) {
			var s paddingSource
			err := r.Scan(&s.start, &s.period, &s.risk, &s.report, &s.onset)
			return s, err
		})
		if err != nil {
			return nil, fmt.Errorf("export: padding: %w", err)
		}
		return src, nil
	}
	const fields = `select rolling_start, rolling_period, transmission_risk, report_type, days_since_onset from exposure_keys`
	src, err := read(fields+` where batch_id = $1 and origin <> 'padding' order by key_data`, id)
	if err != nil {
		return 0, err
	}
	need := a.cfg.MinKeys - len(src)
	if need <= 0 {
		return 0, nil
	}
	if len(src) == 0 {
		// Key bytes are random, so their order is a fair sample.
		if src, err = read(fields+` where batch_id is not null and origin <> 'padding'
			and rolling_start + rolling_period > $1 order by key_data limit 10000`, oldest); err != nil {
			return 0, err
		}
		if len(src) == 0 {
			return 0, nil // nothing real to look like
		}
	}
	received := exposure.Coarse(cut)
	rows := make([][]any, 0, need)
	for range need {
		var data [exposure.KeySize]byte
		if _, err := rand.Read(data[:]); err != nil {
			return 0, err
		}
		i, err := rand.Int(rand.Reader, big.NewInt(int64(len(src))))
		if err != nil {
			return 0, err
		}
		s := src[i.Int64()]
		var onset any
		if s.onset != nil {
			onset = *s.onset
		}
		rows = append(rows, []any{data[:], s.start, s.period, s.risk, s.report, onset, received, "padding", id})
	}
	if _, err := tx.Exec(ctx, `create temporary table if not exists padding_keys (like exposure_keys) on commit drop`); err != nil {
		return 0, fmt.Errorf("export: padding: %w", err)
	}
	if _, err := tx.Exec(ctx, `truncate padding_keys`); err != nil {
		return 0, fmt.Errorf("export: padding: %w", err)
	}
	cols := []string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "report_type", "days_since_onset", "received_hour", "origin", "batch_id"}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"padding_keys"}, cols, pgx.CopyFromRows(rows)); err != nil {
		return 0, fmt.Errorf("export: padding: %w", err)
	}
	list := strings.Join(cols, ", ")
	tag, err := tx.Exec(ctx, `insert into exposure_keys (`+list+`) select `+list+` from padding_keys on conflict (key_data) do nothing`)
	if err != nil {
		return 0, fmt.Errorf("export: padding: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// indexed is the batches the index names at cut: those whose window ended
// within the days published, oldest first.
func (a *Aggregator) indexed(ctx context.Context, cut time.Time) ([]batch, error) {
	rows, err := a.db.Pool().Query(ctx, `select id, start_at, end_at, coalesce(path, '') from export_batches
		where end_at > $1 order by start_at`, cut.Add(-time.Duration(a.cfg.MaxAgeDays)*24*time.Hour))
	if err != nil {
		return nil, fmt.Errorf("export: batches: %w", err)
	}
	bs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (batch, error) {
		var b batch
		err := r.Scan(&b.id, &b.start, &b.end, &b.path)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("export: batches: %w", err)
	}
	return bs, nil
}

func (a *Aggregator) countPublished(ctx context.Context, bs []batch) (int, error) {
	ids := make([]int64, len(bs))
	for i, b := range bs {
		ids[i] = b.id
	}
	var n int
	if err := a.db.Pool().QueryRow(ctx, `select count(*) from exposure_keys where batch_id = any($1)`, ids).Scan(&n); err != nil {
		return 0, fmt.Errorf("export: count keys: %w", err)
	}
	return n, nil
}

// writtenKeyEstimate is what one key takes in the zip, generously: 35
// bytes in export.bin, of which deflate keeps about 17 to 22. A file that
// still does not fit fails with ENOSPC and leaves only its temporary file,
// which the failed run removes.
const writtenKeyEstimate = 24

// keyColumns are what a file says of a key, in scanKey's order.
const keyColumns = `key_data, rolling_start, rolling_period, transmission_risk, days_since_onset`

// build writes batch b's file from one consistent snapshot, records its
// path and returns it. The batch's keys were fixed when it was made, so
// the file is the same whenever it is built.
//
// The file is written from the snapshot, then recorded (its path in
// export_files as not indexed, so a crash before the index leaves it to be
// deleted after the grace period, and as the batch's) in a transaction
// that checks l's epoch, and only then moved into place: a stale holder's
// file never appears, and no file appears unrecorded.
func (a *Aggregator) build(ctx context.Context, l *lease.Lease, b batch) (string, error) {
	var rel string
	var bf *batchFile
	defer func() {
		if bf != nil {
			bf.abort() // after the rename this removes nothing
		}
	}()
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	err := pgx.BeginTxFunc(ctx, a.db.Pool(), opts, func(tx pgx.Tx) error {
		if err := l.LimitIdle(ctx, tx); err != nil {
			return err
		}
		var keys, revised int
		// Each count on its own partial index.
		if err := tx.QueryRow(ctx, `select (select count(*) from exposure_keys where batch_id = $1),
			(select count(*) from exposure_keys where revised_batch_id = $1 and revised_report_type is not null)`,
			b.id).Scan(&keys, &revised); err != nil {
			return fmt.Errorf("export: count keys: %w", err)
		}
		// A file never starts on a disk that cannot hold it.
		if err := a.checkFree(int64(len(Header)+64<<10) + int64(keys+revised)*writtenKeyEstimate); err != nil {
			return err
		}
		var err error
		bf, err = a.newBatch(batchHeader{Start: b.start.UTC(), End: b.end.UTC(), Region: a.cfg.Region, BatchNum: 1, BatchSize: 1})
		if err != nil {
			return err
		}
		n := 0
		for _, q := range []struct {
			sql string
			add func(Key) error
		}{
			{`select ` + keyColumns + `, report_type from exposure_keys where batch_id = $1 order by key_data`, bf.fw.add},
			{`select ` + keyColumns + `, revised_report_type from exposure_keys where revised_batch_id = $1 and revised_report_type is not null order by key_data`, bf.fw.addRevised},
		} {
			rows, err := tx.Query(ctx, q.sql, b.id)
			if err != nil {
				return fmt.Errorf("export: read keys: %w", err)
			}
			for rows.Next() {
				k, err := scanKey(rows)
				if err != nil {
					rows.Close()
					return err
				}
				if err := q.add(k); err != nil {
					rows.Close()
					return err
				}
				n++
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("export: read keys: %w", err)
			}
		}
		if n != keys+revised {
			return fmt.Errorf("export: counted %d keys, read %d", keys+revised, n)
		}
		rel, err = a.seal(bf)
		return err
	})
	if err != nil {
		return "", err
	}
	// In read committed, unlike the snapshot above: the check must see a
	// take-over, and the holder's own renewals must not fail it.
	err = a.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := l.LimitIdle(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `insert into export_files (path, in_index, left_index_at)
			values ($1, false, $2) on conflict (path) do nothing`, rel, a.now()); err != nil {
			return fmt.Errorf("export: record %s: %w", rel, err)
		}
		if _, err := tx.Exec(ctx, `update export_batches set path = $1 where id = $2`, rel, b.id); err != nil {
			return fmt.Errorf("export: record batch: %w", err)
		}
		return l.Check(ctx, tx)
	})
	if err != nil {
		return "", err
	}
	if err := a.place(bf, rel); err != nil {
		return "", err
	}
	a.stepDone(StepBatchRenamed)
	return rel, nil
}

// scanKey decodes one row from PostgreSQL's binary format without an
// allocation per key: 1,400,000 keys go through here in a second. An onset
// outside what GAEN reads (-14..14 days) is left out, never clamped.
func scanKey(rows pgx.Rows) (Key, error) {
	var k Key
	fd := rows.FieldDescriptions()
	v := rows.RawValues()
	if len(v) != 6 {
		return k, fmt.Errorf("export: %d columns", len(v))
	}
	for i, f := range fd {
		if f.Format != pgtype.BinaryFormatCode {
			return k, errors.New("export: keys not in binary format")
		}
		if v[i] == nil && i != 4 {
			return k, fmt.Errorf("export: column %s is null", f.Name)
		}
	}
	if len(v[0]) != exposure.KeySize || len(v[1]) != 4 || len(v[2]) != 4 || len(v[3]) != 2 || (v[4] != nil && len(v[4]) != 2) || len(v[5]) != 2 {
		return k, errors.New("export: unexpected column sizes")
	}
	copy(k.Data[:], v[0])
	k.RollingStart = int32(binary.BigEndian.Uint32(v[1]))
	k.RollingPeriod = int32(binary.BigEndian.Uint32(v[2]))
	k.TransmissionRisk = int32(int16(binary.BigEndian.Uint16(v[3])))
	if v[4] != nil {
		if d := int32(int16(binary.BigEndian.Uint16(v[4]))); d >= -MaxOnsetDays && d <= MaxOnsetDays {
			k.DaysSinceOnset, k.HasOnset = d, true
		}
	}
	k.ReportType = int32(int16(binary.BigEndian.Uint16(v[5])))
	return k, nil
}

// batchFile is one export file being written to a temporary file.
type batchFile struct {
	f  *os.File
	bw *bufio.Writer
	fw *fileWriter
}

func (a *Aggregator) newBatch(h batchHeader) (*batchFile, error) {
	f, err := os.CreateTemp(filepath.Join(a.cfg.Dir, ExportsDir), tmpPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	bw := bufio.NewWriterSize(f, 256<<10)
	fw, err := newFileWriter(bw, h, a.signers)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &batchFile{f: f, bw: bw, fw: fw}, nil
}

func (b *batchFile) abort() {
	b.f.Close()
	os.Remove(b.f.Name())
}

// seal signs, closes and syncs b and returns its content address (see
// contentName), relative to the origin's root.
func (a *Aggregator) seal(b *batchFile) (string, error) {
	digest, err := b.fw.close()
	if err != nil {
		return "", err
	}
	if err := b.bw.Flush(); err != nil {
		return "", fmt.Errorf("export: %w", err)
	}
	if err := b.f.Sync(); err != nil {
		return "", fmt.Errorf("export: %w", err)
	}
	name, err := contentName(digest, a.signers)
	if err != nil {
		return "", err
	}
	return ExportsDir + "/" + name + ".zip", nil
}

// signedNow reports whether the file at rel (relative to the origin's
// root) is there and carries a signature of each of the aggregator's keys.
// A file of keys since retired as well is kept: during a rotation the files
// of the old key are signed again once, when the new key is added, not a
// second time when the old one leaves, so phones fetch the window again
// once. A file it cannot read is built again.
func (a *Aggregator) signedNow(rel string) bool {
	if a.current[rel] {
		return true
	}
	b, err := os.ReadFile(filepath.Join(a.cfg.Dir, filepath.FromSlash(rel)))
	if err != nil || len(b) > MaxZipSize {
		return false
	}
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil || len(zr.File) != 2 || zr.File[0].Name != BinName || zr.File[1].Name != SigName {
		return false
	}
	bin, err := readEntry(zr.File[0], MaxBinSize)
	if err != nil {
		return false
	}
	raw, err := readEntry(zr.File[1], MaxSigSize)
	if err != nil {
		return false
	}
	sigs, err := parseSigList(raw)
	if err != nil {
		return false
	}
	digest := sha256.Sum256(bin)
	for _, s := range a.signers {
		pub, ok := s.Public().(*ecdsa.PublicKey)
		if !ok || !slices.ContainsFunc(sigs, func(t tekSignature) bool { return ecdsa.VerifyASN1(pub, digest[:], t.signature) }) {
			return false
		}
	}
	if a.current == nil {
		a.current = map[string]bool{}
	}
	a.current[rel] = true
	return true
}

// place moves sealed b to rel. A file of that name already holds the same
// keys and header signed by the same keys (only the randomized ECDSA
// signature differs), so it is kept and b dropped: a rebuild of the same
// data publishes the same bytes.
func (a *Aggregator) place(b *batchFile, rel string) error {
	target := filepath.Join(a.cfg.Dir, filepath.FromSlash(rel))
	if _, err := os.Stat(target); err == nil {
		return nil
	}
	if err := os.Rename(b.f.Name(), target); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return syncDir(filepath.Dir(target))
}

// contentName is a file's name: the SHA-256 of its export.bin's digest and
// the signing keys' public keys. Not the zip's hash: ECDSA signatures are
// randomized, so that would change at every rebuild and defeat caches. The
// keys are in it because SignatureInfo names a key only by version and id,
// and a new key under an old name must not keep the old key's file.
func contentName(binDigest []byte, signers []Signer) (string, error) {
	h := sha256.New()
	h.Write(binDigest)
	for _, s := range signers {
		der, err := x509.MarshalPKIXPublicKey(s.Public())
		if err != nil {
			return "", fmt.Errorf("export: signing key: %w", err)
		}
		h.Write(der)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func indexText(files []string) string {
	var sb strings.Builder
	for _, f := range files {
		sb.WriteString(f)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// writeAtomic writes dir/name through a synced temporary file and a rename:
// a reader sees the old file or the new one, never a part.
func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("export: sync %s: %w", dir, err)
	}
	return nil
}

// removeStaleTemps removes temporary files a crashed run left, old enough
// that no run still writes them.
func (a *Aggregator) removeStaleTemps(exports string) {
	for _, dir := range []string{a.cfg.Dir, exports} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), tmpPrefix) {
				continue
			}
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > a.cfg.Lease {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// retire records which files the index now names and which left it (at
// now). It runs after the index is on disk: a file is never deleted while
// indexed.
func (a *Aggregator) retire(ctx context.Context, files []string, now time.Time) error {
	if files == nil {
		files = []string{} // an empty array, not NULL: every file left
	}
	return a.db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `update export_files set in_index = true, left_index_at = null
			where path = any($1)`, files); err != nil {
			return fmt.Errorf("export: record index: %w", err)
		}
		if _, err := tx.Exec(ctx, `update export_files set in_index = false, left_index_at = $2
			where in_index and not (path = any($1))`, files, now); err != nil {
			return fmt.Errorf("export: record index: %w", err)
		}
		return nil
	})
}

// deleteExpired deletes the files that left the index more than the grace
// period before now. It runs before a run writes anything and after a run
// failed, so expired files never keep a full disk full; under the
// directory's lock, so never between publish's check that the files it
// names are there and its index.
func (a *Aggregator) deleteExpired(ctx context.Context, now time.Time) error {
	return a.locked(ctx, func() error { return a.deleteExpiredLocked(ctx, now) })
}

func (a *Aggregator) deleteExpiredLocked(ctx context.Context, now time.Time) error {
	rows, err := a.db.Pool().Query(ctx, `select path from export_files
		where not in_index and left_index_at < $1 order by path`, now.Add(-a.cfg.Grace))
	if err != nil {
		return fmt.Errorf("export: old files: %w", err)
	}
	gone, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("export: old files: %w", err)
	}
	for _, rel := range gone {
		if !strings.HasPrefix(rel, ExportsDir+"/") || strings.Contains(rel, "..") {
			continue
		}
		if err := a.deleteTarget(ctx, rel); err != nil {
			return err
		}
		if err := os.Remove(filepath.Join(a.cfg.Dir, filepath.FromSlash(rel))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("export: delete %s: %w", rel, err)
		}
		if _, err := a.db.Pool().Exec(ctx, `delete from export_files where path = $1 and not in_index`, rel); err != nil {
			return fmt.Errorf("export: delete %s: %w", rel, err)
		}
	}
	_ = a.checkFree(0) // for vouch_export_free_bytes; a shortage is refused where a file is written
	return nil
}

// ErrNoSpace means the export directory has too little space left to
// write the next file without going below MinFree.
var ErrNoSpace = errors.New("export: not enough free space in the export directory")

// checkFree measures the export directory's free space (exported as
// vouch_export_free_bytes) and fails when writing need bytes would leave
// less than MinFree.
func (a *Aggregator) checkFree(need int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(a.cfg.Dir, &st); err != nil {
		return fmt.Errorf("export: free space of %s: %w", a.cfg.Dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	a.m.free.Set(float64(free))
	if free-need < a.cfg.MinFree {
		return fmt.Errorf("%w: %d bytes free in %s, writing up to %d more would leave less than VOUCH_EXPORT_MIN_FREE (%d)",
			ErrNoSpace, free, a.cfg.Dir, need, a.cfg.MinFree)
	}
	return nil
}
