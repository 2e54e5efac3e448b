package testenv

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/vouch-nl/vouch/registry"
)

// LDAPServer is a running slapd holding the registry suffix and ou=people.
type LDAPServer struct {
	URL          string // ldap://127.0.0.1:<port>/
	BaseDN       string // registry.Suffix
	BindDN       string // the rootdn, which may write
	BindPassword string
	CAFile       string // with TLS: the CA of the server's certificate

	srv *registry.Server
}

// LDAP starts a private slapd on a free loopback port, seeded with the
// registry's base entries, and stops it when the test ends.
func LDAP(t testing.TB) *LDAPServer {
	t.Helper()
	return LDAPWith(t, registry.ServerOptions{})
}

// LDAPWith is LDAP with options: fixtures, seed LDIF (a generated register),
// a port or password of the test's choosing.
func LDAPWith(t testing.TB, opts registry.ServerOptions) *LDAPServer {
	t.Helper()
	lookTool(t, "ldapmodify") // needed by LDIF; fail early, not mid-test
	srv, err := registry.NewServer(t.TempDir(), opts)
	if errors.Is(err, registry.ErrToolMissing) {
		missing(t, "slapd", err)
	}
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s := &LDAPServer{BaseDN: srv.BaseDN, BindDN: srv.BindDN, BindPassword: srv.BindPassword, CAFile: srv.CAFile, srv: srv}
	// Registered after TempDir, so it runs first: slapd stops before its
	// directory goes.
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	s.Start(t)
	// The first start may have moved to another free port; later ones keep
	// it, so URL is settled from here on and safe to read anywhere.
	s.URL = srv.URL
	return s
}

// Stop takes the register down, for outage tests. Start brings it back on
// the same URL with the same data.
func (s *LDAPServer) Stop(t testing.TB) {
	t.Helper()
	if err := s.srv.Stop(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// Kill takes the register down with SIGKILL, a crash. Start brings it back
// on the same URL with the same data.
func (s *LDAPServer) Kill(t testing.TB) {
	t.Helper()
	if err := s.srv.Kill(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// Freeze stops slapd with SIGSTOP, a hung register, until Thaw.
func (s *LDAPServer) Freeze(t testing.TB) {
	t.Helper()
	if err := s.srv.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// Thaw lets a frozen register go on.
func (s *LDAPServer) Thaw(t testing.TB) {
	t.Helper()
	if err := s.srv.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// Start brings a stopped register back and returns once it answers.
func (s *LDAPServer) Start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.srv.Start(ctx); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// lookTool finds a program of the dependencies, also in the sbin
// directories a non-root PATH often lacks.
func lookTool(t testing.TB, name string) string {
	t.Helper()
	p, err := registry.LookTool(name)
	if err != nil {
		missing(t, name, err)
	}
	return p
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
