package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// A public listener answers 404 for what only the operator may read; the
// operations listener answers it.
func TestOpsPathsOnlyOnOps(t *testing.T) {
	t.Parallel()
	s, _ := newTest(t, map[string]Checker{"x": CheckFunc(func(context.Context) error { return nil })})
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "vouch_test_total", Help: "t"}))
	o := NewOps(OpsConfig{}, slog.New(slog.DiscardHandler))
	o.Gather(reg)
	o.Check("", s.Checks())
	for _, p := range []string{"/metrics", "/readyz", "/healthz", "/debug/pprof/", "/debug/pprof/heap"} {
		if code, _ := do(t, s, "GET", p, nil); code != http.StatusNotFound {
			t.Errorf("public %s = %d, want 404", p, code)
		}
		if code, body := opsDo(t, o, p); code != http.StatusOK || len(body) == 0 {
			t.Errorf("operations %s = %d", p, code)
		}
	}
	if _, b := opsDo(t, o, "/metrics"); !strings.Contains(string(b), "vouch_test_total 0") {
		t.Errorf("metrics:\n%s", b)
	}
}

// Every response carries the isolation headers: pages, files, 404s,
// refusals, panics and bodies too large.
func TestIsolationHeaders(t *testing.T) {
	t.Parallel()
	s, _ := newTest(t, nil)
	s.Echo().GET("/panic", func(echo.Context) error { panic("boom") })
	s.Echo().GET("/refuse", func(echo.Context) error { return &Error{Status: 409, Code: "conflict"} })
	s.Echo().POST("/post", func(c echo.Context) error { _, err := io.ReadAll(c.Request().Body); return err })
	for _, tt := range []struct {
		method, path string
		body         string
		status       int
	}{
		{"GET", "/", "", 200},
		{"GET", "/static/vouch.css", "", 200},
		{"GET", "/static/", "", 404},
		{"GET", "/nope", "", 404},
		{"GET", "/refuse", "", 409},
		{"GET", "/panic", "", 500},
		{"POST", "/post", strings.Repeat("x", 65<<10), 413},
		{"DELETE", "/", "", 405},
	} {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			s.Echo().ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d", rec.Code, tt.status)
			}
			h := rec.Header()
			if h.Get("Cross-Origin-Opener-Policy") != "same-origin" || h.Get("Cross-Origin-Resource-Policy") != "same-origin" {
				t.Errorf("COOP %q CORP %q", h.Get("Cross-Origin-Opener-Policy"), h.Get("Cross-Origin-Resource-Policy"))
			}
			pp := h.Get("Permissions-Policy")
			for _, want := range []string{"camera=(self)", "microphone=()", "geolocation=()", "usb=()", "payment=()"} {
				if !strings.Contains(pp, want) {
					t.Errorf("Permissions-Policy %q lacks %s", pp, want)
				}
			}
			if h.Get("Content-Security-Policy") == "" || h.Get("X-Frame-Options") != "DENY" {
				t.Errorf("headers %v", h)
			}
		})
	}
}

// The embedded files are served; no directory is listed.
func TestStaticNoListing(t *testing.T) {
	t.Parallel()
	s, _ := newTest(t, nil)
	for path, want := range map[string]int{
		"/static/":                   404,
		"/static":                    404,
		"/static//":                  404,
		"/static/./":                 404,
		"/static/../static/":         404,
		"/static/%2e%2e/":            404,
		"/static/vouch.css":          200,
		"/static/backoffice.js":      200,
		"/static/nope.js":            404,
		"/static/vouch.css/":         404,
		"/static/../web.go":          404,
		"/static/..%2fweb.go":        404,
		"/static/%2e%2e%2ftemplates": 404,
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.URL.Path, req.URL.RawPath = "", ""
		req.RequestURI = path
		u, _ := req.URL.Parse(path)
		req.URL = u
		rec := httptest.NewRecorder()
		s.Echo().ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
		if want == 404 && (strings.Contains(rec.Body.String(), "vouch.css") || strings.Contains(rec.Body.String(), "<a href")) {
			t.Errorf("%s lists files: %s", path, rec.Body.String())
		}
	}
}

