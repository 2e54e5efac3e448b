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
	return &infra{db: db, bus: b, reg: runtimeRegistry()}, nil
}

// runtimeRegistry is a metrics registry with the Go runtime's and the
// process's metrics.
func runtimeRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// listenerMetrics is where a public listener registers its HTTP metrics:
// reg, labelled with the listener's name, so that the back office's and
// the phone API's requests are counted apart on one operations listener.
func listenerMetrics(reg prometheus.Registerer, name string) prometheus.Registerer {
	return prometheus.WrapRegistererWith(prometheus.Labels{"listener": name}, reg)
}

// newOps is a role's operations listener (VOUCH_OPS_LISTEN): the metrics
// of regs and the readiness checks, never on a public address.
func newOps(cfg server.OpsConfig, log *slog.Logger, checks map[string]server.Checker, regs ...prometheus.Gatherer) *server.Ops {
	ops := server.NewOps(cfg, log)
	for _, r := range regs {
		ops.Gather(r)
	}
	ops.Check("", checks)
	return ops
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
