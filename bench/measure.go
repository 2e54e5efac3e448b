package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// A bench on a machine others use at the same time measures them too. The
// bench cannot stop them; it says when it was disturbed: it samples the
// machine's load at the start and end of the whole run and of every run of
// every stage, and marks a stage (and its rows) busy when the machine was
// not its own.

// Thresholds of a busy machine.
const (
	// busyOthers is the CPU, as a share of all the machine's cores, that
	// processes outside the bench may use during a stage before it is
	// busy: a quiet machine's daemons use well under 1 %.
	busyOthers = 0.10
	// busySteal is the share of CPU time the hypervisor may steal.
	busySteal = 0.03
)

// machineSample is the machine's state at one instant.
type machineSample struct {
	At                   time.Time
	Load1, Load5, Load15 float64
	// jiffies of the "cpu" line of /proc/stat: all, idle (idle + iowait),
	// steal.
	Total, Idle, Steal uint64
	// Ours is the CPU seconds used so far by this process and its
	// descendants (the roles, nginx, slapd, the load generator), and by
	// PostgreSQL's processes: the server is shared, but the bench's own
	// queries run there.
	Ours float64
}

// Load is what results.json says of a stage's machine: the load average at
// its start and end, and, between them, the CPU stolen and the CPU others
// used.
type Load struct {
	Start [3]float64 `json:"loadavg_start"` // 1, 5, 15 minutes
	End   [3]float64 `json:"loadavg_end"`   // includes the bench's own load
	// StealPct is the percentage of the machine's CPU time the hypervisor
	// stole.
	StealPct float64 `json:"steal_pct"`
	// OthersCores is the CPU processes outside the bench used, in cores
	// (on average over the stage).
	OthersCores float64 `json:"others_cores"`
	Cores       int     `json:"cores"`
	Busy        bool    `json:"busy"`
	Why         string  `json:"why,omitempty"`
}

// sampleMachine reads the machine's state now. A file it cannot read
// leaves zeros: the classification then says nothing of that measure.
func sampleMachine() machineSample {
	s := machineSample{At: time.Now()}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		s.Load1, s.Load5, s.Load15 = parseLoadavg(b)
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		s.Total, s.Idle, s.Steal = parseProcStat(b)
	}
	s.Ours = oursCPU()
	return s
}

// parseLoadavg reads the three load averages of /proc/loadavg.
func parseLoadavg(b []byte) (l1, l5, l15 float64) {
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, 0, 0
	}
	l1, _ = strconv.ParseFloat(f[0], 64)
	l5, _ = strconv.ParseFloat(f[1], 64)
	l15, _ = strconv.ParseFloat(f[2], 64)
	return l1, l5, l15
}

// parseProcStat reads the "cpu" line of /proc/stat: user nice system idle
// iowait irq softirq steal (guest time is already in user).
func parseProcStat(b []byte) (total, idle, steal uint64) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, 0
	}
	var v [8]uint64
	for i := range v {
		v[i], _ = strconv.ParseUint(f[1+i], 10, 64)
		total += v[i]
	}
	return total, v[3] + v[4], v[7]
}

// userHZ is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const userHZ = 100

// procStat is a process's fields of /proc/<pid>/stat that the bench uses.
type procStat struct {
	comm       string
	ppid, pgrp int
	cpu        float64 // utime + stime, seconds
	// waited is cutime + cstime: the children it waited for, seconds.
	waited float64
}

// readProcStat parses /proc/<pid>/stat.
func readProcStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	return parseProcStatLine(b)
}

func parseProcStatLine(b []byte) (procStat, bool) {
	// The command name is in parentheses and may hold anything.
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return procStat{}, false
	}
	f := strings.Fields(string(b[j+1:]))
	if len(f) < 15 {
		return procStat{}, false
	}
	n := func(k int) float64 { v, _ := strconv.ParseFloat(f[k], 64); return v }
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	return procStat{comm: string(b[i+1 : j]), ppid: ppid, pgrp: pgrp, cpu: (n(11) + n(12)) / userHZ, waited: (n(13) + n(14)) / userHZ}, true
}

