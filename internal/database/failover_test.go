package database_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/testenv"
)

func TestIsFailover(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"read-only", &pgconn.PgError{Code: "25006"}, true},
		{"wrapped read-only", fmt.Errorf("store: %w", &pgconn.PgError{Code: "25006"}), true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"crash shutdown", &pgconn.PgError{Code: "57P02"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, false},
		{"not a server error", errors.New("25006"), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := database.IsFailover(tt.err); got != tt.want {
				t.Fatalf("IsFailover(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// backendPIDs holds n connections of db at once and returns their server
// processes' ids.
func backendPIDs(t *testing.T, db *database.DB, n int) map[uint32]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conns := make([]*pgxpool.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Release()
			}
		}
	}()
	pids := map[uint32]bool{}
	for i := range conns {
		c, err := db.Pool().Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		pids[c.Conn().PgConn().PID()] = true
	}
	return pids
}

// A connection that answers "read-only transaction" (25006) is no use for
// writing, and neither is any other to that server: the pool drops them
// all, and the next queries run on new connections. (A read-only
// transaction gives the same answer as a standby, or a demoted primary.)
func TestReadOnlyAnswerDropsThePool(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", "3")
	u.RawQuery = q.Encode()
	ctx := t.Context()
	db, err := database.Open(ctx, database.Config{URL: u.String()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	before := backendPIDs(t, db, 3)
	err = pgx.BeginTxFunc(ctx, db.Pool(), pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `insert into registry_entries (uzi_number, license_status) values ('ro', 'active')`)
		return err
	})
	if !database.IsFailover(err) {
		t.Fatalf("write in a read-only transaction: %v, want 25006", err)
	}
	after := backendPIDs(t, db, 3)
	for pid := range after {
		if before[pid] {
			t.Errorf("connection to server process %d kept after a read-only answer", pid)
		}
	}
	// Other errors keep the connections.
	_, err = db.Pool().Exec(ctx, `select 1/0`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22012" {
		t.Fatalf("1/0: %v", err)
	}
	again := backendPIDs(t, db, 3)
	for pid := range again {
		if !after[pid] {
			t.Errorf("a division by zero replaced connection %d", pid)
		}
	}
}

// A primary with a synchronous standby, DATABASE_URL naming both with
// target_session_attrs=primary, and a pool in use: the primary is killed
// (-9) and the standby promoted. The same pool, not reopened, writes to
// the new primary; every write acknowledged before the kill is there.
func TestPoolFollowsPromotedStandby(t *testing.T) {
	t.Parallel()
	pair := testenv.NewPostgresPair(t)
	ctx := t.Context()
	u := pair.URL() + "&pool_max_conns=4"
	db, err := database.Open(ctx, database.Config{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	const ins = `insert into registry_entries (uzi_number, license_status) values ($1, 'active')`
	var port int
	if err := db.Pool().QueryRow(ctx, `select inet_server_port()`).Scan(&port); err != nil {
		t.Fatal(err)
	}
	if port != pair.Primary.Port() {
		t.Fatalf("connected to port %d, want the primary's %d", port, pair.Primary.Port())
	}
	// The standby named first: still the primary.
	reversed := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/vouch?sslmode=disable&target_session_attrs=primary",
		pair.Standby.Port(), pair.Primary.Port())
	if port := serverPort(t, reversed); port != pair.Primary.Port() {
		t.Fatalf("standby named first: connected to port %d, want the primary's %d", port, pair.Primary.Port())
	}

	// Writers keep writing through the kill and the promotion, as a role's
	// loop does; each write acknowledged is noted.
	var (
		mu    sync.Mutex
		acked []string
		fails int
		wg    sync.WaitGroup
	)
	wctx, stop := context.WithCancel(ctx)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; wctx.Err() == nil; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				qctx, cancel := context.WithTimeout(wctx, 5*time.Second)
				_, err := db.Pool().Exec(qctx, ins, id)
				cancel()
				mu.Lock()
				if err == nil {
					acked = append(acked, id)
				} else {
					fails++
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitFor(t, 30*time.Second, "writes on the primary", func() bool { return count() >= 200 })

	pair.Primary.Kill(t)
	killed := time.Now()
	// Until the promotion there is no primary: nothing connects, rather
	// than to the standby.
	if _, err := database.Open(ctx, database.Config{URL: pair.URL()}); err == nil {
		t.Fatal("opened a pool with the primary dead and the standby not promoted")
	}
	pair.Promote(t)
	promoted := time.Now()
	atPromotion := count()
	waitFor(t, 30*time.Second, "a write on the promoted standby", func() bool { return count() > atPromotion+50 })
	t.Logf("kill -9 to promoted: %s; promoted to the next acknowledged write: within %s; %d writes failed meanwhile",
		promoted.Sub(killed).Round(time.Millisecond), time.Since(promoted).Round(time.Millisecond), fails)
	stop()
	wg.Wait()

	if err := db.Pool().QueryRow(ctx, `select inet_server_port()`).Scan(&port); err != nil {
		t.Fatal(err)
	}
	if port != pair.Standby.Port() {
		t.Fatalf("after the promotion connected to port %d, want the standby's %d", port, pair.Standby.Port())
	}
	var stored int
	if err := db.Pool().QueryRow(ctx, `select count(*) from registry_entries where uzi_number = any($1)`, acked).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	t.Logf("writes acknowledged %d, stored %d, lost %d", len(acked), stored, len(acked)-stored)
	if stored != len(acked) {
		t.Fatalf("%d acknowledged writes lost in the failover", len(acked)-stored)
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serverPort is the port of the server a new pool on url reaches.
func serverPort(t *testing.T, url string) int {
	t.Helper()
	db, err := database.Open(t.Context(), database.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var port int
	if err := db.Pool().QueryRow(t.Context(), `select inet_server_port()`).Scan(&port); err != nil {
		t.Fatal(err)
	}
	return port
}
