package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
	"github.com/vouch-nl/vouch/registry"
)

const (
	vectors = "../../testdata/bundle/vectors.json"
	cases   = "../../testdata/bundle/cases/"
)

// bundleVerify runs `vouch bundle verify args` in process: its exit status
// (-1 for an error that main would report with status 1 and no verdict) and
// what it wrote.
func bundleVerify(args ...string) (status int, stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = realMain(context.Background(), append([]string{"bundle", "verify"}, args...), &out, &errOut)
	var exit exitError
	switch {
	case errors.As(err, &exit):
		status = int(exit)
	case err != nil:
		status = -1
	}
	return status, out.String(), errOut.String(), err
}

// checkCannotRun checks the output of a command that could not run: nothing
// on stdout, one line on stderr that says why, no stack.
func checkCannotRun(t *testing.T, stdout, stderr, want string) {
	t.Helper()
	if stdout != "" {
		t.Errorf("stdout of a command that could not run:\n%s", stdout)
	}
	if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "vouch bundle verify: ") || strings.Contains(stderr, "goroutine") {
		t.Errorf("stderr is not one line saying why:\n%s", stderr)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr)
	}
}

// copyVectors copies testdata/bundle to a temporary directory, lets edit
// change the vectors' JSON there, and returns the copy's vectors.json.
func copyVectors(t *testing.T, edit func(v map[string]any)) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Dir(vectors))); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "vectors.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	edit(v)
	if b, err = json.Marshal(v); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBundleVerify(t *testing.T) {
	dir := t.TempDir()
	garbled := filepath.Join(dir, "garbled.json")
	if err := os.WriteFile(garbled, []byte(`{"now": `), 0o644); err != nil {
		t.Fatal(err)
	}
	// The same trust without CRLs: what a phone has.
	noCRLs := copyVectors(t, func(v map[string]any) { delete(v["trust"].(map[string]any), "crls") })
	noCRLsCase := filepath.Join(filepath.Dir(noCRLs), "cases", "valid-gp.bin")
	const revocationNote = "  note            revocation not checked: no CRLs configured (VOUCH_UZI_CRLS)\n"
	tests := []struct {
		name   string
		args   []string
		status int
		out    string // stdout must contain it
		notOut string // stdout must not contain it
		errOut string // for status 2: the one line on stderr must contain it
	}{
		{"valid", []string{"-vectors", vectors, "-lang", "en", cases + "valid-gp.bin"}, 0, `phone key       from the vectors' case "valid-gp"`, "note", ""},
		{"other phone", []string{"-vectors", vectors, "-phone-key", strings.Repeat("ab", 32), cases + "valid-gp.bin"}, 1, "REFUSED  code-mismatch", "", ""},
		{"nameless in Dutch", []string{"-vectors", vectors, "-lang", "nl", cases + "card-nameless.bin"}, 1, "naamloze pas", "", ""},
		{"after the card expired", []string{"-vectors", vectors, "-at", "2099-01-01T00:00:00Z", cases + "valid-gp.bin"}, 1, "cert-expired", "", ""},
		{"garbage", []string{"-vectors", vectors, cases + "garbage.bin"}, 1, "REFUSED  malformed", "", ""},
		{"oversized vector", []string{"-vectors", vectors, cases + "oversized.bin"}, 1, "REFUSED  too-large", "", ""},
		// The phone key comes from the case the file is, however spelled.
		{"vectors' phone key", []string{"-vectors", vectors, cases + "code-mismatch.bin"}, 1, "REFUSED  code-mismatch", "", ""},
		{"vectors' phone key, path spelled otherwise", []string{"-vectors", vectors, cases + "../cases/./code-mismatch.bin"}, 1, "REFUSED  code-mismatch", "", ""},
		{"no CRLs", []string{"-vectors", noCRLs, "-lang", "en", noCRLsCase}, 0, revocationNote, "", ""},
		{"no CRLs in Dutch", []string{"-vectors", noCRLs, "-lang", "nl", noCRLsCase}, 0, "  note            niet nagegaan of de pas is ingetrokken: geen CRL's ingesteld (VOUCH_UZI_CRLS)\n", "", ""},

		{"no FILE", []string{"-vectors", vectors}, 2, "", "", ""},
		{"missing FILE", []string{"-vectors", vectors, cases + "no-such.bin"}, 2, "", "", "no such file"},
		{"FILE a directory", []string{"-vectors", vectors, dir}, 2, "", "", "is a directory"},
		{"missing vectors", []string{"-vectors", filepath.Join(dir, "none.json"), cases + "valid-gp.bin"}, 2, "", "", "-vectors"},
		{"garbled vectors", []string{"-vectors", garbled, cases + "valid-gp.bin"}, 2, "", "", "-vectors"},
		{"bad -phone-key", []string{"-vectors", vectors, "-phone-key", "zz", cases + "valid-gp.bin"}, 2, "", "", "-phone-key: want 64 hex digits"},
		{"short -phone-key", []string{"-vectors", vectors, "-phone-key", "abcd", cases + "valid-gp.bin"}, 2, "", "", "-phone-key"},
		{"bad -at", []string{"-vectors", vectors, "-at", "yesterday", cases + "valid-gp.bin"}, 2, "", "", "-at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, out, errOut, err := bundleVerify(tt.args...)
			if status != tt.status {
				t.Fatalf("status %d (%v), want %d; stdout:\n%s\nstderr:\n%s", status, err, tt.status, out, errOut)
			}
			if tt.errOut != "" {
				checkCannotRun(t, out, errOut, tt.errOut)
			}
			if !strings.Contains(out, tt.out) {
				t.Errorf("stdout lacks %q:\n%s", tt.out, out)
			}
			if tt.notOut != "" && strings.Contains(out, tt.notOut) {
				t.Errorf("stdout has %q:\n%s", tt.notOut, out)
			}
		})
	}
}