// oursCPU is the CPU seconds of this process, its children it waited for,
// its live descendants (with the children they waited for), and
// PostgreSQL's processes.
func oursCPU() float64 {
	var ru syscall.Rusage
	total := 0.0
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		total += rusageSeconds(&ru)
	}
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
		total += rusageSeconds(&ru)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return total
	}
	procs := map[int]procStat{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readProcStat(pid); ok {
			procs[pid] = st
		}
	}
	self := os.Getpid()
	for pid, st := range procs {
		if pid == self {
			continue
		}
		if st.comm == "postgres" || descends(procs, pid, self) {
			total += st.cpu + st.waited
		}
	}
	return total
}

// groupCPU is the CPU seconds of the processes of process group pgid
// (a child started in a group of its own: nginx's master and workers),
// with the children they waited for.
func groupCPU(pgid int) float64 {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	total := 0.0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readProcStat(pid); ok && st.pgrp == pgid {
			total += st.cpu + st.waited
		}
	}
	return total
}

// descends tells whether pid is a descendant of anc.
func descends(procs map[int]procStat, pid, anc int) bool {
	for range 64 { // no loop in a process tree, but a bound all the same
		st, ok := procs[pid]
		if !ok || st.ppid <= 1 {
			return false
		}
		if st.ppid == anc {
			return true
		}
		pid = st.ppid
	}
	return false
}

