package transparency

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// buildLog writes a log of entries into dir with tessera, signed by skey,
// all added at once, each at its index, and waits for its checkpoint: what
// a lying operator would publish to some, beside the log others see.
func buildLog(t testing.TB, dir, skey, vkey string, entries [][]byte) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	driver, err := posix.New(ctx, posix.Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	app, shutdown, _, err := tessera.NewAppender(ctx, driver, tessera.NewAppendOptions().
		WithCheckpointSigner(signer).WithBatching(256, 10*time.Millisecond).WithCheckpointInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	futures := make([]tessera.IndexFuture, len(entries))
	for i, e := range entries {
		futures[i] = app.Add(ctx, tessera.NewEntry(e))
	}
	for i, f := range futures {
		idx, err := f()
		if err != nil {
			t.Fatal(err)
		}
		if idx.Index != uint64(i) {
			t.Fatalf("entry %d got index %d", i, idx.Index)
		}
	}
	v, _ := note.NewVerifier(vkey)
	waitFor(t, 10*time.Second, "the checkpoint", func() (bool, error) {
		raw, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
		if err != nil {
			return false, nil
		}
		cp, err := OpenCheckpoint(raw, v)
		return err == nil && cp.Size == uint64(len(entries)), nil
	})
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func someEntries(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, 16)
		rand.Read(b)
		out[i] = AuthorizationEntry(b, time.Now())
	}
	return out
}

// A split view: the operator shows one history to a monitor and another
// later (same size, another root; or a bigger tree of which the first is
// not a prefix). The monitor and the auditor, each with the checkpoint it
// saw before, refuse and print both signed checkpoints; an honest growth
// is accepted.
func TestSplitViewDetected(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	base := someEntries(5)
	seen := t.TempDir()
	buildLog(t, seen, skey, vkey, base)
	db := testenv.Database(t)

	for _, c := range []struct {
		name    string
		entries [][]byte
		fork    bool
	}{
		{"same size, another leaf", append(append([][]byte{}, base[:4]...), someEntries(1)...), true},
		{"bigger, not a prefix", append(append(append([][]byte{}, base[:2]...), someEntries(1)...), append(append([][]byte{}, base[3:]...), someEntries(3)...)...), true},
		{"bigger, a prefix", append(append([][]byte{}, base...), someEntries(3)...), false},
		{"smaller", base[:3], true},
	} {
		t.Run(c.name, func(t *testing.T) {
			other := t.TempDir()
			buildLog(t, other, skey, vkey, c.entries)
			v, _ := Verifier(vkey)
			for _, party := range []string{"monitor", "auditor"} {
				ctx := context.Background()
				st := &State{Days: map[string]*DayCount{}}
				src, _ := OpenSource(seen)
				if _, err := Follow(ctx, src, v, st, false, nil); err != nil {
					t.Fatal(err)
				}
				src, _ = OpenSource(other)
				if party == "monitor" {
					_, err = Follow(ctx, src, v, st, false, nil)
				} else {
					_, err = Audit(ctx, db, src, v, st, time.Minute, time.Now())
				}
				var fe *ForkError
				switch {
				case c.fork && !errors.As(err, &fe):
					t.Fatalf("%s: a split view passed: %v", party, err)
				case c.fork && strings.Count(err.Error(), "\n— "+testOrigin+" ") != 2:
					// Both signed checkpoints, each with its signature line.
					t.Fatalf("%s: the fork proof lacks the two signed checkpoints:\n%v", party, err)
				case !c.fork && err != nil:
					t.Fatalf("%s: an honest growth refused: %v", party, err)
				}
			}
		})
	}
}

// Entry bundles that do not give the checkpoint's root (an origin serving
// other entries than the tree it signed) are refused: what the monitor
// counts is what the checkpoint commits to.
func TestMonitorRefusesEntriesNotInTheTree(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	buildLog(t, dir, skey, vkey, someEntries(3))
	bundle := filepath.Join(dir, "tile", "entries", "000.p", "3")
	b, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(bundle, b, 0o644); err != nil {
		t.Fatal(err)
	}
	v, _ := Verifier(vkey)
	src, _ := OpenSource(dir)
	if _, err := Follow(context.Background(), src, v, &State{Days: map[string]*DayCount{}}, false, nil); err == nil || !strings.Contains(err.Error(), "give root") {
		t.Fatalf("a changed entry: %v", err)
	}
}
