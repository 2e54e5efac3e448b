package export

// The fast layer, continued: what the aggregator does without the
// database (file names, the index text, atomic writes, leftover temporary
// files, the free-space check, decoding a key row, metrics).

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestContentName: a file's name is SHA-256(export.bin's digest, then each
// signer's public key in PKIX DER), so another key under the same
// version and id gives another name, and the same keys the same name.
func TestContentName(t *testing.T) {
	t.Parallel()
	s1, p1 := memSigner(t, "v1", "204")
	s2, p2 := memSigner(t, "v1", "204")
	digest := sha256.Sum256([]byte("export.bin"))
	der := func(p *ecdsa.PrivateKey) []byte {
		b, err := x509.MarshalPKIXPublicKey(&p.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	h := sha256.New()
	h.Write(digest[:])
	h.Write(der(p1))
	h.Write(der(p2))
	got, err := contentName(digest[:], []Signer{s1, s2})
	if err != nil || got != hex.EncodeToString(h.Sum(nil)) {
		t.Errorf("contentName = %s, %v", got, err)
	}
	if other, _ := contentName(digest[:], []Signer{s1}); other == got || len(other) != 64 {
		t.Errorf("one signer fewer: %s", other)
	}
	if _, err := contentName(digest[:], []Signer{{Signer: badKey{s1.Signer}}}); err == nil {
		t.Error("a signer whose public key cannot be encoded: no error")
	}
}

type badKey struct{ crypto.Signer }

func (badKey) Public() crypto.PublicKey { return struct{}{} }

func TestIndexText(t *testing.T) {
	t.Parallel()
	if got := indexText([]string{"exports/a.zip", "exports/b.zip"}); got != "exports/a.zip\nexports/b.zip\n" {
		t.Errorf("indexText = %q", got)
	}
	if got := indexText(nil); got != "" {
		t.Errorf("empty index %q", got)
	}
	// What the aggregator writes, a fetcher reads back.
	files := []string{"exports/a.zip", "exports/b.zip"}
	if got, err := ReadIndex(strings.NewReader(indexText(files))); err != nil || strings.Join(got, ",") != strings.Join(files, ",") {
		t.Errorf("round trip: %q, %v", got, err)
	}
}

func TestWriteAtomic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, IndexName), []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(dir, IndexName, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, IndexName))
	if err != nil || string(b) != "new\n" {
		t.Errorf("index %q, %v", b, err)
	}
	// The origin serves it: readable by all.
	if st, err := os.Stat(filepath.Join(dir, IndexName)); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v", st.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
	if err := writeAtomic(filepath.Join(dir, "missing"), IndexName, nil); err == nil {
		t.Error("missing directory: no error")
	}
	// A rename onto a directory fails, and leaves no temporary file.
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d", "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(dir, "d", []byte("x")); err == nil {
		t.Error("rename onto a directory: no error")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("after a failed write: %v", ents)
	}
	if err := syncDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("syncDir of a missing directory: no error")
	}
}

func testAggregator(t *testing.T, cfg Config) (*Aggregator, *prometheus.Registry) {
	t.Helper()
	s, _ := memSigner(t, "v1", "204")
	reg := prometheus.NewRegistry()
	a, err := New(cfg, nil, []Signer{s}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a, reg
}

func TestNew(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{}, nil, nil, nil, nil); err == nil {
		t.Error("no signer: accepted")
	}
	a, reg := testAggregator(t, Config{})
	b, _ := testAggregator(t, Config{})
	if a.holder == b.holder || !strings.Contains(a.holder, "/") {
		t.Errorf("holders %q and %q", a.holder, b.holder)
	}
	a.m.runs.WithLabelValues("published").Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	if got := strings.Join(names, " "); got != "vouch_export_files vouch_export_free_bytes vouch_export_keys_held vouch_export_keys_published vouch_export_run_seconds vouch_export_runs_total" {
		t.Errorf("metrics %s", got)
	}
	// A second aggregator on the same registry is refused.
	s, _ := memSigner(t, "v1", "204")
	if _, err := New(Config{}, nil, []Signer{s}, reg, nil); err == nil {
		t.Error("registered twice: accepted")
	}
	if _, err := New(Config{}, nil, []Signer{s}, nil, nil); err != nil {
		t.Errorf("no registry: %v", err)
	}
}

// TestRemoveStaleTemps: temporary files older than a lease go, from the
// root and exports/; younger ones (a run may be writing them) and
// published files stay.
func TestRemoveStaleTemps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	exports := filepath.Join(dir, ExportsDir)
	if err := os.Mkdir(exports, 0o755); err != nil {
		t.Fatal(err)
	}
	a, _ := testAggregator(t, Config{Dir: dir, Lease: time.Hour})
	old := time.Now().Add(-time.Hour - time.Minute)
	young := time.Now().Add(-time.Hour + time.Minute)
	files := map[string]time.Time{
		filepath.Join(dir, tmpPrefix+"1"):     old,
		filepath.Join(exports, tmpPrefix+"2"): old,
		filepath.Join(exports, tmpPrefix+"3"): young,
		filepath.Join(exports, "a.zip"):       old,
		filepath.Join(dir, IndexName):         old,
	}
	for p, mt := range files {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	a.removeStaleTemps(exports)
	for p := range files {
		_, err := os.Stat(p)
		gone := errors.Is(err, os.ErrNotExist)
		if want := strings.HasSuffix(p, "1") || strings.HasSuffix(p, "2"); gone != want {
			t.Errorf("%s: gone %v, want %v", filepath.Base(p), gone, want)
		}
	}
}

