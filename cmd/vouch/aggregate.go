package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/server"
)

// aggregateConfig is the configuration of `vouch aggregate`.
type aggregateConfig struct {
	Database database.Config
	Ops      server.OpsConfig
	Export   export.Config
}

const aggregateUsage = "usage: vouch aggregate [-once]"

// runAggregate is `vouch aggregate`: build, sign and publish the export
// once (-once) or every VOUCH_EXPORT_PERIOD, serving its metrics
// (vouch_export_keys_held among them) on the operations listener
// (VOUCH_OPS_LISTEN) meanwhile.
func runAggregate(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("aggregate", flag.ContinueOnError)
	fs.Usage = func() { _, _ = fs.Output().Write([]byte(aggregateUsage + "\n")); fs.PrintDefaults() }
	once := fs.Bool("once", false, "publish once and exit (status 1 when it failed or another aggregator held the lease)")
	if err := parseFlags(fs, args, os.Stdout, os.Stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitError(2)
	}
	var cfg aggregateConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if err := cfg.Export.Validate(); err != nil {
		return err
	}
	if err := migrate(ctx, cfg.Database); err != nil {
		return err
	}
	db, err := database.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	reg := runtimeRegistry()
	agg, closeKeys, err := startAggregate(cfg.Export, db, reg, log)
	if err != nil {
		return err
	}
	defer closeKeys()
	if err := exportFaults(agg, log); err != nil {
		return err
	}
	if *once {
		res, err := agg.Run(ctx)
		if err != nil {
			return err
		}
		log.Info("export published", "files", len(res.Files), "keys", res.Keys, "held", res.Held, "padded", res.Padded)
		return nil
	}
	checks := map[string]server.Checker{"database": server.CheckFunc(db.Ping)}
	if cfg.Export.Target != "" {
		checks["bucket"] = server.CheckFunc(agg.CheckTarget) // VOUCH_EXPORT_TARGET
	}
	ops := newOps(cfg.Ops, log, checks, reg)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return agg.Loop(gctx) })
	g.Go(func() error { return ops.Run(gctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}

// startAggregate opens the export signing keys cfg (validated) names and
// makes the aggregator on db, its metrics on reg (nil: none). Loop runs it
// until its context ends; closeKeys releases the HSM sessions after.
// `vouch all` calls it too.
func startAggregate(cfg export.Config, db *database.DB, reg prometheus.Registerer, log *slog.Logger) (agg *export.Aggregator, closeKeys func(), err error) {
	// Validate fills in the defaults the rest relies on.
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	signers, closeKeys, err := export.OpenSigners(cfg)
	if err != nil {
		return nil, nil, err
	}
	agg, err = export.New(cfg, db, signers, reg, log.With("role", "aggregate"))
	if err != nil {
		closeKeys()
		return nil, nil, err
	}
	return agg, closeKeys, nil
}
