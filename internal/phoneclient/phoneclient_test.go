package phoneclient_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/phoneclient"
)

var fast = phoneclient.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Attempts: 4}

type request struct {
	path, chaff string
	body        []byte
}

// server answers with the statuses in script, then 200 {"status":"published"}.
type server struct {
	mu     sync.Mutex
	script []int
	reqs   []request
	hijack int // close the connection of the first hijack requests
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, request{r.URL.Path, r.Header.Get(phoneapi.HeaderChaff), b})
	n := len(s.reqs)
	hijack := n <= s.hijack
	status := http.StatusOK
	if i := n - 1 - s.hijack; i >= 0 && i < len(s.script) {
		status = s.script[i]
	}
	s.mu.Unlock()
	if hijack {
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
		return
	}
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "0")
	}
	w.WriteHeader(status)
	if status == http.StatusOK {
		json.NewEncoder(w).Encode(phoneapi.UploadResponse{Status: phoneapi.StatusPublished})
	} else {
		json.NewEncoder(w).Encode(phoneapi.ErrorResponse{Error: "e" + http.StatusText(status)[:3], Message: "m"})
	}
}

func keys(t *testing.T, n int) []exposure.Key {
	ks := make([]exposure.Key, n)
	day := exposure.IntervalNumber(time.Now().UTC().Truncate(24*time.Hour)) - 144
	for i := range ks {
		rand.Read(ks[i].Data[:])
		ks[i].RollingStart, ks[i].RollingPeriod = day-int32(i)*144, 144
	}
	return ks
}

func TestRetry(t *testing.T) {
	t.Parallel()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name     string
		script   []int
		hijack   int
		requests int
		status   int // of the *Error, 0: success
	}{
		{"ok", nil, 0, 1, 0},
		{"503 then ok", []int{503, 503}, 0, 3, 0},
		{"429 then ok", []int{429}, 0, 2, 0},
		{"network error then ok", nil, 2, 3, 0},
		{"503 until given up", []int{503, 503, 503, 503, 503}, 0, 4, 503},
		{"409 not retried", []int{409}, 0, 1, 409},
		{"400 not retried", []int{400}, 0, 1, 400},
		{"500 not retried", []int{500}, 0, 1, 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &server{script: tt.script, hijack: tt.hijack}
			srv := httptest.NewServer(s)
			defer srv.Close()
			c := phoneclient.New(srv.URL, phoneclient.WithBackoff(fast))
			_, err := c.Upload(context.Background(), priv, []byte("bundle"), keys(t, 14))
			var e *phoneclient.Error
			switch {
			case tt.status == 0 && err != nil:
				t.Errorf("upload: %v", err)
			case tt.status != 0 && (!errors.As(err, &e) || e.Status != tt.status):
				t.Errorf("upload: %v, want HTTP %d", err, tt.status)
			}
			if len(s.reqs) != tt.requests {
				t.Errorf("%d requests, want %d", len(s.reqs), tt.requests)
			}
			for i, r := range s.reqs {
				if !bytes.Equal(r.body, s.reqs[0].body) {
					t.Errorf("request %d sent other bytes than the first", i)
				}
				if r.chaff != phoneapi.ChaffReal || r.path != phoneapi.PathUploads {
					t.Errorf("request %d: %s with chaff %q", i, r.path, r.chaff)
				}
			}
		})
	}
}

// TestChaffLooksReal: chaff goes to the same paths, with a header of the
// same length, in bodies of the same padded size as real requests.
func TestChaffLooksReal(t *testing.T) {
	t.Parallel()
	s := &server{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := phoneclient.New(srv.URL, phoneclient.WithBackoff(fast))
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	bundle := make([]byte, 1800)
	rand.Read(bundle)
	ctx := context.Background()
	if _, err := c.Upload(ctx, priv, bundle, keys(t, 14)); err != nil {
		t.Fatal(err)
	}
	if err := c.ChaffUpload(ctx, len(bundle), 14); err != nil {
		t.Fatal(err)
	}
	// The pickup's answer is not an UploadResponse; its status is what counts.
	c.Pickup(ctx, priv)
	c.ChaffPickup(ctx)
	if len(s.reqs) != 4 {
		t.Fatalf("%d requests", len(s.reqs))
	}
	real, chaff := s.reqs[0], s.reqs[1]
	if real.chaff != "0" || chaff.chaff != "1" || len(real.chaff) != len(chaff.chaff) {
		t.Errorf("chaff headers %q %q", real.chaff, chaff.chaff)
	}
	if len(real.body) != len(chaff.body) || len(real.body)%phoneapi.UploadRequestBlock != 0 || chaff.path != real.path {
		t.Errorf("upload %d bytes, chaff %d bytes to %s", len(real.body), len(chaff.body), chaff.path)
	}
	rp, cp := s.reqs[2], s.reqs[3]
	if len(rp.body) != len(cp.body) || len(rp.body)%phoneapi.PickupRequestBlock != 0 || rp.chaff != "0" || cp.chaff != "1" {
		t.Errorf("pickup %d bytes (%q), chaff %d bytes (%q)", len(rp.body), rp.chaff, len(cp.body), cp.chaff)
	}
	var req phoneapi.UploadRequest
	dec := json.NewDecoder(bytes.NewReader(real.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || len(req.Keys) != 14 {
		t.Errorf("upload body: %v, %d keys", err, len(req.Keys))
	}
}

func TestPickupWait(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		ready := n > 3
		mu.Unlock()
		resp := phoneapi.PickupResponse{Status: phoneapi.StatusPending}
		if ready {
			resp = phoneapi.PickupResponse{Status: phoneapi.StatusReady, Bundle: []byte("the bundle")}
		}
		json.NewEncoder(w).Encode(resp)
	}))
	defer srv.Close()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	c := phoneclient.New(srv.URL)
	if _, err := c.PickupWait(context.Background(), priv, phoneclient.Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond, Attempts: 2}); !errors.Is(err, phoneclient.ErrPending) {
		t.Errorf("2 polls: %v, want ErrPending", err)
	}
	b, err := c.PickupWait(context.Background(), priv, phoneclient.Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond})
	if err != nil || string(b) != "the bundle" {
		t.Errorf("PickupWait: %q %v", b, err)
	}
}

