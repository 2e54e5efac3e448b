package ingest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// accessLogKeep is how long an access log file is kept: nothing in it may
// be 48 hours old.
const accessLogKeep = 48 * time.Hour

// AccessLog writes one line per request — the client's IP and user agent,
// never a path, a query, a header else or a body — to a file per UTC hour,
// access-YYYYMMDDHH.log in its directory, and deletes each file once its
// hour began 48 hours ago.
type AccessLog struct {
	dir string
	now func() time.Time

	mu   sync.Mutex
	f    *os.File
	hour time.Time // of f
}

// NewAccessLog writes to dir, creating it (0700: IP addresses are personal
// data). now is the clock; nil is time.Now.
func NewAccessLog(dir string, now func() time.Time) (*AccessLog, error) {
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ingest: access log: %w", err)
	}
	return &AccessLog{dir: dir, now: now}, nil
}

const accessLogLayout = "2006010215"

// AccessLogName is the file of the hour t falls in.
func AccessLogName(t time.Time) string {
	return "access-" + t.UTC().Format(accessLogLayout) + ".log"
}

type accessLine struct {
	IP        string `json:"ip"`
	UserAgent string `json:"user_agent"`
}

// Log appends one request's line, rotating to a new file when the hour
// changed.
func (l *AccessLog) Log(ip, userAgent string) error {
	line, err := json.Marshal(accessLine{IP: ip, UserAgent: userAgent})
	if err != nil {
		return err
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	hour := l.now().UTC().Truncate(time.Hour)
	if l.f == nil || !hour.Equal(l.hour) {
		if err := l.rotate(hour); err != nil {
			return err
		}
	}
	if _, err := l.f.Write(line); err != nil {
		return fmt.Errorf("ingest: access log: %w", err)
	}
	return nil
}

func (l *AccessLog) rotate(hour time.Time) error {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	f, err := os.OpenFile(filepath.Join(l.dir, AccessLogName(hour)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("ingest: access log: %w", err)
	}
	l.f, l.hour = f, hour
	l.pruneLocked(hour)
	return nil
}

// Prune deletes the files whose hour began 48 hours ago or more. Log
// prunes at every rotation; Run calls it too, so a quiet server deletes
// them on time.
func (l *AccessLog) Prune() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pruneLocked(l.now())
}

func (l *AccessLog) pruneLocked(now time.Time) error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("ingest: access log: %w", err)
	}
	var firstErr error
	for _, e := range entries {
		name := e.Name()
		stamp, ok := strings.CutPrefix(name, "access-")
		if !ok {
			continue
		}
		if stamp, ok = strings.CutSuffix(stamp, ".log"); !ok {
			continue
		}
		hour, err := time.Parse(accessLogLayout, stamp)
		if err != nil {
			continue
		}
		if now.Sub(hour) < accessLogKeep {
			continue
		}
		if l.f != nil && hour.Equal(l.hour) {
			l.f.Close()
			l.f = nil
		}
		if err := os.Remove(filepath.Join(l.dir, name)); err != nil && !os.IsNotExist(err) && firstErr == nil {
			firstErr = fmt.Errorf("ingest: access log: %w", err)
		}
	}
	return firstErr
}

// Close closes the current file.
func (l *AccessLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// middleware logs every request after it was answered.
func (l *AccessLog) middleware(onErr func(error)) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			err := next(c)
			if lerr := l.Log(c.RealIP(), c.Request().UserAgent()); lerr != nil {
				onErr(lerr)
			}
			return err
		}
	}
}
