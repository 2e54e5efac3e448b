package export

import (
	"bufio"
	"context"
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
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/exposure"
)

// Paths inside the origin's root.
const (
	IndexName  = "index.txt"
	ExportsDir = "exports"
	tmpPrefix  = ".tmp-"
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
	// index is written.
	beforeIndex func()
}

type metrics struct {
	held, published, files prometheus.Gauge
	runs                   *prometheus.CounterVec
	seconds                prometheus.Histogram
}

// New makes an aggregator; cfg must have been validated. reg may be nil.
func New(cfg Config, db *database.DB, signers []Signer, reg prometheus.Registerer, log *slog.Logger) (*Aggregator, error) {
	if len(signers) == 0 {
		return nil, errors.New("export: no signing key")
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	a := &Aggregator{cfg: cfg, db: db, signers: signers, log: log, now: time.Now,
		holder: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(id[:]))}
	a.m = metrics{
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vouch_export_keys_held",
			Help: "Keys in the export window not published yet because they may still be broadcast."}),
		published: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vouch_export_keys_published",
			Help: "Keys in the current export, padding included."}),
		files: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vouch_export_files",
			Help: "Batch files in the current index."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vouch_export_runs_total",
			Help: "Aggregator runs by result (published, lease_held, error)."}, []string{"result"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vouch_export_run_seconds",
			Help: "Duration of a published run.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{a.m.held, a.m.published, a.m.files, a.m.runs, a.m.seconds} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("export: metrics: %w", err)
			}
		}
	}
	return a, nil
}

// Loop runs the export now and then every period until ctx ends. A failed
// run is logged and retried at the next period, never in a hot loop.
func (a *Aggregator) Loop(ctx context.Context) error {
	t := time.NewTicker(a.cfg.Period)
	defer t.Stop()
	for {
		res, err := a.Run(ctx)
		switch {
		case errors.Is(err, ErrLeaseHeld):
			a.log.Debug("export: lease held elsewhere")
		case err != nil && ctx.Err() == nil:
			a.log.Error("export failed", "err", err)
		case err == nil:
			a.log.Info("export published", "files", len(res.Files), "keys", res.Keys, "held", res.Held, "padded", res.Padded)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Run builds and publishes the export once, if this aggregator can take
// the lease; otherwise it returns ErrLeaseHeld.
func (a *Aggregator) Run(ctx context.Context) (Result, error) {
	start := time.Now()
	res, err := a.run(ctx)
	switch {
	case errors.Is(err, ErrLeaseHeld):
		a.m.runs.WithLabelValues("lease_held").Inc()
	case err != nil:
		a.m.runs.WithLabelValues("error").Inc()
	default:
		a.m.runs.WithLabelValues("published").Inc()
		a.m.seconds.Observe(time.Since(start).Seconds())
		a.m.held.Set(float64(res.Held))
		a.m.published.Set(float64(res.Keys))
		a.m.files.Set(float64(len(res.Files)))
	}
	return res, err
}

func (a *Aggregator) run(ctx context.Context) (res Result, err error) {
	if err := a.takeLease(ctx); err != nil {
		return res, err
	}
	defer func() {
		// Let the next run (here or elsewhere) go without waiting out the
		// lease; a failed release only delays it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if rerr := a.releaseLease(rctx); rerr != nil && err == nil {
			a.log.Warn("export: release lease", "err", rerr)
		}
	}()
	exports := filepath.Join(a.cfg.Dir, ExportsDir)
	if err := os.MkdirAll(exports, 0o755); err != nil {
		return res, fmt.Errorf("export: %w", err)
	}
	a.removeStaleTemps(exports)
	now := a.now()
	w := window(now, a.cfg.MaxAgeDays)
	if res.Padded, err = a.pad(ctx, w); err != nil {
		return res, err
	}
	if res.Files, res.Keys, res.Held, err = a.build(ctx, w); err != nil {
		return res, err
	}
	// The lease may have run out during a long build: renewing it fails
	// then, and another aggregator's index is not overwritten.
	if err := a.takeLease(ctx); err != nil {
		return res, err
	}
	if a.beforeIndex != nil {
		a.beforeIndex()
	}
	if err := writeAtomic(a.cfg.Dir, IndexName, []byte(indexText(res.Files))); err != nil {
		return res, err
	}
	if err := a.retire(ctx, res.Files); err != nil {
		return res, err
	}
	return res, nil
}

// span is the export's window in ENIntervalNumbers: keys ending after
// oldest and at or before now.
type span struct {
	oldest, now int32
	at          time.Time
}

func window(now time.Time, days int) span {
	return span{oldest: exposure.IntervalNumber(now.Add(-time.Duration(days) * 24 * time.Hour)),
		now: exposure.IntervalNumber(now), at: now}
}

// pad tops the window up to MinKeys with random fake keys, stored so that
// a rebuild gives the same file. It runs under the lease.
func (a *Aggregator) pad(ctx context.Context, w span) (int, error) {
	if a.cfg.MinKeys == 0 {
		return 0, nil
	}
	var added int
	err := a.db.InTx(ctx, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `select count(*) from exposure_keys
			where rolling_start + rolling_period > $1 and rolling_start + rolling_period <= $2`,
			w.oldest, w.now).Scan(&n); err != nil {
			return fmt.Errorf("export: count keys: %w", err)
		}
		if n >= a.cfg.MinKeys {
			return nil
		}
		rows, err := paddingKeys(a.cfg.MinKeys-n, w, a.cfg.MaxAgeDays)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `create temporary table padding_keys (like exposure_keys) on commit drop`); err != nil {
			return fmt.Errorf("export: padding: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"padding_keys"},
			[]string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "received_hour", "origin"},
			pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("export: padding: %w", err)
		}
		tag, err := tx.Exec(ctx, `insert into exposure_keys
			(key_data, rolling_start, rolling_period, transmission_risk, received_hour, origin)
			select key_data, rolling_start, rolling_period, transmission_risk, received_hour, origin
			from padding_keys on conflict (key_data) do nothing`)
		if err != nil {
			return fmt.Errorf("export: padding: %w", err)
		}
		added = int(tag.RowsAffected())
		return nil
	})
	return added, err
}

