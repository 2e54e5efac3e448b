// Command bench measures Vouch's speed targets as ratios against a bare
// reference measured in the same run, so that a slow or busy machine moves
// both and the ratio stays comparable between runs. It prints a table and
// writes the rows to a JSON file (make bench: bench/results.json).
//
// Targets are ratios (our cost over the reference's; lower is better) or,
// for rows without a reference, values; a row "meets" its target when it is
// at or under it. A throughput target (at_least) is a floor on the value
// instead, the reference's ratio beside it only to be read. Rows whose
// target is null are there to be read, not met.
//
// Every row is the median of at least -runs runs (3), its spread (the
// smallest and largest run) beside it. The bench is made of stages (the
// table in stages); -only (make bench BENCH=name,...) measures some of
// them, the others' rows are kept in the results file as they were. Each
// run of each stage samples the machine's load before and after, and its
// rows are marked busy when others used the machine meanwhile (measure.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// Row is one line of bench/results.json.
type Row struct {
	Name           string   `json:"name"`
	Stage          string   `json:"stage,omitempty"` // the stage that measures it
	Value          float64  `json:"value"`
	Unit           string   `json:"unit"`
	Reference      string   `json:"reference,omitempty"`
	ReferenceValue float64  `json:"reference_value,omitempty"`
	Ratio          float64  `json:"ratio,omitempty"`
	Target         *float64 `json:"target"`           // null: informational, nothing to meet
	Detail         string   `json:"detail,omitempty"` // e.g. which candidate was the worst
	// AtLeast: the target is a floor on Value (a throughput), whether or
	// not the row has a reference.
	AtLeast bool `json:"at_least,omitempty"`
	// Worst: Value is the largest run's, not the median (a memory bound).
	Worst bool `json:"worst,omitempty"`

	// Runs is how many runs the row is the median of (0: a row of an
	// earlier format, which did not say).
	Runs int `json:"runs"`
	// Spread is the smallest and largest run of what the target bounds:
	// the ratio for a row with a reference (unless AtLeast), else the value.
	Spread *Spread `json:"spread,omitempty"`
	// Busy: a run of the row was taken on a busy machine (BusyRuns of them).
	Busy     bool `json:"busy"`
	BusyRuns int  `json:"busy_runs,omitempty"`
	// Load is the machine during the row's stage.
	Load *Load `json:"load,omitempty"`
	// CPU is what each side used, as the row's detail says (the mean of
	// the runs).
	CPU map[string]float64 `json:"cpu,omitempty"`

	// Samples are a stage's runs of the row, before they are summarized.
	Samples []Sample `json:"-"`
}

// target makes a row's target.
func target(v float64) *float64 { return &v }

// stage is one part of the bench, chosen by its name with -only (make
// bench BENCH=name,...).
type stage struct {
	name, about string
	// optIn: measured only when named (it takes minutes, or kills servers).
	optIn bool
	// sampled: the stage measures its runs itself (each row's Samples, at
	// least bench.runs of them); else the bench calls it bench.runs times
	// and each row is the median of the calls.
	sampled bool
	// flags declares the stage's own flags (named after it; all stages'
	// flags exist whichever run) and returns its measurement.
	flags func(fs *flag.FlagSet) measure
}

// measure measures a stage once and returns its rows.
type measure func(ctx context.Context, b *bench) ([]Row, error)

// stages is every stage, in the order they run. A new stage is one line
// here, its flags and measurement in a file of its own.
func stages() []stage {
	p := &pipelineBench{}
	return []stage{
		{name: "verifier", about: "bundle verification against the bare signature checks, and the attackers' bundles", sampled: true, flags: verifierStage},
		{name: "registry", about: "the register's full, incremental and bucket syncs against a paged ldapsearch dump", sampled: true, flags: registryStage},
		{name: "registry-big", about: "the register's full sync of a million entries: its time and memory", sampled: true, flags: registryBigStage},
		{name: "backoffice", about: "sign-in and vouch latency with concurrent clinicians, a vouch against its bare cryptography", flags: backofficeStage},
		{name: "stats", about: "the statistics pages (auditors' and public) and CSV over a year of daily rows", flags: statsStage},
		{name: "pages", about: "every back-office page a person opens, p99 with 50 concurrent signed-in users over a year of statistics and a million audit rows", flags: pagesStage},
		{name: "uploads", about: "uploads end to end (ingest and store as processes, the load from a process of its own)", flags: p.uploadsStage},
		{name: "readers", about: "the store's readers into PostgreSQL against bare COPY", sampled: true, flags: p.readersStage},
		{name: "export", about: "the signed export of 14 days against COPY TO, and its memory", sampled: true, flags: p.exportStage},
		{name: "origin", about: "vouch cdn against nginx on the same export file", sampled: true, flags: p.originStage},
		{name: "transparency", about: "the transparency log's append rate against the peak vouch rate, and a vouch's p99 with the writer running", flags: transparencyStage},
		{name: "phonelog", about: "a phone's inclusion proof of its authorization, fetched from the origin and verified", flags: phonelogStage},
		{name: "cluster", about: "the R3 bus cluster and a PostgreSQL failover (one run: each kill is an event)", optIn: true, sampled: true, flags: p.clusterStage},
	}
}

