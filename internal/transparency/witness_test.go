package transparency

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// backendKey is the back end's P-256 export key on the SoftHSM test token.
func backendKey(t testing.TB) crypto.Signer {
	t.Helper()
	man := testenv.Cards(t)
	u, err := p11.ParseURI(man.Backend.ExportURI)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := p11.Open(man.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mod.Close() })
	s, err := mod.Signer(u, man.Backend.PIN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// checkpointFile is the checkpoint published in dir.
func checkpointFile(t testing.TB, dir string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// signedBy says whether the note raw carries a valid signature of v.
func signedBy(raw []byte, v note.Verifier) (bool, error) {
	_, err := note.Open(raw, note.VerifierList(v))
	var unverified *note.UnverifiedNoteError
	if errors.As(err, &unverified) {
		return false, nil
	}
	return err == nil, err
}

// A real witness (litewitness, a process) cosigns the checkpoints, each
// also signed by the back end's P-256 key in the HSM; all three
// signatures verify with transparency-dev/formats' verifiers and
// x/mod's note, none of the writer's code. The witness killed, the
// checkpoints go on being published, signed by the log and the HSM but
// not cosigned; back, it cosigns again, after a consistency proof from
// the last tree it cosigned.
func TestWitnessCosignsHSMSigns(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	dir := t.TempDir()
	skey, vkey := newKey(t, testOrigin)
	wit := testenv.NewWitness(t, testOrigin, vkey)
	hsm := backendKey(t)
	cfg := testConfig(dir, skey)
	cfg.WitnessPolicy = fmt.Sprintf("# the test's witness\nwitness w1 %s %s\nquorum w1\n", wit.VKey, wit.URL)
	cfg.WitnessTimeout = 3 * time.Second
	w, err := NewWriter(cfg, db, testLog(), WithHSMKey(hsm))
	if err != nil {
		t.Fatal(err)
	}
	runWriter(t, w)

	logV, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	hsmV, err := fnote.NewECDSAVerifier(w.HSMVerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	// The HSM verifier key is the HSM's public key.
	der, _ := x509.MarshalPKIXPublicKey(hsm.Public())
	if !strings.HasSuffix(w.HSMVerifierKey(), "+"+base64.StdEncoding.EncodeToString(append([]byte{0x02}, der...))) || !strings.HasPrefix(w.HSMVerifierKey(), testOrigin+"+") {
		t.Fatalf("HSM verifier key %s is not the HSM key's under the origin", w.HSMVerifierKey())
	}
	witV, err := fnote.NewVerifierForCosignatureV1(wit.VKey)
	if err != nil {
		t.Fatal(err)
	}
	check := func(raw []byte, cosigned bool) {
		t.Helper()
		for _, c := range []struct {
			who  string
			v    note.Verifier
			want bool
		}{{"the log's Ed25519 key", logV, true}, {"the HSM's P-256 key", hsmV, true}, {"the witness", witV, cosigned}} {
			ok, err := signedBy(raw, c.v)
			if err != nil || ok != c.want {
				t.Fatalf("checkpoint signed by %s: %v (%v), want %v:\n%s", c.who, ok, err, c.want, raw)
			}
		}
	}
	waitCheckpoint := func(size uint64, cosigned bool) []byte {
		t.Helper()
		var raw []byte
		waitFor(t, 30*time.Second, fmt.Sprintf("a checkpoint of %d leaves, cosigned %v", size, cosigned), func() (bool, error) {
			raw, _ = os.ReadFile(filepath.Join(dir, "checkpoint"))
			if len(raw) == 0 {
				return false, nil // none published yet
			}
			ok, err := signedBy(raw, witV)
			n, _ := checkpointSize(raw)
			return n == size && ok == cosigned, err
		})
		return raw
	}

	insertAuthorizations(t, db, 300)
	check(waitCheckpoint(300, true), true)
	if got := wit.Cosigned(t, testOrigin); got != 300 {
		t.Fatalf("the witness's database says it cosigned %d leaves, want 300", got)
	}

	wit.Kill(t)
	insertAuthorizations(t, db, 100)
	check(waitCheckpoint(400, false), false)

	wit.Start(t)
	insertAuthorizations(t, db, 50)
	check(waitCheckpoint(450, true), true)
	if got := wit.Cosigned(t, testOrigin); got != 450 {
		t.Fatalf("the witness's database says it cosigned %d leaves, want 450", got)
	}
}

// The HSM key must be P-256; a witness policy that does not parse stops
// the writer at its start.
func TestWriterRefusesBadKeysAndPolicies(t *testing.T) {
	t.Parallel()
	skey, _ := newKey(t, testOrigin)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		name   string
		policy string
		opts   []Option
		want   string
	}{
		{"P-384", "", []Option{WithHSMKey(p384)}, "P-256"},
		{"RSA", "", []Option{WithHSMKey(rsaKey)}, "P-256"},
		{"no quorum", "witness w1 " + testVKeyCosig(t) + " http://127.0.0.1:1\n", nil, "quorum"},
		{"not a cosignature key", "witness w1 vouch.test/w+01234567+AQ== http://127.0.0.1:1\nquorum w1\n", nil, "WITNESS_POLICY"},
		{"good", "witness w1 " + testVKeyCosig(t) + " http://127.0.0.1:1\nquorum w1\n", []Option{WithHSMKey(p256)}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t.TempDir(), skey)
			cfg.WitnessPolicy = c.policy
			_, err := NewWriter(cfg, nil, testLog(), c.opts...)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("NewWriter: %v, want an error naming %q", err, c.want)
			}
		})
	}
}

// testVKeyCosig is a witness's cosignature/v1 verifier key.
func testVKeyCosig(t testing.TB) string {
	t.Helper()
	_, vkey := newKey(t, "witness.vouch.test/w")
	c, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wrongSigner signs with another key than the one it says it has: an HSM
// that returns a bad signature.
type wrongSigner struct{ pub, other *ecdsa.PrivateKey }

func (s wrongSigner) Public() crypto.PublicKey { return &s.pub.PublicKey }
func (s wrongSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return s.other.Sign(r, d, o)
}

// The second signature is of signed-note type 0x02: formats'
// NewECDSAVerifier (not the writer's code) verifies it over the note
// text, and refuses it over another text; a signature the HSM got wrong
// is never put on a checkpoint.
func TestHSMSignature(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, vkey, err := newHSMSigner(testOrigin, key)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fnote.NewECDSAVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	edSkey, _ := newKey(t, testOrigin)
	ed, _ := note.NewSigner(edSkey)
	text := testOrigin + "\n7\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
	signed, err := note.Sign(&note.Note{Text: text}, ed, s)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := signedBy(signed, v); !ok {
		t.Fatalf("the 0x02 signature does not verify: %v\n%s", err, signed)
	}
	forged := bytes.Replace(signed, []byte("\n7\n"), []byte("\n8\n"), 1)
	if ok, _ := signedBy(forged, v); ok {
		t.Fatal("the 0x02 signature verifies over another text")
	}
	bad, _, err := newHSMSigner(testOrigin, wrongSigner{pub: key, other: other})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Sign(&note.Note{Text: text}, ed, bad); err == nil {
		t.Fatal("a checkpoint was signed with an HSM signature that does not verify")
	}
}
