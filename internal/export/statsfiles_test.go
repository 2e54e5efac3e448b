//go:build !mutation

package export_test

import (
	"net/http"
	"testing"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestPutPublicFile: a public file lands at the root of the prefix, beside
// the index, replaced in place and revalidated at every use; a name that
// is the index or not a plain name of the root is refused.
func TestPutPublicFile(t *testing.T) {
	t.Parallel()
	gw := testenv.S3Gateway(t)
	gw.Bucket(t, "vouch-stats", true)
	target, err := export.OpenTarget(s3Config(t, gw, "vouch-stats", "nl/v1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"rows":[1]}`, `{"rows":[2]}`} {
		if err := export.PutPublicFile(t.Context(), target, "stats.json", []byte(body), "application/json"); err != nil {
			t.Fatal(err)
		}
		got, ok := s3Get(t, gw.Client(t), "vouch-stats", "nl/v1/stats.json")
		if !ok || string(got) != body {
			t.Fatalf("stats.json = %q %v, want %q", got, ok, body)
		}
	}
	resp, err := http.Get(gw.URL("vouch-stats", "nl/v1") + "/stats.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control %q, want no-cache: the file changes in place", cc)
	}
	for _, name := range []string{export.IndexName, "../stats.json", "exports/stats.json", ".stats.json", ""} {
		if err := export.PutPublicFile(t.Context(), target, name, []byte("x"), "text/plain"); err == nil {
			t.Errorf("%q: written", name)
		}
	}
	if _, ok := s3Get(t, gw.Client(t), "vouch-stats", "nl/v1/"+export.IndexName); ok {
		t.Error("the index was overwritten")
	}
}
