package cdn_test

import (
	"bytes"
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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/cdn"
)

// serve asks h for target, a raw request path.
func serve(t *testing.T, h http.Handler, target string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
	return w
}

// TestWhichNamesAreServed: a file is served by its plain name — letters of
// either case, digits, '.', '_' and '-', a path of 2 to 512 bytes — and
// refused (404, as a missing file) whatever other character its name
// holds, even when such a file lies in the root.
func TestWhichNamesAreServed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plain := []string{"a", "AZ", "az09", "a_b", "a-b", "x.Y.z"}
	// Characters a URL path may hold unescaped; the neighbours of the
	// allowed ranges are among them ('/' and ':' of the digits, '@' of
	// the capitals).
	odd := []string{"a+b", "a~b", "a$b", "a&b", "a,b", "a;b", "a=b", "a@b", "a:b", "a@", "a:"}
	for _, n := range append(plain, odd...) {
		must(t, os.WriteFile(filepath.Join(dir, n), []byte("file "+n), 0o644))
	}
	h, err := cdn.NewHandler(dir, time.Hour, slog.New(slog.DiscardHandler))
	must(t, err)
	t.Cleanup(func() { h.Close() })
	for _, n := range plain {
		if w := serve(t, h, "/"+n); w.Code != http.StatusOK || w.Body.String() != "file "+n {
			t.Errorf("GET /%s: %d %q, want the file", n, w.Code, w.Body.String())
		}
	}
	for _, n := range odd {
		if w := serve(t, h, "/"+n); w.Code != http.StatusNotFound || w.Body.String() != "not found\n" {
			t.Errorf("GET /%s: %d %q, want 404", n, w.Code, w.Body.String())
		}
	}
	// 512 bytes is the longest path: served; one byte more is not, though
	// the file is there.
	d := filepath.Join(dir, strings.Repeat("a", 200), strings.Repeat("b", 200))
	must(t, os.MkdirAll(d, 0o755))
	must(t, os.WriteFile(filepath.Join(d, strings.Repeat("c", 109)), []byte("long"), 0o644))
	must(t, os.WriteFile(filepath.Join(d, strings.Repeat("c", 110)), []byte("longer"), 0o644))
	long := "/" + strings.Repeat("a", 200) + "/" + strings.Repeat("b", 200) + "/" + strings.Repeat("c", 109)
	if len(long) != 512 {
		t.Fatalf("the long path has %d bytes", len(long))
	}
	if w := serve(t, h, long); w.Code != http.StatusOK || w.Body.String() != "long" {
		t.Errorf("a path of 512 bytes: %d %q, want the file", w.Code, w.Body.String())
	}
	if w := serve(t, h, long+"c"); w.Code != http.StatusNotFound {
		t.Errorf("a path of 513 bytes: %d, want 404", w.Code)
	}
}

// TestContentAddressedNames: only a name whose base is 64 lowercase hex
// digits is taken for its content's hash (immutable, that hash as ETag);
// any other name of that length is revalidated and tagged with the hash of
// what it holds.
func TestContentAddressedNames(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hexName := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		name      string
		addressed bool
	}{
		{hexName + ".zip", true},
		{strings.Repeat("f", 64) + ".zip", true},
		{strings.Repeat("9", 64), true},
		{strings.Repeat("g", 64) + ".zip", false},
		{strings.ToUpper(hexName) + ".zip", false},
		{hexName[:63] + ".zip", false},
		{hexName + "0.zip", false},
	}
	for _, tt := range tests {
		must(t, os.WriteFile(filepath.Join(dir, tt.name), []byte("content of "+tt.name), 0o644))
	}
	h, err := cdn.NewHandler(dir, time.Hour, slog.New(slog.DiscardHandler))
	must(t, err)
	t.Cleanup(func() { h.Close() })
	for _, tt := range tests {
		w := serve(t, h, "/"+tt.name)
		sum := sha256.Sum256([]byte("content of " + tt.name))
		etag, cache := `"`+hex.EncodeToString(sum[:])+`"`, "no-cache"
		if tt.addressed {
			etag, cache = `"`+strings.TrimSuffix(tt.name, ".zip")+`"`, "public, max-age=3600, immutable"
		}
		if w.Code != http.StatusOK || w.Header().Get("ETag") != etag || w.Header().Get("Cache-Control") != cache {
			t.Errorf("%s: %d, ETag %s, Cache-Control %q; want ETag %s, %q", tt.name, w.Code, w.Header().Get("ETag"),
				w.Header().Get("Cache-Control"), etag, cache)
		}
	}
}

