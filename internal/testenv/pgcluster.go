package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// standbyName is the standby's application_name, which the primary's
// synchronous_standby_names waits for.
const standbyName = "vouch_standby"

// PostgresPair is a throwaway primary with one synchronous streaming
// standby, both clusters of this test (see OwnPostgres): a commit returns
// only once the standby has it on disk, so promoting the standby after a
// crash of the primary loses nothing acknowledged. The primary archives
// its WAL into Archive, for backup tests.
type PostgresPair struct {
	Primary, Standby *Postgres
	// Archive holds the primary's archived WAL segments (archive_command).
	Archive string
}

// NewPostgresPair starts a primary with the database "vouch" migrated, and
// a standby made from it by pg_basebackup -R, streaming synchronously.
// Both stop and their files go when the test ends.
func NewPostgresPair(t testing.TB) *PostgresPair {
	t.Helper()
	pair, err := StartPostgresPair()
	if pair != nil {
		t.Cleanup(func() {
			if err := pair.Close(); err != nil {
				t.Errorf("testenv: own postgres: %v", err)
			}
		})
	}
	var m *missingDep
	if errors.As(err, &m) {
		missing(t, m.what, m.err)
	}
	if err != nil {
		t.Fatalf("testenv: postgres pair: %v", err)
	}
	return pair
}

// StartPostgresPair is NewPostgresPair's core for programs without a
// testing.TB (the bench): the caller calls Close, also after an error when
// the pair is not nil (it holds what was started).
func StartPostgresPair() (*PostgresPair, error) {
	pair := &PostgresPair{}
	// The primary's directories first, so the archive can sit in them
	// (the cluster's user must own it).
	primary, err := makeOwnPostgres(nil)
	if primary == nil {
		return nil, err
	}
	pair.Primary = primary
	if err != nil {
		return pair, err
	}
	for _, prog := range []string{"pg_basebackup", "pg_ctl"} {
		if path := filepath.Join(primary.bin, prog); !isExecutable(path) {
			return pair, &missingDep{"PostgreSQL's " + prog + " (Debian postgresql)", fmt.Errorf("no %s", path)}
		}
	}
	archive := filepath.Join(primary.base, "archive")
	if err := primary.mkdirOwned(archive); err != nil {
		return pair, err
	}
	pair.Archive = archive
	primary.settings = []string{
		"wal_level=replica",
		"synchronous_commit=on",
		"archive_mode=on",
		"archive_command=test ! -f " + archive + "/%f && cp %p " + archive + "/%f",
		// A standby that falls behind for a while still finds its WAL.
		"wal_keep_size=256MB",
	}
	if err := primary.initdbErr(); err != nil {
		return pair, err
	}
	if err := primary.startFreshErr(); err != nil {
		return pair, err
	}
	if err := primary.createVouchErr(); err != nil {
		return pair, err
	}

	standby, err := makeOwnPostgres(nil)
	if standby == nil {
		return pair, err
	}
	pair.Standby = standby
	if err != nil {
		return pair, err
	}
	standby.settings = []string{
		// On the command line, over what -R wrote: the name is what the
		// primary waits for.
		fmt.Sprintf("primary_conninfo=host=127.0.0.1 port=%d user=postgres application_name=%s", primary.port, standbyName),
		"hot_standby=on",
		// After its primary is lost the standby retries streaming at this
		// interval, and a promotion asked for meanwhile waited out the
		// default 5 s (in about half the runs, measured).
		"wal_retrieve_retry_interval=500ms",
		// Once promoted it waits for no standby of its own: a commit
		// there would hang.
		"synchronous_standby_names=",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bb := standby.command(ctx, filepath.Join(standby.bin, "pg_basebackup"), "-h", "127.0.0.1",
		"-p", fmt.Sprint(primary.port), "-U", "postgres", "-D", standby.data, "-R", "-X", "stream",
		"-c", "fast", "--no-sync")
	if out, err := bb.CombinedOutput(); err != nil {
		return pair, fmt.Errorf("pg_basebackup: %w\n%s", err, out)
	}
	if err := standby.startFreshErr(); err != nil {
		return pair, err
	}

	// Synchronous only now that the standby is there: until then every
	// commit (the migration's too) would wait for it. ALTER SYSTEM, not the
	// command line, which would override it.
	if err := primary.exec(ctx, "alter system set synchronous_standby_names = '"+standbyName+"'"); err != nil {
		return pair, err
	}
	if err := primary.exec(ctx, "select pg_reload_conf()"); err != nil {
		return pair, err
	}
	if err := pair.waitStreaming(ctx); err != nil {
		return pair, fmt.Errorf("%w\nprimary:\n%s\nstandby:\n%s", err, primary.Log(), standby.Log())
	}
	return pair, nil
}

// Close stops both servers and removes their files, the standby first.
func (c *PostgresPair) Close() error {
	var errs []error
	for _, p := range []*Postgres{c.Standby, c.Primary} {
		if p != nil {
			errs = append(errs, p.remove())
		}
	}
	return errors.Join(errs...)
}

// KillPrimary is Primary.Kill for programs without a testing.TB: SIGKILL
// to the postmaster and every server process at once, a crash.
func (c *PostgresPair) KillPrimary() error {
	p := c.Primary
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return errors.New("kill: the primary is not running")
	}
	return p.stop(syscall.SIGKILL, time.Minute)
}

