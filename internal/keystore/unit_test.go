package keystore

// Fast tests of the readers' own logic, with fakes at the two interfaces
// the package consumes (jetstream.Consumer and Beginner). The tests against
// the real PostgreSQL and NATS are in keystore_test.go; these make a
// mutation run of the package finish in minutes.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sethvargo/go-envconfig"

	"github.com/vouch-nl/vouch/internal/exposure"
)

// events is what the fakes saw, in order.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, s)
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.log...)
}

type fakeMsg struct {
	jetstream.Msg
	ev           *events
	id           string
	data         []byte
	seq, pending uint64
}

func (m *fakeMsg) Data() []byte { return m.data }
func (m *fakeMsg) Ack() error   { m.ev.add("ack " + m.id); return nil }
func (m *fakeMsg) Term() error  { m.ev.add("term " + m.id); return nil }
func (m *fakeMsg) NakWithDelay(d time.Duration) error {
	m.ev.add(fmt.Sprintf("nak %s %d", m.id, d))
	return nil
}
func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}, NumPending: m.pending}, nil
}

// fakeDB is a table keyed by key_data, with its primary key: a COPY into
// it that meets a key already stored (or one twice) fails with a unique
// violation, and the merging INSERT counts only new keys, as "on conflict
// do nothing" does. fail, if set, fails the named step: "begin", "copy"
// (into the table), then after a conflict "begin merging", "create",
// "copy keys_in", "insert"; and "commit".
type fakeDB struct {
	ev         *events
	mu         sync.Mutex
	stored     map[string][]any
	fail       func(step string) error
	conflicted bool // the last COPY into the table met a stored key
}

func newFakeDB(ev *events) *fakeDB { return &fakeDB{ev: ev, stored: map[string][]any{}} }

func (db *fakeDB) step(s string) error {
	if db.fail != nil {
		return db.fail(s)
	}
	return nil
}

func (db *fakeDB) Begin(ctx context.Context) (pgx.Tx, error) {
	db.mu.Lock()
	step := "begin"
	if db.conflicted {
		step, db.conflicted = "begin merging", false
	}
	db.mu.Unlock()
	db.ev.add(step)
	if err := db.step(step); err != nil {
		return nil, err
	}
	return &fakeTx{db: db}, nil
}

type fakeTx struct {
	pgx.Tx
	db   *fakeDB
	rows [][]any
	new  int
	done bool
}

func (tx *fakeTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if strings.HasPrefix(strings.TrimSpace(sql), "create") {
		return pgconn.NewCommandTag("CREATE TABLE"), tx.db.step("create")
	}
	if err := tx.db.step("insert"); err != nil {
		return pgconn.CommandTag{}, err
	}
	tx.db.mu.Lock()
	defer tx.db.mu.Unlock()
	seen := map[string]bool{}
	for _, r := range tx.rows {
		k := string(r[0].([]byte))
		if _, ok := tx.db.stored[k]; !ok && !seen[k] {
			seen[k] = true
			tx.new++
		}
	}
	return pgconn.NewCommandTag(fmt.Sprintf("INSERT 0 %d", tx.new)), nil
}

func (tx *fakeTx) CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	if d := cmp.Diff(copyColumns, cols); d != "" {
		return 0, fmt.Errorf("columns: %s", d)
	}
	var rows [][]any
	for src.Next() {
		v, err := src.Values()
		if err != nil {
			return 0, err
		}
		rows = append(rows, v)
	}
	switch table.Sanitize() {
	case `"keys_in"`:
		tx.rows = rows
		return int64(len(rows)), tx.db.step("copy keys_in")
	case `"exposure_keys"`:
	default:
		return 0, fmt.Errorf("copy into %s", table.Sanitize())
	}
	if err := tx.db.step("copy"); err != nil {
		return 0, err
	}
	tx.db.mu.Lock()
	defer tx.db.mu.Unlock()
	seen := map[string]bool{}
	for _, r := range rows {
		k := string(r[0].([]byte))
		if _, ok := tx.db.stored[k]; ok || seen[k] {
			tx.db.conflicted = true
			return 0, &pgconn.PgError{Code: "23505", ConstraintName: "exposure_keys_pkey"}
		}
		seen[k] = true
	}
	tx.rows = rows
	return int64(len(rows)), nil
}

