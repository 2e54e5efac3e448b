package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFederateRoleConfig: `vouch federate` without sites, with a site list
// that does not parse, a key file that does not load or an interval out of
// its range stops at start, naming the variable, before it touches a
// database (DATABASE_URL points nowhere).
func TestFederateRoleConfig(t *testing.T) {
	pem := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(pem, []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
	for _, tt := range []struct {
		sites, interval, want string
	}{
		{"", "", "VOUCH_FEDERATE_SITES, and none is set"},
		{"be https://be.example", "", "VOUCH_FEDERATE_SITES"},
		{"be https://be.example " + pem, "", "site be"},
		{"be https://be.example ../../testdata/bundle/attestation.pub.pem", "100ms", "VOUCH_FEDERATE_INTERVAL"},
	} {
		t.Setenv("VOUCH_FEDERATE_SITES", tt.sites)
		t.Setenv("VOUCH_FEDERATE_INTERVAL", tt.interval)
		err := realMain(context.Background(), []string{"federate"}, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("sites %q, interval %q: %v; want an error naming %q", tt.sites, tt.interval, err, tt.want)
		}
	}
	var stderr bytes.Buffer
	if err := realMain(context.Background(), []string{"federate", "push"}, &bytes.Buffer{}, &stderr); err != exitError(2) ||
		!strings.Contains(stderr.String(), "usage: vouch federate") {
		t.Errorf("vouch federate push: %v, %q", err, stderr.String())
	}
}
