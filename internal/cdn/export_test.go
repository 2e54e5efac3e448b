package cdn

import "time"

// ServerTimeouts are the waits a Server bounds, for tests.
type ServerTimeouts struct{ ReadHeader, Read, Write, Idle time.Duration }

// Timeouts returns s's.
func Timeouts(s *Server) ServerTimeouts {
	return ServerTimeouts{s.srv.ReadHeaderTimeout, s.srv.ReadTimeout, s.srv.WriteTimeout, s.srv.IdleTimeout}
}
