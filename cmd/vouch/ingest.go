package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/ingest"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/trust"
)

// ingestConfig is the configuration of `vouch ingest`. It has no database:
// licenses, authorizations and CRLs come over the bus.
type ingestConfig struct {
	Bus  bus.Config
	HTTP server.Config // its shutdown timeout and VOUCH_TRUSTED_PROXIES; the address is VOUCH_INGEST_ADDR
	// The phone API's listener limits (VOUCH_INGEST_MAX_HEADER_BYTES,
	// _MAX_CONNS, _MAX_BODIES); zero fields are server.PhoneAPILimits.
	Limits server.Limits `env:", prefix=VOUCH_INGEST_"`
	Ops    server.OpsConfig
	Trust  trust.Config
	Ingest ingest.Config
}

// runIngest is `vouch ingest`: the public phone API alone.
func runIngest(ctx context.Context, log *slog.Logger) error {
	var cfg ingestConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if _, err := server.ParseProxies("VOUCH_TRUSTED_PROXIES", cfg.HTTP.TrustedProxies); err != nil {
		return err
	}
	tr, err := cfg.Trust.Load(time.Now())
	if err != nil {
		return err
	}
	b, err := bus.Start(ctx, cfg.Bus)
	if err != nil {
		return err
	}
	defer b.Close()
	log.Info("bus started", "embedded", b.Embedded())
	reg := runtimeRegistry()
	role, err := startIngest(ctx, cfg.Ingest, cfg.HTTP, cfg.Limits, cfg.Trust, tr, b, log, reg)
	if err != nil {
		return err
	}
	ops := newOps(cfg.Ops, log, role.checks, reg)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return role.run(gctx) })
	g.Go(func() error { return ops.Run(gctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}

// ingestRole is a started phone API: run serves it until ctx ends.
type ingestRole struct {
	srv    *server.Server
	svc    *ingest.Service
	checks map[string]server.Checker // for the operations listener
	run    func(ctx context.Context) error
}

// startIngest builds the phone API on its own listener (cfg.Addr), apart
// from the back office: it faces the public, and serves neither metrics
// nor health (the caller's operations listener reports reg and the role's
// checks). reg must be a registry no other ingest registered on. Its
// limits are limits, zero fields server.PhoneAPILimits; the proxies it
// trusts are VOUCH_INGEST_TRUSTED_PROXIES, else VOUCH_TRUSTED_PROXIES.
// `vouch all` calls it with its own bus and a fresh registry.
func startIngest(ctx context.Context, cfg ingest.Config, hcfg server.Config, limits server.Limits, tcfg trust.Config,
	tr protocol.Trust, b *bus.Bus, log *slog.Logger, reg *prometheus.Registry) (*ingestRole, error) {
	limits = limits.Or(server.PhoneAPILimits)
	if err := limits.Validate("VOUCH_INGEST_"); err != nil {
		return nil, err
	}
	if len(cfg.TrustedProxies) == 0 {
		cfg.TrustedProxies = hcfg.TrustedProxies
	}
	if len(tcfg.CRLs) == 0 {
		log.Info("no VOUCH_UZI_CRLS: cards are checked against the CRLs the registry sync puts on the bus alone")
	}
	svc, err := ingest.New(ctx, cfg, ingest.Deps{Trust: tr, CRLFiles: tcfg.CRLs, CRLRefresh: tcfg.CRLRefresh, Bus: b, Log: log, Metrics: reg})
	if err != nil {
		return nil, err
	}
	checks := svc.Checks()
	checks["bus"] = server.CheckFunc(func(context.Context) error { return b.Healthy() })
	srv := server.New(server.Config{Addr: cfg.Addr, ShutdownTimeout: hcfg.ShutdownTimeout, TrustedProxies: cfg.TrustedProxies,
		Limits: limits}, log, listenerMetrics(reg, "ingest"), checks)
	svc.Register(srv.Echo())
	log.Info("phone API ready", "addr", cfg.Addr, "max_age_days", cfg.MaxAgeDays)
	return &ingestRole{srv: srv, svc: svc, checks: checks, run: func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return svc.Run(gctx) })
		g.Go(func() error { return srv.Run(gctx) })
		return g.Wait()
	}}, nil
}
