//go:build !mutation

package export_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/vouch-nl/vouch/internal/cdn"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/lease"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// s3Config is testConfig publishing to bucket/prefix on gw as well.
func s3Config(t testing.TB, gw *testenv.S3, bucket, prefix string) export.Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.Target = "s3://" + bucket + "/" + prefix
	cfg.S3Endpoint = gw.Endpoint
	cfg.S3AccessKey, cfg.S3SecretKey = gw.AccessKey, gw.SecretKey
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// s3Get reads one object with the signed client; ok is false when there
// is none.
func s3Get(t testing.TB, c *minio.Client, bucket, key string) (b []byte, ok bool) {
	t.Helper()
	o, err := c.GetObject(t.Context(), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer o.Close()
	b, err = io.ReadAll(o)
	if minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
		return nil, false
	}
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b, true
}

// s3Consistent checks what a phone could see in the bucket at any moment:
// the index (if any) names only objects that are there whole and verify,
// and no object below exports/ is partial. It returns the index's names.
func s3Consistent(t testing.TB, gw *testenv.S3, bucket, prefix string, trusted ...*ecdsa.PublicKey) []string {
	t.Helper()
	c := gw.Client(t)
	var names []string
	if idx, ok := s3Get(t, c, bucket, prefix+"/"+export.IndexName); ok {
		var err error
		if names, err = export.ReadIndex(bytes.NewReader(idx)); err != nil {
			t.Fatalf("index: %v", err)
		}
	}
	objects := map[string]bool{}
	for _, k := range gw.Objects(t, bucket, prefix+"/"+export.ExportsDir+"/") {
		objects[strings.TrimPrefix(k, prefix+"/")] = true
		b, ok := s3Get(t, c, bucket, k)
		if !ok {
			t.Fatalf("%s listed but not there", k)
		}
		if _, err := export.Open(b, trusted); err != nil {
			t.Fatalf("object %s is not a whole, verified export: %v", k, err)
		}
	}
	for _, n := range names {
		if !objects[n] {
			t.Fatalf("the index names %s, which the bucket does not hold", n)
		}
	}
	return names
}

// TestS3Publish: an export goes to the bucket (files, then the index,
// each with the directory origin's Content-Type and Cache-Control), a
// phone reads it anonymously over HTTP, and a file that left the index
// goes from the bucket only after the grace period.
func TestS3Publish(t *testing.T) {
	t.Parallel()
	gw := testenv.S3Gateway(t)
	gw.Bucket(t, "vouch-export", true)
	db := testenv.Database(t)
	cfg := s3Config(t, gw, "vouch-export", "nl/v1")
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	c := &clock{t: noon}
	export.SetNow(a, c.now)
	var keys []export.Key
	for i := range 30 {
		keys = append(keys, dayKey(t, 1+i%12))
	}
	storeKeys(t, db, "", keys...)
	first, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	names := s3Consistent(t, gw, "vouch-export", "nl/v1", pubOf(s))
	if !slices.Equal(names, first.Files) || len(names) == 0 {
		t.Fatalf("bucket's index %v, the run published %v", names, first.Files)
	}

	// A phone: anonymous GETs of the prefix's URL, as through a CDN.
	// Every header a cache reads is the directory origin's.
	origin, err := cdn.NewHandler(cfg.Dir, 8760*time.Hour, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()
	base := gw.URL("vouch-export", "nl/v1")
	got := map[[16]byte]bool{}
	for _, name := range append([]string{export.IndexName}, names...) {
		resp, err := http.Get(base + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("anonymous GET %s: %d %v", name, resp.StatusCode, err)
		}
		rec := httptest.NewRecorder()
		origin.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+name, nil))
		for _, h := range []string{"Content-Type", "Cache-Control"} {
			if resp.Header.Get(h) != rec.Header().Get(h) || resp.Header.Get(h) == "" {
				t.Errorf("%s: %s %q from the bucket, %q from the directory origin", name, h, resp.Header.Get(h), rec.Header().Get(h))
			}
		}
		if !bytes.Equal(body, rec.Body.Bytes()) {
			t.Errorf("%s: the bucket and the directory differ", name)
		}
		if name == export.IndexName {
			continue
		}
		f, err := export.Open(body, []*ecdsa.PublicKey{pubOf(s)})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, k := range f.Keys {
			got[k.Data] = true
		}
	}
	for _, k := range keys {
		if !got[k.Data] {
			t.Fatalf("key %x published to the directory but not read from the bucket", k.Data)
		}
	}
	// Listing the bucket is not public: only named files are read.
	if resp, err := http.Get(gw.URL("vouch-export", "") + "?list-type=2"); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("anonymous listing: %v %v, want 403", resp, err)
	}

	// The files leave the index after 14 days; they stay in the bucket
	// for the grace period (an hour here), then go.
	c.add(14*24*time.Hour + time.Minute)
	second, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s3Consistent(t, gw, "vouch-export", "nl/v1", pubOf(s))
	objects := gw.Objects(t, "vouch-export", "nl/v1/exports/")
	for _, f := range first.Files {
		if !slices.Contains(objects, "nl/v1/"+f) {
			t.Fatalf("%s deleted from the bucket within its grace period", f)
		}
	}
	c.add(61 * time.Minute)
	if _, err := a.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	s3Consistent(t, gw, "vouch-export", "nl/v1", pubOf(s))
	objects = gw.Objects(t, "vouch-export", "nl/v1/exports/")
	if want := []string{"nl/v1/" + second.Files[0]}; len(second.Files) != 1 || !slices.Equal(objects, want) {
		t.Fatalf("after the grace period the bucket holds %v, want %v", objects, want)
	}
}

