// Command vouch runs Vouch's server roles as subcommands of one binary, and
// the tools operators and support staff need:
//
//	vouch all                  every role in one process, with an embedded bus
//	vouch backoffice           the clinicians' web application
//	vouch ingest               the public phone API (pickup, upload)
//	vouch store                readers: bus → PostgreSQL
//	vouch aggregate            the signed export of the last days, to the origin
//	vouch cdn                  the export's static origin
//	vouch cleanup              delete what is kept no longer (-once, or a loop)
//	vouch federate pull        import another site's exports
//	vouch migrate              apply the database migrations
//	vouch registry-sync        mirror the register into PostgreSQL
//	vouch license check UZI    may this card holder vouch now, and why (not)
//	vouch bundle verify FILE   say why a bundle is accepted or refused
//	vouch bundle issue         sign a bundle with a test card (test profiles only)
//	vouch audit verify         check the audit log's hash chain
//	vouch version
//
// Configuration comes from the environment (see README.md); every variable
// may instead be read from a file named by the same name plus _FILE.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := realMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	var exit exitError
	switch {
	case errors.As(err, &exit):
		os.Exit(int(exit))
	case err != nil:
		// Refusals return exitError(1) themselves; any other error means
		// the command could not run.
		fmt.Fprintln(os.Stderr, "vouch:", err)
		os.Exit(2)
	}
}

// exitError ends the program with a status and no further message; the
// command has already said what there was to say. Statuses: 0 done (or
// help shown), 1 refused, 2 could not run.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

const usage = `usage: vouch <command> [arguments]

commands:
  all                  run every role in one process (embedded bus)
  backoffice           the clinicians' web application (sign in with a card, vouch)
  ingest               the public phone API: pickup and upload
  store                readers: keys from the bus into PostgreSQL
  aggregate            build, sign and publish the export (-once, or every period)
  cdn                  serve the export directory as the CDN's origin
  cleanup              delete keys, authorizations, logs and audit rows past retention
  federate pull        import another site's signed exports
  migrate              apply database migrations and exit
  registry-sync        mirror the register into PostgreSQL (-once, or a loop)
  license check UZI    may this card holder vouch now, and why (not)
  bundle verify FILE   verify an authorization bundle and explain the verdict
  bundle issue         sign a bundle with a test card (test profiles only)
  audit verify         check the audit log's hash chain
  version              print the version
`

func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError(2)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: logLevel()}))
	if _, plain := plainHelp[args[0]]; plain {
		if done, err := runPlain(args[0], args[1:], stdout, stderr); done {
			return err
		}
	}
	switch args[0] {
	case "all":
		return runAll(ctx, log)
	case "backoffice":
		return runBackoffice(ctx, log)
	case "ingest":
		return runIngest(ctx, log)
	case "store":
		return runStore(ctx, log)
	case "aggregate":
		return runAggregate(ctx, log, args[1:])
	case "cdn":
		return runCDN(ctx, log)
	case "cleanup":
		return runCleanup(ctx, log, args[1:])
	case "federate":
		return runFederate(ctx, log, args[1:], stdout, stderr)
	case "migrate":
		return runMigrate(ctx, log)
	case "registry-sync":
		return runRegistrySync(ctx, log, args[1:], stdout, stderr)
	case "license":
		return runLicense(ctx, log, args[1:], stdout, stderr)
	case "bundle":
		return runBundle(ctx, args[1:], stdout, stderr)
	case "audit":
		return runAudit(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "vouch", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "vouch: unknown command %q\n\n%s", args[0], usage)
	return exitError(2)
}

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("VOUCH_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}
