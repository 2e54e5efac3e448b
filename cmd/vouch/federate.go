package main

import (
	"context"
	"crypto/ecdsa"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/federate"
	"github.com/vouch-nl/vouch/internal/trust"
)

// federateConfig is the configuration of `vouch federate`.
type federateConfig struct {
	Database database.Config
	Federate federate.Config
}

const federateUsage = "usage: vouch federate pull -url BASE -key PEMFILE[,PEMFILE] -site NAME"

// runFederate is `vouch federate pull`: import another site's signed
// exports once (run it from cron, or every period from a supervisor).
func runFederate(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && isHelp(args[0]) {
		fmt.Fprintln(stdout, federateUsage)
		return nil
	}
	if len(args) == 0 || args[0] != "pull" {
		fmt.Fprintln(stderr, federateUsage)
		return exitError(2)
	}
	fs := flag.NewFlagSet("federate pull", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), federateUsage); fs.PrintDefaults() }
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