// TestS3IndexConflict: an index written by someone else after a run read
// the index's version is never overwritten (412 to the run's If-Match,
// ErrIndexChanged); the next run reads the new version and publishes. A
// file already in the bucket is not overwritten either (If-None-Match).
func TestS3IndexConflict(t *testing.T) {
	t.Parallel()
	gw := testenv.S3Gateway(t)
	gw.Bucket(t, "vouch-conflict", false)
	db := testenv.Database(t)
	cfg := s3Config(t, gw, "vouch-conflict", "x")
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	cl := gw.Client(t)
	idxKey := "x/" + export.IndexName

	// No index yet: one appearing during the run is not overwritten
	// (If-None-Match: *).
	storeKeys(t, db, "", dayKey(t, 2))
	other := []byte("exports/written-by-another-aggregator.zip\n")
	export.SetBeforeIndex(a, func() {
		if _, err := cl.PutObject(t.Context(), "vouch-conflict", idxKey, bytes.NewReader(other), int64(len(other)), minio.PutObjectOptions{}); err != nil {
			t.Error(err)
		}
	})
	if _, err := a.Run(t.Context()); !errors.Is(err, export.ErrIndexChanged) {
		t.Fatalf("index created meanwhile: %v, want ErrIndexChanged", err)
	}
	if b, _ := s3Get(t, cl, "vouch-conflict", idxKey); !bytes.Equal(b, other) {
		t.Fatalf("the other index was overwritten: %q", b)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, export.IndexName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused run wrote its directory's index: %v", err)
	}

	// An index there: one written during the run is not overwritten
	// (If-Match with the ETag read at the start).
	other = []byte("# another aggregator's newer index\n")
	if _, err := a.Run(t.Context()); !errors.Is(err, export.ErrIndexChanged) {
		t.Fatalf("index replaced meanwhile: %v, want ErrIndexChanged", err)
	}
	if b, _ := s3Get(t, cl, "vouch-conflict", idxKey); !bytes.Equal(b, other) {
		t.Fatalf("the other index was overwritten: %q", b)
	}

	// Nobody else writes: the next run publishes over what it read.
	export.SetBeforeIndex(a, nil)
	res, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if names := s3Consistent(t, gw, "vouch-conflict", "x", pubOf(s)); !slices.Equal(names, res.Files) {
		t.Fatalf("index %v after the conflict, the run published %v", names, res.Files)
	}

	// The store itself: If-None-Match: * on an existing object and a stale
	// If-Match are refused with 412.
	put := func(key string, set func(*minio.PutObjectOptions)) int {
		o := minio.PutObjectOptions{}
		set(&o)
		_, err := cl.PutObject(t.Context(), "vouch-conflict", key, strings.NewReader("x"), 1, o)
		return minio.ToErrorResponse(err).StatusCode
	}
	if code := put("x/"+res.Files[0], func(o *minio.PutObjectOptions) { o.SetMatchETagExcept("*") }); code != http.StatusPreconditionFailed {
		t.Errorf("If-None-Match: * over a file: %d, want 412", code)
	}
	if code := put(idxKey, func(o *minio.PutObjectOptions) { o.SetMatchETag("0123456789abcdef0123456789abcdef") }); code != http.StatusPreconditionFailed {
		t.Errorf("stale If-Match over the index: %d, want 412", code)
	}
	s3Consistent(t, gw, "vouch-conflict", "x", pubOf(s))
}

// stallTransport holds the first upload of an export file after a part
// of its body went out, until release is closed: the gateway can be
// killed while the upload is in flight.
type stallTransport struct {
	rt      http.RoundTripper
	once    sync.Once
	stalled chan struct{} // closed when an upload is stalled
	release chan struct{}
}

func (s *stallTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/"+export.ExportsDir+"/") && r.Body != nil {
		s.once.Do(func() {
			r.Body = &stallBody{ReadCloser: r.Body, left: 32 << 10, s: s}
		})
	}
	return s.rt.RoundTrip(r)
}

type stallBody struct {
	io.ReadCloser
	left int
	s    *stallTransport
}

func (b *stallBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		select {
		case <-b.s.stalled:
		default:
			close(b.s.stalled)
		}
		<-b.s.release
		return b.ReadCloser.Read(p)
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= n
	return n, err
}

