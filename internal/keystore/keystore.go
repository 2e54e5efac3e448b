// Package keystore holds the readers of `vouch store`: they drain the
// uploads ingest put on the bus into PostgreSQL, a batch at a time, each
// batch in one transaction, acknowledged only after it committed.
//
// A key is its own identity (the table's primary key), so a message
// delivered twice — a reader that stopped between commit and acknowledge,
// a record published twice — changes nothing the second time. Several
// readers, in one process or many, share one durable consumer and so split
// the work between them.
package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/exposure"
)

// Config is the readers' configuration.
type Config struct {
	// Batch bounds the messages stored in one transaction, BatchWait how
	// long a reader waits to fill one.
	Batch     int           `env:"VOUCH_STORE_BATCH, default=2000"`
	BatchWait time.Duration `env:"VOUCH_STORE_BATCH_WAIT, default=200ms"`
	// Consumer is the durable consumer every reader shares.
	Consumer string `env:"VOUCH_STORE_CONSUMER, default=vouch-store"`
	// Readers is how many readers one process runs.
	Readers int `env:"VOUCH_STORE_READERS, default=2"`
	// AckWait is how long the bus waits for a batch's acknowledgement
	// before delivering it again: far longer than a commit takes.
	AckWait time.Duration `env:"VOUCH_STORE_ACK_WAIT, default=30s"`
	// MaxAckPending bounds the messages out with readers at once.
	MaxAckPending int `env:"VOUCH_STORE_MAX_ACK_PENDING, default=20000"`
	// RetryMin and RetryMax bound the backoff while PostgreSQL fails.
	RetryMin time.Duration `env:"VOUCH_STORE_RETRY_MIN, default=100ms"`
	RetryMax time.Duration `env:"VOUCH_STORE_RETRY_MAX, default=15s"`
	// StreamMaxAge is how long the bus keeps uploads no reader stored: the
	// same variable ingest opens the stream with.
	StreamMaxAge time.Duration `env:"VOUCH_KEYS_STREAM_MAX_AGE, default=72h"`
}

// withDefaults fills what a Config built in code left zero, with the
// environment's defaults (TestUnitDefaults holds the two equal).
func (c Config) withDefaults() Config {
	if c.Batch == 0 {
		c.Batch = 2000
	}
	if c.BatchWait == 0 {
		c.BatchWait = 200 * time.Millisecond
	}
	if c.Consumer == "" {
		c.Consumer = "vouch-store"
	}
	if c.Readers == 0 {
		c.Readers = 2
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 20000
	}
	if c.RetryMin == 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 15 * time.Second
	}
	if c.StreamMaxAge == 0 {
		c.StreamMaxAge = 72 * time.Hour
	}
	return c
}

// Validate says what is wrong with c, all of it.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Batch < 1 || c.Batch > 10000 {
		errs = append(errs, fmt.Errorf("VOUCH_STORE_BATCH must be 1..10000, got %d", c.Batch))
	}
	if c.BatchWait < time.Millisecond || c.BatchWait > time.Minute {
		errs = append(errs, fmt.Errorf("VOUCH_STORE_BATCH_WAIT must be 1ms..1m, got %s", c.BatchWait))
	}
	if c.Readers < 1 || c.Readers > 64 {
		errs = append(errs, fmt.Errorf("VOUCH_STORE_READERS must be 1..64, got %d", c.Readers))
	}
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("VOUCH_STORE_ACK_WAIT must be at least 1s, got %s", c.AckWait))
	}
	if c.MaxAckPending < c.Batch {
		errs = append(errs, fmt.Errorf("VOUCH_STORE_MAX_ACK_PENDING must be at least VOUCH_STORE_BATCH, got %d", c.MaxAckPending))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("VOUCH_STORE_RETRY_MIN must be positive and at most VOUCH_STORE_RETRY_MAX"))
	}
	if c.StreamMaxAge < time.Hour {
		errs = append(errs, fmt.Errorf("VOUCH_KEYS_STREAM_MAX_AGE must be at least 1h, got %s", c.StreamMaxAge))
	}
	return errors.Join(errs...)
}