func (tx *fakeTx) Commit(ctx context.Context) error {
	if err := tx.db.step("commit"); err != nil {
		return err
	}
	tx.db.mu.Lock()
	defer tx.db.mu.Unlock()
	for _, r := range tx.rows {
		if _, ok := tx.db.stored[string(r[0].([]byte))]; !ok {
			tx.db.stored[string(r[0].([]byte))] = r
		}
	}
	tx.done = true
	tx.db.ev.add("commit")
	return nil
}

func (tx *fakeTx) Rollback(ctx context.Context) error {
	if !tx.done {
		tx.db.ev.add("rollback")
	}
	return nil
}

// fetch is one answer of the fake consumer.
type fetch struct {
	msgs     []*fakeMsg
	err      error // Fetch itself fails
	batchErr error // the batch ends with an error
}

type fakeConsumer struct {
	jetstream.Consumer
	mu      sync.Mutex
	fetches []fetch
	drained func() // called on each fetch once the answers ran out
}

type fakeBatch struct {
	ch  chan jetstream.Msg
	err error
}

func (b *fakeBatch) Messages() <-chan jetstream.Msg { return b.ch }
func (b *fakeBatch) Error() error                   { return b.err }

func (c *fakeConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	c.mu.Lock()
	if len(c.fetches) == 0 {
		c.mu.Unlock()
		c.drained()
		time.Sleep(time.Millisecond) // as a fetch waits for messages
		b := &fakeBatch{ch: make(chan jetstream.Msg)}
		close(b.ch)
		return b, nil
	}
	f := c.fetches[0]
	c.fetches = c.fetches[1:]
	c.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	b := &fakeBatch{ch: make(chan jetstream.Msg, len(f.msgs)), err: f.batchErr}
	for _, m := range f.msgs {
		b.ch <- m
	}
	close(b.ch)
	return b, nil
}

// logs keeps the records a reader logs.
type logs struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}
func (l *logs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logs) WithGroup(string) slog.Handler      { return l }

// count is how many records have message msg.
func (l *logs) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r.Message == msg {
			n++
		}
	}
	return n
}

// find returns the attributes of the first record with message msg.
func (l *logs) find(msg string) (map[string]any, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r.Message == msg {
			attrs := map[string]any{}
			r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.Any(); return true })
			return attrs, true
		}
	}
	return nil, false
}

func unitStore(cfg Config, db Beginner, c jetstream.Consumer, l *logs) *Store {
	return &Store{cfg: cfg.withDefaults(), db: db, consumer: c, log: slog.New(l), m: newMetrics(nil)}
}

func msgOf(ev *events, id string, r *exposure.Record, seq, pending uint64) *fakeMsg {
	return &fakeMsg{ev: ev, id: id, data: r.Marshal(), seq: seq, pending: pending}
}

// TestUnitBatchStoredThenAcknowledged: a batch's records are stored in one
// transaction with the fields and onset of each key, the message that is
// not a record is terminated (and logged by its stream sequence, never its
// bytes), and the records are acknowledged only after the commit.
func TestUnitBatchStoredThenAcknowledged(t *testing.T) {
	t.Parallel()
	ev := &events{}
	db := newFakeDB(ev)
	l := &logs{}
	s := unitStore(testConfig(), db, nil, l)
	withOnset, without := record(t, 2), record(t, 1)
	without.SymptomOnset = ""
	bad := &fakeMsg{ev: ev, id: "bad", data: []byte("vouch/keys/v1 not a record"), seq: 12, pending: 8}
	msgs := []jetstream.Msg{msgOf(ev, "r1", withOnset, 11, 9), bad, msgOf(ev, "r2", without, 13, 7)}
	if err := s.handle(t.Context(), msgs); err != nil {
		t.Fatal(err)
	}
	want := []string{"term bad", "begin", "commit", "ack r1", "ack r2"}
	if d := cmp.Diff(want, ev.all()); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	if len(db.stored) != 3 {
		t.Fatalf("%d keys stored, want 3", len(db.stored))
	}
	for _, k := range withOnset.Keys {
		d, _ := exposure.DaysSinceOnset(withOnset.SymptomOnset, k)
		want := []any{k.Data[:], k.RollingStart, k.RollingPeriod, int16(k.TransmissionRisk), int16(d), exposure.Coarse(withOnset.Received)}
		if d := cmp.Diff(want, db.stored[string(k.Data[:])]); d != "" {
			t.Errorf("row with an onset (-want +got):\n%s", d)
		}
	}
	k := without.Keys[0]
	if got := db.stored[string(k.Data[:])]; got[4] != nil {
		t.Errorf("key without onset stored onset %v, want NULL", got[4])
	}
	for m, want := range map[prometheus.Metric]float64{s.m.keys: 3, s.m.batches: 1, s.m.decodeFailures: 1, s.m.storeErrors: 0, s.m.lag: 7} {
		if got := value(t, m); got != want {
			t.Errorf("%s = %v, want %v", m.Desc(), got, want)
		}
	}
	attrs, ok := l.find("store: message is not a key record, terminated")
	if !ok || attrs["stream_seq"] != uint64(12) || attrs["bytes"] != int64(len(bad.data)) {
		t.Errorf("terminated message logged as %v, want its stream sequence 12 and size", attrs)
	}

	// The same records again (a redelivery): acknowledged, nothing new.
	ev2 := &events{}
	if err := s.handle(t.Context(), []jetstream.Msg{msgOf(ev2, "r1", withOnset, 14, 0)}); err != nil {
		t.Fatal(err)
	}
	if got := value(t, s.m.keys); got != 3 {
		t.Errorf("keys after a redelivery = %v, want still 3", got)
	}
	if got := value(t, s.m.batches); got != 2 {
		t.Errorf("batches after a redelivery = %v, want 2", got)
	}
	if got := value(t, s.m.lag); got != 0 {
		t.Errorf("lag = %v, want 0 as the last batch said", got)
	}
	if d := cmp.Diff([]string{"ack r1"}, ev2.all()); d != "" {
		t.Errorf("redelivery events (-want +got):\n%s", d)
	}
}

