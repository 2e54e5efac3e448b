//go:build !mutation

package export_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// protocDecode decodes b as message (of testdata/gaen_export.proto, written
// from the GAEN specification) with Debian's protoc: a decoder that shares
// no code with internal/export.
func protocDecode(t *testing.T, message string, b []byte) string {
	t.Helper()
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Fatalf("protoc (Debian's protobuf-compiler) is needed for the independent decoder: `make deps` installs it: %v", err)
	}
	cmd := exec.Command(protoc, "--proto_path=testdata", "--decode=gaen."+message, "gaen_export.proto")
	cmd.Stdin = bytes.NewReader(b)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("protoc --decode=%s: %v: %s", message, err, stderr.String())
	}
	return string(out)
}

// decoded is protoc's text format of a TemporaryExposureKeyExport, read
// into its top-level scalars and, for each key list, one line per key of
// its fields other than key_data.
type decoded struct {
	scalars map[string]string
	keys    map[string][]string // "keys", "revised_keys" → sorted field lines
	infos   []string
}

func parseText(t *testing.T, text string) decoded {
	t.Helper()
	d := decoded{scalars: map[string]string{}, keys: map[string][]string{}}
	var block string
	var fields []string
	for _, l := range strings.Split(text, "\n") {
		switch {
		case l == "":
		case strings.HasSuffix(l, " {") && !strings.HasPrefix(l, " "):
			block, fields = strings.TrimSuffix(l, " {"), nil
		case l == "}":
			slices.Sort(fields)
			if block == "signature_infos" {
				d.infos = append(d.infos, strings.Join(fields, " "))
			} else {
				d.keys[block] = append(d.keys[block], strings.Join(fields, " "))
			}
			block = ""
		case block != "":
			if f := strings.TrimSpace(l); !strings.HasPrefix(f, "key_data:") {
				fields = append(fields, f)
			}
		default:
			name, value, ok := strings.Cut(l, ": ")
			if !ok {
				t.Fatalf("protoc printed %q", l)
			}
			d.scalars[name] = value
		}
	}
	for _, l := range d.keys {
		slices.Sort(l)
	}
	return d
}

var reportNames = []string{"UNKNOWN", "CONFIRMED_TEST", "CONFIRMED_CLINICAL_DIAGNOSIS", "SELF_REPORT", "RECURSIVE", "REVOKED"}

// textOf is how protoc prints k's fields (key_data aside), sorted.
func textOf(k export.Key) string {
	f := []string{
		fmt.Sprintf("transmission_risk_level: %d", k.TransmissionRisk),
		fmt.Sprintf("rolling_start_interval_number: %d", k.RollingStart),
		fmt.Sprintf("rolling_period: %d", k.RollingPeriod),
		"report_type: " + reportNames[k.ReportType],
	}
	if k.HasOnset {
		f = append(f, fmt.Sprintf("days_since_onset_of_symptoms: %d", k.DaysSinceOnset))
	}
	slices.Sort(f)
	return strings.Join(f, " ")
}

// TestIndependentCheck publishes an export with the aggregator (SoftHSM
// key), then checks each file of the index with tools that share no code
// with Vouch: openssl verifies export.sig's signature over export.bin with
// the export key's PEM, and protoc decodes export.bin under a .proto
// written from the GAEN specification. The header, window, batch, key ids
// and every key's fields must be what was stored; an empty export too.
func TestIndependentCheck(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is needed for the independent check: %v", err)
	}
	db := testenv.Database(t)
	cfg := testConfig(t)
	signer := hsmKeys(t)[0]
	a := newAggregator(t, cfg, db, nil, signer)
	c := &clock{t: noon}
	export.SetNow(a, c.now)
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pubPEM := filepath.Join(dir, "export-public.pem")
	os.WriteFile(pubPEM, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)

	check := func(name string, zipData []byte, wantKeys, wantRevised []export.Key) {
		t.Helper()
		bin, sig := entries(t, zipData)
		sigs := signatures(t, sig)
		if len(sigs) != 1 {
			t.Fatalf("%s: %d signatures", name, len(sigs))
		}
		binPath, sigPath := filepath.Join(dir, "export.bin"), filepath.Join(dir, "sig.der")
		os.WriteFile(binPath, bin, 0o600)
		os.WriteFile(sigPath, sigs[0], 0o600)
		out, err := exec.Command(openssl, "dgst", "-sha256", "-verify", pubPEM, "-signature", sigPath, binPath).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Verified OK") {
			t.Fatalf("%s: openssl: %v: %s", name, err, out)
		}
		if string(bin[:16]) != "EK Export v1    " {
			t.Fatalf("%s: header %q", name, bin[:16])
		}
		d := parseText(t, protocDecode(t, "TemporaryExposureKeyExport", bin[16:]))
		start, _ := strconv.ParseInt(d.scalars["start_timestamp"], 10, 64)
		end, _ := strconv.ParseInt(d.scalars["end_timestamp"], 10, 64)
		if start <= 0 || end <= start || end > c.now().Unix() {
			t.Errorf("%s: window %d..%d at %d", name, start, end, c.now().Unix())
		}
		if d.scalars["batch_num"] != "1" || d.scalars["batch_size"] != "1" || d.scalars["region"] != `"NL"` {
			t.Errorf("%s: header %v", name, d.scalars)
		}
		if len(d.infos) != 1 || !strings.Contains(d.infos[0], `verification_key_id: "204"`) ||
			!strings.Contains(d.infos[0], `signature_algorithm: "1.2.840.10045.4.3.2"`) {
			t.Errorf("%s: signature infos %v", name, d.infos)
		}
		for list, want := range map[string][]export.Key{"keys": wantKeys, "revised_keys": wantRevised} {
			var w []string
			for _, k := range want {
				w = append(w, textOf(k))
			}
			slices.Sort(w)
			if !slices.Equal(w, d.keys[list]) {
				t.Errorf("%s: protoc read %s\n%v\nwant\n%v", name, list, d.keys[list], w)
			}
		}
		sd := protocDecode(t, "TEKSignatureList", sig)
		if !strings.Contains(sd, "batch_num: 1") || !strings.Contains(sd, "batch_size: 1") {
			t.Errorf("%s: export.sig reads %s", name, sd)
		}
	}
	run := func() []string {
		t.Helper()
		res, err := a.Run(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return res.Files
	}

	// Empty: one file with a real window and no keys.
	files := run()
	b, _ := os.ReadFile(filepath.Join(cfg.Dir, files[0]))
	check("empty export", b, nil, nil)

	var keys []export.Key
	for i, rt := range []int32{1, 2, 3, 5, 1, 4} {
		k := dayKey(t, 1+i)
		k.ReportType = rt
		k.TransmissionRisk = int32(i)
		k.HasOnset = i != 4
		keys = append(keys, k)
	}
	storeKeys(t, db, "partner", keys...)
	c.add(time.Minute)
	files = run()
	b, _ = os.ReadFile(filepath.Join(cfg.Dir, files[1]))
	check("keys", b, keys, nil)

	if _, err := db.Pool().Exec(t.Context(), `update exposure_keys set revised_report_type = 5 where key_data = $1`, keys[1].Data[:]); err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	files = run()
	revoked := keys[1]
	revoked.ReportType = export.ReportRevoked
	b, _ = os.ReadFile(filepath.Join(cfg.Dir, files[2]))
	check("revision", b, nil, []export.Key{revoked})
}
