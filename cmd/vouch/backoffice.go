package main

import (
	"context"
	"crypto"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/trust"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// backofficeConfig is the configuration of `vouch backoffice`.
type backofficeConfig struct {
	Database   database.Config
	Bus        bus.Config
	HTTP       server.Config
	Ops        server.OpsConfig
	Trust      trust.Config
	Directory  directory.Config
	License    license.Config
	Sync       registrysync.Config // its CRL sources: the CRLs the sync stores are read from the mirror
	Backoffice backoffice.Config
}

// runBackoffice is `vouch backoffice`: the clinicians' web application
// alone, reading the register and the CRLs that a registry sync elsewhere
// keeps in the database.
func runBackoffice(ctx context.Context, log *slog.Logger) error {
	var cfg backofficeConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if err := cfg.HTTP.Validate(server.BackofficeLimits, "VOUCH_HTTP_"); err != nil {
		return err
	}
	tr, err := cfg.Trust.Load(time.Now())
	if err != nil {
		return err
	}
	in, err := openInfra(ctx, cfg.Database, cfg.Bus, log)
	if err != nil {
		return err
	}
	defer in.Close()
	// The sync runs elsewhere: its CRLs are read from the mirror's table.
	keepCRLs, crlsReady, err := serverRevocation(ctx, &tr, cfg.Trust, cfg.Sync, in.db, true, log)
	if err != nil {
		return err
	}
	checks := in.checks()
	checks["revocation"] = crlsReady
	srv := server.New(cfg.HTTP, log, listenerMetrics(in.reg, "backoffice"), checks)
	bo, err := startBackoffice(ctx, cfg.Backoffice, cfg.Directory, cfg.License, tr, in, srv, log)
	if err != nil {
		return err
	}
	defer bo.close()
	ops := newOps(cfg.Ops, log, checks, in.reg)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return keepCRLs(gctx) })
	g.Go(func() error { return bo.run(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error { return ops.Run(gctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}

// attestationSessions is how many HSM sessions the back office signs
// attestations on.
const attestationSessions = 4

// backofficeRole is a started back office: run it, close it after.
type backofficeRole struct {
	run   func(ctx context.Context) error
	close func()
}

// startBackoffice opens the attestation key, checks it is one the phones
// trust, and registers the back office's routes on srv.
func startBackoffice(ctx context.Context, cfg backoffice.Config, dcfg directory.Config, lcfg license.Config,
	tr protocol.Trust, in *infra, srv *server.Server, log *slog.Logger) (*backofficeRole, error) {
	origin, err := cfg.Validate()
	if err != nil {
		return nil, err
	}
	if tr.Profile.Name() == uzi.Production().Name() && origin.Scheme != "https" {
		return nil, fmt.Errorf("VOUCH_BACKOFFICE_ORIGIN must be https under the production card profile, got %q", cfg.Origin)
	}
	if cfg.AttestationURI == "" {
		return nil, errors.New("the back office countersigns with the attestation key: set VOUCH_ATTESTATION_URI (and VOUCH_HSM_PIN)")
	}
	verifier, err := protocol.NewVerifier(tr)
	if err != nil {
		return nil, err
	}
	var dir *directory.Client
	if dcfg.URL != "" {
		if dir, err = directory.New(dcfg); err != nil {
			return nil, err
		}
	} else {
		log.Warn("no register configured (VOUCH_REGISTRY_URL): licenses are decided from the mirror alone")
	}
	au, err := p11.ParseURI(cfg.AttestationURI)
	if err != nil {
		return nil, fmt.Errorf("VOUCH_ATTESTATION_URI: %w", err)
	}
	mod, err := p11.Open(moduleOf(au))
	if err != nil {
		return nil, fmt.Errorf("attestation key: %w", err)
	}
	// One HSM session per signer; a few let several vouches be
	// countersigned at once.
	var signers []crypto.Signer
	var opened []*p11.Signer
	closeAll := func() {
		for _, g := range opened {
			g.Close()
		}
		mod.Close()
	}
	for range attestationSessions {
		g, err := mod.Signer(au, cfg.HSMPIN)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("attestation key: %w", err)
		}
		opened = append(opened, g)
		signers = append(signers, g)
	}
	att := opened[0]
	// An attestation the phones do not trust would be refused by every one
	// of them: better not to start.
	kid, err := protocol.KeyID(att.Public())
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("attestation key: %w", err)
	}
	known := false
	for _, k := range tr.AttestationKeys {
		if id, err := protocol.KeyID(k); err == nil && subtle.ConstantTimeCompare(id[:], kid[:]) == 1 {
			known = true
		}
	}
	if !known {
		closeAll()
		return nil, errors.New("the attestation key (VOUCH_ATTESTATION_URI) is not among VOUCH_ATTESTATION_KEYS, which verifiers trust")
	}
	bucket, err := in.bus.ExpiringBucket(ctx, cfg.Bucket, "Vouched authorizations by phone code, for pickup", protocol.MaxValidity)
	if err != nil {
		closeAll()
		return nil, err
	}
	// The admin's settings (cmd/vouch/settings.go), in effect within
	// VOUCH_SETTINGS_REFRESH; the register's bound among them.
	rules, err := settingsRules(cfg.Settings, cfg.DailyQuota, lcfg, tr.Profile.VouchProfessions())
	if err != nil {
		closeAll()
		return nil, err
	}
	store, err := openSettings(ctx, cfg.Settings, rules, in.db, log)
	if err != nil {
		closeAll()
		return nil, err
	}
	lic := license.New(lcfg, dir, in.db, log).WithMaxMirrorAge(func() time.Duration { return store.Current().RegisterStaleness })
	svc, err := backoffice.New(cfg, backoffice.Deps{
		DB: in.db, Verifier: verifier, Licenses: lic, Attestation: signers, Publisher: bucket,
		Jurisdiction: tr.Jurisdiction, Professions: tr.Profile.VouchProfessions(), Log: log, Metrics: in.reg, Settings: store,
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	// The first admins (VOUCH_BOOTSTRAP_ADMINS), while no card holds admin.
	switch n, err := svc.Bootstrap(ctx); {
	case err != nil:
		closeAll()
		return nil, fmt.Errorf("VOUCH_BOOTSTRAP_ADMINS: %w", err)
	case n > 0:
		log.Info("back office: admins granted from VOUCH_BOOTSTRAP_ADMINS", "count", n)
	}
	svc.Register(srv.Echo())
	log.Info("back office ready", "origin", svc.Origin(), "daily_quota", cfg.DailyQuota)
	return &backofficeRole{run: func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return store.Run(gctx) })
		g.Go(func() error { return svc.Run(gctx, 30*time.Second) })
		return g.Wait()
	}, close: closeAll}, nil
}
