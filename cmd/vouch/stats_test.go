package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestStatsOnce: vouch stats -once counts the days and writes the public
// files into the export directory, without any card holder; a second run
// counts nothing again and writes them again.
func TestStatsOnce(t *testing.T) {
	url := testenv.DatabaseURL(t)
	t.Setenv("DATABASE_URL", url)
	dir := t.TempDir()
	t.Setenv("VOUCH_EXPORT_DIR", dir)
	t.Setenv("VOUCH_EXPORT_TARGET", "")
	log := slog.New(slog.DiscardHandler)
	seedDB(t, url)
	for range 2 {
		if err := runStats(t.Context(), log, []string{"-once"}, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"stats.json", "stats.csv"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("900000777")) {
			t.Errorf("%s names a card holder:\n%s", name, b)
		}
		if !bytes.Contains(b, []byte("vouches")) {
			t.Errorf("%s lacks the vouches of three days ago:\n%s", name, b)
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, ".stats*")); len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}
}

// seedDB writes twelve vouches of one card holder three days ago.
func seedDB(t *testing.T, url string) {
	t.Helper()
	db, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	when := time.Now().Add(-72 * time.Hour)
	for i := range 12 {
		if _, err := db.Exec(t.Context(), `insert into authorizations (id, phone_code, statement, uzi_number, role_code, created_at, expires_at)
			values (gen_random_uuid(), $1, 'st', '900000777', '01.015', $2, $3)`, bytes.Repeat([]byte{byte(i)}, 10), when, when.Add(24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
}
