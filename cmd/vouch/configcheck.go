package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sethvargo/go-envconfig"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/federate"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/trust"
	"github.com/vouch-nl/vouch/internal/uzi"
)

const configCheckUsage = `usage: vouch config check ROLE

Reads ROLE's configuration from the environment as vouch ROLE would
(every variable, or its _FILE) and runs the checks ROLE makes before it
starts — addresses, limits, durations, the bus's and the database's URLs,
the trust files, the export target — without connecting to anything or
listening. It also names every VOUCH_ variable that is set but that ROLE
does not read (a typo, or another role's variable). Prints each problem
naming its variable and exits 1; prints "ok" and exits 0 when there is none.

Roles: %s
`

// alwaysRead are variables read outside the role's configuration struct:
// the log level by main, and make's state directory, which the Makefile
// exports to everything it runs (only vouch demo env reads it).
var alwaysRead = []string{"VOUCH_LOG_LEVEL", "VOUCH_STATE_DIR"}

// roleCheck loads a role's configuration through load and returns what is
// wrong with it, each error naming its variable.
type roleCheck func(ctx context.Context, load func(target any) error) []error

// roleChecks are the server roles `vouch config check` knows, each the
// checks its run function makes before it starts anything.
func roleChecks() map[string]roleCheck {
	return map[string]roleCheck{
		"all":           checkAll,
		"backoffice":    checkBackoffice,
		"ingest":        checkIngest,
		"store":         checkStore,
		"aggregate":     checkAggregate,
		"cdn":           checkCDN,
		"cleanup":       checkCleanup,
		"stats":         checkStats,
		"federate":      checkFederate,
		"registry-sync": checkRegistrySync,
		"transparency":  checkTransparencyLog,
		"migrate": func(ctx context.Context, load func(any) error) []error {
			var cfg migrateConfig
			if err := load(&cfg); err != nil {
				return []error{err}
			}
			return []error{checkDatabase(cfg.Database)}
		},
	}
}

// runConfigCheck is `vouch config check ROLE`.
func runConfigCheck(ctx context.Context, _ *slog.Logger, args []string, stdout, stderr io.Writer) error {
	checks := roleChecks()
	roles := make([]string, 0, len(checks))
	for r := range checks {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	usage := fmt.Sprintf(configCheckUsage, strings.Join(roles, ", "))
	switch {
	case len(args) >= 2 && args[0] == "check" && slices.ContainsFunc(args[1:], isHelp),
		len(args) == 1 && isHelp(args[0]):
		fmt.Fprint(stdout, usage)
		return nil
	case len(args) != 2 || args[0] != "check":
		fmt.Fprint(stderr, usage)
		return exitError(2)
	}
	role := args[1]
	check, ok := checks[role]
	if !ok {
		fmt.Fprintf(stderr, "vouch config check: unknown role %q\n\n%s", role, usage)
		return exitError(2)
	}
	problems := checkRole(ctx, role, check, os.Environ())
	for _, p := range problems {
		fmt.Fprintf(stdout, "vouch config check %s: %v\n", role, p)
	}
	if len(problems) > 0 {
		return exitError(1)
	}
	fmt.Fprintf(stdout, "vouch config check %s: ok\n", role)
	return nil
}

// checkRole runs check, recording every variable the role's configuration
// reads, and adds a problem for each variable of environ that looks like
// Vouch's but that the role never read.
func checkRole(ctx context.Context, role string, check roleCheck, environ []string) []error {
	read := map[string]bool{}
	for _, k := range alwaysRead {
		read[k] = true
	}
	if role == "aggregate" || role == "all" {
		for _, v := range faultVars() {
			read[v] = true
		}
	}
	load := func(target any) (err error) {
		// fileLookuper panics on a variable set twice or an unreadable
		// _FILE, as loadConfig recovers.
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("configuration: %v", r)
			}
		}()
		l := &recordingLookuper{read: read}
		if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: target, Lookuper: l}); err != nil {
			// envconfig names the field; the variable is the one it
			// looked up last, whose value it could not parse.
			return fmt.Errorf("configuration: %s: %w", l.last, err)
		}
		return nil
	}
	var problems []error
	for _, err := range check(ctx, load) {
		if err == nil {
			continue
		}
		// A joined error is several problems: one line each.
		var joined interface{ Unwrap() []error }
		if errors.As(err, &joined) && errors.Unwrap(err) == nil {
			problems = append(problems, joined.Unwrap()...)
			continue
		}
		problems = append(problems, explainMissing(err))
	}
	var unread []string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if value == "" || !strings.HasPrefix(name, "VOUCH_") && name != "NATS_URL" && name != "DATABASE_URL" &&
			name != "NATS_URL_FILE" && name != "DATABASE_URL_FILE" {
			continue
		}
		if read[name] || read[strings.TrimSuffix(name, "_FILE")] {
			continue
		}
		unread = append(unread, name)
	}
	sort.Strings(unread)
	for _, name := range unread {
		problems = append(problems, fmt.Errorf("%s is set, but vouch %s does not read it (a typo, or another role's variable)", name, role))
	}
	return problems
}

