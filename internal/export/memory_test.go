//go:build !mutation

package export_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/testenv"
)

const manyKeys = 1400000

// seed streams n random keys spread over the last 14 days into the store.
func seed(t testing.TB, db *database.DB, n int) {
	t.Helper()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	received := exposure.Coarse(time.Now())
	i := 0
	var buf [20]byte
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		i++
		rand.Read(buf[:])
		day := 1 + int(binary.BigEndian.Uint32(buf[16:]))%13
		start := exposure.IntervalNumber(today.AddDate(0, 0, -day))
		return []any{buf[:16], start, int32(144), int16(day % 9), int16(2 - day), received, ""}, nil
	})
	if _, err := db.Pool().CopyFrom(context.Background(), pgx.Identifier{"exposure_keys"},
		[]string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "days_since_onset", "received_hour", "origin"}, src); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool().Exec(context.Background(), `analyze exposure_keys`); err != nil {
		t.Fatal(err)
	}
}

// TestExportMemoryBounded exports 1,400,000 keys (three batch files) in a
// child process and checks its peak RSS: the keys stream from PostgreSQL
// into the zip, so memory does not grow with their number.
func TestExportMemoryBounded(t *testing.T) {
	if dsn := os.Getenv("VOUCH_EXPORT_MEMORY_CHILD"); dsn != "" {
		exportChild(t, dsn)
		return
	}
	if testing.Short() {
		t.Skip("1,400,000 keys: not in -short")
	}
	url := testenv.DatabaseURL(t)
	db, err := database.Open(context.Background(), database.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	seed(t, db, manyKeys)
	dir := t.TempDir()

	// The bare reference: the same rows by COPY TO, nothing else.
	conn, err := db.Pool().Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bare := time.Now()
	if _, err := conn.Conn().PgConn().CopyTo(context.Background(), io.Discard, `copy (select key_data, rolling_start,
		rolling_period, transmission_risk, days_since_onset from exposure_keys order by key_data) to stdout`); err != nil {
		t.Fatal(err)
	}
	bareTime := time.Since(bare)
	conn.Release()

	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestExportMemoryBounded$", "-test.count=1", "-test.v"}, childArgs()...)...)
	cmd.Env = append(os.Environ(), "VOUCH_EXPORT_MEMORY_CHILD="+url, "VOUCH_EXPORT_MEMORY_DIR="+dir)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("export child: %v\n%s", err, out)
	}
	took := time.Since(start)
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "export alone") {
			t.Log(strings.TrimSpace(l))
		}
	}
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024
	t.Logf("exported %d keys in %s (child process, incl. its start), peak RSS %.1f MB; bare COPY TO %s",
		manyKeys, took.Round(time.Millisecond), float64(rss)/1e6, bareTime.Round(time.Millisecond))
	if rss > 100e6 {
		t.Errorf("peak RSS %.1f MB, want under 100 MB", float64(rss)/1e6)
	}
	paths, err := export.ReadIndex(strings.NewReader(mustRead(t, filepath.Join(dir, export.IndexName))))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 {
		t.Fatalf("%d files, want 3", len(paths))
	}
	s := softSigner(t, 7, "v1")
	total := 0
	var prevStart time.Time
	for i, p := range paths {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		f, err := export.Open(b, []*ecdsa.PublicKey{pubOf(s)})
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if f.BatchNum != 1 || f.BatchSize != 1 {
			t.Errorf("%s: batch %d of %d, want 1 of 1", p, f.BatchNum, f.BatchSize)
		}
		if i > 0 && !f.Start.After(prevStart) {
			t.Errorf("%s starts %s, not after the file before it", p, f.Start)
		}
		prevStart = f.Start
		total += len(f.Keys)
	}
	if total != manyKeys {
		t.Errorf("%d keys in the files, want %d", total, manyKeys)
	}
}

func mustRead(t testing.TB, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exportChild(t *testing.T, url string) {
	db, err := database.Open(context.Background(), database.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := testConfig(t)
	cfg.Dir = os.Getenv("VOUCH_EXPORT_MEMORY_DIR")
	start := time.Now()
	res, err := newAggregator(t, cfg, db, nil).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys != manyKeys {
		t.Fatalf("exported %d keys, want %d", res.Keys, manyKeys)
	}
	t.Logf("export alone: %s", time.Since(start))
}

// childArgs passes VOUCH_EXPORT_MEMORY_PROFILE on as the child's CPU
// profile, to see where an export's time goes.
func childArgs() []string {
	if p := os.Getenv("VOUCH_EXPORT_MEMORY_PROFILE"); p != "" {
		return []string{"-test.cpuprofile=" + p}
	}
	return nil
}
