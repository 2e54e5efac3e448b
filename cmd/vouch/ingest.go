package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
	Bus    bus.Config
	HTTP   server.Config // its shutdown timeout; the address is VOUCH_INGEST_ADDR
	Trust  trust.Config
	Ingest ingest.Config
}

// runIngest is `vouch ingest`: the public phone API alone.
func runIngest(ctx context.Context, log *slog.Logger) error {
	var cfg ingestConfig
	if err := loadConfig(ctx, &cfg); err != nil {
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	role, err := startIngest(ctx, cfg.Ingest, cfg.HTTP, cfg.Trust, tr, b, log, reg)
	if err != nil {
		return err
	}
	err = role.run(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}

// ingestRole is a started phone API: run serves it until ctx ends.
type ingestRole struct {
	srv *server.Server
	svc *ingest.Service
	run func(ctx context.Context) error
}

// startIngest builds the phone API on its own listener (cfg.Addr), apart
// from the back office: it faces the public. reg must be a registry no
// other server.New registered on (each registers the HTTP metrics); its
// /metrics is on the public listener, so VOUCH_INGEST_ALLOW_CIDRS or the
// network in front should keep it to the operator. `vouch all` calls it
// with its own bus and a fresh registry.
func startIngest(ctx context.Context, cfg ingest.Config, hcfg server.Config, tcfg trust.Config, tr protocol.Trust,
	b *bus.Bus, log *slog.Logger, reg *prometheus.Registry) (*ingestRole, error) {
	if len(tcfg.CRLs) == 0 {
		log.Info("no VOUCH_UZI_CRLS: cards are checked against the CRLs the registry sync puts on the bus alone")
	}
	svc, err := ingest.New(ctx, cfg, ingest.Deps{Trust: tr, CRLFiles: tcfg.CRLs, CRLRefresh: tcfg.CRLRefresh, Bus: b, Log: log, Metrics: reg})
	if err != nil {
		return nil, err
	}
	checks := svc.Checks()
	checks["bus"] = server.CheckFunc(func(context.Context) error { return b.Healthy() })
	srv := server.New(server.Config{Addr: cfg.Addr, ShutdownTimeout: hcfg.ShutdownTimeout}, log, reg, checks)
	svc.Register(srv.Echo())
	log.Info("phone API ready", "addr", cfg.Addr, "max_age_days", cfg.MaxAgeDays)
	return &ingestRole{srv: srv, svc: svc, run: func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return svc.Run(gctx) })
		g.Go(func() error { return srv.Run(gctx) })
		return g.Wait()
	}}, nil
}