// TestBundleVerifyReadsAtMostABundle shows that an input of any size costs
// one bundle's worth of reading: a 64 MiB file is refused too-large without
// being read, and standard input is read no further than 16 KiB and a byte.
// It measures the process's allocations, so it runs alone.
func TestBundleVerifyReadsAtMostABundle(t *testing.T) {
	huge := filepath.Join(t.TempDir(), "huge.bin")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	status, out, errOut, err := bundleVerify("-vectors", vectors, huge)
	runtime.ReadMemStats(&after)
	if status != 1 || !strings.Contains(out, "REFUSED  too-large") {
		t.Errorf("64 MiB file: status %d (%v)\n%s%s", status, err, out, errOut)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
		t.Errorf("verifying a 64 MiB file allocated %d MiB", n>>20)
	}

	endless := &countingReader{}
	stdin = endless
	t.Cleanup(func() { stdin = os.Stdin })
	status, out, errOut, err = bundleVerify("-vectors", vectors, "-")
	if status != 1 || !strings.Contains(out, "REFUSED  too-large") {
		t.Errorf("endless stdin: status %d (%v)\n%s%s", status, err, out, errOut)
	}
	if endless.n > protocol.MaxBundleSize+1 {
		t.Errorf("read %d bytes of stdin, want at most %d", endless.n, protocol.MaxBundleSize+1)
	}

	valid, err := os.ReadFile(cases + "valid-gp.bin")
	if err != nil {
		t.Fatal(err)
	}
	stdin = bytes.NewReader(valid)
	status, out, errOut, err = bundleVerify("-vectors", vectors, "-")
	if status != 0 || !strings.Contains(out, "OK") {
		t.Errorf("valid bundle on stdin: status %d (%v)\n%s%s", status, err, out, errOut)
	}
}

// countingReader is an endless input that counts what was read of it.
type countingReader struct{ n int }

func (r *countingReader) Read(p []byte) (int, error) {
	clear(p)
	r.n += len(p)
	return len(p), nil
}

