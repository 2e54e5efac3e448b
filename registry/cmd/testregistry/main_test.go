package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/vouch-nl/vouch/registry"
)

func TestGenerateCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	run := func(args ...string) (stdout, stderr string, err error) {
		var o, e bytes.Buffer
		err = app{stdout: &o, stderr: &e}.run(t.Context(), args)
		return o.String(), e.String(), err
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	for _, name := range []string{"a", "b"} {
		if _, stderr, err := run("generate", "-n", "250", "-seed", "3", "-o", filepath.Join(dir, name)); err != nil || stderr != "" {
			t.Fatalf("generate %s: %v, stderr %q", name, err, stderr)
		}
	}
	stdout, _, err := run("generate", "-n", "250", "-seed", "4")
	if err != nil {
		t.Fatal(err)
	}
	a, b := read("a"), read("b")
	if a != b {
		t.Error("same seed, different files")
	}
	if a == stdout {
		t.Error("different seeds, same register")
	}
	if n := strings.Count(a, "\ndn: ") + 1; n != 250 || !strings.HasPrefix(a, "dn: ") {
		t.Errorf("%d entries, want 250", n)
	}

	bad := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "usage"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"bad flag", []string{"generate", "-x"}, "not defined"},
		{"extra argument", []string{"generate", "more"}, "unexpected"},
		{"negative count", []string{"generate", "-n", "-1"}, "n = -1"},
		{"unwritable output", []string{"generate", "-o", filepath.Join(dir, "no", "such", "file")}, "no such file"},
		{"serve extra argument", []string{"serve", "more"}, "unexpected"},
	}
	for _, tt := range bad {
		if _, _, err := run(tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestGenerateStopsOnCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := app{stdout: io.Discard, stderr: io.Discard}.run(ctx, []string{"generate", "-n", "1000000"})
	if err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("err = %v, want canceled", err)
	}
}

func TestProgressBar(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		terminal bool
		n        int
		want     []string
	}{
		{"terminal", true, 25_000, []string{"\r[################", " 40% 10000/25000", "100% 25000/25000"}},
		{"not a terminal", false, 25_000, nil},
		{"nothing to do", true, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			a := app{stdout: io.Discard, stderr: &stderr, progress: tt.terminal}
			if err := a.run(t.Context(), []string{"generate", "-n", strconv.Itoa(tt.n)}); err != nil {
				t.Fatal(err)
			}
			got := stderr.String()
			if tt.want == nil && got != "" {
				t.Fatalf("stderr %q, want nothing", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("stderr %q lacks %q", got, w)
				}
			}
			if tt.want != nil && !strings.HasSuffix(got, "\n") {
				t.Errorf("bar not ended by a newline: %q", got)
			}
		})
	}
}

func TestIsTerminal(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Fatal("a regular file counts as a terminal")
	}
}

// serveInfo is what serve printed.
type serveInfo map[string]string

// startServe runs serve in the background and returns what it printed
// once it is up, and a function that stops it and returns its error.
func startServe(t *testing.T, args ...string) (serveInfo, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := app{stdout: pw, stderr: io.Discard}.run(ctx, append([]string{"serve"}, args...))
		pw.Close()
		errc <- err
	}()
	info := serveInfo{}
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			info[k] = strings.TrimSpace(v)
		}
		if strings.HasPrefix(sc.Text(), "Ctrl-C") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if info["URL"] == "" {
		cancel()
		t.Fatalf("serve did not come up: %v", <-errc)
	}
	return info, func() error {
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("serve did not stop")
			return nil
		}
	}
}

