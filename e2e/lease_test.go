package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// The aggregators' lease, tried from outside (issue 20 §4): two `vouch
// aggregate` processes on one database and one export directory, one of
// them frozen, killed, or crashed at each step of its publication. A
// watcher reads the index as a phone would, all along.

// Short settings, so that a take-over happens within seconds.
const (
	leaseTTL    = 2 * time.Second
	leasePeriod = time.Second
	leaseGrace  = 3 * time.Second
)

// leaseWorld is a world whose aggregators share dbURL and dir.
type leaseWorld struct {
	*world
	dbURL, dir string
	trusted    []*ecdsa.PublicKey
	keys       int // seeded so far
}

func newLeaseWorld(t *testing.T) *leaseWorld {
	w := newWorld(t, testenv.DatabaseURL(t))
	return &leaseWorld{world: w, dbURL: w.dbURL, dir: filepath.Join(w.dir, "exports"), trusted: []*ecdsa.PublicKey{w.exportKey()}}
}

// leaseAggregator starts `vouch aggregate` named name, with fault (a
// VOUCH_TEST_EXPORT_FAULT, or "").
func (lw *leaseWorld) leaseAggregator(name, fault string) *proc {
	env := []string{"VOUCH_OPS_LISTEN=" + freeAddr(lw.t), "VOUCH_LOG_LEVEL=info",
		"VOUCH_EXPORT_LEASE=" + leaseTTL.String(), "VOUCH_EXPORT_PERIOD=" + leasePeriod.String(),
		"VOUCH_EXPORT_GRACE=" + leaseGrace.String()}
	if fault != "" {
		env = append(env, "VOUCH_TEST_EXPORT_FAULT="+fault)
	}
	p := lw.role(name, env, "aggregate")
	// The next one starts once this one has its keys open (its operations
	// listener and its lease come after): SoftHSM rewrites a token's file at login, and
	// a second process reading it at that moment finds no token ("card not
	// found") and stops.
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(p.log.Name())
		// Either comes after the keys are open (a holder with a "stop"
		// fault may stop itself before its listener logs).
		if bytes.Contains(b, []byte("operations listening")) || bytes.Contains(b, []byte("lease taken")) {
			return p
		}
		if !p.running() || time.Now().After(deadline) {
			lw.t.Fatalf("%s did not start: %s", name, tail(b, 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leaseSeed stores n keys of days 2 to 5 before today, as the readers
// would: every one publishable at once.
func (lw *leaseWorld) leaseSeed(n int) {
	lw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, lw.dbURL)
	if err != nil {
		lw.t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows := make([][]any, n)
	today := time.Now().UTC().Truncate(24 * time.Hour)
	for i := range rows {
		rows[i] = []any{random(lw.t, 16), exposure.IntervalNumber(today.AddDate(0, 0, -2-i%4)), int32(144), int16(4),
			exposure.Coarse(time.Now()), ""}
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"exposure_keys"},
		[]string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "received_hour", "origin"}, pgx.CopyFromRows(rows)); err != nil {
		lw.t.Fatal(err)
	}
	lw.keys += n
}

// leaseExec runs sql on the database.
func (lw *leaseWorld) leaseExec(sql string, args ...any) {
	lw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, lw.dbURL)
	if err != nil {
		lw.t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		lw.t.Fatal(err)
	}
}

// leaseHolderPid is the process id in the export lease's holder name
// (host/pid/random), 0 when nobody holds it.
func (lw *leaseWorld) leaseHolderPid() int {
	lw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, lw.dbURL)
	if err != nil {
		lw.t.Fatal(err)
	}
	defer conn.Close(ctx)
	var holder string
	err = conn.QueryRow(ctx, `select holder from leases where name = $1 and expires_at > clock_timestamp()`, export.LeaseName).Scan(&holder)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0
	}
	if err != nil {
		lw.t.Fatal(err)
	}
	parts := strings.Split(holder, "/")
	pid, _ := strconv.Atoi(parts[len(parts)-2])
	return pid
}

// leaseState is one reading of the index.
type leaseState struct {
	at    time.Time
	files []string
	keys  int
}

// leaseWatcher reads the index every few milliseconds, as a phone would
// through the origin, and notes every change and every fault: a named
// file missing (the origin would answer 404), an index that comes back
// after it was replaced.
type leaseWatcher struct {
	lw     *leaseWorld
	mu     sync.Mutex
	states []leaseState
	faults []string
	counts map[string]int // keys per file, read once (content-addressed)
	stop   chan struct{}
	done   chan struct{}
}