// TestBundleVerifyConfig verifies with the trust from the environment, as
// support staff do: a configuration that does not load is a failure to run
// (2), and an accepted bundle says when revocation was not checked.
func TestBundleVerifyConfig(t *testing.T) {
	b, err := os.ReadFile(vectors)
	if err != nil {
		t.Fatal(err)
	}
	var vec trust.Vectors
	if err := json.Unmarshal(b, &vec); err != nil {
		t.Fatal(err)
	}
	abs := func(files ...string) string {
		out := make([]string, len(files))
		for i, f := range files {
			out[i] = filepath.Join(filepath.Dir(vectors), f)
		}
		return strings.Join(out, ",")
	}
	var cas []string
	for typ, f := range vec.Trust.CAs {
		cas = append(cas, typ+":"+abs(f))
	}
	good := map[string]string{
		"VOUCH_UZI_ROOTS":         abs(vec.Trust.Roots...),
		"VOUCH_UZI_CAS":           strings.Join(cas, ","),
		"VOUCH_UZI_INTERMEDIATES": abs(vec.Trust.Intermediates...),
		"VOUCH_UZI_CRLS":          abs(vec.Trust.CRLs...),
		"VOUCH_ATTESTATION_KEYS":  abs(vec.Trust.AttestationKeys...),
		"VOUCH_JURISDICTION":      vec.Trust.Jurisdiction,
		"VOUCH_CARD_PROFILE":      vec.Trust.Profile,
		"VOUCH_VOUCH_PROFESSIONS": strings.Join(vec.Trust.Professions, ","),
	}
	at := vec.Now.Format(time.RFC3339)
	tests := []struct {
		name   string
		env    map[string]string // changes to good
		status int
		out    string // stdout (0, 1) or stderr (2) must contain it
	}{
		{"with CRLs", nil, 0, "OK"},
		{"without CRLs", map[string]string{"VOUCH_UZI_CRLS": ""}, 0, "revocation not checked: no CRLs configured (VOUCH_UZI_CRLS)"},
		{"no roots", map[string]string{"VOUCH_UZI_ROOTS": ""}, 2, "no UZI root CA configured"},
		{"missing root file", map[string]string{"VOUCH_UZI_ROOTS": "/nonexistent/root.pem"}, 2, "/nonexistent/root.pem"},
		// A production build knows no test profile; this build knows no "nosuch".
		{"unknown profile", map[string]string{"VOUCH_CARD_PROFILE": "nosuch"}, 2, `unknown card profile "nosuch"`},
		{"bad card type", map[string]string{"VOUCH_UZI_CAS": "X:" + abs(vec.Trust.Roots[0])}, 2, `card type "X"`},
		{"missing CRL", map[string]string{"VOUCH_UZI_CRLS": "/nonexistent/ca.crl"}, 2, "/nonexistent/ca.crl"},
		{"both a variable and its file", map[string]string{"VOUCH_JURISDICTION_FILE": "/dev/null"}, 2, "VOUCH_JURISDICTION"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { // not parallel: t.Setenv
			env := maps.Clone(good)
			maps.Copy(env, tt.env)
			for k, v := range env {
				t.Setenv(k, v) // and restored afterwards
				if v == "" {
					os.Unsetenv(k) // an empty list variable would name the file ""
				}
			}
			status, out, errOut, err := bundleVerify("-at", at, "-lang", "en", cases+"valid-gp.bin")
			if status != tt.status {
				t.Fatalf("status %d (%v), want %d; stdout:\n%s\nstderr:\n%s", status, err, tt.status, out, errOut)
			}
			if tt.status == 2 {
				checkCannotRun(t, out, errOut, tt.out)
			} else if !strings.Contains(out, tt.out) {
				t.Errorf("stdout lacks %q:\n%s", tt.out, out)
			}
			if tt.status == 0 && (env["VOUCH_UZI_CRLS"] == "") != strings.Contains(out, "revocation not checked") {
				t.Errorf("the revocation note is wrong:\n%s", out)
			}
		})
	}
}

