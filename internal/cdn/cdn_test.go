package cdn_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/cdn"
)

// origin is an export directory served by a running origin, with a secret
// file beside the root that nothing may reach.
type origin struct {
	url    string
	addr   string
	zip    []byte
	zipSum string
	index  []byte
}

func start(t testing.TB) origin {
	t.Helper()
	dir, o := exportDir(t)
	srv, err := cdn.New(cdn.Config{Addr: "127.0.0.1:0", Dir: dir, MaxAge: 365 * 24 * time.Hour}, slog.New(slog.DiscardHandler))
	must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		srv.Close()
	})
	o.addr = ln.Addr().String()
	o.url = "http://" + o.addr
	return o
}

// startOSRoot is start with files opened through an os.Root, as where
// openat2(2) is missing.
func startOSRoot(t testing.TB) origin {
	t.Helper()
	dir, o := exportDir(t)
	h, err := cdn.NewHandlerOSRoot(dir, 365*24*time.Hour, slog.New(slog.DiscardHandler))
	must(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); h.Close() })
	o.url = srv.URL
	o.addr = strings.TrimPrefix(srv.URL, "http://")
	return o
}

// exportDir is an export directory, a secret beside it, and links.
func exportDir(t testing.TB) (string, origin) {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "root")
	must(t, os.MkdirAll(filepath.Join(dir, "exports", "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(base, "secret.txt"), []byte("SECRET outside the root"), 0o600))
	zip := []byte(strings.Repeat("PK export bytes 0123456789\n", 200))
	sum := sha256.Sum256(zip)
	o := origin{zip: zip, zipSum: hex.EncodeToString(sum[:]), index: []byte("exports/" + hex.EncodeToString(sum[:]) + ".zip\n")}
	must(t, os.WriteFile(filepath.Join(dir, "exports", o.zipSum+".zip"), zip, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "index.txt"), o.index, 0o644))
	// The transparency log: a tile never changes, the checkpoint does.
	must(t, os.MkdirAll(filepath.Join(dir, "log", "tile", "0", "x001.p"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "log", "tile", "0", "x001.p", "5"), []byte("tile bytes"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "log", "checkpoint"), []byte("checkpoint"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, ".tmp-index"), []byte("half written"), 0o644))
	must(t, os.Symlink(filepath.Join(base, "secret.txt"), filepath.Join(dir, "escape.txt")))
	must(t, os.Symlink("../secret.txt", filepath.Join(dir, "exports", "rel.txt")))
	must(t, os.Symlink(base, filepath.Join(dir, "up")))
	must(t, os.Symlink("index.txt", filepath.Join(dir, "inside.txt")))
	return dir, o
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type reply struct {
	Status       int
	Body         string
	ETag         string
	CacheControl string
	ContentRange string
}

func get(t *testing.T, method, url string, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	must(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return reply{resp.StatusCode, string(b), resp.Header.Get("ETag"), resp.Header.Get("Cache-Control"), resp.Header.Get("Content-Range")}
}

// raw sends the request line exactly as given, past any client's cleaning.
func raw(t *testing.T, addr, target string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	must(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestFilesAndCaching(t *testing.T) {
	t.Parallel()
	for name, start := range map[string]func(testing.TB) origin{"openat2": start, "os.Root": startOSRoot} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testFilesAndCaching(t, start(t))
		})
	}
}

func testFilesAndCaching(t *testing.T, o origin) {
	zipURL := o.url + "/exports/" + o.zipSum + ".zip"
	idx := sha256.Sum256(o.index)
	idxTag := `"` + hex.EncodeToString(idx[:]) + `"`
	zipTag := `"` + o.zipSum + `"`
	immutable := "public, max-age=31536000, immutable"
	tag := func(body string) string {
		h := sha256.Sum256([]byte(body))
		return `"` + hex.EncodeToString(h[:]) + `"`
	}
	tests := []struct {
		name   string
		method string
		url    string
		hdr    []string
		want   reply
	}{
		{"export", "GET", zipURL, nil, reply{200, string(o.zip), zipTag, immutable, ""}},
		{"export head", "HEAD", zipURL, nil, reply{200, "", zipTag, immutable, ""}},
		{"export not modified", "GET", zipURL, []string{"If-None-Match", zipTag}, reply{304, "", zipTag, immutable, ""}},
		{"export weak match", "GET", zipURL, []string{"If-None-Match", "W/" + zipTag}, reply{304, "", zipTag, immutable, ""}},
		{"export other etag", "GET", zipURL, []string{"If-None-Match", `"abc"`}, reply{200, string(o.zip), zipTag, immutable, ""}},
		{"index", "GET", o.url + "/index.txt", nil, reply{200, string(o.index), idxTag, "no-cache", ""}},
		{"index not modified", "GET", o.url + "/index.txt", []string{"If-None-Match", idxTag}, reply{304, "", idxTag, "no-cache", ""}},
		{"range", "GET", zipURL, []string{"Range", "bytes=10-19"}, reply{206, string(o.zip[10:20]), zipTag, immutable, "bytes 10-19/" + itoa(len(o.zip))}},
		{"suffix range", "GET", zipURL, []string{"Range", "bytes=-5"}, reply{206, string(o.zip[len(o.zip)-5:]), zipTag, immutable, "bytes " + itoa(len(o.zip)-5) + "-" + itoa(len(o.zip)-1) + "/" + itoa(len(o.zip))}},
		// An error drops the file's headers (http.ServeContent's doing).
		{"range past the end", "GET", zipURL, []string{"Range", "bytes=999999-"}, reply{416, "", "", "", "bytes */" + itoa(len(o.zip))}},
		{"malformed range", "GET", zipURL, []string{"Range", "bytes=5-2"}, reply{416, "", "", "", ""}},
		{"multipart range", "GET", zipURL, []string{"Range", "bytes=0-1,4-5"}, reply{206, "", zipTag, immutable, ""}},
		{"range if-range stale", "GET", zipURL, []string{"Range", "bytes=0-3", "If-Range", `"other"`}, reply{200, string(o.zip), zipTag, immutable, ""}},
		{"range if-range current", "GET", zipURL, []string{"Range", "bytes=0-3", "If-Range", zipTag}, reply{206, string(o.zip[:4]), zipTag, immutable, "bytes 0-3/" + itoa(len(o.zip))}},
		{"log tile", "GET", o.url + "/log/tile/0/x001.p/5", nil, reply{200, "tile bytes", tag("tile bytes"), immutable, ""}},
		{"log checkpoint", "GET", o.url + "/log/checkpoint", nil, reply{200, "checkpoint", tag("checkpoint"), "no-cache", ""}},
		{"symlink inside the root", "GET", o.url + "/inside.txt", nil, reply{200, string(o.index), idxTag, "no-cache", ""}},
		{"post", "POST", zipURL, nil, reply{405, "method not allowed\n", "", "", ""}},
		{"delete", "DELETE", o.url + "/index.txt", nil, reply{405, "method not allowed\n", "", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := get(t, tt.method, tt.url, tt.hdr...)
			switch {
			case tt.want.Status == 416:
				got.Body = "" // ServeContent's text
			case strings.HasPrefix(tt.name, "multipart"):
				if !strings.Contains(got.Body, string(o.zip[0:2])) || !strings.Contains(got.Body, string(o.zip[4:6])) {
					t.Errorf("multipart body lacks a part: %q", got.Body)
				}
				got.Body = ""
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("-want +got:\n%s", diff)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestNothingOutsideTheRoot sends crafted paths as raw request lines: each
// is refused with the one answer of a missing file (404 "not found", so
// that no path tells more than another), and no answer holds the secret.
func TestNothingOutsideTheRoot(t *testing.T) {
	t.Parallel()
	for name, start := range map[string]func(testing.TB) origin{"openat2": start, "os.Root": startOSRoot} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testNothingOutsideTheRoot(t, start(t))
		})
	}
}

func testNothingOutsideTheRoot(t *testing.T, o origin) {
	targets := []string{
		"/", "/exports", "/exports/", "/exports/sub", "/exports/sub/",
		"/../secret.txt", "/exports/../../secret.txt", "/./index.txt", "//index.txt", "/exports//" + o.zipSum + ".zip",
		"/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/exports/%2e%2e/%2e%2e/secret.txt", "/..%2fsecret.txt", "/..%2Fsecret.txt",
		"/%2fetc%2fpasswd", "/index%2etxt", "/..%5csecret.txt", `/..\secret.txt`, `/exports\..\..\secret.txt`,
		"/index.txt%00", "/index.txt%00.zip", "/%00", "/.tmp-index", "/escape.txt", "/exports/rel.txt", "/up/secret.txt",
		"/up", "/index.txt/", "/index.txt/.", "/etc/passwd", "/proc/self/environ", "/%252e%252e/secret.txt",
		"/..;/secret.txt", "/exports/..%00/secret.txt", "/\u00e9", "/" + strings.Repeat("a", 600),
		"http://origin/../secret.txt", "*",
		// What scanners ask of any web server: the operations listener's
		// paths are not here, a directory's as little as a file's.
		"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof", "/metrics", "/healthz", "/readyz",
	}
	for _, target := range targets {
		status, body := raw(t, o.addr, target)
		if status != http.StatusNotFound || body != "not found\n" {
			t.Errorf("GET %q: %d %q, want 404 %q", target, status, body, "not found\n")
		}
		if strings.Contains(body, "SECRET") || strings.Contains(body, "half written") {
			t.Errorf("GET %q served a file it must not: %q", target, body)
		}
	}
	// The plain spelling of a file still works over the same raw path.
	if status, body := raw(t, o.addr, "/index.txt"); status != 200 || body != string(o.index) {
		t.Errorf("GET /index.txt: %d %q", status, body)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  cdn.Config
		ok   bool
	}{
		{"good", cdn.Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), MaxAge: time.Hour}, true},
		{"no dir", cdn.Config{Addr: "127.0.0.1:0", MaxAge: time.Hour}, false},
		{"no max age", cdn.Config{Addr: "127.0.0.1:0", Dir: t.TempDir()}, false},
		{"missing dir", cdn.Config{Addr: "127.0.0.1:0", Dir: filepath.Join(t.TempDir(), "none"), MaxAge: time.Hour}, false},
	}
	for _, tt := range tests {
		s, err := cdn.New(tt.cfg, slog.New(slog.DiscardHandler))
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v", tt.name, err)
		}
		if s != nil {
			s.Close()
		}
	}
}

// FuzzPath: whatever the path, the origin serves only the files in the
// root that it would serve by their plain names.
func FuzzPath(f *testing.F) {
	for _, s := range []string{"/index.txt", "/../x", "/%2e%2e/x", "//x", `/a\b`, "/exports/x.zip", "/.tmp"} {
		f.Add(s)
	}
	dir := f.TempDir()
	os.WriteFile(filepath.Join(filepath.Dir(dir), "outside"), []byte("SECRET"), 0o600)
	os.WriteFile(filepath.Join(dir, "index.txt"), []byte("index"), 0o644)
	h, err := cdn.NewHandler(dir, time.Hour, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, target string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil {
			return
		}
		w := &recorder{h: http.Header{}}
		h.ServeHTTP(w, req)
		if w.status == 0 {
			w.status = 200
		}
		if w.status == 200 && w.body.String() != "index" {
			t.Fatalf("%q served %q", target, w.body.String())
		}
		if strings.Contains(w.body.String(), "SECRET") {
			t.Fatalf("%q left the root", target)
		}
	})
}

type recorder struct {
	h      http.Header
	status int
	body   strings.Builder
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	return r.body.Write(b)
}

// TestContentTypes: a browser or a phone reads each file for what it is
// (the statistics as JSON and CSV, the checkpoint as text), and what is not
// named stays opaque bytes that nosniff keeps from being run.
func TestContentTypes(t *testing.T) {
	t.Parallel()
	got := map[string]string{}
	for _, name := range []string{"index.txt", "exports/ab.zip", "stats.json", "stats.csv", "log/checkpoint", "log/tile/0/000", "log/tile/entries/000", "checkpoint", "exports/ab.sig"} {
		got[name] = cdn.ContentType(name)
	}
	want := map[string]string{
		"index.txt":            "text/plain; charset=utf-8",
		"exports/ab.zip":       "application/zip",
		"stats.json":           "application/json",
		"stats.csv":            "text/csv; charset=utf-8",
		"log/checkpoint":       "text/plain; charset=utf-8",
		"log/tile/0/000":       "application/octet-stream",
		"log/tile/entries/000": "application/octet-stream",
		"checkpoint":           "application/octet-stream",
		"exports/ab.sig":       "application/octet-stream",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Error(d)
	}
}
