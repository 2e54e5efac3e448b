// Package cdn is the export's static origin (`vouch cdn`): it serves the
// directory the aggregator writes — index.txt and content-addressed
// exports/<sha256>.zip — to a CDN or to phones directly. Files named by
// their content are immutable and cached for a long time; everything else
// (the index) must be revalidated. It serves only regular files below the
// root, with GET and HEAD, and never lists a directory.
package cdn

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

// logTiles is where the transparency log's tiles and entry bundles are
// (internal/transparency writes the log into the export directory's log/).
const logTiles = "log/tile/"

// Config is the origin's configuration.
type Config struct {
	Addr string `env:"VOUCH_CDN_ADDR, default=127.0.0.1:8082"`
	// Dir is the export directory the aggregator writes (VOUCH_CDN_DIR).
	Dir string `env:"VOUCH_CDN_DIR"`
	// MaxAge is how long caches keep a content-addressed file; such a file
	// never changes, so a year is right.
	MaxAge time.Duration `env:"VOUCH_CDN_MAX_AGE, default=8760h"`
}

// Validate says what is wrong with c, before anything listens.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("cdn: no export directory (VOUCH_CDN_DIR)")
	}
	if c.MaxAge <= 0 {
		return fmt.Errorf("cdn: VOUCH_CDN_MAX_AGE must be positive, not %s", c.MaxAge)
	}
	if c.Addr == "" {
		return errors.New("cdn: no listen address (VOUCH_CDN_ADDR)")
	}
	return nil
}

