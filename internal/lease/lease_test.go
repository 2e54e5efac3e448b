package lease_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/lease"
	"github.com/vouch-nl/vouch/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// expire ends the lease now by the database's clock, as waiting out its
// TTL would.
func expire(t *testing.T, db lease.DB, name string) {
	t.Helper()
	if _, err := db.Exec(context.Background(), `update leases set expires_at = clock_timestamp() - interval '1 millisecond' where name = $1`, name); err != nil {
		t.Fatal(err)
	}
}

func acquire(t *testing.T, db lease.DB, name, holder string, ttl time.Duration) *lease.Lease {
	t.Helper()
	l, err := lease.Acquire(context.Background(), db, name, holder, ttl)
	if err != nil {
		t.Fatalf("%s takes %s: %v", holder, name, err)
	}
	return l
}

// TestTakeRenewExpire: a lease is taken at epoch 1, refused to another
// holder while it runs, renewed by its holder, and taken over once expired
// with the next epoch.
func TestTakeRenewExpire(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t).Pool()
	ctx := context.Background()
	a := acquire(t, db, "job", "a", time.Minute)
	if a.Epoch != 1 {
		t.Errorf("first epoch %d, want 1", a.Epoch)
	}
	if _, err := lease.Acquire(ctx, db, "job", "b", time.Minute); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("b while a holds it: %v, want ErrHeld", err)
	}
	// The holder itself does not take it again while it runs: taking is
	// not renewing.
	if _, err := lease.Acquire(ctx, db, "job", "a", time.Minute); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("a again while its lease runs: %v, want ErrHeld", err)
	}
	if err := a.Renew(ctx, db); err != nil {
		t.Errorf("renew by the holder: %v", err)
	}
	if other := acquire(t, db, "other", "b", time.Minute); other.Epoch != 1 {
		t.Errorf("another lease's first epoch %d, want 1: epochs are per lease", other.Epoch)
	}
	expire(t, db, "job")
	b := acquire(t, db, "job", "b", time.Minute)
	if b.Epoch != 2 {
		t.Errorf("take-over at epoch %d, want 2", b.Epoch)
	}
	// The TTL is the database's: a lease of 300ms is free after it.
	c := acquire(t, db, "short", "c", lease.MinTTL)
	time.Sleep(lease.MinTTL + 50*time.Millisecond)
	if err := c.Renew(ctx, db); !errors.Is(err, lease.ErrLost) {
		t.Errorf("renew after the TTL: %v, want ErrLost", err)
	}
	if d := acquire(t, db, "short", "d", time.Minute); d.Epoch != 2 {
		t.Errorf("after the TTL: epoch %d, want 2", d.Epoch)
	}
	if _, err := lease.Acquire(ctx, db, "job", "x", time.Millisecond); err == nil {
		t.Error("a TTL under MinTTL was accepted")
	}
}

// TestStaleRenewRefused: renewal succeeds only for the holder of the
// current unexpired lease at its epoch.
func TestStaleRenewRefused(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t).Pool()
	ctx := context.Background()
	for name, tc := range map[string]func(t *testing.T, old *lease.Lease){
		// The attack of issue 20: the same holder string took it back.
		"taken back by the same holder": func(t *testing.T, old *lease.Lease) {
			expire(t, db, old.Name)
			if again := acquire(t, db, old.Name, old.Holder, time.Minute); again.Epoch != old.Epoch+1 {
				t.Errorf("taken back at epoch %d, want %d", again.Epoch, old.Epoch+1)
			}
		},
		"taken over by another": func(t *testing.T, old *lease.Lease) {
			expire(t, db, old.Name)
			acquire(t, db, old.Name, "b", time.Minute)
		},
		"expired, nobody took it": func(t *testing.T, old *lease.Lease) { expire(t, db, old.Name) },
		"released":                func(t *testing.T, old *lease.Lease) { old.Release(ctx, db) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			old := acquire(t, db, name, "a", time.Minute)
			tc(t, old)
			if err := old.Renew(ctx, db); !errors.Is(err, lease.ErrLost) {
				t.Errorf("stale renew: %v, want ErrLost", err)
			}
		})
	}
}

// TestReleaseKeepsEpoch: a released lease is free at once, and the next
// take-over counts on from its epoch: a fresh epoch 1 would match a stale
// holder's.
func TestReleaseKeepsEpoch(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t).Pool()
	a := acquire(t, db, "job", "a", time.Minute)
	if err := a.Release(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if b := acquire(t, db, "job", "b", time.Minute); b.Epoch != 2 {
		t.Errorf("after a release: epoch %d, want 2", b.Epoch)
	}
}