// recordingLookuper is fileLookuper, noting every name asked for and the
// last one.
type recordingLookuper struct {
	read map[string]bool
	last string
}

func (l *recordingLookuper) Lookup(key string) (string, bool) {
	l.read[key] = true
	l.last = key
	return fileLookuper{}.Lookup(key)
}

// checkDatabase parses DATABASE_URL as the pool will, hosts and
// target_session_attrs included, without connecting.
func checkDatabase(cfg database.Config) error {
	url := cfg.URL
	if url == "" {
		url = database.DefaultURL
	}
	if _, err := pgxpool.ParseConfig(url); err != nil {
		// pgx quotes the URL, password and all: say only why.
		var pe interface{ Unwrap() error }
		if errors.As(err, &pe) && pe.Unwrap() != nil {
			err = pe.Unwrap()
		}
		return fmt.Errorf("DATABASE_URL does not parse: %v", err)
	}
	return nil
}

func checkBus(cfg bus.Config) error { return cfg.Validate() }

// checkTrust loads the trust files as every verifier does at start.
func checkTrust(cfg trust.Config) (protocol.Trust, error) {
	tr, err := cfg.Load(time.Now())
	if err != nil {
		return tr, err
	}
	if _, err := protocol.NewVerifier(tr); err != nil {
		return tr, err
	}
	return tr, nil
}

func checkAll(ctx context.Context, load func(any) error) []error {
	var cfg allConfig
	if err := load(&cfg); err != nil {
		return []error{err}
	}
	syncRuns := cfg.Directory.URL != ""
	errs := []error{
		checkDatabase(cfg.Database), checkBus(cfg.Bus),
		cfg.HTTP.Validate(server.BackofficeLimits, "VOUCH_HTTP_"),
		checkRevocationConfig(cfg.Trust, cfg.Sync, syncRuns),
		cfg.IngestLimits.Or(server.PhoneAPILimits).Validate("VOUCH_INGEST_"),
		cfg.Store.Validate(), cfg.Retention.Validate(), cfg.Stats.Validate(),
	}
	tr, err := checkTrust(cfg.Trust)
	errs = append(errs, err)
	if _, err := cfg.Ingest.Validate(); err != nil {
		errs = append(errs, err)
	}
	if syncRuns {
		errs = append(errs, cfg.Directory.Validate())
	}
	if cfg.Backoffice.AttestationURI != "" && err == nil {
		errs = append(errs, checkBackofficeOrigin(cfg.Backoffice, tr), checkSettings(cfg.Backoffice, cfg.License, tr))
	}
	// As startPipeline: an export key and a directory or a bucket start
	// the aggregator.
	if len(cfg.Export.KeyURIs) > 0 && (cfg.Export.Dir != "" || cfg.Export.Target != "") {
		errs = append(errs, cfg.Export.Validate())
	}
	if cfg.CDN.Dir == "" {
		cfg.CDN.Dir = cfg.Export.Dir
	}
	if cfg.CDN.Dir != "" {
		errs = append(errs, cfg.CDN.Validate(), checkCDNLimit(cfg.CDNLimit))
	}
	if len(cfg.Federate.Sites) > 0 {
		errs = append(errs, checkFederateSites(cfg.Federate)...)
	}
	// As startPipeline: a log directory starts the transparency writer.
	if cfg.Transparency.Log.Dir != "" {
		errs = append(errs, checkTransparencyWriter(cfg.Transparency, cfg.Export)...)
	}
	return errs
}

