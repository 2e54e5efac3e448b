//go:build linux

package cdn_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/cdn"
)

// TestNoDescriptorLeft: every answer — a body, a HEAD, a 304, a range, a
// miss — closes what it opened, so an origin under load does not run out
// of descriptors. (Not parallel: it counts the process's descriptors.)
func TestNoDescriptorLeft(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "index.txt"), []byte("exports/a.zip\n"), 0o644))
	h, err := cdn.NewHandler(dir, time.Hour, slog.New(slog.DiscardHandler))
	must(t, err)
	t.Cleanup(func() { h.Close() })
	ask := func(method, target string, hdr ...string) int {
		r := httptest.NewRequest(method, target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	round := func() {
		etag := ""
		{
			r := httptest.NewRequest(http.MethodGet, "/index.txt", nil)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			etag = w.Header().Get("Etag")
		}
		for _, c := range []struct {
			code int
			got  int
		}{
			{200, ask(http.MethodHead, "/index.txt")},
			{304, ask(http.MethodGet, "/index.txt", "If-None-Match", etag)},
			{206, ask(http.MethodGet, "/index.txt", "Range", "bytes=0-3")},
			{206, ask(http.MethodGet, "/index.txt", "Range", "bytes=0-1,3-4")},
			{404, ask(http.MethodGet, "/missing.txt")},
		} {
			if c.got != c.code {
				t.Fatalf("got %d, want %d", c.got, c.code)
			}
		}
	}
	open := func() int {
		es, err := os.ReadDir("/proc/self/fd")
		must(t, err)
		return len(es)
	}
	round() // the runtime's own first descriptors
	before := open()
	for range 100 {
		round()
	}
	if after := open(); after > before+5 {
		t.Fatalf("%d descriptors open after 600 answers, %d before", after, before)
	}
}