func TestConfigFromFile(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "url")
	if err := os.WriteFile(secret, []byte("postgres://from-file/x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL_FILE", secret)
	var cfg migrateConfig
	if err := loadConfig(context.Background(), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Database.URL != "postgres://from-file/x" {
		t.Errorf("URL = %q", cfg.Database.URL)
	}
	t.Setenv("DATABASE_URL", "postgres://env/x")
	var again migrateConfig
	if err := loadConfig(context.Background(), &again); err == nil {
		t.Error("both DATABASE_URL and DATABASE_URL_FILE accepted")
	}
}

// TestAll starts `vouch all` against a real database and an embedded bus and
// asks its health endpoints.
func TestAll(t *testing.T) {
	url := testenv.DatabaseURL(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv("DATABASE_URL", url)
	t.Setenv("VOUCH_BUS_DIR", t.TempDir())
	t.Setenv("VOUCH_HTTP_ADDR", addr)
	// Readiness is on the operations listener.
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	ops := free()
	t.Setenv("VOUCH_OPS_LISTEN", ops)
	t.Setenv("VOUCH_INGEST_ADDR", free())
	// Revocation only from the CRLs the sync fetches and stores: the
	// server is ready once it has read them back.
	tcfg, _ := testTrust(t)
	setTrustEnv(t, tcfg)
	t.Setenv("VOUCH_UZI_CRLS", "")
	t.Setenv("VOUCH_UZI_CRL_SOURCES", strings.Join(tcfg.CRLs, ","))
	t.Setenv("VOUCH_UZI_CRL_REFRESH", "100ms")
	t.Setenv("VOUCH_ATTESTATION_KEYS", "../../testdata/bundle/attestation.pub.pem")
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	t.Setenv("VOUCH_REGISTRY_URL", l.URL)
	t.Setenv("VOUCH_REGISTRY_BIND_DN", l.BindDN)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte(l.BindPassword), 0o600)
	t.Setenv("VOUCH_REGISTRY_BIND_PASSWORD_FILE", pw)
	logDir, logKey := transparencyEnv(t) // the transparency log's writer too
	// The statistics job publishes beside the exports, which the origin
	// serves.
	exportDir := t.TempDir()
	t.Setenv("VOUCH_EXPORT_DIR", exportDir)
	cdnAddr := free()
	t.Setenv("VOUCH_CDN_ADDR", cdnAddr)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() { done <- realMain(ctx, []string{"all"}, &bytes.Buffer{}, &lockedWriter{w: &logs}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("vouch all: %v", err)
		}
	}()
	var body map[string]any
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + ops + "/readyz")
		if err == nil {
			json.NewDecoder(res.Body).Decode(&body)
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready in time: %v %v", err, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if body["ready"] != true || body["checks"].(map[string]any)["revocation"] != "ok" {
		t.Errorf("readyz = %v", body)
	}
	waitTransparencyCheckpoint(t, logDir, logKey)
	// The statistics job ran: its public files are on the origin.
	for _, name := range []string{"stats.json", "stats.csv"} {
		for {
			res, err := http.Get("http://" + cdnAddr + "/" + name)
			if err == nil {
				res.Body.Close()
				if res.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("vouch all published no %s: %v", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The register is mirrored in the background.
	db, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	for {
		var n int
		if err := db.QueryRow(context.Background(), `select count(*) from registry_entries`).Scan(&n); err == nil && n == len(testpki.Cards()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("vouch all did not mirror the register")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRegistrySyncOnce(t *testing.T) {
	url := testenv.DatabaseURL(t)
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	t.Setenv("DATABASE_URL", url)
	t.Setenv("VOUCH_BUS_DIR", t.TempDir())
	t.Setenv("VOUCH_REGISTRY_URL", l.URL)
	t.Setenv("VOUCH_REGISTRY_BIND_DN", l.BindDN)
	t.Setenv("VOUCH_REGISTRY_BIND_PASSWORD", l.BindPassword)
	var logs bytes.Buffer
	if err := realMain(context.Background(), []string{"registry-sync", "-once"}, &bytes.Buffer{}, &logs); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	if strings.Contains(logs.String(), l.BindPassword) {
		t.Error("the bind password reached the log")
	}
	db, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	var n int
	if err := db.QueryRow(context.Background(), `select count(*) from registry_entries`).Scan(&n); err != nil || n != len(testpki.Cards()) {
		t.Errorf("mirror has %d rows (%v)", n, err)
	}
	// Support staff ask why a clinician may (not) vouch.
	for _, tt := range []struct {
		args   []string
		status int
		out    string
	}{
		{[]string{"900000001"}, 0, "ALLOWED  license-active"},
		{[]string{"-lang", "nl", "900000024"}, 1, "geschorst"},
		{[]string{"900000024", "-lang", "nl"}, 1, "geschorst"},
		{[]string{"900000005"}, 1, "REFUSED  role-may-not-vouch"},          // the pharmacist
		{[]string{"900000010"}, 1, "REFUSED  card-may-not-vouch"},          // staff
		{[]string{"-type", "Z", "900000010"}, 1, "register-card-mismatch"}, // a card claiming otherwise
		{[]string{"-role", "01.015", "900000001"}, 0, "ALLOWED  license-active"},
		{[]string{"123123123"}, 1, "not-in-register"},
		{[]string{"12345"}, 2, ""},
		{[]string{"900000001", "900000002"}, 2, ""},
	} {
		var out bytes.Buffer
		err := realMain(context.Background(), append([]string{"license", "check"}, tt.args...), &out, &bytes.Buffer{})
		status := 0
		var exit exitError
		if errors.As(err, &exit) {
			status = int(exit)
		} else if err != nil {
			status = -1
		}
		if status != tt.status || !strings.Contains(out.String(), tt.out) {
			t.Errorf("license check %v: status %d (%v)\n%s", tt.args, status, err, out.String())
		}
	}
	// Flags that would be ignored are refused, and nothing runs.
	for _, args := range [][]string{{"-accept-shrink"}, {"-once", "-accept-shrink"}, {"-full"}, {"-once", "extra"}, {"-reconcile"}, {"-once", "-full", "-reconcile"}} {
		var stderr bytes.Buffer
		err := realMain(context.Background(), append([]string{"registry-sync"}, args...), &bytes.Buffer{}, &stderr)
		if status, ok := err.(exitError); !ok || status != 2 || !strings.Contains(stderr.String(), "vouch registry-sync:") {
			t.Errorf("registry-sync %v: %v, stderr %q; want exit 2 and why", args, err, stderr.String())
		}
	}
	// An operator reconciles the bucket by hand.
	if err := realMain(context.Background(), []string{"registry-sync", "-once", "-reconcile"}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Errorf("registry-sync -once -reconcile: %v", err)
	}
	t.Setenv("VOUCH_REGISTRY_URL", "")
	if err := realMain(context.Background(), []string{"registry-sync", "-once"}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "VOUCH_REGISTRY_URL") {
		t.Errorf("without a register: %v", err)
	}
}

// setTrustEnv puts c's trust configuration in the environment.
func setTrustEnv(t *testing.T, c trust.Config) {
	t.Helper()
	var cas []string
	for typ, f := range c.CAs {
		cas = append(cas, typ+":"+f)
	}
	t.Setenv("VOUCH_UZI_ROOTS", strings.Join(c.Roots, ","))
	t.Setenv("VOUCH_UZI_CAS", strings.Join(cas, ","))
	t.Setenv("VOUCH_UZI_CRLS", strings.Join(c.CRLs, ","))
	t.Setenv("VOUCH_CARD_PROFILE", c.Profile)
}

// TestAllRefusesWithoutRevocation: configured like a phone, with no CRLs to
// check cards against, a server does not start.
func TestAllRefusesWithoutRevocation(t *testing.T) {
	tcfg, _ := testTrust(t)
	setTrustEnv(t, tcfg)
	t.Setenv("VOUCH_ATTESTATION_KEYS", "../../testdata/bundle/attestation.pub.pem")
	t.Setenv("DATABASE_URL", testenv.DatabaseURL(t))
	t.Setenv("VOUCH_BUS_DIR", t.TempDir())
	t.Setenv("VOUCH_UZI_CRLS", "")
	t.Setenv("VOUCH_UZI_CRL_SOURCES", "")
	err := realMain(context.Background(), []string{"all"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "no revocation source") {
		t.Errorf("got %v", err)
	}
}

func TestAllRefusesBadTrust(t *testing.T) {
	t.Setenv("VOUCH_UZI_ROOTS", "../../testdata/bundle/attestation.pub.pem")
	t.Setenv("VOUCH_CARD_PROFILE", "test")
	err := realMain(context.Background(), []string{"all"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("got %v", err)
	}
}

// TestHelpChangesNothing: every command of the command table, and every
// group, answers -h with its help on standard output and status 0, and
// runs nothing: no log line, no bus state, nothing served or written.
// DATABASE_URL points nowhere and the context is over, so a command that
// ran would fail or return at once without its help.
func TestHelpChangesNothing(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1")
	state := t.TempDir()
	for _, v := range []string{"VOUCH_BUS_DIR", "VOUCH_EXPORT_DIR", "VOUCH_CDN_DIR", "VOUCH_INGEST_ACCESS_LOG_DIR", "VOUCH_STATE_DIR"} {
		dir := filepath.Join(state, v)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Setenv(v, dir)
	}
	for _, v := range []string{"VOUCH_HTTP_ADDR", "VOUCH_INGEST_ADDR", "VOUCH_CDN_ADDR"} {
		t.Setenv(v, "127.0.0.1:0")
	}
	// Trust that loads, so that a role that ran would get further than
	// its configuration.
	tcfg, _ := testTrust(t)
	setTrustEnv(t, tcfg)
	t.Setenv("VOUCH_ATTESTATION_KEYS", "../../testdata/bundle/attestation.pub.pem")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	var cases [][]string
	groups := map[string]bool{}
	for _, c := range commands {
		name := strings.Fields(c.name)
		for _, h := range []string{"-h", "-help", "--help"} {
			cases = append(cases, append(slices.Clone(name), h))
		}
		if len(name) > 1 && !groups[name[0]] {
			groups[name[0]] = true
			cases = append(cases, []string{name[0], "-h"})
		}
	}
	for _, want := range []string{"all", "backoffice", "ingest", "store", "aggregate", "cdn", "cleanup", "federate pull", "migrate",
		"registry-sync", "license check", "bundle verify", "bundle issue", "audit verify", "version"} {
		if !slices.ContainsFunc(commands, func(c command) bool { return c.name == want }) {
			t.Errorf("the command table lacks %q", want)
		}
	}
	// -h after other flags and arguments.
	cases = append(cases, []string{"registry-sync", "-once", "-h"}, []string{"license", "check", "900000024", "-h"},
		[]string{"audit", "verify", "-head", "00", "-h"}, []string{"aggregate", "-once", "-h"}, []string{"cleanup", "-once", "-h"},
		[]string{"bundle", "issue", "-publish", "-h"}, []string{"-h"}, []string{"help"})
	for _, args := range cases {
		var stdout, stderr bytes.Buffer
		// Some commands print their flags on the process's standard output.
		osOut := captureStdout(t, func() {
			err := realMain(ctx, args, &stdout, &stderr)
			var exit exitError
			if err != nil && (!errors.As(err, &exit) || exit != 0) {
				t.Errorf("%v: %v, want status 0\n%s", args, err, stderr.String())
			}
		})
		out := stdout.String() + osOut
		if !strings.Contains(strings.ToLower(out), "usage") {
			t.Errorf("%v: no help on stdout: %q (stderr %q)", args, out, stderr.String())
		}
		if stderr.Len() > 0 {
			t.Errorf("%v: wrote to stderr (it ran?): %q", args, stderr.String())
		}
	}
	for _, v := range []string{"VOUCH_BUS_DIR", "VOUCH_EXPORT_DIR", "VOUCH_CDN_DIR", "VOUCH_INGEST_ACCESS_LOG_DIR", "VOUCH_STATE_DIR"} {
		if ents, _ := os.ReadDir(filepath.Join(state, v)); len(ents) > 0 {
			t.Errorf("asking for help wrote to %s: %v", v, ents)
		}
	}
	// The usage names every command.
	for _, c := range commands {
		if !strings.Contains(usage(), "  "+c.name+" ") {
			t.Errorf("the usage lacks %q:\n%s", c.name, usage())
		}
	}
	// Arguments a command does not take are a usage error, and it does not run.
	for _, args := range [][]string{{"all", "now"}, {"migrate", "-f"}, {"ingest", "-x"}, {"store", "now"}, {"cdn", "-h", "x"}} {
		var stderr bytes.Buffer
		if err := realMain(ctx, args, &bytes.Buffer{}, &stderr); err != exitError(2) || !strings.Contains(stderr.String(), "takes no arguments") {
			t.Errorf("%v: %v, %q", args, err, stderr.String())
		}
	}
}

// captureStdout runs f and returns what it wrote to os.Stdout.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	tmp, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	saved := os.Stdout
	os.Stdout = tmp
	func() {
		defer func() { os.Stdout = saved }()
		f()
	}()
	b, err := os.ReadFile(tmp.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMigrateCreatesDatabase: `vouch migrate` creates a database that is
// not there yet (asking the maintenance database only then) and migrates it.
func TestMigrateCreatesDatabase(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/") + "_new"
	u.Path = "/" + name
	admin := *u
	admin.Path = "/postgres"
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), admin.String())
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(context.Background())
		c.Exec(context.Background(), "drop database if exists "+name+" with (force)")
	})
	ctx := t.Context()
	for range 2 { // the second run finds the database and the schema there
		if err := migrate(ctx, database.Config{URL: u.String()}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v int
	if err := c.QueryRow(ctx, `select version from `+database.VersionTable).Scan(&v); err != nil || v == 0 {
		t.Fatalf("schema version %d, %v", v, err)
	}
}
