//go:build !mutation

package registrysync

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestFrozenSyncFreesTheLock: a copy frozen in the middle of a sync (its
// transaction idle, holding the lock) holds the other copies back for
// LockIdle, not for as long as it is frozen; its own writes then never
// land.
func TestFrozenSyncFreesTheLock(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	const idle = 500 * time.Millisecond
	frozen := &Syncer{db: db, cfg: Config{LockIdle: idle}}
	other := &Syncer{db: db, cfg: Config{LockIdle: idle}}
	ctx := context.Background()
	held, thaw := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- frozen.withLock(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `insert into registry_sync_state (id, synced_at) values (true, now())
				on conflict (id) do update set synced_at = now()`); err != nil {
				return err
			}
			close(held)
			<-thaw
			_, err := tx.Exec(ctx, `select 1`)
			return err
		})
	}()
	<-held
	if err := other.withLock(ctx, func(pgx.Tx) error { return nil }); !errors.Is(err, ErrBusy) {
		t.Fatalf("while the frozen copy holds the lock: %v, want ErrBusy", err)
	}
	start := time.Now()
	for {
		err := other.withLock(ctx, func(pgx.Tx) error { return nil })
		if err == nil {
			break
		}
		if !errors.Is(err, ErrBusy) || time.Since(start) > 20*idle {
			t.Fatalf("the frozen copy still holds the lock after %s: %v", time.Since(start), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the lock came free %s after the other first found it held", time.Since(start).Round(time.Millisecond))
	close(thaw)
	if err := <-done; err == nil {
		t.Error("the frozen copy's transaction committed after it lost the lock")
	}
	var n int
	if err := db.Pool().QueryRow(ctx, `select count(*) from registry_sync_state`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the frozen copy's write landed (%d rows)", n)
	}
}
