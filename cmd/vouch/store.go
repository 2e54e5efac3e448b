package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/keystore"
	"github.com/vouch-nl/vouch/internal/server"
)

// storeConfig is the configuration of `vouch store`.
type storeConfig struct {
	Database database.Config
	Bus      bus.Config
	Ops      server.OpsConfig
	Store    keystore.Config
}

// runStore is `vouch store`: readers that drain the keys from the bus into
// PostgreSQL. Run several processes at once to share the work.
func runStore(ctx context.Context, log *slog.Logger) error {
	var cfg storeConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if err := cfg.Store.Validate(); err != nil {
		return err
	}
	in, err := openInfra(ctx, cfg.Database, cfg.Bus, log)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := startStore(ctx, cfg.Store, in, in.reg, log)
	if err != nil {
		return err
	}
	ops := newOps(cfg.Ops, log, in.checks(), in.reg)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return st.Run(gctx) })
	g.Go(func() error { return ops.Run(gctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}

// startStore opens the readers on in's database and bus, their metrics on
// reg; Run drains until its context ends. `vouch all` calls it too.
func startStore(ctx context.Context, cfg keystore.Config, in *infra, reg prometheus.Registerer, log *slog.Logger) (*keystore.Store, error) {
	st, err := keystore.New(ctx, cfg, in.db.Pool(), in.bus, reg, log.With("role", "store"))
	if err != nil {
		return nil, err
	}
	log.Info("store readers started", "readers", cfg.Readers, "consumer", cfg.Consumer, "batch", cfg.Batch)
	return st, nil
}
