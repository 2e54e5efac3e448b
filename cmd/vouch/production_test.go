package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestProductionBuildRefusesTestCards builds vouch with -tags production and
// shows it does not know the test card profile, so test cards can never be
// accepted by a production binary, whatever its configuration says.
func TestProductionBuildRefusesTestCards(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "vouch")
	if out, err := exec.Command("go", "build", "-tags", "production", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("production build: %v\n%s", err, out)
	}
	// A trust it cannot load is a failure to run (2), not a refusal (1).
	out, err := exec.Command(bin, "bundle", "verify", "-vectors", vectors, "../../testdata/bundle/cases/valid-gp.bin").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), `unknown card profile "test"`) {
		t.Errorf("production binary with the test profile: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "bundle", "verify", "../../testdata/bundle/cases/valid-gp.bin")
	cmd.Env = append(cmd.Environ(), "VOUCH_CARD_PROFILE=test", "VOUCH_UZI_ROOTS=../../testdata/bundle/root.pem")
	out, err = cmd.CombinedOutput()
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), `unknown card profile "test"`) {
		t.Errorf("production binary with VOUCH_CARD_PROFILE=test: %v\n%s", err, out)
	}
	cmd = exec.Command(bin, "bundle", "issue", "-card", "pkcs11:token=x", "-attestation", "pkcs11:token=y", "-code", "x", "-out", "/dev/null")
	cmd.Env = append(cmd.Environ(), "VOUCH_CARD_PROFILE=production")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "test card profile") {
		t.Errorf("production binary issued a bundle: %v\n%s", err, out)
	}
}
