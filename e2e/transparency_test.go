package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/transparency"
)

const tlOrigin = "vouch.e2e/transparency/log"

// TestTransparencyWriter runs `vouch transparency log` as a process with
// everything it writes to: the log directory, the exports' bucket
// (versitygw), a witness (litewitness) and a key of its own on the back
// end's HSM (SoftHSM). Stored authorizations (vouched bundles, as the back
// office stores them, and many more) are logged; the writer is killed with
// -9 in the middle of its small batches and another resumes; then, from the
// bucket alone: every checkpoint is signed by the log's key and the HSM's
// and cosigned by the witness; each phone finds its own bundle's leaf and
// proves its inclusion; `vouch transparency audit` finds every
// authorization exactly once. The witness killed, checkpoints go on being
// published to the bucket, uncosigned, and the monitor follows them.
func TestTransparencyWriter(t *testing.T) {
	w := newWorld(t, testenv.DatabaseURL(t))
	ctx := context.Background()
	db, err := database.Open(ctx, database.Config{URL: w.dbURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)

	// The log's key, made by the command; its HSM key, on the token.
	keyFile := filepath.Join(w.dir, "log.key")
	out, err := exec.Command(w.bin, "transparency", "keygen", "-origin", tlOrigin, "-out", keyFile).CombinedOutput()
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	vkey := strings.TrimSpace(string(out))
	hsmKey := rotationHSM{t: t, man: w.man, dir: t.TempDir()}.generate("transparency")
	hsmV := tlHSMVerifier(t, hsmKey.pub)
	wit := testenv.NewWitness(t, tlOrigin, vkey)
	witV, err := fnote.NewVerifierForCosignatureV1(wit.VKey)
	if err != nil {
		t.Fatal(err)
	}
	logV, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	gw := testenv.S3Gateway(t)
	const bucket = "vouch-e2e"
	gw.Bucket(t, bucket, true)
	logURL := gw.URL(bucket, "nl/log/")

	phones, _ := vouched(t, w.man, 6)
	tlStore(t, db, phones)
	tlStoreMany(t, db, 1500)
	total := uint64(len(phones) + 1500)

	env := []string{
		"VOUCH_TRANSPARENCY_DIR=" + filepath.Join(w.dir, "exports", "log"), "VOUCH_TRANSPARENCY_ORIGIN=" + tlOrigin,
		"VOUCH_TRANSPARENCY_KEY_FILE=" + keyFile, "VOUCH_TRANSPARENCY_HSM_KEY_URI=" + hsmKey.uri,
		"VOUCH_TRANSPARENCY_WITNESS_POLICY=" + fmt.Sprintf("witness w1 %s %s\nquorum w1\n", wit.VKey, wit.URL),
		"VOUCH_TRANSPARENCY_WITNESS_TIMEOUT=3s", "VOUCH_TRANSPARENCY_INTERVAL=20ms", "VOUCH_TRANSPARENCY_BATCH=16",
		"VOUCH_TRANSPARENCY_CHECKPOINT_INTERVAL=200ms", "VOUCH_TRANSPARENCY_LEASE=2s",
		"VOUCH_EXPORT_TARGET=s3://" + bucket + "/nl", "VOUCH_EXPORT_S3_ENDPOINT=" + gw.Endpoint,
		"VOUCH_EXPORT_S3_ACCESS_KEY_FILE=" + gw.AccessKeyFile, "VOUCH_EXPORT_S3_SECRET_KEY_FILE=" + gw.SecretKeyFile,
		"VOUCH_CDN_MAX_AGE=1h",
	}
	writer := w.role("transparency-1", env, "transparency", "log")
	tlWaitBucket(t, logURL, 20*time.Second, "a checkpoint of 300 leaves or more in the bucket", func(raw []byte, size uint64) bool {
		return size >= 300
	})
	writer.kill9()
	w.role("transparency-2", env, "transparency", "log")

	cosigned := tlWaitBucket(t, logURL, 60*time.Second, fmt.Sprintf("a cosigned checkpoint of %d leaves in the bucket", total), func(raw []byte, size uint64) bool {
		return size == total && tlSigned(raw, witV)
	})
	for who, v := range map[string]note.Verifier{"the log's key": logV, "the HSM key": hsmV, "the witness": witV} {
		if !tlSigned(cosigned, v) {
			t.Fatalf("the bucket's checkpoint is not signed by %s:\n%s", who, cosigned)
		}
	}

	// Each phone proves its own leaf from the bucket.
	src, err := transparency.OpenSource(logURL)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := transparency.Verifier(vkey)
	index := map[string]uint64{}
	cp, err := transparency.Follow(ctx, src, v, &transparency.State{Days: map[string]*transparency.DayCount{}}, true,
		func(idx uint64, raw []byte, _ transparency.Entry) error {
			if _, dup := index[string(raw)]; dup {
				return fmt.Errorf("leaf %d repeats an earlier one", idx)
			}
			index[string(raw)] = idx
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, src.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	for i, ph := range phones {
		_, issued := tlBundle(t, ph.bundle)
		entry := transparency.AuthorizationEntry(ph.bundle, issued)
		idx, ok := index[string(entry)]
		if !ok {
			t.Fatalf("phone %d's bundle has no leaf in the bucket's log", i)
		}
		if err := transparency.ProveInclusion(ctx, pb, cp, idx, entry); err != nil {
			t.Fatalf("phone %d: %v", i, err)
		}
	}

	// The auditor, through the bucket: every authorization once.
	audit := exec.Command(w.bin, "transparency", "audit", "-key", vkey, "-state", filepath.Join(t.TempDir(), "audit.json"), logURL)
	audit.Env = append(os.Environ(), "DATABASE_URL="+w.dbURL)
	out, err = audit.CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d authorizations proven", total)) || !strings.Contains(string(out), " 0 repeated leaves") {
		t.Fatalf("audit after the crash: %v\n%s", err, out)
	}

	// The witness down: the bucket's checkpoints grow, uncosigned, and
	// the monitor follows them from where it was.
	state := filepath.Join(t.TempDir(), "monitor.json")
	tlMonitor(t, w, vkey, state, logURL, total)
	wit.Kill(t)
	tlStoreMany(t, db, 40)
	uncosigned := tlWaitBucket(t, logURL, 30*time.Second, "a checkpoint of 40 more leaves in the bucket", func(raw []byte, size uint64) bool {
		return size == total+40
	})
	if tlSigned(uncosigned, witV) || !tlSigned(uncosigned, logV) || !tlSigned(uncosigned, hsmV) {
		t.Fatalf("with the witness down, the checkpoint should be signed by the log and the HSM, not cosigned:\n%s", uncosigned)
	}
	tlMonitor(t, w, vkey, state, logURL, total+40)
}

// tlMonitor runs `vouch transparency monitor` on the log at url and wants
// it to report size leaves, consistent with its state.
func tlMonitor(t *testing.T, w *world, vkey, state, url string, size uint64) {
	t.Helper()
	out, err := exec.Command(w.bin, "transparency", "monitor", "-key", vkey, "-state", state, url).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d leaves", size)) {
		t.Fatalf("monitor: %v\n%s", err, out)
	}
}

// tlHSMVerifier is the signed-note (type 0x02) verifier of the P-256 key
// in the PEM file, made by transparency-dev/formats.
func tlHSMVerifier(t *testing.T, pemFile string) note.Verifier {
	t.Helper()
	b, err := os.ReadFile(pemFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", pemFile)
	}
	sum := sha256.Sum256(blk.Bytes)
	v, err := fnote.NewECDSAVerifier(fmt.Sprintf("%s+%x+%s", tlOrigin, sum[:4], base64.StdEncoding.EncodeToString(append([]byte{0x02}, blk.Bytes...))))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// tlSigned says whether the note raw carries a valid signature of v.
func tlSigned(raw []byte, v note.Verifier) bool {
	_, err := note.Open(raw, note.VerifierList(v))
	return err == nil
}

// tlWaitBucket polls the bucket's checkpoint (as anyone reads it) until
// cond holds, and returns it.
func tlWaitBucket(t *testing.T, logURL string, within time.Duration, what string, cond func(raw []byte, size uint64) bool) []byte {
	t.Helper()
	deadline := time.Now().Add(within)
	var last []byte
	for {
		resp, err := http.Get(logURL + "checkpoint")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				last = b
				if size, err := tlSize(b); err == nil && cond(b, size) {
					return b
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s; the last:\n%s", what, within, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tlSize is a checkpoint's tree size, its second line.
func tlSize(raw []byte) (uint64, error) {
	lines := bytes.SplitN(raw, []byte("\n"), 3)
	if len(lines) < 3 {
		return 0, errors.New("short checkpoint")
	}
	var n uint64
	_, err := fmt.Sscan(string(lines[1]), &n)
	return n, err
}

// tlBundle parses a phone's bundle and its statement's issue time.
func tlBundle(t *testing.T, raw []byte) (*protocol.Bundle, time.Time) {
	t.Helper()
	b, err := protocol.ParseBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := protocol.ParseStatement(b.Statement)
	if err != nil {
		t.Fatal(err)
	}
	return b, st.IssuedAt
}

// tlStore stores the phones' bundles as the back office stores a vouch.
func tlStore(t *testing.T, db *database.DB, phones []phone) {
	t.Helper()
	for _, ph := range phones {
		b, issued := tlBundle(t, ph.bundle)
		if _, err := db.Pool().Exec(context.Background(), `insert into authorizations
			(id, phone_code, statement, statement_sig, attestation, attestation_sig, signer_cert, uzi_number, created_at, expires_at)
			values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			[16]byte(random(t, 16)), random(t, 10), b.Statement, b.StatementSignature, b.Attestation, b.AttestationSignature, b.Cert,
			"900000024", issued, time.Now().Add(24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
}

// tlStoreMany stores n authorizations of random bytes (the log hashes
// them; only their number matters here).
func tlStoreMany(t *testing.T, db *database.DB, n int) {
	t.Helper()
	rows := make([][]any, n)
	now := time.Now()
	for i := range rows {
		st := make([]byte, 200)
		rand.Read(st)
		rows[i] = []any{[16]byte(random(t, 16)), random(t, 10), st, "900000024", now.Add(time.Duration(i) * time.Microsecond), now.Add(24 * time.Hour)}
	}
	if _, err := db.Pool().CopyFrom(context.Background(), pgx.Identifier{"authorizations"},
		[]string{"id", "phone_code", "statement", "uzi_number", "created_at", "expires_at"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
}