// records keeps what was logged.
type records struct {
	mu   sync.Mutex
	msgs []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs
	r.msgs = nil
	return m
}

// TestRefusalsTellTheOperator: a request for a link out of the root gets
// the same 404 as a missing file, and the operator a warning saying why;
// a missing file or a directory, what scanners ask for all day, logs
// nothing.
func TestRefusalsTellTheOperator(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	dir := filepath.Join(base, "root")
	must(t, os.MkdirAll(filepath.Join(dir, "exports"), 0o755))
	must(t, os.WriteFile(filepath.Join(base, "secret.txt"), []byte("SECRET"), 0o600))
	must(t, os.Symlink(filepath.Join(base, "secret.txt"), filepath.Join(dir, "escape.txt")))
	log := &records{}
	h, err := cdn.NewHandler(dir, time.Hour, slog.New(log))
	must(t, err)
	t.Cleanup(func() { h.Close() })
	for _, tt := range []struct {
		target string
		warned bool
	}{
		{"/missing.txt", false},
		{"/exports", false},
		{"/escape.txt", true},
	} {
		w := serve(t, h, tt.target)
		got := log.take()
		if w.Code != http.StatusNotFound || w.Body.String() != "not found\n" {
			t.Errorf("%s: %d %q, want 404", tt.target, w.Code, w.Body.String())
		}
		if warned := len(got) == 1 && strings.HasPrefix(got[0], "WARN cdn: refused"); warned != tt.warned || !tt.warned && len(got) > 0 {
			t.Errorf("%s: logged %q; want a warning: %v", tt.target, got, tt.warned)
		}
	}
}

// TestServerBoundsEveryWait: no phase of a connection may last forever (a
// zero timeout is none), and a slow phone has minutes to fetch an export.
func TestServerBoundsEveryWait(t *testing.T) {
	t.Parallel()
	s, err := cdn.New(cdn.Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), MaxAge: time.Hour}, slog.New(slog.DiscardHandler))
	must(t, err)
	t.Cleanup(func() { s.Close() })
	tm := cdn.Timeouts(s)
	for name, d := range map[string]time.Duration{"read header": tm.ReadHeader, "read": tm.Read, "write": tm.Write, "idle": tm.Idle} {
		if d <= 0 {
			t.Errorf("%s timeout %s: unbounded", name, d)
		}
	}
	if tm.ReadHeader > tm.Read {
		t.Errorf("read header timeout %s past the read timeout %s", tm.ReadHeader, tm.Read)
	}
	if tm.Write < time.Minute {
		t.Errorf("write timeout %s: a slow phone cannot fetch a large export", tm.Write)
	}
}

// TestRunReportsItsListener: an address that cannot be listened on is an
// error from Run, not a server that never answers.
func TestRunReportsItsListener(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	s, err := cdn.New(cdn.Config{Addr: ln.Addr().String(), Dir: t.TempDir(), MaxAge: time.Hour}, slog.New(slog.DiscardHandler))
	must(t, err)
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), "cdn:") {
		t.Errorf("Run on an address in use: %v", err)
	}
}

// TestShutdownLetsADownloadFinish: when the origin stops, a phone halfway
// through an export gets the rest of it, and the stop is clean.
func TestShutdownLetsADownloadFinish(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big := bytes.Repeat([]byte("export "), 4<<20) // 28 MiB: more than the sockets buffer
	must(t, os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644))
	s, err := cdn.New(cdn.Config{Addr: "127.0.0.1:0", Dir: dir, MaxAge: time.Hour}, slog.New(slog.DiscardHandler))
	must(t, err)
	t.Cleanup(func() { s.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/big.bin")
	must(t, err)
	defer resp.Body.Close()
	first := make([]byte, 1<<10)
	_, err = io.ReadFull(resp.Body, first)
	must(t, err)
	cancel()
	time.Sleep(100 * time.Millisecond) // the shutdown has begun, the download not ended
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(first, rest...), big) {
		t.Errorf("download cut by the shutdown: %d of %d bytes (%v)", len(first)+len(rest), len(big), err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("shutdown with a download running: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the origin did not stop")
	}
}