func rusageSeconds(ru *syscall.Rusage) float64 {
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// classify says what the machine was like between a and b, on cores
// cores: busy when others used over busyOthers of it, or the hypervisor
// stole over busySteal.
func classify(a, b machineSample, cores int) Load {
	l := Load{Start: [3]float64{a.Load1, a.Load5, a.Load15}, End: [3]float64{b.Load1, b.Load5, b.Load15}, Cores: cores}
	var why []string
	if b.Total > a.Total {
		dt := float64(b.Total - a.Total)
		l.StealPct = 100 * float64(b.Steal-a.Steal) / dt
		// Busy CPU seconds of the machine, less ours.
		busy := (dt - float64(b.Idle-a.Idle) - float64(b.Steal-a.Steal)) / userHZ
		if wall := b.At.Sub(a.At).Seconds(); wall > 0 {
			l.OthersCores = max(0, busy-(b.Ours-a.Ours)) / wall
		}
	}
	if l.OthersCores > busyOthers*float64(cores) {
		why = append(why, fmt.Sprintf("others used %.2f of %d cores", l.OthersCores, cores))
	}
	if l.StealPct > 100*busySteal {
		why = append(why, fmt.Sprintf("steal %.1f %%", l.StealPct))
	}
	l.Busy, l.Why = len(why) > 0, strings.Join(why, ", ")
	return l
}

// startBusy says whether the machine was busy when the run began, before
// the bench loaded it: the load average above the core count.
func startBusy(s machineSample, cores int) string {
	if s.Load1 > float64(cores) {
		return fmt.Sprintf("load average %.2f over %d cores at the start", s.Load1, cores)
	}
	return ""
}

// merged is a stage's load over several runs: the first start, the last
// end, the worst steal and others' use, busy when any run was.
func merged(ls []Load) Load {
	if len(ls) == 0 {
		return Load{}
	}
	m := ls[0]
	var why []string
	for i, l := range ls {
		m.End = l.End
		m.StealPct, m.OthersCores = max(m.StealPct, l.StealPct), max(m.OthersCores, l.OthersCores)
		if l.Busy {
			m.Busy = true
			why = append(why, fmt.Sprintf("run %d: %s", i+1, l.Why))
		}
	}
	if len(ls) == 1 {
		return ls[0]
	}
	m.Why = strings.Join(why, "; ")
	return m
}

// runStage measures stage s by m: once when it measures its own runs,
// else b.runs times; it samples the machine around each call and returns
// the stage's machine and its rows, each the summary of its runs.
func runStage(ctx context.Context, b *bench, s stage, m measure, cores int) (StageLoad, []Row, error) {
	calls := b.runs
	if s.sampled {
		calls = 1
	}
	var runs [][]Row
	var loads []Load
	started := time.Now()
	for call := range calls {
		fmt.Fprintf(os.Stderr, "bench: %s: run %d of %d\n", s.name, call+1, calls)
		before := sampleMachine()
		rows, err := m(ctx, b)
		l := classify(before, sampleMachine(), cores)
		if err != nil {
			return StageLoad{}, nil, err
		}
		if l.Busy {
			fmt.Fprintf(os.Stderr, "bench: %s: run %d on a busy machine: %s\n", s.name, call+1, l.Why)
		}
		for j := range rows {
			rows[j].Stage = s.name
			rows[j].Busy = rows[j].Busy || l.Busy
			for k := range rows[j].Samples {
				rows[j].Samples[k].Busy = rows[j].Samples[k].Busy || l.Busy
			}
		}
		runs, loads = append(runs, rows), append(loads, l)
	}
	load := merged(loads)
	st := StageLoad{Name: s.name, Load: load, Started: started.UTC(), Seconds: time.Since(started).Seconds()}
	var out []Row
	for _, r := range mergeRuns(runs) {
		r = summarize(r)
		r.Load = &load
		out = append(out, r)
	}
	return st, out, nil
}

// Sample is one run's measurement of a row.
type Sample struct {
	Value, ReferenceValue, Ratio float64
	// CPU is the CPU seconds each side used in this run, as the row says
	// (e.g. per upload).
	CPU map[string]float64
	// Busy: this run was taken on a busy machine.
	Busy bool
}

// valueSamples are the runs of a row without a reference.
func valueSamples(v []float64) []Sample {
	s := make([]Sample, len(v))
	for i := range v {
		s[i].Value = v[i]
	}
	return s
}

// ratioSamples are the runs of a row whose value and reference are costs
// (times) measured in the same runs: the ratio ours over the reference's.
func ratioSamples(ours, ref []float64) []Sample {
	s := make([]Sample, min(len(ours), len(ref)))
	for i := range s {
		s[i] = Sample{Value: ours[i], ReferenceValue: ref[i], Ratio: ours[i] / ref[i]}
	}
	return s
}

// rateSamples are the runs of a row whose value and reference are
// throughputs measured in the same runs: the ratio is still of costs, the
// reference's throughput over ours.
func rateSamples(ours, ref []float64) []Sample {
	s := make([]Sample, min(len(ours), len(ref)))
	for i := range s {
		s[i] = Sample{Value: ours[i], ReferenceValue: ref[i], Ratio: ref[i] / ours[i]}
	}
	return s
}

// withCPU gives each sample its run's CPU.
func withCPU(s []Sample, cpu []map[string]float64) []Sample {
	for i := range min(len(s), len(cpu)) {
		s[i].CPU = cpu[i]
	}
	return s
}

// mid is the median of v (the mean of the middle two of an even count;
// 0 of none).
func mid(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// Spread is the smallest and largest of a row's runs.
type Spread struct {
	Min float64 `json:"min"`
	Max float64 `json:"max"`
}

// compared is what a row's target bounds: its ratio when it has a
// reference (and is not a throughput floor), else its value.
func (r Row) compared() float64 {
	if r.Reference != "" && !r.AtLeast {
		return r.Ratio
	}
	return r.Value
}

// meets tells whether the row meets its target (true for a row without).
func (r Row) meets() bool {
	switch {
	case r.Target == nil:
		return true
	case r.AtLeast:
		return r.Value >= *r.Target
	default:
		return r.compared() <= *r.Target
	}
}

// status is the row's pass/fail/busy column.
func (r Row) status() string {
	switch {
	case r.Runs == 0:
		return "kept"
	case r.Target == nil:
		return "-"
	}
	s := "pass"
	if !r.meets() {
		s = "FAIL"
	}
	if r.Busy {
		s = "busy: " + s
	}
	return s
}

// summarize makes a measured row of its runs' samples: value, reference
// and ratio the median of the runs' (the ratio of each run, its reference
// measured in the same run), the spread their minimum and maximum of what
// the target bounds, busy when a run was.
func summarize(r Row) Row {
	s := r.Samples
	if len(s) == 0 {
		s = []Sample{{Value: r.Value, ReferenceValue: r.ReferenceValue, Ratio: r.Ratio, CPU: r.CPU}}
	}
	pick := func(f func(Sample) float64) []float64 {
		v := make([]float64, len(s))
		for i := range s {
			v[i] = f(s[i])
		}
		return v
	}
	values := pick(func(x Sample) float64 { return x.Value })
	r.Value = mid(values)
	if r.Worst {
		r.Value = slices.Max(values)
	}
	r.ReferenceValue = mid(pick(func(x Sample) float64 { return x.ReferenceValue }))
	r.Ratio = mid(pick(func(x Sample) float64 { return x.Ratio }))
	cmp := values
	if r.Reference != "" && !r.AtLeast {
		cmp = pick(func(x Sample) float64 { return x.Ratio })
	}
	r.Spread = &Spread{Min: slices.Min(cmp), Max: slices.Max(cmp)}
	r.Runs, r.BusyRuns = len(s), 0
	r.CPU = nil
	for _, x := range s {
		if x.Busy {
			r.BusyRuns++
		}
		for k, v := range x.CPU {
			if r.CPU == nil {
				r.CPU = map[string]float64{}
			}
			r.CPU[k] += v / float64(len(s)) // the mean over the runs
		}
	}
	r.Busy = r.Busy || r.BusyRuns > 0
	r.Samples = nil
	return r
}

// mergeRuns gathers the rows of a stage's runs by name, in the first
// run's order (a row only some runs made comes after), each row's samples
// the runs' in order.
func mergeRuns(runs [][]Row) []Row {
	var out []Row
	at := map[string]int{}
	for _, rows := range runs {
		for _, r := range rows {
			s := r.Samples
			if len(s) == 0 {
				s = []Sample{{Value: r.Value, ReferenceValue: r.ReferenceValue, Ratio: r.Ratio, CPU: r.CPU, Busy: r.Busy}}
			}
			if i, ok := at[r.Name]; ok {
				out[i].Samples = append(out[i].Samples, s...)
				continue
			}
			r.Samples = slices.Clone(s)
			at[r.Name] = len(out)
			out = append(out, r)
		}
	}
	return out
}

// Results is bench/results.json.
type Results struct {
	// Machine is the whole run's: load at its start and end (none in a
	// file converted from the earlier format, which did not say).
	Machine Load        `json:"machine,omitzero"`
	Started time.Time   `json:"started,omitzero"`
	GoOS    string      `json:"goos,omitempty"`
	Stages  []StageLoad `json:"stages"`
	Rows    []Row       `json:"rows"`
}

// StageLoad is a stage's machine as measured in a run.
type StageLoad struct {
	Name string `json:"name"`
	Load Load   `json:"load"`
	// Started is when the stage last ran (a stage not measured in the
	// latest run keeps its earlier rows).
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
}

// readResults reads a results file: this format, or the earlier one (a
// bare array of rows, which said nothing of runs or load).
func readResults(b []byte) (Results, error) {
	var res Results
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		if err := json.Unmarshal(b, &res.Rows); err != nil {
			return res, fmt.Errorf("results (rows): %w", err)
		}
		return res, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		return res, fmt.Errorf("results: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return res, errors.New("results: data after the object")
	}
	return res, nil
}

// keep makes this run's results of the earlier ones and the rows measured
// now: the stages measured now replace their earlier rows (each stage's
// new rows where its first earlier row was, a new stage's at the end),
// the rows of the others are kept as they were (a subset run does not
// erase the rest). Rows of the earlier format name no stage: a measured
// row replaces the earlier row of its name.
func keep(old Results, now Results) Results {
	measured := map[string]bool{}
	for _, s := range now.Stages {
		measured[s.Name] = true
	}
	stageOf := map[string]string{} // row name → the stage that measured it now
	byStage := map[string][]Row{}
	var order []string
	for _, r := range now.Rows {
		stageOf[r.Name] = r.Stage
		if _, ok := byStage[r.Stage]; !ok {
			order = append(order, r.Stage)
		}
		byStage[r.Stage] = append(byStage[r.Stage], r)
	}
	out := now
	if len(now.Stages) == 0 { // nothing measured: the file's run stays
		out.Machine, out.Started, out.GoOS = old.Machine, old.Started, old.GoOS
	}
	out.Rows = nil
	out.Stages = slices.Clone(now.Stages)
	for _, s := range old.Stages {
		if !measured[s.Name] {
			out.Stages = append(out.Stages, s)
		}
	}
	placed := map[string]bool{}
	for _, r := range old.Rows {
		st, ok := stageOf[r.Name]
		if measured[r.Stage] {
			st, ok = r.Stage, true
		}
		if !ok {
			out.Rows = append(out.Rows, r)
			continue
		}
		if !placed[st] {
			out.Rows, placed[st] = append(out.Rows, byStage[st]...), true
		}
	}
	for _, st := range order {
		if !placed[st] {
			out.Rows = append(out.Rows, byStage[st]...)
		}
	}
	return out
}

// writeResults writes res as indented JSON.
func writeResults(path string, res Results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// printRows prints the table of rows: each with its value, the spread of
// what its target bounds, its reference's value and the ratio, target,
// runs and pass, fail or busy; the name last, with the reference and the
// detail (long: the columns stay narrow).
func printRows(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RESULT\tVALUE\tSPREAD\tRATIO\tREF VALUE\tTARGET\tRUNS\tNAME [DETAIL] (REFERENCE)")
	for _, r := range rows {
		refValue, ratio := "-", "-"
		if r.Reference != "" {
			refValue, ratio = num(r.ReferenceValue)+" "+r.Unit, fmt.Sprintf("%.2f×", r.Ratio)
		}
		spread := "-"
		if r.Spread != nil {
			spread = num(r.Spread.Min) + "–" + num(r.Spread.Max)
			if r.Reference != "" && !r.AtLeast {
				spread += "×"
			}
		}
		tgt := "-"
		if r.Target != nil {
			tgt = "≤ " + num(*r.Target)
			if r.AtLeast {
				tgt = "≥ " + num(*r.Target)
			} else if r.Reference != "" {
				tgt += "×"
			}
		}
		runs := strconv.Itoa(r.Runs)
		if r.BusyRuns > 0 {
			runs += fmt.Sprintf(" (%d busy)", r.BusyRuns)
		}
		name := r.Name
		if r.Detail != "" {
			name += " [" + r.Detail + "]"
		}
		if r.Reference != "" {
			name += " (against: " + r.Reference + ")"
		}
		if len(r.CPU) > 0 {
			name += " cpu: " + cpuLine(r.CPU)
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.status(), num(r.Value), r.Unit, spread, ratio, refValue, tgt, runs, name)
	}
	return tw.Flush()
}

// cpuLine prints a row's CPU, its sides in order of name.
func cpuLine(m map[string]float64) string {
	sides := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(sides))
	for i, k := range sides {
		parts[i] = k + " " + num(m[k])
	}
	return strings.Join(parts, ", ")
}

// num prints a value with the digits that matter.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// cores is the number of CPUs the machine gives this process.
func cores() int { return runtime.NumCPU() }
