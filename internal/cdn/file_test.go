//go:build linux

package cdn

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFileIsLazy: a file opened by openat2 answers ServeContent's seeks
// for its size without becoming an *os.File, becomes one where reading
// starts when read, and closes its descriptor either way.
func TestFileIsLazy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "f.bin"), []byte("0123456789"), 0o644))
	h, err := NewHandler(dir, time.Hour, slog.New(slog.DiscardHandler))
	must(err)
	t.Cleanup(func() { h.Close() })
	if h.beneath == nil {
		t.Fatal("openat2 unused on Linux")
	}
	open := func() *file {
		t.Helper()
		f, err := h.open("f.bin")
		must(err)
		if f.f != nil || f.size != 10 || !f.regular {
			t.Fatalf("opened: %+v", f)
		}
		return f
	}
	closed := func(f *file, fd int) {
		t.Helper()
		must(f.Close())
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("descriptor %d still open after Close: %v", fd, err)
		}
	}

	// ServeContent's size: no *os.File.
	f := open()
	fd := f.fd
	for _, s := range []struct {
		off    int64
		whence int
		want   int64
	}{{0, io.SeekEnd, 10}, {0, io.SeekStart, 0}, {4, io.SeekStart, 4}, {3, io.SeekCurrent, 7}, {-2, io.SeekEnd, 8}} {
		if got, err := f.Seek(s.off, s.whence); got != s.want || err != nil {
			t.Errorf("Seek(%d, %d): %d, %v; want %d", s.off, s.whence, got, err, s.want)
		}
	}
	if _, err := f.Seek(-11, io.SeekEnd); err == nil {
		t.Error("Seek before the start: no error")
	}
	if _, err := f.Seek(0, 7); err == nil {
		t.Error("Seek with a bad whence: no error")
	}
	if f.f != nil {
		t.Fatal("seeking made an *os.File")
	}
	closed(f, fd)

	// Read where the seeks left off.
	f = open()
	fd = f.fd
	if _, err := f.Seek(6, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if string(b) != "6789" || err != nil || f.f == nil {
		t.Errorf("read after Seek(6): %q, %v", b, err)
	}
	if got, err := f.Seek(-3, io.SeekCurrent); got != 7 || err != nil {
		t.Errorf("Seek on the *os.File: %d, %v", got, err)
	}
	closed(f, fd)
}
