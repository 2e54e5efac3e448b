//go:build !mutation

package export_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/lease"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// expireLease ends the aggregators' lease now, as a freeze longer than
// the lease would.
func expireLease(t *testing.T, db *database.DB) {
	t.Helper()
	if _, err := db.Pool().Exec(context.Background(), `update leases set expires_at = clock_timestamp() - interval '1 millisecond' where name = $1`, export.LeaseName); err != nil {
		t.Fatal(err)
	}
}

// indexNow is the index file's list, nil when there is none.
func indexNow(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, export.IndexName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	paths, err := export.ReadIndex(f)
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// stopAt makes a's run stop at step until release is closed (a frozen
// process) and closes the channel it returns when it got there.
func stopAt(a *export.Aggregator, step string, release <-chan struct{}) <-chan struct{} {
	there := make(chan struct{})
	a.OnStep(func(s string) {
		if s == step {
			close(there)
			<-release
		}
	})
	return there
}

// TestStaleHolderWritesNothing is issue 20's attack on one database: an
// aggregator frozen just after it put its batch file in place, while
// another took over, published newer indexes (and, past the grace,
// deleted a file the frozen one's index names), woke up with the lease
// taken back under its own holder name, and went on. It publishes nothing:
// its epoch is not the lease's any more. The index never goes back.
func TestStaleHolderWritesNothing(t *testing.T) {
	t.Parallel()
	for name, pastGrace := range map[string]bool{
		// Only the epoch's check stops it: every file it names is there.
		"newer index, same files": false,
		// Its file was deleted meanwhile.
		"its file deleted": true,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := testenv.Database(t)
			cfg := testConfig(t)
			cfg.Grace = time.Hour
			s := softSigner(t, 7, "v1")
			storeKeys(t, db, "", dayKey(t, 1), dayKey(t, 2))
			stale := newAggregator(t, cfg, db, nil, s)
			release := make(chan struct{})
			there := stopAt(stale, export.StepBatchRenamed, release)
			l, err := lease.Acquire(context.Background(), db.Pool(), export.LeaseName, export.Holder(stale), cfg.Lease)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := export.RunUnder(context.Background(), stale, l); done <- err }()
			<-there

			// The other copy takes over and publishes more keys.
			expireLease(t, db)
			other := newAggregator(t, cfg, db, nil, s)
			c := &clock{t: noon.Add(time.Minute)}
			export.SetNow(other, c.now)
			storeKeys(t, db, "", dayKey(t, 1), dayKey(t, 1), dayKey(t, 3))
			if _, err := other.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if pastGrace {
				// The first batch leaves the window, then its grace passes.
				c.add(14*24*time.Hour + time.Minute)
				if _, err := other.Run(context.Background()); err != nil {
					t.Fatal(err)
				}
				c.add(cfg.Grace + time.Minute)
			}
			last, err := other.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := indexNow(t, cfg.Dir)
			if !slices.Equal(want, last.Files) {
				t.Fatalf("index %v, the run published %v", want, last.Files)
			}
			// The frozen one's process takes the lease again, under the
			// same holder name, before its run goes on.
			again, err := lease.Acquire(context.Background(), db.Pool(), export.LeaseName, export.Holder(stale), cfg.Lease)
			if err != nil {
				t.Fatal(err)
			}
			close(release)
			err = <-done
			if err == nil {
				t.Fatal("the stale run published")
			}
			t.Logf("stale run: %v", err)
			if got := indexNow(t, cfg.Dir); !slices.Equal(got, want) {
				t.Errorf("index after the stale run: %v, want %v", got, want)
			}
			var epoch int64
			var files []string
			if err := db.Pool().QueryRow(context.Background(), `select epoch, files from export_index`).Scan(&epoch, &files); err != nil {
				t.Fatal(err)
			}
			if epoch >= again.Epoch || !slices.Equal(files, want) {
				t.Errorf("index record of epoch %d, %v; want the other's (before %d), %v", epoch, files, again.Epoch, want)
			}
			for _, f := range want {
				if _, err := os.Stat(filepath.Join(cfg.Dir, f)); err != nil {
					t.Errorf("indexed file: %v", err)
				}
			}
		})
	}
}

// TestIndexFilesFollowCommits: an aggregator frozen between its index's
// checked commit and its index file keeps the directory's lock; the copy
// that took over cannot commit a newer index before the frozen one wrote
// its file, so the older file never replaces the newer.
func TestIndexFilesFollowCommits(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	cfg.Lease = time.Second
	s := softSigner(t, 7, "v1")
	storeKeys(t, db, "", dayKey(t, 1))
	frozen := newAggregator(t, cfg, db, nil, s)
	release := make(chan struct{})
	there := stopAt(frozen, export.StepIndexCommitted, release)
	l, err := lease.Acquire(context.Background(), db.Pool(), export.LeaseName, export.Holder(frozen), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := export.RunUnder(context.Background(), frozen, l); done <- err }()
	<-there
	expireLease(t, db)

	other := newAggregator(t, cfg, db, nil, s)
	export.SetNow(other, func() time.Time { return noon.Add(time.Minute) })
	storeKeys(t, db, "", dayKey(t, 2), dayKey(t, 3))
	var seen [][]string
	if _, err := other.Run(context.Background()); err == nil {
		seen = append(seen, indexNow(t, cfg.Dir))
	} else {
		t.Logf("the other's run while the frozen one holds the directory: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the frozen run, whose commit was the last: %v", err)
	}
	seen = append(seen, indexNow(t, cfg.Dir))
	if _, err := other.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	seen = append(seen, indexNow(t, cfg.Dir))
	for i := 1; i < len(seen); i++ {
		if len(seen[i]) < len(seen[i-1]) {
			t.Errorf("the index went back: %v, then %v", seen[i-1], seen[i])
		}
	}
	if last := seen[len(seen)-1]; len(last) != 2 {
		t.Errorf("last index %v, want both batches", last)
	}
}

