package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"vouch/internal/bus"
	"vouch/internal/database"
	"vouch/internal/server"
)

// infra is what every server role stands on: a migrated database, the bus,
// and a metrics registry.
type infra struct {
	db  *database.DB
	bus *bus.Bus
	reg *prometheus.Registry
}

// openInfra migrates and opens the database, starts or joins the bus, and
// makes the metrics registry. Close releases them.
func openInfra(ctx context.Context, dbCfg database.Config, busCfg bus.Config, log *slog.Logger) (*infra, error) {
	if err := migrate(ctx, dbCfg); err != nil {
		return nil, err
	}
	db, err := database.Open(ctx, dbCfg)
	if err != nil {
		return nil, err
	}
	b, err := bus.Start(ctx, busCfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	log.Info("bus started", "embedded", b.Embedded())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &infra{db: db, bus: b, reg: reg}, nil
}

// checks are the readiness checks of the infrastructure.
func (in *infra) checks() map[string]server.Checker {
	return map[string]server.Checker{
		"database": server.CheckFunc(in.db.Ping),
		"bus":      server.CheckFunc(func(context.Context) error { return in.bus.Healthy() }),
	}
}

func (in *infra) Close() {
	in.bus.Close()
	in.db.Close()
}
