package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/trust"
)

// TestAggregateToBucket runs `vouch aggregate -once` with only a bucket
// (VOUCH_EXPORT_TARGET on a versitygw process, the credentials read from
// their _FILE, no VOUCH_EXPORT_DIR): the index and its files are in the
// bucket, verified. A target it cannot use is refused before anything
// runs.
func TestAggregateToBucket(t *testing.T) {
	man := testenv.Cards(t)
	gw := testenv.S3Gateway(t)
	gw.Bucket(t, "vouch-cmd", false)
	url := testenv.DatabaseURL(t)
	ctx := context.Background()
	db, err := database.Open(ctx, database.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var data [16]byte
	rand.Read(data[:])
	if _, err := db.Pool().Exec(ctx, `insert into exposure_keys (key_data, rolling_start, rolling_period, received_hour)
		values ($1, $2, 144, $3)`, data[:], exposure.IntervalNumber(time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -2)), exposure.Coarse(time.Now())); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL", url)
	t.Setenv("VOUCH_EXPORT_DIR", "")
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	t.Setenv("VOUCH_EXPORT_TARGET", "s3://vouch-cmd/nl")
	t.Setenv("VOUCH_EXPORT_S3_ENDPOINT", gw.Endpoint)
	t.Setenv("VOUCH_EXPORT_S3_ACCESS_KEY_FILE", gw.AccessKeyFile)
	t.Setenv("VOUCH_EXPORT_S3_SECRET_KEY_FILE", gw.SecretKeyFile)
	t.Setenv("VOUCH_EXPORT_KEY_URIS", man.Backend.ExportURI)
	t.Setenv("VOUCH_HSM_PIN", man.Backend.PIN)
	var out, errOut bytes.Buffer
	if err := realMain(ctx, []string{"aggregate", "-once"}, &out, &errOut); err != nil {
		t.Fatalf("aggregate -once: %v\n%s", err, errOut.String())
	}
	pub, err := trust.ReadECPublicKey(man.Backend.ExportPub)
	if err != nil {
		t.Fatal(err)
	}
	cl := gw.Client(t)
	get := func(key string) []byte {
		o, err := cl.GetObject(ctx, "vouch-cmd", key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		b, err := io.ReadAll(o)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		return b
	}
	names, err := export.ReadIndex(bytes.NewReader(get("nl/" + export.IndexName)))
	if err != nil || len(names) != 1 {
		t.Fatalf("the bucket's index: %v, %v", names, err)
	}
	f, err := export.Open(get("nl/"+names[0]), []*ecdsa.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Keys) != 1 || f.Keys[0].Data != data {
		t.Fatalf("the bucket's file holds %d keys, want the one stored", len(f.Keys))
	}
	// The working copy is in the cache directory.
	if _, err := os.Stat(filepath.Join(cache, "vouch", "export", "vouch-cmd", "nl", filepath.FromSlash(names[0]))); err != nil {
		t.Errorf("working copy: %v", err)
	}

	t.Setenv("VOUCH_EXPORT_TARGET", "gs://vouch-cmd/nl")
	err = realMain(ctx, []string{"aggregate", "-once"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "VOUCH_EXPORT_TARGET") {
		t.Fatalf("a gs:// target: %v, want it refused by name", err)
	}
}