// TestStaleHolderBuildsNothing: a run whose lease was taken over before it
// wrote makes no batch (two copies would make overlapping windows) and
// puts no file in place, not even of a batch another copy left unbuilt.
func TestStaleHolderBuildsNothing(t *testing.T) {
	t.Parallel()
	for name, leftUnbuilt := range map[string]bool{"new keys": false, "a batch left unbuilt": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := testenv.Database(t)
			cfg := testConfig(t)
			storeKeys(t, db, "", dayKey(t, 1), dayKey(t, 2))
			ctx := context.Background()
			if leftUnbuilt {
				// As a holder that crashed between its batch and its file.
				var id int64
				if err := db.Pool().QueryRow(ctx, `insert into export_batches (start_at, end_at) values ($1, $2) returning id`,
					noon.Add(-14*24*time.Hour), noon.Add(-time.Hour)).Scan(&id); err != nil {
					t.Fatal(err)
				}
				if _, err := db.Pool().Exec(ctx, `update exposure_keys set batch_id = $1`, id); err != nil {
					t.Fatal(err)
				}
			}
			stale := newAggregator(t, cfg, db, nil)
			l, err := lease.Acquire(ctx, db.Pool(), export.LeaseName, export.Holder(stale), cfg.Lease)
			if err != nil {
				t.Fatal(err)
			}
			expireLease(t, db)
			if _, err := lease.Acquire(ctx, db.Pool(), export.LeaseName, "other", cfg.Lease); err != nil {
				t.Fatal(err)
			}
			if _, err := export.RunUnder(ctx, stale, l); !errors.Is(err, lease.ErrLost) {
				t.Errorf("stale run: %v, want ErrLost", err)
			}
			var batches, built int
			if err := db.Pool().QueryRow(ctx, `select count(*), count(path) from export_batches`).Scan(&batches, &built); err != nil {
				t.Fatal(err)
			}
			want := 0
			if leftUnbuilt {
				want = 1
			}
			if batches != want || built != 0 {
				t.Errorf("%d batches (%d built) after the stale run, want %d unbuilt", batches, built, want)
			}
			if n := fileCount(t, cfg.Dir); n != 0 {
				t.Errorf("%d files in exports/ after the stale run", n)
			}
			if got := indexNow(t, cfg.Dir); got != nil {
				t.Errorf("index %v after the stale run", got)
			}
		})
	}
}

// TestLoopLeads: of two looping aggregators one holds the lease and
// publishes every period while the other waits; when the holder stops,
// the other publishes within a lease and a third.
func TestLoopLeads(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	cfg.Lease, cfg.Period = 2*time.Second, 100*time.Millisecond
	storeKeys(t, db, "", dayKey(t, 1))
	var mu sync.Mutex
	runs := map[int]int{}
	inside := 0
	ctxs := make([]context.CancelFunc, 2)
	dones := make([]chan error, 2)
	for i := range 2 {
		a := newAggregator(t, cfg, db, nil)
		export.SetBeforeIndex(a, func() {
			mu.Lock()
			defer mu.Unlock()
			runs[i]++
			if inside++; inside > 1 {
				t.Error("two aggregators publish at once")
			}
			inside--
		})
		ctx, cancel := context.WithCancel(context.Background())
		ctxs[i], dones[i] = cancel, make(chan error, 1)
		go func() { dones[i] <- a.Loop(ctx) }()
	}
	defer func() {
		for i := range 2 {
			ctxs[i]()
			<-dones[i]
		}
	}()
	count := func(i int) int { mu.Lock(); defer mu.Unlock(); return runs[i] }
	deadline := time.Now().Add(20 * time.Second)
	for count(0)+count(1) < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("%d runs in 20 s", count(0)+count(1))
		}
		time.Sleep(10 * time.Millisecond)
	}
	leader := 0
	if count(1) > count(0) {
		leader = 1
	}
	if other := count(1 - leader); other != 0 {
		t.Errorf("the standby published %d times while the leader held the lease (%d)", other, count(leader))
	}
	ctxs[leader]()
	<-dones[leader]
	dones[leader] <- nil // for the deferred wait
	stopped := time.Now()
	for count(1-leader) == 0 {
		if time.Since(stopped) > 10*time.Second {
			t.Fatal("the standby did not take over")
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(stopped)
	t.Logf("the standby published %s after the leader stopped", took.Round(time.Millisecond))
	// A leader that stops releases the lease: the standby's next attempt
	// (a third of the lease) takes it.
	if limit := cfg.Lease + cfg.Lease/3 + 2*time.Second; took > limit {
		t.Errorf("took %s, more than %s", took, limit)
	}
}
