package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/database"
)

// Postgres is a throwaway PostgreSQL cluster owned by one test, for fault
// tests that stop, kill or freeze the database. The machine's shared server
// (DATABASE_URL, 127.0.0.1:5432) is never touched: every signal goes to the
// process group of a postmaster this package started.
type Postgres struct {
	url     string // postgres://postgres@127.0.0.1:<port>/vouch?sslmode=disable
	port    int
	bin     string // directory holding initdb and postgres
	base    string // owns data/, sock/ and postgres.log
	data    string
	cred    *syscall.Credential // nil when not root
	logPath string
	// settings are name=value pairs given to every start (postgres -c):
	// replication and archiving for PostgresPair.
	settings []string

	mu     sync.Mutex
	proc   *exec.Cmd // the running postmaster, nil when down
	done   chan struct{}
	paused bool
}

// ownPGDatabase is the migrated database URL names.
const ownPGDatabase = "vouch"

// OwnPostgres starts a private PostgreSQL cluster of the installed Debian
// version on a free loopback port, with trust authentication and a database
// "vouch" migrated to the newest schema. The cluster stops and its files go
// when the test ends, however it ends.
func OwnPostgres(t testing.TB) *Postgres {
	t.Helper()
	p := newOwnPostgres(t, nil)
	p.initdb(t)
	p.startFresh(t)
	p.createVouch(t)
	return p
}

// newOwnPostgres makes the directories of a cluster run with settings
// (name=value, as postgres -c takes them) and registers its end; it is
// neither initialised nor started.
func newOwnPostgres(t testing.TB, settings []string) *Postgres {
	t.Helper()
	p, err := makeOwnPostgres(settings)
	if p != nil {
		// Registered first, so it runs last: the cluster is down before
		// its files go, also when the test fails or a later step calls
		// Fatal.
		t.Cleanup(func() {
			if err := p.remove(); err != nil {
				t.Errorf("testenv: own postgres: %v", err)
			}
		})
	}
	var m *missingDep
	if errors.As(err, &m) {
		missing(t, m.what, m.err)
	}
	if err != nil {
		t.Fatalf("testenv: own postgres: %v", err)
	}
	return p
}

// missingDep is a dependency of the environment that is not installed.
type missingDep struct {
	what string
	err  error
}

func (m *missingDep) Error() string { return m.what + " is not available: " + m.err.Error() }

// makeOwnPostgres is newOwnPostgres's core for callers without a
// testing.TB: the caller calls remove when done, also after an error when
// p is not nil.
func makeOwnPostgres(settings []string) (*Postgres, error) {
	bin, err := postgresBin()
	if err != nil {
		return nil, &missingDep{"PostgreSQL server binaries (Debian postgresql)", err}
	}
	cred, err := unprivileged()
	if err != nil {
		return nil, err
	}

	// A directory of our own in /tmp rather than t.TempDir: the cluster's
	// user must reach it, and t.TempDir's parents are root's alone (0700).
	// It is short too, which a Unix socket path needs (108 bytes at most).
	base, err := os.MkdirTemp("", "vouch-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{bin: bin, base: base, data: filepath.Join(base, "data"), cred: cred,
		logPath: filepath.Join(base, "postgres.log"), settings: settings}
	if err := os.Mkdir(filepath.Join(base, "sock"), 0o700); err != nil {
		return p, err
	}
	if cred != nil {
		for _, d := range []string{base, filepath.Join(base, "sock")} {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return p, err
			}
		}
	}
	return p, nil
}

// remove stops the cluster if it runs and removes its files.
func (p *Postgres) remove() error {
	if err := p.shutdown(); err != nil {
		return err
	}
	return os.RemoveAll(p.base)
}

// initdb makes a new cluster in p's data directory.
func (p *Postgres) initdb(t testing.TB) {
	t.Helper()
	if err := p.initdbErr(); err != nil {
		t.Fatalf("testenv: own postgres: %v", err)
	}
}

func (p *Postgres) initdbErr() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// --no-sync: a crash during initdb only fails this test; fsync stays on
	// for the running server, whose durability the fault tests check.
	initdb := p.command(ctx, filepath.Join(p.bin, "initdb"), "-D", p.data, "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

// startFresh starts p for the first time on a free port. It may move to
// another port if a parallel process took the free one; later starts keep
// it, so URL is settled after this.
func (p *Postgres) startFresh(t testing.TB) {
	t.Helper()
	if err := p.startFreshErr(); err != nil {
		t.Fatalf("testenv: own postgres: %v", err)
	}
}

func (p *Postgres) startFreshErr() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for attempt := 0; ; attempt++ {
		var err error
		if p.port, err = freeLoopbackPort(); err != nil {
			return err
		}
		if err = p.start(ctx); err == nil {
			break
		}
		if attempt == 4 || ctx.Err() != nil || !portTaken(err) {
			return err
		}
	}
	p.url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, ownPGDatabase)
	return nil
}