func TestBackoffWait(t *testing.T) {
	t.Parallel()
	b := phoneclient.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	for n := range 20 {
		bound := min(b.Initial<<min(n, 10), b.Max)
		for range 50 {
			if w := b.Wait(n); w <= 0 || w > bound {
				t.Fatalf("Wait(%d) = %s, want in (0, %s]", n, w, bound)
			}
		}
	}
}

// TestRandomKeysValid: the phone's keys of every count it may upload pass
// the server's rules at any time of the day, and an aggregator may publish
// all of them at once (each has ended).
func TestRandomKeysValid(t *testing.T) {
	t.Parallel()
	day := time.Now().UTC().Truncate(24 * time.Hour)
	for _, now := range []time.Time{day.Add(time.Second), day.Add(12 * time.Hour), day.Add(24*time.Hour - time.Second)} {
		for n := 1; n <= exposure.MaxKeysPerUpload; n++ {
			ks, err := phoneclient.RandomKeys(n, now)
			if err != nil {
				t.Fatal(err)
			}
			if len(ks) != n {
				t.Fatalf("%d keys, want %d", len(ks), n)
			}
			if err := exposure.Validate(ks, now, exposure.DefaultMaxAgeDays); err != nil {
				t.Errorf("%d keys at %s: %v", n, now.Format(time.TimeOnly), err)
			}
			for i, k := range ks {
				if k.End().After(day) {
					t.Errorf("%d keys: key %d ends %s, after today began", n, i, k.End())
				}
				for _, o := range ks[:i] {
					if k.Start().Before(o.End()) && o.Start().Before(k.End()) {
						t.Errorf("%d keys: key %d overlaps an earlier one", n, i)
					}
				}
			}
		}
	}
	for _, n := range []int{0, exposure.MaxKeysPerUpload + 1} {
		if _, err := phoneclient.RandomKeys(n, time.Now()); err == nil {
			t.Errorf("%d keys made", n)
		}
	}
}

// TestRetryAfter: a rate-limited answer is waited for as long as it says,
// and retried past Attempts while Patience lasts; without patience it
// counts as an attempt.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	for _, tt := range []struct {
		name     string
		patience time.Duration
		ok       bool
	}{
		{"patient", time.Minute, true},
		{"impatient", 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var at []time.Time
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				at = append(at, time.Now())
				n := len(at)
				mu.Unlock()
				if n <= 3 {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(http.StatusTooManyRequests)
					json.NewEncoder(w).Encode(phoneapi.ErrorResponse{Error: "rate-limited"})
					return
				}
				json.NewEncoder(w).Encode(phoneapi.UploadResponse{Status: phoneapi.StatusPublished})
			}))
			defer srv.Close()
			c := phoneclient.New(srv.URL, phoneclient.WithBackoff(phoneclient.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Attempts: 2, Patience: tt.patience}))
			_, err := c.Upload(context.Background(), priv, []byte("b"), keys(t, 1))
			if tt.ok != (err == nil) {
				t.Fatalf("upload: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			for i := 1; i < len(at); i++ {
				if d := at[i].Sub(at[i-1]); d < time.Second {
					t.Errorf("request %d came %s after a Retry-After of 1s", i, d)
				}
			}
			var e *phoneclient.Error
			if !tt.ok && (!errors.As(err, &e) || e.Status != http.StatusTooManyRequests || len(at) != 2) {
				t.Errorf("without patience: %v after %d requests, want the 429 after 2", err, len(at))
			}
		})
	}
}
