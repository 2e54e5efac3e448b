package federate_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/federate"
)

// TestParseSites: VOUCH_FEDERATE_SITES is "NAME URL KEYFILE[,KEYFILE]"
// entries separated by ';' or newlines; anything else is refused whole.
func TestParseSites(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []federate.SiteConfig
		err  string
	}{
		{"", nil, ""},
		{" ; \n", nil, ""},
		{"be https://be.example/v1 /k/be.pem", []federate.SiteConfig{{Name: "be", URL: "https://be.example/v1", KeyFiles: []string{"/k/be.pem"}}}, ""},
		{"be https://be.example /a.pem,/b.pem;\n de  http://127.0.0.1:8080  /d.pem \n", []federate.SiteConfig{
			{Name: "be", URL: "https://be.example", KeyFiles: []string{"/a.pem", "/b.pem"}},
			{Name: "de", URL: "http://127.0.0.1:8080", KeyFiles: []string{"/d.pem"}}}, ""},
		{"be https://be.example", nil, "is not"},
		{"be https://be.example /a.pem extra", nil, "is not"},
		{"padding https://be.example /a.pem", nil, "padding"},
		{"be https://be.example /a.pem; be https://other.example /b.pem", nil, "twice"},
		{"be ftp://be.example /a.pem", nil, "http(s)"},
		{"be https:///nohost /a.pem", nil, "http(s)"},
		{"be https://u:p@be.example /a.pem", nil, "http(s)"},
		{"be https://be.example/?x=1 /a.pem", nil, "http(s)"},
		{"be https://be.example ,", nil, "no key file"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := federate.ParseSites(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "VOUCH_FEDERATE_SITES") {
					t.Fatalf("%q: %v, %v; want an error naming VOUCH_FEDERATE_SITES and %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("%q: %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
	var s federate.Sites
	if err := s.EnvDecode("be https://be.example /a.pem"); err != nil || len(s) != 1 || s[0].Name != "be" {
		t.Errorf("EnvDecode: %v, %v", s, err)
	}
	if err := s.EnvDecode("be"); err == nil {
		t.Error("EnvDecode took a bad value")
	}
}

// TestIntervalBounds: VOUCH_FEDERATE_INTERVAL is 1s..24h, 5m unset.
func TestIntervalBounds(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in time.Duration
		ok bool
	}{{time.Second, true}, {24 * time.Hour, true}, {time.Second - 1, false}, {24*time.Hour + 1, false}, {-time.Minute, false}} {
		cfg := federate.Config{Interval: tt.in}
		if err := cfg.Validate(); (err == nil) != tt.ok || (err != nil && !strings.Contains(err.Error(), "VOUCH_FEDERATE_INTERVAL")) {
			t.Errorf("%v: %v, want ok %v", tt.in, err, tt.ok)
		}
	}
	var cfg federate.Config
	if err := cfg.Validate(); err != nil || cfg.Interval != 5*time.Minute {
		t.Errorf("default: %v, %v", cfg.Interval, err)
	}
}

// link is the way to a site's origin, which the test cuts and mends.
type link struct {
	down atomic.Bool
	to   http.Handler
}

func (l *link) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if l.down.Load() {
		// As a lost route looks to the puller: no answer.
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
		return
	}
	l.to.ServeHTTP(w, r)
}

// TestRunConvergesAfterLinkLoss: each site pulls the other on a schedule;
// while the link is cut the pulls fail (counted), nothing stops, and once
// it is back both sites hold the union of their keys.
func TestRunConvergesAfterLinkLoss(t *testing.T) {
	t.Parallel()
	a, b := newSite(t, "site-a"), newSite(t, "site-b")
	links := map[*site]*link{}
	for _, s := range []*site{a, b} {
		l := &link{to: http.FileServer(http.Dir(s.dir))}
		srv := httptest.NewServer(l)
		t.Cleanup(srv.Close)
		s.url = srv.URL
		links[s] = l
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	metrics := map[*site]*prometheus.Registry{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, pair := range [][2]*site{{a, b}, {b, a}} {
		me, other := pair[0], pair[1]
		reg := prometheus.NewRegistry()
		metrics[me] = reg
		m := federate.NewMetrics(reg)
		p := newPuller(t, me, federate.Config{})
		wg.Add(1)
		go func() { defer wg.Done(); p.Run(ctx, []federate.Site{me.as(other)}, 50*time.Millisecond, m, log) }()
	}
	// converged waits until both sites hold want keys, the same ones,
	// publishing as an aggregator would meanwhile.
	converged := func(want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			a.publish(t)
			b.publish(t)
			ka, kb := a.keys(t), b.keys(t)
			if len(ka) == want && cmp.Equal(ka, kb) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not converged: a %d keys, b %d, want %d each", len(ka), len(kb), want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	a.upload(t, 6)
	b.upload(t, 4)
	converged(10)

	for _, l := range links {
		l.down.Store(true)
	}
	failedBefore := map[*site]float64{}
	for s, m := range metrics {
		failedBefore[s] = pulls(t, m, s.nameOfOther(a, b), "failed")
	}
	a.upload(t, 3)
	b.upload(t, 5)
	// The export windows end on whole seconds: what was uploaded now is
	// published by a run in a later second.
	time.Sleep(1100 * time.Millisecond)
	a.publish(t)
	b.publish(t)
	deadline := time.Now().Add(20 * time.Second)
	for s, m := range metrics {
		for pulls(t, m, s.nameOfOther(a, b), "failed") < failedBefore[s]+2 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no failed pull counted while the link is down", s.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if na, nb := len(a.keys(t)), len(b.keys(t)); na != 13 || nb != 15 {
		t.Fatalf("while cut: a %d keys, b %d; want 13 and 15 (each its own only)", na, nb)
	}
	for _, l := range links {
		l.down.Store(false)
	}
	converged(18)
	for s, m := range metrics {
		if ok := pulls(t, m, s.nameOfOther(a, b), "ok"); ok < 2 {
			t.Errorf("%s: %v good pulls counted", s.name, ok)
		}
	}
}

func (s *site) nameOfOther(a, b *site) string {
	if s == a {
		return b.name
	}
	return a.name
}

// TestRunGoesOnPastLimit: a pull stopped by VOUCH_FEDERATE_MAX_FILES goes
// on at once, not an interval later.
func TestRunGoesOnPastLimit(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	files := map[string][]byte{}
	var paths []string
	for i := range 5 {
		name := fmt.Sprintf("%d.zip", i)
		files[name] = signed(t, partner, []export.Key{dayKey(2, 1), dayKey(3, 1)}, nil)
		paths = append(paths, name)
	}
	site := federate.Site{Name: "be", BaseURL: serve(t, paths, files), Keys: []*ecdsa.PublicKey{&partner.PublicKey}}
	p := newPuller(t, a, federate.Config{MaxFiles: 2})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	reg := prometheus.NewRegistry()
	m := federate.NewMetrics(reg)
	go func() { done <- p.Run(ctx, []federate.Site{site}, time.Hour, m, slog.New(slog.DiscardHandler)) }()
	deadline := time.Now().Add(20 * time.Second)
	for a.count(t, "origin = 'be'") < 10 {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("%d of 10 keys within an hour's interval: the pull waited after its limit", a.count(t, "origin = 'be'"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run: %v, want context.Canceled", err)
	}
	if n := pulls(t, reg, "be", "limit"); n != 2 {
		t.Errorf("%v pulls stopped at the limit, want 2", n)
	}
	if n := metric(t, reg, "vouch_federate_keys_imported_total", map[string]string{"site": "be"}); n != 10 {
		t.Errorf("%v keys counted, want 10", n)
	}
	if err := p.Run(context.Background(), nil, time.Second, m, nil); err == nil {
		t.Error("Run without a site: no error")
	}
}

// TestCopiesImportOnce: two pullers on one store (two copies of the role)
// pulling the same site at the same time import each file once, and
// neither counts a refusal.
func TestCopiesImportOnce(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	files := map[string][]byte{}
	var paths []string
	for i := range 8 {
		name := fmt.Sprintf("%d.zip", i)
		var keys []export.Key
		for d := range 50 {
			keys = append(keys, dayKey(2+d%10, 1))
		}
		files[name] = signed(t, partner, keys, nil)
		paths = append(paths, name)
	}
	site := federate.Site{Name: "be", BaseURL: serve(t, paths, files), Keys: []*ecdsa.PublicKey{&partner.PublicKey}}
	for round := range 5 {
		if round > 0 {
			if _, err := a.db.Pool().Exec(t.Context(), `delete from exposure_keys; delete from federate_imports`); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		results := make([]federate.Result, 2)
		errs := make([]error, 2)
		for i := range 2 {
			p := newPuller(t, a, federate.Config{})
			wg.Add(1)
			go func() { defer wg.Done(); results[i], errs[i] = p.Pull(context.Background(), site) }()
		}
		wg.Wait()
		for i := range 2 {
			if errs[i] != nil || results[i].Refused != 0 {
				t.Fatalf("round %d, copy %d: %+v, %v", round, i, results[i], errs[i])
			}
		}
		if got := results[0].Imported + results[1].Imported; got != 8 {
			t.Errorf("round %d: %d imports of 8 files", round, got)
		}
		if got := results[0].Keys + results[1].Keys; got != 400 {
			t.Errorf("round %d: %d keys counted new, want 400", round, got)
		}
		if n := a.count(t, "origin = 'be'"); n != 400 {
			t.Errorf("round %d: %d keys stored, want 400", round, n)
		}
	}
}

// metric is the value of the series of name with labels in reg (0 when
// there is none).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func pulls(t *testing.T, reg *prometheus.Registry, site, result string) float64 {
	return metric(t, reg, "vouch_federate_pulls_total", map[string]string{"site": site, "result": result})
}