// Beginner starts a transaction: a pool.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// metrics of the readers.
type metrics struct {
	keys, batches, decodeFailures, storeErrors prometheus.Counter
	lag                                        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		keys:           prometheus.NewCounter(prometheus.CounterOpts{Name: "vouch_store_keys_total", Help: "Keys stored (new rows; keys already stored are not counted)."}),
		batches:        prometheus.NewCounter(prometheus.CounterOpts{Name: "vouch_store_batches_total", Help: "Batches committed."}),
		decodeFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "vouch_store_decode_failures_total", Help: "Messages that were not a key record, terminated."}),
		storeErrors:    prometheus.NewCounter(prometheus.CounterOpts{Name: "vouch_store_errors_total", Help: "Batches PostgreSQL did not take, retried later."}),
		lag:            prometheus.NewGauge(prometheus.GaugeOpts{Name: "vouch_store_lag_messages", Help: "Messages on the bus not yet delivered to a reader, as of the last batch."}),
	}
	if reg != nil {
		reg.MustRegister(m.keys, m.batches, m.decodeFailures, m.storeErrors, m.lag)
	}
	return m
}

// hooks let a test fail a commit or stop a reader between commit and
// acknowledgement, as a crash would. Nil in production.
type hooks struct {
	beforeCommit func() error
	afterCommit  func() error
	// afterConflict runs when the direct COPY found a key already stored,
	// before the merging write; an error stops the reader there.
	afterConflict func() error
}

// Store is the readers of one process.
type Store struct {
	cfg      Config
	db       Beginner
	consumer jetstream.Consumer
	log      *slog.Logger
	m        *metrics
	hooks    hooks
}

// New opens the stream (creating it as ingest would) and the durable
// consumer every reader shares. reg may be nil.
func New(ctx context.Context, cfg Config, db Beginner, b *bus.Bus, reg prometheus.Registerer, log *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	stream, err := b.Stream(ctx, bus.StreamConfig{Name: exposure.Stream, Subjects: []string{exposure.Subject}, MaxAge: cfg.StreamMaxAge})
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	c, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       cfg.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: exposure.Subject,
		// MaxDeliver stays unbounded: a message PostgreSQL could not take
		// yet is retried until it is stored, never dropped.
	})
	if err != nil {
		return nil, fmt.Errorf("keystore: consumer %s: %w", cfg.Consumer, err)
	}
	return &Store{cfg: cfg, db: db, consumer: c, log: log, m: newMetrics(reg)}, nil
}

// Run runs cfg.Readers readers until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	errc := make(chan error, s.cfg.Readers)
	for range s.cfg.Readers {
		go func() { errc <- s.read(ctx) }()
	}
	var errs []error
	for range s.cfg.Readers {
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// read is one reader: fetch a batch, store it, acknowledge it; on a
// failure, back off and let the bus deliver the batch again.
func (s *Store) read(ctx context.Context) error {
	retry := backoff{min: s.cfg.RetryMin, max: s.cfg.RetryMax}
	for ctx.Err() == nil {
		batch, err := s.consumer.Fetch(s.cfg.Batch, jetstream.FetchMaxWait(s.cfg.BatchWait))
		if err != nil {
			// The bus is away (a restart, a leader election): wait, as for
			// the database, rather than spin.
			s.log.Warn("store: fetch failed", "err", err)
			if !sleep(ctx, retry.next()) {
				break
			}
			continue
		}
		var msgs []jetstream.Msg
		for msg := range batch.Messages() {
			msgs = append(msgs, msg)
		}
		if err := batch.Error(); err != nil {
			s.log.Debug("store: fetch ended", "err", err)
		}
		if len(msgs) == 0 {
			continue
		}
		err = s.handle(ctx, msgs)
		switch {
		case errors.Is(err, errStopped):
			return err
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			s.m.storeErrors.Inc()
			d := retry.next()
			s.log.Warn("store: batch not stored, retrying", "err", err, "messages", len(msgs), "retry_in", d)
			// Not acknowledged: the bus delivers them again after d, to this
			// reader or another.
			for _, msg := range msgs {
				_ = msg.NakWithDelay(d)
			}
			if !sleep(ctx, d) {
				return ctx.Err()
			}
		default:
			retry.reset()
		}
	}
	return ctx.Err()
}

// errStopped: a hook stopped the reader between two steps, as a crash would.
var errStopped = errors.New("keystore: reader stopped")

// handle decodes msgs, terminates those that are not records, stores the
// keys of the rest in one transaction and acknowledges them after it
// committed.
func (s *Store) handle(ctx context.Context, msgs []jetstream.Msg) error {
	var rows [][]any
	good := msgs[:0:0]
	for _, msg := range msgs {
		rec, err := exposure.UnmarshalRecord(msg.Data())
		if err != nil {
			// Never retried: it will not decode next time either, and it
			// must not hold up the stream. The payload is not logged.
			s.m.decodeFailures.Inc()
			meta, _ := msg.Metadata()
			var seq uint64
			if meta != nil {
				seq = meta.Sequence.Stream
			}
			s.log.Error("store: message is not a key record, terminated", "stream_seq", seq, "bytes", len(msg.Data()))
			_ = msg.Term()
			continue
		}
		good = append(good, msg)
		rows = appendRows(rows, rec)
	}
	if len(good) == 0 {
		return nil
	}
	stored, err := s.store(ctx, rows)
	if err != nil {
		return err
	}
	s.m.batches.Inc()
	s.m.keys.Add(float64(stored))
	if h := s.hooks.afterCommit; h != nil {
		if err := h(); err != nil {
			return errStopped
		}
	}
	for _, msg := range good {
		// An acknowledgement lost on the way only means a redelivery, which
		// stores nothing new.
		_ = msg.Ack()
	}
	if meta, err := good[len(good)-1].Metadata(); err == nil {
		s.m.lag.Set(float64(meta.NumPending))
	}
	return nil
}

// appendRows adds rec's keys as rows of the temporary table.
func appendRows(rows [][]any, rec *exposure.Record) [][]any {
	received := exposure.Coarse(rec.Received)
	for _, k := range rec.Keys {
		var onset any
		if d, ok := exposure.DaysSinceOnset(rec.SymptomOnset, k); ok {
			onset = int16(d)
		}
		rows = append(rows, []any{k.Data[:], k.RollingStart, k.RollingPeriod, int16(k.TransmissionRisk), onset, received})
	}
	return rows
}

var copyColumns = []string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "days_since_onset", "received_hour"}