// TestS3KillDuringUpload: the gateway is killed (-9) while an export file
// is being uploaded and started again. The run fails; at no step does the
// index name a missing or partial object; the next run publishes it all.
func TestS3KillDuringUpload(t *testing.T) {
	t.Parallel()
	gw := testenv.S3Gateway(t)
	gw.Bucket(t, "vouch-crash", false)
	db := testenv.Database(t)
	cfg := s3Config(t, gw, "vouch-crash", "nl")
	cfg.MinKeys = 20000 // a file of some hundreds of KB: the upload is cut in its middle
	s := softSigner(t, 7, "v1")
	a := newAggregator(t, cfg, db, nil, s)
	c := &clock{t: noon}
	export.SetNow(a, c.now)
	storeKeys(t, db, "", dayKey(t, 3), dayKey(t, 4))
	first, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if names := s3Consistent(t, gw, "vouch-crash", "nl", pubOf(s)); !slices.Equal(names, first.Files) {
		t.Fatalf("index %v, published %v", names, first.Files)
	}

	// An hour later new keys: a new file, whose upload the gateway's
	// crash cuts.
	c.add(time.Hour)
	storeKeys(t, db, "", dayKey(t, 2), dayKey(t, 2))
	st := &stallTransport{rt: http.DefaultTransport.(*http.Transport).Clone(), stalled: make(chan struct{}), release: make(chan struct{})}
	if err := export.SetTargetTransport(a, st); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res export.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := a.Run(context.WithoutCancel(t.Context()))
		done <- result{res, err}
	}()
	select {
	case <-st.stalled:
	case r := <-done:
		t.Fatalf("the run ended before its upload stalled: %v %v", r.res.Files, r.err)
	case <-time.After(60 * time.Second):
		t.Fatal("no upload of an export file within 60s")
	}
	gw.Kill(t)
	close(st.release)
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the run did not end within 60s of the gateway's crash")
	}
	if r.err == nil {
		t.Fatalf("the run published %v through a crashed gateway", r.res.Files)
	}
	gw.Start(t)
	if names := s3Consistent(t, gw, "vouch-crash", "nl", pubOf(s)); !slices.Equal(names, first.Files) {
		t.Fatalf("after the crash the index is %v, want the last published %v", names, first.Files)
	}

	// The next run, with nothing in its way, publishes the new file.
	if err := export.SetTargetTransport(a, http.DefaultTransport.(*http.Transport).Clone()); err != nil {
		t.Fatal(err)
	}
	second, err := a.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	names := s3Consistent(t, gw, "vouch-crash", "nl", pubOf(s))
	if !slices.Equal(names, second.Files) || len(second.Files) <= len(first.Files) {
		t.Fatalf("after the restart the index is %v, the run published %v (before: %v)", names, second.Files, first.Files)
	}
}

// TestS3StaleHolderKeepsNewerIndex is issue 20's attack on two machines
// sharing a bucket: an aggregator frozen after its index's record
// committed (its epoch checked) and before the bucket's index, while
// another took over on another machine (its own directory, so no lock
// between them) and published a newer index to the bucket. When the
// frozen one wakes, the bucket refuses its older index (If-Match with the
// ETag it read at the start: 412), and the newer index stays.
// (TestS3IndexConflict covers the first index, If-None-Match: *.)
func TestS3StaleHolderKeepsNewerIndex(t *testing.T) {
	t.Parallel()
	gw := testenv.S3Gateway(t)
	gw.Bucket(t, "vouch-fence", false)
	db := testenv.Database(t)
	cfg := s3Config(t, gw, "vouch-fence", "nl")
	cfg.Lease = time.Second
	s := softSigner(t, 7, "v1")
	storeKeys(t, db, "", dayKey(t, 1))
	// A first index: the frozen run reads its ETag when it starts.
	if _, err := newAggregator(t, cfg, db, nil, s).Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	frozen := newAggregator(t, cfg, db, nil, s)
	release := make(chan struct{})
	there := stopAt(frozen, export.StepIndexCommitted, release)
	l, err := lease.Acquire(context.Background(), db.Pool(), export.LeaseName, export.Holder(frozen), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := export.RunUnder(context.Background(), frozen, l); done <- err }()
	select {
	case <-there:
	case err := <-done:
		t.Fatalf("the run ended before its index's commit: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the run did not reach its index's commit within 60s")
	}
	expireLease(t, db)

	cfgB := cfg
	cfgB.Dir = t.TempDir() // another machine
	other := newAggregator(t, cfgB, db, nil, s)
	export.SetNow(other, func() time.Time { return noon.Add(time.Minute) })
	storeKeys(t, db, "", dayKey(t, 2), dayKey(t, 3))
	newer, err := other.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if names := s3Consistent(t, gw, "vouch-fence", "nl", pubOf(s)); !slices.Equal(names, newer.Files) || len(names) != 2 {
		t.Fatalf("the bucket's index %v, the newer run published %v", names, newer.Files)
	}
	close(release)
	if err := <-done; !errors.Is(err, export.ErrIndexChanged) {
		t.Fatalf("the woken stale run: %v, want ErrIndexChanged", err)
	}
	if names := s3Consistent(t, gw, "vouch-fence", "nl", pubOf(s)); !slices.Equal(names, newer.Files) {
		t.Fatalf("the stale holder's index replaced the newer one: %v, want %v", names, newer.Files)
	}
}
