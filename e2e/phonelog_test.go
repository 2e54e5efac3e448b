package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/transparency"
)

// TestPhoneLogPickupToInclusion is the phone's side of the log end to
// end, every part a process: the reference phone (cmd/phone) picks up its
// bundle from ingest before the writer logged it (the log is fed
// asynchronously), so pickup keeps the first checkpoint and says the leaf
// is not there yet; `vouch transparency log` then logs the stored
// authorization, with litewitness cosigning; `phone sync`, requiring the
// witness's cosignature, checks the new checkpoint extends the kept one
// and proves the leaf's inclusion — all through vouch cdn. With the
// witness killed the writer publishes uncosigned checkpoints, which the
// phone of that policy refuses, keeping the one it had, while a phone
// without a witness policy accepts them.
func TestPhoneLogPickupToInclusion(t *testing.T) {
	w := newWorld(t, testenv.DatabaseURL(t))
	ctx := context.Background()
	db, err := database.Open(ctx, database.Config{URL: w.dbURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	phoneBin := testenv.Build(t, "./cmd/phone")

	keyFile := filepath.Join(w.dir, "log.key")
	out, err := exec.Command(w.bin, "transparency", "keygen", "-origin", tlOrigin, "-out", keyFile).CombinedOutput()
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	vkey := strings.TrimSpace(string(out))
	hsmKey := rotationHSM{t: t, man: w.man, dir: t.TempDir()}.generate("transparency")
	wit := testenv.NewWitness(t, tlOrigin, vkey)
	witV, err := fnote.NewVerifierForCosignatureV1(wit.VKey)
	if err != nil {
		t.Fatal(err)
	}
	cosigned := func(raw []byte) bool { return tlSigned(raw, witV) }

	phones, gp := vouched(t, w.man, 3)
	w.vouch(phones[:1], gp)
	w.role("ingest", []string{"VOUCH_OPS_LISTEN=" + freeAddr(t)}, "ingest")
	cdn := w.role("cdn", []string{"VOUCH_OPS_LISTEN=" + freeAddr(t)}, "cdn")
	w.waitPort(cdn, strings.TrimPrefix(w.cdn, "http://"))

	// Two authorizations logged before the phone's, so the log has a
	// checkpoint at pickup that does not hold its leaf.
	tlStore(t, db, phones[1:])
	env := []string{
		"VOUCH_TRANSPARENCY_DIR=" + filepath.Join(w.dir, "exports", "log"), "VOUCH_TRANSPARENCY_ORIGIN=" + tlOrigin,
		"VOUCH_TRANSPARENCY_KEY_FILE=" + keyFile, "VOUCH_TRANSPARENCY_HSM_KEY_URI=" + hsmKey.uri,
		"VOUCH_TRANSPARENCY_WITNESS_POLICY=" + fmt.Sprintf("witness w1 %s %s\nquorum w1\n", wit.VKey, wit.URL),
		"VOUCH_TRANSPARENCY_WITNESS_TIMEOUT=3s", "VOUCH_TRANSPARENCY_INTERVAL=50ms",
		"VOUCH_TRANSPARENCY_CHECKPOINT_INTERVAL=200ms", "VOUCH_TRANSPARENCY_LEASE=2s",
	}
	writer := w.role("transparency", env, "transparency", "log")
	plWaitCheckpoint(t, w, 2, cosigned, 30*time.Second)
	writer.stop()

	state := t.TempDir()
	logFlags := []string{"-state", state, "-log", w.cdn + "/log/", "-log-key", vkey, "-log-witness", wit.VKey, "-log-witness-quorum", "1"}
	keyFile0 := filepath.Join(t.TempDir(), "phone.key")
	if err := os.WriteFile(keyFile0, []byte(hex.EncodeToString(phones[0].priv.Seed())), 0o600); err != nil {
		t.Fatal(err)
	}
	out2, err := plPhone(t, w, phoneBin, append([]string{"pickup", "-key", keyFile0, "-api", w.ingest, "-out", filepath.Join(state, "bundle.bin"), "-timeout", "1m"}, logFlags...)...)
	if err != nil || !strings.Contains(out2, "checkpoint of 2 leaves verified, the first this phone keeps; cosigned by "+wit.Name) ||
		!regexp.MustCompile(`authorization [0-9a-f]{32} is not in the log yet`).MatchString(out2) {
		t.Fatalf("pickup: %v\n%s", err, out2)
	}

	// The back office stores the phone's vouch; the writer logs it.
	tlStore(t, db, phones[:1])
	w.role("transparency-2", env, "transparency", "log")
	plWaitCheckpoint(t, w, 3, cosigned, 30*time.Second)
	out2, err = plPhone(t, w, phoneBin, append([]string{"sync", "-cdn", w.cdn}, logFlags...)...)
	if err != nil || !strings.Contains(out2, "consistent with the 2 seen before; cosigned by "+wit.Name+" (1 of 1 required)") ||
		!regexp.MustCompile(`authorization [0-9a-f]{32} is leaf 2: inclusion verified against the checkpoint of 3 leaves`).MatchString(out2) {
		t.Fatalf("sync: %v\n%s", err, out2)
	}
	st, err := transparency.LoadPhoneState(filepath.Join(state, transparency.PhoneStateFile))
	if err != nil || len(st.Leaves) != 1 || st.Leaves[0].Index == nil {
		t.Fatalf("the phone's state: %+v, %v", st, err)
	}
	kept := st.Checkpoint

	// The witness down: checkpoints go on, uncosigned. The phone that
	// requires the witness refuses them and keeps its own; a phone without
	// a witness policy takes them.
	wit.Kill(t)
	more, _ := vouched(t, w.man, 5)
	tlStore(t, db, more[3:])
	plWaitCheckpoint(t, w, 5, nil, 30*time.Second)
	out2, err = plPhone(t, w, phoneBin, append([]string{"sync", "-cdn", w.cdn}, logFlags...)...)
	if err == nil || !strings.Contains(out2, "REFUSED the checkpoint of 5 leaves: 0 valid cosignatures of the 1 the witness policy requires") ||
		!strings.Contains(out2, "kept the checkpoint of 3 leaves") {
		t.Fatalf("sync with the witness down: %v\n%s", err, out2)
	}
	if st, err := transparency.LoadPhoneState(filepath.Join(state, transparency.PhoneStateFile)); err != nil || st.Checkpoint != kept {
		t.Fatalf("the refused checkpoint replaced the kept one: %v", err)
	}
	out2, err = plPhone(t, w, phoneBin, "sync", "-cdn", w.cdn, "-state", state, "-log-key", vkey)
	if err != nil || !strings.Contains(out2, "checkpoint of 5 leaves verified, consistent with the 3 seen before") {
		t.Fatalf("sync without a witness policy: %v\n%s", err, out2)
	}
}

// plPhone runs the reference phone with the world's trust.
func plPhone(t *testing.T, w *world, bin string, args ...string) (string, error) {
	t.Helper()
	var b bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), w.env...)
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// plWaitCheckpoint waits until the origin publishes a checkpoint of size
// leaves (for which and holds, when given).
func plWaitCheckpoint(t *testing.T, w *world, size uint64, and func([]byte) bool, within time.Duration) {
	t.Helper()
	tlWaitBucket(t, w.cdn+"/log/", within, fmt.Sprintf("a checkpoint of %d leaves from the origin", size), func(raw []byte, n uint64) bool {
		return n == size && (and == nil || and(raw))
	})
}
