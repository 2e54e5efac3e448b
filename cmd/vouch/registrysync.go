package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"vouch/internal/bus"
	"vouch/internal/database"
	"vouch/internal/directory"
	"vouch/internal/registrysync"
	"vouch/internal/server"
	"vouch/internal/trust"
)

// registrySyncConfig is the configuration of `vouch registry-sync`.
type registrySyncConfig struct {
	Database  database.Config
	Bus       bus.Config
	HTTP      server.Config
	Directory directory.Config
	Sync      registrysync.Config
	Trust     trust.Config // the CAs whose CRLs the sync fetches
}

// runRegistrySync mirrors the register: once (-once) or in a loop that
// serves health and metrics.
func runRegistrySync(ctx context.Context, log *slog.Logger, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("registry-sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	once := fs.Bool("once", false, "sync once (full or incremental, as due) and exit")
	full := fs.Bool("full", false, "with -once: a full sync even when an incremental one would do")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	var cfg registrySyncConfig
	if err := loadConfig(ctx, &cfg); err != nil {
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
	b, err := bus.Start(ctx, cfg.Bus)
	if err != nil {
		return err
	}
	defer b.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s, err := newSyncer(ctx, cfg.Directory, cfg.Sync, cfg.Trust, db, b, log, reg)
	if err != nil {
		return err
	}
	if *once {
		sync := s.Once
		if *full {
			sync = s.Full
		}
		res, err := sync(ctx)
		if err != nil {
			return err
		}
		log.Info("registry sync done", "kind", res.Kind, "entries", res.Entries, "changes", res.Changes, "skipped", res.Skipped)
		return nil
	}
	srv := server.New(cfg.HTTP, log, reg, map[string]server.Checker{
		"database": server.CheckFunc(db.Ping),
		"bus":      server.CheckFunc(func(context.Context) error { return b.Healthy() }),
	})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Run(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// newSyncer builds the sync job from its configuration.
func newSyncer(ctx context.Context, dcfg directory.Config, scfg registrysync.Config, tcfg trust.Config,
	db *database.DB, b *bus.Bus, log *slog.Logger, reg prometheus.Registerer) (*registrysync.Syncer, error) {
	dir, err := directory.New(dcfg)
	if err != nil {
		return nil, err
	}
	var crls *registrysync.CRLConfig
	if len(scfg.CRLSources) > 0 {
		crls = &registrysync.CRLConfig{Sources: scfg.CRLSources}
		for _, f := range append(append([]string{}, tcfg.Roots...), tcfg.CAs...) {
			certs, err := trust.ReadCertificates(f)
			if err != nil {
				return nil, err
			}
			crls.CAs = append(crls.CAs, certs...)
		}
		if len(crls.CAs) == 0 {
			return nil, fmt.Errorf("registry sync: VOUCH_UZI_CRL_SOURCES set but no CA to check them against (VOUCH_UZI_CAS)")
		}
	}
	if scfg.Interval > time.Minute {
		log.Warn("license changes reach the public tier only every sync interval", "interval", scfg.Interval)
	}
	return registrysync.New(ctx, scfg, dir, db, b.JetStream(), crls, log, registrysync.NewMetrics(reg))
}
