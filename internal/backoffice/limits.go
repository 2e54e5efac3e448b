package backoffice

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/time/rate"

	"github.com/vouch-nl/vouch/internal/database"
)

// quota is the daily quota per card in effect: the admin's setting, within
// the configuration's limit (internal/settings).
func (s *Service) quota() int { return s.settings.Current().DailyQuota }

// Rate is a token bucket's shape: PerMinute tokens a minute on average,
// Burst at once.
type Rate struct {
	PerMinute float64
	Burst     int
}

// rateOf allows perMinute on average, and bursts of half a minute's worth
// (at least 5): a clinician retyping a PIN is not stopped.
func rateOf(perMinute float64) Rate {
	return Rate{PerMinute: perMinute, Burst: max(5, int(perMinute/2))}
}

// fill is how long an empty bucket of r takes to be full again.
func (r Rate) fill() time.Duration {
	return time.Duration(float64(r.Burst) / r.PerMinute * float64(time.Minute))
}

// Buckets keeps the token buckets the limits take from. Every copy of the
// back office must take from the same ones: buckets kept per process allow
// a limit's rate once per copy behind the balancer. PostgreSQL keeps them
// (pgBuckets, the default); the fast unit layer keeps them in memory.
type Buckets interface {
	// Take takes a token from key's bucket of shape r at now, when it
	// holds one; a refusal takes nothing.
	Take(ctx context.Context, key string, r Rate, now time.Time) (bool, error)
	// Sweep forgets the buckets that are full again at now: a full
	// bucket and none are the same.
	Sweep(ctx context.Context, now time.Time) error
}

// limiter is one limit: a bucket of rate per key (an address, a card
// holder) in the shared buckets, named apart from the other limits'.
type limiter struct {
	name   string
	rate   Rate
	shared Buckets
	// shield is this process's own bucket per key, taken from first: a
	// flood from one address is refused here without a query, so the
	// shared store sees at most the limit's rate per copy. It never
	// allows what the shared bucket refuses (both are asked); nil when
	// the shared buckets are in this process already.
	shield *memBuckets
}

func newLimiter(name string, perMinute float64, shared Buckets) *limiter {
	l := &limiter{name: name, rate: rateOf(perMinute), shared: shared}
	if _, inMemory := shared.(*memBuckets); !inMemory {
		l.shield = newMemBuckets()
	}
	return l
}

// check takes a token for key at now: errRateLimited when there is none.
func (l *limiter) check(ctx context.Context, key string, now time.Time) error {
	if l.shield != nil {
		if ok, _ := l.shield.Take(ctx, key, l.rate, now); !ok {
			return errRateLimited
		}
	}
	ok, err := l.shared.Take(ctx, l.name+"/"+key, l.rate, now)
	switch {
	case err != nil:
		return fmt.Errorf("rate limit %s: %w", l.name, err)
	case !ok:
		return errRateLimited
	}
	return nil
}

// memBuckets are token buckets in this process: the unit layer's store,
// and each limit's shield in front of the shared one.
type memBuckets struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
	keep time.Duration // idle this long, it is full again and forgotten
}

func newMemBuckets() *memBuckets { return &memBuckets{buckets: map[string]*bucket{}} }

func (m *memBuckets) Take(_ context.Context, key string, r Rate, now time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Forget keys idle long enough to have refilled: memory stays bounded
	// by the keys of the last few minutes.
	if now.Sub(m.swept) > time.Minute {
		m.sweep(now)
	}
	b, ok := m.buckets[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(rate.Limit(r.PerMinute/60), r.Burst), keep: r.fill() + time.Minute}
		m.buckets[key] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1), nil
}

func (m *memBuckets) Sweep(_ context.Context, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now)
	return nil
}

func (m *memBuckets) sweep(now time.Time) {
	for k, b := range m.buckets {
		if now.Sub(b.seen) > b.keep {
			delete(m.buckets, k)
		}
	}
	m.swept = now
}

// pgBuckets are the buckets in PostgreSQL (rate_buckets, migration 015):
// one atomic upsert a check, shared by every copy.
type pgBuckets struct{ db *database.DB }

// takeSQL refills the bucket for the time since its last take (never
// backwards: copies' clocks differ a little), and takes a token only when
// a whole one is there; ON CONFLICT DO UPDATE makes it atomic between
// copies. No row returned is a refusal, which leaves the bucket as it was.
const takeSQL = `insert into rate_buckets as b (key, tokens, at, full_at)
	values ($1, $2::float8 - 1, $4::timestamptz, $4::timestamptz + make_interval(secs => $5::float8))
	on conflict (key) do update set
		tokens = least($2::float8, b.tokens + greatest(0, extract(epoch from $4::timestamptz - b.at)::float8) * $3::float8) - 1,
		at = greatest(b.at, $4::timestamptz),
		full_at = greatest(b.at, $4::timestamptz) + make_interval(secs => $5::float8)
	where least($2::float8, b.tokens + greatest(0, extract(epoch from $4::timestamptz - b.at)::float8) * $3::float8) >= 1
	returning true`

func (p pgBuckets) Take(ctx context.Context, key string, r Rate, now time.Time) (bool, error) {
	var ok bool
	err := p.db.Pool().QueryRow(ctx, takeSQL, key, float64(r.Burst), r.PerMinute/60, now, r.fill().Seconds()).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("rate buckets: %w", err)
	}
	return ok, nil
}

func (p pgBuckets) Sweep(ctx context.Context, now time.Time) error {
	if _, err := p.db.Pool().Exec(ctx, `delete from rate_buckets where full_at < $1`, now); err != nil {
		return fmt.Errorf("rate buckets: sweep: %w", err)
	}
	return nil
}