// TestUnitOnlyMalformed: a batch of nothing but bad messages terminates
// them and opens no transaction.
func TestUnitOnlyMalformed(t *testing.T) {
	t.Parallel()
	ev := &events{}
	s := unitStore(testConfig(), newFakeDB(ev), nil, &logs{})
	if err := s.handle(t.Context(), []jetstream.Msg{&fakeMsg{ev: ev, id: "x", data: []byte("junk")}}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"term x"}, ev.all()); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
}

// TestUnitFailedStepNotAcknowledged: whichever step of either write fails
// — the direct COPY of a new batch, or the merging write after a key was
// found stored — the batch is rolled back, not acknowledged and not
// counted, and the keys stored before stay as they were.
func TestUnitFailedStepNotAcknowledged(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		step    string
		merging bool // a key of the batch is stored already
		want    []string
	}{
		{"begin", false, []string{"begin"}},
		{"copy", false, []string{"begin", "rollback"}},
		{"hook", false, []string{"begin", "rollback"}},
		{"commit", false, []string{"begin", "rollback"}},
		{"after conflict", true, []string{"begin", "rollback"}},
		{"begin merging", true, []string{"begin", "rollback", "begin merging"}},
		{"create", true, []string{"begin", "rollback", "begin merging", "rollback"}},
		{"copy keys_in", true, []string{"begin", "rollback", "begin merging", "rollback"}},
		{"insert", true, []string{"begin", "rollback", "begin merging", "rollback"}},
		{"hook", true, []string{"begin", "rollback", "begin merging", "rollback"}},
		{"commit", true, []string{"begin", "rollback", "begin merging", "rollback"}},
	} {
		t.Run(fmt.Sprintf("%s merging=%v", tt.step, tt.merging), func(t *testing.T) {
			t.Parallel()
			ev := &events{}
			db := newFakeDB(ev)
			injected := errors.New("injected")
			db.fail = func(s string) error {
				if s == tt.step {
					return injected
				}
				return nil
			}
			s := unitStore(testConfig(), db, nil, &logs{})
			switch tt.step {
			case "hook":
				s.hooks.beforeCommit = func() error { return injected }
			case "after conflict":
				s.hooks.afterConflict = func() error { return injected }
			}
			r := record(t, 2)
			if tt.merging {
				db.stored[string(r.Keys[1].Data[:])] = []any{"stored before"}
			}
			before := len(db.stored)
			err := s.handle(t.Context(), []jetstream.Msg{msgOf(ev, "r", r, 1, 0)})
			want := injected
			if tt.step == "after conflict" {
				want = errStopped // a reader stopped there, as a crash would
			}
			if !errors.Is(err, want) {
				t.Errorf("handle = %v, want %v", err, want)
			}
			if d := cmp.Diff(tt.want, ev.all()); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
			if len(db.stored) != before || value(t, s.m.keys) != 0 || value(t, s.m.batches) != 0 {
				t.Errorf("stored %d keys (%d before), metrics %v keys %v batches; want nothing", len(db.stored), before, value(t, s.m.keys), value(t, s.m.batches))
			}
		})
	}
}

