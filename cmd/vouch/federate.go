package main

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/federate"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/trust"
)

// federateConfig is the configuration of `vouch federate`.
type federateConfig struct {
	Database database.Config
	Ops      server.OpsConfig
	Federate federate.Config
}

const (
	federatePullUsage = "usage: vouch federate pull -url BASE -key PEMFILE[,PEMFILE] -site NAME"
	federateUsage     = `usage: vouch federate
       vouch federate pull -url BASE -key PEMFILE[,PEMFILE] -site NAME

vouch federate pulls the sites of VOUCH_FEDERATE_SITES ("NAME URL
KEYFILE[,KEYFILE]" entries separated by ';') every VOUCH_FEDERATE_INTERVAL
(5m), with its metrics on the operations listener (VOUCH_OPS_LISTEN);
vouch all does the same when VOUCH_FEDERATE_SITES is set. Several copies
may run: a file is imported once. vouch federate pull imports one site once
(from cron, or by hand).
`
)

// runFederate is `vouch federate`: the role that pulls the configured
// sites on a schedule; `vouch federate pull` imports one site's signed
// exports once.
func runFederate(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		return runFederateRole(ctx, log)
	case len(args) == 1 && isHelp(args[0]):
		fmt.Fprint(stdout, federateUsage)
		return nil
	case args[0] != "pull":
		fmt.Fprint(stderr, federateUsage)
		return exitError(2)
	}
	fs := flag.NewFlagSet("federate pull", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), federatePullUsage); fs.PrintDefaults() }
	base := fs.String("url", "", "the site's export base URL (where its index.txt is)")
	keys := fs.String("key", "", "PEM file(s) of the site's export public key, comma-separated during its rotation")
	name := fs.String("site", "", "the site's name, stored as its keys' origin")
	if err := parseFlags(fs, args[1:], stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 || *base == "" || *keys == "" || *name == "" {
		fs.Usage()
		return exitError(2)
	}
	if err := federate.ValidName(*name); err != nil {
		fmt.Fprintln(stderr, err)
		return exitError(2)
	}
	var pubs []*ecdsa.PublicKey
	for _, f := range splitList(*keys) {
		k, err := trust.ReadECPublicKey(f)
		if err != nil {
			return err
		}
		pubs = append(pubs, k)
	}
	var cfg federateConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if err := cfg.Federate.Validate(); err != nil {
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
	p, err := federate.New(db, nil, cfg.Federate)
	if err != nil {
		return err
	}
	res, err := p.Pull(ctx, federate.Site{Name: *name, BaseURL: *base, Keys: pubs})
	fmt.Fprintf(stdout, "site %s: %d files listed, %d imported, %d new keys, %d revised, %d refused, %d left for the next pull\n",
		*name, res.Listed, res.Imported, res.Keys, res.Revised, res.Refused, res.Deferred)
	if err != nil {
		fmt.Fprintln(stderr, "vouch federate pull:", err)
		return exitError(1)
	}
	return nil
}

// runFederateRole is `vouch federate` without arguments: pull every site
// of VOUCH_FEDERATE_SITES every VOUCH_FEDERATE_INTERVAL until stopped.
func runFederateRole(ctx context.Context, log *slog.Logger) error {
	var cfg federateConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if err := cfg.Federate.Validate(); err != nil {
		return err
	}
	if len(cfg.Federate.Sites) == 0 {
		return errors.New("vouch federate pulls the sites of VOUCH_FEDERATE_SITES, and none is set")
	}
	sites, err := federateSites(cfg.Federate.Sites)
	if err != nil {
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
	run, err := startFederate(cfg.Federate, sites, db, reg, log)
	if err != nil {
		return err
	}
	ops := newOps(cfg.Ops, log, map[string]server.Checker{"database": server.CheckFunc(db.Ping)}, reg)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return run(gctx) })
	g.Go(func() error { return ops.Run(gctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}

// federateSites reads the public keys of the configured sites: a key file
// that does not load stops the start, not the first pull.
func federateSites(cfgs federate.Sites) ([]federate.Site, error) {
	var sites []federate.Site
	for _, c := range cfgs {
		s := federate.Site{Name: c.Name, BaseURL: c.URL}
		for _, f := range c.KeyFiles {
			k, err := trust.ReadECPublicKey(f)
			if err != nil {
				return nil, fmt.Errorf("VOUCH_FEDERATE_SITES: site %s: %w", c.Name, err)
			}
			s.Keys = append(s.Keys, k)
		}
		sites = append(sites, s)
	}
	return sites, nil
}

// startFederate makes the scheduled puller of sites on db, its metrics on
// reg; the function it returns pulls until its context ends. `vouch all`
// calls it too.
func startFederate(cfg federate.Config, sites []federate.Site, db *database.DB, reg prometheus.Registerer,
	log *slog.Logger) (func(context.Context) error, error) {
	p, err := federate.New(db, nil, cfg)
	if err != nil {
		return nil, err
	}
	m := federate.NewMetrics(reg)
	log = log.With("role", "federate")
	log.Info("federate: pulling sites", "sites", len(sites), "interval", cfg.Interval)
	return func(ctx context.Context) error { return p.Run(ctx, sites, cfg.Interval, m, log) }, nil
}

func splitList(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}
