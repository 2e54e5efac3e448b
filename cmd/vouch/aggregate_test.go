package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/trust"
)

// TestAggregateThenFederate runs `vouch aggregate -once` with the back
// end's SoftHSM keys (two: a rotation), then `vouch federate pull` of its
// directory into a second store, and a pull under a wrong key.
func TestAggregateThenFederate(t *testing.T) {
	man := testenv.Cards(t)
	urlA, urlB := testenv.DatabaseURL(t), testenv.DatabaseURL(t)
	ctx := context.Background()
	dbA, err := database.Open(ctx, database.Config{URL: urlA})
	if err != nil {
		t.Fatal(err)
	}
	defer dbA.Close()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	for i := range 4 {
		var data [16]byte
		rand.Read(data[:])
		if _, err := dbA.Pool().Exec(ctx, `insert into exposure_keys (key_data, rolling_start, rolling_period, received_hour)
			values ($1, $2, 144, $3)`, data[:], exposure.IntervalNumber(today.AddDate(0, 0, -1-i)), exposure.Coarse(time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	t.Setenv("DATABASE_URL", urlA)
	t.Setenv("VOUCH_EXPORT_DIR", dir)
	t.Setenv("VOUCH_EXPORT_KEY_URIS", man.Backend.ExportURI+","+man.Backend.AttestationURI)
	t.Setenv("VOUCH_EXPORT_KEY_VERSION", "v1,v2")
	t.Setenv("VOUCH_EXPORT_KEY_ID", "204")
	t.Setenv("VOUCH_HSM_PIN", man.Backend.PIN)
	var out, errOut bytes.Buffer
	if err := realMain(ctx, []string{"aggregate", "-once"}, &out, &errOut); err != nil {
		t.Fatalf("aggregate -once: %v\n%s", err, errOut.String())
	}
	pub, err := trust.ReadECPublicKey(man.Backend.ExportPub)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := os.ReadFile(filepath.Join(dir, export.IndexName))
	if err != nil {
		t.Fatal(err)
	}
	paths, err := export.ReadIndex(bytes.NewReader(idx))
	if err != nil || len(paths) != 1 {
		t.Fatalf("index %q: %v", idx, err)
	}
	zipData, err := os.ReadFile(filepath.Join(dir, paths[0]))
	if err != nil {
		t.Fatal(err)
	}
	if f, err := export.Open(zipData, []*ecdsa.PublicKey{pub}); err != nil || len(f.Keys) != 4 || f.Region != "NL" {
		t.Fatalf("published file: %+v, %v", f, err)
	}

	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	t.Setenv("DATABASE_URL", urlB)
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&stranger.PublicKey)
	strangerPEM := filepath.Join(t.TempDir(), "stranger.pem")
	os.WriteFile(strangerPEM, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	out.Reset()
	err = realMain(ctx, []string{"federate", "pull", "-url", srv.URL, "-key", strangerPEM, "-site", "a"}, &out, &errOut)
	var exit exitError
	if !errors.As(err, &exit) || exit != 1 || !strings.Contains(out.String(), "1 refused") {
		t.Fatalf("pull under a wrong key: %v, %q", err, out.String())
	}
	out.Reset()
	if err := realMain(ctx, []string{"federate", "pull", "-url", srv.URL, "-key", man.Backend.ExportPub, "-site", "a"}, &out, &errOut); err != nil {
		t.Fatalf("federate pull: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "1 imported, 4 new keys") {
		t.Errorf("federate pull said %q", out.String())
	}
	err = realMain(ctx, []string{"federate", "pull", "-url", srv.URL, "-key", man.Backend.ExportPub, "-site", "padding"}, &out, &errOut)
	if !errors.As(err, &exit) || exit != 2 {
		t.Errorf("site named padding: %v", err)
	}
}

// TestAggregateRefusesBadKeyID: the aggregator does not start with a
// verification_key_id the platforms would not match (not an MCC, or
// characters outside alphanumerics, '_' and '.').
func TestAggregateRefusesBadKeyID(t *testing.T) {
	for _, id := range []string{"NL", "204/1", "204 x", "v1"} {
		t.Setenv("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
		t.Setenv("VOUCH_EXPORT_DIR", t.TempDir())
		t.Setenv("VOUCH_EXPORT_KEY_URIS", "pkcs11:token=x;object=y")
		t.Setenv("VOUCH_EXPORT_KEY_ID", id)
		var out, errOut bytes.Buffer
		err := realMain(context.Background(), []string{"aggregate", "-once"}, &out, &errOut)
		if err == nil || !strings.Contains(err.Error()+errOut.String(), "VOUCH_EXPORT_KEY_ID") {
			t.Errorf("key id %q: %v %s, want a refusal naming VOUCH_EXPORT_KEY_ID", id, err, errOut.String())
		}
	}
}
