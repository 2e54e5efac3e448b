// Package lease gives one copy of a job at a time the right to write, with
// a fencing token: a lease in PostgreSQL (table leases, migration 014)
// that carries an epoch, one more at every take-over.
//
// A holder takes the lease (Acquire), renews it often (Keep: a heartbeat
// every TTL/3) and checks it, by its epoch, in the transaction of every
// write that must not come from a stale holder (Check). Renewal and the
// check succeed only for the holder of the current, unexpired lease at
// that epoch, so a copy that was frozen (SIGSTOP, a long GC pause, a VM
// migration) past its lease cannot write once another took over — not even
// if it took the lease again meanwhile, because that gave it another
// epoch. Expiry is by the database's clock alone, so a holder's clock or
// pauses do not matter; a crashed holder's lease expires within one TTL.
//
// A check protects writes that land in the same transaction. A write
// elsewhere (a file, an object store) must be ordered after the checked
// commit and be safe to repeat or be conditional itself; see the callers.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrHeld means another holder has the lease and it has not expired.
var ErrHeld = errors.New("lease: held by another holder")

// ErrLost means the lease is no longer this holder's at this epoch: it
// expired, was released, or was taken over.
var ErrLost = errors.New("lease: lost")

// DB runs statements and transactions: a pool.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Lease is one holder's hold on a named lease at one epoch.
type Lease struct {
	Name   string
	Holder string
	Epoch  int64
	TTL    time.Duration
}

// Holder names this process for a lease: host, process id and a random
// part, so that a restarted process on the same host is another holder.
func Holder() (string, error) {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", fmt.Errorf("lease: %w", err)
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(id[:])), nil
}

// MinTTL is the shortest lease: the heartbeat renews every TTL/3 and each
// renewal must reach the database in that time.
const MinTTL = 300 * time.Millisecond

// acquireSQL takes the lease when it is free (no row) or expired, and
// bumps the epoch. A holder that takes its own expired lease again gets a
// new epoch too: what it wrote under the old one is checked against that.
const acquireSQL = `insert into leases (name, holder, epoch, taken_at, expires_at)
	values ($1, $2, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => $3))
	on conflict (name) do update set holder = excluded.holder, epoch = leases.epoch + 1,
		taken_at = excluded.taken_at, expires_at = excluded.expires_at
	where leases.expires_at <= clock_timestamp()
	returning epoch`

// Acquire takes the lease name for holder for ttl, or returns ErrHeld.
// It never waits for a holder in the middle of a checked write: that
// holder is alive, and the lease is held.
func Acquire(ctx context.Context, db DB, name, holder string, ttl time.Duration) (*Lease, error) {
	if ttl < MinTTL {
		return nil, fmt.Errorf("lease %s: TTL %s is shorter than %s", name, ttl, MinTTL)
	}
	l := &Lease{Name: name, Holder: holder, TTL: ttl}
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// A Check holds the row until its commit (milliseconds); waiting
		// longer means that holder is in a write, so alive.
		if _, err := tx.Exec(ctx, `set local lock_timeout = '1s'`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, acquireSQL, name, holder, ttl.Seconds()).Scan(&l.Epoch)
	})
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, ErrHeld
	case errors.As(err, &pgErr) && pgErr.Code == "55P03": // lock_not_available
		return nil, ErrHeld
	case err != nil:
		return nil, fmt.Errorf("lease %s: acquire: %w", name, err)
	}
	return l, nil
}

