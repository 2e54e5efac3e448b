package federate_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
			values ($1, $2, 144, 5, $3, $4)`, data[:], exposure.IntervalNumber(today.AddDate(0, 0, -1-i%12)), int16(-i%3),
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
	pa, pb := federate.New(a.db, nil), federate.New(b.db, nil)

	res, err := pa.Pull(ctx, a.as(b))
	if err != nil {
		t.Fatal(err)
	}
	if res.Listed != 2 || res.Imported != 2 || res.Keys != 5 {
		t.Errorf("a pulls b: %+v, want 2 files, 5 keys", res)
	}
	if n := a.count(t, "origin = $1", "site-b"); n != 5 {
		t.Errorf("a stored %d keys under origin site-b, want 5", n)
	}
	a.publish(t) // a now exports 12 keys, b's among them
	res, err = pb.Pull(ctx, b.as(a))
	if err != nil {
		t.Fatal(err)
	}
	if res.Listed != 4 || res.Imported != 4 || res.Keys != 7 {
		t.Errorf("b pulls a: %+v, want 4 files, 7 new keys", res)
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
	p := federate.New(a.db, nil)
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
	p := federate.New(a.db, nil)
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
