//go:build !mutation

package export_test

import (
	"archive/zip"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// detSigner signs with RFC 6979 deterministic ECDSA: the golden file's
// signature is the same at every run, and still verifies.
type detSigner struct{ *ecdsa.PrivateKey }

func (s detSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.PrivateKey.Sign(nil, digest, opts)
}

// softKey is a fixed P-256 key (scalar seed..), for files whose bytes are
// compared.
func softKey(t testing.TB, seed byte) detSigner {
	t.Helper()
	d := bytes.Repeat([]byte{seed}, 32)
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		t.Fatal(err)
	}
	return detSigner{k}
}

func softSigner(t testing.TB, seed byte, version string) export.Signer {
	return export.Signer{Signer: softKey(t, seed), Version: version, ID: "204"}
}

var (
	hsmOnce    sync.Once
	hsmSigners []export.Signer
	hsmErr     error
	hsmExport  string // the export key's PEM file
)

// hsmKeys are the back end's export key and, as the second key of a
// rotation, its attestation key: both ECDSA P-256 on SoftHSM.
func hsmKeys(t testing.TB) []export.Signer {
	t.Helper()
	man := testenv.Cards(t)
	hsmOnce.Do(func() {
		hsmExport = man.Backend.ExportPub
		mod, err := p11.Open(man.Module)
		if err != nil {
			hsmErr = err
			return
		}
		for i, raw := range []string{man.Backend.ExportURI, man.Backend.AttestationURI} {
			u, err := p11.ParseURI(raw)
			if err != nil {
				hsmErr = err
				return
			}
			g, err := mod.Signer(u, man.Backend.PIN)
			if err != nil {
				hsmErr = err
				return
			}
			hsmSigners = append(hsmSigners, export.Signer{Signer: g, Version: []string{"v1", "v2"}[i], ID: "204"})
		}
	})
	if hsmErr != nil {
		t.Fatalf("SoftHSM export keys: %v", hsmErr)
	}
	return hsmSigners
}

func pubOf(s export.Signer) *ecdsa.PublicKey { return s.Public().(*ecdsa.PublicKey) }

var t0 = time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)

func sampleKeys() []export.Key {
	var keys []export.Key
	for i := range 5 {
		k := export.Key{ReportType: export.ReportConfirmedTest}
		k.Data[0] = byte(5 - i) // given out of order: the file sorts them
		k.Data[15] = byte(i)
		k.RollingStart = exposure.IntervalNumber(t0.AddDate(0, 0, -i-1))
		k.RollingPeriod = 144
		k.TransmissionRisk = int32(i)
		if i%2 == 0 {
			k.DaysSinceOnset, k.HasOnset = int32(i-2), true
		}
		keys = append(keys, k)
	}
	return keys
}

