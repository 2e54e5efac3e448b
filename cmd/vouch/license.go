package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/uzi"
)

type licenseConfig struct {
	Database  database.Config
	Directory directory.Config
	License   license.Config
	// Professions that may vouch, as the verifiers are configured.
	Professions []string `env:"VOUCH_VOUCH_PROFESSIONS"`
}

const licenseUsage = "usage: vouch license check [-type Z -role 01.015] [-lang nl] [-v] UZI"

// runLicense is `vouch license check UZI`: may this card holder vouch now,
// and what the answer rests on, for support staff answering "why may I not
// vouch?". Without -type and -role it asks about the card holder as the
// register describes them; with them, about a card that claims so. Flags
// may come before or after the number. Exit status 0 may vouch, 1 may
// not, 2 could not run.
func runLicense(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && isHelp(args[0]) {
		fmt.Fprintln(stdout, licenseUsage)
		return nil
	}
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, licenseUsage)
		return exitError(2)
	}
	fs := flag.NewFlagSet("license check", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), licenseUsage); fs.PrintDefaults() }
	cardType := fs.String("type", "", "card type the card claims (default: the register's)")
	role := fs.String("role", "", "role the card claims (default: the register's)")
	lang := fs.String("lang", defaultLang(), "en or nl")
	verbose := fs.Bool("v", false, "also print the technical cause of an answer, after the reason")
	var pos []string
	for rest := args[1:]; ; {
		if err := parseFlags(fs, rest, stdout, stderr); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, licenseUsage)
		return exitError(2)
	}
	if !uzi.ValidUZINumber(pos[0]) {
		fmt.Fprintf(stderr, "vouch license check: %q is not a UZI number (nine digits)\n", pos[0])
		return exitError(2)
	}
	var cfg licenseConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	professions := cfg.Professions
	if len(professions) == 0 {
		professions = uzi.DefaultVouchProfessions()
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
	var dec license.Decision
	if *cardType == "" && *role == "" {
		dec, err = d.DecideHolder(ctx, pos[0])
	} else {
		if *cardType == "" {
			*cardType = string(uzi.CardCareProvider)
		}
		dec, err = d.Decide(ctx, uzi.Identity{UZI: pos[0], CardType: uzi.CardType(*cardType), Role: *role})
	}
	dec = dec.ForVouching(professions)
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
	if err != nil && *verbose {
		fmt.Fprintf(stdout, "  cause           %v\n", err)
	}
	if !dec.Allowed {
		return exitError(1)
	}
	return nil
}