// paddingKeys are n fake keys shaped like real ones: a whole UTC day each
// (what phones upload), spread over the days of the window that have ended.
func paddingKeys(n int, w span, days int) ([][]any, error) {
	today := w.at.UTC().Truncate(24 * time.Hour)
	received := exposure.Coarse(w.at)
	rows := make([][]any, 0, n)
	for range n {
		var data [exposure.KeySize]byte
		if _, err := rand.Read(data[:]); err != nil {
			return nil, err
		}
		d, err := rand.Int(rand.Reader, big.NewInt(int64(days-1)))
		if err != nil {
			return nil, err
		}
		start := exposure.IntervalNumber(today.AddDate(0, 0, -int(d.Int64())-1))
		rows = append(rows, []any{data[:], start, int32(exposure.MaxRollingPeriod), int16(0), received, "padding"})
	}
	return rows, nil
}

// build writes the batch files of the window from one consistent snapshot
// and returns their relative paths in batch order.
func (a *Aggregator) build(ctx context.Context, w span) (files []string, keys, held int, err error) {
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	err = pgx.BeginTxFunc(ctx, a.db.Pool(), opts, func(tx pgx.Tx) error {
		var minStart, maxEnd int64
		if err := tx.QueryRow(ctx, `select
				count(*) filter (where rolling_start + rolling_period <= $2),
				count(*) filter (where rolling_start + rolling_period > $2),
				coalesce(min(rolling_start) filter (where rolling_start + rolling_period <= $2), 0),
				coalesce(max(rolling_start + rolling_period) filter (where rolling_start + rolling_period <= $2), 0)
			from exposure_keys where rolling_start + rolling_period > $1`,
			w.oldest, w.now).Scan(&keys, &held, &minStart, &maxEnd); err != nil {
			return fmt.Errorf("export: count keys: %w", err)
		}
		batches := max(1, (keys+a.cfg.MaxKeys-1)/a.cfg.MaxKeys)
		// The file's times come from its keys, not from the clock: the same
		// keys give the same bytes.
		h := batchHeader{Start: time.Unix(minStart*exposure.IntervalSeconds, 0).UTC(),
			End: time.Unix(maxEnd*exposure.IntervalSeconds, 0).UTC(), Region: a.cfg.Region, BatchSize: batches}
		rows, err := tx.Query(ctx, `select key_data, rolling_start, rolling_period, transmission_risk, days_since_onset
			from exposure_keys where rolling_start + rolling_period > $1 and rolling_start + rolling_period <= $2
			order by key_data`, w.oldest, w.now)
		if err != nil {
			return fmt.Errorf("export: read keys: %w", err)
		}
		defer rows.Close()
		var b *batchFile
		defer func() {
			if b != nil {
				b.abort()
			}
		}()
		n := 0
		for rows.Next() {
			if b == nil {
				h.BatchNum = len(files) + 1
				if b, err = a.newBatch(h); err != nil {
					return err
				}
			}
			k, err := scanKey(rows)
			if err != nil {
				return err
			}
			if err := b.fw.add(k); err != nil {
				return err
			}
			n++
			if b.fw.n == a.cfg.MaxKeys {
				name, err := a.finish(ctx, b)
				b = nil
				if err != nil {
					return err
				}
				files = append(files, name)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("export: read keys: %w", err)
		}
		if n != keys {
			return fmt.Errorf("export: counted %d keys, read %d", keys, n)
		}
		if b == nil && len(files) == 0 { // no keys: one empty file
			h.BatchNum = 1
			if b, err = a.newBatch(h); err != nil {
				return err
			}
		}
		if b != nil {
			name, err := a.finish(ctx, b)
			b = nil
			if err != nil {
				return err
			}
			files = append(files, name)
		}
		if len(files) != batches {
			return fmt.Errorf("export: wrote %d files of %d", len(files), batches)
		}
		return nil
	})
	return files, keys, held, err
}

// scanKey decodes one row from PostgreSQL's binary format without an
// allocation per key: 1,400,000 keys go through here in a second.
func scanKey(rows pgx.Rows) (Key, error) {
	var k Key
	k.ReportType = ReportConfirmedTest
	fd := rows.FieldDescriptions()
	v := rows.RawValues()
	if len(v) != 5 {
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
	if len(v[0]) != exposure.KeySize || len(v[1]) != 4 || len(v[2]) != 4 || len(v[3]) != 2 || (v[4] != nil && len(v[4]) != 2) {
		return k, errors.New("export: unexpected column sizes")
	}
	copy(k.Data[:], v[0])
	k.RollingStart = int32(binary.BigEndian.Uint32(v[1]))
	k.RollingPeriod = int32(binary.BigEndian.Uint32(v[2]))
	k.TransmissionRisk = int32(int16(binary.BigEndian.Uint16(v[3])))
	if v[4] != nil {
		k.DaysSinceOnset, k.HasOnset = int32(int16(binary.BigEndian.Uint16(v[4]))), true
	}
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

// finish signs and closes b and moves it to its content address (see
// contentName). A file of that name already holds the same keys and header
// signed by the same keys (only the randomized ECDSA signature differs), so
// it is kept and b dropped: a rebuild of the same data publishes the same
// bytes.
// The file is recorded before it appears, as not indexed, so a crash
// before the index leaves it to be deleted after the grace period.
func (a *Aggregator) finish(ctx context.Context, b *batchFile) (string, error) {
	defer b.abort() // after the rename this removes nothing
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
	rel := ExportsDir + "/" + name + ".zip"
	if _, err := a.db.Pool().Exec(ctx, `insert into export_files (path, in_index, left_index_at)
		values ($1, false, now()) on conflict (path) do nothing`, rel); err != nil {
		return "", fmt.Errorf("export: record %s: %w", rel, err)
	}
	target := filepath.Join(a.cfg.Dir, filepath.FromSlash(rel))
	if _, err := os.Stat(target); err == nil {
		return rel, nil
	}
	if err := os.Rename(b.f.Name(), target); err != nil {
		return "", fmt.Errorf("export: %w", err)
	}
	if err := syncDir(filepath.Dir(target)); err != nil {
		return "", err
	}
	return rel, nil
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

// retire records which files the index now names and which left it, then
// deletes the files that left it more than the grace period ago. It runs
// after the index is on disk: a file is never deleted while indexed.
func (a *Aggregator) retire(ctx context.Context, files []string) error {
	var gone []string
	err := a.db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `update export_files set in_index = true, left_index_at = null
			where path = any($1)`, files); err != nil {
			return fmt.Errorf("export: record index: %w", err)
		}
		if _, err := tx.Exec(ctx, `update export_files set in_index = false, left_index_at = now()
			where in_index and not (path = any($1))`, files); err != nil {
			return fmt.Errorf("export: record index: %w", err)
		}
		rows, err := tx.Query(ctx, `select path from export_files
			where not in_index and left_index_at < now() - make_interval(secs => $1) order by path`,
			a.cfg.Grace.Seconds())
		if err != nil {
			return fmt.Errorf("export: old files: %w", err)
		}
		gone, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("export: old files: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, rel := range gone {
		if !strings.HasPrefix(rel, ExportsDir+"/") || strings.Contains(rel, "..") {
			continue
		}
		if err := os.Remove(filepath.Join(a.cfg.Dir, filepath.FromSlash(rel))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("export: delete %s: %w", rel, err)
		}
		if _, err := a.db.Pool().Exec(ctx, `delete from export_files where path = $1 and not in_index`, rel); err != nil {
			return fmt.Errorf("export: delete %s: %w", rel, err)
		}
	}
	return nil
}

// takeLease takes or renews the publication lease: one atomic upsert that
// succeeds only when the lease is free, expired or already ours.
func (a *Aggregator) takeLease(ctx context.Context) error {
	var holder string
	err := a.db.Pool().QueryRow(ctx, `insert into export_lease (name, holder, expires_at)
		values ('export', $1, now() + make_interval(secs => $2))
		on conflict (name) do update set holder = excluded.holder, expires_at = excluded.expires_at
		where export_lease.expires_at < now() or export_lease.holder = excluded.holder
		returning holder`, a.holder, a.cfg.Lease.Seconds()).Scan(&holder)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrLeaseHeld
	}
	if err != nil {
		return fmt.Errorf("export: lease: %w", err)
	}
	return nil
}

func (a *Aggregator) releaseLease(ctx context.Context) error {
	_, err := a.db.Pool().Exec(ctx, `delete from export_lease where name = 'export' and holder = $1`, a.holder)
	return err
}
