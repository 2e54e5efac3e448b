package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// ServerOptions shape a throwaway registry server.
type ServerOptions struct {
	// Port is the loopback port; 0 picks a free one at NewServer.
	Port int
	// BindPassword of the root DN; empty makes a random one.
	BindPassword string
	// Fixtures seeds the entries of the test cards (FixturesLDIF).
	Fixtures bool
	// Seed holds more LDIF records, loaded after the base and fixtures.
	Seed []io.Reader
	// SeedFiles are LDIF files, loaded after Seed.
	SeedFiles []string
	// NoSyncprov leaves out the syncprov overlay: a register that offers no
	// syncrepl, as some do.
	NoSyncprov bool
	// TLS makes a throwaway CA and server certificate (Server.CAFile) and
	// lets clients use StartTLS.
	TLS bool
	// Log, if set, receives the output of slapadd and slapd.
	Log io.Writer
}

// Server is an OpenLDAP slapd serving the registry suffix from Dir on a
// loopback port. It outlives Stop: Start brings it back on the same port
// with the same data, which is how tests take the register down.
type Server struct {
	URL          string // ldap://127.0.0.1:<port>/
	BaseDN       string // Suffix
	BindDN       string // RootDN, which may write
	BindPassword string
	Dir          string // config, database, pid file
	CAFile       string // with ServerOptions.TLS: the CA of the server's certificate

	conf, slapd string
	port        int
	portFixed   bool // chosen by the caller, or bound once: never change it
	log         io.Writer

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc exits
	out  *tailBuffer
}

// ErrToolMissing is wrapped by NewServer when slapd or slapadd is not
// installed (Debian: slapd).
var ErrToolMissing = errors.New("OpenLDAP tool not installed")

// NewServer writes a slapd configuration into dir and bulk-loads the base
// entries, the fixtures if asked, and opts' seeds with slapadd. It does not
// start slapd. dir must not hold a database yet.
func NewServer(dir string, opts ServerOptions) (*Server, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "data.mdb")); err == nil {
		return nil, fmt.Errorf("registry: %s already holds a database", dir)
	}
	slapd, err := LookTool("slapd")
	if err != nil {
		return nil, err
	}
	slapadd, err := LookTool("slapadd")
	if err != nil {
		return nil, err
	}
	pw := opts.BindPassword
	if pw == "" {
		b := make([]byte, 12)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("registry: password: %w", err)
		}
		pw = hex.EncodeToString(b)
	}
	conf, err := writeConfig(dir, pw, opts.NoSyncprov, opts.TLS)
	if err != nil {
		return nil, err
	}

	// One slapadd for everything, fed on stdin: no temporary copy of a large
	// register. Blank lines keep the records of adjacent sources apart.
	sep := func() io.Reader { return strings.NewReader("\n\n") }
	src := []io.Reader{bytes.NewReader(BaseLDIF()), sep()}
	if opts.Fixtures {
		src = append(src, bytes.NewReader(FixturesLDIF()), sep())
	}
	for _, r := range opts.Seed {
		src = append(src, r, sep())
	}
	for _, name := range opts.SeedFiles {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("registry: seed: %w", err)
		}
		defer f.Close()
		src = append(src, f, sep())
	}
	out := &tailBuffer{}
	var logw io.Writer = out
	if opts.Log != nil {
		logw = io.MultiWriter(out, opts.Log)
	}
	// -q skips consistency checks: several times faster on a large load, and
	// a load that fails is thrown away anyway. -w records the contextCSN that
	// syncrepl consumers start from.
	cmd := exec.Command(slapadd, "-q", "-w", "-f", conf)
	cmd.Stdin = io.MultiReader(src...)
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("registry: slapadd: %w\n%s", err, out.String())
	}

	if err := os.WriteFile(filepath.Join(dir, passwordFile), []byte(pw), 0o600); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	var caFile string
	if opts.TLS {
		caFile = filepath.Join(dir, "tls", "ca.pem")
	}
	s := &Server{
		CAFile:       caFile,
		BaseDN:       Suffix,
		BindDN:       RootDN,
		BindPassword: pw,
		Dir:          dir,
		conf:         conf,
		slapd:        slapd,
		port:         opts.Port,
		portFixed:    opts.Port != 0,
		log:          opts.Log,
	}
	if s.port == 0 {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
	}
	s.URL = loopbackURL(s.port)
	return s, nil
}

// passwordFile keeps the root DN's password beside the database, so that
// OpenServer can serve an existing directory again.
const passwordFile = "bindpw"

