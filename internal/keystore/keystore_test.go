package keystore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testConfig is quick to fill and quick to retry.
func testConfig() Config {
	return Config{Batch: 100, BatchWait: 50 * time.Millisecond, Readers: 1, AckWait: 2 * time.Second,
		RetryMin: 20 * time.Millisecond, RetryMax: 500 * time.Millisecond, StreamMaxAge: time.Hour}
}

// record is an upload of n fresh keys with a symptom onset.
func record(t testing.TB, n int) *exposure.Record {
	t.Helper()
	now := time.Date(2026, 12, 3, 10, 17, 0, 0, time.UTC)
	r := &exposure.Record{Received: exposure.Coarse(now), SymptomOnset: "2026-12-01"}
	rand.Read(r.AuthorizationID[:])
	for i := range n {
		k := exposure.Key{RollingStart: exposure.IntervalNumber(now.Add(-time.Duration(i)*24*time.Hour)) / 144 * 144, RollingPeriod: 144, TransmissionRisk: 2}
		rand.Read(k.Data[:])
		r.Keys = append(r.Keys, k)
	}
	return r
}

// value reads a counter or gauge.
func value(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func publish(t testing.TB, b *bus.Bus, id string, data []byte) {
	t.Helper()
	if _, err := b.JetStream().Publish(t.Context(), exposure.Subject, data, jetstream.WithMsgID(id)); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func publishRecord(t testing.TB, b *bus.Bus, r *exposure.Record) {
	t.Helper()
	publish(t, b, hex.EncodeToString(r.AuthorizationID[:]), r.Marshal())
}

// openStream creates the stream as ingest would, before anything is published.
func openStream(t testing.TB, b *bus.Bus) {
	t.Helper()
	if _, err := b.Stream(t.Context(), bus.StreamConfig{Name: exposure.Stream, Subjects: []string{exposure.Subject}, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
}

func newStore(t testing.TB, cfg Config, db Beginner, b *bus.Bus) *Store {
	t.Helper()
	s, err := New(t.Context(), cfg, db, b, nil, quiet)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// run runs s until the test ends or stop is called; stop waits for it.
func run(t testing.TB, s *Store) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func countKeys(t testing.TB, db *pgxpool.Pool) (rows, distinct int) {
	t.Helper()
	if err := db.QueryRow(t.Context(), `select count(*), count(distinct key_data) from exposure_keys`).Scan(&rows, &distinct); err != nil {
		t.Fatalf("count: %v", err)
	}
	return rows, distinct
}

// waitKeys waits until the table holds want rows, and fails past timeout.
func waitKeys(t testing.TB, db *pgxpool.Pool, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, _ := countKeys(t, db)
		if n == want {
			return
		}
		if n > want || time.Now().After(deadline) {
			t.Fatalf("exposure_keys holds %d rows, want %d", n, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAcked waits until the consumer has nothing pending or unacknowledged.
func waitAcked(t testing.TB, s *Store) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := s.consumer.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer: %d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStoresEveryKeyOnce(t *testing.T) {
	t.Parallel()
	db, b := testenv.Database(t), testenv.Bus(t)
	openStream(t, b)
	var recs []*exposure.Record
	for range 50 {
		r := record(t, 3)
		recs = append(recs, r)
		publishRecord(t, b, r)
	}
	s := newStore(t, testConfig(), db.Pool(), b)
	run(t, s)
	waitKeys(t, db.Pool(), 150, 15*time.Second)
	waitAcked(t, s)

	type row struct {
		Start, Period int32
		Risk          int16
		Onset         *int16
		Received      time.Time
		Origin        string
	}
	k := recs[7].Keys[2]
	var got row
	if err := db.Pool().QueryRow(t.Context(), `select rolling_start, rolling_period, transmission_risk, days_since_onset, received_hour, origin
		from exposure_keys where key_data = $1`, k.Data[:]).Scan(&got.Start, &got.Period, &got.Risk, &got.Onset, &got.Received, &got.Origin); err != nil {
		t.Fatal(err)
	}
	d, _ := exposure.DaysSinceOnset(recs[7].SymptomOnset, k)
	onset := int16(d)
	want := row{k.RollingStart, k.RollingPeriod, 2, &onset, recs[7].Received, ""}
	got.Received = got.Received.UTC()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored row (-want +got):\n%s", diff)
	}
	if got := value(t, s.m.keys); got != 150 {
		t.Errorf("keys stored metric = %v, want 150", got)
	}
	if got := value(t, s.m.batches); got < 1 || got > 50 {
		t.Errorf("batches = %v, want 1..50", got)
	}
}

func TestNoOnsetIsNull(t *testing.T) {
	t.Parallel()
	db, b := testenv.Database(t), testenv.Bus(t)
	openStream(t, b)
	r := record(t, 2)
	r.SymptomOnset = ""
	publishRecord(t, b, r)
	run(t, newStore(t, testConfig(), db.Pool(), b))
	waitKeys(t, db.Pool(), 2, 15*time.Second)
	var nulls int
	if err := db.Pool().QueryRow(t.Context(), `select count(*) from exposure_keys where days_since_onset is null`).Scan(&nulls); err != nil {
		t.Fatal(err)
	}
	if nulls != 2 {
		t.Errorf("%d keys without onset, want 2", nulls)
	}
}

func TestSameRecordTwiceStoredOnce(t *testing.T) {
	t.Parallel()
	db, b := testenv.Database(t), testenv.Bus(t)
	openStream(t, b)
	r := record(t, 5)
	publish(t, b, "a", r.Marshal())
	publish(t, b, "b", r.Marshal())
	s := newStore(t, testConfig(), db.Pool(), b)
	run(t, s)
	waitAcked(t, s)
	waitKeys(t, db.Pool(), 5, 5*time.Second)
	if got := value(t, s.m.keys); got != 5 {
		t.Errorf("keys stored metric = %v, want 5", got)
	}
}

func TestFailedCommitIsRedelivered(t *testing.T) {
	t.Parallel()
	db, b := testenv.Database(t), testenv.Bus(t)
	openStream(t, b)
	for range 10 {
		publishRecord(t, b, record(t, 2))
	}
	s := newStore(t, testConfig(), db.Pool(), b)
	var calls atomic.Int32
	s.hooks.beforeCommit = func() error {
		if calls.Add(1) == 1 {
			return errors.New("injected: commit fails")
		}
		return nil
	}
	run(t, s)
	waitAcked(t, s)
	waitKeys(t, db.Pool(), 20, 5*time.Second)
	if rows, distinct := countKeys(t, db.Pool()); rows != distinct {
		t.Errorf("%d rows for %d keys", rows, distinct)
	}
	if got := value(t, s.m.storeErrors); got != 1 {
		t.Errorf("store errors = %v, want 1", got)
	}
	if calls.Load() < 2 {
		t.Errorf("committed %d times, want a retry", calls.Load())
	}
}

func TestMalformedMessageIsTerminated(t *testing.T) {
	t.Parallel()
	db, b := testenv.Database(t), testenv.Bus(t)
	openStream(t, b)
	publishRecord(t, b, record(t, 3))
	publish(t, b, "bad", []byte("vouch/keys/v1 not a record"))
	publishRecord(t, b, record(t, 3))
	s := newStore(t, testConfig(), db.Pool(), b)
	run(t, s)
	waitAcked(t, s) // a terminated message is not pending either
	waitKeys(t, db.Pool(), 6, 5*time.Second)
	if got := value(t, s.m.decodeFailures); got != 1 {
		t.Errorf("decode failures = %v, want 1", got)
	}
	if got := value(t, s.m.storeErrors); got != 0 {
		t.Errorf("store errors = %v, want 0", got)
	}
}

func TestTwoReadersDrainTogether(t *testing.T) {
	t.Parallel()
	db, b := testenv.Database(t), testenv.Bus(t)
	openStream(t, b)
	const records = 5000
	// Published concurrently with the readers draining.
	var pub sync.WaitGroup
	pub.Add(1)
	go func() {
		defer pub.Done()
		js := b.JetStream()
		var acks []jetstream.PubAckFuture
		for range records {
			r := record(t, 2)
			f, err := js.PublishAsync(exposure.Subject, r.Marshal(), jetstream.WithMsgID(hex.EncodeToString(r.AuthorizationID[:])))
			if err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			acks = append(acks, f)
		}
		for _, f := range acks {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Errorf("publish: %v", err)
			}
		}
	}()
	cfg := testConfig()
	cfg.Batch = 200
	// Two stores: two processes on the same durable consumer.
	s1, s2 := newStore(t, cfg, db.Pool(), b), newStore(t, cfg, db.Pool(), b)
	run(t, s1)
	run(t, s2)
	pub.Wait()
	waitKeys(t, db.Pool(), 2*records, 60*time.Second)
	waitAcked(t, s1)
	if rows, distinct := countKeys(t, db.Pool()); rows != distinct {
		t.Errorf("%d rows for %d keys", rows, distinct)
	}
	k1, k2 := value(t, s1.m.keys), value(t, s2.m.keys)
	t.Logf("reader 1 stored %v keys, reader 2 %v", k1, k2)
	if k1+k2 != 2*records {
		t.Errorf("readers stored %v + %v keys, want %d", k1, k2, 2*records)
	}
	if k1 == 0 || k2 == 0 {
		t.Errorf("one reader did all the work: %v and %v", k1, k2)
	}
}

func TestReaderStoppedBetweenCommitAndAck(t *testing.T) {
	t.Parallel()
	db, b := testenv.Database(t), testenv.Bus(t)
	openStream(t, b)
	const records = 300
	for range records {
		publishRecord(t, b, record(t, 1))
	}
	cfg := testConfig()
	cfg.AckWait = time.Second // the crashed batch comes back soon
	crashed := newStore(t, cfg, db.Pool(), b)
	var committed atomic.Int32
	crashed.hooks.afterCommit = func() error {
		if committed.Add(1) == 2 {
			return errors.New("injected: crash before acknowledging")
		}
		return nil
	}
	stop := run(t, crashed)
	deadline := time.Now().Add(10 * time.Second)
	for committed.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); !errors.Is(err, errStopped) {
		t.Fatalf("crashed reader returned %v, want it stopped by the hook", err)
	}
	before, _ := countKeys(t, db.Pool())
	if before == 0 || before == records {
		t.Fatalf("%d keys stored before the crash, want some but not all", before)
	}

	next := newStore(t, cfg, db.Pool(), b)
	run(t, next)
	waitKeys(t, db.Pool(), records, 20*time.Second)
	waitAcked(t, next)
	if rows, distinct := countKeys(t, db.Pool()); rows != distinct || rows != records {
		t.Errorf("%d rows for %d keys, want %d", rows, distinct, records)
	}
	// The crashed batch was committed but not acknowledged: the bus
	// delivered it again and it stored nothing new.
	if got := value(t, next.m.keys); int(got) != records-before {
		t.Errorf("the next reader stored %v new keys, want %d", got, records-before)
	}
}

// TestReaderStoppedAfterConflict: a reader whose direct COPY met a key
// already stored, stopped before the merging write (as a crash would),
// stored nothing of the batch; the next reader stores every key once.
func TestReaderStoppedAfterConflict(t *testing.T) {
	t.Parallel()
	db, b := testenv.Database(t), testenv.Bus(t)
	openStream(t, b)
	r := record(t, 4)
	if _, err := db.Pool().Exec(t.Context(), `insert into exposure_keys (key_data, rolling_start, rolling_period, received_hour)
		values ($1, $2, $3, now())`, r.Keys[2].Data[:], r.Keys[2].RollingStart, r.Keys[2].RollingPeriod); err != nil {
		t.Fatal(err)
	}
	publishRecord(t, b, r)
	publishRecord(t, b, record(t, 3))
	cfg := testConfig()
	cfg.AckWait = time.Second
	crashed := newStore(t, cfg, db.Pool(), b)
	var conflicts atomic.Int32
	crashed.hooks.afterConflict = func() error {
		conflicts.Add(1)
		return errors.New("injected: crash after the conflict")
	}
	stop := run(t, crashed)
	deadline := time.Now().Add(10 * time.Second)
	for conflicts.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); !errors.Is(err, errStopped) {
		t.Fatalf("crashed reader returned %v, want it stopped by the hook", err)
	}
	if rows, _ := countKeys(t, db.Pool()); rows != 1 {
		t.Fatalf("%d keys stored after the crash, want the one stored before", rows)
	}

	next := newStore(t, cfg, db.Pool(), b)
	run(t, next)
	waitKeys(t, db.Pool(), 7, 20*time.Second)
	waitAcked(t, next)
	if rows, distinct := countKeys(t, db.Pool()); rows != distinct || rows != 7 {
		t.Errorf("%d rows for %d keys, want 7", rows, distinct)
	}
	if got := value(t, next.m.keys); got != 6 {
		t.Errorf("the next reader stored %v new keys, want 6", got)
	}
}

// proxy forwards TCP to PostgreSQL until cut, and refuses every connection
// (closing those open) while cut.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// countingDB counts the transactions the readers try to begin.
type countingDB struct {
	*pgxpool.Pool
	attempts atomic.Int64
}

func (c *countingDB) Begin(ctx context.Context) (pgx.Tx, error) {
	c.attempts.Add(1)
	return c.Pool.Begin(ctx)
}

func TestDatabaseDownBacksOffThenCatchesUp(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, u.Host)
	u.Host = p.ln.Addr().String()
	q := u.Query()
	q.Set("pool_max_conns", "2")
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	db, err := database.Open(t.Context(), database.Config{URL: u.String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	b := testenv.Bus(t)
	openStream(t, b)
	cfg := testConfig()
	cfg.RetryMin, cfg.RetryMax = 50*time.Millisecond, time.Second
	cdb := &countingDB{Pool: db.Pool()}
	s := newStore(t, cfg, cdb, b)
	run(t, s)

	publishRecord(t, b, record(t, 1))
	waitKeys(t, db.Pool(), 1, 10*time.Second)

	p.setCut(true)
	for range 20 {
		publishRecord(t, b, record(t, 1))
	}
	start := cdb.attempts.Load()
	const down = 4 * time.Second
	time.Sleep(down)
	attempts := cdb.attempts.Load() - start
	t.Logf("%d attempts in %s with the database unreachable", attempts, down)
	// Doubling from 50ms to 1s: about ten in four seconds. A hot loop
	// makes thousands.
	if attempts < 2 || attempts > 15 {
		t.Errorf("%d attempts in %s, want 2..15", attempts, down)
	}
	if n := value(t, s.m.storeErrors); n < 2 {
		t.Errorf("store errors = %v, want the failures counted", n)
	}

	p.setCut(false)
	waitKeys(t, db.Pool(), 21, 15*time.Second)
	waitAcked(t, s)
	if rows, distinct := countKeys(t, db.Pool()); rows != distinct {
		t.Errorf("%d rows for %d keys", rows, distinct)
	}
}

func TestBackoffBounded(t *testing.T) {
	t.Parallel()
	b := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	var got []time.Duration
	for range 8 {
		got = append(got, b.next())
	}
	bounds := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000, 2000}
	for i, d := range got {
		hi := bounds[i] * time.Millisecond
		if d < hi/2 || d > hi {
			t.Errorf("attempt %d waits %s, want %s..%s", i, d, hi/2, hi)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after a success the wait is %s, want it back at the minimum", d)
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
		{"batch too large", Config{Batch: 100000, MaxAckPending: 200000}, false},
		{"ack wait too short", Config{AckWait: time.Millisecond}, false},
		{"retry max below min", Config{RetryMin: time.Second, RetryMax: time.Millisecond}, false},
		{"stream age too short", Config{StreamMaxAge: time.Minute}, false},
		{"pending below batch", Config{Batch: 500, MaxAckPending: 10}, false},
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
