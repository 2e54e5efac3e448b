//go:build linux

package cdn

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// beneath opens files below a directory with one openat2(2) each. The
// kernel's RESOLVE_BENEATH refuses whatever would leave the directory —
// "..", an absolute symbolic link, one pointing out, /proc's magic links —
// as os.Root does, but without os.Root's walk of two system calls per
// path component and the poller's three for each file it opens: that walk
// was a quarter of the origin's time answering a revalidation.
type beneath struct {
	dir *os.File
	rc  syscall.RawConn // holds dir's descriptor open while it is used
}

// openBeneath opens dir for openat2(2). ok is false when this kernel
// cannot (before Linux 5.6, or a sandbox that refuses the call); the
// caller then opens through an os.Root.
func openBeneath(dir string) (b *beneath, ok bool, err error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, false, fmt.Errorf("cdn: %w", err)
	}
	rc, err := d.SyscallConn()
	if err != nil {
		d.Close()
		return nil, false, fmt.Errorf("cdn: %w", err)
	}
	b = &beneath{dir: d, rc: rc}
	// "." fails with ENOTDIR where dir is not a directory.
	f, err := b.open(".")
	if err != nil {
		d.Close()
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("cdn: %w", err)
	}
	f.Close()
	return b, true, nil
}

// open opens name, relative to the directory, for reading, and fstats it.
func (b *beneath) open(name string) (*file, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	var fd int
	var oerr error
	cerr := b.rc.Control(func(dir uintptr) {
		// EAGAIN: a rename raced a ".." in a link's target and the kernel
		// could not be sure it stayed below; asking again is safe.
		for range 4 {
			if fd, oerr = unix.Openat2(int(dir), name, &how); oerr != unix.EINTR && oerr != unix.EAGAIN {
				break
			}
		}
	})
	if cerr != nil {
		return nil, &fs.PathError{Op: "openat2", Path: name, Err: cerr}
	}
	if oerr != nil {
		return nil, &fs.PathError{Op: "openat2", Path: name, Err: oerr}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "fstat", Path: name, Err: err}
	}
	return &file{name: name, fd: fd, size: st.Size, modTime: time.Unix(st.Mtim.Unix()),
		regular: st.Mode&unix.S_IFMT == unix.S_IFREG}, nil
}

// closeFD closes a descriptor openat2 gave.
func closeFD(fd int) error { return unix.Close(fd) }

func (b *beneath) close() error { return b.dir.Close() }
