package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/registry"
)

// registryBench measures a full sync of a generated register of n entries
// against a plain paged ldapsearch dump of the same entries from the same
// slapd, the sync's peak memory, and (with changes > 0) an incremental sync
// of that many changes. Each sync runs as its own `vouch registry-sync`
// process, so its peak RSS is its own.
type registryBench struct {
	vouch   string // path of the vouch binary
	dbURL   string // server URL; a database of its own is made and dropped
	n       int
	rounds  int
	changes int
}

// registryResult is each round's measurement (runs of the rows).
type registryResult struct {
	syncSeconds, dumpSeconds, peakMB, incrSeconds, reconcileSeconds []float64
}

// registryStage is the stage "registry": the syncs of a generated register
// of -registry entries, each measured -runs times.
func registryStage(fs *flag.FlagSet) measure {
	n := fs.Int("registry", 100_000, "entries of the generated register (stage registry)")
	return func(ctx context.Context, b *bench) ([]Row, error) {
		r, err := registryBench{vouch: b.vouch, dbURL: b.dbURL, n: *n, rounds: b.runs, changes: 100}.run(ctx)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("registry full sync, %dk entries", *n/1000)
		throughput := make([]float64, len(r.syncSeconds))
		for i, s := range r.syncSeconds {
			throughput[i] = float64(*n) / s
		}
		return []Row{
			{Name: name, Unit: "s", Reference: dumpReference, Target: target(1.25), Samples: ratioSamples(r.syncSeconds, r.dumpSeconds)},
			{Name: name + ": throughput", Unit: "entries/s", Samples: valueSamples(throughput)},
			{Name: name + ": peak RSS", Unit: "MB", Worst: true, Samples: valueSamples(r.peakMB)},
			{Name: "registry incremental sync, 100 changes", Unit: "s", Target: target(0.25), Samples: valueSamples(r.incrSeconds)},
			{Name: fmt.Sprintf("registry reconciliation of the license bucket, %dk entries", *n/1000), Unit: "s",
				Reference: "full sync of the same register (registry-sync -once -full)", Target: target(1.5),
				Samples: ratioSamples(r.reconcileSeconds, r.syncSeconds)},
		}, nil
	}
}

// registryBigStage is the stage "registry-big": a full sync of a register
// of -registry-big entries, its time and memory.
func registryBigStage(fs *flag.FlagSet) measure {
	n := fs.Int("registry-big", 1_000_000, "entries of the register (stage registry-big)")
	return func(ctx context.Context, b *bench) ([]Row, error) {
		r, err := registryBench{vouch: b.vouch, dbURL: b.dbURL, n: *n, rounds: b.runs}.run(ctx)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("registry full sync, %dk entries", *n/1000)
		return []Row{
			{Name: name + ": peak RSS", Unit: "MB", Target: target(150), Worst: true, Samples: valueSamples(r.peakMB)},
			{Name: name, Unit: "s", Reference: dumpReference, Target: target(1.25), Samples: ratioSamples(r.syncSeconds, r.dumpSeconds)},
		}, nil
	}
}

// dumpReference is the full sync's reference.
const dumpReference = "paged ldapsearch dump of the same entries, same slapd"

