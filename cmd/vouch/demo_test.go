//go:build !production

package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/vouch-nl/vouch/internal/phonecode"
)

// clearVouchEnv unsets every variable of Vouch's configuration for the
// test, as in a new shell; they are restored afterwards.
func clearVouchEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VOUCH_") || strings.HasPrefix(k, "NATS_") || k == "SOFTHSM2_CONF" || k == "DATABASE_URL" {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// TestMissingVariablesSayWhereFrom follows the README's operator commands
// in a new shell: each message that names a variable not set says where
// its value comes from, make demo's environment included.
func TestMissingVariablesSayWhereFrom(t *testing.T) {
	clearVouchEnv(t)
	dir := t.TempDir()
	bundle := filepath.Join(dir, "b.bin")
	if err := os.WriteFile(bundle, []byte("not a bundle"), 0o600); err != nil {
		t.Fatal(err)
	}
	issue := []string{"bundle", "issue", "-card", "pkcs11:token=vouch-gp;object=x", "-attestation", "pkcs11:token=vouch-backend;object=y",
		"-code", phonecode.FromPublicKey(make(ed25519.PublicKey, ed25519.PublicKeySize)).String(), "-out", filepath.Join(dir, "out")}
	tests := []struct {
		name string
		env  map[string]string // set before it runs
		args []string
		want []string // the message names these and says where each comes from
	}{
		{"issue without card URIs", nil, []string{"bundle", "issue", "-code", "X", "-out", "f"}, []string{"VOUCH_TEST_CARD_GP", "VOUCH_ATTESTATION_URI"}},
		{"issue without a test profile", nil, issue, []string{"VOUCH_CARD_PROFILE"}},
		{"issue without a register", map[string]string{"VOUCH_CARD_PROFILE": "test"}, issue, []string{"VOUCH_REGISTRY_URL"}},
		{"issue -publish without a bus", map[string]string{"VOUCH_CARD_PROFILE": "test", "VOUCH_REGISTRY_URL": "ldap://127.0.0.1:1"},
			append(issue[:len(issue)-2:len(issue)-2], "-publish"), []string{"NATS_URL", "VOUCH_BUS_TOKEN"}},
		{"issue without PINs", map[string]string{"VOUCH_CARD_PROFILE": "test", "VOUCH_REGISTRY_URL": "ldap://127.0.0.1:1"}, issue, []string{"VOUCH_CARD_PIN", "VOUCH_HSM_PIN"}},
		{"issue without roots", map[string]string{"VOUCH_CARD_PROFILE": "test", "VOUCH_REGISTRY_URL": "ldap://127.0.0.1:1", "VOUCH_CARD_PIN": "1", "VOUCH_HSM_PIN": "2"},
			issue, []string{"VOUCH_UZI_ROOTS"}},
		{"verify without roots", nil, []string{"bundle", "verify", bundle}, []string{"VOUCH_UZI_ROOTS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { // not parallel: t.Setenv
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			err := realMain(context.Background(), tt.args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("ran without %v", tt.want)
			}
			msg := stderr.String()
			var exit exitError
			if !errors.As(err, &exit) {
				msg += err.Error()
			}
			for _, v := range tt.want {
				if !strings.Contains(msg, v) {
					t.Errorf("the message does not name %s:\n%s", v, msg)
				}
				if src, ok := varSources[v]; ok && !strings.Contains(msg, v+" is "+src) {
					t.Errorf("the message does not say where %s comes from:\n%s", v, msg)
				}
			}
			if !strings.Contains(msg, `eval "$(bin/vouch demo env)"`) {
				t.Errorf("the message does not point at make demo's environment:\n%s", msg)
			}
		})
	}
	// A variable that is set, to something that does not work, is not
	// missing: no note.
	t.Setenv("VOUCH_REGISTRY_URL", "ldap://127.0.0.1:1")
	if err := explainMissing(errors.New("cannot reach the register (VOUCH_REGISTRY_URL)")); strings.Contains(err.Error(), "demo env") {
		t.Errorf("a note on a variable that is set: %v", err)
	}
}

// TestDemoEnv: `vouch demo env` prints the running demo's environment
// file, and refuses one no running demo holds (its register and bus are
// gone) or none at all, saying to start make demo.
func TestDemoEnv(t *testing.T) {
	clearVouchEnv(t)
	state := t.TempDir()
	t.Setenv("VOUCH_STATE_DIR", state)
	run := func() (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := realMain(context.Background(), []string{"demo", "env"}, &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}
	if out, errOut, err := run(); err != exitError(2) || out != "" || !strings.Contains(errOut, "start make demo") {
		t.Errorf("without a demo: %v, %q, %q", err, out, errOut)
	}
	const env = "export VOUCH_REGISTRY_URL='ldap://127.0.0.1:3890'\n"
	if err := os.WriteFile(filepath.Join(state, "demo.env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	lock, err := os.Create(filepath.Join(state, "demo.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if out, errOut, err := run(); err != exitError(2) || out != "" || !strings.Contains(errOut, "not running") {
		t.Errorf("a demo that stopped: %v, %q, %q", err, out, errOut)
	}
	// The demo holds its lock while it runs.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := run(); err != nil || out != env {
		t.Errorf("a running demo: %v, %q, %q", err, out, errOut)
	}
}

// TestDemoChildrenDoNotHoldItsLock: make demo holds a lock (fd 9) that
// refuses a second demo while it runs; a process it starts in the
// background must not inherit it, or one that outlives the demo (pcscd
// did) refuses every later demo. Each background start at the script's
// top level closes fd 9 (9>&-); card_loop's children inherit its closed
// fd 9. pcscd, which the demo stops at the end, runs as its child.
func TestDemoChildrenDoNotHoldItsLock(t *testing.T) {
	b, err := os.ReadFile("../../.ci/demo")
	if err != nil {
		t.Fatal(err)
	}
	background := regexp.MustCompile(`[^&>]&(\s+\w+=\$!)?\s*(#.*)?$`)
	inFunc, starts := false, 0
	for i, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasSuffix(line, "() {"):
			inFunc = true
		case line == "}":
			inFunc = false
		}
		if strings.HasPrefix(strings.TrimSpace(line), "#") || !background.MatchString(line) {
			continue
		}
		starts++
		if !inFunc && !strings.Contains(line, "9>&-") {
			t.Errorf(".ci/demo:%d starts a process that inherits the demo's lock: %s", i+1, strings.TrimSpace(line))
		}
	}
	// pcscd daemonized (setsid, or without --foreground) is no child the
	// demo can stop at the end.
	for i, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "/usr/sbin/pcscd") && !(strings.Contains(line, "--foreground") && background.MatchString(line)) || strings.Contains(line, "setsid") {
			t.Errorf(".ci/demo:%d starts pcscd where the demo cannot stop it: %s", i+1, strings.TrimSpace(line))
		}
	}
	if starts < 4 {
		t.Errorf("found %d background starts in .ci/demo; the check no longer reads it", starts)
	}
}