func TestIPExtractor(t *testing.T) {
	t.Parallel()
	trusted, err := ParseProxies("X", []string{"10.0.0.0/8", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, peer string
		xff        []string
		xri        string
		want       string
	}{
		{"untrusted peer, no header", "203.0.113.7:5000", nil, "", "203.0.113.7"},
		{"untrusted peer with XFF", "203.0.113.7:5000", []string{"198.51.100.1"}, "", "203.0.113.7"},
		{"untrusted peer with X-Real-IP", "203.0.113.7:5000", nil, "198.51.100.1", "203.0.113.7"},
		{"trusted peer, no header", "10.1.1.1:5000", nil, "", "10.1.1.1"},
		{"trusted peer, one hop", "10.1.1.1:5000", []string{"198.51.100.1"}, "", "198.51.100.1"},
		{"trusted peer, forged left of the real client", "10.1.1.1:5000", []string{"1.2.3.4, 198.51.100.1"}, "", "198.51.100.1"},
		{"rightmost untrusted past trusted hops", "10.1.1.1:5000", []string{"1.2.3.4, 198.51.100.1, 10.2.2.2"}, "", "198.51.100.1"},
		{"several header lines", "10.1.1.1:5000", []string{"1.2.3.4", "198.51.100.1, 10.2.2.2"}, "", "198.51.100.1"},
		{"every hop trusted", "10.1.1.1:5000", []string{"10.3.3.3, 10.2.2.2"}, "", "10.3.3.3"},
		{"ports and brackets", "[2001:db8::1]:443", []string{"[2001:db8::5]:80, 198.51.100.1:1234"}, "", "198.51.100.1"},
		{"bracketed v6 without port", "10.1.1.1:5000", []string{"[2001:db9::7]"}, "", "2001:db9::7"},
		{"v4-mapped peer", "[::ffff:10.1.1.1]:5000", []string{"198.51.100.1"}, "", "198.51.100.1"},
		{"v4-mapped client", "10.1.1.1:5000", []string{"::ffff:198.51.100.1"}, "", "198.51.100.1"},
		{"malformed hop", "10.1.1.1:5000", []string{"198.51.100.1, bogus"}, "", "10.1.1.1"},
		{"empty hop", "10.1.1.1:5000", []string{"198.51.100.1,,10.2.2.2"}, "", "10.1.1.1"},
		{"unknown", "10.1.1.1:5000", []string{"unknown"}, "", "10.1.1.1"},
		{"empty header", "10.1.1.1:5000", []string{""}, "", "10.1.1.1"},
		{"malformed left of the client is not read", "10.1.1.1:5000", []string{"<script>, 198.51.100.1"}, "", "198.51.100.1"},
		{"X-Real-IP from a trusted peer", "10.1.1.1:5000", nil, "198.51.100.1", "198.51.100.1"},
		{"malformed X-Real-IP", "10.1.1.1:5000", nil, "198.51.100.1, 1.2.3.4", "10.1.1.1"},
		{"XFF wins over X-Real-IP", "10.1.1.1:5000", []string{"198.51.100.2"}, "198.51.100.1", "198.51.100.2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if tt.xri != "" {
				r.Header.Set("X-Real-IP", tt.xri)
			}
			if got := IPExtractor(trusted)(r); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			// Without trusted proxies, never a header.
			if got, want := IPExtractor(nil)(r), netip.MustParseAddrPort(tt.peer).Addr().Unmap().String(); got != want {
				t.Errorf("with no proxies: got %s, want the peer %s", got, want)
			}
		})
	}
	if _, err := ParseProxies("VOUCH_TRUSTED_PROXIES", []string{"10.0.0.0/8", "nope"}); err == nil || !strings.Contains(err.Error(), "VOUCH_TRUSTED_PROXIES") {
		t.Errorf("bad CIDR: %v", err)
	}
}

// server.New installs the extractor: c.RealIP() believes no header from
// an untrusted peer, and one from a configured proxy.
func TestRealIPInstalled(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		proxies []string
		want    string
	}{{nil, "203.0.113.7"}, {[]string{"203.0.113.0/24"}, "198.51.100.1"}} {
		s := New(Config{TrustedProxies: tt.proxies}, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
		s.Echo().GET("/ip", func(c echo.Context) error { return c.String(200, c.RealIP()) })
		req := httptest.NewRequest("GET", "/ip", nil)
		req.RemoteAddr = "203.0.113.7:4444"
		req.Header.Set("X-Forwarded-For", "198.51.100.1")
		req.Header.Set("X-Real-IP", "198.51.100.9")
		rec := httptest.NewRecorder()
		s.Echo().ServeHTTP(rec, req)
		if rec.Body.String() != tt.want {
			t.Errorf("proxies %v: RealIP %q, want %s", tt.proxies, rec.Body.String(), tt.want)
		}
	}
}

