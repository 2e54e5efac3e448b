package export_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
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
	return a
}

// storeKeys inserts keys as the readers would.
func storeKeys(t testing.TB, db *database.DB, origin string, keys ...export.Key) {
	t.Helper()
	rows := make([][]any, len(keys))
	for i, k := range keys {
		var onset any
		if k.HasOnset {
			onset = int16(k.DaysSinceOnset)
		}
		rows[i] = []any{k.Data[:], k.RollingStart, k.RollingPeriod, int16(k.TransmissionRisk), onset, exposure.Coarse(time.Now()), origin}
	}
	if _, err := db.Pool().CopyFrom(context.Background(), pgx.Identifier{"exposure_keys"},
		[]string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "days_since_onset", "received_hour", "origin"},
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

func TestAggregateWindowAndHold(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	reg := prometheus.NewRegistry()
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, reg, s)
	ended := []export.Key{dayKey(t, 1), dayKey(t, 5), dayKey(t, 13), dayKey(t, 14)}
	today := dayKey(t, 0) // still valid: held
	short := dayKey(t, 0)
	short.RollingStart = exposure.IntervalNumber(time.Now()) - 3
	short.RollingPeriod = 2 // ended ten minutes ago: published
	old := dayKey(t, 15)    // ended 14 days ago: out of the window
	storeKeys(t, db, "", append(ended, today, short, old)...)
	res, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys != 5 || res.Held != 1 || len(res.Files) != 1 {
		t.Fatalf("Run = %+v, want 5 keys, 1 held, 1 file", res)
	}
	if got := gauge(t, reg, "vouch_export_keys_held"); got != 1 {
		t.Errorf("vouch_export_keys_held = %v, want 1", got)
	}
	_, files := published(t, cfg.Dir, pubOf(s))
	got := keySet(files)
	for _, k := range append(ended, short) {
		if g, ok := got[k.Data]; !ok || g != k {
			t.Errorf("key of %s: got %+v, want %+v", k.Start(), g, k)
		}
	}
	for _, k := range []export.Key{today, old} {
		if _, ok := got[k.Data]; ok {
			t.Errorf("key of %s (ends %s) published", k.Start(), k.End())
		}
	}
	f := files[0]
	if f.Region != "NL" || f.BatchNum != 1 || f.BatchSize != 1 {
		t.Errorf("header %+v", f)
	}
	if !f.Start.Equal(dayKey(t, 14).Start()) || !f.End.Equal(short.End()) {
		t.Errorf("file spans %s..%s, want %s..%s", f.Start, f.End, dayKey(t, 14).Start(), short.End())
	}
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
	// Another aggregator, another directory, the same data: the same name.
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

func TestAggregateBatches(t *testing.T) {
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
	res, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	paths, files := published(t, cfg.Dir, pubOf(s))
	if len(paths) != 3 || strings.Join(paths, ",") != strings.Join(res.Files, ",") {
		t.Fatalf("index %v, run %v", paths, res.Files)
	}
	var all []export.Key
	for i, f := range files {
		if f.BatchNum != i+1 || f.BatchSize != 3 {
			t.Errorf("file %d is batch %d of %d", i, f.BatchNum, f.BatchSize)
		}
		if want := []int{3, 3, 1}[i]; len(f.Keys) != want {
			t.Errorf("file %d has %d keys, want %d", i, len(f.Keys), want)
		}
		all = append(all, f.Keys...)
	}
	for i := 1; i < len(all); i++ { // sorted across the batches
		if bytes.Compare(all[i-1].Data[:], all[i].Data[:]) >= 0 {
			t.Fatal("keys not sorted across batches")
		}
	}
	if len(keySet(files)) != 7 {
		t.Errorf("%d keys published, want 7", len(keySet(files)))
	}
}

func TestAggregatePaddingKept(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	cfg.MinKeys = 50
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	storeKeys(t, db, "", dayKey(t, 1), dayKey(t, 2), dayKey(t, 3))
	first, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if first.Keys != 50 || first.Padded != 47 {
		t.Fatalf("Run = %+v, want 50 keys of which 47 padding", first)
	}
	var padding int
	if err := db.Pool().QueryRow(context.Background(), `select count(*) from exposure_keys where origin = 'padding'`).Scan(&padding); err != nil {
		t.Fatal(err)
	}
	if padding != 47 {
		t.Errorf("%d padding keys stored, want 47", padding)
	}
	second, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if second.Padded != 0 || second.Files[0] != first.Files[0] {
		t.Errorf("a rebuild padded %d more and gave %s, want the same file %s", second.Padded, second.Files[0], first.Files[0])
	}
	_, files := published(t, cfg.Dir, pubOf(s))
	now := time.Now()
	for _, k := range files[0].Keys {
		if k.End().After(now) || k.End().Before(now.AddDate(0, 0, -14)) || k.RollingPeriod != 144 {
			t.Errorf("padding key outside the window or unlike a real one: %s..%s", k.Start(), k.End())
		}
	}
}

func fileCount(t testing.TB, dir string) int {
	ents, err := os.ReadDir(filepath.Join(dir, export.ExportsDir))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestAggregateRetiresAfterGrace(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	cfg := testConfig(t)
	cfg.Grace = time.Hour
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	ctx := context.Background()
	storeKeys(t, db, "", dayKey(t, 1))
	first, err := a.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	storeKeys(t, db, "", dayKey(t, 2))
	second, err := a.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first.Files[0] == second.Files[0] {
		t.Fatal("new data, same file")
	}
	// The old file left the index but stays for the grace period.
	if _, err := os.Stat(filepath.Join(cfg.Dir, first.Files[0])); err != nil {
		t.Fatalf("file deleted within its grace period: %v", err)
	}
	var left *time.Time
	if err := db.Pool().QueryRow(ctx, `select left_index_at from export_files where path = $1`, first.Files[0]).Scan(&left); err != nil || left == nil {
		t.Fatalf("left_index_at of the old file: %v, %v", left, err)
	}
	// The grace passes (moved back in the table): the old file goes, the
	// indexed one stays even though it is older than the grace too.
	if _, err := db.Pool().Exec(ctx, `update export_files set written_at = written_at - interval '2 hours',
		left_index_at = left_index_at - interval '2 hours' where not in_index`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool().Exec(ctx, `update export_files set written_at = written_at - interval '2 hours' where in_index`); err != nil {
		t.Fatal(err)
	}
	third, err := a.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, first.Files[0])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old file still there after its grace: %v", err)
	}
	if third.Files[0] != second.Files[0] {
		t.Fatal("unchanged data gave a new file")
	}
	paths, _ := published(t, cfg.Dir, pubOf(s))
	for _, p := range paths {
		if _, err := os.Stat(filepath.Join(cfg.Dir, p)); err != nil {
			t.Errorf("indexed file %s missing: %v", p, err)
		}
	}
	if n := fileCount(t, cfg.Dir); n != 1 {
		t.Errorf("%d files left, want 1", n)
	}
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
	if _, err := db.Pool().Exec(context.Background(), `insert into export_lease values ('export', 'dead', now() - interval '1 second')`); err != nil {
		t.Fatal(err)
	}
	if _, err := aggs[1].Run(context.Background()); err != nil {
		t.Errorf("an expired lease was not taken over: %v", err)
	}
	if _, err := db.Pool().Exec(context.Background(), `insert into export_lease values ('export', 'alive', now() + interval '1 minute')
		on conflict (name) do update set holder = 'alive', expires_at = now() + interval '1 minute'`); err != nil {
		t.Fatal(err)
	}
	if _, err := aggs[1].Run(context.Background()); !errors.Is(err, export.ErrLeaseHeld) {
		t.Errorf("a live lease of another holder: %v, want ErrLeaseHeld", err)
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
	if ok.Region != "NL" || ok.MaxAgeDays != exposure.DefaultMaxAgeDays {
		t.Errorf("defaults: region %q, days %d", ok.Region, ok.MaxAgeDays)
	}
	if v, id := ok.KeyInfo(1); v != "v1" || id != "NL" {
		t.Errorf("KeyInfo(1) = %s, %s", v, id)
	}
	for name, mod := range map[string]func(*export.Config){
		"no dir":           func(c *export.Config) { c.Dir = "" },
		"days below floor": func(c *export.Config) { c.MaxAgeDays = exposure.FloorMaxAgeDays - 1 },
		"too many keys":    func(c *export.Config) { c.MaxKeys = 750001 },
		"no key":           func(c *export.Config) { c.KeyURIs = nil },
		"versions":         func(c *export.Config) { c.KeyVersions = []string{"a", "b", "c"} },
		"no period":        func(c *export.Config) { c.Period = 0 },
	} {
		c := base()
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
