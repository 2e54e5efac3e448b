package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/retention"
	"github.com/vouch-nl/vouch/internal/settings"
)

// cleanupConfig is the configuration of `vouch cleanup`.
type cleanupConfig struct {
	Database  database.Config
	Retention retention.Config
	Settings  settings.Config // the hard limits of the admin's retention periods
}

const cleanupUsage = "usage: vouch cleanup [-once]"

// runCleanup is `vouch cleanup`: delete what is past retention, once
// (-once, for cron) or every VOUCH_CLEANUP_INTERVAL.
func runCleanup(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	fs.Usage = func() { _, _ = fs.Output().Write([]byte(cleanupUsage + "\n")); fs.PrintDefaults() }
	once := fs.Bool("once", false, "run every rule once and exit (status 1 when one failed)")
	if err := parseFlags(fs, args, os.Stdout, os.Stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitError(2)
	}
	var cfg cleanupConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if err := cfg.Retention.Validate(); err != nil {
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
	c, err := startCleanup(cfg.Retention, cfg.Settings, db, nil, log)
	if err != nil {
		return err
	}
	if *once {
		_, err := c.Once(ctx)
		return err
	}
	err = c.Run(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}

// startCleanup makes the cleaner on db, its metrics on reg (nil: none),
// reading the admin's retention periods (settings); Run loops until its
// context ends. `vouch all` calls it too.
func startCleanup(cfg retention.Config, scfg settings.Config, db *database.DB, reg prometheus.Registerer, log *slog.Logger) (*retention.Cleaner, error) {
	c, err := retention.New(cfg, db.Pool(), nil, reg, log.With("role", "cleanup"))
	if err != nil {
		return nil, err
	}
	if err := cleanupSettings(c, scfg, db, log); err != nil {
		return nil, err
	}
	return c, nil
}