// createVouch creates the database "vouch" and migrates it.
func (p *Postgres) createVouch(t testing.TB) {
	t.Helper()
	if err := p.createVouchErr(); err != nil {
		t.Fatalf("testenv: own postgres: %v", err)
	}
}

func (p *Postgres) createVouchErr() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.exec(ctx, "create database "+ownPGDatabase); err != nil {
		return err
	}
	return database.Migrate(ctx, p.url)
}

// URL is the migrated database "vouch" as superuser postgres, sslmode=disable.
func (p *Postgres) URL() string { return p.url }

// Port is the loopback TCP port, the same across Stop and Start.
func (p *Postgres) Port() int { return p.port }

// Log returns the tail (8 KiB) of everything the server logged, for a
// failing test's message or to check what recovery did.
func (p *Postgres) Log() string { return p.logSince(0) }

// Stop shuts the server down fast (SIGINT: sessions are ended, committed
// work is checkpointed) and returns once every server process has exited.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		t.Fatalf("testenv: own postgres: Stop: not running")
	}
	if err := p.stop(syscall.SIGINT, time.Minute); err != nil {
		t.Fatalf("testenv: own postgres: %v", err)
	}
}

// Kill sends SIGKILL to the postmaster and every server process at once, a
// crash: nothing is checkpointed, and what was committed lives only in the
// WAL. Start afterwards runs crash recovery.
func (p *Postgres) Kill(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		t.Fatalf("testenv: own postgres: Kill: not running")
	}
	if err := p.stop(syscall.SIGKILL, time.Minute); err != nil {
		t.Fatalf("testenv: own postgres: %v", err)
	}
}

// Pause freezes every server process with SIGSTOP, a hung database:
// connections stay open and queries wait, until Resume.
func (p *Postgres) Pause(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("testenv: own postgres: Pause: %v", err)
	}
	p.paused = true
}

// Resume lets a paused server go on.
func (p *Postgres) Resume(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.signal(syscall.SIGCONT); err != nil {
		t.Fatalf("testenv: own postgres: Resume: %v", err)
	}
	p.paused = false
}

