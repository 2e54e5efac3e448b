package testenv_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vouch-nl/vouch/internal/testenv"
)

const ownPGInsert = `insert into registry_entries (uzi_number, license_status) values ($1, 'active')`

func connectOwn(t *testing.T, pg *testenv.Postgres) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatalf("connect %s: %v", pg.URL(), err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func hasEntry(t *testing.T, pg *testenv.Postgres, uzi string) bool {
	t.Helper()
	var n int
	const q = `select count(*) from registry_entries where uzi_number = $1`
	if err := connectOwn(t, pg).QueryRow(t.Context(), q, uzi).Scan(&n); err != nil {
		t.Fatalf("count: %v", err)
	}
	return n == 1
}

// refused fails t unless the cluster's port refuses connections.
func refused(t *testing.T, pg *testenv.Postgres) {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(pg.Port())), time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("port %d still accepts connections after the server went down", pg.Port())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, pg.URL()); err == nil {
		conn.Close(context.Background())
		t.Fatal("connect succeeded while the server is down")
	}
}

func TestOwnPostgresStopStartKeepsData(t *testing.T) {
	t.Parallel()
	began := time.Now()
	pg := testenv.OwnPostgres(t)
	t.Logf("OwnPostgres (initdb, start, migrate) took %s", time.Since(began).Round(time.Millisecond))
	if _, err := connectOwn(t, pg).Exec(t.Context(), ownPGInsert, "100000001"); err != nil {
		t.Fatalf("insert (migrated schema expected): %v", err)
	}
	url, port := pg.URL(), pg.Port()

	pg.Stop(t)
	refused(t, pg)

	began = time.Now()
	pg.Start(t)
	if strings.Contains(pg.Log(), "not properly shut down") {
		t.Fatalf("Stop was not a clean shutdown; server log:\n%s", pg.Log())
	}
	t.Logf("Start after Stop took %s", time.Since(began).Round(time.Millisecond))
	if pg.URL() != url || pg.Port() != port {
		t.Fatalf("restart moved the server: %s, was %s", pg.URL(), url)
	}
	if !hasEntry(t, pg, "100000001") {
		t.Fatal("row written before Stop is gone after Start")
	}
}

func TestOwnPostgresKillRecoversCommitted(t *testing.T) {
	t.Parallel()
	pg := testenv.OwnPostgres(t)
	conn := connectOwn(t, pg)
	if _, err := conn.Exec(t.Context(), ownPGInsert, "100000002"); err != nil {
		t.Fatalf("insert: %v", err)
	}
	// An open transaction at the crash must not survive it.
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), ownPGInsert, "100000003"); err != nil {
		t.Fatalf("insert in tx: %v", err)
	}

	pg.Kill(t)
	refused(t, pg)
	// The session died with the server.
	if err := conn.Ping(t.Context()); err == nil {
		t.Fatal("ping on a connection to a killed server succeeded")
	}

	pg.Start(t)
	if !strings.Contains(pg.Log(), "not properly shut down") {
		t.Fatalf("no crash recovery after Kill; server log:\n%s", pg.Log())
	}
	if !hasEntry(t, pg, "100000002") {
		t.Fatal("committed row lost in the crash")
	}
	if hasEntry(t, pg, "100000003") {
		t.Fatal("uncommitted row survived the crash")
	}
	// Kill twice in a row: recovery leaves a server that can crash again.
	pg.Kill(t)
	pg.Start(t)
	if !hasEntry(t, pg, "100000002") {
		t.Fatal("committed row lost in the second crash")
	}
}

func TestOwnPostgresPauseResume(t *testing.T) {
	t.Parallel()
	pg := testenv.OwnPostgres(t)
	conn := connectOwn(t, pg)

	pg.Pause(t)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	_, err := conn.Exec(ctx, `select 1`)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
		t.Fatalf("query on a paused server: %v, want a timeout", err)
	}
	pg.Resume(t)
	// The timed-out connection is gone; a new one works.
	if hasEntry(t, pg, "none") {
		t.Fatal("empty table has an entry")
	}
}

func TestOwnPostgresSeparate(t *testing.T) {
	t.Parallel()
	a, b := testenv.OwnPostgres(t), testenv.OwnPostgres(t)
	if a.Port() == b.Port() || a.URL() == b.URL() {
		t.Fatalf("two clusters share port %d", a.Port())
	}
	if a.Port() == 5432 || b.Port() == 5432 {
		t.Fatal("own cluster on the shared server's port")
	}
	if _, err := connectOwn(t, a).Exec(t.Context(), ownPGInsert, "100000004"); err != nil {
		t.Fatal(err)
	}
	if hasEntry(t, b, "100000004") {
		t.Fatal("b sees a row written to a")
	}
	// Stopping one leaves the other up.
	a.Stop(t)
	if err := connectOwn(t, b).Ping(t.Context()); err != nil {
		t.Fatalf("b after a stopped: %v", err)
	}
}

// TestOwnPostgresStopsWhenTestFails runs a test that starts a cluster,
// freezes it and fails, in a child test binary, and checks the cluster is
// gone afterwards: cleanup runs on failure and also ends a frozen server.
func TestOwnPostgresStopsWhenTestFails(t *testing.T) {
	t.Parallel()
	if os.Getenv(ownPGChildEnv) != "" {
		t.Skip("this is the parent; the child runs TestOwnPostgresFailingChild")
	}
	portFile := filepath.Join(t.TempDir(), "port")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestOwnPostgresFailingChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), ownPGChildEnv+"="+portFile)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(out), "failing on purpose") {
		t.Fatalf("child test should have failed on purpose: %v\n%s", err, out)
	}
	b, err := os.ReadFile(portFile)
	if err != nil {
		t.Fatalf("child wrote no port: %v\n%s", err, out)
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", string(b)), time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("port %s still accepts connections after the failed test ended\n%s", b, out)
	}
}

const ownPGChildEnv = "VOUCH_OWNPG_CHILD_PORT_FILE"

// TestOwnPostgresFailingChild fails on purpose when run by
// TestOwnPostgresStopsWhenTestFails and does nothing otherwise.
func TestOwnPostgresFailingChild(t *testing.T) {
	portFile := os.Getenv(ownPGChildEnv)
	if portFile == "" {
		return // only meaningful as the child
	}
	pg := testenv.OwnPostgres(t)
	if err := os.WriteFile(portFile, []byte(strconv.Itoa(pg.Port())), 0o600); err != nil {
		t.Fatal(err)
	}
	pg.Pause(t)
	t.Fatal("failing on purpose")
}
