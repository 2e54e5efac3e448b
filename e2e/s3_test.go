package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/phoneclient"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestS3PhoneSyncsThroughBucket: `vouch aggregate` publishes only to an
// S3-compatible bucket (versitygw, a process; no VOUCH_EXPORT_DIR), and
// the reference phone (`phone sync`) reads the index and the files from
// the bucket's public URL, anonymously, as through a CDN, verifies them
// and finds its match. Then the gateway is killed with -9 while the
// aggregator goes on, and started again: every index read at any step
// names only whole, verified files, and the keys uploaded meanwhile
// arrive.
func TestS3PhoneSyncsThroughBucket(t *testing.T) {
	w := newWorld(t, testenv.DatabaseURL(t))
	gw := testenv.S3Gateway(t)
	const bucket, prefix = "vouch-e2e", "nl/v1"
	gw.Bucket(t, bucket, true)
	phones, gp := vouched(t, w.man, 2)
	w.vouch(phones, gp)

	ingestOps := freeAddr(t)
	ingest := w.role("ingest", []string{"VOUCH_OPS_LISTEN=" + ingestOps}, "ingest")
	w.role("store", []string{"VOUCH_OPS_LISTEN=" + freeAddr(t)}, "store")
	aggOps := freeAddr(t)
	w.role("aggregate", []string{"VOUCH_OPS_LISTEN=" + aggOps,
		"VOUCH_EXPORT_DIR=", "XDG_CACHE_HOME=" + filepath.Join(w.dir, "cache"),
		"VOUCH_EXPORT_TARGET=s3://" + bucket + "/" + prefix, "VOUCH_EXPORT_S3_ENDPOINT=" + gw.Endpoint,
		"VOUCH_EXPORT_S3_ACCESS_KEY_FILE=" + gw.AccessKeyFile, "VOUCH_EXPORT_S3_SECRET_KEY_FILE=" + gw.SecretKeyFile,
	}, "aggregate")
	w.waitHTTP(ingest, "http://"+ingestOps+"/readyz")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := phoneclient.New(w.ingest)
	upload := func(ph phone) map[[16]byte]bool {
		t.Helper()
		bundle, err := client.Pickup(ctx, ph.priv)
		if err != nil {
			t.Fatalf("pickup: %v", err)
		}
		if _, err := client.Upload(ctx, ph.priv, bundle, ph.keys); err != nil {
			t.Fatalf("upload: %v", err)
		}
		want := map[[16]byte]bool{}
		for _, k := range ph.keys {
			want[k.Data] = true
		}
		return want
	}
	base := gw.URL(bucket, prefix)
	trusted := []*ecdsa.PublicKey{w.exportKey()}
	want := upload(phones[0])
	s3WaitPublished(t, base, trusted, want, time.Minute)

	// The phone: `phone sync` against the bucket's URL.
	seen := filepath.Join(w.dir, "seen.txt")
	line := hex.EncodeToString(phones[0].keys[4].Data[:]) + "\n" + strings.Repeat("ab", 16) + "\n"
	if err := os.WriteFile(seen, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	phoneBin := testenv.Build(t, "./cmd/phone")
	out, err := exec.CommandContext(ctx, phoneBin, "sync", "-cdn", base, "-export-key", w.man.Backend.ExportPub,
		"-seen", seen, "-state", filepath.Join(w.dir, "phone-state")).CombinedOutput()
	if err != nil {
		t.Fatalf("phone sync from the bucket: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "match   "); n != 1 || !strings.Contains(string(out), hex.EncodeToString(phones[0].keys[4].Data[:])) {
		t.Fatalf("phone sync found %d matches, want the one key it saw:\n%s", n, out)
	}

	// The gateway crashes while the aggregator runs every second, and
	// comes back; keys uploaded meanwhile are published after it.
	failed := s3FailedRuns(t, aggOps)
	gw.Kill(t)
	more := upload(phones[1])
	deadline := time.Now().Add(time.Minute)
	for s3FailedRuns(t, aggOps) < failed+2 {
		if time.Now().After(deadline) {
			t.Fatal("the aggregator did not try to publish against the dead gateway within a minute")
		}
		time.Sleep(200 * time.Millisecond)
	}
	gw.Start(t)
	for k := range want {
		more[k] = true
	}
	got := s3WaitPublished(t, base, trusted, more, time.Minute)
	for k := range more {
		if got[k] != 1 {
			t.Errorf("key %x published %d times, want once", k, got[k])
		}
	}
}

// s3Published reads the index from the bucket's public URL and every file
// it names, verified; an index that names a missing or unverifiable file
// is an error of its own (broken), never a file not published yet.
func s3Published(ctx context.Context, base string, trusted []*ecdsa.PublicKey) (keys map[[16]byte]int, broken, err error) {
	get := func(name string) ([]byte, int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+name, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return b, resp.StatusCode, err
	}
	idx, code, err := get(export.IndexName)
	if err != nil || code != http.StatusOK {
		return nil, nil, fmt.Errorf("index: %d %v", code, err)
	}
	names, err := export.ReadIndex(bytes.NewReader(idx))
	if err != nil {
		return nil, err, nil
	}
	keys = map[[16]byte]int{}
	for _, n := range names {
		b, code, err := get(n)
		if err != nil {
			return nil, nil, err // the gateway, not the index
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("the index names %s: HTTP %d", n, code), nil
		}
		f, err := export.Open(b, trusted)
		if err != nil {
			return nil, fmt.Errorf("the index names %s: %w", n, err), nil
		}
		for _, k := range f.Keys {
			keys[k.Data]++
		}
	}
	return keys, nil, nil
}

// s3WaitPublished polls the bucket until every key of want is published,
// failing at once if any index read names a missing or partial file.
func s3WaitPublished(t *testing.T, base string, trusted []*ecdsa.PublicKey, want map[[16]byte]bool, within time.Duration) map[[16]byte]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var last error
	for {
		got, broken, err := s3Published(ctx, base, trusted)
		if broken != nil {
			t.Fatalf("bucket: %v", broken)
		}
		if err == nil {
			missing := 0
			for k := range want {
				if got[k] == 0 {
					missing++
				}
			}
			if missing == 0 {
				return got
			}
			last = fmt.Errorf("%d of %d keys not published yet", missing, len(want))
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("bucket %s: %v", base, last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// s3FailedRuns is the aggregator's vouch_export_runs_total{result="error"}.
func s3FailedRuns(t *testing.T, ops string) int {
	t.Helper()
	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		t.Fatalf("aggregator's metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, `vouch_export_runs_total{result="error"} `); ok {
			var n float64
			if _, err := fmt.Sscan(v, &n); err != nil {
				t.Fatalf("metric %q: %v", line, err)
			}
			return int(n)
		}
	}
	return 0
}
