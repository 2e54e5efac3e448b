package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// OpsConfig is the operations listener's. It serves what only the
// operator may read — metrics, health, readiness, diagnostics — and is on
// loopback by default: a public address never answers these paths, since
// counters beside the phone API's would tell real uploads from chaff.
type OpsConfig struct {
	Addr string `env:"VOUCH_OPS_LISTEN, default=127.0.0.1:9090"`
}

// opsMaxConns bounds the operations listener like a public one: it is on
// loopback, but nothing should be able to take the process's memory.
const opsMaxConns = 64

// Ops is a role's (or `vouch all`'s) operations listener: GET /healthz
// (alive), GET /readyz (every check added), GET /metrics (every registry
// added, gathered together) and /debug/pprof/.
type Ops struct {
	cfg       OpsConfig
	log       *slog.Logger
	gatherers prometheus.Gatherers
	checks    map[string]Checker
	ready     chan string
}

// NewOps makes the operations listener; add what it reports with Gather
// and Check before Run.
func NewOps(cfg OpsConfig, log *slog.Logger) *Ops {
	return &Ops{cfg: cfg, log: log, checks: map[string]Checker{}, ready: make(chan string, 1)}
}

// Gather adds a registry whose metrics /metrics serves.
func (o *Ops) Gather(g prometheus.Gatherer) { o.gatherers = append(o.gatherers, g) }

// Check adds readiness checks, each named prefix+name.
func (o *Ops) Check(prefix string, checks map[string]Checker) {
	for n, c := range checks {
		o.checks[prefix+n] = c
	}
}

// Handler serves the operations endpoints.
func (o *Ops) Handler() http.Handler {
	h := &health{checks: o.checks, log: o.log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", h.live)
	mux.HandleFunc("GET /readyz", h.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.gatherers, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(o.log.Handler(), slog.LevelWarn), ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// Addr returns the bound address once Run listens.
func (o *Ops) Addr() <-chan string { return o.ready }

// Run serves until ctx ends.
func (o *Ops) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", o.cfg.Addr)
	if err != nil {
		return fmt.Errorf("server: operations listener (VOUCH_OPS_LISTEN) %s: %w", o.cfg.Addr, err)
	}
	srv := &http.Server{Handler: o.Handler(), MaxHeaderBytes: 8 << 10, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 2 * time.Minute, // a 30 s CPU profile
		IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(o.log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(newLimitListener(ln, opsMaxConns)) }()
	o.ready <- ln.Addr().String()
	o.log.Info("operations listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("server: operations listener: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("server: operations listener: shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
