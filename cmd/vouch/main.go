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
//	vouch stats                count the days' statistics, publish the public ones
//	vouch federate             pull other sites' exports on a schedule
//	vouch federate pull        import another site's exports once
//	vouch migrate              apply the database migrations
//	vouch registry-sync        mirror the register into PostgreSQL
//	vouch license check UZI    may this card holder vouch now, and why (not)
//	vouch bundle verify FILE   say why a bundle is accepted or refused
//	vouch bundle issue         sign a bundle with a test card (test profiles only)
//	vouch audit verify         check the audit log's hash chain
//	vouch transparency ...     the transparency log: log, keygen, monitor, audit
//	vouch config check ROLE    check a role's environment without starting it
//	vouch demo env             make demo's environment, for eval in a shell
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
	"regexp"
	"strings"
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

// command is one of vouch's commands. Groups (license, bundle, audit,
// federate, demo) are listed by their subcommands: "license check".
type command struct {
	name    string
	summary string // its line in vouch's usage
	// help, for a command without flags, is what -h prints; such a
	// command takes no arguments. Commands with flags print their flags.
	help string
	run  func(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error
}

// commands is every command, in the order of the usage. A test walks it:
// each answers -h with its help and runs nothing.
var commands = []command{
	{"all", "run every role in one process (embedded bus)", helpAll,
		func(ctx context.Context, log *slog.Logger, _ []string, _, _ io.Writer) error { return runAll(ctx, log) }},
	{"backoffice", "the clinicians' web application (sign in with a card, vouch)", helpBackoffice,
		func(ctx context.Context, log *slog.Logger, _ []string, _, _ io.Writer) error {
			return runBackoffice(ctx, log)
		}},
	{"ingest", "the public phone API: pickup and upload", helpIngest,
		func(ctx context.Context, log *slog.Logger, _ []string, _, _ io.Writer) error {
			return runIngest(ctx, log)
		}},
	{"store", "readers: keys from the bus into PostgreSQL", helpStore,
		func(ctx context.Context, log *slog.Logger, _ []string, _, _ io.Writer) error {
			return runStore(ctx, log)
		}},
	{"aggregate", "build, sign and publish the export (-once, or every period)", "",
		func(ctx context.Context, log *slog.Logger, args []string, _, _ io.Writer) error {
			return runAggregate(ctx, log, args)
		}},
	{"cdn", "serve the export directory as the CDN's origin", helpCDN,
		func(ctx context.Context, log *slog.Logger, _ []string, _, _ io.Writer) error { return runCDN(ctx, log) }},
	{"cleanup", "delete keys, authorizations, logs and audit rows past retention", "",
		func(ctx context.Context, log *slog.Logger, args []string, _, _ io.Writer) error {
			return runCleanup(ctx, log, args)
		}},
	{"stats", "count the days' statistics, publish the public ones (-once, or a loop)", "", runStats},
	{"federate", "pull the sites of VOUCH_FEDERATE_SITES every VOUCH_FEDERATE_INTERVAL", "", runFederate},
	{"federate pull", "import another site's signed exports once", "", runFederate},
	{"migrate", "apply database migrations and exit", helpMigrate,
		func(ctx context.Context, log *slog.Logger, _ []string, _, _ io.Writer) error {
			return runMigrate(ctx, log)
		}},
	{"registry-sync", "mirror the register into PostgreSQL (-once, or a loop)", "", runRegistrySync},
	{"license check", "UZI  may this card holder vouch now, and why (not)", "", runLicense},
	{"bundle verify", "FILE  verify an authorization bundle and explain the verdict", "",
		func(ctx context.Context, _ *slog.Logger, args []string, stdout, stderr io.Writer) error {
			return runBundle(ctx, args, stdout, stderr)
		}},
	{"bundle issue", "sign a bundle with a test card (test profiles only)", "",
		func(ctx context.Context, _ *slog.Logger, args []string, stdout, stderr io.Writer) error {
			return runBundle(ctx, args, stdout, stderr)
		}},
	{"audit verify-download", "FILE SIG  check an audit trail download and its signature", "", runAuditGroup},
	{"audit verify", "check the audit log's hash chain", "",
		func(ctx context.Context, _ *slog.Logger, args []string, stdout, stderr io.Writer) error {
			return runAudit(ctx, args, stdout, stderr)
		}},
	{"config check", "ROLE  check a role's environment without starting it", "", runConfigCheck},
	{"transparency log", "append authorizations and audit heads to the transparency log", "", runTransparency},
	{"transparency keygen", "make the transparency log's Ed25519 key", "", runTransparency},
	{"transparency monitor", "URL|DIR  follow the published log: consistency, per-day counts", "", runTransparency},
	{"transparency audit", "URL|DIR  check every authorization and audit head is in the log", "", runTransparency},
	{"version", "print the version", "usage: vouch version\n",
		func(_ context.Context, _ *slog.Logger, _ []string, stdout, _ io.Writer) error {
			fmt.Fprintln(stdout, "vouch", version)
			return nil
		}},
}

// usage lists the commands.
func usage() string {
	var b strings.Builder
	b.WriteString("usage: vouch <command> [arguments]   (vouch <command> -h for its help)\n\ncommands:\n")
	for _, c := range commands {
		name, summary := c.name, c.summary
		// "UZI  may..." puts the argument after the name.
		if arg, rest, ok := strings.Cut(summary, "  "); ok {
			name, summary = name+" "+arg, rest
		}
		fmt.Fprintf(&b, "  %-20s %s\n", name, summary)
	}
	return b.String()
}

// lookup finds the command args name. Every command of a group takes the
// subcommand's name as its first argument and says itself what it does
// with an unknown one, so a group's name finds its first command.
func lookup(name string) (command, bool) {
	for _, c := range commands {
		if group, _, _ := strings.Cut(c.name, " "); group == name {
			return c, true
		}
	}
	return command{}, false
}

func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return exitError(2)
	}
	if isHelp(args[0]) {
		fmt.Fprint(stdout, usage())
		return nil
	}
	c, ok := lookup(args[0])
	if !ok {
		fmt.Fprintf(stderr, "vouch: unknown command %q\n\n%s", args[0], usage())
		return exitError(2)
	}
	// A command without flags answers -h here, before anything of it
	// runs; the others parse their flags first (parseFlags).
	if c.help != "" {
		if done, err := runPlain(c.name, c.help, args[1:], stdout, stderr); done {
			return err
		}
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: logLevel()}))
	err := c.run(ctx, log, args[1:], stdout, stderr)
	var exit exitError
	if err != nil && !errors.As(err, &exit) {
		return explainMissing(err)
	}
	return err
}

