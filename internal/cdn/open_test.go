package cdn_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
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
