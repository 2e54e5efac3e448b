package cdn

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// file is an open file below the root as http.ServeContent reads it,
// with what fstat(2) said of it. Opened by openat2(2) it starts as a bare
// descriptor and becomes an *os.File only when its bytes are read: a
// revalidation (304) or a HEAD never reads them, and os.NewFile costs an
// fcntl(2), a finalizer and a few allocations that were a tenth of such a
// request's time.
type file struct {
	name    string
	fd      int      // the descriptor, while f is nil (f owns it after)
	f       *os.File // nil until the bytes are read
	off     int64    // where reading starts, until f exists
	size    int64
	modTime time.Time
	regular bool
}

// osFile is f, opened through an os.Root.
func osFile(name string, f *os.File) (*file, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &file{name: name, f: f, size: fi.Size(), modTime: fi.ModTime(), regular: fi.Mode().IsRegular()}, nil
}

// file is the *os.File, made from the descriptor the first time.
func (f *file) file() (*os.File, error) {
	if f.f == nil {
		f.f = os.NewFile(uintptr(f.fd), f.name)
		if f.off != 0 {
			if _, err := f.f.Seek(f.off, io.SeekStart); err != nil {
				return nil, err
			}
		}
	}
	return f.f, nil
}

func (f *file) Read(p []byte) (int, error) {
	of, err := f.file()
	if err != nil {
		return 0, err
	}
	return of.Read(p)
}

// Seek moves where reading starts; before the bytes are read it only
// counts, the size being fstat's.
func (f *file) Seek(offset int64, whence int) (int64, error) {
	if f.f != nil {
		return f.f.Seek(offset, whence)
	}
	off := offset
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += f.off
	case io.SeekEnd:
		off += f.size
	default:
		return 0, errors.New("cdn: seek: bad whence")
	}
	if off < 0 {
		return 0, errors.New("cdn: seek: negative position")
	}
	f.off = off
	return off, nil
}

func (f *file) Close() error {
	if f.f != nil {
		return f.f.Close()
	}
	return closeFD(f.fd)
}

// bodyWriter is the response as ServeContent sees it: when ServeContent
// copies the file's bytes to it, the connection is given the *os.File
// itself, which a TCP connection sends with sendfile(2); any other reader
// (a multipart body) is copied as before.
type bodyWriter struct {
	http.ResponseWriter
	f *file
}

func (w bodyWriter) ReadFrom(src io.Reader) (int64, error) {
	if lr, ok := src.(*io.LimitedReader); ok && lr.R == w.f {
		of, err := w.f.file()
		if err != nil {
			return 0, err
		}
		src = &io.LimitedReader{R: of, N: lr.N}
	} else if src == w.f {
		of, err := w.f.file()
		if err != nil {
			return 0, err
		}
		src = of
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{w.ResponseWriter}, src)
}

// Unwrap is the response, for http.ResponseController.
func (w bodyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writerOnly hides a ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }
