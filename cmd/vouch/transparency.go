package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/transparency"
)

// The transparency log's commands (docs/transparency.md):
//
//	vouch transparency log                the log writer (one at a time, by lease)
//	vouch transparency keygen             make the log's Ed25519 key
//	vouch transparency monitor URL|DIR    follow the published log, print per-day counts
//	vouch transparency audit URL|DIR      check the database against the log
const transparencyUsage = `usage: vouch transparency log
       vouch transparency keygen -origin ORIGIN -out FILE | -uri PKCS11-URI
       vouch transparency monitor [-key VKEY] -state FILE URL|DIR
       vouch transparency audit [-key VKEY] -state FILE [-grace D] URL|DIR

log      appends every stored authorization and, every
         VOUCH_TRANSPARENCY_AUDIT_INTERVAL, the audit chain's head to the log in
         VOUCH_TRANSPARENCY_DIR (a log/ directory inside the export directory the
         origin serves), signing checkpoints with the key read from
         VOUCH_TRANSPARENCY_KEY_FILE, or the Ed25519 key in the HSM that
         VOUCH_TRANSPARENCY_KEY_URI names, under VOUCH_TRANSPARENCY_ORIGIN and with
         the back end's P-256 HSM key VOUCH_TRANSPARENCY_HSM_KEY_URI, asking
         the witnesses of VOUCH_TRANSPARENCY_WITNESS_POLICY(_FILE) to cosign,
         and copying the log to the exports' bucket (VOUCH_EXPORT_TARGET).
keygen   writes a signer key to FILE (mode 0600) and prints the public key;
         with -uri, prints the public key of the HSM's Ed25519 key instead.
monitor  checks the published checkpoint's signature and its consistency with
         the checkpoint in the state file, checks the new entries against it,
         and prints the leaves per day. Exit 1 if the log is not append-only.
audit    also checks that every authorization in the database is in the log
         (inclusion proofs) and that every audit-chain head in the log is still
         the audit log's. Exit 1 on any problem.

The public key (VKEY, "<origin>+<hash>+<base64>") comes from -key or from
VOUCH_TRANSPARENCY_PUBLIC_KEY (or its _FILE).
`

type transparencyLogConfig struct {
	Database database.Config
	Writer   transparencyWriterConfig
	// Export gives the exports' bucket (VOUCH_EXPORT_TARGET and its S3
	// settings), where the log is mirrored too.
	Export export.Config
}

// transparencyWriterConfig is the log writer's configuration: `vouch
// transparency log` and `vouch all` (when VOUCH_TRANSPARENCY_DIR is set)
// load it.
type transparencyWriterConfig struct {
	Log transparency.Config
	// HSMKeyURI is the pkcs11: URI of the back end's P-256 key that signs
	// every checkpoint a second time; the token's PIN is VOUCH_HSM_PIN.
	HSMKeyURI string `env:"VOUCH_TRANSPARENCY_HSM_KEY_URI"`
	HSMPIN    string `env:"VOUCH_HSM_PIN"`
}

// startTransparency opens the HSM key and the exports' bucket (when
// VOUCH_EXPORT_TARGET names one) and makes the log writer; closeKeys
// releases the HSM session after the writer stopped.
func startTransparency(cfg transparencyWriterConfig, exp export.Config, db *database.DB, log *slog.Logger) (w *transparency.Writer, closeKeys func(), err error) {
	if err := errors.Join(checkTransparencyWriter(cfg, exp)...); err != nil {
		return nil, nil, err
	}
	key, closeHSM, err := openTransparencyKey(cfg.HSMKeyURI, cfg.HSMPIN)
	if err != nil {
		return nil, nil, fmt.Errorf("transparency HSM key: %w", err)
	}
	closeKeys = closeHSM
	opts := []transparency.Option{transparency.WithHSMKey(key)}
	if cfg.Log.KeyURI != "" {
		logKey, closeLog, err := openTransparencyKey(cfg.Log.KeyURI, cfg.HSMPIN)
		if err != nil {
			closeHSM()
			return nil, nil, fmt.Errorf("transparency log key (VOUCH_TRANSPARENCY_KEY_URI): %w", err)
		}
		closeKeys = func() { closeLog(); closeHSM() }
		opts = append(opts, transparency.WithLogKey(logKey))
	}
	if exp.Target != "" {
		c, bucket, prefix, err := export.NewS3Client(exp)
		if err != nil {
			closeKeys()
			return nil, nil, err
		}
		maxAge := exp.CacheMaxAge
		if maxAge < time.Second {
			maxAge = 8760 * time.Hour
		}
		opts = append(opts, transparency.WithMirror(transparency.NewS3Mirror(c, bucket, prefix, maxAge)))
	}
	w, err = transparency.NewWriter(cfg.Log, db, log.With("role", "transparency"), opts...)
	if err != nil {
		closeKeys()
		return nil, nil, err
	}
	log.Info("transparency log: writing", "dir", cfg.Log.Dir, "origin", cfg.Log.Origin,
		"log_vkey", w.LogVerifierKey(), "hsm_vkey", w.HSMVerifierKey(), "bucket", exp.Target != "", "witnesses", cfg.Log.WitnessPolicy != "")
	return w, closeKeys, nil
}

// openTransparencyKey opens the key a pkcs11: URI names, logged in with
// pin; closeKey releases its session and module.
func openTransparencyKey(uri, pin string) (key *p11.Signer, closeKey func(), err error) {
	u, err := p11.ParseURI(uri)
	if err != nil {
		return nil, nil, err
	}
	mod, err := p11.Open(moduleOf(u))
	if err != nil {
		return nil, nil, err
	}
	key, err = mod.Signer(u, pin)
	if err != nil {
		mod.Close()
		return nil, nil, err
	}
	return key, func() { key.Close(); mod.Close() }, nil
}

type transparencyKeyConfig struct {
	PublicKey string `env:"VOUCH_TRANSPARENCY_PUBLIC_KEY"`
}

// checkTransparencyLog is `vouch config check transparency` (the writer, its one server role): the
// checks startTransparency makes before it opens anything.
func checkTransparencyLog(ctx context.Context, load func(any) error) []error {
	var cfg transparencyLogConfig
	if err := load(&cfg); err != nil {
		return []error{err}
	}
	return append([]error{checkDatabase(cfg.Database)}, checkTransparencyWriter(cfg.Writer, cfg.Export)...)
}

// checkTransparencyWriter checks the writer's settings, its HSM key's URI
// and the bucket's settings when the exports go to one.
func checkTransparencyWriter(cfg transparencyWriterConfig, exp export.Config) []error {
	errs := []error{cfg.Log.Validate()}
	if cfg.HSMKeyURI == "" {
		errs = append(errs, errors.New("the transparency log's checkpoints are also signed by the back end's P-256 key: set VOUCH_TRANSPARENCY_HSM_KEY_URI (and VOUCH_HSM_PIN)"))
	} else if _, err := p11.ParseURI(cfg.HSMKeyURI); err != nil {
		errs = append(errs, fmt.Errorf("VOUCH_TRANSPARENCY_HSM_KEY_URI: %w", err))
	}
	if cfg.Log.KeyURI != "" {
		if _, err := p11.ParseURI(cfg.Log.KeyURI); err != nil {
			errs = append(errs, fmt.Errorf("VOUCH_TRANSPARENCY_KEY_URI: %w", err))
		}
	}
	if exp.Target != "" {
		if _, _, _, err := export.NewS3Client(exp); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func runTransparency(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		if len(args) == 0 {
			fmt.Fprint(stderr, transparencyUsage)
			return exitError(2)
		}
		fmt.Fprint(stdout, transparencyUsage)
		return nil
	}
	switch args[0] {
	case "log":
		return runTransparencyLog(ctx, log, args[1:], stdout, stderr)
	case "keygen":
		return runTransparencyKeygen(ctx, args[1:], stdout, stderr)
	case "monitor", "audit":
		return runTransparencyCheck(ctx, args[0], args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "vouch transparency: unknown command %q\n\n%s", args[0], transparencyUsage)
	return exitError(2)
}

func runTransparencyLog(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("transparency log", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), transparencyUsage) }
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vouch transparency log takes no arguments, got %q\n", fs.Args())
		return exitError(2)
	}
	var cfg transparencyLogConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	db, err := database.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	w, closeKeys, err := startTransparency(cfg.Writer, cfg.Export, db, log)
	if err != nil {
		return err
	}
	defer closeKeys()
	return w.Run(ctx)
}

func runTransparencyKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("transparency keygen", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), transparencyUsage); fs.PrintDefaults() }
	origin := fs.String("origin", "", "the log's origin line, e.g. vouch.example.nl/transparency/log (it never changes)")
	out := fs.String("out", "", "the file to write the signer key to (must not exist)")
	uri := fs.String("uri", "", "instead of -out: the pkcs11: URI of an Ed25519 key in the HSM (made there, e.g. by pkcs11-tool); its public key is printed (PIN: VOUCH_HSM_PIN)")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 || *origin == "" || (*out == "") == (*uri == "") {
		fmt.Fprint(stderr, transparencyUsage)
		return exitError(2)
	}
	if *uri != "" {
		return printHSMLogKey(ctx, *origin, *uri, stdout)
	}
	skey, vkey, err := note.GenerateKey(nil, *origin)
	if err != nil {
		return fmt.Errorf("transparency keygen: %w", err)
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("transparency keygen: %w", err)
	}
	if _, err := fmt.Fprintln(f, skey); err != nil {
		f.Close()
		return fmt.Errorf("transparency keygen: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("transparency keygen: %w", err)
	}
	fmt.Fprintln(stdout, vkey)
	return nil
}