func checkBackoffice(ctx context.Context, load func(any) error) []error {
	var cfg backofficeConfig
	if err := load(&cfg); err != nil {
		return []error{err}
	}
	errs := []error{checkDatabase(cfg.Database), checkBus(cfg.Bus), cfg.HTTP.Validate(server.BackofficeLimits, "VOUCH_HTTP_")}
	tr, err := checkTrust(cfg.Trust)
	errs = append(errs, err)
	if err == nil {
		errs = append(errs, checkBackofficeOrigin(cfg.Backoffice, tr), checkSettings(cfg.Backoffice, cfg.License, tr))
	}
	if cfg.Backoffice.AttestationURI == "" {
		errs = append(errs, errors.New("the back office countersigns with the attestation key: set VOUCH_ATTESTATION_URI (and VOUCH_HSM_PIN)"))
	}
	if cfg.Directory.URL != "" {
		errs = append(errs, cfg.Directory.Validate())
	}
	return errs
}

// checkBackofficeOrigin is startBackoffice's check of the origin.
func checkBackofficeOrigin(cfg backoffice.Config, tr protocol.Trust) error {
	origin, err := cfg.Validate()
	if err != nil {
		return err
	}
	if tr.Profile.Name() == uzi.Production().Name() && origin.Scheme != "https" {
		return fmt.Errorf("VOUCH_BACKOFFICE_ORIGIN must be https under the production card profile, got %q", cfg.Origin)
	}
	return nil
}

func checkIngest(ctx context.Context, load func(any) error) []error {
	var cfg ingestConfig
	if err := load(&cfg); err != nil {
		return []error{err}
	}
	_, perr := server.ParseProxies("VOUCH_TRUSTED_PROXIES", cfg.HTTP.TrustedProxies)
	_, terr := checkTrust(cfg.Trust)
	_, ierr := cfg.Ingest.Validate()
	return []error{checkBus(cfg.Bus), perr, terr, ierr, cfg.Limits.Or(server.PhoneAPILimits).Validate("VOUCH_INGEST_")}
}

func checkStore(ctx context.Context, load func(any) error) []error {
	var cfg storeConfig
	if err := load(&cfg); err != nil {
		return []error{err}
	}
	return []error{checkDatabase(cfg.Database), checkBus(cfg.Bus), cfg.Store.Validate()}
}

func checkAggregate(ctx context.Context, load func(any) error) []error {
	var cfg aggregateConfig
	if err := load(&cfg); err != nil {
		return []error{err}
	}
	return []error{checkDatabase(cfg.Database), cfg.Export.Validate()}
}

func checkCDN(ctx context.Context, load func(any) error) []error {
	var cfg cdnConfig
	if err := load(&cfg); err != nil {
		return []error{err}
	}
	return []error{cfg.CDN.Validate(), checkCDNLimit(cfg.Limit)}
}

func checkCDNLimit(l cdnLimit) error {
	if l.MaxConns < 0 {
		return fmt.Errorf("VOUCH_CDN_MAX_CONNS must be positive, got %d", l.MaxConns)
	}
	return nil
}

func checkCleanup(ctx context.Context, load func(any) error) []error {
	var cfg cleanupConfig
	if err := load(&cfg); err != nil {
		return []error{err}
	}
	return []error{checkDatabase(cfg.Database), cfg.Retention.Validate(), cfg.Settings.Validate()}
}

func checkFederate(ctx context.Context, load func(any) error) []error {
	var cfg federateConfig
	if err := load(&cfg); err != nil {
		return []error{err}
	}
	errs := []error{checkDatabase(cfg.Database)}
	if len(cfg.Federate.Sites) == 0 {
		errs = append(errs, errors.New("vouch federate pulls the sites of VOUCH_FEDERATE_SITES, and none is set"))
	}
	return append(errs, checkFederateSites(cfg.Federate)...)
}

// checkFederateSites validates the federation settings and reads every
// site's key file, as the role does at start.
func checkFederateSites(cfg federate.Config) []error {
	if err := cfg.Validate(); err != nil {
		return []error{err}
	}
	_, err := federateSites(cfg.Sites)
	return []error{err}
}

func checkRegistrySync(ctx context.Context, load func(any) error) []error {
	var cfg registrySyncConfig
	if err := load(&cfg); err != nil {
		return []error{err}
	}
	errs := []error{checkDatabase(cfg.Database), checkBus(cfg.Bus), cfg.Directory.Validate()}
	if len(cfg.Sync.CRLSources) > 0 {
		// The CRLs fetched are checked against the CAs of the trust files.
		_, err := cfg.Trust.Load(time.Now())
		errs = append(errs, err)
	}
	return errs
}
