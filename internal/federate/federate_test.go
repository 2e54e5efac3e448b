package federate_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/federate"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// site is one Vouch site: a store, an aggregator writing into a directory
// and a file server publishing it.
type site struct {
	name string
	db   *database.DB
	dir  string
	key  *ecdsa.PrivateKey
	agg  *export.Aggregator
	url  string
}

func newSite(t *testing.T, name string) *site {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := &site{name: name, db: testenv.Database(t), dir: t.TempDir(), key: key}
	cfg := export.Config{Dir: s.dir, Period: time.Second, MaxAgeDays: 14, MaxKeys: 3, Region: "NL",
		KeyURIs: []string{"x"}, KeyVersions: []string{"v1"}, Grace: time.Hour, Lease: time.Minute}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s.agg, err = export.New(cfg, s.db, []export.Signer{{Signer: key, Version: "v1", ID: name}}, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(s.dir)))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *site) upload(t *testing.T, n int) {
	t.Helper()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	for i := range n {
		var data [16]byte
		rand.Read(data[:])
		if _, err := s.db.Pool().Exec(context.Background(), `insert into exposure_keys
			(key_data, rolling_start, rolling_period, transmission_risk, days_since_onset, received_hour)
			values ($1, $2, 144, 5, $3, $4)`, data[:], exposure.IntervalNumber(today.AddDate(0, 0, -2-i%12)), int16(-i%3),
			exposure.Coarse(time.Now())); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *site) publish(t *testing.T) {
	t.Helper()
	if _, err := s.agg.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (s *site) as(other *site) federate.Site {
	return federate.Site{Name: other.name, BaseURL: other.url, Keys: []*ecdsa.PublicKey{&other.key.PublicKey}}
}

type row struct {
	Data                []byte
	Start, Period, Risk int32
	Onset               *int16
}

func (s *site) keys(t *testing.T) []row {
	t.Helper()
	rows, err := s.db.Pool().Query(context.Background(), `select key_data, rolling_start, rolling_period,
		transmission_risk, days_since_onset from exposure_keys order by key_data`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []row
	for rows.Next() {
		var r row
		var risk int16
		if err := rows.Scan(&r.Data, &r.Start, &r.Period, &risk, &r.Onset); err != nil {
			t.Fatal(err)
		}
		r.Risk = int32(risk)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *site) count(t *testing.T, where string, args ...any) int {
	t.Helper()
	var n int
	if err := s.db.Pool().QueryRow(context.Background(), `select count(*) from exposure_keys where `+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSitesConverge: two sites import each other's exports and end with
// the same keys; a second pull fetches nothing again.
func TestSitesConverge(t *testing.T) {
	t.Parallel()
	a, b := newSite(t, "site-a"), newSite(t, "site-b")
	a.upload(t, 7)
	b.upload(t, 5)
	a.publish(t)
	b.publish(t)
	ctx := context.Background()
	pa, pb := newPuller(t, a, federate.Config{}), newPuller(t, b, federate.Config{})

	res, err := pa.Pull(ctx, a.as(b))
	if err != nil {
		t.Fatal(err)
	}
	// How many files an aggregator splits its keys into is export's
	// business: every file listed is imported.
	if n := len(index(t, b.dir)); res.Listed != n || res.Imported != n || res.Keys != 5 {
		t.Errorf("a pulls b: %+v, want %d files, 5 keys", res, n)
	}
	if n := a.count(t, "origin = $1", "site-b"); n != 5 {
		t.Errorf("a stored %d keys under origin site-b, want 5", n)
	}
	// The aggregator's windows end on whole seconds (Period): the next run
	// makes a file only once a new second has begun.
	time.Sleep(1100 * time.Millisecond)
	a.publish(t) // a now exports 12 keys, b's among them
	res, err = pb.Pull(ctx, b.as(a))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(index(t, a.dir)); res.Listed != n || res.Imported != n || res.Keys != 7 {
		t.Errorf("b pulls a: %+v, want %d files, 7 new keys", res, n)
	}
	b.publish(t)
	if res, err = pa.Pull(ctx, a.as(b)); err != nil || res.Keys != 0 {
		t.Errorf("a pulls b again: %+v, %v; want nothing new", res, err)
	}
	if d := cmp.Diff(a.keys(t), b.keys(t)); d != "" {
		t.Errorf("sites did not converge (-a +b):\n%s", d)
	}
	if n := len(a.keys(t)); n != 12 {
		t.Errorf("%d keys, want 12", n)
	}
	// Nothing is fetched twice: the server sees only the index.
	var fetched []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched = append(fetched, r.URL.Path)
		http.FileServer(http.Dir(b.dir)).ServeHTTP(w, r)
	}))
	defer srv.Close()
	from := a.as(b)
	from.BaseURL = srv.URL
	res, err = pa.Pull(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	if res.Imported != 0 {
		t.Errorf("pulled again: %+v", res)
	}
	if d := cmp.Diff([]string{"/index.txt"}, fetched); d != "" {
		t.Errorf("fetched on a second pull (-want +got):\n%s", d)
	}
}

// TestForgedRefused: a file not signed by the site's key, or changed after
// signing, is refused and stores nothing, and is not recorded as imported.
func TestForgedRefused(t *testing.T) {
	t.Parallel()
	a, b := newSite(t, "site-a"), newSite(t, "site-b")
	b.upload(t, 2)
	b.publish(t)
	ctx := context.Background()
	p := newPuller(t, a, federate.Config{})
	// Trusting another key: b's genuine file is a forgery to a.
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	from := a.as(b)
	from.Keys = []*ecdsa.PublicKey{&stranger.PublicKey}
	res, err := p.Pull(ctx, from)
	if err == nil || res.Refused != 1 || res.Imported != 0 {
		t.Fatalf("pull under a stranger's key: %+v, %v; want refused", res, err)
	}
	// A changed byte in b's file, under b's key.
	paths := index(t, b.dir)
	file := filepath.Join(b.dir, paths[0])
	zipData, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(zipData)
	forged[len(forged)/3] ^= 0x40
	if err := os.WriteFile(file, forged, 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err = p.Pull(ctx, a.as(b)); err == nil || res.Refused != 1 {
		t.Fatalf("pull of a changed file: %+v, %v; want refused", res, err)
	}
	if n := a.count(t, "true"); n != 0 {
		t.Errorf("%d keys stored from forged files", n)
	}
	var imports int
	a.db.Pool().QueryRow(ctx, `select count(*) from federate_imports`).Scan(&imports)
	if imports != 0 {
		t.Errorf("%d forged files recorded as imported", imports)
	}
	// Once the genuine file is back, it imports: the refusal was not
	// remembered as done.
	if err := os.WriteFile(file, zipData, 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err = p.Pull(ctx, a.as(b)); err != nil || res.Keys != 2 {
		t.Errorf("pull of the genuine file: %+v, %v", res, err)
	}
}

func TestPullRefusesBadInput(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	p := newPuller(t, a, federate.Config{})
	ctx := context.Background()
	traversal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "../../etc/passwd\n")
	}))
	defer traversal.Close()
	key := []*ecdsa.PublicKey{&a.key.PublicKey}
	for name, s := range map[string]federate.Site{
		"traversal index": {Name: "x", BaseURL: traversal.URL, Keys: key},
		"padding origin":  {Name: "padding", BaseURL: traversal.URL, Keys: key},
		"empty name":      {Name: "", BaseURL: traversal.URL, Keys: key},
		"no key":          {Name: "x", BaseURL: traversal.URL},
		"not http":        {Name: "x", BaseURL: "file:///etc", Keys: key},
	} {
		if _, err := p.Pull(ctx, s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func newPuller(t *testing.T, s *site, cfg federate.Config) *federate.Puller {
	t.Helper()
	p, err := federate.New(s.db, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func index(t *testing.T, dir string) []string {
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
	return paths
}

// serve publishes files (path → bytes) and an index naming them in order.
func serve(t *testing.T, paths []string, files map[string][]byte) string {
	t.Helper()
	var idx bytes.Buffer
	for _, p := range paths {
		idx.WriteString(p + "\n")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/index.txt" {
			w.Write(idx.Bytes())
			return
		}
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// signed is an export file of keys (and revised keys) signed by key.
func signed(t *testing.T, key *ecdsa.PrivateKey, keys, revised []export.Key) []byte {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	var b bytes.Buffer
	f := &export.File{Start: now.Add(-time.Hour), End: now, Region: "BE", BatchNum: 1, BatchSize: 1, Keys: keys, Revised: revised}
	if err := export.WriteFile(&b, f, []export.Signer{{Signer: key, Version: "v1", ID: "206"}}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func dayKey(daysAgo int, reportType int32) export.Key {
	k := export.Key{ReportType: reportType}
	rand.Read(k.Data[:])
	k.RollingStart = exposure.IntervalNumber(time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -daysAgo))
	k.RollingPeriod = 144
	k.TransmissionRisk = 3
	k.DaysSinceOnset, k.HasOnset = int32(2-daysAgo), true
	return k
}

// TestPullKeepsReportTypesAndRevisions: a site's REVOKED, SELF_REPORT and
// clinical keys are stored and published again as they came; its file's
// revised_keys are read (not the whole file refused), and a revision of a
// key already published here goes out in this site's next file.
func TestPullKeepsReportTypesAndRevisions(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	clinical, self, revoked, confirmed := dayKey(2, export.ReportClinicalDiagnosis), dayKey(3, export.ReportSelfReport),
		dayKey(4, export.ReportRevoked), dayKey(5, export.ReportConfirmedTest)
	files := map[string][]byte{"1.zip": signed(t, partner, []export.Key{clinical, self, revoked, confirmed}, nil)}
	url := serve(t, []string{"1.zip"}, files)
	site := federate.Site{Name: "be", BaseURL: url, Keys: []*ecdsa.PublicKey{&partner.PublicKey}}
	p := newPuller(t, a, federate.Config{})
	ctx := t.Context()
	if res, err := p.Pull(ctx, site); err != nil || res.Keys != 4 {
		t.Fatalf("first pull: %+v, %v", res, err)
	}
	a.publish(t)
	published := func() (map[[16]byte]export.Key, map[[16]byte]export.Key) {
		keys, revised := map[[16]byte]export.Key{}, map[[16]byte]export.Key{}
		for _, path := range index(t, a.dir) {
			b, err := os.ReadFile(filepath.Join(a.dir, path))
			if err != nil {
				t.Fatal(err)
			}
			f, err := export.Open(b, []*ecdsa.PublicKey{&a.key.PublicKey})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range f.Keys {
				keys[k.Data] = k
			}
			for _, k := range f.Revised {
				revised[k.Data] = k
			}
		}
		return keys, revised
	}
	keys, _ := published()
	for _, k := range []export.Key{clinical, self, revoked, confirmed} {
		if keys[k.Data] != k {
			t.Errorf("re-published %+v, want %+v as the partner gave it", keys[k.Data], k)
		}
	}

	// The partner revises: the clinical diagnosis is confirmed, the self
	// report revoked; a confirmed key cannot be revoked, nor a key of
	// another site.
	conf, rev, bad := clinical, self, confirmed
	conf.ReportType, rev.ReportType, bad.ReportType = export.ReportConfirmedTest, export.ReportRevoked, export.ReportRevoked
	stranger := dayKey(6, export.ReportRevoked)
	files["2.zip"] = signed(t, partner, nil, []export.Key{conf, rev, bad, stranger})
	url = serve(t, []string{"1.zip", "2.zip"}, files)
	site.BaseURL = url
	res, err := p.Pull(ctx, site)
	if err != nil || res.Imported != 1 || res.Revised != 2 {
		t.Fatalf("pull of revisions: %+v, %v; want 1 file, 2 revisions", res, err)
	}
	time.Sleep(1100 * time.Millisecond) // the next window ends a second later
	a.publish(t)
	keys, revised := published()
	if len(revised) != 2 || revised[conf.Data] != conf || revised[rev.Data] != rev {
		t.Errorf("revised keys published %v, want the two revisions", revised)
	}
	if keys[clinical.Data] != clinical {
		t.Errorf("the first publication changed: %+v", keys[clinical.Data])
	}
}

// TestPullRefusesFutureKeys: a file with a key that starts after now is
// refused whole and stores nothing.
func TestPullRefusesFutureKeys(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	future := dayKey(0, export.ReportConfirmedTest)
	future.RollingStart = exposure.IntervalNumber(time.Now().Add(30 * time.Minute))
	future.HasOnset = false
	url := serve(t, []string{"f.zip"}, map[string][]byte{"f.zip": signed(t, partner, []export.Key{dayKey(2, 1), future}, nil)})
	res, err := newPuller(t, a, federate.Config{}).Pull(t.Context(), federate.Site{Name: "be", BaseURL: url, Keys: []*ecdsa.PublicKey{&partner.PublicKey}})
	if !errors.Is(err, federate.ErrFuture) || res.Refused != 1 {
		t.Fatalf("pull of a future key: %+v, %v; want ErrFuture", res, err)
	}
	if n := a.count(t, "true"); n != 0 {
		t.Errorf("%d keys stored from a refused file", n)
	}
}

// TestPullLimits: a pull stops at its file and key limits with ErrLimit,
// and the next pull goes on where it stopped.
func TestPullLimits(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	files := map[string][]byte{}
	var paths []string
	for i := range 4 {
		name := fmt.Sprintf("%d.zip", i)
		files[name] = signed(t, partner, []export.Key{dayKey(2, 1), dayKey(3, 1), dayKey(4, 1)}, nil)
		paths = append(paths, name)
	}
	site := federate.Site{Name: "be", BaseURL: serve(t, paths, files), Keys: []*ecdsa.PublicKey{&partner.PublicKey}}
	ctx := t.Context()
	byFiles := newPuller(t, a, federate.Config{MaxFiles: 3})
	res, err := byFiles.Pull(ctx, site)
	if !errors.Is(err, federate.ErrLimit) || !strings.Contains(err.Error(), "VOUCH_FEDERATE_MAX_FILES") || res.Imported != 3 || res.Deferred != 1 {
		t.Fatalf("pull of 4 files at 3 a pull: %+v, %v", res, err)
	}
	if res, err = byFiles.Pull(ctx, site); err != nil || res.Imported != 1 {
		t.Fatalf("the next pull: %+v, %v; want the last file", res, err)
	}

	b := newSite(t, "site-b")
	byKeys := newPuller(t, b, federate.Config{MaxKeys: 7})
	res, err = byKeys.Pull(ctx, site)
	if !errors.Is(err, federate.ErrLimit) || !strings.Contains(err.Error(), "VOUCH_FEDERATE_MAX_KEYS") || res.Imported != 2 || res.Deferred != 2 {
		t.Fatalf("pull of 12 keys at 7 a pull: %+v, %v", res, err)
	}
	if n := b.count(t, "true"); n != 6 {
		t.Errorf("%d keys stored, want the 6 of the two files within the limit", n)
	}
	for _, bad := range []federate.Config{{MaxFiles: -1}, {MaxKeys: -5}} {
		if _, err := federate.New(b.db, nil, bad); err == nil {
			t.Errorf("config %+v accepted", bad)
		}
	}
}

// TestPullChecksSignatureFirst: a file whose signature fails and whose
// export.bin is malformed is refused for its signature: the body of a file
// nobody trusted signed is never parsed.
func TestPullChecksSignatureFirst(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := signed(t, partner, []export.Key{dayKey(2, 1)}, nil)
	zr, err := zip.NewReader(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := zr.File[1].Open()
	sig, _ := io.ReadAll(rc)
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, _ := zw.Create(export.BinName)
	w.Write([]byte(export.Header + "\xff\xff\xff garbage, not protobuf"))
	w, _ = zw.Create(export.SigName)
	w.Write(sig)
	zw.Close()
	url := serve(t, []string{"x.zip"}, map[string][]byte{"x.zip": b.Bytes()})
	_, err = newPuller(t, a, federate.Config{}).Pull(t.Context(), federate.Site{Name: "be", BaseURL: url, Keys: []*ecdsa.PublicKey{&partner.PublicKey}})
	if !errors.Is(err, export.ErrSignature) || errors.Is(err, export.ErrFormat) {
		t.Fatalf("a malformed body under a bad signature: %v, want the signature error", err)
	}
}
