//go:build !mutation

package backoffice

// The rate limits' buckets in PostgreSQL, as every copy of the back office
// shares them.

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestPGBucketsRefill: the database's bucket has the burst and refill of
// the one in memory, at the exact times; a refusal takes nothing; keys and
// limits are apart; a clock behind the last take adds nothing.
func TestPGBucketsRefill(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ctx := t.Context()
	t0 := time.Unix(1_700_000_000, 0)
	for _, tt := range []struct {
		perMinute float64
		refill    time.Duration
	}{{2, 30 * time.Second}, {12, 5 * time.Second}, {100, 600 * time.Millisecond}} {
		l := newLimiter("signin", tt.perMinute, pgBuckets{db: db})
		l.shield = nil // the database's answers alone
		key := time.Duration(tt.refill).String()
		got := 0
		for l.check(ctx, key, t0) == nil && got <= 1000 {
			got++
		}
		if got != l.rate.Burst {
			t.Errorf("%v/min: %d allowed at once, want %d", tt.perMinute, got, l.rate.Burst)
		}
		if err := l.check(ctx, key, t0.Add(tt.refill*9/10)); err != errRateLimited {
			t.Errorf("%v/min: a token back before %v: %v", tt.perMinute, tt.refill, err)
		}
		if err := l.check(ctx, key, t0.Add(tt.refill*11/10)); err != nil {
			t.Errorf("%v/min: no token back after %v: %v", tt.perMinute, tt.refill, err)
		}
		// The clock of another copy, a second behind: no token appears.
		if err := l.check(ctx, key, t0.Add(tt.refill*11/10-time.Second)); err != errRateLimited {
			t.Errorf("%v/min: a token from a clock going back: %v", tt.perMinute, err)
		}
		if err := l.check(ctx, "other-"+key, t0); err != nil {
			t.Errorf("%v/min: another key limited by the first: %v", tt.perMinute, err)
		}
		if err := newLimiter("vouch", tt.perMinute, pgBuckets{db: db}).check(ctx, key, t0); err != nil {
			t.Errorf("%v/min: another limit's key limited by the first: %v", tt.perMinute, err)
		}
	}
}

// TestPGBucketsAcrossCopies: copies checking one key at the same moment,
// each with its own pool and shield, allow the burst once between them.
func TestPGBucketsAcrossCopies(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	now := time.Now()
	open := func() *database.DB {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		db, err := database.Open(t.Context(), database.Config{URL: url + sep + "pool_max_conns=3"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		return db
	}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 3 {
		db := open()
		l := newLimiter("signin", 10, pgBuckets{db: db}) // burst 5
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					switch err := l.check(context.Background(), "192.0.2.7", now); err {
					case nil:
						allowed.Add(1)
					case errRateLimited:
					default:
						t.Error(err)
					}
				}
			}()
		}
	}
	wg.Wait()
	if n := allowed.Load(); n != 5 {
		t.Fatalf("%d of 120 checks allowed by three copies, want the burst of 5", n)
	}
}

// TestPGBucketsSweep: the sweep deletes the buckets full again, and only
// those.
func TestPGBucketsSweep(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ctx := t.Context()
	b := pgBuckets{db: db}
	t0 := time.Unix(1_700_000_000, 0)
	r := rateOf(60) // burst 30: full 30 s after a take
	for _, k := range []string{"a", "b"} {
		if ok, err := b.Take(ctx, k, r, t0); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if ok, err := b.Take(ctx, "b", r, t0.Add(20*time.Second)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	count := func() (n int) {
		if err := db.Pool().QueryRow(ctx, `select count(*) from rate_buckets`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := b.Sweep(ctx, t0.Add(30*time.Second)); err != nil || count() != 2 {
		t.Fatalf("at 30 s: %v, %d buckets; want both kept (a full only now)", err, count())
	}
	if err := b.Sweep(ctx, t0.Add(31*time.Second)); err != nil || count() != 1 {
		t.Fatalf("at 31 s: %v, %d buckets; want b's alone", err, count())
	}
	if err := b.Sweep(ctx, t0.Add(51*time.Second)); err != nil || count() != 0 {
		t.Fatalf("at 51 s: %v, %d buckets; want none", err, count())
	}
}

// TestRunSweepsBuckets: every copy's Run deletes the buckets full again,
// at start and every interval, and keeps the others; a failed sweep is
// logged and Run goes on.
func TestRunSweepsBuckets(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	deps := fakeDeps(t, &fakePublisher{})
	deps.Log = slog.New(slog.NewTextHandler(logs, nil))
	s, err := New(fakeConfig(), deps)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.buckets.(pgBuckets); !ok {
		t.Fatalf("buckets %T, want PostgreSQL's by default", s.buckets)
	}
	ctx := t.Context()
	now := s.now()
	if _, err := deps.DB.Pool().Exec(ctx, `insert into rate_buckets (key, tokens, at, full_at) values
		('signin/192.0.2.1', 0, $1, $2), ('signin/192.0.2.2', 0, $1, $3)`, now.Add(-time.Minute), now.Add(-time.Second), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	stop := runService(t, s, time.Hour)
	waitFor(t, func() bool { return count(t, deps.DB, `select count(*) from rate_buckets`) == 1 }, "the full bucket swept")
	stop()
	if n := count(t, deps.DB, `select count(*) from rate_buckets where key = 'signin/192.0.2.2'`); n != 1 {
		t.Errorf("the live bucket swept too")
	}
	for _, sql := range []string{
		`create function refuse() returns trigger language plpgsql as $$ begin raise exception 'refused (test)'; end $$`,
		`create trigger refuse_sweep before delete on rate_buckets for each statement execute function refuse()`,
	} {
		if _, err := deps.DB.Pool().Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	runService(t, s, time.Hour)
	waitFor(t, func() bool { return strings.Contains(logs.String(), "rate limits: sweep failed") }, "the failed sweep logged")
}
