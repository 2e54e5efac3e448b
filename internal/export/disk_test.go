//go:build !mutation

package export_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// smallDisk mounts a tmpfs of size on a new directory for the test.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mounting a %s tmpfs for the export directory needs root (CAP_SYS_ADMIN), as make test runs in CI: %v", size, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestAggregateRecoversFromFullDisk fills a 2 MB export directory with
// files that left the index: while their grace runs, a run fails before
// writing (and says how much space is free); the first run after the grace
// deletes them before building and publishes the keys that waited, with
// no one's help.
func TestAggregateRecoversFromFullDisk(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	cfg.Dir = smallDisk(t, "2m")
	cfg.Grace = time.Hour
	cfg.Period = 10 * time.Minute
	cfg.MinFree = 64 << 10
	reg := prometheus.NewRegistry()
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, reg, s)
	c := &clock{t: noon}
	export.SetNow(a, c.now)

	// Two files of 45,000 keys each, about 780 kB each.
	var first export.Result
	for range 2 {
		var filler []export.Key
		for range 45000 {
			filler = append(filler, endedAgo(c.now(), 3*time.Hour))
		}
		storeKeys(t, db, "", filler...)
		res, err := a.Run(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		first = res
		c.add(cfg.Period)
	}
	// Fourteen days on, the file leaves the index; new keys arrive.
	c.add(14*24*time.Hour + time.Minute)
	left := c.now()
	var fresh []export.Key
	for range 40000 {
		fresh = append(fresh, endedAgo(left, 3*time.Hour))
	}
	storeKeys(t, db, "", fresh...)
	var failed int
	for {
		res, err := a.Run(t.Context())
		if err == nil {
			if c.now().Before(left.Add(cfg.Grace)) {
				t.Fatalf("published at %s, within the old file's grace (the disk cannot hold both)", c.now().Sub(left))
			}
			if c.now().After(left.Add(cfg.Grace + cfg.Period)) {
				t.Fatalf("published only %s after the file left the index, more than one period after the grace", c.now().Sub(left))
			}
			if res.Keys != len(fresh) {
				t.Errorf("published %d keys, want the %d that waited", res.Keys, len(fresh))
			}
			break
		}
		if !errors.Is(err, export.ErrNoSpace) && !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("run at +%s: %v, want a full disk", c.now().Sub(left), err)
		}
		failed++
		if free := gauge(t, reg, "vouch_export_free_bytes"); free <= 0 || free > 1<<20 {
			t.Errorf("vouch_export_free_bytes = %v on a full 2 MB disk", free)
		}
		if c.now().After(left.Add(cfg.Grace + cfg.Period)) {
			t.Fatalf("still failing %s after the file left the index: %v", c.now().Sub(left), err)
		}
		c.add(cfg.Period)
	}
	if failed == 0 {
		t.Fatal("the disk was never full: the test proves nothing")
	}
	for _, f := range first.Files {
		if _, err := os.Stat(filepath.Join(cfg.Dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the expired file %s is still there: %v", f, err)
		}
	}
	_, files := published(t, cfg.Dir, pubOf(s))
	if n := len(keySet(files)); n != len(fresh) {
		t.Errorf("%d keys in the index's files, want %d", n, len(fresh))
	}
	if free := gauge(t, reg, "vouch_export_free_bytes"); free < 1<<20 {
		t.Errorf("vouch_export_free_bytes = %v after the recovery", free)
	}
}