// TestUnitStoredKeyMerged: a batch with a key already stored is written
// by the merging path: its new keys stored once, counted as new, the batch
// acknowledged after the commit; a batch of new keys is copied directly.
func TestUnitStoredKeyMerged(t *testing.T) {
	t.Parallel()
	ev := &events{}
	db := newFakeDB(ev)
	s := unitStore(testConfig(), db, nil, &logs{})
	r := record(t, 3)
	db.stored[string(r.Keys[0].Data[:])] = []any{"stored before"}
	if err := s.handle(t.Context(), []jetstream.Msg{msgOf(ev, "r", r, 1, 0)}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"begin", "rollback", "begin merging", "commit", "ack r"}, ev.all()); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	if len(db.stored) != 3 || value(t, s.m.keys) != 2 {
		t.Errorf("%d keys stored, %v counted new; want 3 stored, 2 new", len(db.stored), value(t, s.m.keys))
	}
	if got := db.stored[string(r.Keys[0].Data[:])]; len(got) != 1 {
		t.Errorf("the stored key was written again: %v", got)
	}
	ev2 := &events{}
	if err := s.handle(t.Context(), []jetstream.Msg{msgOf(ev2, "n", record(t, 2), 2, 0)}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"begin", "commit"}, ev.all()[5:]); d != "" {
		t.Errorf("a new batch: database events (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"ack n"}, ev2.all()); d != "" {
		t.Errorf("a new batch: message events (-want +got):\n%s", d)
	}
	if value(t, s.m.keys) != 4 {
		t.Errorf("keys counted %v, want 4", value(t, s.m.keys))
	}
}

// TestUnitStoppedAfterCommit: a reader stopped between commit and
// acknowledgement leaves the batch stored but unacknowledged.
func TestUnitStoppedAfterCommit(t *testing.T) {
	t.Parallel()
	ev := &events{}
	db := newFakeDB(ev)
	s := unitStore(testConfig(), db, nil, &logs{})
	s.hooks.afterCommit = func() error { return errors.New("crash") }
	if err := s.handle(t.Context(), []jetstream.Msg{msgOf(ev, "r", record(t, 1), 1, 0)}); !errors.Is(err, errStopped) {
		t.Errorf("handle = %v, want errStopped", err)
	}
	if d := cmp.Diff([]string{"begin", "commit"}, ev.all()); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
}