func TestServe(t *testing.T) {
	t.Parallel()
	info, stop := startServe(t, "-generate", "2000", "-seed", "9")
	conn, err := ldap.DialURL(info["URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if info["base DN"] != registry.Suffix {
		t.Errorf("base DN %q", info["base DN"])
	}
	if err := conn.Bind(info["bind DN"], info["password"]); err != nil {
		t.Fatalf("bind with the printed credentials: %v", err)
	}
	res, err := conn.SearchWithPaging(ldap.NewSearchRequest(registry.PeopleDN, ldap.ScopeSingleLevel,
		ldap.NeverDerefAliases, 0, 0, false, "(objectClass=vouchCareProvider)", []string{"1.1"}, nil), 500)
	if err != nil {
		t.Fatal(err)
	}
	fixtures := strings.Count(string(registry.FixturesLDIF()), "dn: ")
	if len(res.Entries) != 2000+fixtures {
		t.Errorf("%d entries, want %d", len(res.Entries), 2000+fixtures)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, err := os.Stat(info["dir"]); !os.IsNotExist(err) {
		t.Errorf("temporary dir %s left behind: %v", info["dir"], err)
	}
	if c, err := ldap.DialURL(info["URL"]); err == nil {
		c.Close()
		t.Error("register still answers after serve returned")
	}
}

func TestServeKeepsGivenDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "reg")
	info, stop := startServe(t, "-dir", dir)
	conn, err := ldap.DialURL(info["URL"])
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Bind(info["bind DN"], info["password"]); err != nil {
		t.Fatal(err)
	}
	mod := ldap.NewModifyRequest("vouchUziNumber=900000001,"+registry.PeopleDN, nil)
	mod.Replace("vouchLicenseStatus", []string{"suspended"})
	if err := conn.Modify(mod); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if info["dir"] != dir {
		t.Errorf("dir %q, want %q", info["dir"], dir)
	}
	// A second serve of the directory serves the same register, changes
	// and password included.
	again, stop := startServe(t, "-dir", dir)
	defer stop()
	if again["password"] != info["password"] {
		t.Error("the password changed")
	}
	if got := status(t, again, "900000001"); got != "suspended" {
		t.Errorf("status after serving the directory again: %q", got)
	}
	// Loading a generated register over it is refused.
	err = app{stdout: io.Discard, stderr: io.Discard}.run(t.Context(), []string{"serve", "-dir", dir, "-generate", "10"})
	if err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Fatalf("err = %v, want refusal", err)
	}
}

// status reads a card holder's license status from a served register.
func status(t *testing.T, info serveInfo, uzi string) string {
	t.Helper()
	conn, err := ldap.DialURL(info["URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Bind(info["bind DN"], info["password"]); err != nil {
		t.Fatal(err)
	}
	res, err := conn.Search(ldap.NewSearchRequest("vouchUziNumber="+uzi+","+registry.PeopleDN, ldap.ScopeBaseObject,
		ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"vouchLicenseStatus"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	return res.Entries[0].GetAttributeValue("vouchLicenseStatus")
}

// TestServeRestartsKilledSlapd: slapd killed with -9 comes back on the same
// URL with the same data, and serve goes on.
func TestServeRestartsKilledSlapd(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "reg")
	info, stop := startServe(t, "-dir", dir)
	defer stop()
	pid, err := os.ReadFile(filepath.Join(dir, "slapd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(pid)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(n, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := ldap.DialURL(info["URL"])
		if err == nil {
			err = conn.Bind(info["bind DN"], info["password"])
			conn.Close()
		}
		if err == nil {
			if again, _ := os.ReadFile(filepath.Join(dir, "slapd.pid")); string(again) != string(pid) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("slapd did not come back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := status(t, info, "900000024"); got != "suspended" {
		t.Errorf("fixture after the restart: %q", got)
	}
}

func TestStartServerOnTakenPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	tmp := t.TempDir()
	_, _, err = app{stdout: io.Discard, stderr: io.Discard, tempDir: tmp}.startServer(ctx,
		serveConfig{port: l.Addr().(*net.TCPAddr).Port, generate: 100, seed: 1})
	if err == nil {
		t.Fatal("started on a taken port")
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("temporary dir left behind: %v", left)
	}
}