// run starts s on a loopback port and returns its address.
func run(t *testing.T, s *Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return <-s.Addr()
}

// rawGet sends a GET with one header of n bytes and returns the status.
func rawGet(t *testing.T, addr string, n int) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /static/vouch.css HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", n))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%d-byte header: %v", n, err)
	}
	res.Body.Close()
	return res.StatusCode
}

func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		limits Limits
		ok     int // a header this large is answered
		tooBig int // and this one is 431
	}{
		{"default (back office)", Limits{}, 15 << 10, 16 << 10},
		{"phone API", PhoneAPILimits, 7 << 10, 8 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := New(Config{Addr: "127.0.0.1:0", Limits: tt.limits}, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
			addr := run(t, s)
			if got := rawGet(t, addr, tt.ok); got != 200 {
				t.Errorf("%d bytes: %d, want 200", tt.ok, got)
			}
			if got := rawGet(t, addr, tt.tooBig); got != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("%d bytes: %d, want 431", tt.tooBig, got)
			}
			if got := rawGet(t, addr, 1<<20); got != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("1 MiB: %d, want 431", got)
			}
		})
	}
}

// At most MaxConns connections are served at once; the next is answered
// once one of them closes.
func TestConnLimit(t *testing.T) {
	t.Parallel()
	s := New(Config{Addr: "127.0.0.1:0", Limits: Limits{MaxConns: 2}}, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	addr := run(t, s)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Half a request: the connection stays open, waiting for its head.
		fmt.Fprintf(c, "GET / HTTP/1.1\r\n")
		held = append(held, c)
	}
	got := make(chan error, 1)
	go func() {
		cl := &http.Client{Timeout: 20 * time.Second}
		res, err := cl.Get("http://" + addr + "/static/vouch.css")
		if err == nil {
			res.Body.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a third connection was served while two were open (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	held[0].Close()
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("after one closed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the waiting connection was not served after one closed")
	}
}

// At most MaxBodies requests with a body are handled at once; the next
// waits, then gets 503 with Retry-After. Requests without a body pass.
func TestBodyLimit(t *testing.T) {
	t.Parallel()
	s := New(Config{Limits: Limits{MaxBodies: 1}}, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	s.bodyWait = 200 * time.Millisecond
	entered, release := make(chan struct{}), make(chan struct{})
	s.Echo().POST("/slow", func(c echo.Context) error {
		io.ReadAll(c.Request().Body)
		entered <- struct{}{}
		<-release
		return c.NoContent(204)
	})
	post := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		s.Echo().ServeHTTP(rec, httptest.NewRequest("POST", "/slow", strings.NewReader("body")))
		return rec
	}
	first := make(chan int, 1)
	go func() { first <- post().Code }()
	<-entered
	if rec := post(); rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("second body while the first is held: %d %v, want 503 with Retry-After", rec.Code, rec.Header())
	}
	if code, _ := do(t, s, "GET", "/static/vouch.css", nil); code != 200 {
		t.Errorf("a GET while the body slot is held: %d", code)
	}
	close(release)
	if c := <-first; c != 204 {
		t.Errorf("first: %d", c)
	}
	go func() { <-entered }()
	if rec := post(); rec.Code != 204 {
		t.Errorf("after the slot was freed: %d", rec.Code)
	}
}

func TestLimitsValidate(t *testing.T) {
	t.Parallel()
	if err := (Limits{}).Or(PhoneAPILimits).Validate("VOUCH_INGEST_"); err != nil {
		t.Errorf("defaults: %v", err)
	}
	err := Limits{MaxHeaderBytes: 2 << 20, MaxConns: -1, MaxBodies: -1}.Or(BackofficeLimits).Validate("VOUCH_HTTP_")
	for _, want := range []string{"VOUCH_HTTP_MAX_HEADER_BYTES", "VOUCH_HTTP_MAX_CONNS", "VOUCH_HTTP_MAX_BODIES"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v lacks %s", err, want)
		}
	}
	if err := (Config{TrustedProxies: []string{"10.0.0.0/33"}}).Validate(BackofficeLimits, "VOUCH_HTTP_"); err == nil {
		t.Error("a bad proxy CIDR passed")
	}
}

// The operations listener runs on its own address.
func TestOpsRun(t *testing.T) {
	t.Parallel()
	o := NewOps(OpsConfig{Addr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	addr := <-o.Addr()
	res, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("status %d", res.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