func writeFile(t testing.TB, keys []export.Key, signers ...export.Signer) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := export.Write(&b, t0.AddDate(0, 0, -14), t0, "NL", 1, 1, keys, signers); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func sorted(keys []export.Key) []export.Key {
	out := append([]export.Key(nil), keys...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if bytes.Compare(out[j].Data[:], out[i].Data[:]) < 0 {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestGolden(t *testing.T) {
	t.Parallel()
	s := softSigner(t, 7, "v1")
	got := writeFile(t, sampleKeys(), s)
	if again := writeFile(t, sampleKeys(), s); !bytes.Equal(got, again) {
		t.Fatal("the same keys gave different bytes")
	}
	golden := filepath.Join("testdata", "small.zip")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to make it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("export bytes differ from %s (run with -update if the change is meant)", golden)
	}
	f, err := export.Open(want, []*ecdsa.PublicKey{pubOf(s)})
	if err != nil {
		t.Fatal(err)
	}
	wantFile := &export.File{Start: t0.AddDate(0, 0, -14), End: t0, Region: "NL", BatchNum: 1, BatchSize: 1, Keys: sorted(sampleKeys())}
	if d := cmp.Diff(wantFile, f); d != "" {
		t.Errorf("Open (-want +got):\n%s", d)
	}
}

// entries returns export.bin and export.sig of a zip.
func entries(t testing.TB, zipData []byte) (bin, sig []byte) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(zipData), int64(len(zipData)))
	if err != nil {
		t.Fatal(err)
	}
	read := func(i int) []byte {
		rc, err := zr.File[i].Open()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return read(0), read(1)
}

// rezip makes a zip of the given entries, valid as a zip whatever they hold.
func rezip(t testing.TB, files ...[2][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, f := range files {
		w, err := zw.Create(string(f[0]))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(f[1])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// signatures are the DER signatures of export.sig, in order.
func signatures(t testing.TB, sig []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(sig) > 0 {
		_, _, n := protowire.ConsumeTag(sig)
		m, mn := protowire.ConsumeBytes(sig[n:])
		if n < 0 || mn < 0 {
			t.Fatal("bad export.sig")
		}
		sig = sig[n+mn:]
		for len(m) > 0 {
			num, typ, n := protowire.ConsumeTag(m)
			l := protowire.ConsumeFieldValue(num, typ, m[n:])
			if num == 4 {
				v, _ := protowire.ConsumeBytes(m[n:])
				out = append(out, v)
			}
			m = m[n+l:]
		}
	}
	return out
}

func TestOpenRefusesMutations(t *testing.T) {
	t.Parallel()
	s := softSigner(t, 7, "v1")
	trusted := []*ecdsa.PublicKey{pubOf(s)}
	good := writeFile(t, sampleKeys(), s)
	bin, sig := entries(t, good)
	if _, err := export.Open(rezip(t, [2][]byte{[]byte("export.bin"), bin}, [2][]byte{[]byte("export.sig"), sig}), trusted); err != nil {
		t.Fatalf("rezipped good file refused: %v", err)
	}
	for i := range bin {
		m := bytes.Clone(bin)
		m[i] ^= 0x01
		if _, err := export.Open(rezip(t, [2][]byte{[]byte("export.bin"), m}, [2][]byte{[]byte("export.sig"), sig}), trusted); err == nil {
			t.Errorf("export.bin with byte %d changed was accepted", i)
		}
	}
	// The signature info's text is not signed (GAEN's too): a flip there
	// may pass. Everything else must not.
	infoStart, infoEnd := 4, 4+int(sig[3])
	for i := range sig {
		m := bytes.Clone(sig)
		m[i] ^= 0x01
		_, err := export.Open(rezip(t, [2][]byte{[]byte("export.bin"), bin}, [2][]byte{[]byte("export.sig"), m}), trusted)
		if err == nil && (i < infoStart || i >= infoEnd) {
			t.Errorf("export.sig with byte %d changed was accepted", i)
		}
	}
	other := softSigner(t, 9, "v1")
	if _, err := export.Open(good, []*ecdsa.PublicKey{pubOf(other)}); !errors.Is(err, export.ErrSignature) {
		t.Errorf("under another key: %v, want ErrSignature", err)
	}
	if _, err := export.Open(good, nil); !errors.Is(err, export.ErrSignature) {
		t.Errorf("with no trusted key: %v, want ErrSignature", err)
	}
	extra := rezip(t, [2][]byte{[]byte("export.bin"), bin}, [2][]byte{[]byte("export.sig"), sig}, [2][]byte{[]byte("x"), nil})
	if _, err := export.Open(extra, trusted); !errors.Is(err, export.ErrFormat) {
		t.Errorf("a third entry: %v, want ErrFormat", err)
	}
	swapped := rezip(t, [2][]byte{[]byte("export.sig"), sig}, [2][]byte{[]byte("export.bin"), bin})
	if _, err := export.Open(swapped, trusted); !errors.Is(err, export.ErrFormat) {
		t.Errorf("entries swapped: %v, want ErrFormat", err)
	}
}

// TestOpenRefusesSignedGarbage signs malformed export.bin contents with the
// trusted key: the signature verifies, the parse must still refuse.
func TestOpenRefusesSignedGarbage(t *testing.T) {
	t.Parallel()
	s := softSigner(t, 7, "v1")
	trusted := []*ecdsa.PublicKey{pubOf(s)}
	bin, _ := entries(t, writeFile(t, sampleKeys(), s))
	hdr := len(export.Header)
	key := func(fields ...byte) []byte { // a keys field around raw fields
		return append(protowire.AppendTag(nil, 7, protowire.BytesType), protowire.AppendBytes(nil, fields)...)
	}
	data16 := append([]byte{0x0a, 16}, make([]byte, 16)...)
	cases := map[string][]byte{
		"no header":         bin[hdr:],
		"other header":      append([]byte("EK Export v2    "), bin[hdr:]...),
		"truncated":         bin[:len(bin)-1],
		"unknown field":     append(bytes.Clone(bin), 0x50, 0x01), // field 10
		"revised keys":      append(bytes.Clone(bin), 0x42, 0x00),
		"key of 15 bytes":   append(bytes.Clone(bin), key(append([]byte{0x0a, 15}, make([]byte, 15)...)...)...),
		"key without start": append(bytes.Clone(bin), key(append(bytes.Clone(data16), 0x20, 0x01)...)...),
		"period 0":          append(bytes.Clone(bin), key(append(bytes.Clone(data16), 0x18, 0x01, 0x20, 0x00)...)...),
		"period 145":        append(bytes.Clone(bin), key(append(bytes.Clone(data16), 0x18, 0x01, 0x20, 0x91, 0x01)...)...),
		"risk 9":            append(bytes.Clone(bin), key(append(bytes.Clone(data16), 0x18, 0x01, 0x10, 0x09)...)...),
		"onset 15":          append(bytes.Clone(bin), key(append(append([]byte{0x0a, 16, 6}, make([]byte, 15)...), 0x18, 0x01, 0x30, 30)...)...),
		"onset -15":         append(bytes.Clone(bin), key(append(append([]byte{0x0a, 16, 6}, make([]byte, 15)...), 0x18, 0x01, 0x30, 29)...)...),
		// all-zero key data sorts before the sample's keys: out of order
		"out of order": append(bytes.Clone(bin), key(append(bytes.Clone(data16), 0x18, 0x01)...)...),
		// the sample's greatest key again
		"duplicate key": append(bytes.Clone(bin), key(append(append([]byte{0x0a, 16, 5}, make([]byte, 15)...), 0x18, 0x01)...)...),
		"batch 2 of 1": func() []byte {
			b := bytes.Clone(bin)
			i := bytes.Index(b, []byte{0x20, 0x01, 0x28, 0x01})
			b[i+1] = 2
			return b
		}(),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			digest := sha256Sum(b)
			sig, err := s.Sign(nil, digest, crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			sigList := appendSig(sig)
			if _, err := export.Open(rezip(t, [2][]byte{[]byte("export.bin"), b}, [2][]byte{[]byte("export.sig"), sigList}), trusted); !errors.Is(err, export.ErrFormat) {
				t.Errorf("Open = %v, want ErrFormat", err)
			}
		})
	}
}

// TestOpenChecksSignatureFirst: a malformed export.bin under a signature
// that does not verify is refused for the signature; its body is never
// parsed.
func TestOpenChecksSignatureFirst(t *testing.T) {
	t.Parallel()
	s := softSigner(t, 7, "v1")
	_, sig := entries(t, writeFile(t, sampleKeys(), s))
	garbage := append([]byte("EK Export v1    "), 0xff, 0xff, 0xff, 0x07)
	_, err := export.Open(rezip(t, [2][]byte{[]byte("export.bin"), garbage}, [2][]byte{[]byte("export.sig"), sig}), []*ecdsa.PublicKey{pubOf(s)})
	if !errors.Is(err, export.ErrSignature) || errors.Is(err, export.ErrFormat) {
		t.Errorf("Open = %v, want ErrSignature", err)
	}
}

// TestRevisedKeysRoundTrip: revised_keys are written after the keys and
// read back, each list sorted on its own.
func TestRevisedKeysRoundTrip(t *testing.T) {
	t.Parallel()
	s := softSigner(t, 7, "v1")
	keys := sampleKeys()
	revised := keys[:2]
	for i := range revised {
		revised[i].ReportType = export.ReportRevoked
	}
	want := &export.File{Start: t0.Add(-time.Hour), End: t0, Region: "NL", BatchNum: 1, BatchSize: 1, Keys: sorted(keys[2:]), Revised: sorted(revised)}
	var b bytes.Buffer
	if err := export.WriteFile(&b, want, []export.Signer{s}); err != nil {
		t.Fatal(err)
	}
	got, err := export.Open(b.Bytes(), []*ecdsa.PublicKey{pubOf(s)})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func appendSig(sig []byte) []byte {
	var m []byte
	m = protowire.AppendTag(m, 2, protowire.VarintType)
	m = protowire.AppendVarint(m, 1)
	m = protowire.AppendTag(m, 3, protowire.VarintType)
	m = protowire.AppendVarint(m, 1)
	m = protowire.AppendTag(m, 4, protowire.BytesType)
	m = protowire.AppendBytes(m, sig)
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), m)
}

func TestOpenZipBomb(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, _ := zw.Create("export.bin")
	w.Write([]byte(export.Header))
	zeros := make([]byte, 1<<20)
	for range export.MaxBinSize>>20 + 2 { // decompresses past the bound
		w.Write(zeros)
	}
	w2, _ := zw.Create("export.sig")
	w2.Write([]byte{})
	zw.Close()
	if b.Len() > 1<<20 {
		t.Fatalf("bomb is %d bytes, not a bomb", b.Len())
	}
	if _, err := export.Open(b.Bytes(), nil); !errors.Is(err, export.ErrFormat) {
		t.Errorf("Open = %v, want ErrFormat", err)
	}
}

// TestRotation: during a rotation every file carries a signature of each
// key, and verifies under either alone.
func TestRotation(t *testing.T) {
	t.Parallel()
	signers := hsmKeys(t)
	zipData := writeFile(t, sampleKeys(), signers...)
	_, sig := entries(t, zipData)
	if n := len(signatures(t, sig)); n != 2 {
		t.Fatalf("%d signatures, want 2", n)
	}
	for i, s := range signers {
		if _, err := export.Open(zipData, []*ecdsa.PublicKey{pubOf(s)}); err != nil {
			t.Errorf("under key %d alone: %v", i+1, err)
		}
	}
	single := writeFile(t, sampleKeys(), signers[0])
	if _, err := export.Open(single, []*ecdsa.PublicKey{pubOf(signers[1])}); !errors.Is(err, export.ErrSignature) {
		t.Errorf("file of the old key under the new one: %v, want ErrSignature", err)
	}
}

// TestOpenSSLVerifies checks the SoftHSM signature with a second,
// independent tool.
func TestOpenSSLVerifies(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is needed for the independent check: %v", err)
	}
	signers := hsmKeys(t)
	bin, sig := entries(t, writeFile(t, sampleKeys(), signers...))
	sigs := signatures(t, sig)
	dir := t.TempDir()
	binPath, sigPath, pubPath := filepath.Join(dir, "export.bin"), filepath.Join(dir, "sig.der"), filepath.Join(dir, "pub.pem")
	for i, s := range signers {
		der, err := x509.MarshalPKIXPublicKey(s.Public())
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(binPath, bin, 0o600)
		os.WriteFile(sigPath, sigs[i], 0o600)
		os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
		if i == 0 {
			pubPath = hsmExport // the manifest's own PEM of the export key
		}
		out, err := exec.Command(openssl, "dgst", "-sha256", "-verify", pubPath, "-signature", sigPath, binPath).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Verified OK") {
			t.Fatalf("openssl, key %d: %v: %s", i+1, err, out)
		}
		bad := bytes.Clone(bin)
		bad[len(bad)-1] ^= 1
		os.WriteFile(binPath, bad, 0o600)
		if out, err := exec.Command(openssl, "dgst", "-sha256", "-verify", pubPath, "-signature", sigPath, binPath).CombinedOutput(); err == nil {
			t.Fatalf("openssl verified a changed export.bin: %s", out)
		}
		pubPath = filepath.Join(dir, "pub.pem")
	}
}

