package migrations_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/tern/v2/migrate"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/migrations"
)

func TestAuditLogIsAppendOnly(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ctx := t.Context()
	const insertSQL = `insert into audit_log (seq, at, actor, action, subject, detail, prev_hash, hash)
		values (1, now(), $1, $2, $3, $4, $5, $6)`
	if _, err := db.Pool().Exec(ctx, insertSQL, "alice", "vouch", "code", `{"k":1}`, nil, []byte{1}); err != nil {
		t.Fatalf("insert: %v", err)
	}

	tests := []struct{ name, sql string }{
		{"update", `update audit_log set actor = 'mallory'`},
		{"delete", `delete from audit_log`},
		{"truncate", `truncate audit_log`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := db.Pool().Exec(ctx, tt.sql)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
				t.Fatalf("%s: err = %v, want insufficient_privilege from the trigger", tt.name, err)
			}
		})
	}
}

func TestConstraints(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ctx := t.Context()
	expires := time.Now().Add(24 * time.Hour)
	const authSQL = `insert into authorizations (id, phone_code, statement, uzi_number, expires_at)
		values (gen_random_uuid(), $1, $2, $3, $4)`
	const regSQL = `insert into registry_entries (uzi_number, license_status) values ($1, $2)`

	tests := []struct {
		name   string
		sql    string
		args   []any
		wantOK bool
	}{
		{"authorization", authSQL, []any{make([]byte, 10), []byte("s"), "123", expires}, true},
		{"short phone code", authSQL, []any{make([]byte, 9), []byte("s"), "123", expires}, false},
		{"no uzi number", authSQL, []any{make([]byte, 10), []byte("s"), nil, expires}, false},
		{"active license", regSQL, []any{"1", "active"}, true},
		{"deceased license", regSQL, []any{"2", "deceased"}, true},
		{"unknown license status", regSQL, []any{"3", "retired"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := db.Pool().Exec(ctx, tt.sql, tt.args...)
			if (err == nil) != tt.wantOK {
				t.Fatalf("err = %v, want ok=%v", err, tt.wantOK)
			}
		})
	}
}

// TestDownAndUpAgain checks that every down section undoes its up section.
func TestDownAndUpAgain(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	m, err := migrate.NewMigrator(ctx, conn, database.VersionTable)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		t.Fatal(err)
	}
	if err := m.MigrateTo(ctx, 0); err != nil {
		t.Fatalf("down: %v", err)
	}
	var tables int
	const tablesSQL = `select count(*) from pg_tables where schemaname = 'public' and tablename <> $1`
	if err := conn.QueryRow(ctx, tablesSQL, database.VersionTable).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Fatalf("%d tables left after migrating down", tables)
	}
	if err := m.Migrate(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
}
