package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/transparency"
)

const logOrigin = "vouch.test/transparency/log"

// buildTestLog writes a log of entries into dir with tessera (replacing
// what was there) and waits for its checkpoint.
func buildTestLog(t *testing.T, dir, skey string, entries [][]byte) {
	t.Helper()
	os.RemoveAll(dir)
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
	app, shutdown, reader, err := tessera.NewAppender(ctx, driver, tessera.NewAppendOptions().
		WithCheckpointSigner(signer).WithBatching(256, 10*time.Millisecond).WithCheckpointInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	futures := make([]tessera.IndexFuture, len(entries))
	for i, e := range entries {
		futures[i] = app.Add(ctx, tessera.NewEntry(e))
	}
	for _, f := range futures {
		if _, err := f(); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		raw, err := reader.ReadCheckpoint(ctx)
		if err == nil && bytes.Contains(raw, []byte("\n"+strconv.Itoa(len(entries))+"\n")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint")
		}
	}
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func testEntries(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, 16)
		rand.Read(b)
		out[i] = transparency.AuthorizationEntry(b, time.Now())
	}
	return out
}

// TestSyncChecksTheLog: sync with the log's key (and no export key) keeps
// the first checkpoint, proves a leaf recorded at pickup once the log has
// it, refuses a checkpoint its witnesses did not cosign, and on a split
// view prints a fork proof that verify-fork accepts with the log's key.
func TestSyncChecksTheLog(t *testing.T) {
	t.Parallel()
	o := newTestOrigin(t)
	skey, vkey, _ := note.GenerateKey(rand.Reader, logOrigin)
	wskey, wvkey, _ := note.GenerateKey(rand.Reader, "witness.test")
	wvkey, _ = fnote.VKeyToCosignatureV1(wvkey)
	logDir := filepath.Join(o.dir, "log")
	base := testEntries(10)
	buildTestLog(t, logDir, skey, base)
	state := filepath.Join(t.TempDir(), "state")
	sync := func(extra ...string) (string, error) {
		var out bytes.Buffer
		err := realMain(context.Background(), append([]string{"sync", "-cdn", o.url, "-state", state, "-log-key", vkey}, extra...), &out)
		return out.String(), err
	}
	out, err := sync()
	if err != nil || !strings.Contains(out, "checkpoint of 10 leaves verified, the first this phone keeps") {
		t.Fatalf("first sync: %v\n%s", err, out)
	}

	// A pickup recorded a leaf the log does not have yet.
	mine := testEntries(1)[0]
	pl := &phoneLog{dir: state, now: time.Now}
	if err := pl.record("0a0b", mine); err != nil {
		t.Fatal(err)
	}
	out, err = sync()
	if err != nil || !strings.Contains(out, "authorization 0a0b is not in the log yet") {
		t.Fatalf("pending: %v\n%s", err, out)
	}
	grown := append(append(append([][]byte{}, base...), testEntries(3)...), mine)
	buildTestLog(t, logDir, skey, grown)
	out, err = sync()
	if err != nil || !strings.Contains(out, "consistent with the 10 seen before") || !strings.Contains(out, "authorization 0a0b is leaf 13: inclusion verified against the checkpoint of 14 leaves") {
		t.Fatalf("proven: %v\n%s", err, out)
	}

	// The witness policy: uncosigned, refused and the old one kept; cosigned, accepted.
	grown = append(grown, testEntries(2)...)
	buildTestLog(t, logDir, skey, grown)
	out, err = sync("-log-witness", wvkey, "-log-witness-quorum", "1")
	if !errors.Is(err, exitError(1)) || !strings.Contains(out, "REFUSED the checkpoint of 16 leaves: 0 valid cosignatures of the 1 the witness policy requires") || !strings.Contains(out, "kept the checkpoint of 14 leaves") {
		t.Fatalf("uncosigned under a policy: %v\n%s", err, out)
	}
	cpFile := filepath.Join(logDir, "checkpoint")
	raw, _ := os.ReadFile(cpFile)
	v, _ := note.NewVerifier(vkey)
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	ws, _ := fnote.NewSignerForCosignatureV1(wskey)
	cosigned, _ := note.Sign(&note.Note{Text: n.Text, Sigs: n.Sigs}, ws)
	os.WriteFile(cpFile, cosigned, 0o644)
	out, err = sync("-log-witness", wvkey)
	if err != nil || !strings.Contains(out, "consistent with the 14 seen before; cosigned by witness.test (1 of 1 required)") {
		t.Fatalf("cosigned: %v\n%s", err, out)
	}

	// A split view: another history of 16 leaves.
	buildTestLog(t, logDir, skey, append(append([][]byte{}, grown[:15]...), testEntries(1)...))
	out, err = sync()
	if !errors.Is(err, exitError(1)) || !strings.Contains(out, "FORK: two trees of 16 leaves with different roots") {
		t.Fatalf("split view: %v\n%s", err, out)
	}
	proofs, _ := filepath.Glob(filepath.Join(state, "fork-proof-*.txt"))
	if len(proofs) != 1 {
		t.Fatalf("fork proof files: %v", proofs)
	}
	var vout bytes.Buffer
	if err := realMain(context.Background(), []string{"verify-fork", "-log-key", vkey, proofs[0]}, &vout); err != nil || !strings.HasPrefix(vout.String(), "PROVEN") {
		t.Fatalf("verify-fork: %v\n%s", err, vout.String())
	}
	_, otherKey, _ := note.GenerateKey(rand.Reader, logOrigin)
	vout.Reset()
	if err := realMain(context.Background(), []string{"verify-fork", "-log-key", otherKey, proofs[0]}, &vout); err == nil || !strings.HasPrefix(vout.String(), "NOT PROVEN") {
		t.Fatalf("verify-fork with another key: %v\n%s", err, vout.String())
	}
	// The kept checkpoint is still the one before the fork.
	st, err := transparency.LoadPhoneState(filepath.Join(state, transparency.PhoneStateFile))
	if err != nil || st.Checkpoint != string(cosigned) {
		t.Fatalf("the state changed on a fork: %v", err)
	}
}

// Witness flags without the log's key, and a quorum above the witnesses,
// are refused before anything is fetched.
func TestLogFlagsRefused(t *testing.T) {
	t.Parallel()
	_, vkey, _ := note.GenerateKey(rand.Reader, logOrigin)
	_, wvkey, _ := note.GenerateKey(rand.Reader, "witness.test")
	for name, args := range map[string][]string{
		"witness without the log key": {"sync", "-log-key", "", "-log-witness", wvkey},
		"quorum above the witnesses":  {"sync", "-log-key", vkey, "-log-witness", wvkey, "-log-witness-quorum", "2"},
		"a bad log key":               {"sync", "-log-key", "nonsense"},
	} {
		if err := realMain(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
