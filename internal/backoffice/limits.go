package backoffice

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a token bucket per key (an IP address, a card holder). It
// lives in the process: with several copies behind a balancer each copy
// allows its share, which bounds bursts; the daily quota, which must hold
// across copies, is counted in the database instead.
type limiter struct {
	mu      sync.Mutex
	perMin  float64
	burst   int
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// newLimiter allows perMinute on average, and bursts of half a minute's
// worth (at least 5): a clinician retyping a PIN is not stopped.
func newLimiter(perMinute float64) *limiter {
	return &limiter{perMin: perMinute, burst: max(5, int(perMinute/2)), buckets: map[string]*bucket{}}
}

// allow takes a token for key at now.
func (l *limiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Forget keys idle long enough to have refilled: memory stays bounded
	// by the keys of the last few minutes.
	if now.Sub(l.swept) > time.Minute {
		full := time.Duration(float64(l.burst)/l.perMin*float64(time.Minute)) + time.Minute
		for k, b := range l.buckets {
			if now.Sub(b.seen) > full {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(rate.Limit(l.perMin/60), l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}