func (b registryBench) run(ctx context.Context) (registryResult, error) {
	var r registryResult
	dir, err := os.MkdirTemp("", "vouch-bench-registry-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	ldif := filepath.Join(dir, "register.ldif")
	f, err := os.Create(ldif)
	if err != nil {
		return r, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := registry.Generate(w, b.n, 2026, nil); err != nil {
		return r, err
	}
	if err := w.Flush(); err != nil {
		return r, err
	}
	f.Close()
	srv, err := registry.NewServer(filepath.Join(dir, "slapd"), registry.ServerOptions{SeedFiles: []string{ldif}})
	if err != nil {
		return r, err
	}
	if err := srv.Start(ctx); err != nil {
		return r, err
	}
	defer srv.Stop()

	dbURL, drop, err := benchDatabase(ctx, b.dbURL)
	if err != nil {
		return r, err
	}
	defer drop()
	env := append(os.Environ(),
		"DATABASE_URL="+dbURL, "VOUCH_BUS_DIR="+filepath.Join(dir, "bus"),
		"VOUCH_REGISTRY_URL="+srv.URL, "VOUCH_REGISTRY_BIND_DN="+srv.BindDN, "VOUCH_REGISTRY_BIND_PASSWORD="+srv.BindPassword,
		"VOUCH_LOG_LEVEL=warn")

	ldapsearch, err := registry.LookTool("ldapsearch")
	if err != nil {
		return r, err
	}
	attrs := []string{"vouchUziNumber", "vouchBigNumber", "vouchCardType", "vouchRoleCode", "vouchAgbCode", "vouchLicenseStatus",
		"vouchLicenseValidFrom", "vouchLicenseValidUntil", "vouchCertSerial", "entryUUID"}
	dump := append([]string{"-x", "-LLL", "-H", srv.URL, "-D", srv.BindDN, "-w", srv.BindPassword, "-b", "ou=people," + srv.BaseDN,
		"-E", "pr=1000/noprompt", "(objectClass=vouchCareProvider)"}, attrs...)
	var syncs, dumps, peaks []float64
	for i := 0; i < b.rounds; i++ {
		d, _, err := timed(ctx, nil, ldapsearch, dump...)
		if err != nil {
			return r, fmt.Errorf("ldapsearch: %w", err)
		}
		s, rss, err := timed(ctx, env, b.vouch, "registry-sync", "-once", "-full")
		if err != nil {
			return r, err
		}
		dumps, syncs, peaks = append(dumps, d), append(syncs, s), append(peaks, rss)
	}
	r.dumpSeconds, r.syncSeconds, r.peakMB = dumps, syncs, peaks
	for i := 0; i < b.rounds; i++ {
		s, _, err := timed(ctx, env, b.vouch, "registry-sync", "-once", "-reconcile")
		if err != nil {
			return r, err
		}
		r.reconcileSeconds = append(r.reconcileSeconds, s)
	}
	if ok, err := mirrorHas(ctx, dbURL, b.n); err != nil || !ok {
		return r, fmt.Errorf("the mirror does not hold the %d entries (%v)", b.n, err)
	}
	for i := 0; b.changes > 0 && i < b.rounds; i++ {
		if err := changeEntries(ctx, ldif, srv, b.changes, i); err != nil {
			return r, err
		}
		s, _, err := timed(ctx, env, b.vouch, "registry-sync", "-once")
		if err != nil {
			return r, err
		}
		r.incrSeconds = append(r.incrSeconds, s)
	}
	return r, nil
}

// timed runs a command to completion and returns its wall time and peak RSS
// in MB; its output is discarded unless it fails.
func timed(ctx context.Context, env []string, name string, args ...string) (float64, float64, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stderr = &out
	d, rss, err := runPeak(cmd)
	if err != nil {
		return 0, 0, fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args[:min(2, len(args))], " "), err, out.String())
	}
	return d, rss, nil
}

// benchDatabase makes a database of its own on the server of url.
func benchDatabase(ctx context.Context, url string) (string, func(), error) {
	name := fmt.Sprintf("vouch_bench_%d", os.Getpid())
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "", nil, err
	}
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return "", nil, fmt.Errorf("PostgreSQL (run make deps): %w", err)
	}
	if _, err := conn.Exec(ctx, "drop database if exists "+name); err != nil {
		conn.Close(ctx)
		return "", nil, err
	}
	conn.Close(ctx)
	u, err := neturl.Parse(url)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	own := u.String()
	if err := database.EnsureDatabase(ctx, own); err != nil {
		return "", nil, err
	}
	drop := func() {
		c, err := pgx.ConnectConfig(context.Background(), admin)
		if err == nil {
			c.Exec(context.Background(), "drop database if exists "+name+" with (force)")
			c.Close(context.Background())
		}
	}
	return own, drop, nil
}

func mirrorHas(ctx context.Context, url string, n int) (bool, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	var got int
	if err := conn.QueryRow(ctx, `select count(*) from registry_entries`).Scan(&got); err != nil {
		return false, err
	}
	return got > n*9/10 && got <= n, nil // malformed generated entries, if any, are skipped
}

// changeEntries suspends or revokes n entries of the register, the other
// of the two in each round.
func changeEntries(ctx context.Context, ldif string, srv *registry.Server, n, round int) error {
	f, err := os.Open(ldif)
	if err != nil {
		return err
	}
	defer f.Close()
	var mods strings.Builder
	sc := bufio.NewScanner(f)
	rng := rand.New(rand.NewPCG(1, 2))
	for picked := 0; sc.Scan() && picked < n; {
		line := sc.Text()
		if !strings.HasPrefix(line, "dn: ") || rng.IntN(50) != 0 {
			continue
		}
		status := "suspended"
		if (picked+round)%2 == 1 {
			status = "revoked"
		}
		fmt.Fprintf(&mods, "%s\nchangetype: modify\nreplace: vouchLicenseStatus\nvouchLicenseStatus: %s\n\n", line, status)
		picked++
	}
	ldapmodify, err := registry.LookTool("ldapmodify")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, ldapmodify, "-x", "-H", srv.URL, "-D", srv.BindDN, "-w", srv.BindPassword)
	cmd.Stdin = strings.NewReader(mods.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ldapmodify: %w\n%s", err, out)
	}
	return nil
}