// Start brings a stopped or killed server back on the same port and data
// and returns once it accepts connections (after crash recovery, if any).
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for attempt := 0; ; attempt++ {
		err := p.start(ctx)
		if err == nil {
			return
		}
		// Someone may hold our port for a moment (a free-port probe of a
		// parallel test); wait for it rather than move. Any other failure
		// (a failed crash recovery) is the test's to see.
		if attempt == 4 || ctx.Err() != nil || !portTaken(err) {
			t.Fatalf("testenv: own postgres: %v", err)
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
}

// start runs the postmaster and waits until it answers as our cluster.
func (p *Postgres) start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil {
		select {
		case <-p.done: // it died on its own: start again
			p.proc = nil
		default:
			return errors.New("start: already running")
		}
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer logf.Close() // the child holds its own copy
	logStart, _ := logf.Seek(0, 2)

	// Settings on the command line, not in postgresql.conf: they hold for
	// every start and no config file needs writing as the cluster's user.
	cmd := p.command(context.Background(), filepath.Join(p.bin, "postgres"), "-D", p.data,
		"-p", strconv.Itoa(p.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+filepath.Join(p.base, "sock"),
		"-c", "shared_buffers=16MB",
		"-c", "max_connections=50",
		"-c", "logging_collector=off")
	for _, kv := range p.settings {
		cmd.Args = append(cmd.Args, "-c", kv)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so Ctrl-C at a terminal reaches only us and
	// we stop the server in order. SIGQUIT (immediate shutdown)
	// when the test binary dies, so a timed-out `go test` leaves no server.
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start: exec postgres: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.proc, p.done, p.paused = cmd, done, false

	for {
		err := p.ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-done:
			p.proc = nil
			return fmt.Errorf("postgres exited: %s\n%s", cmd.ProcessState, p.logSince(logStart))
		case <-ctx.Done():
			_ = p.stop(syscall.SIGKILL, 10*time.Second)
			return fmt.Errorf("postgres did not answer on port %d: %w (last: %w)\n%s", p.port, ctx.Err(), err, p.logSince(logStart))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// portTaken reports whether a start failed because the port was in use.
func portTaken(err error) bool {
	return strings.Contains(err.Error(), "Address already in use") ||
		strings.Contains(err.Error(), "is another server's")
}

// ping succeeds once the server on our port accepts connections and is
// this cluster: another process may have won the port.
func (p *Postgres) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.maintenanceURL())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var dir string
	if err := conn.QueryRow(ctx, `select current_setting('data_directory')`).Scan(&dir); err != nil {
		return err
	}
	if dir != p.data {
		return fmt.Errorf("port %d is another server's (data directory %s)", p.port, dir)
	}
	return nil
}

func (p *Postgres) maintenanceURL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// exec runs one statement in the maintenance database.
func (p *Postgres) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, p.maintenanceURL())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// stop signals the postmaster and waits for it; after wait it kills it and
// its children. SIGKILL goes to the postmaster and every child at once.
// p.mu is held.
func (p *Postgres) stop(sig syscall.Signal, wait time.Duration) error {
	if p.proc == nil {
		return nil
	}
	pid, done := p.proc.Process.Pid, p.done
	p.proc = nil
	paused := p.paused
	p.paused = false
	if sig == syscall.SIGKILL {
		return killServer(pid, done, wait)
	}
	if paused {
		// A stopped process acts on no signal but SIGKILL until continued.
		_ = signalServer(pid, syscall.SIGCONT)
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal postgres: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(wait):
	}
	if err := killServer(pid, done, wait); err != nil {
		return err
	}
	return fmt.Errorf("postgres did not stop within %s on %s; killed", wait, sig)
}

// shutdown stops whatever runs at the end of a test.
func (p *Postgres) shutdown() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stop(syscall.SIGINT, 30*time.Second)
}

func (p *Postgres) signal(sig syscall.Signal) error {
	if p.proc == nil {
		return errors.New("not running")
	}
	return signalServer(p.proc.Process.Pid, sig)
}

// signalServer sends sig to the postmaster and its children. A signal to
// the process group would miss the children: each calls setsid. The
// postmaster is stopped while its children are listed, so it forks none
// unseen, and continued last.
func signalServer(pm int, sig syscall.Signal) error {
	if err := syscall.Kill(pm, syscall.SIGSTOP); err != nil {
		return err
	}
	for _, c := range children(pm) {
		_ = syscall.Kill(c.pid, sig)
	}
	if sig == syscall.SIGSTOP {
		return nil
	}
	return syscall.Kill(pm, sig)
}

// killServer SIGKILLs the postmaster and its children at once, a crash, and
// waits until all are gone: children left over from a killed postmaster
// still hold its shared memory, and a new postmaster refuses to start
// while they do.
func killServer(pm int, done <-chan struct{}, wait time.Duration) error {
	if err := syscall.Kill(pm, syscall.SIGSTOP); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill postgres: %w", err)
	}
	kids := children(pm)
	for _, c := range kids {
		_ = syscall.Kill(c.pid, syscall.SIGKILL)
	}
	if err := syscall.Kill(pm, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill postgres: %w", err)
	}
	<-done
	deadline := time.Now().Add(wait)
	for _, c := range kids {
		for c.alive() {
			if time.Now().After(deadline) {
				return fmt.Errorf("kill postgres: process %d still alive after %s", c.pid, wait)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// proc is a process as /proc/<pid>/stat shows it; start tells a reused pid
// from the process seen.
type proc struct {
	pid, ppid int
	state     string
	start     uint64
}

func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, false
	}
	// The command, in parentheses, may hold spaces; fields follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return proc{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return proc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	start, _ := strconv.ParseUint(f[19], 10, 64) // field 22 of stat(5)
	return proc{pid: pid, ppid: ppid, state: f[0], start: start}, true
}

// alive reports whether the process runs still: not gone, not a zombie
// (which holds no memory), not its pid reused.
func (c proc) alive() bool {
	now, ok := readProc(c.pid)
	return ok && now.start == c.start && now.state != "Z"
}

// children lists the live processes whose parent is ppid.
func children(ppid int) []proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if c, ok := readProc(pid); ok && c.ppid == ppid && c.state != "Z" {
			out = append(out, c)
		}
	}
	return out
}

// command runs a PostgreSQL program as the cluster's user, in its directory.
func (p *Postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = p.base
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	return cmd
}

// logSince returns what the server logged from offset on, at most 8 KiB.
func (p *Postgres) logSince(off int64) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil || off > int64(len(b)) {
		return ""
	}
	b = b[off:]
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	return string(b)
}

// postgresBin is the bin directory of the newest installed Debian
// PostgreSQL with the server programs.
func postgresBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	var found []string
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			found = append(found, d)
		}
	}
	if len(found) == 0 {
		return "", errors.New("no initdb and postgres under /usr/lib/postgresql/*/bin")
	}
	version := func(d string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return v
	}
	sort.Slice(found, func(i, j int) bool { return version(found[i]) > version(found[j]) })
	return found[0], nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// unprivileged is the user to run the cluster as: nil (ourselves) unless we
// are root, which initdb and postgres refuse; then postgres, or nobody.
func unprivileged() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	return nil, errors.New("running as root, and neither user postgres nor nobody exists to run PostgreSQL as")
}

// freeLoopbackPort is a TCP port free on 127.0.0.1 a moment ago.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
