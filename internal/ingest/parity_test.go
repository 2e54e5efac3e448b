//go:build !mutation

package ingest_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/phoneclient"
)

// answer is what an observer of a response could compare: its status, its
// size, and its headers (names, and values but the date and request id).
type answer struct {
	status  int
	size    int
	headers string
}

// recorder keeps the answer of the last request a phoneclient made.
type recorder struct {
	mu   sync.Mutex
	last answer
	rt   http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := r.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(b))
	var h []string
	for name, vs := range res.Header {
		switch name {
		case "Date", "X-Request-Id":
			h = append(h, name)
		default:
			h = append(h, name+": "+strings.Join(vs, ","))
		}
	}
	slices.Sort(h)
	r.mu.Lock()
	r.last = answer{res.StatusCode, len(b), strings.Join(h, "\n")}
	r.mu.Unlock()
	return res, nil
}

func (r *recorder) answer() answer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// TestChaffAnsweredLikeReal: the reference phone's chaff gets the status,
// size and headers a real upload of as many keys gets, for every count of
// keys a phone uploads — the phone's own keys (one a day before today, more
// on some days past 14) and keys as GAEN hands them over (today's first) —
// and chaff pickups those of pending and ready ones.
func TestChaffAnsweredLikeReal(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	rec := &recorder{rt: w.srv.Client().Transport}
	client := phoneclient.New(w.srv.URL, phoneclient.WithHTTPClient(&http.Client{Transport: rec}),
		phoneclient.WithBackoff(phoneclient.Backoff{Attempts: 1}))
	ctx := context.Background()
	real := func(ks []phoneapi.Key) answer {
		p := newPhone(t)
		bundle, _ := w.bundle(p, bundleOpts{})
		_, _ = client.Upload(ctx, p.priv, bundle, toKeys(ks))
		return rec.answer()
	}
	chaff := func(n int) answer {
		_ = client.ChaffUpload(ctx, 2900, n)
		return rec.answer()
	}
	for n := 1; n <= 30; n++ {
		ks, err := phoneclient.RandomKeys(n, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		r, c := real(phoneclient.WireKeys(ks)), chaff(n)
		if r.status != http.StatusOK {
			t.Errorf("%d keys of the phone's: real upload answered %d", n, r.status)
		}
		if r != c {
			t.Errorf("%d keys of the phone's: real %+v, chaff %+v", n, r, c)
		}
		if n <= 15 { // today's key and the 14 days before it
			r := real(keys(t, n))
			if r != c {
				t.Errorf("%d keys from today back: real %+v, chaff %+v", n, r, c)
			}
		}
	}

	// Pickups: pending, ready and chaff alike.
	p := newPhone(t)
	_, _ = client.Pickup(ctx, p.priv)
	pending := rec.answer()
	bundle, _ := w.bundle(p, bundleOpts{})
	if err := w.auths.PutAll(t.Context(), []bus.KeyValue{{Key: backoffice.BucketKey(p.code()), Value: bundle}}); err != nil {
		t.Fatal(err)
	}
	if b, err := client.Pickup(ctx, p.priv); err != nil || b == nil {
		t.Fatalf("pickup after vouching: %v", err)
	}
	ready := rec.answer()
	_ = client.ChaffPickup(ctx)
	ch := rec.answer()
	if pending.status != http.StatusOK || pending != ready || ch != pending {
		t.Errorf("pickups: pending %+v, ready %+v, chaff %+v", pending, ready, ch)
	}
}

// counts are the counters of reg (and the sample counts of its histograms
// and summaries), by metric name and labels.
func counts(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			case dto.MetricType_SUMMARY:
				out[key] = float64(m.GetSummary().GetSampleCount())
			}
		}
	}
	return out
}

// moved is what changed between two counts.
func moved(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

// TestMetricsCountChaffAsReal: whatever a metric counts, a chaff request
// moves it as a real one does — a published upload, a ready or a pending
// pickup — so that counts read beside the traffic tell nothing.
func TestMetricsCountChaffAsReal(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	step := func(f func()) map[string]float64 {
		before := counts(t, w.metrics)
		f()
		return moved(before, counts(t, w.metrics))
	}
	p := newPhone(t)
	bundle, _ := w.bundle(p, bundleOpts{})
	ks := keys(t, 14)
	real := step(func() {
		if status, body := w.upload(p.uploadReq(bundle, ks, time.Now()), false); status != http.StatusOK {
			t.Fatalf("real upload: %d %s", status, body)
		}
	})
	c := newPhone(t)
	chaff := step(func() {
		if status, body := w.upload(c.uploadReq(make([]byte, len(bundle)), keys(t, 14), time.Now()), true); status != http.StatusOK {
			t.Fatalf("chaff upload: %d %s", status, body)
		}
	})
	if diff := cmp.Diff(real, chaff); diff != "" || len(real) == 0 {
		t.Errorf("metrics moved by an upload (-real +chaff):\n%s", diff)
	}
	pending := step(func() { w.pickup(newPhone(t).pickupReq(time.Now()), false) })
	if err := w.auths.PutAll(t.Context(), []bus.KeyValue{{Key: backoffice.BucketKey(p.code()), Value: bundle}}); err != nil {
		t.Fatal(err)
	}
	ready := step(func() { w.pickup(p.pickupReq(time.Now()), false) })
	chaffPickup := step(func() { w.pickup(c.pickupReq(time.Now()), true) })
	if diff := cmp.Diff(ready, chaffPickup); diff != "" || len(ready) == 0 {
		t.Errorf("metrics moved by a pickup (-ready +chaff):\n%s", diff)
	}
	if diff := cmp.Diff(pending, chaffPickup); diff != "" {
		t.Errorf("metrics moved by a pickup (-pending +chaff):\n%s", diff)
	}
}
