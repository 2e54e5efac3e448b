package registry_test

import (
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/vouch-nl/vouch/registry"
)

func newServer(t *testing.T, opts registry.ServerOptions) *registry.Server {
	t.Helper()
	s, err := registry.NewServer(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func dial(t *testing.T, s *registry.Server) *ldap.Conn {
	t.Helper()
	conn, err := ldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.Bind(s.BindDN, s.BindPassword); err != nil {
		t.Fatal(err)
	}
	return conn
}

func countPeople(t *testing.T, conn *ldap.Conn, filter string) int {
	t.Helper()
	res, err := conn.SearchWithPaging(ldap.NewSearchRequest(registry.PeopleDN, ldap.ScopeSingleLevel,
		ldap.NeverDerefAliases, 0, 0, false, filter, []string{"1.1"}, nil), 1000)
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Entries)
}

func TestServerSeedsFixturesAndGenerated(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(registry.Generate(pw, 3000, 5, nil)) }()
	extra := filepath.Join(t.TempDir(), "extra.ldif")
	// No trailing newline: the loader must still keep records apart.
	err := os.WriteFile(extra, []byte("dn: ou=extra,"+registry.Suffix+"\nobjectClass: organizationalUnit\nou: extra"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, registry.ServerOptions{Fixtures: true, Seed: []io.Reader{pr}, SeedFiles: []string{extra}})
	conn := dial(t, s)

	fixtures := len(parseLDIF(t, registry.FixturesLDIF()))
	tests := []struct {
		filter string
		want   int
	}{
		{"(objectClass=vouchCareProvider)", 3000 + fixtures},
		{"(vouchUziNumber=900000024)", 1},
		{"(&(vouchUziNumber=900000024)(vouchLicenseStatus=suspended))", 1},
		{"(&(vouchUziNumber=900000001)(vouchBigNumber=90000000101)(vouchAgbCode=01234567))", 1},
	}
	for _, tt := range tests {
		if got := countPeople(t, conn, tt.filter); got != tt.want {
			t.Errorf("%s: %d entries, want %d", tt.filter, got, tt.want)
		}
	}
	if _, err := conn.Search(ldap.NewSearchRequest("ou=extra,"+registry.Suffix, ldap.ScopeBaseObject,
		ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", nil, nil)); err != nil {
		t.Errorf("seed file not loaded: %v", err)
	}
	// slapadd -w left the contextCSN a syncrepl consumer starts from.
	res, err := conn.Search(ldap.NewSearchRequest(registry.Suffix, ldap.ScopeBaseObject,
		ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"contextCSN"}, nil))
	if err != nil || res.Entries[0].GetAttributeValue("contextCSN") == "" {
		t.Errorf("no contextCSN on the suffix: %v", err)
	}
}

func TestServerRestartKeepsPortAndData(t *testing.T) {
	t.Parallel()
	s := newServer(t, registry.ServerOptions{})
	addr := s.URL
	conn := dial(t, s)
	err := conn.Add(&ldap.AddRequest{DN: "ou=kept," + registry.Suffix, Attributes: []ldap.Attribute{
		{Type: "objectClass", Vals: []string{"organizationalUnit"}}, {Type: "ou", Vals: []string{"kept"}}}})
	if err != nil {
		t.Fatal(err)
	}
	done := s.Done()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if c, err := ldap.DialURL(addr); err == nil {
		c.Close()
		t.Fatal("register still answers after Stop")
	}

	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s.URL != addr {
		t.Fatalf("URL %s after restart, was %s", s.URL, addr)
	}
	if err := s.Start(t.Context()); err == nil {
		t.Fatal("second Start of a running server accepted")
	}
	res, err := dial(t, s).Search(ldap.NewSearchRequest("ou=kept,"+registry.Suffix, ldap.ScopeBaseObject,
		ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", nil, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("entry lost over restart: %v", err)
	}
}

func TestServerUsesGivenPortAndPassword(t *testing.T) {
	t.Parallel()
	// Borrow a free port from a first server, then hand it to a second one
	// while the first is down.
	a := newServer(t, registry.ServerOptions{})
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	b := newServer(t, registry.ServerOptions{Port: p, BindPassword: "secret"})
	if b.URL != a.URL || b.BindPassword != "secret" {
		t.Fatalf("URL %s password %q, want %s and the given one", b.URL, b.BindPassword, a.URL)
	}
	dial(t, b)
	// The port is taken now: a restart of a must fail, not move.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if err := a.Start(ctx); err == nil {
		t.Fatal("started on a port already taken")
	}
	if a.URL != b.URL {
		t.Fatalf("a moved to %s", a.URL)
	}
}

func TestNewServerErrors(t *testing.T) {
	t.Parallel()
	used := t.TempDir()
	if _, err := registry.NewServer(used, registry.ServerOptions{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dir  string
		opts registry.ServerOptions
		want string
	}{
		{"dir holds a database", used, registry.ServerOptions{}, "already holds"},
		{"malformed seed", t.TempDir(), registry.ServerOptions{Seed: []io.Reader{strings.NewReader("dn: cn=x,dc=elsewhere\nnonsense\n")}}, "slapadd"},
		{"entry outside the suffix", t.TempDir(), registry.ServerOptions{Seed: []io.Reader{strings.NewReader("dn: cn=x,dc=elsewhere\nobjectClass: device\ncn: x\n")}}, "slapadd"},
		{"missing seed file", t.TempDir(), registry.ServerOptions{SeedFiles: []string{"/nonexistent.ldif"}}, "seed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := registry.NewServer(tt.dir, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestLookToolMissing(t *testing.T) {
	t.Parallel()
	_, err := registry.LookTool("no-such-openldap-tool")
	if !errors.Is(err, registry.ErrToolMissing) {
		t.Fatalf("err = %v, want ErrToolMissing", err)
	}
}
