//go:build !mutation

package ingest_test

import (
	"crypto/rand"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneapi"
)

// Timing: real and chaff exchanges are measured as distributions and
// compared at these quantiles; they may differ by 10 % or 0.2 ms,
// whichever is more, beyond what sampling explains: one's q-quantile must
// lie within the other's quantiles at q ± 2σ (σ = √(q(1−q)/n), the
// spread of a sample quantile's rank; for 1,000 samples the 99th
// percentile is compared with the other's 98.4th to 99.6th). Without that
// band the 99th percentile — the tenth slowest of 1,000 — is whichever
// requests a busy machine stalled, and differs by tens of percent between
// two samples of one distribution.
var (
	timingQuantiles = []float64{0.10, 0.50, 0.90, 0.99}
	timingSamples   = 1000
)

const (
	timingRel = 0.10
	timingAbs = 200 * time.Microsecond
	// timingRuns: a machine shared with other work can stall a stretch of
	// one run; real and chaff are told apart only when every run tells
	// them apart. A real difference at these quantiles shows in each.
	timingRuns = 3
)

func quantile(sorted []time.Duration, q float64) time.Duration {
	return sorted[max(0, min(len(sorted)-1, int(math.Ceil(q*float64(len(sorted))))-1))]
}

// within reports whether x is within the bounds of sorted's q-quantile.
func within(x time.Duration, sorted []time.Duration, q float64) bool {
	sd := 2 * math.Sqrt(q*(1-q)/float64(len(sorted)))
	lo, hi := quantile(sorted, q-sd), quantile(sorted, q+sd)
	slack := func(d time.Duration) time.Duration { return max(timingAbs, time.Duration(timingRel*float64(d))) }
	return x >= lo-slack(lo) && x <= hi+slack(hi)
}

// compareTimes says how the quantiles of a and b differ, and whether each
// is within the bounds.
func compareTimes(a, b []time.Duration) (string, bool) {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	ok := true
	var sb strings.Builder
	for _, q := range timingQuantiles {
		qa, qb := quantile(a, q), quantile(b, q)
		alike := within(qa, b, q) && within(qb, a, q)
		ok = ok && alike
		fmt.Fprintf(&sb, " p%02.0f %s/%s", q*100, qa.Round(time.Microsecond), qb.Round(time.Microsecond))
		if !alike {
			sb.WriteString("(!)")
		}
	}
	return sb.String(), ok
}

// exchange is one request to time.
type exchange struct {
	path  string
	body  []byte
	chaff bool
	kind  int // which distribution it belongs to
}

// timeExchanges sends the exchanges in the order given, each after the
// last was answered, and returns each kind's times. Every answer must be
// 200 of the route's block.
//
// The collector is off while they run (and runs before): its pauses fall
// on whichever request is in flight, which says nothing of the request.
func (w *world) timeExchanges(ex []exchange, kinds int) [][]time.Duration {
	w.t.Helper()
	out := make([][]time.Duration, kinds)
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for _, e := range ex {
		start := time.Now()
		status, res := w.post(e.path, e.body, e.chaff)
		d := time.Since(start)
		want := phoneapi.UploadResponseBlock
		if e.path == phoneapi.PathPickup {
			want = phoneapi.PickupResponseBlock
		}
		if status != http.StatusOK || len(res) != want {
			w.t.Fatalf("%s (chaff %v): %d, %d bytes", e.path, e.chaff, status, len(res))
		}
		out[e.kind] = append(out[e.kind], d)
	}
	return out
}

// interleave shuffles each group of one exchange of every kind, so that
// neither kind always goes first and a stretch of load falls on all.
func interleave(groups [][]exchange) []exchange {
	var out []exchange
	for _, g := range groups {
		mrand.Shuffle(len(g), func(i, j int) { g[i], g[j] = g[j], g[i] })
		out = append(out, g...)
	}
	return out
}

