package database_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
	"github.com/sethvargo/go-envconfig"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/migrations"
)

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"default", nil, database.DefaultURL},
		{"set", map[string]string{"DATABASE_URL": "postgres://u@db:5433/x"}, "postgres://u@db:5433/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cfg database.Config
			err := envconfig.ProcessWith(t.Context(), &envconfig.Config{
				Target: &cfg, Lookuper: envconfig.MapLookuper(tt.env),
			})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.URL != tt.want {
				t.Fatalf("URL = %q, want %q", cfg.URL, tt.want)
			}
		})
	}
}

func TestOpenFailsOnBadServer(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, url string }{
		{"unparsable", "postgres://%zz"},
		{"no server", "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db, err := database.Open(t.Context(), database.Config{URL: tt.url})
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
}

func TestOpenAndInTx(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, err := database.Open(ctx, database.Config{URL: testenv.DatabaseURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	const insertSQL = `insert into registry_entries (uzi_number, license_status) values ($1, 'active')`
	const countSQL = `select count(*) from registry_entries where uzi_number = $1`
	count := func(uzi string) int {
		t.Helper()
		var n int
		if err := db.Pool().QueryRow(ctx, countSQL, uzi).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	if err := db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, insertSQL, "1")
		return err
	}); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if n := count("1"); n != 1 {
		t.Fatalf("committed rows = %d, want 1", n)
	}

	errBoom := errors.New("boom")
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, insertSQL, "2"); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("InTx error = %v, want %v", err, errBoom)
	}
	if n := count("2"); n != 0 {
		t.Fatalf("rolled back rows = %d, want 0", n)
	}

	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic not propagated")
			}
		}()
		_ = db.InTx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, insertSQL, "3"); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	if n := count("3"); n != 0 {
		t.Fatalf("rows after panic = %d, want 0", n)
	}
}

// freshURL names a database that does not exist yet on the test server; it is
// dropped when the test ends.
func freshURL(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("vouch_fresh_%s", u.Path[len("/vouch_test_"):])
	t.Cleanup(func() {
		defer admin.Close(context.Background())
		if _, err := admin.Exec(context.Background(), "drop database if exists "+name+" with (force)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

func TestEnsureDatabaseConcurrently(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	u := freshURL(t)

	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() { errs[i] = database.EnsureDatabase(ctx, u) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("EnsureDatabase %d: %v", i, err)
		}
	}
	if err := database.EnsureDatabase(ctx, u); err != nil {
		t.Fatalf("again: %v", err)
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("connect to created database: %v", err)
	}
	conn.Close(ctx)
}

func TestMigrateConcurrentlyAndIdempotent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	u := freshURL(t)
	if err := database.EnsureDatabase(ctx, u); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = database.Migrate(ctx, u) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Migrate %d: %v", i, err)
		}
	}
	if err := database.Migrate(ctx, u); err != nil {
		t.Fatalf("again: %v", err)
	}

	files, err := migrationsCount()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var version int
	if err := conn.QueryRow(ctx, `select version from `+database.VersionTable).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version != files {
		t.Fatalf("schema version = %d, want %d", version, files)
	}
}

func migrationsCount() (int, error) {
	entries, err := migrations.FS.ReadDir(".")
	if err != nil {
		return 0, err
	}
	return len(entries), nil
}

func TestMigrateFSReportsBadSQL(t *testing.T) {
	t.Parallel()
	u := testenv.DatabaseURL(t)
	// The real migrations, then one more with a typo: the database has the
	// real ones already, so only the last runs, and fails.
	bad := fstest.MapFS{}
	entries, err := migrations.FS.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		b, err := migrations.FS.ReadFile(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		bad[e.Name()] = &fstest.MapFile{Data: b}
		n++
	}
	bad[fmt.Sprintf("%03d_bad.sql", n+1)] = &fstest.MapFile{Data: []byte("create tabel y;\n")}
	err = database.MigrateFS(t.Context(), u, bad)
	var pgErr migrate.MigrationPgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42601" {
		t.Fatalf("err = %v, want a syntax error from 002", err)
	}
}

func TestIsMissingDatabase(t *testing.T) {
	t.Parallel()
	u := freshURL(t)
	err := database.Migrate(t.Context(), u)
	if !database.IsMissingDatabase(err) {
		t.Fatalf("migrating a database that is not there: %v, want it recognised as missing", err)
	}
	if err := database.EnsureDatabase(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if err := database.Migrate(t.Context(), u); err != nil || database.IsMissingDatabase(err) {
		t.Fatalf("after creating it: %v", err)
	}
	if database.IsMissingDatabase(errors.New("3D000")) {
		t.Error("a plain error taken for a missing database")
	}
}