// TestUnitReaderRetries: a reader backs off on a failed fetch and on a
// batch PostgreSQL refused (returning it to the bus with that delay, the
// delay growing), stores the batch when it comes again, and after a
// success starts again from the shortest delay. Fetch errors and batch
// errors are logged; the reader ends with its context.
func TestUnitReaderRetries(t *testing.T) {
	t.Parallel()
	ev := &events{}
	db := newFakeDB(ev)
	commits := 0
	db.fail = func(s string) error {
		if s != "commit" {
			return nil
		}
		commits++
		if commits == 1 || commits == 3 {
			return errors.New("database away")
		}
		return nil
	}
	a, b := record(t, 1), record(t, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c := &fakeConsumer{drained: cancel, fetches: []fetch{
		{err: errors.New("bus away")},
		{msgs: []*fakeMsg{msgOf(ev, "a", a, 1, 1)}},
		{msgs: []*fakeMsg{msgOf(ev, "a", a, 1, 1)}, batchErr: errors.New("fetch ended early")},
		{msgs: []*fakeMsg{msgOf(ev, "b", b, 2, 0)}},
		{msgs: []*fakeMsg{msgOf(ev, "b", b, 2, 0)}},
	}}
	cfg := testConfig()
	cfg.RetryMin, cfg.RetryMax = 8*time.Millisecond, time.Second
	l := &logs{}
	s := unitStore(cfg, db, c, l)
	if err := s.read(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("read = %v, want context.Canceled", err)
	}
	var naks []string
	var acks []string
	for _, e := range ev.all() {
		switch {
		case strings.HasPrefix(e, "nak "):
			naks = append(naks, e)
		case strings.HasPrefix(e, "ack "):
			acks = append(acks, e)
		}
	}
	if d := cmp.Diff([]string{"ack a", "ack b"}, acks); d != "" {
		t.Errorf("acknowledged (-want +got):\n%s", d)
	}
	if len(naks) != 2 {
		t.Fatalf("naks %v, want a and b once each", naks)
	}
	delay := func(e string) time.Duration {
		var id string
		var d time.Duration
		fmt.Sscanf(e, "nak %s %d", &id, &d)
		return d
	}
	// After the fetch error, a's failure is the second in a row: 8..16ms.
	// b's follows a success: back to 4..8ms.
	if d := delay(naks[0]); d < 8*time.Millisecond || d > 16*time.Millisecond || !strings.HasPrefix(naks[0], "nak a ") {
		t.Errorf("first nak %q, want a with 8ms..16ms", naks[0])
	}
	if d := delay(naks[1]); d < 4*time.Millisecond || d > 8*time.Millisecond || !strings.HasPrefix(naks[1], "nak b ") {
		t.Errorf("second nak %q, want b with 4ms..8ms", naks[1])
	}
	if got := value(t, s.m.storeErrors); got != 2 {
		t.Errorf("store errors = %v, want 2", got)
	}
	if len(db.stored) != 2 {
		t.Errorf("%d keys stored, want 2", len(db.stored))
	}
	// Each logged as often as it happened: one fetch failed, one batch
	// ended with an error, two batches were not stored.
	for msg, want := range map[string]int{"store: fetch failed": 1, "store: fetch ended": 1, "store: batch not stored, retrying": 2} {
		if got := l.count(msg); got != want {
			t.Errorf("logged %q %d times, want %d", msg, got, want)
		}
	}
}

// TestUnitReaderCancelledWhileStoring: a batch that failed because the
// reader is stopping is neither counted as a store error nor returned to
// the bus with a delay: the reader just ends.
func TestUnitReaderCancelledWhileStoring(t *testing.T) {
	t.Parallel()
	ev := &events{}
	db := newFakeDB(ev)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	db.fail = func(s string) error {
		if s == "copy" {
			cancel()
			return context.Canceled
		}
		return nil
	}
	c := &fakeConsumer{drained: func() { t.Error("fetched again after the context ended") }, fetches: []fetch{
		{msgs: []*fakeMsg{msgOf(ev, "a", record(t, 1), 1, 0)}},
	}}
	s := unitStore(testConfig(), db, c, &logs{})
	if err := s.read(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("read = %v, want context.Canceled", err)
	}
	if got := value(t, s.m.storeErrors); got != 0 {
		t.Errorf("store errors = %v, want 0", got)
	}
	for _, e := range ev.all() {
		if strings.HasPrefix(e, "nak") || strings.HasPrefix(e, "ack") {
			t.Errorf("%s on a cancelled batch", e)
		}
	}
}

// TestUnitRunEndsWithItsReaders: Run returns the context's error when
// stopped, and a reader's own error (not the others' cancellations).
func TestUnitRunEndsWithItsReaders(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	c := &fakeConsumer{drained: cancel}
	cfg := testConfig()
	cfg.Readers = 3
	s := unitStore(cfg, newFakeDB(&events{}), c, &logs{})
	if err := s.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}

	ev := &events{}
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	c = &fakeConsumer{fetches: []fetch{{msgs: []*fakeMsg{msgOf(ev, "a", record(t, 1), 1, 0)}}}}
	stopped := make(chan struct{})
	var once sync.Once
	c.drained = func() {
		select {
		case <-stopped:
			cancel()
		default:
		}
	}
	s = unitStore(cfg, newFakeDB(ev), c, &logs{})
	s.hooks.afterCommit = func() error { once.Do(func() { close(stopped) }); return errors.New("crash") }
	err := s.Run(ctx)
	if !errors.Is(err, errStopped) || errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want the stopped reader's error alone", err)
	}
}

