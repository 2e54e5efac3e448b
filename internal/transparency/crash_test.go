package transparency

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// helperEnv makes the test binary a log writer (TestMain): the process a
// test kills with SIGKILL.
const helperEnv = "VOUCH_TRANSPARENCY_TEST_WRITER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperWriter())
	}
	os.Exit(m.Run())
}

// helperWriter runs a writer from the environment. With HANG set it stops
// forever after its first batch is in the log and before the mirror
// records it, and says so by creating the file HANG names.
func helperWriter() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	db, err := database.Open(ctx, database.Config{URL: os.Getenv("DATABASE_URL")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer db.Close()
	cfg := Config{Dir: os.Getenv("LOG_DIR"), Origin: testOrigin, Key: os.Getenv("LOG_KEY"), Interval: 20 * time.Millisecond,
		AuditInterval: time.Hour, CheckpointInterval: 100 * time.Millisecond, Lease: time.Second}
	fmt.Sscan(os.Getenv("BATCH"), &cfg.Batch)
	w, err := NewWriter(cfg, db, testLog())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if hang := os.Getenv("HANG"); hang != "" {
		w.afterAppend = func() {
			os.WriteFile(hang, nil, 0o644)
			select {}
		}
	}
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// The writer killed with SIGKILL — once in the window after a batch is in
// the log and before PostgreSQL records it, once wherever it is in a run
// of small batches — resumes without losing or repeating a leaf: the log
// ends with every authorization exactly once, and the mirror says which
// leaf is which.
func TestWriterKilledResumesExactlyOnce(t *testing.T) {
	t.Parallel()
	const total = 1000
	url := testenv.DatabaseURL(t)
	db, err := database.Open(context.Background(), database.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	dir := t.TempDir()
	skey, vkey := newKey(t, testOrigin)
	insertAuthorizations(t, db, total)

	start := func(batch int, hang string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=1", "DATABASE_URL="+url, "LOG_DIR="+dir, "LOG_KEY="+skey,
			fmt.Sprintf("BATCH=%d", batch), "HANG="+hang)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	kill := func(cmd *exec.Cmd) {
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
	}

	// 1. Killed between the log and the mirror.
	hang := filepath.Join(t.TempDir(), "hanging")
	cmd := start(100, hang)
	waitFor(t, 20*time.Second, "the writer to stop after its first batch", func() (bool, error) {
		_, err := os.Stat(hang)
		return err == nil, nil
	})
	kill(cmd)
	if n, _ := mirrored(db); n != 0 || treeStateSize(t, dir) != 100 {
		t.Fatalf("not in the window: %d recorded, %d in the log", n, treeStateSize(t, dir))
	}

	// 2. Killed in the middle of a run of small batches, wherever it is.
	cmd = start(7, "")
	waitFor(t, 20*time.Second, "400 leaves recorded", func() (bool, error) {
		n, err := mirrored(db)
		return n >= 400, err
	})
	kill(cmd)
	t.Logf("killed at %d leaves in the log", treeStateSize(t, dir))

	// 3. Resumed: everything, once. (The killed writers' lease expires
	// within its TTL.)
	start(64, "")
	waitLogged(t, db, dir, vkey, total)
	src, _ := OpenSource(dir)
	v, _ := Verifier(vkey)
	ctx := context.Background()
	rep, err := Audit(ctx, db, src, v, &State{Days: map[string]*DayCount{}}, time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checkpoint.Size != total || rep.Authorizations != total || rep.Repeats != 0 || len(rep.Problems) != 0 {
		t.Fatalf("after the crashes: %d leaves, %d authorizations proven, %d repeats, problems %v",
			rep.Checkpoint.Size, rep.Authorizations, rep.Repeats, rep.Problems)
	}
	var ids, idxs int64
	if err := db.Pool().QueryRow(ctx, `select count(distinct authorization_id), count(distinct idx) from transparency_leaves`).Scan(&ids, &idxs); err != nil {
		t.Fatal(err)
	}
	if ids != total || idxs != total {
		t.Fatalf("the mirror names %d authorizations at %d leaves, want %d", ids, idxs, total)
	}
}
