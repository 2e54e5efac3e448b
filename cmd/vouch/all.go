package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/cdn"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/federate"
	"github.com/vouch-nl/vouch/internal/ingest"
	"github.com/vouch-nl/vouch/internal/keystore"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/retention"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/stats"
	"github.com/vouch-nl/vouch/internal/trust"
)

// allConfig is the configuration of `vouch all`: every role's, together.
type allConfig struct {
	Database   database.Config
	Bus        bus.Config
	HTTP       server.Config // the back office's listener
	Ops        server.OpsConfig
	Trust      trust.Config
	Directory  directory.Config
	Sync       registrysync.Config
	License    license.Config
	Backoffice backoffice.Config
	Ingest     ingest.Config
	// The phone API's listener limits (VOUCH_INGEST_MAX_HEADER_BYTES, ...).
	IngestLimits server.Limits `env:", prefix=VOUCH_INGEST_"`
	Store        keystore.Config
	Export       export.Config
	CDN          cdn.Config
	CDNLimit     cdnLimit
	Retention    retention.Config
	Federate     federate.Config
	Transparency transparencyWriterConfig
	Stats        stats.Config
}

// startPipeline adds the public pipeline's roles to g: the phone API on its
// own listener, the readers and the cleanup always; the aggregator when an
// export key and directory are configured, and the origin when it has a
// directory to serve. Their metrics and readiness checks go to ops.
func startPipeline(ctx context.Context, g *errgroup.Group, gctx context.Context, cfg allConfig, tr protocol.Trust, in *infra,
	ops *server.Ops, log *slog.Logger) error {
	// The phone API's metrics are a registry of their own, gathered beside
	// the others.
	ingReg := prometheus.NewRegistry()
	ing, err := startIngest(ctx, cfg.Ingest, cfg.HTTP, cfg.IngestLimits, cfg.Trust, tr, in.bus, log, ingReg)
	if err != nil {
		return err
	}
	ops.Gather(ingReg)
	ops.Check("ingest.", ing.checks)
	g.Go(func() error { return ing.run(gctx) })
	st, err := startStore(ctx, cfg.Store, in, in.reg, log)
	if err != nil {
		return err
	}
	g.Go(func() error { return st.Run(gctx) })
	cl, err := startCleanup(cfg.Retention, cfg.Backoffice.Settings, in.db, in.reg, log)
	if err != nil {
		return err
	}
	g.Go(func() error { return cl.Run(gctx) })
	if len(cfg.Export.KeyURIs) > 0 && (cfg.Export.Dir != "" || cfg.Export.Target != "") {
		agg, closeKeys, err := startAggregate(cfg.Export, in.db, in.reg, log)
		if err != nil {
			return err
		}
		g.Go(func() error { defer closeKeys(); return agg.Loop(gctx) })
	} else {
		log.Warn("no export key, or neither directory nor bucket (VOUCH_EXPORT_KEY_URIS, VOUCH_EXPORT_DIR, VOUCH_EXPORT_TARGET): nothing is published")
	}
	// The statistics, counted in the database and published beside the
	// exports.
	sj, err := startStats(cfg.Stats, cfg.Export, in.db, log)
	if err != nil {
		return err
	}
	g.Go(func() error { return sj.loop(gctx, cfg.Stats.Interval) })
	// The transparency log's writer when it has a directory (the export
	// directory's log/, which the origin then serves).
	if cfg.Transparency.Log.Dir != "" {
		tl, closeKeys, err := startTransparency(cfg.Transparency, cfg.Export, in.db, log)
		if err != nil {
			return err
		}
		g.Go(func() error { defer closeKeys(); return tl.Run(gctx) })
	}
	if cfg.CDN.Dir == "" {
		cfg.CDN.Dir = cfg.Export.Dir
	}
	if cfg.Export.Dir != "" {
		// The origin opens its root at start; the aggregator's first
		// export may come later.
		if err := os.MkdirAll(cfg.Export.Dir, 0o755); err != nil {
			return fmt.Errorf("VOUCH_EXPORT_DIR: %w", err)
		}
	}
	if cfg.CDN.Dir != "" {
		origin, err := startCDN(cfg.CDN, cfg.CDNLimit, log)
		if err != nil {
			return err
		}
		ops.Check("cdn.", origin.checks)
		g.Go(func() error { defer origin.Close(); return origin.run(gctx) })
	}
	return nil
}

// runAll starts everything in one process: migrations, the embedded bus, the
// trust configuration and the HTTP edge. Roles join it as they are built.
func runAll(ctx context.Context, log *slog.Logger) error {
	var cfg allConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if err := cfg.HTTP.Validate(server.BackofficeLimits, "VOUCH_HTTP_"); err != nil {
		return err
	}
	// Trust first: a misconfigured verifier must stop the start, not
	// surface at the first clinician.
	tr, err := cfg.Trust.Load(time.Now())
	if err != nil {
		return err
	}
	if _, err := protocol.NewVerifier(tr); err != nil {
		return err
	}
	syncRuns := cfg.Directory.URL != ""
	if !syncRuns {
		log.Warn("no register configured (VOUCH_REGISTRY_URL): licenses cannot be checked")
	}
	if err := checkRevocationConfig(cfg.Trust, cfg.Sync, syncRuns); err != nil {
		return err
	}
	in, err := openInfra(ctx, cfg.Database, cfg.Bus, log)
	if err != nil {
		return err
	}
	defer in.Close()
	keepCRLs, crlsReady, err := serverRevocation(ctx, &tr, cfg.Trust, cfg.Sync, in.db, syncRuns, log)
	if err != nil {
		return err
	}
	log.Info("trust loaded", "profile", tr.Profile.Name(), "jurisdiction", tr.Jurisdiction,
		"roots", len(tr.Roots), "attestation_keys", len(tr.AttestationKeys), "crl_files", len(cfg.Trust.CRLs),
		"crl_sources", len(cfg.Sync.CRLSources))
	checks := in.checks()
	checks["revocation"] = crlsReady
	srv := server.New(cfg.HTTP, log, listenerMetrics(in.reg, "backoffice"), checks)
	// One operations listener for every role: each one's metrics and
	// readiness checks.
	ops := newOps(cfg.Ops, log, checks, in.reg)
	g, gctx := errgroup.WithContext(ctx)
	if cfg.Backoffice.AttestationURI != "" {
		bo, err := startBackoffice(ctx, cfg.Backoffice, cfg.Directory, cfg.License, tr, in, srv, log)
		if err != nil {
			return err
		}
		defer bo.close()
		g.Go(func() error { return bo.run(gctx) })
	} else {
		log.Warn("no attestation key configured (VOUCH_ATTESTATION_URI): the back office does not start")
	}
	if err := startPipeline(ctx, g, gctx, cfg, tr, in, ops, log); err != nil {
		return err
	}
	if len(cfg.Federate.Sites) > 0 {
		if err := cfg.Federate.Validate(); err != nil {
			return err
		}
		sites, err := federateSites(cfg.Federate.Sites)
		if err != nil {
			return err
		}
		pull, err := startFederate(cfg.Federate, sites, in.db, in.reg, log)
		if err != nil {
			return err
		}
		g.Go(func() error { return pull(gctx) })
	}
	if syncRuns {
		s, err := newSyncer(ctx, cfg.Directory, cfg.Sync, cfg.Trust, tr.CAs(), in, log)
		if err != nil {
			return err
		}
		g.Go(func() error { return s.Run(gctx) })
	}
	g.Go(func() error { return keepCRLs(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error { return ops.Run(gctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}
