package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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

// TestStatsConfigCheck: vouch config check stats refuses an interval past
// its bounds and an unknown zone, naming the variable.
func TestStatsConfigCheck(t *testing.T) {
	for _, c := range []struct {
		env    map[string]string
		status int
		want   string
	}{
		{map[string]string{"VOUCH_STATS_INTERVAL": "30m"}, 0, ""},
		{map[string]string{"VOUCH_STATS_INTERVAL": "10s"}, 1, "VOUCH_STATS_INTERVAL"},
		{map[string]string{"VOUCH_STATS_INTERVAL": "7h"}, 1, "VOUCH_STATS_INTERVAL"},
		{map[string]string{"VOUCH_VOUCH_DAY_ZONE": "Mars/Olympus"}, 1, "VOUCH_VOUCH_DAY_ZONE"},
	} {
		onlyEnv(t, c.env)
		var stdout, stderr bytes.Buffer
		err := realMain(context.Background(), []string{"config", "check", "stats"}, &stdout, &stderr)
		status := 0
		var exit exitError
		if errors.As(err, &exit) {
			status = int(exit)
		} else if err != nil {
			t.Fatalf("%v: %v", c.env, err)
		}
		if status != c.status || !strings.Contains(stdout.String(), c.want) {
			t.Errorf("%v: status %d, want %d naming %q:\n%s", c.env, status, c.status, c.want, stdout.String())
		}
	}
}