// Renew extends the lease by its TTL from now (the database's now). It
// succeeds only while the lease is this holder's at this epoch and has
// not expired: an expired lease is not renewed even when nobody took it,
// because a write may already have been refused under it, and the holder
// must start over with a new epoch.
func (l *Lease) Renew(ctx context.Context, db DB) error {
	tag, err := db.Exec(ctx, `update leases set expires_at = clock_timestamp() + make_interval(secs => $4)
		where name = $1 and holder = $2 and epoch = $3 and expires_at > clock_timestamp()`,
		l.Name, l.Holder, l.Epoch, l.TTL.Seconds())
	if err != nil {
		return fmt.Errorf("lease %s: renew: %w", l.Name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("lease %s epoch %d: renew: %w", l.Name, l.Epoch, ErrLost)
	}
	return nil
}

// Release gives the lease up at once, so another copy need not wait out
// the TTL. The row stays (expired): the next epoch counts on from it.
func (l *Lease) Release(ctx context.Context, db DB) error {
	if _, err := db.Exec(ctx, `update leases set expires_at = '-infinity'
		where name = $1 and holder = $2 and epoch = $3`, l.Name, l.Holder, l.Epoch); err != nil {
		return fmt.Errorf("lease %s: release: %w", l.Name, err)
	}
	return nil
}

// Check is the fence: in the caller's transaction, it fails with ErrLost
// unless the lease is still this holder's at this epoch and unexpired.
// Call it last before the commit: it holds the lease's row (FOR SHARE)
// until then, so nobody can take over between the check and the commit,
// and a take-over that committed first is seen (read committed reads the
// latest row). The caller's writes in that transaction land only if the
// check passed; a stale holder's fail.
func (l *Lease) Check(ctx context.Context, tx pgx.Tx) error {
	var one int
	err := tx.QueryRow(ctx, `select 1 from leases
		where name = $1 and holder = $2 and epoch = $3 and expires_at > clock_timestamp() for share`,
		l.Name, l.Holder, l.Epoch).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("lease %s epoch %d: %w", l.Name, l.Epoch, ErrLost)
	}
	if err != nil {
		return fmt.Errorf("lease %s: check: %w", l.Name, err)
	}
	return nil
}

// LimitIdle makes the current transaction end (the server closes the
// session) when it stays idle for the lease's TTL: a holder frozen in the
// middle of a transaction would otherwise keep its row locks, and the
// copy that takes over would wait for them for as long as it is frozen.
func (l *Lease) LimitIdle(ctx context.Context, tx pgx.Tx) error {
	ms := max(l.TTL.Milliseconds(), 1)
	if _, err := tx.Exec(ctx, fmt.Sprintf(`set local idle_in_transaction_session_timeout = %d`, ms)); err != nil {
		return fmt.Errorf("lease %s: %w", l.Name, err)
	}
	return nil
}

// Keep renews the lease every TTL/3 until ctx ends or the lease is lost.
// The context it returns ends when the lease is lost (cause ErrLost): a
// renewal refused, or none succeeded for a TTL (the database out of
// reach: the lease may have expired). Work under the lease runs with that
// context, so a holder stops soon after it lost the lease; the Check of
// its writes is what makes a stale write impossible. stop ends the
// heartbeat and waits for it.
func (l *Lease) Keep(ctx context.Context, db DB, log *slog.Logger) (kept context.Context, stop func()) {
	kctx, cancel := context.WithCancelCause(ctx)
	every := l.TTL / 3
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		// The lease runs at least until TTL after the start of the last
		// renewal that succeeded (by the database's clock, which runs at
		// the same rate).
		valid := time.Now().Add(l.TTL)
		for {
			select {
			case <-kctx.Done():
				return
			case <-t.C:
			}
			start := time.Now()
			rctx, rcancel := context.WithTimeout(kctx, every)
			err := l.Renew(rctx, db)
			rcancel()
			switch {
			case err == nil:
				valid = start.Add(l.TTL)
			case errors.Is(err, ErrLost):
				log.Warn("lease lost", "lease", l.Name, "epoch", l.Epoch)
				cancel(err)
				return
			case kctx.Err() != nil:
				return
			default:
				log.Warn("lease not renewed", "lease", l.Name, "epoch", l.Epoch, "err", err)
				if time.Now().After(valid) {
					cancel(fmt.Errorf("lease %s epoch %d: not renewed for %s: %w", l.Name, l.Epoch, l.TTL, ErrLost))
					return
				}
			}
		}
	}()
	return kctx, func() { cancel(context.Canceled); wg.Wait() }
}
