package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/trust"
)

// allConfig is the configuration of `vouch all`: every role's, together.
type allConfig struct {
	Database   database.Config
	Bus        bus.Config
	HTTP       server.Config
	Trust      trust.Config
	Directory  directory.Config
	Sync       registrysync.Config
	License    license.Config
	Backoffice backoffice.Config
}

// runAll starts everything in one process: migrations, the embedded bus, the
// trust configuration and the HTTP edge. Roles join it as they are built.
func runAll(ctx context.Context, log *slog.Logger) error {
	var cfg allConfig
	if err := loadConfig(ctx, &cfg); err != nil {
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
	srv := server.New(cfg.HTTP, log, in.reg, checks)
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
	if syncRuns {
		s, err := newSyncer(ctx, cfg.Directory, cfg.Sync, cfg.Trust, tr.CAs(), in, log)
		if err != nil {
			return err
		}
		g.Go(func() error { return s.Run(gctx) })
	}
	g.Go(func() error { return keepCRLs(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}
