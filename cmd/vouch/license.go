package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"vouch/internal/database"
	"vouch/internal/directory"
	"vouch/internal/license"
	"vouch/internal/uzi"
)

type licenseConfig struct {
	Database  database.Config
	Directory directory.Config
	License   license.Config
}

// runLicense is `vouch license check UZI`: the decision login, vouching and
// attestation would make for a card holder now, and what it rests on, for
// support staff answering "why may I not vouch?". Exit status 0 allowed,
// 1 refused, 2 could not run.
func runLicense(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: vouch license check [-type Z] [-role 01.015] [-lang nl] UZI")
		return exitError(2)
	}
	fs := flag.NewFlagSet("license check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cardType := fs.String("type", "Z", "card type the card claims")
	role := fs.String("role", "", "role the card claims (default: whatever the register says)")
	lang := fs.String("lang", defaultLang(), "en or nl")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: vouch license check [-type Z] [-role 01.015] [-lang nl] UZI")
		return exitError(2)
	}
	var cfg licenseConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	db, err := database.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	var dir *directory.Client
	if cfg.Directory.URL != "" {
		if dir, err = directory.New(cfg.Directory); err != nil {
			return err
		}
	}
	d := license.New(cfg.License, dir, db, log)
	id := uzi.Identity{UZI: fs.Arg(0), CardType: uzi.CardType(*cardType), Role: *role}
	dec, err := d.Decide(ctx, id)
	if *role == "" && dec.Reason == license.ReasonCardMismatch && dec.Entry.Role != "" {
		id.Role = dec.Entry.Role // no role given: take the register's
		dec, err = d.Decide(ctx, id)
	}
	verdict := "REFUSED"
	if dec.Allowed {
		verdict = "ALLOWED"
	}
	fmt.Fprintf(stdout, "%s  %s\n%s\n", verdict, dec.Reason, dec.Reason.Text(*lang))
	if dec.Source != "" {
		fmt.Fprintf(stdout, "  source          %s as of %s\n", dec.Source, dec.AsOf.Format(time.RFC3339))
	}
	if dec.Entry.UZI != "" {
		fmt.Fprintf(stdout, "  register        card type %s, role %s, license %s\n", dec.Entry.CardType, dec.Entry.Role, dec.Entry.License)
	}
	if err != nil {
		fmt.Fprintf(stdout, "  cause           %v\n", err)
	}
	if !dec.Allowed {
		return exitError(1)
	}
	return nil
}
