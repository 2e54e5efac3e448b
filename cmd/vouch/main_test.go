package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/jackc/pgx/v5"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vouch/internal/testenv"
	"vouch/internal/testpki"
	"vouch/registry"
)

const vectors = "../../testdata/bundle/vectors.json"

func TestBundleVerify(t *testing.T) {
	tests := []struct {
		args   []string
		status int
		out    string
	}{
		{[]string{"-vectors", vectors, "../../testdata/bundle/cases/valid-gp.bin"}, 0, "OK"},
		{[]string{"-vectors", vectors, "-phone-key", strings.Repeat("ab", 32), "../../testdata/bundle/cases/valid-gp.bin"}, 1, "REFUSED  code-mismatch"},
		{[]string{"-vectors", vectors, "-lang", "nl", "../../testdata/bundle/cases/card-nameless.bin"}, 1, "naamloze pas"},
		{[]string{"-vectors", vectors, "-at", "2099-01-01T00:00:00Z", "../../testdata/bundle/cases/valid-gp.bin"}, 1, "cert-expired"},
		{[]string{"-vectors", vectors, "../../testdata/bundle/cases/garbage.bin"}, 1, "REFUSED  malformed"},
		{[]string{"-vectors", vectors}, 2, ""},
		{[]string{"-vectors", vectors, "-phone-key", "zz", "../../testdata/bundle/cases/valid-gp.bin"}, -1, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := realMain(context.Background(), append([]string{"bundle", "verify"}, tt.args...), &out, &errOut)
			status := 0
			var exit exitError
			switch {
			case errors.As(err, &exit):
				status = int(exit)
			case err != nil:
				status = -1
			}
			if status != tt.status {
				t.Fatalf("status %d (%v), want %d; stdout:\n%s", status, err, tt.status, out.String())
			}
			if !strings.Contains(out.String(), tt.out) {
				t.Errorf("stdout lacks %q:\n%s", tt.out, out.String())
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
	t.Setenv("VOUCH_UZI_ROOTS", "../../testdata/bundle/root.pem")
	t.Setenv("VOUCH_ATTESTATION_KEYS", "../../testdata/bundle/attestation.pub.pem")
	t.Setenv("VOUCH_CARD_PROFILE", "test")
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	t.Setenv("VOUCH_REGISTRY_URL", l.URL)
	t.Setenv("VOUCH_REGISTRY_BIND_DN", l.BindDN)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte(l.BindPassword), 0o600)
	t.Setenv("VOUCH_REGISTRY_BIND_PASSWORD_FILE", pw)

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
		res, err := http.Get("http://" + addr + "/readyz")
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
	if body["ready"] != true {
		t.Errorf("readyz = %v", body)
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
		{[]string{"900000010"}, 1, "register-card-mismatch"},
		{[]string{"123123123"}, 1, "not-in-register"},
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
	t.Setenv("VOUCH_REGISTRY_URL", "")
	if err := realMain(context.Background(), []string{"registry-sync", "-once"}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "VOUCH_REGISTRY_URL") {
		t.Errorf("without a register: %v", err)
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