func (lw *leaseWorld) leaseWatch() *leaseWatcher {
	lw.t.Helper()
	wt := &leaseWatcher{lw: lw, counts: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go wt.run()
	lw.t.Cleanup(wt.close)
	return wt
}

func (wt *leaseWatcher) close() {
	select {
	case <-wt.stop:
	default:
		close(wt.stop)
	}
	<-wt.done
}

func (wt *leaseWatcher) run() {
	defer close(wt.done)
	var last []byte
	for {
		select {
		case <-wt.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
		idx, err := os.ReadFile(filepath.Join(wt.lw.dir, export.IndexName))
		if errors.Is(err, os.ErrNotExist) || bytes.Equal(idx, last) {
			continue
		}
		if err != nil {
			wt.fault(fmt.Sprintf("read index: %v", err))
			continue
		}
		files, err := export.ReadIndex(bytes.NewReader(idx))
		if err != nil {
			wt.fault(fmt.Sprintf("index unreadable: %v", err))
			continue
		}
		keys, missing := 0, ""
		for _, f := range files {
			n, ok := wt.counts[f]
			if !ok {
				b, err := os.ReadFile(filepath.Join(wt.lw.dir, filepath.FromSlash(f)))
				if err != nil {
					missing = f
					break
				}
				ef, err := export.Open(b, wt.lw.trusted)
				if err != nil {
					wt.fault(fmt.Sprintf("%s: %v", f, err))
					break
				}
				n = len(ef.Keys)
				wt.counts[f] = n
			} else if _, err := os.Stat(filepath.Join(wt.lw.dir, filepath.FromSlash(f))); err != nil {
				missing = f
				break
			}
			keys += n
		}
		if missing != "" {
			// Only a fault if the index still names it: an index replaced
			// meanwhile may have let it go (and its grace passed).
			if now, _ := os.ReadFile(filepath.Join(wt.lw.dir, export.IndexName)); bytes.Equal(now, idx) {
				wt.fault(fmt.Sprintf("the index names %s, which is not there (the origin answers 404)", missing))
				last = idx // once per index
			}
			continue
		}
		wt.mu.Lock()
		for _, s := range wt.states {
			if slices.Equal(s.files, files) && !slices.Equal(wt.states[len(wt.states)-1].files, files) {
				wt.faults = append(wt.faults, fmt.Sprintf("the index went back to %v (%d keys) of %s", files, keys, s.at.Format(time.StampMilli)))
				break
			}
		}
		wt.states = append(wt.states, leaseState{at: time.Now(), files: files, keys: keys})
		wt.mu.Unlock()
		last = idx
	}
}

func (wt *leaseWatcher) fault(s string) {
	wt.mu.Lock()
	wt.faults = append(wt.faults, s)
	wt.mu.Unlock()
}

// keys is the index's key count as last read, -1 before there is one.
func (wt *leaseWatcher) keys() int {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	if len(wt.states) == 0 {
		return -1
	}
	return wt.states[len(wt.states)-1].keys
}

// since is the states read from index i on.
func (wt *leaseWatcher) since(i int) []leaseState {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return slices.Clone(wt.states[min(i, len(wt.states)):])
}

func (wt *leaseWatcher) seen() int {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return len(wt.states)
}

// check fails the test for every fault seen.
func (wt *leaseWatcher) check(t *testing.T) {
	t.Helper()
	wt.mu.Lock()
	defer wt.mu.Unlock()
	for _, f := range wt.faults {
		t.Error(f)
	}
	t.Logf("the index changed %d times; %d faults", len(wt.states), len(wt.faults))
}

// waitKeys waits until the index holds want keys, or fails naming why.
func (wt *leaseWatcher) waitKeys(t *testing.T, want int, within time.Duration, why string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for wt.keys() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the index holds %d keys after %s, want %d", why, wt.keys(), within, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// leaseProcState is a process's state letter in /proc (T when stopped).
func leaseProcState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) S ...: the comm may hold spaces, the state follows its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// leaseWaitStopped waits until p stopped itself at its fault.
func leaseWaitStopped(t *testing.T, p *proc) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for leaseProcState(p.cmd.Process.Pid) != 'T' {
		if !p.running() || time.Now().After(deadline) {
			b, _ := os.ReadFile(p.log.Name())
			t.Fatalf("%s did not stop at its fault:\n%s", p.name, tail(b, 4000))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leaseWaitExited waits until p killed itself at its fault.
func leaseWaitExited(t *testing.T, p *proc) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		b, _ := os.ReadFile(p.log.Name())
		t.Fatalf("%s did not crash at its fault:\n%s", p.name, tail(b, 4000))
	}
}

// leaseWaitLog waits until p's log says one of says, and returns it.
func leaseWaitLog(t *testing.T, p *proc, within time.Duration, says ...string) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, _ := os.ReadFile(p.log.Name())
		for _, s := range says {
			if bytes.Contains(b, []byte(s)) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's log says none of %q:\n%s", p.name, says, tail(b, 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLeaseFrozenAggregator is the attack of issue 20: an aggregator
// frozen (SIGSTOP) right after it put its batch file in place, while the
// other takes over for longer than the lease and the grace, publishes
// more keys and deletes the file the frozen one was about to index; then
// SIGCONT. The index never goes back: it never names a missing file, never
// returns to an earlier list, and its key count never drops after the
// frozen one woke.
func TestLeaseFrozenAggregator(t *testing.T) {
	lw := newLeaseWorld(t)
	wt := lw.leaseWatch()
	lw.leaseSeed(40)
	frozen := lw.leaseAggregator("aggregate-frozen", export.StepBatchRenamed+":stop")
	leaseWaitStopped(t, frozen)
	other := lw.leaseAggregator("aggregate-other", "")
	took := wt.waitKeys(t, 40, 30*time.Second, "the other aggregator after the frozen one's lease ran out")
	t.Logf("the other published %s after the freeze", took.Round(time.Millisecond))

	lw.leaseSeed(60)
	wt.waitKeys(t, 100, 30*time.Second, "more keys")
	// Fourteen days pass for the first batch, the one the frozen
	// aggregator's index names, and more keys arrive.
	var first string
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, lw.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `select path from export_batches order by id limit 1`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `update export_batches set start_at = start_at - interval '15 days', end_at = end_at - interval '15 days'
		where id = (select min(id) from export_batches)`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	lw.leaseSeed(200)
	wt.waitKeys(t, 260, 30*time.Second, "the first batch out of the window, 200 keys more")
	// Past the grace, the other deletes the first batch's file.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(lw.dir, filepath.FromSlash(first))); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not deleted %s after it left the index", first, 30*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := wt.seen()
	keysBefore := wt.keys()
	if err := syscall.Kill(frozen.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// It wakes in a stale run, which ends: the lease lost (its heartbeat
	// ends the run), or its writes refused (the fence). Either way it says
	// so once the run is over; it never says it published.
	said := leaseWaitLog(t, frozen, 30*time.Second, "lease lost during a run", "export failed", "export published")
	t.Logf("the frozen aggregator woke, its run ended: %s", said)
	if said == "export published" {
		t.Error("the woken aggregator published its stale run")
	}
	lw.leaseSeed(10)
	wt.waitKeys(t, 270, 30*time.Second, "after the frozen one woke")
	for _, s := range wt.since(before) {
		if s.keys < keysBefore {
			t.Errorf("after the frozen aggregator woke the index held %d keys (%v), fewer than %d before", s.keys, s.files, keysBefore)
		}
		if slices.Contains(s.files, first) {
			t.Errorf("after the frozen aggregator woke the index named the deleted %s", first)
		}
	}
	if !frozen.running() || !other.running() {
		t.Error("an aggregator stopped")
	}
	wt.check(t)
}

// TestLeaseKill9Holder: the aggregator holding the lease killed with -9;
// the other publishes within a lease and a period.
func TestLeaseKill9Holder(t *testing.T) {
	lw := newLeaseWorld(t)
	wt := lw.leaseWatch()
	lw.leaseSeed(30)
	procs := []*proc{lw.leaseAggregator("aggregate-a", ""), lw.leaseAggregator("aggregate-b", "")}
	wt.waitKeys(t, 30, 60*time.Second, "first export")
	var holder, standby *proc
	deadline := time.Now().Add(30 * time.Second)
	for holder == nil {
		pid := lw.leaseHolderPid()
		for i, p := range procs {
			if p.cmd.Process.Pid == pid {
				holder, standby = p, procs[1-i]
			}
		}
		if holder == nil && time.Now().After(deadline) {
			t.Fatal("no aggregator holds the lease")
		}
		time.Sleep(20 * time.Millisecond)
	}
	holder.kill9()
	killed := time.Now()
	lw.leaseSeed(25)
	wt.waitKeys(t, 55, 60*time.Second, "after kill -9 of the holder")
	took := time.Since(killed)
	t.Logf("kill -9 of %s: %s published the new keys %s later (lease %s, period %s)", holder.name, standby.name, took.Round(time.Millisecond), leaseTTL, leasePeriod)
	// A lease and a third until the standby takes it, a run after: the
	// margin is for a loaded machine.
	if limit := leaseTTL + leasePeriod + 5*time.Second; took > limit {
		t.Errorf("the standby published %s after the kill, more than %s", took, limit)
	}
	wt.check(t)
}

// TestLeaseCrashAtEachStep: the holder killed with -9 after each step of
// its publication; the other publishes everything, the index never names a
// missing file nor goes back.
func TestLeaseCrashAtEachStep(t *testing.T) {
	for _, step := range []string{export.StepBatchRenamed, export.StepIndexCommitted, export.StepIndexWritten, export.StepRetired} {
		t.Run(step, func(t *testing.T) {
			lw := newLeaseWorld(t)
			wt := lw.leaseWatch()
			lw.leaseSeed(20)
			crashing := lw.leaseAggregator("aggregate-crashing", step+":kill")
			leaseWaitExited(t, crashing)
			lw.leaseSeed(15)
			lw.leaseAggregator("aggregate-other", "")
			took := wt.waitKeys(t, 35, 60*time.Second, "after the crash at "+step)
			t.Logf("crash after %s: the other published every key %s later", step, took.Round(time.Millisecond))
			// A batch left behind is published once: no key twice.
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, lw.dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var unbatched int
			if err := conn.QueryRow(ctx, `select count(*) from exposure_keys where batch_id is null`).Scan(&unbatched); err != nil {
				t.Fatal(err)
			}
			if unbatched != 0 {
				t.Errorf("%d keys in no batch", unbatched)
			}
			wt.check(t)
		})
	}
}