// store writes rows in one transaction and returns how many keys were new.
//
// A batch is nearly always new: it is copied straight into the table, each
// key written once. A key already stored (a redelivery: a reader stopped
// between commit and acknowledgement, a record published twice past the
// bus's dedupe window) makes that COPY fail on the primary key, which
// rolls all of it back; the batch is then written as before, through a
// temporary table and one INSERT that skips the keys already stored
// (storeMerging). Either way a batch commits whole or not at all, and a
// key is stored once.
func (s *Store) store(ctx context.Context, rows [][]any) (int64, error) {
	n, err := s.storeNew(ctx, rows)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != uniqueViolation {
		return n, err
	}
	if h := s.hooks.afterConflict; h != nil {
		if err := h(); err != nil {
			return 0, errStopped
		}
	}
	return s.storeMerging(ctx, rows)
}

// uniqueViolation is PostgreSQL's SQLSTATE for a key already stored.
const uniqueViolation = "23505"

// storeNew copies rows into the table in one transaction; a key already
// stored fails it with a unique violation and stores nothing.
func (s *Store) storeNew(ctx context.Context, rows [][]any) (int64, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("keystore: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// origin is the column's default, '' (uploaded here).
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"exposure_keys"}, copyColumns, pgx.CopyFromRows(rows))
	if err != nil {
		return 0, fmt.Errorf("keystore: copy: %w", err)
	}
	return n, s.commit(ctx, tx)
}

// storeMerging writes rows through a temporary table and one INSERT that
// skips the keys already stored, in one transaction.
func (s *Store) storeMerging(ctx context.Context, rows [][]any) (int64, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("keystore: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `create temporary table keys_in (
		key_data bytea, rolling_start integer, rolling_period integer,
		transmission_risk smallint, days_since_onset smallint, received_hour timestamptz
	) on commit drop`); err != nil {
		return 0, fmt.Errorf("keystore: temporary table: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"keys_in"}, copyColumns, pgx.CopyFromRows(rows)); err != nil {
		return 0, fmt.Errorf("keystore: copy: %w", err)
	}
	tag, err := tx.Exec(ctx, `insert into exposure_keys (key_data, rolling_start, rolling_period, transmission_risk, days_since_onset, received_hour, origin)
		select key_data, rolling_start, rolling_period, transmission_risk, days_since_onset, received_hour, ''
		from keys_in
		on conflict (key_data) do nothing`)
	if err != nil {
		return 0, fmt.Errorf("keystore: insert: %w", err)
	}
	return tag.RowsAffected(), s.commit(ctx, tx)
}

// commit commits tx, after the test hook that may fail it.
func (s *Store) commit(ctx context.Context, tx pgx.Tx) error {
	if h := s.hooks.beforeCommit; h != nil {
		if err := h(); err != nil {
			return fmt.Errorf("keystore: commit: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("keystore: commit: %w", err)
	}
	return nil
}

// backoff doubles from min to max, with full jitter in the upper half so
// that readers that failed together do not retry together.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
