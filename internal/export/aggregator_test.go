//go:build !mutation

package export_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func testConfig(t testing.TB) export.Config {
	cfg := export.Config{Dir: t.TempDir(), Period: time.Second, MaxAgeDays: 14, MaxKeys: 500000,
		Region: "NL", KeyURIs: []string{"x"}, KeyVersions: []string{"v1"}, KeyIDs: []string{"204"},
		Grace: time.Hour, Lease: time.Minute}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newAggregator(t testing.TB, cfg export.Config, db *database.DB, reg prometheus.Registerer, signers ...export.Signer) *export.Aggregator {
	t.Helper()
	if len(signers) == 0 {
		signers = []export.Signer{softSigner(t, 7, "v1")}
	}
	a, err := export.New(cfg, db, signers, reg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	// Noon: every key of an earlier day is past its embargo.
	export.SetNow(a, func() time.Time { return noon })
	return a
}

// noon is today at 12:00 UTC, the aggregators' clock unless a test moves it.
var noon = time.Now().UTC().Truncate(24 * time.Hour).Add(12 * time.Hour)

// clock is a settable time for an aggregator.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// storeKeys inserts keys as the readers would.
func storeKeys(t testing.TB, db *database.DB, origin string, keys ...export.Key) {
	t.Helper()
	rows := make([][]any, len(keys))
	for i, k := range keys {
		var onset any
		if k.HasOnset {
			onset = int16(k.DaysSinceOnset)
		}
		rows[i] = []any{k.Data[:], k.RollingStart, k.RollingPeriod, int16(k.TransmissionRisk), onset, int16(k.ReportType), exposure.Coarse(time.Now()), origin}
	}
	if _, err := db.Pool().CopyFrom(context.Background(), pgx.Identifier{"exposure_keys"},
		[]string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "days_since_onset", "report_type", "received_hour", "origin"},
		pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
}

// dayKey is a random key valid for the whole UTC day daysAgo days before now.
func dayKey(t testing.TB, daysAgo int) export.Key {
	k := export.Key{ReportType: export.ReportConfirmedTest}
	rand.Read(k.Data[:])
	k.RollingStart = exposure.IntervalNumber(time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -daysAgo))
	k.RollingPeriod = 144
	k.TransmissionRisk = 4
	k.DaysSinceOnset, k.HasOnset = int32(2-daysAgo), true
	return k
}

// published reads the index and every file it names, verified.
func published(t testing.TB, dir string, trusted ...*ecdsa.PublicKey) ([]string, []*export.File) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, export.IndexName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	paths, err := export.ReadIndex(f)
	if err != nil {
		t.Fatal(err)
	}
	var files []*export.File
	for _, p := range paths {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		ef, err := export.Open(b, trusted)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		files = append(files, ef)
	}
	return paths, files
}

func keySet(files []*export.File) map[[16]byte]export.Key {
	m := map[[16]byte]export.Key{}
	for _, f := range files {
		for _, k := range f.Keys {
			m[k.Data] = k
		}
	}
	return m
}