// publish is a write fenced by l: a row in its transaction, the check last.
func publish(ctx context.Context, db lease.DB, l *lease.Lease, what string) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `insert into export_index (generation, epoch, files, keys, published_at)
			values (1, $1, array[$2], 0, now())
			on conflict (id) do update set generation = export_index.generation + 1, epoch = excluded.epoch, files = excluded.files`,
			l.Epoch, what); err != nil {
			return err
		}
		return l.Check(ctx, tx)
	})
}

func published(t *testing.T, db lease.DB) string {
	t.Helper()
	var files []string
	if err := db.QueryRow(context.Background(), `select files from export_index`).Scan(&files); err != nil {
		t.Fatal(err)
	}
	return files[0]
}

// TestStalePublishRefused: a write checked against a lease taken over (or
// taken back: another epoch) does not land; the current holder's does.
func TestStalePublishRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, takeBack := range map[string]bool{"taken over": false, "taken back by the same holder": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := testenv.Database(t).Pool()
			a := acquire(t, db, "export", "a", time.Minute)
			if err := publish(ctx, db, a, "a1"); err != nil {
				t.Fatalf("publish by the holder: %v", err)
			}
			expire(t, db, "export")
			holder := "b"
			if takeBack {
				holder = "a"
			}
			b := acquire(t, db, "export", holder, time.Minute)
			if err := publish(ctx, db, b, "b1"); err != nil {
				t.Fatalf("publish by the new holder: %v", err)
			}
			if err := publish(ctx, db, a, "a2"); !errors.Is(err, lease.ErrLost) {
				t.Errorf("stale publish: %v, want ErrLost", err)
			}
			if got := published(t, db); got != "b1" {
				t.Errorf("index record %q after a stale publish, want b1", got)
			}
		})
	}
}

// TestCheckHoldsOffTakeOver: between a passed check and its commit nobody
// takes over, even when the lease expires meanwhile: the commit is then
// still the last write of that epoch, and the take-over comes after it.
func TestCheckHoldsOffTakeOver(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t).Pool()
	ctx := context.Background()
	const ttl = 1500 * time.Millisecond
	a := acquire(t, db, "export", "a", ttl)
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := a.Check(ctx, tx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl + 100*time.Millisecond) // expired by the database's clock
	if _, err := lease.Acquire(ctx, db, "export", "b", time.Minute); !errors.Is(err, lease.ErrHeld) {
		t.Errorf("take-over during a checked write: %v, want ErrHeld", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if b := acquire(t, db, "export", "b", time.Minute); b.Epoch != 2 {
		t.Errorf("take-over after the commit: epoch %d, want 2", b.Epoch)
	}
}

// TestOneHolderAtATime: of many copies taking a free lease at once,
// exactly one gets it.
func TestOneHolderAtATime(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t).Pool()
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := lease.Acquire(context.Background(), db, "job", string(rune('a'+i)), time.Minute)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case !errors.Is(err, lease.ErrHeld):
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Errorf("%d copies took the lease, want 1", won)
	}
}

// TestKeep: the heartbeat keeps a short lease for several TTLs, and ends the
// work's context soon after the lease was taken over.
func TestKeep(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t).Pool()
	ctx := context.Background()
	// Three renewals a TTL, each with a third of it to answer: long
	// enough that a loaded CI machine (race detector, coverage) answers
	// one in time (1.5 s lost the lease under gremlins' coverage run).
	const ttl = 3 * time.Second
	a := acquire(t, db, "job", "a", ttl)
	kept, stop := a.Keep(ctx, db, quiet)
	defer stop()
	time.Sleep(3 * ttl)
	if kept.Err() != nil {
		t.Fatalf("kept lease lost: %v", context.Cause(kept))
	}
	if _, err := lease.Acquire(ctx, db, "job", "b", time.Minute); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("after 3 TTLs of heartbeat the lease was free: %v", err)
	}
	expire(t, db, "job")
	acquire(t, db, "job", "b", time.Minute)
	select {
	case <-kept.Done():
		if !errors.Is(context.Cause(kept), lease.ErrLost) {
			t.Errorf("cause %v, want ErrLost", context.Cause(kept))
		}
	case <-time.After(ttl):
		t.Error("the heartbeat did not notice the take-over within a TTL")
	}
}

// TestLimitIdle: a holder frozen inside a transaction loses it after a
// TTL, so its row locks do not keep the next holder waiting.
func TestLimitIdle(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t).Pool()
	ctx := context.Background()
	a := acquire(t, db, "export", "a", 1500*time.Millisecond)
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := a.LimitIdle(ctx, tx); err != nil {
		t.Fatal(err)
	}
	if err := a.Check(ctx, tx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := lease.Acquire(ctx, db, "export", "b", time.Minute)
		if err == nil {
			break
		}
		if !errors.Is(err, lease.ErrHeld) || time.Now().After(deadline) {
			t.Fatalf("the frozen transaction still holds off the take-over: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err == nil {
		t.Error("the frozen holder's transaction committed after the take-over")
	}
}