// URL names both servers, primary first, with target_session_attrs=primary:
// a client connects to whichever of them is the primary now.
func (c *PostgresPair) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/%s?sslmode=disable&target_session_attrs=primary&connect_timeout=5",
		c.Primary.port, c.Standby.port, ownPGDatabase)
}

// waitStreaming waits until the primary sees the standby as its
// synchronous standby, streaming.
func (c *PostgresPair) waitStreaming(ctx context.Context) error {
	var last error
	for {
		state, sync, err := c.replication(ctx)
		if err == nil && state == "streaming" && sync == "sync" {
			return nil
		}
		last = fmt.Errorf("standby state %q, sync state %q, err %v", state, sync, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("the standby does not stream synchronously: %w", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *PostgresPair) replication(ctx context.Context) (state, sync string, err error) {
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(qctx, c.Primary.maintenanceURL())
	if err != nil {
		return "", "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = conn.QueryRow(qctx, `select state, sync_state from pg_stat_replication where application_name = $1`,
		standbyName).Scan(&state, &sync)
	return state, sync, err
}

// Promote makes the standby the primary (pg_ctl promote) and returns once
// it accepts writes.
func (c *PostgresPair) Promote(t testing.TB) {
	t.Helper()
	if err := c.PromoteStandby(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// PromoteStandby is Promote's core for programs without a testing.TB.
func (c *PostgresPair) PromoteStandby() error {
	return c.Standby.promote()
}

func (p *Postgres) promote() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := p.command(ctx, filepath.Join(p.bin, "pg_ctl"), "promote", "-D", p.data, "-w", "-t", "110")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("promote: %w\n%s\n%s", err, out, p.Log())
	}
	if err := p.waitPrimary(ctx); err != nil {
		return fmt.Errorf("promote: %w\n%s", err, p.Log())
	}
	return nil
}

// waitPrimary waits until the server is out of recovery.
func (p *Postgres) waitPrimary(ctx context.Context) error {
	var last error
	for {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(qctx, p.maintenanceURL())
		if err == nil {
			var rec bool
			err = conn.QueryRow(qctx, `select pg_is_in_recovery()`).Scan(&rec)
			conn.Close(context.WithoutCancel(ctx))
			if err == nil && !rec {
				cancel()
				return nil
			}
			if err == nil {
				err = fmt.Errorf("still in recovery")
			}
		}
		cancel()
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not a primary: %w", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// SwitchWAL closes the current WAL segment and waits until the archive
// holds it: everything committed before is then in the archive.
func (c *PostgresPair) SwitchWAL(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.Primary.maintenanceURL())
	if err != nil {
		t.Fatalf("testenv: switch wal: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var seg string
	if err := conn.QueryRow(ctx, `select pg_walfile_name(pg_switch_wal())`).Scan(&seg); err != nil {
		t.Fatalf("testenv: switch wal: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(c.Archive, seg)); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			var failed string
			_ = conn.QueryRow(context.Background(), `select coalesce(last_failed_wal, '') from pg_stat_archiver`).Scan(&failed)
			t.Fatalf("testenv: switch wal: %s not archived (last failed: %q)\n%s", seg, failed, c.Primary.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// BaseBackup takes a base backup of the primary into a new directory the
// cluster's user owns (plain format, the WAL it needs fetched with it)
// and returns the directory; it goes when the test ends.
func (c *PostgresPair) BaseBackup(t testing.TB) string {
	t.Helper()
	p := c.Primary
	dir := filepath.Join(p.base, "backup-"+randomHex(t, 4))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := p.command(ctx, filepath.Join(p.bin, "pg_basebackup"), "-h", "127.0.0.1", "-p", fmt.Sprint(p.port),
		"-U", "postgres", "-D", dir, "-X", "fetch", "-c", "fast", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: base backup: %v\n%s", err, out)
	}
	return dir
}

// RestorePostgres starts a fresh cluster from a base backup (a directory
// BaseBackup made) and replays the WAL archive after it to its end, then
// opens for writes: the restore of a lost primary. It is stopped and its
// files go when the test ends.
func RestorePostgres(t testing.TB, backup, archive string) *Postgres {
	t.Helper()
	p := newOwnPostgres(t, []string{
		"restore_command=cp " + archive + "/%f %p",
		// No target: replay all there is, then promote.
		"recovery_target_timeline=latest",
		"archive_mode=off",
		"synchronous_standby_names=",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The copy is made as the cluster's user, which owns it then.
	if out, err := p.command(ctx, "cp", "-a", backup, p.data).CombinedOutput(); err != nil {
		t.Fatalf("testenv: restore: copy base backup: %v\n%s", err, out)
	}
	if err := p.touch(filepath.Join(p.data, "recovery.signal")); err != nil {
		t.Fatalf("testenv: restore: %v", err)
	}
	p.startFresh(t)
	if err := p.waitPrimary(ctx); err != nil {
		t.Fatalf("testenv: restore: %v\n%s", err, p.Log())
	}
	return p
}

// mkdirOwned makes dir, owned by the cluster's user.
func (p *Postgres) mkdirOwned(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if p.cred != nil {
		return os.Chown(dir, int(p.cred.Uid), int(p.cred.Gid))
	}
	return nil
}

// touch makes an empty file owned by the cluster's user.
func (p *Postgres) touch(path string) error {
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return err
	}
	if p.cred != nil {
		return os.Chown(path, int(p.cred.Uid), int(p.cred.Gid))
	}
	return nil
}
