package cdn_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/cdn"
)

// TestOpenersAgree: the origin opens files with openat2(2) on Linux and
// through an os.Root elsewhere; both serve the same files, refuse the same
// links (out of the root, even for a moment, or absolute) with the same
// 404, and warn the operator of the same refusals.
func TestOpenersAgree(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	dir := filepath.Join(base, "root")
	must(t, os.MkdirAll(filepath.Join(dir, "exports", "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(base, "secret.txt"), []byte("SECRET"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "index.txt"), []byte("the index"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "exports", "sub", "a.bin"), []byte("deep file"), 0o644))
	for link, to := range map[string]string{
		"escape.txt":        filepath.Join(base, "secret.txt"), // absolute, out
		"abs-inside.txt":    filepath.Join(dir, "index.txt"),   // absolute, in
		"exports/rel.txt":   "../../secret.txt",                // relative, out
		"exports/back.txt":  "../index.txt",                    // relative, in
		"exports/round.txt": "../../root/index.txt",            // out and back in
		"up":                base,                              // a directory out
		"in":                "exports/sub",                     // a directory in
		"inside.txt":        "index.txt",
		"loop.txt":          "loop.txt",
		"proc.txt":          "/proc/self/root" + filepath.Join(base, "secret.txt"),
	} {
		must(t, os.Symlink(to, filepath.Join(dir, link)))
	}
	type answer struct {
		Status int
		Body   string
		Warned bool
	}
	served := func(body string) answer { return answer{200, body, false} }
	missing := answer{404, "not found\n", false}
	refused := answer{404, "not found\n", true}
	want := map[string]answer{
		"/index.txt":           served("the index"),
		"/exports/sub/a.bin":   served("deep file"),
		"/inside.txt":          served("the index"),
		"/exports/back.txt":    served("the index"),
		"/in/a.bin":            served("deep file"),
		"/missing.txt":         missing,
		"/exports/missing.zip": missing,
		"/exports":             missing,
		"/in":                  missing,
		"/escape.txt":          refused,
		"/abs-inside.txt":      refused,
		"/exports/rel.txt":     refused,
		"/exports/round.txt":   refused,
		"/up/secret.txt":       refused,
		"/up/root/index.txt":   refused,
		"/loop.txt":            refused,
		"/proc.txt":            refused,
		"/index.txt/x":         refused, // not a directory: odd enough to tell
	}
	for _, opener := range []struct {
		name    string
		new     func(string, time.Duration, *slog.Logger) (*cdn.Handler, error)
		openat2 bool
	}{
		{"openat2", cdn.NewHandler, runtime.GOOS == "linux"},
		{"os.Root", cdn.NewHandlerOSRoot, false},
	} {
		t.Run(opener.name, func(t *testing.T) {
			t.Parallel()
			log := &records{}
			h, err := opener.new(dir, time.Hour, slog.New(log))
			must(t, err)
			t.Cleanup(func() { h.Close() })
			if cdn.UsesOpenat2(h) != opener.openat2 {
				t.Fatalf("opens with openat2: %v, want %v", cdn.UsesOpenat2(h), opener.openat2)
			}
			for target, want := range want {
				w := serve(t, h, target)
				msgs := log.take()
				got := answer{w.Code, w.Body.String(), len(msgs) == 1 && strings.HasPrefix(msgs[0], "WARN cdn: refused")}
				if got != want || len(msgs) > 1 || !got.Warned && len(msgs) > 0 {
					t.Errorf("GET %s: %+v (logged %q), want %+v", target, got, msgs, want)
				}
			}
		})
	}
}

// TestHandlerNeedsADirectory: the root is a directory that exists, whichever
// way files are opened.
func TestHandlerNeedsADirectory(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	must(t, os.WriteFile(file, []byte("x"), 0o644))
	for _, dir := range []string{file, filepath.Join(t.TempDir(), "none")} {
		for name, open := range map[string]func(string, time.Duration, *slog.Logger) (*cdn.Handler, error){
			"openat2": cdn.NewHandler, "os.Root": cdn.NewHandlerOSRoot,
		} {
			if h, err := open(dir, time.Hour, slog.New(slog.DiscardHandler)); err == nil {
				h.Close()
				t.Errorf("%s: a handler on %s", name, dir)
			}
		}
	}
}

// readerFromRecorder is a response that, as a TCP connection's does, takes
// a body by ReadFrom, and remembers what it was given.
type readerFromRecorder struct {
	*httptest.ResponseRecorder
	srcs []string
}

func (w *readerFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	desc := fmt.Sprintf("%T", src)
	if lr, ok := src.(*io.LimitedReader); ok {
		desc += fmt.Sprintf(" of %T", lr.R)
	}
	w.srcs = append(w.srcs, desc)
	return io.Copy(w.ResponseRecorder, src)
}

// TestBodyIsTheFile: a file's bytes reach the connection's ReadFrom as the
// *os.File itself (a TCP connection sends it with sendfile(2); anything
// else it copies through the process), whole or a range, by either opener.
func TestBodyIsTheFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	body := strings.Repeat("export bytes ", 1000)
	must(t, os.WriteFile(filepath.Join(dir, "a.bin"), []byte(body), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "index.txt"), []byte(body), 0o644))
	for name, open := range map[string]func(string, time.Duration, *slog.Logger) (*cdn.Handler, error){
		"openat2": cdn.NewHandler, "os.Root": cdn.NewHandlerOSRoot,
	} {
		h, err := open(dir, time.Hour, slog.New(slog.DiscardHandler))
		must(t, err)
		t.Cleanup(func() { h.Close() })
		for _, tt := range []struct {
			target, rng, want string
		}{
			{"/a.bin", "", body},
			{"/index.txt", "", body}, // read once for its ETag first
			{"/a.bin", "bytes=13-25", body[13:26]},
		} {
			w := &readerFromRecorder{ResponseRecorder: httptest.NewRecorder()}
			req := httptest.NewRequest(http.MethodGet, tt.target, nil)
			if tt.rng != "" {
				req.Header.Set("Range", tt.rng)
			}
			h.ServeHTTP(w, req)
			if w.Body.String() != tt.want {
				t.Errorf("%s: GET %s %s: %d, %d bytes, want %d", name, tt.target, tt.rng, w.Code, w.Body.Len(), len(tt.want))
			}
			if want := []string{"*io.LimitedReader of *os.File"}; !slices.Equal(w.srcs, want) {
				t.Errorf("%s: GET %s %s: the body went as %q, want %q", name, tt.target, tt.rng, w.srcs, want)
			}
		}
	}
}