// demoHint says where make demo's values come from; empty in a production
// build, which has no demo.
var demoHint string

// varSources says where the value of a variable a command may miss comes
// from, for the message that names it.
var varSources = map[string]string{
	"VOUCH_UZI_ROOTS":              "the trusted UZI root CAs' PEM files",
	"VOUCH_UZI_CAS":                "the card-issuing CAs' PEM files, by card type",
	"VOUCH_UZI_CRLS":               "the CAs' CRL files",
	"VOUCH_UZI_CRL_SOURCES":        "the CRL files or URLs the registry sync fetches",
	"VOUCH_ATTESTATION_KEYS":       "the back end's attestation public keys (PEM)",
	"VOUCH_ATTESTATION_URI":        "the pkcs11: URI of the attestation key in the HSM",
	"VOUCH_TEST_CARD_GP":           "the GP test card's pkcs11: URI (bin/pkcs11-mocks -env prints every test card's)",
	"VOUCH_CARD_PROFILE":           "the card profile: test for the test cards",
	"VOUCH_CARD_PIN":               "the test card's PIN (123456 for every test card)",
	"VOUCH_HSM_PIN":                "the back end's token PIN (backend-1234 for the test token)",
	"VOUCH_REGISTRY_URL":           "the register's LDAP URL (bin/testregistry serve prints a test register's)",
	"VOUCH_REGISTRY_BIND_DN":       "the register's bind DN (bin/testregistry serve prints it)",
	"VOUCH_REGISTRY_BIND_PASSWORD": "the register's bind password (bin/testregistry serve prints it)",
	"NATS_URL":                     "the running system's bus (vouch all listens on it with VOUCH_BUS_LISTEN=1, VOUCH_BUS_PORT)",
	"VOUCH_BUS_TOKEN":              "the bus's token (vouch all's VOUCH_BUS_TOKEN or VOUCH_BUS_TOKEN_FILE)",
	"VOUCH_EXPORT_KEY_URIS":        "the pkcs11: URIs of the export signing keys",
	"VOUCH_EXPORT_DIR":             "the directory the aggregator writes and the origin serves",
	"VOUCH_EXPORT_S3_ENDPOINT":     "the URL of the S3-compatible store of VOUCH_EXPORT_TARGET (docs/operations.md, object storage)",
	"VOUCH_EXPORT_S3_ACCESS_KEY":   "the bucket's access key, best in a file named by VOUCH_EXPORT_S3_ACCESS_KEY_FILE",
	"VOUCH_EXPORT_S3_SECRET_KEY":   "the bucket's secret key, best in a file named by VOUCH_EXPORT_S3_SECRET_KEY_FILE",
	"VOUCH_BACKOFFICE_ORIGIN":      "the back office's origin as browsers see it",
}

// missingVar finds the variables a message names.
var missingVar = regexp.MustCompile(`\b(VOUCH_[A-Z0-9_]*[A-Z0-9]|NATS_URL)\b`)

// explainMissing adds to err, for each variable it names that is not set
// (neither it nor its _FILE), where its value comes from: a new user
// should not have to dig through .vouch/ for it.
func explainMissing(err error) error {
	var notes []string
	seen := map[string]bool{}
	for _, name := range missingVar.FindAllString(err.Error(), -1) {
		src, known := varSources[name]
		if !known || seen[name] || os.Getenv(name) != "" || os.Getenv(name+"_FILE") != "" {
			continue
		}
		seen[name] = true
		notes = append(notes, name+" is "+src)
	}
	if len(notes) == 0 {
		return err
	}
	note := strings.Join(notes, "; ")
	if demoHint != "" {
		note += "; " + demoHint
	} else {
		note += " (README.md, Configuration)"
	}
	return &explained{err: err, note: note}
}

// explained is an error with a note on where a missing value comes from.
type explained struct {
	err  error
	note string
}

func (e *explained) Error() string { return e.err.Error() + " — " + e.note }
func (e *explained) Unwrap() error { return e.err }

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("VOUCH_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}