// OpenServer serves a directory that NewServer made before — after slapd
// crashed, or was stopped with its caller — with its configuration, data and
// password as they are. port 0 picks a free port. It does not start slapd.
func OpenServer(dir string, port int, log io.Writer) (*Server, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "data.mdb")); err != nil {
		return nil, fmt.Errorf("registry: %s holds no database: %w", dir, err)
	}
	pw, err := os.ReadFile(filepath.Join(dir, passwordFile))
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	conf := filepath.Join(dir, "slapd.conf")
	if _, err := os.Stat(conf); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	slapd, err := LookTool("slapd")
	if err != nil {
		return nil, err
	}
	s := &Server{BaseDN: Suffix, BindDN: RootDN, BindPassword: string(pw), Dir: dir, conf: conf, slapd: slapd,
		port: port, portFixed: port != 0, log: log}
	if ca := filepath.Join(dir, "tls", "ca.pem"); fileExists(ca) {
		s.CAFile = ca
	}
	if s.port == 0 {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
	}
	s.URL = loopbackURL(s.port)
	return s, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// HasDatabase reports whether dir holds a register that OpenServer can
// serve.
func HasDatabase(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "data", "data.mdb"))
	return err == nil
}

// Start runs slapd in the foreground as a child and returns once it answers
// a bind. If the port was picked here and turns out to be taken on the first
// start, it tries other free ports; later starts keep the port. ctx bounds
// the wait only: slapd runs until Stop.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		select {
		case <-s.done: // it died on its own (a crash, kill -9): start again
			s.proc = nil
		default:
			return errors.New("registry: slapd already running")
		}
	}
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			if s.portFixed {
				// Someone may hold our port for a moment (a free-port probe
				// of a parallel test); wait for it rather than move.
				select {
				case <-ctx.Done():
					return fmt.Errorf("registry: start slapd: %w (last: %w)", ctx.Err(), err)
				case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
				}
			} else {
				port, perr := freePort()
				if perr != nil {
					return perr
				}
				s.port, s.URL = port, loopbackURL(port)
			}
		}
		if err = s.start(ctx); err == nil {
			s.portFixed = true
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("registry: start slapd: %w", err)
}

// start makes one attempt; s.mu is held.
func (s *Server) start(ctx context.Context) error {
	out := &tailBuffer{}
	var logw io.Writer = out
	if s.log != nil {
		logw = io.MultiWriter(out, s.log)
	}
	// -d 0 keeps slapd in the foreground, so its pid is ours to stop, and
	// still prints fatal errors.
	cmd := exec.Command(s.slapd, "-f", s.conf, "-h", s.URL, "-d", "0")
	cmd.Stdout, cmd.Stderr = logw, logw
	// A process group of its own: Ctrl-C at a terminal reaches only us, and
	// we stop slapd in order rather than race its own exit.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.proc, s.done, s.out = cmd, done, out

	// Answering a bind with our password proves the port is our slapd, not
	// some other process that won the port.
	for {
		err := s.ping()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			s.proc = nil
			return fmt.Errorf("slapd exited: %s\n%s", cmd.ProcessState, out.String())
		case <-ctx.Done():
			s.stop()
			return fmt.Errorf("slapd did not answer on %s: %w (last: %w)\n%s", s.URL, ctx.Err(), err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) ping() error {
	conn, err := ldap.DialURL(s.URL, ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetTimeout(2 * time.Second)
	return conn.Bind(s.BindDN, s.BindPassword)
}

// Stop ends slapd: SIGTERM, and SIGKILL if it has not exited after 10 s.
// Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stop()
}

func (s *Server) stop() error {
	if s.proc == nil {
		return nil
	}
	proc, done := s.proc, s.done
	s.proc = nil
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("registry: stop slapd: %w", err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
	}
	if err := proc.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("registry: kill slapd: %w", err)
	}
	<-done
	return nil
}

// Kill ends slapd with SIGKILL, as a crash or an OOM kill would: nothing
// is flushed or checkpointed. Start brings it back on the same data.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	proc, done := s.proc, s.done
	s.proc = nil
	if err := proc.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("registry: kill slapd: %w", err)
	}
	<-done
	return nil
}

// Signal sends sig to the running slapd: SIGSTOP freezes the register the
// way a hung machine would, SIGCONT thaws it.
func (s *Server) Signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return errors.New("registry: slapd is not running")
	}
	return s.proc.Process.Signal(sig)
}

// Done is closed when the slapd started last exits, by Stop or otherwise;
// nil before the first Start.
func (s *Server) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// Output returns the tail of what the slapd started last printed.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// LookTool finds an OpenLDAP program in PATH or in the sbin directories a
// non-root PATH often lacks. The error wraps ErrToolMissing.
func LookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("registry: %s: %w (Debian packages slapd, ldap-utils)", name, ErrToolMissing)
}

func loopbackURL(port int) string { return fmt.Sprintf("ldap://127.0.0.1:%d/", port) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("registry: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailBuffer keeps the last 16 KiB written to it: enough of a child's
// output for an error message, bounded however long the child runs.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 16 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*tailMax {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-tailMax:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > tailMax {
		return string(b.buf[len(b.buf)-tailMax:])
	}
	return string(b.buf)
}
