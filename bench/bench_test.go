package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The bench's own logic: how runs become a row, when a machine is busy,
// the results file, and which stages a run measures. No database, no
// server: these run in milliseconds.

func TestMid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{7}, 7},
		{[]float64{3, 1, 2}, 2},
		{[]float64{10, 1, 2, 3}, 2.5}, // the middle two's mean, not the upper
		{[]float64{5, 5, 1, 9, 5}, 5},
	} {
		if got := mid(tc.in); got != tc.want {
			t.Errorf("mid(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	in := []float64{3, 1, 2}
	mid(in)
	if diff := cmp.Diff([]float64{3, 1, 2}, in); diff != "" {
		t.Errorf("mid sorted its argument (-want +got):\n%s", diff)
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   Row
		want Row
	}{{
		name: "a ratio row: each run's ratio, its median and spread",
		in: Row{Name: "r", Reference: "bare", Target: target(1.5), Samples: []Sample{
			{Value: 10, ReferenceValue: 5, Ratio: 2}, {Value: 30, ReferenceValue: 10, Ratio: 3}, {Value: 12, ReferenceValue: 10, Ratio: 1.2}}},
		// The ratio is the median of the runs' ratios (2), not the ratio
		// of the medians (12/10).
		want: Row{Name: "r", Reference: "bare", Target: target(1.5), Value: 12, ReferenceValue: 10, Ratio: 2,
			Spread: &Spread{Min: 1.2, Max: 3}, Runs: 3},
	}, {
		name: "a value row: the spread of the values",
		in:   Row{Name: "v", Target: target(20), Samples: valueSamples([]float64{25, 11, 14})},
		want: Row{Name: "v", Target: target(20), Value: 14, Spread: &Spread{Min: 11, Max: 25}, Runs: 3},
	}, {
		name: "a throughput floor with a reference: the spread of the values it bounds",
		in:   Row{Name: "t", Reference: "bare", AtLeast: true, Samples: rateSamples([]float64{100, 300, 200}, []float64{400, 600, 600})},
		want: Row{Name: "t", Reference: "bare", AtLeast: true, Value: 200, ReferenceValue: 600, Ratio: 3,
			Spread: &Spread{Min: 100, Max: 300}, Runs: 3},
	}, {
		name: "a memory bound: the worst run",
		in:   Row{Name: "m", Worst: true, Samples: valueSamples([]float64{90, 120, 100})},
		want: Row{Name: "m", Worst: true, Value: 120, Spread: &Spread{Min: 90, Max: 120}, Runs: 3},
	}, {
		name: "a busy run makes the row busy, counted",
		in: Row{Name: "b", Samples: []Sample{{Value: 1}, {Value: 2, Busy: true}, {Value: 3},
			{Value: 4, Busy: true}}},
		want: Row{Name: "b", Value: 2.5, Spread: &Spread{Min: 1, Max: 4}, Runs: 4, Busy: true, BusyRuns: 2},
	}, {
		name: "CPU: the mean of the runs",
		in: Row{Name: "c", Samples: []Sample{{Value: 1, CPU: map[string]float64{"ingest": 100, "gen": 10}},
			{Value: 1, CPU: map[string]float64{"ingest": 200, "gen": 20}}}},
		want: Row{Name: "c", Value: 1, Spread: &Spread{Min: 1, Max: 1}, Runs: 2, CPU: map[string]float64{"ingest": 150, "gen": 15}},
	}, {
		name: "a row of one run without samples",
		in:   Row{Name: "one", Value: 4, ReferenceValue: 2, Ratio: 2, Reference: "x"},
		want: Row{Name: "one", Value: 4, ReferenceValue: 2, Ratio: 2, Reference: "x", Spread: &Spread{Min: 2, Max: 2}, Runs: 1},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, summarize(tc.in)); diff != "" {
				t.Errorf("summarize (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMergeRuns(t *testing.T) {
	t.Parallel()
	runs := [][]Row{
		{{Name: "a", Value: 1}, {Name: "b", Value: 10, Busy: true}},
		{{Name: "b", Value: 20}, {Name: "a", Value: 2}, {Name: "c", Value: 5}},
		{{Name: "a", Samples: valueSamples([]float64{3, 4})}},
	}
	want := []Row{
		{Name: "a", Value: 1, Samples: valueSamples([]float64{1, 2, 3, 4})},
		{Name: "b", Value: 10, Busy: true, Samples: []Sample{{Value: 10, Busy: true}, {Value: 20}}},
		{Name: "c", Value: 5, Samples: valueSamples([]float64{5})},
	}
	if diff := cmp.Diff(want, mergeRuns(runs)); diff != "" {
		t.Errorf("mergeRuns (-want +got):\n%s", diff)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		row  Row
		want string
	}{
		{Row{Runs: 3, Value: 10}, "-"},
		{Row{Runs: 3, Value: 10, Target: target(20)}, "pass"},
		{Row{Runs: 3, Value: 20, Target: target(20)}, "pass"},
		{Row{Runs: 3, Value: 21, Target: target(20)}, "FAIL"},
		{Row{Runs: 3, Value: 21, Target: target(20), Busy: true}, "busy: FAIL"},
		{Row{Runs: 3, Value: 1, Target: target(20), Busy: true}, "busy: pass"},
		// A ratio row is met by its ratio, whatever its value.
		{Row{Runs: 3, Value: 500, Reference: "r", Ratio: 1.1, Target: target(1.25)}, "pass"},
		{Row{Runs: 3, Value: 5, Reference: "r", Ratio: 1.3, Target: target(1.25)}, "FAIL"},
		// A throughput floor by its value, whatever its ratio.
		{Row{Runs: 3, Value: 3000, Reference: "r", Ratio: 6, Target: target(3000), AtLeast: true}, "pass"},
		{Row{Runs: 3, Value: 2999, Reference: "r", Ratio: 1, Target: target(3000), AtLeast: true}, "FAIL"},
		{Row{Runs: 0, Value: 1, Target: target(20)}, "kept"},
	} {
		if got := tc.row.status(); got != tc.want {
			t.Errorf("%+v: status %q, want %q", tc.row, got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	// Ten seconds on 2 cores: 2000 jiffies.
	at := func(total, idle, steal uint64, ours float64, load float64) machineSample {
		return machineSample{Total: total, Idle: idle, Steal: steal, Ours: ours, Load1: load}
	}
	for _, tc := range []struct {
		name        string
		a, b        machineSample
		busy        bool
		why, others string
	}{
		{name: "quiet: the bench used all it took", a: at(0, 0, 0, 0, 0.1), b: at(2000, 400, 0, 16, 3.5)},
		{name: "others used 0.2 of 2 cores: not yet busy", a: at(0, 0, 0, 0, 0.1), b: at(2000, 1400, 0, 4, 0.5)},
		{name: "others used a core", a: at(0, 0, 0, 0, 0.1), b: at(2000, 400, 0, 6, 1), busy: true, why: "others used 1.00 of 2 cores"},
		{name: "steal over 3 %", a: at(0, 0, 0, 0, 0.1), b: at(2000, 1000, 100, 9, 1), busy: true, why: "steal 5.0 %"},
		{name: "steal of 3 %: not busy", a: at(0, 0, 0, 0, 0.1), b: at(2000, 1000, 60, 9.4, 1)},
		{name: "both", a: at(0, 0, 0, 0, 0.1), b: at(2000, 0, 200, 0, 1), busy: true, why: "others used 1.80 of 2 cores, steal 10.0 %"},
		// Our own load average at the end is no sign of others.
		{name: "a high load average at the end alone", a: at(0, 0, 0, 0, 0.1), b: at(2000, 0, 0, 20, 9)},
		{name: "no /proc/stat", a: at(0, 0, 0, 0, 0), b: at(0, 0, 0, 5, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := tc.a, tc.b
			a.At, b.At = t0, t0.Add(10*time.Second)
			l := classify(a, b, 2)
			if l.Busy != tc.busy || l.Why != tc.why {
				t.Errorf("busy %v %q, want %v %q (%+v)", l.Busy, l.Why, tc.busy, tc.why, l)
			}
		})
	}
	if got := startBusy(machineSample{Load1: 2.5}, 2); got == "" {
		t.Error("a load average of 2.5 on 2 cores at the start is not busy")
	}
	if got := startBusy(machineSample{Load1: 1.9}, 2); got != "" {
		t.Errorf("a load average of 1.9 on 2 cores at the start is busy: %s", got)
	}
}

func TestMerged(t *testing.T) {
	t.Parallel()
	ls := []Load{
		{Start: [3]float64{1, 1, 1}, End: [3]float64{2, 1, 1}, StealPct: 1, OthersCores: 0.1, Cores: 2},
		{Start: [3]float64{2, 1, 1}, End: [3]float64{3, 2, 1}, StealPct: 0.5, OthersCores: 0.9, Cores: 2, Busy: true, Why: "others used 0.90 of 2 cores"},
		{Start: [3]float64{3, 2, 1}, End: [3]float64{4, 2, 1}, Cores: 2},
	}
	want := Load{Start: [3]float64{1, 1, 1}, End: [3]float64{4, 2, 1}, StealPct: 1, OthersCores: 0.9, Cores: 2, Busy: true,
		Why: "run 2: others used 0.90 of 2 cores"}
	if diff := cmp.Diff(want, merged(ls)); diff != "" {
		t.Errorf("merged (-want +got):\n%s", diff)
	}
}

func TestProcParsers(t *testing.T) {
	t.Parallel()
	if l1, l5, l15 := parseLoadavg([]byte("9.25 4.37 2.01 3/412 19108\n")); l1 != 9.25 || l5 != 4.37 || l15 != 2.01 {
		t.Errorf("parseLoadavg: %v %v %v", l1, l5, l15)
	}
	total, idle, steal := parseProcStat([]byte("cpu  100 5 50 1000 20 1 2 30 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n"))
	if total != 1208 || idle != 1020 || steal != 30 {
		t.Errorf("parseProcStat: %d %d %d, want 1208 1020 30", total, idle, steal)
	}
	if total, _, _ := parseProcStat([]byte("intr 1 2 3\n")); total != 0 {
		t.Errorf("parseProcStat of no cpu line: %d", total)
	}
	// A command name may hold spaces and parentheses: the fields are
	// after the last one.
	st, ok := parseProcStatLine([]byte("4242 (a (b) c) S 17 4242 4242 0 -1 4194304 1 0 0 0 250 50 30 20 20 0 1 0 9 0 0\n"))
	if !ok || st.comm != "a (b) c" || st.ppid != 17 || st.cpu != 3 || st.waited != 0.5 {
		t.Errorf("parseProcStatLine: %+v %v", st, ok)
	}
	if _, ok := parseProcStatLine([]byte("4242 (x S 1")); ok {
		t.Error("parseProcStatLine of a cut line: ok")
	}
	// This process's own line parses, and its parent is its parent.
	self, ok := readProcStat(os.Getpid())
	if !ok || self.ppid != os.Getppid() {
		t.Errorf("readProcStat(self): %+v %v, want ppid %d", self, ok, os.Getppid())
	}
}

func TestDescends(t *testing.T) {
	t.Parallel()
	procs := map[int]procStat{10: {ppid: 1}, 11: {ppid: 10}, 12: {ppid: 11}, 20: {ppid: 1}, 21: {ppid: 20}}
	for _, tc := range []struct {
		pid, anc int
		want     bool
	}{{11, 10, true}, {12, 10, true}, {21, 10, false}, {10, 10, false}, {99, 10, false}} {
		if got := descends(procs, tc.pid, tc.anc); got != tc.want {
			t.Errorf("descends(%d, %d) = %v", tc.pid, tc.anc, got)
		}
	}
}

func TestResultsRoundTrip(t *testing.T) {
	t.Parallel()
	load := &Load{Start: [3]float64{1, 2, 3}, End: [3]float64{4, 5, 6}, StealPct: 0.5, OthersCores: 0.3, Cores: 2, Busy: true, Why: "others used 0.30 of 2 cores"}
	res := Results{
		Machine: *load,
		Started: time.Date(2026, 12, 7, 19, 0, 0, 0, time.UTC),
		GoOS:    "linux/amd64",
		Stages:  []StageLoad{{Name: "uploads", Load: *load, Started: time.Date(2026, 12, 7, 19, 1, 0, 0, time.UTC), Seconds: 61.5}},
		Rows: []Row{
			{Name: "u", Stage: "uploads", Value: 2000, Unit: "uploads/s", Reference: "bare", ReferenceValue: 12000, Ratio: 6, Target: target(3000),
				AtLeast: true, Runs: 3, Spread: &Spread{Min: 1900, Max: 2100}, Busy: true, BusyRuns: 1, Load: load,
				CPU: map[string]float64{cpuIngest: 400, cpuGen: 90}, Detail: "d"},
			{Name: "m", Stage: "export", Value: 43, Unit: "MB", Target: target(64), Worst: true, Runs: 3, Spread: &Spread{Min: 40, Max: 43}},
			{Name: "i", Stage: "backoffice", Value: 400, Unit: "vouches/s", Runs: 3, Spread: &Spread{Min: 380, Max: 460}},
		},
	}
	path := filepath.Join(t.TempDir(), "results.json")
	if err := writeResults(path, res); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readResults(raw)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(res, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	// What results.json says of a row, by name: what issue 24 asks of it.
	for _, key := range []string{`"value"`, `"target"`, `"reference"`, `"spread"`, `"runs"`, `"busy"`, `"loadavg_start"`, `"steal_pct"`, `"cpu"`} {
		if !bytes.Contains(raw, []byte(key)) {
			t.Errorf("results.json holds no %s", key)
		}
	}
	// An informational row says so: its target is null, not absent.
	if !bytes.Contains(raw, []byte(`"target": null`)) {
		t.Error("an informational row's target is not null")
	}
	for _, bad := range []string{`{"rows": [], "extra": 1}`, `{"rows": []} {}`, `[{"name": 1}]`} {
		if _, err := readResults([]byte(bad)); err == nil {
			t.Errorf("readResults(%s): no error", bad)
		}
	}
}

func TestReadResultsEarlierFormat(t *testing.T) {
	t.Parallel()
	got, err := readResults([]byte(`[{"name": "bundle verify (card cached)", "value": 168.7, "unit": "µs", "reference": "raw", "reference_value": 170.5, "ratio": 0.99, "target": 1.2},
		{"name": "vouches per second", "value": 400, "unit": "vouches/s", "target": null}]`))
	if err != nil {
		t.Fatal(err)
	}
	want := Results{Rows: []Row{
		{Name: "bundle verify (card cached)", Value: 168.7, Unit: "µs", Reference: "raw", ReferenceValue: 170.5, Ratio: 0.99, Target: target(1.2)},
		{Name: "vouches per second", Value: 400, Unit: "vouches/s"},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("earlier format (-want +got):\n%s", diff)
	}
	if got.Rows[0].status() != "kept" {
		t.Errorf("a row of the earlier format: %q, want kept (its runs unknown)", got.Rows[0].status())
	}
}

func TestKeep(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	old := Results{Started: t0, GoOS: "linux/amd64", Machine: Load{Cores: 2},
		Stages: []StageLoad{{Name: "verifier"}, {Name: "uploads"}, {Name: "origin"}},
		Rows: []Row{
			{Name: "v1", Stage: "verifier", Runs: 5},
			{Name: "u1", Stage: "uploads", Runs: 3},
			{Name: "u-gone", Stage: "uploads", Runs: 3}, // a row the stage no longer makes
			{Name: "o1", Stage: "origin", Runs: 3},
			{Name: "legacy", Value: 1},   // the earlier format: no stage
			{Name: "legacy-2", Value: 2}, // measured again now, by name
		}}
	now := Results{Started: t0.Add(time.Hour), Machine: Load{Cores: 2, Busy: true},
		Stages: []StageLoad{{Name: "uploads"}},
		Rows:   []Row{{Name: "u1", Stage: "uploads", Runs: 3, Value: 2}, {Name: "u2", Stage: "uploads", Runs: 3}, {Name: "legacy-2", Stage: "uploads", Runs: 3}}}
	got := keep(old, now)
	want := Results{Started: t0.Add(time.Hour), Machine: Load{Cores: 2, Busy: true},
		Stages: []StageLoad{{Name: "uploads"}, {Name: "verifier"}, {Name: "origin"}},
		Rows: []Row{
			{Name: "v1", Stage: "verifier", Runs: 5},
			{Name: "u1", Stage: "uploads", Runs: 3, Value: 2}, {Name: "u2", Stage: "uploads", Runs: 3}, {Name: "legacy-2", Stage: "uploads", Runs: 3},
			{Name: "o1", Stage: "origin", Runs: 3},
			{Name: "legacy", Value: 1},
		}}
	// The measured stage's rows where its first earlier row was, even
	// when a stage's row came before in the file.
	old2 := Results{Rows: []Row{{Name: "legacy-2", Value: 2}, {Name: "v1", Stage: "verifier", Runs: 5}, {Name: "new-stage-x"}}}
	now2 := Results{Stages: []StageLoad{{Name: "uploads"}, {Name: "fresh"}},
		Rows: []Row{{Name: "u1", Stage: "uploads"}, {Name: "legacy-2", Stage: "uploads"}, {Name: "f", Stage: "fresh"}}}
	want2 := []Row{{Name: "u1", Stage: "uploads"}, {Name: "legacy-2", Stage: "uploads"}, {Name: "v1", Stage: "verifier", Runs: 5},
		{Name: "new-stage-x"}, {Name: "f", Stage: "fresh"}}
	if diff := cmp.Diff(want2, keep(old2, now2).Rows); diff != "" {
		t.Errorf("keep's places (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("keep (-want +got):\n%s", diff)
	}
	// Nothing measured (-only none): the file's run stays as it was.
	same := keep(old, Results{Started: t0.Add(2 * time.Hour), GoOS: "x"})
	if diff := cmp.Diff(old, same, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("keep of nothing measured (-want +got):\n%s", diff)
	}
	// A stage the file did not have: its rows come after.
	first := keep(Results{}, now)
	if diff := cmp.Diff(now.Rows, first.Rows); diff != "" {
		t.Errorf("keep into an empty file (-want +got):\n%s", diff)
	}
}

// testStages are stages of no cost, for the selection and the run.
func testStages(calls *atomic.Int32) []stage {
	m := func(fs *flag.FlagSet) measure {
		return func(ctx context.Context, b *bench) ([]Row, error) {
			n := calls.Add(1)
			return []Row{{Name: "x", Value: float64(n), Unit: "s", Target: target(100), CPU: map[string]float64{"server": 12, "gen": 7}}}, nil
		}
	}
	return []stage{{name: "a", flags: m}, {name: "b", flags: m}, {name: "slow", optIn: true, flags: m}, {name: "c", flags: m}}
}

func TestSelectStages(t *testing.T) {
	t.Parallel()
	all := testStages(new(atomic.Int32))
	for _, tc := range []struct {
		only string
		want []int
		err  string
	}{
		{only: "", want: []int{0, 1, 3}}, // the opt-in stage only when named
		{only: " ", want: []int{0, 1, 3}},
		{only: "all", want: []int{0, 1, 2, 3}},
		{only: "none"},
		{only: "c,a", want: []int{0, 3}}, // the table's order, not the list's
		{only: "slow", want: []int{2}},
		{only: "a,,a, b ", want: []int{0, 1}},
		{only: "a,nope", err: `no stage "nope"`},
		{only: "A", err: `no stage "A"`},
	} {
		got, err := selectStages(all, tc.only)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("selectStages(%q): error %v, want %q", tc.only, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("selectStages(%q): %v", tc.only, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("selectStages(%q) (-want +got):\n%s", tc.only, diff)
		}
	}
}

// TestStagesTable checks the real table: names unique and not a word of
// -only's own, and every stage's flags declared on one set without a
// clash (a clash panics: flag redefined).
func TestStagesTable(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	for _, s := range stages() {
		if s.name == "" || s.name == "all" || s.name == "none" || strings.ContainsAny(s.name, ", ") || seen[s.name] {
			t.Errorf("stage name %q: empty, reserved, repeated or holding a comma or space", s.name)
		}
		seen[s.name] = true
		if s.about == "" || s.flags == nil {
			t.Errorf("stage %q: no description or no measurement", s.name)
			continue
		}
		if m := s.flags(fs); m == nil {
			t.Errorf("stage %q: no measurement", s.name)
		}
	}
}

func TestRunBenchRunsAndKeeps(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "results.json")
	if err := os.WriteFile(out, []byte(`[{"name": "earlier", "value": 1, "unit": "s", "target": null}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	var table bytes.Buffer
	if err := runStages(context.Background(), testStages(&calls), []string{"-only", "b", "-runs", "3", "-out", out}, &table); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 {
		t.Errorf("stage b measured %d times, want 3 (-runs)", calls.Load())
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	res, err := readResults(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 2 || res.Rows[0].Name != "earlier" || res.Rows[1].Name != "x" {
		t.Fatalf("rows %+v: want the earlier row kept and b's", res.Rows)
	}
	x := res.Rows[1]
	if x.Stage != "b" || x.Runs != 3 || x.Value != 2 || x.Spread == nil || *x.Spread != (Spread{Min: 1, Max: 3}) || x.Load == nil {
		t.Errorf("row %+v: want stage b, 3 runs, median 2 of 1..3, a load", x)
	}
	if len(res.Stages) != 1 || res.Stages[0].Name != "b" {
		t.Errorf("stages %+v, want b's", res.Stages)
	}
	for _, col := range []string{"RESULT", "SPREAD", "TARGET", "REFERENCE", "1.00–3.00", "whole run", "pass", "cpu: gen 7.00, server 12.0"} {
		if !strings.Contains(table.String(), col) {
			t.Errorf("the table holds no %q:\n%s", col, table.String())
		}
	}
	if err := runStages(context.Background(), testStages(&calls), []string{"-only", "nope", "-out", out}, io.Discard); err == nil {
		t.Error("-only nope: no error")
	}
	if err := runStages(context.Background(), testStages(&calls), []string{"-runs", "0", "-out", out}, io.Discard); err == nil {
		t.Error("-runs 0: no error")
	}
}

func TestBodies(t *testing.T) {
	t.Parallel()
	bodies := [][]byte{[]byte(`{"a":1}`), {}, bytes.Repeat([]byte("x"), 70_000)}
	path := filepath.Join(t.TempDir(), "b.bin")
	if err := writeBodies(path, bodies); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := readBodies(f)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bodies, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("bodies (-want +got):\n%s", diff)
	}
	for _, bad := range [][]byte{{0, 0, 0}, {0, 0, 0, 5, 'a'}, {0xff, 0xff, 0xff, 0xff}} {
		if _, err := readBodies(bytes.NewReader(bad)); err == nil {
			t.Errorf("readBodies(%x): no error", bad)
		}
	}
}

// TestLoadgen runs the generator's loops against a server in this test:
// every body sent once, a latency for each, an error answered is an
// error, and bad arguments are refused.
func TestLoadgen(t *testing.T) {
	t.Parallel()
	var got atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Add(1)
		if string(b) == "refuse" {
			http.Error(w, "no", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	dir := t.TempDir()
	bodies := make([][]byte, 40)
	for i := range bodies {
		bodies[i] = []byte("ok")
	}
	path := filepath.Join(dir, "b.bin")
	if err := writeBodies(path, bodies); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-concurrency", "4"}, {"-rate", "2000"}} {
		got.Store(0)
		var stdout, stderr bytes.Buffer
		if code := loadgenMain(append([]string{"-addr", addr, "-bodies", path}, args...), nil, &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
		}
		var res loadgenResult
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
		if res.Error != "" || len(res.Latencies) != len(bodies) || int(got.Load()) != len(bodies) || !res.End.After(res.Start) {
			t.Errorf("%v: %+v, %d sent", args, res, got.Load())
		}
		for i, l := range res.Latencies {
			if l <= 0 {
				t.Errorf("%v: upload %d has no latency", args, i)
			}
		}
	}
	if err := writeBodies(path, [][]byte{[]byte("ok"), []byte("refuse")}); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	if code := loadgenMain([]string{"-addr", addr, "-bodies", path}, nil, &stdout, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var res loadgenResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Error, "HTTP 400") {
		t.Errorf("a refused upload: error %q, want HTTP 400", res.Error)
	}
	for _, args := range [][]string{{}, {"-addr", addr}, {"-addr", addr, "-bodies", path, "-concurrency", "0"}, {"-addr", addr, "-bodies", path, "-rate", "-1"},
		{"-get", srv.URL, "-seconds", "0"}, {"-get", srv.URL, "extra"}} {
		if code := loadgenMain(args, nil, io.Discard, io.Discard); code != 2 {
			t.Errorf("loadgen %v: exit %d, want 2", args, code)
		}
	}
}

// TestLoadgenGET runs the origin's generator against a server in this
// test: requests counted, a wrong status or size is an error.
func TestLoadgenGET(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"e1"`)
		if r.Header.Get("If-None-Match") == `"e1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "hello")
	}))
	defer srv.Close()
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{args: []string{"-want", "200", "-size", "5"}},
		{args: []string{"-etag", `"e1"`, "-want", "304", "-size", "0"}},
		{args: []string{"-want", "200", "-size", "4"}, err: "5 bytes"},
		{args: []string{"-etag", `"e1"`, "-want", "200", "-size", "5"}, err: "HTTP 304"},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"-get", srv.URL, "-concurrency", "2", "-seconds", "0.2"}, tc.args...)
		if code := loadgenMain(args, nil, &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, stderr.String())
		}
		var res getResult
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
		if tc.err != "" {
			if !strings.Contains(res.Error, tc.err) {
				t.Errorf("%v: error %q, want %q", tc.args, res.Error, tc.err)
			}
			continue
		}
		if res.Error != "" || res.Requests == 0 || res.Seconds < 0.2 {
			t.Errorf("%v: %+v", tc.args, res)
		}
	}
}

func TestGroupCPU(t *testing.T) {
	t.Parallel()
	// This test's process group holds this process, which has used some
	// CPU by now; a group that does not exist holds none.
	if got := groupCPU(syscall.Getpgrp()); got <= 0 {
		t.Errorf("groupCPU(own group) = %v", got)
	}
	if got := groupCPU(1 << 30); got != 0 {
		t.Errorf("groupCPU(no group) = %v", got)
	}
}

// TestRunBenchWritesWhatWasMeasured: a stage that fails ends the run with
// its error, and the stages before it are written all the same.
func TestRunBenchWritesWhatWasMeasured(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "results.json")
	ok := func(fs *flag.FlagSet) measure {
		return func(ctx context.Context, b *bench) ([]Row, error) {
			return []Row{{Name: "ok", Value: 1, Unit: "s"}}, nil
		}
	}
	bad := func(fs *flag.FlagSet) measure {
		return func(ctx context.Context, b *bench) ([]Row, error) { return nil, errors.New("slapd did not start") }
	}
	all := []stage{{name: "first", sampled: true, flags: ok}, {name: "second", sampled: true, flags: bad}, {name: "third", flags: ok}}
	err := runStages(context.Background(), all, []string{"-out", out}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "second: slapd did not start") {
		t.Fatalf("error %v, want the second stage's", err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	res, err := readResults(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 1 || res.Rows[0].Stage != "first" || len(res.Stages) != 1 {
		t.Errorf("written %+v, want the first stage's row alone", res)
	}
}

// TestFirstErrorOfAnyType: errors of different types from many goroutines
// (a transport's *url.Error, a fmt error) are kept, the first only; an
// atomic.Value panicked at the second type.
func TestFirstErrorOfAnyType(t *testing.T) {
	t.Parallel()
	var f firstError
	first := errors.New("first")
	f.set(first)
	f.set(&url.Error{Op: "Post", URL: "http://x", Err: errors.New("refused")})
	f.set(fmt.Errorf("third"))
	if f.err != first {
		t.Errorf("kept %v, want the first", f.err)
	}
}