func TestReadIndex(t *testing.T) {
	t.Parallel()
	ok := "exports/a.zip\nexports/b.zip\r\n\n"
	got, err := export.ReadIndex(strings.NewReader(ok))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"exports/a.zip", "exports/b.zip"}, got); d != "" {
		t.Errorf("ReadIndex (-want +got):\n%s", d)
	}
	for name, in := range map[string]string{
		"absolute":     "/etc/passwd\n",
		"dotdot":       "../secret\n",
		"inner dotdot": "exports/../../x\n",
		"dot":          ".\n",
		"not clean":    "exports//a.zip\n",
		"backslash":    "exports\\..\\a\n",
		"scheme":       "http://evil/x\n",
		"space":        "a b\n",
		"query":        "a?b\n",
		"long line":    strings.Repeat("a", 300) + "\n",
		"oversize":     strings.Repeat("exports/a.zip\n", export.MaxIndexSize/14+1),
	} {
		if _, err := export.ReadIndex(strings.NewReader(in)); !errors.Is(err, export.ErrFormat) {
			t.Errorf("%s: ReadIndex = %v, want ErrFormat", name, err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	s := softSigner(f, 7, "v1")
	trusted := []*ecdsa.PublicKey{pubOf(s)}
	f.Add(writeFile(f, sampleKeys(), s))
	f.Add(writeFile(f, nil, s))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := export.Open(b, trusted)
		if err != nil {
			return
		}
		if len(file.Keys) > export.MaxKeysPerFile {
			t.Fatal("more keys than the bound")
		}
		for i := 1; i < len(file.Keys); i++ {
			if bytes.Compare(file.Keys[i-1].Data[:], file.Keys[i].Data[:]) >= 0 {
				t.Fatal("keys not strictly increasing")
			}
		}
		// What Open accepts, Write reproduces under the same key.
		again := writeFileAt(t, file, s)
		if _, err := export.Open(again, trusted); err != nil {
			t.Fatalf("rewritten file refused: %v", err)
		}
	})
}

func writeFileAt(t testing.TB, f *export.File, s export.Signer) []byte {
	var b bytes.Buffer
	if err := export.Write(&b, f.Start, f.End, f.Region, f.BatchNum, f.BatchSize, f.Keys, []export.Signer{s}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
