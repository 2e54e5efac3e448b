package main

import (
	"flag"
	"fmt"
	"io"
)

// Every command answers -h with its help on standard output, status 0, and
// does nothing else: a support engineer reading about `vouch migrate` must
// not migrate a database by asking.

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// The help of the commands without flags.
const (
	helpAll = `usage: vouch all

Runs every server role in one process — the register's sync, revocation,
the back office, the phone API, the readers, the aggregator, the origin and
the cleanup, and with VOUCH_FEDERATE_SITES the pulls of other sites' exports
(vouch federate -h) — with an embedded bus. Configuration comes from the
environment (README.md, Configuration). It needs a revocation source
(VOUCH_UZI_CRL_SOURCES or VOUCH_UZI_CRLS) and stops at start when the trust
configuration does not load.
`
	helpBackoffice = `usage: vouch backoffice

Serves the clinicians' back office: sign-in with a UZI card through the
Vouch card extension, the vouch page, sessions in PostgreSQL. It needs the
attestation key (VOUCH_ATTESTATION_URI, VOUCH_HSM_PIN), the back office's
origin as browsers see it (VOUCH_BACKOFFICE_ORIGIN; https under the
production profile) and a revocation source; the register's sync runs
elsewhere (vouch registry-sync). ` + "`vouch all`" + ` runs it too.
`
	helpIngest = `usage: vouch ingest

Serves the public phone API on VOUCH_INGEST_ADDR: pickup of vouched
bundles and upload of keys, each verified again (trust from VOUCH_UZI_*,
VOUCH_ATTESTATION_KEYS) and put on the bus (NATS_URL, or an embedded one)
before it is answered. It has no database: licenses, authorizations and
CRLs come over the bus. Per-IP limits: VOUCH_INGEST_RATE and
VOUCH_INGEST_RATE_BURST. docs/ingest.md.
`
	helpStore = `usage: vouch store

Runs the readers that take the uploaded keys from the bus (NATS_URL, or an
embedded one) and store them in PostgreSQL (DATABASE_URL) in batches
(VOUCH_STORE_BATCH, VOUCH_STORE_BATCH_WAIT). Run several processes to share
the work.
`
	helpCDN = `usage: vouch cdn

Serves the directory vouch aggregate writes (its VOUCH_EXPORT_DIR, named
here VOUCH_CDN_DIR) as the CDN's origin, on VOUCH_CDN_ADDR.
`
	helpMigrate = `usage: vouch migrate

Creates the database named by DATABASE_URL when it is missing, applies the
migrations, and exits. Safe from several machines at once.
`
)

// runPlain checks the arguments of a command without flags: -h prints its
// help, anything else is a usage error (status 2). It returns done when
// the command must not run.
func runPlain(cmd, help string, args []string, stdout, stderr io.Writer) (done bool, err error) {
	switch {
	case len(args) == 0:
		return false, nil
	case len(args) == 1 && isHelp(args[0]):
		fmt.Fprint(stdout, help)
		return true, nil
	}
	fmt.Fprintf(stderr, "vouch %s takes no arguments, got %q\n\n%s", cmd, args, help)
	return true, exitError(2)
}

// parseFlags parses args into fs. -h anywhere before "--" prints fs's help
// on standard output and ends the command with status 0 before anything
// runs; a bad flag says why on standard error, status 2.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitError(0)
		}
	}
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	return nil
}
