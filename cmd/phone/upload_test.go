package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/exposure"
)

// TestUpload checks the request a phone sends — padded to its block,
// marked real, signed, keys within GAEN's rules — and that after two 503s
// it sends the identical bytes again; the keys it made are in -keys.
func TestUpload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "phone.key")
	priv, err := createKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	bundle := make([]byte, 1500)
	rand.Read(bundle)
	bundleFile := filepath.Join(dir, "bundle.bin")
	os.WriteFile(bundleFile, bundle, 0o600)
	api := &fakeAPI{t: t, fail: 2}
	srv := httptest.NewServer(api)
	defer srv.Close()
	keysFile := filepath.Join(dir, "keys.txt")
	var out bytes.Buffer
	if err := realMain(context.Background(), []string{"upload", "-key", keyFile, "-api", srv.URL, "-bundle", bundleFile, "-keys", keysFile, "-n", "14"}, &out); err != nil {
		t.Fatalf("upload: %v\n%s", err, out.String())
	}
	if !strings.HasPrefix(out.String(), "OK  14 keys published") {
		t.Errorf("output %q", out.String())
	}
	if len(api.uploads) != 3 || len(api.got) != 1 {
		t.Fatalf("%d requests, %d accepted; want 3 and 1", len(api.uploads), len(api.got))
	}
	for i, b := range api.uploads[1:] {
		if !bytes.Equal(b, api.uploads[0]) {
			t.Errorf("retry %d sent other bytes", i+1)
		}
	}
	req := api.got[0]
	if !bytes.Equal(req.Bundle, bundle) || !bytes.Equal(req.PublicKey, priv.Public().(ed25519.PublicKey)) {
		t.Error("upload carries another bundle or key")
	}
	written, err := readKeys(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	var sent []exposure.Key
	for _, k := range req.Keys {
		var e exposure.Key
		copy(e.Data[:], k.Key)
		e.RollingStart, e.RollingPeriod, e.TransmissionRisk = k.RollingStartIntervalNumber, k.RollingPeriod, k.TransmissionRisk
		sent = append(sent, e)
	}
	if diff := cmp.Diff(written, sent); diff != "" {
		t.Errorf("keys file and upload differ (-file +sent):\n%s", diff)
	}

	// A second upload with the same -keys sends the same keys.
	api2 := &fakeAPI{t: t}
	srv2 := httptest.NewServer(api2)
	defer srv2.Close()
	if err := realMain(context.Background(), []string{"upload", "-key", keyFile, "-api", srv2.URL, "-bundle", bundleFile, "-keys", keysFile}, &out); err != nil {
		t.Fatal(err)
	}
	if len(api2.got) != 1 || cmp.Diff(api2.got[0].Keys, req.Keys) != "" {
		t.Error("the second upload did not send the keys of the keys file")
	}
}

func TestUploadRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "phone.key")
	if _, err := createKey(keyFile); err != nil {
		t.Fatal(err)
	}
	bundleFile := filepath.Join(dir, "bundle.bin")
	os.WriteFile(bundleFile, []byte("bundle"), 0o600)
	// 409: a replay. Not retried, and the error names the API's code.
	srv := httptest.NewServer(conflict{})
	defer srv.Close()
	err := realMain(context.Background(), []string{"upload", "-key", keyFile, "-api", srv.URL, "-bundle", bundleFile, "-keys", filepath.Join(dir, "k.txt")}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "409 authorization-used") {
		t.Errorf("got %v", err)
	}
	if err := realMain(context.Background(), []string{"upload", "-key", keyFile, "-api", srv.URL, "-bundle", bundleFile, "-keys", filepath.Join(dir, "k2.txt"), "-n", "31"}, &bytes.Buffer{}); err == nil {
		t.Error("-n 31 accepted")
	}
}
