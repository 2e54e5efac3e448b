// Package server is Vouch's HTTP edge: one echo instance per role with the
// middleware every role shares (request ids, recovery, access log without
// payloads, metrics, security headers), the error translation that turns
// internal errors into a status and a safe message, and the health and
// metrics endpoints. Features register their own routes on it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vouch-nl/vouch/web"
)

// contentSecurityPolicy: scripts, styles and everything else only from
// this origin, no inline script or style, no frames, forms only to here.
// The card extension's content script is not subject to it.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; media-src 'self' blob:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Config of one HTTP listener.
type Config struct {
	Addr            string        `env:"VOUCH_HTTP_ADDR, default=127.0.0.1:8080"`
	ShutdownTimeout time.Duration `env:"VOUCH_HTTP_SHUTDOWN_TIMEOUT, default=15s"`
}

// Checker is one readiness check (the database, the bus).
type Checker interface {
	Check(ctx context.Context) error
}

// CheckFunc adapts a function to Checker.
type CheckFunc func(ctx context.Context) error

// Check runs f.
func (f CheckFunc) Check(ctx context.Context) error { return f(ctx) }

// Server is an HTTP server with the shared middleware installed.
type Server struct {
	cfg    Config
	log    *slog.Logger
	echo   *echo.Echo
	checks map[string]Checker
	ready  chan string // receives the bound address once listening
}

// New builds the server. Routes: GET /healthz (alive), GET /readyz (checks),
// GET /metrics (Prometheus, from reg).
func New(cfg Config, log *slog.Logger, reg *prometheus.Registry, checks map[string]Checker) *Server {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	s := &Server{cfg: cfg, log: log, echo: e, checks: checks, ready: make(chan string, 1)}
	e.HTTPErrorHandler = s.handleError
	m := newMetrics(reg)
	e.Use(
		middleware.RequestID(),
		s.recoverPanics,
		m.middleware,
		s.accessLog,
		middleware.SecureWithConfig(middleware.SecureConfig{
			XSSProtection: "0", ContentTypeNosniff: "nosniff", XFrameOptions: "DENY",
			HSTSMaxAge: 31536000, ContentSecurityPolicy: contentSecurityPolicy,
			ReferrerPolicy: "no-referrer",
		}),
		middleware.BodyLimit("64K"),
	)
	h := &health{checks: checks, log: log}
	e.GET("/healthz", h.live)
	e.GET("/readyz", h.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	e.GET("/static/*", echo.WrapHandler(http.FileServerFS(web.Static)))
	e.GET("/", func(c echo.Context) error {
		page, err := web.Static.ReadFile("static/index.html")
		if err != nil {
			return err
		}
		return c.HTMLBlob(http.StatusOK, page)
	})
	return s
}

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
	srv := &http.Server{Handler: s.echo, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.ready <- ln.Addr().String()
	s.log.Info("http listening", "addr", ln.Addr().String())
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
