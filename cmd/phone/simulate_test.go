package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/internal/phonecode"
)

// TestSimulate runs phones that wait to be vouched, then upload; the codes
// file names each phone, and -keys-out holds every key uploaded.
func TestSimulate(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{t: t, pending: 7, bundle: []byte("a bundle")}
	srv := httptest.NewServer(api)
	defer srv.Close()
	dir := t.TempDir()
	codes, keysOut := filepath.Join(dir, "codes.txt"), filepath.Join(dir, "keys.txt")
	var out bytes.Buffer
	err := realMain(context.Background(), []string{"simulate", "-n", "6", "-concurrency", "3", "-keys", "5", "-api", srv.URL,
		"-codes", codes, "-keys-out", keysOut, "-poll", "5ms", "-poll-max", "20ms", "-timeout", "30s"}, &out)
	if err != nil {
		t.Fatalf("simulate: %v\n%s", err, out.String())
	}
	b, err := os.ReadFile(codes)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	if len(lines) != 6 {
		t.Fatalf("%d codes, want 6", len(lines))
	}
	seen := map[string]bool{}
	for _, l := range lines {
		c, err := phonecode.Parse(l)
		if err != nil {
			t.Errorf("code %q: %v", l, err)
		}
		seen[c.String()] = true
	}
	if len(seen) != 6 {
		t.Error("two phones share a code")
	}
	if len(api.got) != 6 {
		t.Errorf("%d uploads, want 6", len(api.got))
	}
	keys, err := readKeys(keysOut)
	if err != nil || len(keys) != 30 {
		t.Errorf("keys-out: %d keys, %v", len(keys), err)
	}
	if !strings.Contains(out.String(), "done    6/6 uploaded, 6 vouched, 0 failed") || strings.Contains(out.String(), "\r") {
		t.Errorf("output (not a terminal: plain lines):\n%s", out.String())
	}
}