// Handler serves the files below one root directory.
type Handler struct {
	// Files are opened through beneath (openat2(2)) where the kernel has
	// it, else through root; one of the two is nil.
	beneath *beneath
	root    *os.Root
	hv      values // header values
	log     *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// NewHandler opens dir as the root. The root is held open: files are
// opened relative to it, so neither ".." nor a symbolic link can leave it.
func NewHandler(dir string, maxAge time.Duration, log *slog.Logger) (*Handler, error) {
	return newHandler(dir, maxAge, log, true)
}

// newHandler is NewHandler; tryBeneath false opens files through an
// os.Root even where openat2(2) works, for tests of that path.
func newHandler(dir string, maxAge time.Duration, log *slog.Logger, tryBeneath bool) (*Handler, error) {
	h := &Handler{
		hv:  newValues(maxAge),
		log: log,
	}
	var b *beneath
	var ok bool
	var err error
	if tryBeneath {
		b, ok, err = openBeneath(dir)
	}
	switch {
	case err != nil:
		return nil, err
	case ok:
		h.beneath = b
	default:
		if h.root, err = os.OpenRoot(dir); err != nil {
			return nil, fmt.Errorf("cdn: %w", err)
		}
	}
	return h, nil
}

// Close closes the root.
func (h *Handler) Close() error {
	if h.beneath != nil {
		return h.beneath.close()
	}
	return h.root.Close()
}

// open opens name below the root.
func (h *Handler) open(name string) (*file, error) {
	if h.beneath != nil {
		return h.beneath.open(name)
	}
	f, err := h.root.Open(name)
	if err != nil {
		return nil, err
	}
	return osFile(name, f)
}

// ServeHTTP serves one file. ETag, If-None-Match, If-Modified-Since and
// Range are http.ServeContent's, given the ETag set here.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name, ok := cleanName(r)
	if !ok {
		// Not a name the origin could serve: the same answer as a missing
		// file, so that no path tells more than another.
		h.notFound(w, name, nil)
		return
	}
	f, err := h.open(name)
	if err != nil {
		h.notFound(w, name, err)
		return
	}
	defer f.Close()
	if !f.regular {
		// Directories are never listed; devices and the like never served.
		h.notFound(w, name, nil)
		return
	}
	if r.Header["Range"] != nil {
		// A multipart answer reads the file on a goroutine of its own:
		// the *os.File must exist before, not be made there.
		if _, err := f.file(); err != nil {
			h.log.Error("cdn: open", "file", name, "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
	}
	// The header values are shared by every response (no allocation);
	// net/http only reads them, and Set and Del replace or drop a slice,
	// never write into it.
	hd := w.Header()
	hd["Content-Type"] = h.hv.contentType(name)
	hd["X-Content-Type-Options"] = h.hv.nosniff
	if sum, ok := contentAddress(name); ok {
		hd["Etag"] = []string{`"` + sum + `"`}
		hd["Cache-Control"] = h.hv.immutable
	} else {
		// The index and the log's checkpoint change in place: their ETag
		// is their content's hash, and caches must ask again before using
		// them. The log's tiles (C2SP tlog-tiles, partial ones included)
		// never change once written: hashed the same, cached for good.
		hs := sha256.New()
		if _, err := io.Copy(hs, f); err != nil {
			h.log.Error("cdn: read", "file", name, "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			h.log.Error("cdn: seek", "file", name, "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		hd["Etag"] = []string{`"` + hex.EncodeToString(hs.Sum(nil)) + `"`}
		hd["Cache-Control"] = h.hv.noCache
		if strings.HasPrefix(name, logTiles) {
			hd["Cache-Control"] = h.hv.immutable
		}
	}
	http.ServeContent(bodyWriter{w, f}, r, "", f.modTime, f)
}

func (h *Handler) notFound(w http.ResponseWriter, name string, err error) {
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		// A symbolic link out of the root, a permission: the requester
		// learns only that there is nothing; the operator learns why.
		h.log.Warn("cdn: refused", "file", name, "err", err)
	}
	http.Error(w, "not found", http.StatusNotFound)
}

// cleanName is the file a request names, relative to the root, when the
// path is plain: no percent-encoding (no file here needs it, and decoding
// is where traversal hides), segments of letters, digits, '.', '_' and
// '-' only, none empty, none starting with a dot ("..", hidden and
// temporary files).
func cleanName(r *http.Request) (string, bool) {
	p := r.URL.Path
	if r.URL.RawPath != "" || len(p) < 2 || p[0] != '/' || len(p) > 512 {
		return "", false
	}
	if ep := r.URL.EscapedPath(); ep != p {
		return "", false
	}
	name := p[1:]
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg[0] == '.' {
			return "", false
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
				return "", false
			}
		}
	}
	return name, true
}

// contentAddress is the SHA-256 in a file's name (exports/<hex>.zip).
func contentAddress(name string) (string, bool) {
	base, _, _ := strings.Cut(path.Base(name), ".")
	if len(base) != 2*sha256.Size {
		return "", false
	}
	for i := 0; i < len(base); i++ {
		c := base[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", false
		}
	}
	return base, true
}

// values are header values every response shares, so that none is
// allocated per request; each has capacity one, so that an append
// (Header.Add) copies rather than writes into it.
type values struct {
	immutable, noCache, nosniff []string // Cache-Control, X-Content-Type-Options
	zip, text, json, csv, octet []string // Content-Type
}

func newValues(maxAge time.Duration) values {
	return values{
		immutable: []string{"public, max-age=" + strconv.FormatInt(int64(maxAge/time.Second), 10) + ", immutable"},
		noCache:   []string{"no-cache"},
		nosniff:   []string{"nosniff"},
		zip:       []string{"application/zip"},
		text:      []string{"text/plain; charset=utf-8"},
		json:      []string{"application/json"},
		csv:       []string{"text/csv; charset=utf-8"},
		octet:     []string{"application/octet-stream"},
	}
}

func (v *values) contentType(name string) []string {
	switch path.Ext(name) {
	case ".zip":
		return v.zip
	case ".txt":
		return v.text
	case ".json": // the public statistics (vouch stats)
		return v.json
	case ".csv":
		return v.csv
	}
	if name == "log/checkpoint" { // a signed note: text (C2SP tlog-tiles)
		return v.text
	}
	return v.octet
}

// Server is the origin: the handler behind an HTTP server with timeouts.
type Server struct {
	cfg Config
	h   *Handler
	srv *http.Server
	log *slog.Logger
}

// New checks cfg and opens the export directory.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h, err := NewHandler(cfg.Dir, cfg.MaxAge, log)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, h: h, log: log, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      5 * time.Minute, // a large export to a slow phone
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}, nil
}

// Handler is the server's handler, for tests and for mounting elsewhere.
func (s *Server) Handler() http.Handler { return s.h }

// Run listens on cfg.Addr and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("cdn: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.log.Info("cdn: serving", "addr", ln.Addr().String(), "dir", s.cfg.Dir)
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("cdn: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("cdn: shutdown: %w", err)
	}
	return nil
}

// Close closes the export directory.
func (s *Server) Close() error { return s.h.Close() }
