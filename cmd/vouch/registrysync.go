package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/trust"
)

// registrySyncConfig is the configuration of `vouch registry-sync`.
type registrySyncConfig struct {
	Database  database.Config
	Bus       bus.Config
	Ops       server.OpsConfig
	Directory directory.Config
	Sync      registrysync.Config
	Trust     trust.Config // the CAs whose CRLs the sync fetches
}

// runRegistrySync mirrors the register: once (-once) or in a loop that
// serves health and metrics on the operations listener.
func runRegistrySync(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("registry-sync", flag.ContinueOnError)
	once := fs.Bool("once", false, "sync once (full or incremental, as due) and exit")
	full := fs.Bool("full", false, "with -once: a full sync even when an incremental one would do")
	acceptShrink := fs.Bool("accept-shrink", false, "with -once -full: accept however much the register shrank")
	reconcile := fs.Bool("reconcile", false, "with -once: only compare the whole license bucket with the mirror and correct it")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "vouch registry-sync: unexpected arguments %q\n", fs.Args())
		return exitError(2)
	case *full && !*once, *acceptShrink && !(*once && *full), *reconcile && (!*once || *full):
		// Silently ignoring one would leave an operator believing a
		// shrink was accepted, or a full sync run.
		fmt.Fprintln(stderr, "vouch registry-sync: -full needs -once, -accept-shrink needs -once -full, -reconcile needs -once without -full")
		return exitError(2)
	}
	var cfg registrySyncConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	in, err := openInfra(ctx, cfg.Database, cfg.Bus, log)
	if err != nil {
		return err
	}
	defer in.Close()
	s, err := newSyncer(ctx, cfg.Directory, cfg.Sync, cfg.Trust, nil, in, log)
	if err != nil {
		return err
	}
	if *once && *reconcile {
		if err := s.Reconcile(ctx); err != nil {
			return err
		}
		log.Info("license bucket reconciled with the mirror")
		return nil
	}
	if *once {
		sync := s.Once
		switch {
		case *full && *acceptShrink:
			sync = s.FullAcceptingShrink
		case *full:
			sync = s.Full
		}
		res, err := sync(ctx)
		if err != nil {
			return err
		}
		log.Info("registry sync done", "kind", res.Kind, "entries", res.Entries, "changes", res.Changes, "skipped", res.Skipped)
		return nil
	}
	ops := newOps(cfg.Ops, log, in.checks(), in.reg)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Run(gctx) })
	g.Go(func() error { return ops.Run(gctx) })
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// newSyncer builds the sync job from its configuration. cas are the CAs
// whose CRLs it fetches; nil loads them from tcfg.
func newSyncer(ctx context.Context, dcfg directory.Config, scfg registrysync.Config, tcfg trust.Config, cas []*x509.Certificate,
	in *infra, log *slog.Logger) (*registrysync.Syncer, error) {
	dir, err := directory.New(dcfg)
	if err != nil {
		return nil, err
	}
	var crls *registrysync.CRLConfig
	if len(scfg.CRLSources) > 0 {
		// The CAs come from the trust configuration as every verifier
		// loads it: the same roots, issuing CAs and checks.
		if cas == nil {
			tr, err := tcfg.Load(time.Now())
			if err != nil {
				return nil, fmt.Errorf("registry sync: VOUCH_UZI_CRL_SOURCES needs the CAs to check them against: %w", err)
			}
			cas = tr.CAs()
		}
		crls = &registrysync.CRLConfig{Sources: scfg.CRLSources, CAs: cas}
		// Ingest has no database: it reads the CRLs from the bus.
		if crls.Bucket, err = in.bus.Bucket(ctx, registrysync.CRLBucket, registrysync.CRLBucketDescription); err != nil {
			return nil, err
		}
	}
	if scfg.Interval > time.Minute {
		log.Warn("license changes reach the public tier only every sync interval", "interval", scfg.Interval)
	}
	bucket, err := in.bus.Bucket(ctx, scfg.Bucket, registrysync.BucketDescription)
	if err != nil {
		return nil, err
	}
	return registrysync.New(ctx, scfg, dir, in.db, bucket, crls, log, registrysync.NewMetrics(in.reg))
}