// TestCheckFree: a write that would leave less than MinFree is refused
// with ErrNoSpace; one that leaves exactly MinFree goes; the free space
// is exported. The free space of a shared disk moves, so each check is
// retried until the space was the same before and after it.
func TestCheckFree(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, _ := testAggregator(t, Config{Dir: dir, MinFree: 1 << 20})
	free := func() int64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Bavail) * int64(st.Bsize)
	}
	for _, c := range []struct {
		extra int64 // need = free - MinFree + extra
		ok    bool
	}{{0, true}, {-1, true}, {1, false}} {
		stable := false
		for range 50 {
			before := free()
			err := a.checkFree(before - a.cfg.MinFree + c.extra)
			if free() != before {
				continue
			}
			stable = true
			if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrNoSpace)) {
				t.Errorf("need free-MinFree%+d: %v", c.extra, err)
			}
			var m dto.Metric
			if err := a.m.free.Write(&m); err != nil || m.GetGauge().GetValue() != float64(before) {
				got := m.GetGauge().GetValue()
				t.Errorf("vouch_export_free_bytes %v, want %d", got, before)
			}
			break
		}
		if !stable {
			t.Fatal("free space never stable")
		}
	}
	a.cfg.Dir = filepath.Join(dir, "missing")
	if err := a.checkFree(0); err == nil || errors.Is(err, ErrNoSpace) {
		t.Errorf("missing directory: %v", err)
	}
}

func TestNewBatchAndAbort(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, _ := testAggregator(t, Config{Dir: dir})
	if _, err := a.newBatch(batchHeader{}); err == nil {
		t.Error("no exports directory: no error")
	}
	if err := os.Mkdir(filepath.Join(dir, ExportsDir), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := a.newBatch(batchHeader{Region: "NL", BatchNum: 1, BatchSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(b.f.Name()), tmpPrefix) || filepath.Dir(b.f.Name()) != filepath.Join(dir, ExportsDir) {
		t.Errorf("temporary file %s", b.f.Name())
	}
	b.abort()
	if ents, _ := os.ReadDir(filepath.Join(dir, ExportsDir)); len(ents) != 0 {
		t.Errorf("after abort: %v", ents)
	}
}

// keyRows is a pgx.Rows of one row in PostgreSQL's binary format.
type keyRows struct {
	pgx.Rows
	fd []pgconn.FieldDescription
	v  [][]byte
}

func (r keyRows) FieldDescriptions() []pgconn.FieldDescription { return r.fd }
func (r keyRows) RawValues() [][]byte                          { return r.v }

func row(data []byte, start, period int32, risk int16, onset *int16, report int16) keyRows {
	be32 := func(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
	be16 := func(v int16) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }
	var o []byte
	if onset != nil {
		o = be16(*onset)
	}
	r := keyRows{v: [][]byte{data, be32(start), be32(period), be16(risk), o, be16(report)}}
	for _, n := range []string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "days_since_onset", "report_type"} {
		r.fd = append(r.fd, pgconn.FieldDescription{Name: n, Format: pgtype.BinaryFormatCode})
	}
	return r
}

func i16(v int16) *int16 { return &v }

func TestScanKey(t *testing.T) {
	t.Parallel()
	k, err := scanKey(row(data16, 2900000, 144, 8, i16(-14), ReportRevoked))
	want := key(7, 2900000, 144, 8, ReportRevoked)
	want.DaysSinceOnset, want.HasOnset = -14, true
	if err != nil || k != want {
		t.Errorf("scanKey = %+v, %v; want %+v", k, err, want)
	}
	// A negative risk stays negative (int16), and an onset outside -14..14
	// is left out, never clamped.
	for _, c := range []struct {
		onset *int16
		has   bool
	}{{nil, false}, {i16(14), true}, {i16(-14), true}, {i16(15), false}, {i16(-15), false}, {i16(0), true}} {
		k, err := scanKey(row(data16, 1, 1, -1, c.onset, 1))
		if err != nil || k.HasOnset != c.has || (c.has && k.DaysSinceOnset != int32(*c.onset)) || (!c.has && k.DaysSinceOnset != 0) || k.TransmissionRisk != -1 {
			t.Errorf("onset %v: %+v, %v", c.onset, k, err)
		}
	}
	text := row(data16, 1, 1, 1, nil, 1)
	text.fd = append([]pgconn.FieldDescription(nil), text.fd...)
	text.fd[5].Format = pgtype.TextFormatCode
	five := row(data16, 1, 1, 1, nil, 1)
	five.v = five.v[:5]
	nullRisk := row(data16, 1, 1, 1, nil, 1)
	nullRisk.v[3] = nil
	for name, r := range map[string]keyRows{
		"short key":    row(data16[1:], 1, 1, 1, nil, 1),
		"long key":     row(append([]byte{1}, data16...), 1, 1, 1, nil, 1),
		"text format":  text,
		"five columns": five,
		"null risk":    nullRisk,
		"wide start":   func() keyRows { r := row(data16, 1, 1, 1, nil, 1); r.v[1] = append(r.v[1], 0); return r }(),
		"wide period":  func() keyRows { r := row(data16, 1, 1, 1, nil, 1); r.v[2] = r.v[2][:2]; return r }(),
		"wide risk":    func() keyRows { r := row(data16, 1, 1, 1, nil, 1); r.v[3] = append(r.v[3], 0); return r }(),
		"wide onset":   func() keyRows { r := row(data16, 1, 1, 1, i16(1), 1); r.v[4] = append(r.v[4], 0); return r }(),
		"wide report":  func() keyRows { r := row(data16, 1, 1, 1, nil, 1); r.v[5] = append(r.v[5], 0); return r }(),
	} {
		if _, err := scanKey(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
