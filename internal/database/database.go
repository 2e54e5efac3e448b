// Package database opens Vouch's PostgreSQL pool, runs the embedded schema
// migrations and offers a small transaction helper. SQL for each feature lives
// next to the code that runs it, not here.
//
// DATABASE_URL may name several hosts with target_session_attrs=primary
// (postgres://u@a:5432,b:5432/vouch?target_session_attrs=primary): new
// connections go to whichever is the primary. After a failover the pool
// drops what still points at the old server (see Open), so a long-running
// role finds the new primary without a restart.
package database

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"

	"github.com/vouch-nl/vouch/migrations"
)

// DefaultURL is the development server: local PostgreSQL with trust auth.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/vouch?sslmode=disable"

// VersionTable is where tern records the applied schema version.
const VersionTable = "schema_version"

// migrateLockKey serializes Migrate across processes. tern (v2.3) already
// locks version-table creation and MigrateTo separately; ours makes the whole
// run one critical section and does not depend on that internal detail.
const migrateLockKey int64 = 0x766f7563_686d6967 // "vouchmig"

// Config selects the database server.
type Config struct {
	URL string `env:"DATABASE_URL, default=postgres://postgres@127.0.0.1:5432/vouch?sslmode=disable"`
}

// DB wraps the connection pool.
type DB struct {
	pool *pgxpool.Pool
}

// Open connects to cfg.URL and checks that the server answers.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	url := cfg.URL
	if url == "" {
		url = DefaultURL
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database: parse url: %w", err)
	}
	var opened atomic.Pointer[pgxpool.Pool]
	pcfg.ConnConfig.OnPgError = dropOnFailover(pcfg.ConnConfig.OnPgError, func() {
		if p := opened.Load(); p != nil {
			p.Reset()
		}
	})
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("database: open pool: %w", err)
	}
	opened.Store(pool)
	db := &DB{pool: pool}
	if err := db.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// dropOnFailover wraps pgx's error handler (prev; it closes a connection
// on FATAL errors). An error saying the server is no primary any more, or
// is going away, closes the connection it came on and calls reset, which
// closes every other connection of the pool: they all lead to the same
// server. New connections then go through target_session_attrs to the
// primary. A connection that is cut (the server killed) pgx closes itself,
// and the pool pings one idle for over a second before handing it out.
func dropOnFailover(prev pgconn.PgErrorHandler, reset func()) pgconn.PgErrorHandler {
	return func(c *pgconn.PgConn, e *pgconn.PgError) bool {
		keep := prev == nil || prev(c, e)
		if !IsFailover(e) {
			return keep
		}
		reset()
		return false
	}
}

// IsFailover reports whether err is the server saying that no connection
// to it is of use for writing any more: it is read-only (25006: a standby,
// or a primary demoted under us), shutting down (57P01, as at a switchover),
// or restarting after a crash of one of its processes (57P02).
// pg_terminate_backend of a single session answers 57P01 too: the pool then
// reconnects every connection, a small cost for a rare act.
func IsFailover(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "25006", // read_only_sql_transaction
		"57P01", // admin_shutdown
		"57P02": // crash_shutdown
		return true
	}
	return false
}

// Close closes every connection of the pool.
func (db *DB) Close() { db.pool.Close() }

// Pool returns the underlying pool for queries.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Ping checks that the server answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("database: ping: %w", err)
	}
	return nil
}

// InTx runs fn in a transaction, committing when fn returns nil and rolling
// back otherwise (also when fn panics).
func (db *DB) InTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, db.pool, fn)
}

// Migrate brings the database at url to the newest embedded schema version.
func Migrate(ctx context.Context, url string) error {
	return MigrateFS(ctx, url, migrations.FS)
}

// MigrateFS applies the tern migrations in fsys; Migrate uses the embedded set.
func MigrateFS(ctx context.Context, url string, fsys fs.FS) (err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("database: migrate: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	if _, err := conn.Exec(ctx, "select pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("database: migrate: lock: %w", err)
	}
	defer func() {
		// Closing the session would release the lock too; unlock explicitly so
		// an error here is seen.
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), "select pg_advisory_unlock($1)", migrateLockKey); uerr != nil && err == nil {
			err = fmt.Errorf("database: migrate: unlock: %w", uerr)
		}
	}()

	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return fmt.Errorf("database: migrate: %w", err)
	}
	if err := m.LoadMigrations(fsys); err != nil {
		return fmt.Errorf("database: migrate: load: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("database: migrate: %w", err)
	}
	return nil
}

// EnsureDatabase creates the database named in url when it does not exist,
// connecting to the "postgres" database of the same server to do so.
func EnsureDatabase(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("database: parse url: %w", err)
	}
	name := cfg.Database
	if name == "" {
		return errors.New("database: url names no database")
	}
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("database: connect to maintenance db: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	const existsSQL = `select exists (select 1 from pg_database where datname = $1)`
	var exists bool
	if err := conn.QueryRow(ctx, existsSQL, name).Scan(&exists); err != nil {
		return fmt.Errorf("database: look up %q: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "create database "+pgx.Identifier{name}.Sanitize())
	if IsDuplicateDatabase(err) {
		// Another starter won the race; the database is there, which is all we want.
		return nil
	}
	if err != nil {
		return fmt.Errorf("database: create %q: %w", name, err)
	}
	return nil
}

// IsMissingDatabase reports whether err says the database does not exist.
func IsMissingDatabase(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "3D000" // invalid_catalog_name
}

// IsDuplicateDatabase reports whether err says the database already exists.
// Concurrent CREATE DATABASE can also fail on pg_database's unique index.
func IsDuplicateDatabase(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == "42P04" || // duplicate_database
		(pgErr.Code == "23505" && pgErr.ConstraintName == "pg_database_datname_index")
}