func gauge(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestAggregateDeterministic(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	a := newAggregator(t, cfg, db, nil, hsmKeys(t)[0])
	var keys []export.Key
	for i := range 40 {
		keys = append(keys, dayKey(t, 1+i%13))
	}
	storeKeys(t, db, "", keys...)
	first, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(filepath.Join(cfg.Dir, first.Files[0]))
	// Another aggregator, another directory, the same batch: the same name.
	cfg2 := cfg
	cfg2.Dir = t.TempDir()
	second, err := newAggregator(t, cfg2, db, nil, hsmKeys(t)[0]).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if first.Files[0] != second.Files[0] {
		t.Fatalf("the same data gave %s and %s", first.Files[0], second.Files[0])
	}
	// Rebuilt in place: the very same bytes stay.
	again, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := os.ReadFile(filepath.Join(cfg.Dir, again.Files[0]))
	if again.Files[0] != first.Files[0] || !bytes.Equal(b1, b2) {
		t.Fatal("a rebuild of the same data changed the file")
	}
	// A new key under the same version and id: a new file, not the old
	// key's.
	other := hsmKeys(t)[1]
	other.Version = hsmKeys(t)[0].Version
	cfg3 := cfg
	cfg3.Dir = t.TempDir()
	if _, err := db.Pool().Exec(context.Background(), `update export_batches set path = null`); err != nil {
		t.Fatal(err)
	}
	third, err := newAggregator(t, cfg3, db, nil, other).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if third.Files[0] == first.Files[0] {
		t.Error("another signing key kept the same file name")
	}
	ents, _ := os.ReadDir(filepath.Join(cfg.Dir, export.ExportsDir))
	if len(ents) != 1 {
		t.Errorf("%d entries in exports/, want 1 (no temporary files left)", len(ents))
	}
}

func fileCount(t testing.TB, dir string) int {
	ents, err := os.ReadDir(filepath.Join(dir, export.ExportsDir))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestAggregateLease runs two aggregators on one store at once: while one
// publishes, the other is refused the lease; they never publish together.
func TestAggregateLease(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	storeKeys(t, db, "", dayKey(t, 1), dayKey(t, 2))
	var inside, overlaps, published, refused atomic.Int32
	hook := func() {
		if inside.Add(1) > 1 {
			overlaps.Add(1)
		}
		time.Sleep(30 * time.Millisecond)
		inside.Add(-1)
	}
	aggs := []*export.Aggregator{newAggregator(t, cfg, db, nil), newAggregator(t, cfg, db, nil)}
	for _, a := range aggs {
		export.SetBeforeIndex(a, hook)
	}
	var wg sync.WaitGroup
	for _, a := range aggs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				_, err := a.Run(context.Background())
				switch {
				case errors.Is(err, export.ErrLeaseHeld):
					refused.Add(1)
				case err != nil:
					t.Error(err)
				default:
					published.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if overlaps.Load() != 0 {
		t.Errorf("%d times two aggregators published at once", overlaps.Load())
	}
	if published.Load() == 0 || refused.Load() == 0 {
		t.Errorf("published %d, refused %d: want both to happen", published.Load(), refused.Load())
	}

	// A lease held (by an aggregator that died) blocks until it expires.
	block := make(chan struct{})
	held := make(chan struct{})
	export.SetBeforeIndex(aggs[0], func() { close(held); <-block })
	done := make(chan error, 1)
	go func() { _, err := aggs[0].Run(context.Background()); done <- err }()
	<-held
	if _, err := aggs[1].Run(context.Background()); !errors.Is(err, export.ErrLeaseHeld) {
		t.Errorf("second aggregator while the first publishes: %v, want ErrLeaseHeld", err)
	}
	close(block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := aggs[1].Run(context.Background()); err != nil {
		t.Errorf("after the first released the lease: %v", err)
	}
	if _, err := db.Pool().Exec(context.Background(), `update leases set holder = 'dead', expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if _, err := aggs[1].Run(context.Background()); err != nil {
		t.Errorf("an expired lease was not taken over: %v", err)
	}
	if _, err := db.Pool().Exec(context.Background(), `update leases set holder = 'alive', expires_at = now() + interval '1 minute'`); err != nil {
		t.Fatal(err)
	}
	if _, err := aggs[1].Run(context.Background()); !errors.Is(err, export.ErrLeaseHeld) {
		t.Errorf("a live lease of another holder: %v, want ErrLeaseHeld", err)
	}
}

// endedAgo is a random key whose rolling period ended d before at.
func endedAgo(at time.Time, d time.Duration) export.Key {
	k := export.Key{ReportType: export.ReportConfirmedTest}
	rand.Read(k.Data[:])
	k.RollingPeriod = 144
	k.RollingStart = exposure.IntervalNumber(at.Add(-d)) - k.RollingPeriod
	k.TransmissionRisk = 4
	return k
}

// gaenRules are the checks an independent GAEN verifier (the platforms'
// and the Google key server's own tools) applies to a file's header and
// keys, read from the file alone.
func gaenRules(t testing.TB, f *export.File, now time.Time, region string) {
	t.Helper()
	switch {
	case f.Start.Unix() <= 0 || f.End.Unix() <= 0:
		t.Errorf("window %d..%d: a zero timestamp", f.Start.Unix(), f.End.Unix())
	case !f.End.After(f.Start):
		t.Errorf("window %s..%s: ends before it starts", f.Start, f.End)
	case f.End.After(now):
		t.Errorf("window ends %s, after now %s", f.End, now)
	}
	if f.BatchNum != 1 || f.BatchSize != 1 {
		t.Errorf("batch %d of %d: iOS reads 1 of 1 only", f.BatchNum, f.BatchSize)
	}
	if f.Region != region {
		t.Errorf("region %q", f.Region)
	}
	for _, k := range append(append([]export.Key{}, f.Keys...), f.Revised...) {
		if k.End().Add(export.MinEmbargo).After(f.End) {
			t.Errorf("key ending %s published in a file ending %s: within the embargo", k.End(), f.End)
		}
		if k.HasOnset && (k.DaysSinceOnset < -14 || k.DaysSinceOnset > 14) {
			t.Errorf("days since onset %d", k.DaysSinceOnset)
		}
	}
}

// TestAggregateEmbargo: a key is published no earlier than two hours after
// its period ended, in the first file whose window of arrival ends after
// that; the files' windows follow each other and every file is 1 of 1.
func TestAggregateEmbargo(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	cfg.Period = time.Hour
	reg := prometheus.NewRegistry()
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, reg, s)
	c := &clock{t: noon}
	export.SetNow(a, c.now)
	ready := endedAgo(noon, 2*time.Hour)
	recent := endedAgo(noon, 20*time.Minute) // ended, but within the embargo
	valid := endedAgo(noon, -time.Hour)      // still valid
	old := dayKey(t, 16)
	storeKeys(t, db, "", ready, recent, valid, old)
	first, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if first.Keys != 1 || first.Held != 2 || len(first.Files) != 1 {
		t.Fatalf("Run = %+v, want 1 key, 2 held, 1 file", first)
	}
	if got := gauge(t, reg, "vouch_export_keys_held"); got != 2 {
		t.Errorf("vouch_export_keys_held = %v, want 2", got)
	}
	_, files := published(t, cfg.Dir, pubOf(s))
	if got := keySet(files); len(got) != 1 || got[ready.Data] != ready {
		t.Fatalf("published %v, want only the key that ended 2 hours ago", got)
	}
	gaenRules(t, files[0], noon, "NL")
	if !files[0].End.Equal(noon) || !files[0].Start.Equal(noon.AddDate(0, 0, -cfg.MaxAgeDays)) {
		t.Errorf("first window %s..%s, want the %d days before %s", files[0].Start, files[0].End, cfg.MaxAgeDays, noon)
	}

	c.add(99 * time.Minute) // recent ended 1h59m ago: still held
	second, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if second.Keys != 1 || len(second.Files) != 1 || second.Files[0] != first.Files[0] {
		t.Fatalf("within the embargo: %+v, want the same single file", second)
	}
	c.add(time.Minute)
	third, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if third.Keys != 2 || len(third.Files) != 2 || third.Files[0] != first.Files[0] {
		t.Fatalf("after the embargo: %+v, want a second file", third)
	}
	_, files = published(t, cfg.Dir, pubOf(s))
	if len(files[1].Keys) != 1 || files[1].Keys[0] != recent {
		t.Fatalf("second file holds %v, want the key that just left its embargo", files[1].Keys)
	}
	if !files[1].Start.Equal(files[0].End) || !files[1].End.Equal(c.now()) {
		t.Errorf("second window %s..%s, want %s..%s", files[1].Start, files[1].End, files[0].End, c.now())
	}
	for _, f := range files {
		gaenRules(t, f, c.now(), "NL")
	}
}

// TestAggregateHeadersUnique: whatever arrives when, two files in the
// index (and any two files ever written) never share their window, and a
// run with nothing new writes nothing new.
func TestAggregateHeadersUnique(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	c := &clock{t: noon}
	export.SetNow(a, c.now)
	windows := map[[2]int64]string{}
	// The first keys span the days the later ones fall within: a header
	// taken from the keys' own days would stay the same as files change.
	arrivals := map[int][]int{0: {1, 13}, 2: {5, 6}, 4: {8, 9}}
	for i := range 6 {
		if days, ok := arrivals[i]; ok {
			storeKeys(t, db, "", dayKey(t, days[0]), dayKey(t, days[1]))
		}
		res, err := a.Run(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		_, files := published(t, cfg.Dir, pubOf(s))
		for j, f := range files {
			w := [2]int64{f.Start.Unix(), f.End.Unix()}
			if p, ok := windows[w]; ok && p != res.Files[j] {
				t.Fatalf("run %d: %s and %s share the window %v", i, p, res.Files[j], w)
			}
			windows[w] = res.Files[j]
			gaenRules(t, f, c.now(), "NL")
		}
		c.add(10 * time.Minute)
	}
	if len(windows) != 3 {
		t.Errorf("%d files for three arrivals, want 3", len(windows))
	}
}

// TestAggregateEmptyExport: with no key at all the export is one empty file
// whose window is real, which an independent verifier accepts.
func TestAggregateEmptyExport(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	res, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys != 0 || len(res.Files) != 1 {
		t.Fatalf("Run = %+v, want one empty file", res)
	}
	_, files := published(t, cfg.Dir, pubOf(s))
	gaenRules(t, files[0], noon, "NL")
	again, err := a.Run(t.Context())
	if err != nil || len(again.Files) != 1 || again.Files[0] != res.Files[0] {
		t.Errorf("a second empty run: %+v, %v, want the same file", again, err)
	}
}

// TestAggregateSplitsLargeWindow: more keys than a file holds make several
// files, each 1 of 1 (iOS reads no other), with adjacent windows that
// differ, so no two share a header.
func TestAggregateSplitsLargeWindow(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	cfg.MaxKeys = 3
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	var keys []export.Key
	for i := range 7 {
		keys = append(keys, dayKey(t, 1+i))
	}
	storeKeys(t, db, "", keys...)
	res, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	paths, files := published(t, cfg.Dir, pubOf(s))
	if len(paths) != 3 || strings.Join(paths, ",") != strings.Join(res.Files, ",") {
		t.Fatalf("index %v, run %v", paths, res.Files)
	}
	for i, f := range files {
		gaenRules(t, f, noon, "NL")
		if want := []int{3, 3, 1}[i]; len(f.Keys) != want {
			t.Errorf("file %d has %d keys, want %d", i, len(f.Keys), want)
		}
		if i > 0 && !f.Start.Equal(files[i-1].End) {
			t.Errorf("file %d starts %s, the one before ends %s", i, f.Start, files[i-1].End)
		}
	}
	if !files[2].End.Equal(noon) {
		t.Errorf("the last file ends %s, want %s", files[2].End, noon)
	}
	if len(keySet(files)) != 7 {
		t.Errorf("%d keys published, want 7", len(keySet(files)))
	}
}

// TestAggregateCarriesReportTypeAndOnset: a site's report types are
// published as its file gave them, and an onset GAEN cannot read is left
// out, never clamped.
func TestAggregateCarriesReportTypeAndOnset(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	var keys []export.Key
	for i, rt := range []int32{export.ReportConfirmedTest, export.ReportClinicalDiagnosis, export.ReportSelfReport, export.ReportRecursive, export.ReportRevoked} {
		k := dayKey(t, 1+i)
		k.ReportType = rt
		keys = append(keys, k)
	}
	storeKeys(t, db, "partner", keys...)
	far, edge := dayKey(t, 6), dayKey(t, 7)
	far.DaysSinceOnset, edge.DaysSinceOnset = 15, -14
	storeKeys(t, db, "", far, edge)
	if _, err := a.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, files := published(t, cfg.Dir, pubOf(s))
	got := keySet(files)
	for _, k := range append(keys, edge) {
		if got[k.Data] != k {
			t.Errorf("published %+v, want %+v", got[k.Data], k)
		}
	}
	if g := got[far.Data]; g.HasOnset || g.Key != far.Key {
		t.Errorf("a key 15 days after onset published as %+v, want no onset", g)
	}
}

// TestAggregatePublishesRevisions: a key whose report type was revised
// after it was published is published again in a later file's revised_keys,
// once.
func TestAggregatePublishesRevisions(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	c := &clock{t: noon}
	export.SetNow(a, c.now)
	k := dayKey(t, 3)
	k.ReportType = export.ReportClinicalDiagnosis
	storeKeys(t, db, "partner", k, dayKey(t, 4))
	if _, err := a.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool().Exec(t.Context(), `update exposure_keys set revised_report_type = 5 where key_data = $1`, k.Data[:]); err != nil {
		t.Fatal(err)
	}
	c.add(time.Minute)
	res, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, files := published(t, cfg.Dir, pubOf(s))
	if len(files) != 2 || len(files[1].Keys) != 0 || len(files[1].Revised) != 1 {
		t.Fatalf("after a revision: %d files, the last %+v", len(files), files[len(files)-1])
	}
	want := k
	want.ReportType = export.ReportRevoked
	if files[1].Revised[0] != want {
		t.Errorf("revised key %+v, want %+v", files[1].Revised[0], want)
	}
	gaenRules(t, files[1], c.now(), "NL")
	c.add(time.Minute)
	again, err := a.Run(t.Context())
	if err != nil || strings.Join(again.Files, ",") != strings.Join(res.Files, ",") {
		t.Errorf("the revision was published again: %+v, %v", again, err)
	}
}

// TestAggregatePaddingIndistinguishable compares, field by field, the
// padding of a file with its real keys: a χ² test of the padding's
// histogram against the real keys' distribution must not tell them apart.
func TestAggregatePaddingIndistinguishable(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	cfg.MinKeys = 1100
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	var real []export.Key
	for i := range 100 {
		k := dayKey(t, 1+i%13)
		k.TransmissionRisk = int32(1 + i%8)
		k.DaysSinceOnset, k.HasOnset = int32(3-i%13), i%5 != 0
		k.ReportType = []int32{1, 1, 1, 2, 3}[i%5]
		if i%7 == 0 { // a reset key: a shorter period
			k.RollingPeriod = 72
		}
		real = append(real, k)
	}
	storeKeys(t, db, "", real...)
	first, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if first.Keys != 1100 || first.Padded != 1000 {
		t.Fatalf("Run = %+v, want 1100 keys of which 1000 padding", first)
	}
	_, files := published(t, cfg.Dir, pubOf(s))
	isReal := map[[16]byte]bool{}
	for _, k := range real {
		isReal[k.Data] = true
	}
	var pad []export.Key
	for _, k := range files[0].Keys {
		if !isReal[k.Data] {
			pad = append(pad, k)
		}
	}
	if len(pad) != 1000 {
		t.Fatalf("%d padding keys in the file, want 1000", len(pad))
	}
	fields := map[string]func(export.Key) int64{
		"rolling start":  func(k export.Key) int64 { return int64(k.RollingStart) },
		"rolling period": func(k export.Key) int64 { return int64(k.RollingPeriod) },
		"report type":    func(k export.Key) int64 { return int64(k.ReportType) },
		"onset": func(k export.Key) int64 {
			if !k.HasOnset {
				return -1000
			}
			return int64(k.DaysSinceOnset)
		},
		"transmission risk": func(k export.Key) int64 { return int64(k.TransmissionRisk) },
	}
	for name, f := range fields {
		if chi2, crit := chiSquare(real, pad, f); chi2 > crit {
			t.Errorf("%s: χ² = %.1f > %.1f (p = 0.001): padding tells itself apart", name, chi2, crit)
		}
	}
	// Kept: a second run pads nothing more and gives the same file.
	second, err := a.Run(t.Context())
	if err != nil || second.Padded != 0 || second.Files[0] != first.Files[0] {
		t.Errorf("a rebuild: %+v, %v, want no new padding and the same file", second, err)
	}
}

// chiSquare compares the sample's histogram of f with the counts expected
// from the reference's distribution; bins expecting fewer than 5 are
// pooled. It returns the statistic and its critical value at p = 0.001
// (Wilson–Hilferty). A value the reference never has makes the statistic
// infinite.
func chiSquare(ref, sample []export.Key, f func(export.Key) int64) (chi2, crit float64) {
	p := map[int64]float64{}
	for _, k := range ref {
		p[f(k)] += 1 / float64(len(ref))
	}
	obs := map[int64]float64{}
	for _, k := range sample {
		v := f(k)
		if p[v] == 0 {
			return math.Inf(1), 0
		}
		obs[v]++
	}
	var poolExp, poolObs float64
	bins := 0
	for v, pv := range p {
		e := pv * float64(len(sample))
		if e < 5 {
			poolExp += e
			poolObs += obs[v]
			continue
		}
		chi2 += (obs[v] - e) * (obs[v] - e) / e
		bins++
	}
	if poolExp > 0 {
		chi2 += (poolObs - poolExp) * (poolObs - poolExp) / poolExp
		bins++
	}
	df := float64(max(1, bins-1))
	const z = 3.09 // the normal quantile at 0.999
	crit = df * math.Pow(1-2/(9*df)+z*math.Sqrt(2/(9*df)), 3)
	return chi2, crit
}

// TestAggregateRetiresAfterGrace: a file leaves the index when its window
// is older than the days published, and is deleted a grace period later,
// never before.
func TestAggregateRetiresAfterGrace(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	cfg.Grace = time.Hour
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	c := &clock{t: noon}
	export.SetNow(a, c.now)
	storeKeys(t, db, "", dayKey(t, 1))
	first, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c.add(14*24*time.Hour + time.Minute)
	second, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Files) != 1 || second.Files[0] == first.Files[0] {
		t.Fatalf("after 14 days: %v, want only a new (empty) file", second.Files)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, first.Files[0])); err != nil {
		t.Fatalf("file deleted within its grace period: %v", err)
	}
	c.add(59 * time.Minute)
	if _, err := a.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, first.Files[0])); err != nil {
		t.Fatalf("file deleted within its grace period: %v", err)
	}
	c.add(2 * time.Minute)
	third, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, first.Files[0])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old file still there after its grace: %v", err)
	}
	if len(third.Files) != 1 || third.Files[0] != second.Files[0] {
		t.Fatalf("unchanged data: %v, want %v", third.Files, second.Files)
	}
	if n := fileCount(t, cfg.Dir); n != 1 {
		t.Errorf("%d files left, want 1", n)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	base := func() export.Config {
		return export.Config{Dir: "/x", Period: time.Hour, MaxKeys: 500000, Jurisdiction: "NL",
			KeyURIs: []string{"a", "b"}, KeyVersions: []string{"v1"}, Lease: time.Minute}
	}
	ok := base()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if ok.Region != "NL" || ok.MaxAgeDays != exposure.DefaultMaxAgeDays || ok.Embargo != 2*time.Hour {
		t.Errorf("defaults: region %q, days %d, embargo %s", ok.Region, ok.MaxAgeDays, ok.Embargo)
	}
	if v, id := ok.KeyInfo(1); v != "v1" || id != "204" {
		t.Errorf("KeyInfo(1) = %s, %s; want v1 and the Netherlands' MCC", v, id)
	}
	for _, id := range []string{"204", "204_v2", "310.a", "262"} {
		c := base()
		c.KeyIDs = []string{id}
		if err := c.Validate(); err != nil {
			t.Errorf("key id %q refused: %v", id, err)
		}
	}
	for name, mod := range map[string]func(*export.Config){
		"no dir":              func(c *export.Config) { c.Dir = "" },
		"days below floor":    func(c *export.Config) { c.MaxAgeDays = exposure.FloorMaxAgeDays - 1 },
		"too many keys":       func(c *export.Config) { c.MaxKeys = 750001 },
		"no key":              func(c *export.Config) { c.KeyURIs = nil },
		"versions":            func(c *export.Config) { c.KeyVersions = []string{"a", "b", "c"} },
		"version with space":  func(c *export.Config) { c.KeyVersions = []string{"v 1"} },
		"no period":           func(c *export.Config) { c.Period = 0 },
		"embargo 10 minutes":  func(c *export.Config) { c.Embargo = 10 * time.Minute },
		"padding past a file": func(c *export.Config) { c.MinKeys = c.MaxKeys + 1 },
		"key id NL":           func(c *export.Config) { c.KeyIDs = []string{"NL"} },
		"key id with slash":   func(c *export.Config) { c.KeyIDs = []string{"204/x"} },
		"key id with space":   func(c *export.Config) { c.KeyIDs = []string{"204 "} },
		"key id empty":        func(c *export.Config) { c.KeyIDs = []string{""} },
		"key id not an MCC":   func(c *export.Config) { c.KeyIDs = []string{"v1"} },
		"key id too long":     func(c *export.Config) { c.KeyIDs = []string{"204" + strings.Repeat("a", 30)} },
		"no MCC known":        func(c *export.Config) { c.Jurisdiction = "XX" },
	} {
		c := base()
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