// TestUnitDefaults: a Config built in code gets the defaults for what it
// left zero, and keeps what it set.
func TestUnitDefaults(t *testing.T) {
	t.Parallel()
	want := Config{Batch: 2000, BatchWait: 200 * time.Millisecond, Consumer: "vouch-store", Readers: 2, AckWait: 30 * time.Second,
		MaxAckPending: 20000, RetryMin: 100 * time.Millisecond, RetryMax: 15 * time.Second, StreamMaxAge: 72 * time.Hour}
	if d := cmp.Diff(want, Config{}.withDefaults()); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
	// The same as an empty environment gives: one set of defaults.
	var env Config
	if err := envconfig.ProcessWith(t.Context(), &envconfig.Config{Target: &env, Lookuper: envconfig.MapLookuper(nil)}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(env, Config{}.withDefaults()); d != "" {
		t.Errorf("code's defaults differ from the environment's (-env +code):\n%s", d)
	}
	set := Config{Batch: 7, BatchWait: time.Second, Consumer: "c", Readers: 3, AckWait: time.Minute,
		MaxAckPending: 70, RetryMin: time.Millisecond, RetryMax: time.Second, StreamMaxAge: 2 * time.Hour}
	if d := cmp.Diff(set, set.withDefaults()); d != "" {
		t.Errorf("set values changed (-want +got):\n%s", d)
	}
}

// TestUnitConfigBounds: every documented bound holds at both ends, and
// Validate names every fault at once.
func TestUnitConfigBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"batch 1", Config{Batch: 1}, true},
		{"batch 10000", Config{Batch: 10000}, true},
		{"batch 10001", Config{Batch: 10001, MaxAckPending: 20000}, false},
		{"batch negative", Config{Batch: -1}, false},
		{"wait 1ms", Config{BatchWait: time.Millisecond}, true},
		{"wait under 1ms", Config{BatchWait: time.Millisecond - 1}, false},
		{"wait 1m", Config{BatchWait: time.Minute}, true},
		{"wait over 1m", Config{BatchWait: time.Minute + 1}, false},
		{"readers 64", Config{Readers: 64}, true},
		{"readers 65", Config{Readers: 65}, false},
		{"readers negative", Config{Readers: -1}, false},
		{"ack wait 1s", Config{AckWait: time.Second}, true},
		{"ack wait under 1s", Config{AckWait: time.Second - 1}, false},
		{"pending = batch", Config{Batch: 500, MaxAckPending: 500}, true},
		{"pending below batch", Config{Batch: 500, MaxAckPending: 499}, false},
		{"retry min negative", Config{RetryMin: -1}, false},
		{"retry max = min", Config{RetryMin: time.Second, RetryMax: time.Second}, true},
		{"retry max below min", Config{RetryMin: time.Second, RetryMax: time.Second - 1}, false},
		{"stream age 1h", Config{StreamMaxAge: time.Hour}, true},
		{"stream age under 1h", Config{StreamMaxAge: time.Hour - 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate(%+v) = %v, want ok %v", tt.cfg, err, tt.ok)
			}
		})
	}
	err := Config{Batch: -1, Readers: 65, StreamMaxAge: time.Minute}.Validate()
	for _, v := range []string{"VOUCH_STORE_BATCH", "VOUCH_STORE_READERS", "VOUCH_KEYS_STREAM_MAX_AGE"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("Validate = %v, want it to name %s", err, v)
		}
	}
}

// TestUnitBackoffJitter: each wait is drawn from the whole upper half of
// the current step, both ends included, so readers that failed together
// spread out.
func TestUnitBackoffJitter(t *testing.T) {
	t.Parallel()
	seen := map[time.Duration]bool{}
	for range 200 {
		b := backoff{min: 2, max: 2}
		d := b.next()
		if d < 1 || d > 2 {
			t.Fatalf("wait %d, want 1..2", d)
		}
		seen[d] = true
	}
	if !seen[1] || !seen[2] {
		t.Errorf("waits drawn %v, want both ends of 1..2", seen)
	}
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	var sum time.Duration
	const n = 400
	for range n {
		b.reset()
		b.next()
		sum += b.next() // the second step: 100..200ms, 150ms on average
	}
	if avg := sum / n; avg < 130*time.Millisecond || avg > 170*time.Millisecond {
		t.Errorf("average second wait %s, want about 150ms", avg)
	}
}

// TestUnitMetricsRegistered: the readers' metrics are on the registry
// Prometheus scrapes.
func TestUnitMetricsRegistered(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	m.keys.Add(1)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fams {
		names = append(names, f.GetName())
	}
	want := []string{"vouch_store_batches_total", "vouch_store_decode_failures_total", "vouch_store_errors_total", "vouch_store_keys_total", "vouch_store_lag_messages"}
	if d := cmp.Diff(want, names); d != "" {
		t.Errorf("registered (-want +got):\n%s", d)
	}
}
