// Package server is Vouch's HTTP edge: one echo instance per public
// listener with the middleware every role shares (request ids, recovery,
// access log without payloads, metrics, security headers, the one client-IP
// rule, limits on headers, connections and bodies), the error translation
// that turns internal errors into a status and a safe message, and the
// operations listener (Ops) that alone serves metrics, health, readiness
// and diagnostics. Features register their own routes on it.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/web"
)

// contentSecurityPolicy: scripts, styles and everything else only from
// this origin, no inline script or style, no frames, forms only to here.
// The card extension's content script is not subject to it.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; media-src 'self' blob:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// permissionsPolicy allows the one powerful feature the pages use — the
// camera, for scanning a phone's QR code on the vouch page — to this
// origin only, and denies the rest to the page and anything it embeds.
const permissionsPolicy = "camera=(self), microphone=(), geolocation=(), display-capture=(), fullscreen=(), " +
	"payment=(), usb=(), serial=(), hid=(), bluetooth=(), midi=(), accelerometer=(), gyroscope=(), magnetometer=(), " +
	"ambient-light-sensor=(), autoplay=(), encrypted-media=(), picture-in-picture=(), screen-wake-lock=(), " +
	"idle-detection=(), clipboard-read=(), clipboard-write=(), web-share=(), publickey-credentials-get=(), " +
	"xr-spatial-tracking=(), browsing-topics=()"

// Config of one public HTTP listener (the back office's, when read from
// the environment as such).
type Config struct {
	Addr            string        `env:"VOUCH_HTTP_ADDR, default=127.0.0.1:8080"`
	ShutdownTimeout time.Duration `env:"VOUCH_HTTP_SHUTDOWN_TIMEOUT, default=15s"`
	// TrustedProxies are the CIDRs of the proxies in front whose
	// X-Forwarded-For and X-Real-IP are believed (IPExtractor).
	TrustedProxies []string `env:"VOUCH_TRUSTED_PROXIES"`
	// Limits; zero fields are BackofficeLimits.
	Limits Limits `env:", prefix=VOUCH_HTTP_"`
}

// Validate checks what New would otherwise have to drop: the proxies'
// CIDRs and the limits (zero fields taking def).
func (c Config) Validate(def Limits, limitsPrefix string) error {
	_, err := ParseProxies("VOUCH_TRUSTED_PROXIES", c.TrustedProxies)
	return errors.Join(err, c.Limits.Or(def).Validate(limitsPrefix))
}

// Checker is one readiness check (the database, the bus).
type Checker interface {
	Check(ctx context.Context) error
}

// CheckFunc adapts a function to Checker.
type CheckFunc func(ctx context.Context) error

// Check runs f.
func (f CheckFunc) Check(ctx context.Context) error { return f(ctx) }

// Server is a public HTTP listener with the shared middleware installed.
type Server struct {
	cfg    Config
	log    *slog.Logger
	echo   *echo.Echo
	checks map[string]Checker
	ready  chan string // receives the bound address once listening
	// bodyWait is how long a request waits for a body slot (bodyWait;
	// shorter in tests).
	bodyWait time.Duration
}