// bench is what every stage is given: the run's settings, and what stages
// share (started once, on first use, and stopped at the end of the run).
type bench struct {
	vouch, dbURL, cardsDir string
	runs                   int // runs of every row (at least)

	pipe    *pipelineEnv // the pipeline stages' bus and database
	cleanup []func()
}

// close stops what the stages shared, last started first.
func (b *bench) close() {
	for i := len(b.cleanup) - 1; i >= 0; i-- {
		b.cleanup[i]()
	}
	b.cleanup = nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == loadgenCommand {
		os.Exit(loadgenMain(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	if err := runBench(context.Background(), os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// runBench parses args, measures the chosen stages, prints their rows to
// w and writes the results file.
func runBench(ctx context.Context, args []string, w io.Writer) error {
	return runStages(ctx, stages(), args, w)
}

// runStages is runBench of the stages all.
func runStages(ctx context.Context, all []stage, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	b := &bench{}
	out := fs.String("out", "bench/results.json", "the results file: the stages measured now replace their rows, the others' stay")
	fs.IntVar(&b.runs, "runs", 3, "runs of every row, at least: its value is their median, their spread beside it")
	fs.StringVar(&b.vouch, "vouch", "bin/vouch", "the vouch binary (make build)")
	fs.StringVar(&b.dbURL, "database", envOr("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"), "PostgreSQL server")
	fs.StringVar(&b.cardsDir, "cards", filepath.Join(envOr("VOUCH_STATE_DIR", ".vouch"), "cards"), "the test cards (make cards)")
	var names []string
	for _, s := range all {
		n := s.name
		if s.optIn {
			n += " (only when named)"
		}
		names = append(names, n)
	}
	only := fs.String("only", "", "the stages to measure, comma-separated: "+strings.Join(names, ", ")+
		"; empty: all but those only when named; all: every stage; none: rewrite the results file only")
	measures := make([]measure, len(all))
	for i, s := range all {
		measures[i] = s.flags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if b.runs < 1 {
		return errors.New("-runs: at least 1 (3 for a median beside its spread)")
	}
	chosen, err := selectStages(all, *only)
	if err != nil {
		return err
	}
	var old Results
	if raw, err := os.ReadFile(*out); err == nil {
		if old, err = readResults(raw); err != nil {
			return fmt.Errorf("%s: %w", *out, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}

	defer b.close()
	n := cores()
	first := sampleMachine()
	res := Results{Started: first.At.UTC(), GoOS: runtime.GOOS + "/" + runtime.GOARCH}
	// A stage that fails ends the run; the stages measured before it are
	// printed and written all the same (the failed one keeps its rows).
	var failed error
	for _, i := range chosen {
		st, rows, err := runStage(ctx, b, all[i], measures[i], n)
		if err != nil {
			failed = fmt.Errorf("%s: %w", all[i].name, err)
			break
		}
		res.Stages, res.Rows = append(res.Stages, st), append(res.Rows, rows...)
	}
	res.Machine = classify(first, sampleMachine(), n)
	if why := startBusy(first, n); why != "" {
		res.Machine.Busy, res.Machine.Why = true, strings.TrimPrefix(res.Machine.Why+"; "+why, "; ")
	}
	for _, s := range res.Stages {
		if s.Load.Busy {
			res.Machine.Busy = true
		}
	}

	if err := printRows(w, res.Rows); err != nil {
		return err
	}
	printLoads(w, res)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return errors.Join(failed, err)
	}
	return errors.Join(failed, writeResults(*out, keep(old, res)))
}

// selectStages is the indexes in all of the stages -only names, in the
// table's order.
func selectStages(all []stage, only string) ([]int, error) {
	var chosen []int
	switch only = strings.TrimSpace(only); only {
	case "none":
		return nil, nil
	case "", "all":
		for i, s := range all {
			if !s.optIn || only == "all" {
				chosen = append(chosen, i)
			}
		}
		return chosen, nil
	}
	want := map[string]bool{}
	for n := range strings.SplitSeq(only, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if !slices.ContainsFunc(all, func(s stage) bool { return s.name == n }) {
			var names []string
			for _, s := range all {
				names = append(names, s.name)
			}
			return nil, fmt.Errorf("-only: no stage %q (%s)", n, strings.Join(names, ", "))
		}
		want[n] = true
	}
	for i, s := range all {
		if want[s.name] {
			chosen = append(chosen, i)
		}
	}
	return chosen, nil
}

// printLoads prints the machine's load during each stage and the run.
func printLoads(w io.Writer, res Results) {
	line := func(name string, l Load) {
		state := "quiet"
		if l.Busy {
			state = "BUSY: " + l.Why
		}
		fmt.Fprintf(w, "%-13s load %.2f %.2f %.2f → %.2f %.2f %.2f, steal %.1f %%, others %.2f of %d cores: %s\n",
			name, l.Start[0], l.Start[1], l.Start[2], l.End[0], l.End[1], l.End[2], l.StealPct, l.OthersCores, l.Cores, state)
	}
	fmt.Fprintln(w)
	for _, s := range res.Stages {
		line(s.Name, s.Load)
	}
	line("whole run", res.Machine)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
