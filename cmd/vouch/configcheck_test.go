package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// onlyEnv replaces the whole environment with env for the test: a role's
// check names every Vouch variable it does not read, so the developer's
// own must not leak in. Not parallel, like t.Setenv.
func onlyEnv(t *testing.T, env map[string]string) {
	t.Helper()
	t.Setenv("VOUCH_CONFIG_CHECK_TEST", "") // refuses a parallel test, and restores nothing else
	saved := os.Environ()
	os.Clearenv()
	t.Cleanup(func() {
		os.Clearenv()
		for _, kv := range saved {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
	})
	for k, v := range env {
		os.Setenv(k, v)
	}
}

// TestConfigCheck: vouch config check ROLE exits 0 on a good environment
// and 1 on a bad one, naming the variable at fault on standard output:
// a value that does not parse, a value its check refuses, a variable the
// role does not read, one set twice; never a secret it read.
func TestConfigCheck(t *testing.T) {
	tcfg, _ := testTrust(t)
	var cas []string
	for typ, f := range tcfg.CAs {
		cas = append(cas, typ+":"+f)
	}
	trustEnv := map[string]string{"VOUCH_UZI_ROOTS": strings.Join(tcfg.Roots, ","), "VOUCH_UZI_CAS": strings.Join(cas, ","),
		"VOUCH_CARD_PROFILE":     "test",
		"VOUCH_ATTESTATION_KEYS": "../../testdata/bundle/attestation.pub.pem"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name   string
		role   string
		env    map[string]string
		status int
		want   []string // on standard output
		never  string
	}{
		{name: "defaults", role: "store", env: nil, want: []string{"vouch config check store: ok"}},
		{name: "unparsable", role: "store", env: with(nil, "VOUCH_STORE_BATCH", "x"), status: 1,
			want: []string{"VOUCH_STORE_BATCH"}},
		{name: "refused value", role: "aggregate", env: with(nil, "VOUCH_EXPORT_DIR", dir, "VOUCH_EXPORT_KEY_URIS",
			"pkcs11:token=t;object=k?module-path=/x.so", "VOUCH_EXPORT_PERIOD", "-1h"), status: 1, want: []string{"VOUCH_EXPORT_PERIOD"}},
		{name: "typo", role: "store", env: with(nil, "VOUCH_STORE_BACTH", "10"), status: 1,
			want: []string{"VOUCH_STORE_BACTH is set, but vouch store does not read it"}},
		{name: "another role's variable", role: "ingest", env: with(trustEnv, "VOUCH_UZI_CRLS", strings.Join(tcfg.CRLs, ","),
			"VOUCH_EXPORT_DIR", dir), status: 1, want: []string{"VOUCH_EXPORT_DIR is set, but vouch ingest does not read it"}},
		{name: "ingest ok", role: "ingest", env: with(trustEnv, "VOUCH_UZI_CRLS", strings.Join(tcfg.CRLs, ","),
			"NATS_URL", "nats://n1:4222,nats://n2:4222,nats://n3:4222", "VOUCH_BUS_REPLICAS", "3",
			"VOUCH_BUS_TOKEN_FILE", file("token", strings.Repeat("t", 32)), "VOUCH_INGEST_ADDR", ":8081"),
			want: []string{"ingest: ok"}},
		{name: "no trust", role: "ingest", env: nil, status: 1, want: []string{"VOUCH_UZI_ROOTS"}},
		{name: "bus", role: "store", env: with(nil, "VOUCH_BUS_REPLICAS", "2", "NATS_URL", "nats://a:4222"), status: 1,
			want: []string{"VOUCH_BUS_REPLICAS"}},
		{name: "database", role: "migrate", env: with(nil, "DATABASE_URL", "postgres://u:hunter2@h:notaport/db"), status: 1,
			want: []string{"DATABASE_URL does not parse"}, never: "hunter2"},
		{name: "database hosts", role: "cleanup", env: with(nil, "DATABASE_URL_FILE",
			file("dburl", "postgres://u:hunter2@pg-a:5432,pg-b:5432/vouch?target_session_attrs=primary")),
			want: []string{"cleanup: ok"}, never: "hunter2"},
		{name: "set twice", role: "store", env: with(nil, "VOUCH_STORE_BATCH", "10", "VOUCH_STORE_BATCH_FILE", file("batch", "10")),
			status: 1, want: []string{"VOUCH_STORE_BATCH and VOUCH_STORE_BATCH_FILE"}},
		{name: "from a file", role: "store", env: with(nil, "VOUCH_STORE_BATCH_FILE", file("batch2", "x")), status: 1,
			want: []string{"VOUCH_STORE_BATCH"}},
		{name: "cdn", role: "cdn", env: with(nil, "VOUCH_CDN_MAX_CONNS", "-1"), status: 1,
			want: []string{"VOUCH_CDN_DIR", "VOUCH_CDN_MAX_CONNS"}},
		{name: "federate", role: "federate", env: nil, status: 1, want: []string{"VOUCH_FEDERATE_SITES"}},
		{name: "registry-sync", role: "registry-sync", env: with(nil, "VOUCH_REGISTRY_URL", "http://registry"), status: 1,
			want: []string{"VOUCH_REGISTRY_URL"}},
		{name: "backoffice", role: "backoffice", env: with(trustEnv, "VOUCH_BACKOFFICE_ORIGIN", "ftp://x"), status: 1,
			want: []string{"VOUCH_ATTESTATION_URI", "VOUCH_BACKOFFICE_ORIGIN"}},
		{name: "all", role: "all", env: trustEnv, status: 1, want: []string{"no revocation source"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			onlyEnv(t, c.env)
			status, out, errOut := configCheck(t, c.role)
			if status != c.status {
				t.Errorf("status %d, want %d; stdout:\n%s", status, c.status, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("stdout does not name %q:\n%s", w, out)
				}
			}
			if c.never != "" && strings.Contains(out+errOut, c.never) {
				t.Errorf("output shows %q:\n%s%s", c.never, out, errOut)
			}
		})
	}
}

// configCheck runs vouch config check role in the test's environment and
// returns its exit status and outputs.
func configCheck(t *testing.T, role string) (status int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := realMain(context.Background(), []string{"config", "check", role}, &out, &errOut)
	var exit exitError
	if errors.As(err, &exit) {
		status = int(exit)
	} else if err != nil {
		t.Fatalf("error %v", err)
	}
	return status, out.String(), errOut.String()
}

// TestConfigCheckUsage: -h prints the roles, an unknown role or a missing
// one is a usage error (2), and every role checked is a command of vouch.
func TestConfigCheckUsage(t *testing.T) {
	for _, args := range [][]string{{"config", "check", "-h"}, {"config", "-h"}} {
		var stdout bytes.Buffer
		if err := realMain(context.Background(), args, &stdout, &bytes.Buffer{}); err != nil {
			t.Errorf("%q: %v", args, err)
		}
		if !strings.Contains(stdout.String(), "registry-sync") {
			t.Errorf("%q: usage lists no roles:\n%s", args, stdout.String())
		}
	}
	for _, args := range [][]string{{"config", "check", "nosuchrole"}, {"config", "check"}, {"config", "verify", "store"}} {
		err := realMain(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
		if exit, ok := err.(exitError); !ok || exit != 2 {
			t.Errorf("%q: got %v, want status 2", args, err)
		}
	}
	for role := range roleChecks() {
		// A group's role is its server command (transparency: log).
		if c, ok := lookup(role); !ok || strings.Fields(c.name)[0] != role {
			t.Errorf("config check knows role %q, which is not a command", role)
		}
	}
}