// New builds a public listener. Its HTTP metrics are registered on reg;
// checks are the readiness checks of the role behind it, which the
// operations listener reports (Checks). It serves no metrics, health or
// diagnostics itself: /healthz, /readyz, /metrics and /debug/ are 404
// here. Its routes: GET / (the landing page) and GET /static/ files.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer, checks map[string]Checker) *Server {
	cfg.Limits = cfg.Limits.Or(BackofficeLimits)
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	s := &Server{cfg: cfg, log: log, echo: e, checks: checks, ready: make(chan string, 1), bodyWait: bodyWait}
	proxies, err := ParseProxies("VOUCH_TRUSTED_PROXIES", cfg.TrustedProxies)
	if err != nil {
		// Validate refuses this at start; trusting none is the safe side.
		log.Error("trusted proxies ignored", "err", err)
		proxies = nil
	}
	e.IPExtractor = IPExtractor(proxies)
	e.HTTPErrorHandler = s.handleError
	m := newMetrics(reg)
	e.Use(
		middleware.RequestID(),
		// First, so that every answer carries them, refusals and panics
		// included.
		middleware.SecureWithConfig(middleware.SecureConfig{
			XSSProtection: "0", ContentTypeNosniff: "nosniff", XFrameOptions: "DENY",
			HSTSMaxAge: 31536000, ContentSecurityPolicy: contentSecurityPolicy,
			ReferrerPolicy: "no-referrer",
		}),
		isolation,
		s.recoverPanics,
		m.middleware,
		s.accessLog,
		bodies(cfg.Limits.MaxBodies, &s.bodyWait),
		middleware.BodyLimit("64KiB"), // 65,536 bytes: "64K" is 64,000 to echo, below the phone API's 64 KiB
	)
	e.GET("/static/*", staticFiles)
	e.GET("/", func(c echo.Context) error {
		page, err := web.Static.ReadFile("static/index.html")
		if err != nil {
			return err
		}
		return c.HTMLBlob(http.StatusOK, page)
	})
	return s
}

// isolation keeps other origins' pages from holding a handle on ours
// (a popup they opened and then navigate), from embedding our responses,
// and from powerful features the pages do not use.
func isolation(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", permissionsPolicy)
		return next(c)
	}
}

// staticFiles serves the embedded files under /static/ and nothing else:
// a directory, with or without its slash, is 404 — never a listing.
func staticFiles(c echo.Context) error {
	r := c.Request()
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if !strings.HasPrefix(name, "static/") || strings.HasSuffix(r.URL.Path, "/") {
		return echo.ErrNotFound
	}
	f, err := web.Static.Open(name)
	if err != nil {
		return echo.ErrNotFound
	}
	defer f.Close()
	fi, err := f.Stat()
	rs, seekable := f.(io.ReadSeeker)
	if err != nil || fi.IsDir() || !seekable {
		return echo.ErrNotFound
	}
	http.ServeContent(c.Response(), r, fi.Name(), fi.ModTime(), rs)
	return nil
}

// Checks are the readiness checks given to New, for the operations
// listener.
func (s *Server) Checks() map[string]Checker { return s.checks }

// Echo is where features add their routes.
func (s *Server) Echo() *echo.Echo { return s.echo }

// Addr returns the bound address once Run listens.
func (s *Server) Addr() <-chan string { return s.ready }

// Run serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("server: listen %s: %w", s.cfg.Addr, err)
	}
	srv := &http.Server{Handler: s.echo, MaxHeaderBytes: s.cfg.Limits.httpMaxHeaderBytes(),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(newLimitListener(ln, s.cfg.Limits.MaxConns)) }()
	s.ready <- ln.Addr().String()
	s.log.Info("http listening", "addr", ln.Addr().String(), "max_header_bytes", s.cfg.Limits.MaxHeaderBytes,
		"max_conns", s.cfg.Limits.MaxConns, "max_bodies", s.cfg.Limits.MaxBodies)
	select {
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	grace := s.cfg.ShutdownTimeout
	if grace <= 0 { // a Config made in code rather than from the environment
		grace = 10 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// accessLog writes one line per request: never a body, a query or a header
// but the user agent, because payloads can hold patient data.
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		req, res := c.Request(), c.Response()
		s.log.Info("http",
			"request_id", res.Header().Get(echo.HeaderXRequestID),
			"method", req.Method, "route", c.Path(), "status", res.Status,
			"duration_ms", time.Since(start).Milliseconds(),
			"ip", c.RealIP(), "user_agent", req.UserAgent())
		return nil
	}
}

func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				err = fmt.Errorf("server: panic: %v", r)
			}
		}()
		return next(c)
	}
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vouch_http_requests_total", Help: "HTTP requests by route and status."}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vouch_http_request_duration_seconds", Help: "HTTP request latency by route.", Buckets: prometheus.DefBuckets}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

func (m *metrics) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched" // never the raw path: it could carry a code
		}
		m.requests.WithLabelValues(route, strconv.Itoa(c.Response().Status)).Inc()
		m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		return nil
	}
}
