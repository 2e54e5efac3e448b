package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"vouch/registry"
)

// LDAPServer is a running slapd holding the registry suffix and ou=people.
type LDAPServer struct {
	URL          string // ldap://127.0.0.1:<port>/
	BaseDN       string // registry.Suffix
	BindDN       string // the rootdn, which may write
	BindPassword string
}

// LDAP starts a private slapd on a free loopback port, seeded with the
// registry's base entries, and stops it when the test ends.
func LDAP(t testing.TB) *LDAPServer {
	t.Helper()
	slapd := lookTool(t, "slapd")
	slapadd := lookTool(t, "slapadd")
	lookTool(t, "ldapmodify") // needed by LDIF; fail early, not mid-test

	dir := t.TempDir()
	pw := randomHex(t, 12)
	conf, err := registry.WriteConfig(dir, pw)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// Seed offline: quicker than a network add and checks the files together.
	base := filepath.Join(dir, "base.ldif")
	if err := os.WriteFile(base, registry.BaseLDIF(), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if out, err := exec.Command(slapadd, "-f", conf, "-l", base).CombinedOutput(); err != nil {
		t.Fatalf("testenv: slapadd: %v\n%s", err, out)
	}

	s := &LDAPServer{
		BaseDN:       registry.Suffix,
		BindDN:       registry.RootDN,
		BindPassword: pw,
	}
	// The free port may be taken between probing and slapd binding it;
	// try a few times rather than fail a test on that race.
	var lastErr error
	for range 5 {
		url, err := startSlapd(t, slapd, conf)
		if err == nil {
			s.URL = url
			return s
		}
		lastErr = err
	}
	t.Fatalf("testenv: slapd: %v", lastErr)
	return nil
}

// lockedBuffer collects a child's output while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startSlapd(t testing.TB, slapd, conf string) (string, error) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		return "", err
	}
	url := fmt.Sprintf("ldap://127.0.0.1:%d/", port)
	var out lockedBuffer
	// -d 0 keeps slapd in the foreground, so its pid is ours to stop.
	cmd := exec.Command(slapd, "-f", conf, "-h", url, "-d", "0")
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := ldap.DialURL(url, ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
		if err == nil {
			conn.Close()
			break
		}
		select {
		case werr := <-exited:
			return "", fmt.Errorf("slapd exited: %v\n%s", werr, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", fmt.Errorf("slapd did not answer on %s: %v\n%s", url, err, out.String())
		}
	}
	t.Cleanup(stop)
	return url, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lookTool finds a program of the dependencies, also in the sbin
// directories a non-root PATH often lacks.
func lookTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	missing(t, name, errors.New("not found in PATH or /usr/sbin"))
	return ""
}

// Dial returns a connection bound as the root DN, closed when the test ends.
func (s *LDAPServer) Dial(t testing.TB) *ldap.Conn {
	t.Helper()
	conn, err := ldap.DialURL(s.URL)
	if err != nil {
		t.Fatalf("testenv: dial %s: %v", s.URL, err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.Bind(s.BindDN, s.BindPassword); err != nil {
		t.Fatalf("testenv: bind %s: %v", s.BindDN, err)
	}
	return conn
}

// LDIF applies LDIF records to the directory, as ldapmodify -a does: plain
// records add entries, "changetype: modify/delete/modrdn" records change them.
func (s *LDAPServer) LDIF(t testing.TB, ldif ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, lookTool(t, "ldapmodify"),
		"-a", "-x", "-H", s.URL, "-D", s.BindDN, "-y", s.passwordFile(t))
	// A blank line between arguments keeps their records apart.
	cmd.Stdin = strings.NewReader(strings.Join(ldif, "\n\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: ldapmodify: %v\n%s", err, out)
	}
}

// passwordFile writes the bind password for -y, which keeps it out of the
// process list and takes it verbatim (no trailing newline).
func (s *LDAPServer) passwordFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bindpw")
	if err := os.WriteFile(p, []byte(s.BindPassword), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return p
}
