package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

func newTest(t *testing.T, checks map[string]Checker) (*Server, *strings.Builder) {
	t.Helper()
	var logs strings.Builder
	s := New(Config{Addr: "127.0.0.1:0"}, slog.New(slog.NewJSONHandler(&logs, nil)), prometheus.NewRegistry(), checks)
	return s, &logs
}

func do(t *testing.T, s *Server, method, path string, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.Echo().ServeHTTP(rec, req)
	var body map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	return rec.Code, body
}

// opsDo asks the operations listener's handler.
func opsDo(t *testing.T, o *Ops, path string) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	o.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.Bytes()
}

func TestHealth(t *testing.T) {
	t.Parallel()
	failing := true
	var logs strings.Builder
	o := NewOps(OpsConfig{Addr: "127.0.0.1:0"}, slog.New(slog.NewJSONHandler(&logs, nil)))
	o.Check("", map[string]Checker{
		"database": CheckFunc(func(context.Context) error { return nil }),
		"bus": CheckFunc(func(context.Context) error {
			if failing {
				return errors.New("dial tcp 10.0.0.1:4222: secret internal detail")
			}
			return nil
		}),
	})
	o.Check("ingest.", map[string]Checker{"licenses": CheckFunc(func(context.Context) error { return nil })})
	if code, _ := opsDo(t, o, "/healthz"); code != 200 {
		t.Errorf("healthz = %d", code)
	}
	code, raw := opsDo(t, o, "/readyz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("readyz with failing bus = %d", code)
	}
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	want := map[string]any{"ready": false, "checks": map[string]any{"database": "ok", "bus": "fail", "ingest.licenses": "ok"}}
	if d := cmp.Diff(want, body); d != "" {
		t.Errorf("readyz body (-want +got):\n%s", d)
	}
	if !strings.Contains(logs.String(), "secret internal detail") {
		t.Error("the cause was not logged for the operator")
	}
	failing = false
	if code, _ := opsDo(t, o, "/readyz"); code != 200 {
		t.Errorf("readyz when healthy = %d", code)
	}
}

func TestErrorsAreSafe(t *testing.T) {
	t.Parallel()
	s, logs := newTest(t, nil)
	s.Echo().GET("/boom", func(echo.Context) error { return errors.New("pq: password=hunter2 leaked") })
	s.Echo().GET("/panic", func(echo.Context) error { panic("nil map") })
	s.Echo().GET("/refuse", func(echo.Context) error {
		return &Error{Status: 409, Code: "already-used", Message: "error.409", Cause: errors.New("row 7")}
	})
	for _, path := range []string{"/boom", "/panic"} {
		code, body := do(t, s, "GET", path, nil)
		if code != 500 || body["error"] != "internal" || strings.Contains(body["message"].(string), "hunter2") {
			t.Errorf("%s: %d %v", path, code, body)
		}
		if body["request_id"] == "" {
			t.Errorf("%s: no request id to quote to support", path)
		}
	}
	if !strings.Contains(logs.String(), "hunter2") {
		t.Error("internal cause not logged")
	}
	code, body := do(t, s, "GET", "/refuse", map[string]string{"Accept-Language": "nl-NL,nl;q=0.9,en;q=0.8"})
	if code != 409 || body["message"] != "Dit is al gedaan." {
		t.Errorf("refusal: %d %v", code, body)
	}
	if code, body := do(t, s, "GET", "/nope", nil); code != 404 || body["error"] != "not-found" {
		t.Errorf("404: %d %v", code, body)
	}
}

func TestMetricsAndHeaders(t *testing.T) {
	t.Parallel()
	// Two listeners' registries on one operations listener, as in `vouch
	// all`: both listeners' requests are counted, apart.
	bo, in := prometheus.NewRegistry(), prometheus.NewRegistry()
	s1 := New(Config{}, slog.New(slog.DiscardHandler), prometheus.WrapRegistererWith(prometheus.Labels{"listener": "backoffice"}, bo), nil)
	s2 := New(Config{}, slog.New(slog.DiscardHandler), prometheus.WrapRegistererWith(prometheus.Labels{"listener": "ingest"}, in), nil)
	o := NewOps(OpsConfig{}, slog.New(slog.DiscardHandler))
	o.Gather(bo)
	o.Gather(in)
	do(t, s1, "GET", "/", nil)
	do(t, s2, "GET", "/nope", nil)
	code, b := opsDo(t, o, "/metrics")
	for _, want := range []string{`vouch_http_requests_total{listener="backoffice",route="/",status="200"} 1`,
		`vouch_http_requests_total{listener="ingest",route="unmatched",status="404"} 1`} {
		if code != 200 || !strings.Contains(string(b), want) {
			t.Errorf("metrics (%d) lack %s:\n%s", code, want, b)
		}
	}
	req := httptest.NewRequest("GET", "/", nil)
	rec := httptest.NewRecorder()
	s1.Echo().ServeHTTP(rec, req)
	if rec.Header().Get("X-Frame-Options") != "DENY" || rec.Header().Get("X-Request-Id") == "" {
		t.Errorf("headers: %v", rec.Header())
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	s, _ := newTest(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	addr := <-s.Addr()
	res, err := http.Get("http://" + addr + "/")
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

func TestLandingPage(t *testing.T) {
	t.Parallel()
	s, _ := newTest(t, nil)
	for path, want := range map[string]string{"/": "UZI-pas", "/static/vouch.css": "font-family"} {
		req := httptest.NewRequest("GET", path, nil)
		rec := httptest.NewRecorder()
		s.Echo().ServeHTTP(rec, req)
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("%s: %d %q", path, rec.Code, rec.Body.String())
		}
	}
}
