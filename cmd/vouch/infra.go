package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/server"
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
	// The bus starts while the database is migrated: neither needs the
	// other, and a one-off command pays for both at every start.
	type started struct {
		b   *bus.Bus
		err error
	}
	busc := make(chan started, 1)
	go func() {
		b, err := bus.Start(ctx, busCfg)
		busc <- started{b, err}
	}()
	db, err := func() (*database.DB, error) {
		if err := migrate(ctx, dbCfg); err != nil {
			return nil, err
		}
		return database.Open(ctx, dbCfg)
	}()
	bs := <-busc
	if err != nil || bs.err != nil {
		if bs.b != nil {
			bs.b.Close()
		}
		if db != nil {
			db.Close()
		}
		return nil, errors.Join(err, bs.err)
	}
	b := bs.b
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
