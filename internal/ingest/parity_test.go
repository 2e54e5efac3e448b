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
