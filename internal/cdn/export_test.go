package cdn

import (
	"log/slog"
	"time"
)

// ServerTimeouts are the waits a Server bounds, for tests.
type ServerTimeouts struct{ ReadHeader, Read, Write, Idle time.Duration }

// Timeouts returns s's.
func Timeouts(s *Server) ServerTimeouts {
	return ServerTimeouts{s.srv.ReadHeaderTimeout, s.srv.ReadTimeout, s.srv.WriteTimeout, s.srv.IdleTimeout}
}

// NewHandlerOSRoot is NewHandler opening files through an os.Root, as it
// does where openat2(2) is missing.
func NewHandlerOSRoot(dir string, maxAge time.Duration, log *slog.Logger) (*Handler, error) {
	return newHandler(dir, maxAge, log, false)
}

// UsesOpenat2 says whether h opens files with openat2(2).
func UsesOpenat2(h *Handler) bool { return h.beneath != nil }

// ContentType is the Content-Type the origin sends for name.
func ContentType(name string) string {
	v := newValues(time.Hour)
	return v.contentType(name)[0]
}