// printHSMLogKey prints the verifier key of the log's Ed25519 key in the
// HSM under origin: what VOUCH_TRANSPARENCY_KEY_URI will sign with.
func printHSMLogKey(ctx context.Context, origin, uri string, stdout io.Writer) error {
	var cfg struct {
		PIN string `env:"VOUCH_HSM_PIN"`
	}
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	key, closeKey, err := openTransparencyKey(uri, cfg.PIN)
	if err != nil {
		return fmt.Errorf("transparency keygen: %w", err)
	}
	defer closeKey()
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok {
		return errors.New("transparency keygen: the key -uri names is not an Ed25519 key")
	}
	vkey, err := note.NewEd25519VerifierKey(origin, pub)
	if err != nil {
		return fmt.Errorf("transparency keygen: %w", err)
	}
	fmt.Fprintln(stdout, vkey)
	return nil
}

func runTransparencyCheck(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("transparency "+name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), transparencyUsage); fs.PrintDefaults() }
	key := fs.String("key", "", "the log's public key (default VOUCH_TRANSPARENCY_PUBLIC_KEY)")
	statePath := fs.String("state", "", "the file that keeps the last checkpoint seen and the counts (made on the first run)")
	grace := fs.Duration("grace", 10*time.Minute, "audit: authorizations and audit rows younger than this may not be in the log yet (more than VOUCH_TRANSPARENCY_AUDIT_INTERVAL)")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 || *statePath == "" {
		fmt.Fprint(stderr, transparencyUsage)
		return exitError(2)
	}
	if *key == "" {
		var kc transparencyKeyConfig
		if err := loadConfig(ctx, &kc); err != nil {
			return err
		}
		*key = kc.PublicKey
	}
	if *key == "" {
		fmt.Fprintln(stderr, "vouch transparency: the log's public key: -key or VOUCH_TRANSPARENCY_PUBLIC_KEY")
		return exitError(2)
	}
	v, err := transparency.Verifier(*key)
	if err != nil {
		return err
	}
	src, err := transparency.OpenSource(fs.Arg(0))
	if err != nil {
		return err
	}
	st, err := transparency.LoadState(*statePath)
	if err != nil {
		return err
	}
	var (
		cp  *transparency.Checkpoint
		rep *transparency.AuditReport
	)
	if name == "monitor" {
		cp, err = transparency.Follow(ctx, src, v, st, false, nil)
	} else {
		var cfg auditConfig
		if err = loadConfig(ctx, &cfg); err != nil {
			return err
		}
		db, err := database.Open(ctx, cfg.Database)
		if err != nil {
			return err
		}
		defer db.Close()
		rep, err = transparency.Audit(ctx, db, src, v, st, *grace, time.Now())
		if rep != nil {
			cp = rep.Checkpoint
		}
	}
	var fork *transparency.ForkError
	switch {
	case errors.As(err, &fork):
		// The state keeps the checkpoint seen before: the fork stays
		// provable, and the next run says it again.
		fmt.Fprintln(stderr, err)
		return exitError(1)
	case err != nil:
		fmt.Fprintf(stderr, "vouch transparency %s: %v\n", name, err)
		return exitError(1)
	}
	if err := st.Save(*statePath); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "log %s: %d leaves, root %x, consistent with the checkpoint seen before\n", v.Name(), cp.Size, cp.Root)
	days := make([]string, 0, len(st.Days))
	for d := range st.Days {
		days = append(days, d)
	}
	slices.Sort(days)
	fmt.Fprintf(stdout, "%-10s  %14s  %11s\n", "day", "authorizations", "audit heads")
	for _, d := range days {
		fmt.Fprintf(stdout, "%-10s  %14d  %11d\n", d, st.Days[d].Authorizations, st.Days[d].AuditHeads)
	}
	if rep == nil {
		return nil
	}
	fmt.Fprintf(stdout, "audit: %d authorizations proven in the log (%d younger than %s not yet), %d audit-chain heads match the audit log's %d rows (%d pruned since), %d repeated leaves\n",
		rep.Authorizations, rep.Recent, *grace, rep.Heads, rep.AuditRows, rep.HeadsPruned, rep.Repeats)
	if len(rep.Problems) > 0 {
		fmt.Fprintf(stdout, "%d problems:\n  %s\n", len(rep.Problems), strings.Join(rep.Problems, "\n  "))
		return exitError(1)
	}
	return nil
}
