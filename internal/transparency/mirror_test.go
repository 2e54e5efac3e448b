package transparency

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/transparency-dev/tessera/client"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// Files names every tile and entry bundle a tree needs beyond a smaller
// one: the last of each level partial, the root's level included.
func TestFiles(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		from, size uint64
		want       []string
	}{
		{0, 0, nil},
		{0, 1, []string{"tile/entries/000.p/1", "tile/0/000.p/1"}},
		{0, 256, []string{"tile/entries/000", "tile/0/000", "tile/1/000.p/1"}},
		{256, 257, []string{"tile/entries/001.p/1", "tile/0/001.p/1", "tile/1/000.p/1"}},
		{300, 600, []string{"tile/entries/001", "tile/entries/002.p/88", "tile/0/001", "tile/0/002.p/88", "tile/1/000.p/2"}},
		{65535, 65537, []string{"tile/entries/255", "tile/entries/256.p/1", "tile/0/255", "tile/0/256.p/1",
			"tile/1/000", "tile/2/000.p/1"}},
	} {
		if diff := cmp.Diff(c.want, Files(c.from, c.size)); diff != "" {
			t.Errorf("Files(%d, %d) (-want +got):\n%s", c.from, c.size, diff)
		}
	}
}

// s3Object reads an object of the public bucket as a phone does, with
// its Cache-Control.
func s3Object(t testing.TB, url string) (body []byte, cacheControl string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return b, resp.Header.Get("Cache-Control")
}

// The writer mirrors its log into the exports' bucket (versitygw, a real
// S3 server): a reader of the bucket alone follows the log from its first
// leaf and, after it grew, consistently (the monitor's checks: every entry
// against the checkpoint's root, a consistency proof from the tiles),
// proves inclusions, and gets tiles as immutable and the checkpoint as
// no-cache. A writer with a smaller tree never writes its checkpoint over
// the bucket's, and a checkpoint whose tiles could not be copied is not
// written at all.
func TestMirrorToS3(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.Database(t)
	gw := testenv.S3Gateway(t)
	const bucket = "vouch-exports"
	gw.Bucket(t, bucket, true)
	dir := t.TempDir()
	skey, vkey := newKey(t, testOrigin)
	m := NewS3Mirror(gw.Client(t), bucket, "nl", time.Hour)
	w, err := NewWriter(testConfig(dir, skey), db, testLog(), WithMirror(m))
	if err != nil {
		t.Fatal(err)
	}
	runWriter(t, w)
	v, _ := Verifier(vkey)
	logURL := gw.URL(bucket, "nl/log/")
	mirrored := func(size uint64) []byte {
		t.Helper()
		waitLogged(t, db, dir, vkey, int64(size))
		var raw []byte
		waitFor(t, 30*time.Second, "the bucket's checkpoint to be the directory's", func() (bool, error) {
			b, _, err := m.get(ctx, "checkpoint")
			raw = b
			return err == nil && bytes.Equal(b, checkpointFile(t, dir)), err
		})
		return raw
	}

	insertAuthorizations(t, db, 300)
	old := mirrored(300)
	src, err := OpenSource(logURL)
	if err != nil {
		t.Fatal(err)
	}
	st := &State{Days: map[string]*DayCount{}}
	if _, err := Follow(ctx, src, v, st, false, nil); err != nil {
		t.Fatalf("following the bucket's log: %v", err)
	}

	insertAuthorizations(t, db, 300)
	latest := mirrored(600)
	cp, err := Follow(ctx, src, v, st, false, nil)
	if err != nil {
		t.Fatalf("following the bucket's log after it grew: %v", err)
	}
	if cp.Size != 600 {
		t.Fatalf("the bucket's log has %d leaves, want 600", cp.Size)
	}
	entries, err := readEntries(ctx, src.ReadEntryBundle, 0, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, src.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{0, 255, 256, 299, 511, 599} {
		if err := ProveInclusion(ctx, pb, cp, i, entries[i]); err != nil {
			t.Errorf("leaf %d through the bucket: %v", i, err)
		}
	}

	for rel, want := range map[string]string{
		"checkpoint": "no-cache", "tile/0/000": "public, max-age=3600, immutable",
		"tile/entries/002.p/88": "public, max-age=3600, immutable", "tile/1/000.p/2": "public, max-age=3600, immutable",
	} {
		if _, got := s3Object(t, logURL+rel); got != want {
			t.Errorf("%s: Cache-Control %q, want %q", rel, got, want)
		}
	}

	// A writer whose tree is smaller (it lost its lease) leaves the
	// bucket's checkpoint alone.
	stale := t.TempDir()
	if err := os.WriteFile(filepath.Join(stale, "checkpoint"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := NewS3Mirror(gw.Client(t), bucket, "nl", time.Hour).Sync(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if b, _ := s3Object(t, logURL+"checkpoint"); !bytes.Equal(b, latest) {
		t.Fatalf("a smaller tree's checkpoint replaced the bucket's:\n%s", b)
	}

	// The bucket's log is another origin's: refused, left alone.
	other := t.TempDir()
	foreign := append([]byte(nil), latest...)
	foreign = bytes.Replace(foreign, []byte(testOrigin+"\n"), []byte("vouch.test/other\n"), 1)
	if err := os.WriteFile(filepath.Join(other, "checkpoint"), foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := NewS3Mirror(gw.Client(t), bucket, "nl", time.Hour).Sync(ctx, other); err == nil || !strings.Contains(err.Error(), "another origin") {
		t.Fatalf("a checkpoint of another origin over the bucket's: %v", err)
	}
	if b, _ := s3Object(t, logURL+"checkpoint"); !bytes.Equal(b, latest) {
		t.Fatalf("another origin's checkpoint replaced the bucket's:\n%s", b)
	}

	// Tiles first, the checkpoint last: without its tiles, no checkpoint.
	gw.Bucket(t, "vouch-empty", true)
	bare := t.TempDir()
	if err := os.WriteFile(filepath.Join(bare, "checkpoint"), latest, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := NewS3Mirror(gw.Client(t), "vouch-empty", "", time.Hour).Sync(ctx, bare); err == nil {
		t.Fatal("a checkpoint was mirrored without its tiles")
	}
	if keys := gw.Objects(t, "vouch-empty", ""); len(keys) != 0 {
		t.Fatalf("objects written without their tiles: %v", keys)
	}
}

// checkpointSize reads what the bucket holds, which anyone with write
// access to it may have replaced: it never panics, and a size it returns
// is the one a checkpoint of that text names.
func FuzzCheckpointSize(f *testing.F) {
	f.Add([]byte(testOrigin + "\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— " + testOrigin + " AAAA\n"))
	f.Add([]byte("\n\n"))
	f.Add([]byte("x\n-1\n\n\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		n, err := checkpointSize(raw)
		if err != nil {
			return
		}
		if !bytes.Contains(raw, []byte("\n"+strconv.FormatUint(n, 10)+"\n")) {
			t.Fatalf("size %d is not the checkpoint's second line:\n%q", n, raw)
		}
	})
}