// TestChaffTiming measures real and chaff uploads (1,000 of each,
// interleaved) and pickups (pending, ready and chaff) as distributions and
// fails when any of their 10th, 50th, 90th or 99th percentiles differ by
// more than 10 % or 0.2 ms. It also checks that chaff changed nothing on
// the bus.
func TestChaffTiming(t *testing.T) {
	// Not parallel: it measures time, and runs alone in its package.
	w := newWorld(t, nil)
	uploaded := 0
	// A batch of upload pairs, signed just before they are sent (an
	// upload's time is good for 5 minutes).
	const batch = 50
	uploads := func() (string, bool) {
		var real, chaff []time.Duration
		for len(real) < timingSamples {
			var groups [][]exchange
			for range batch {
				p := newPhone(t)
				bundle, _ := w.bundle(p, bundleOpts{})
				r := p.uploadReq(bundle, keys(t, 14), time.Now())
				// A chaff phone has no bundle: random bytes of a bundle's
				// length, keys made the same way, its own signature.
				c := newPhone(t)
				fake := make([]byte, len(bundle))
				rand.Read(fake)
				ch := c.uploadReq(fake, keys(t, 14), time.Now())
				groups = append(groups, []exchange{
					{phoneapi.PathUploads, padRequest(&r, phoneapi.UploadRequestBlock), false, 0},
					{phoneapi.PathUploads, padRequest(&ch, phoneapi.UploadRequestBlock), true, 1},
				})
			}
			got := w.timeExchanges(interleave(groups), 2)
			real, chaff = append(real, got[0]...), append(chaff, got[1]...)
			uploaded += batch
		}
		return compareTimes(real, chaff)
	}
	// Pickups: a phone vouched for (ready), one not (pending), and chaff.
	ready := newPhone(t)
	bundle, _ := w.bundle(ready, bundleOpts{})
	if err := w.auths.PutAll(t.Context(), []bus.KeyValue{{Key: backoffice.BucketKey(ready.code()), Value: bundle}}); err != nil {
		t.Fatal(err)
	}
	pickups := func() (string, string, bool) {
		var all [][]time.Duration
		var groups [][]exchange
		for i := range timingSamples {
			r, p, c := ready.pickupReq(time.Now()), newPhone(t).pickupReq(time.Now()), newPhone(t).pickupReq(time.Now())
			groups = append(groups, []exchange{
				{phoneapi.PathPickup, padRequest(&r, phoneapi.PickupRequestBlock), false, 0},
				{phoneapi.PathPickup, padRequest(&p, phoneapi.PickupRequestBlock), false, 1},
				{phoneapi.PathPickup, padRequest(&c, phoneapi.PickupRequestBlock), true, 2},
			})
			if len(groups) == 100 || i == timingSamples-1 {
				got := w.timeExchanges(interleave(groups), 3)
				if all == nil {
					all = got
				} else {
					for k := range all {
						all[k] = append(all[k], got[k]...)
					}
				}
				groups = nil
			}
		}
		sr, okr := compareTimes(all[0], all[2])
		sp, okp := compareTimes(all[1], all[2])
		return sr, sp, okr && okp
	}
	// Warm up: the verifier caches the card's chain, connections open.
	for range 20 {
		p := newPhone(t)
		b, _ := w.bundle(p, bundleOpts{})
		w.upload(p.uploadReq(b, keys(t, 14), time.Now()), false)
		w.upload(newPhone(t).uploadReq(make([]byte, len(b)), keys(t, 14), time.Now()), true)
		uploaded++
	}
	okUploads, okPickups := false, false
	for run := 1; run <= timingRuns && !(okUploads && okPickups); run++ {
		if !okUploads {
			var s string
			s, okUploads = uploads()
			t.Logf("run %d: uploads real/chaff:%s", run, s)
		}
		if !okPickups {
			var sr, sp string
			sr, sp, okPickups = pickups()
			t.Logf("run %d: pickups ready/chaff:%s; pending/chaff:%s", run, sr, sp)
		}
	}
	if !okUploads {
		t.Errorf("uploads: real and chaff told apart by time in %d runs of %d each", timingRuns, timingSamples)
	}
	if !okPickups {
		t.Errorf("pickups: real and chaff told apart by time in %d runs of %d each", timingRuns, timingSamples)
	}

	// Chaff changed nothing: the stream and the used marks hold the real
	// uploads only.
	if recs, _ := w.messages(); len(recs) != uploaded {
		t.Errorf("%d messages on the stream, want the %d real uploads", len(recs), uploaded)
	}
	kv, err := w.bus.JetStream().KeyValue(t.Context(), exposure.UsedBucket)
	if err != nil {
		t.Fatal(err)
	}
	used, err := kv.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for range used.Keys() {
		count++
	}
	if count != uploaded {
		t.Errorf("%d authorizations marked used, want %d", count, uploaded)
	}
}
