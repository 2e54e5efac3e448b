package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/migrations"
)

// templateLockKey serializes building the template database across the test
// binaries that `go test ./...` runs in parallel.
const templateLockKey int64 = 0x766f7563_68746d70 // "vouchtmp"

// serverURL is the server named by DATABASE_URL (or the local default).
// Only its database name is replaced; user, host and options are kept.
func serverURL(t testing.TB) *url.URL {
	t.Helper()
	s := os.Getenv("DATABASE_URL")
	if s == "" {
		s = database.DefaultURL
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("testenv: DATABASE_URL must be a postgres:// URL: %q", s)
	}
	return u
}

// withDatabase returns u naming database name instead.
func withDatabase(u *url.URL, name string) string {
	c := *u
	c.Path = "/" + name
	c.RawPath = ""
	return c.String()
}

// serverConfig connects to the maintenance database "postgres".
func serverConfig(t testing.TB) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(withDatabase(serverURL(t), "postgres"))
	if err != nil {
		t.Fatalf("testenv: DATABASE_URL: %v", err)
	}
	return cfg
}

// DatabaseURL creates a fresh database migrated to the newest schema and
// returns its URL. The database is dropped when the test ends.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cfg := serverConfig(t)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		missing(t, fmt.Sprintf("PostgreSQL at %s:%d", cfg.Host, cfg.Port), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	tmpl, err := ensureTemplate(ctx, conn, serverURL(t))
	if err != nil {
		t.Fatalf("testenv: template database: %v", err)
	}

	name := "vouch_test_" + randomHex(t, 8)
	// Cloning is a file copy: far faster than migrating each database.
	sql := fmt.Sprintf("create database %s template %s",
		pgx.Identifier{name}.Sanitize(), pgx.Identifier{tmpl}.Sanitize())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("testenv: clone %s: %v", tmpl, err)
	}
	t.Cleanup(func() { dropDatabase(t, name) })
	return withDatabase(serverURL(t), name)
}

// Database returns an open pool on a fresh migrated database, closed and
// dropped when the test ends.
func Database(t testing.TB) *database.DB {
	t.Helper()
	u, err := url.Parse(DatabaseURL(t))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// A few connections each: many parallel tests share max_connections (100).
	q := u.Query()
	q.Set("pool_max_conns", "4")
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := database.Open(ctx, database.Config{URL: u.String()})
	if err != nil {
		t.Fatalf("testenv: open test database: %v", err)
	}
	t.Cleanup(db.Close) // runs before the drop registered earlier
	return db
}

func dropDatabase(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, serverConfig(t))
	if err != nil {
		t.Errorf("testenv: drop %s: %v", name, err)
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// FORCE ends sessions a test leaked, so the drop never waits on them.
	if _, err := conn.Exec(ctx, "drop database if exists "+pgx.Identifier{name}.Sanitize()+" with (force)"); err != nil {
		t.Errorf("testenv: drop %s: %v", name, err)
	}
}

// ensureTemplate returns the name of the migrated template database for the
// current migration files, building it if no process has yet. The name holds
// a hash of the files, so a changed migration gets a new template.
func ensureTemplate(ctx context.Context, conn *pgx.Conn, server *url.URL) (name string, err error) {
	sum, err := migrationsHash(migrations.FS)
	if err != nil {
		return "", err
	}
	name = "vouch_tmpl_" + sum

	const existsSQL = `select exists (select 1 from pg_database where datname = $1)`
	var exists bool
	if err := conn.QueryRow(ctx, existsSQL, name).Scan(&exists); err != nil {
		return "", fmt.Errorf("look up: %w", err)
	}
	if exists {
		return name, nil
	}

	if _, err := conn.Exec(ctx, "select pg_advisory_lock($1)", templateLockKey); err != nil {
		return "", fmt.Errorf("lock: %w", err)
	}
	defer func() {
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), "select pg_advisory_unlock($1)", templateLockKey); uerr != nil && err == nil {
			err = fmt.Errorf("unlock: %w", uerr)
		}
	}()
	// Another process may have built it while we waited for the lock.
	if err := conn.QueryRow(ctx, existsSQL, name).Scan(&exists); err != nil {
		return "", fmt.Errorf("look up: %w", err)
	}
	if exists {
		return name, nil
	}

	// Build under a scratch name and rename when complete, so a crash
	// mid-migration never leaves a half-built template under the real name.
	scratch := name + "_build"
	if _, err := conn.Exec(ctx, "drop database if exists "+pgx.Identifier{scratch}.Sanitize()+" with (force)"); err != nil {
		return "", fmt.Errorf("drop leftover: %w", err)
	}
	if _, err := conn.Exec(ctx, "create database "+pgx.Identifier{scratch}.Sanitize()); err != nil {
		return "", fmt.Errorf("create: %w", err)
	}
	if err := database.Migrate(ctx, withDatabase(server, scratch)); err != nil {
		return "", fmt.Errorf("migrate: %w", err)
	}
	sql := fmt.Sprintf("alter database %s rename to %s",
		pgx.Identifier{scratch}.Sanitize(), pgx.Identifier{name}.Sanitize())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return "", fmt.Errorf("rename: %w", err)
	}
	// No connections allowed: CREATE DATABASE ... TEMPLATE fails while anyone
	// is connected to the template.
	sql = fmt.Sprintf("alter database %s with is_template true allow_connections false", pgx.Identifier{name}.Sanitize())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return "", fmt.Errorf("mark template: %w", err)
	}
	return name, nil
}

// migrationsHash is a short digest of every file name and content in fsys.
func migrationsHash(fsys fs.FS) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
