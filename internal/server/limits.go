package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// Limits bound what one public listener holds for its clients, so that
// many slow or large requests cannot take the process's memory: each
// connection reads at most MaxHeaderBytes of request head (past it the
// client gets 431), at most MaxConns connections are open at once (more
// wait in the kernel's queue until one closes), and at most MaxBodies
// requests read their bodies at once (more wait up to bodyWait, then get
// 503 with Retry-After). Zero fields take the listener's defaults.
type Limits struct {
	MaxHeaderBytes int `env:"MAX_HEADER_BYTES"`
	MaxConns       int `env:"MAX_CONNS"`
	MaxBodies      int `env:"MAX_BODIES"`
}

// BackofficeLimits fit the clinicians' browsers: their session and
// sign-in cookies, a few hundred workstations per instance.
var BackofficeLimits = Limits{MaxHeaderBytes: 16 << 10, MaxConns: 512, MaxBodies: 64}

// PhoneAPILimits fit the phones: a few small headers, many clients.
var PhoneAPILimits = Limits{MaxHeaderBytes: 8 << 10, MaxConns: 2048, MaxBodies: 256}

// bodyWait is how long a request waits for a body slot before 503.
const bodyWait = 5 * time.Second

// httpMaxHeaderBytes is http.Server's MaxHeaderBytes for a request head of
// at most l.MaxHeaderBytes: net/http reads 4 KiB more than its setting
// before it answers 431 itself, and each byte read is held per connection.
func (l Limits) httpMaxHeaderBytes() int {
	return max(l.MaxHeaderBytes-4096, 1024)
}

// Or fills l's zero fields from def.
func (l Limits) Or(def Limits) Limits {
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = def.MaxHeaderBytes
	}
	if l.MaxConns == 0 {
		l.MaxConns = def.MaxConns
	}
	if l.MaxBodies == 0 {
		l.MaxBodies = def.MaxBodies
	}
	return l
}

// Validate refuses limits that would leave a listener unusable or
// unbounded; prefix names the variables (VOUCH_HTTP_, VOUCH_INGEST_).
func (l Limits) Validate(prefix string) error {
	var errs []error
	if l.MaxHeaderBytes < 5<<10 || l.MaxHeaderBytes > 1<<20 {
		errs = append(errs, fmt.Errorf("%sMAX_HEADER_BYTES must be between 5120 and 1048576, got %d", prefix, l.MaxHeaderBytes))
	}
	if l.MaxConns < 1 {
		errs = append(errs, fmt.Errorf("%sMAX_CONNS must be at least 1, got %d", prefix, l.MaxConns))
	}
	if l.MaxBodies < 1 {
		errs = append(errs, fmt.Errorf("%sMAX_BODIES must be at least 1, got %d", prefix, l.MaxBodies))
	}
	return errors.Join(errs...)
}

// limitListener accepts at most cap(slots) connections at once: Accept
// waits for one to close, leaving the rest in the kernel's backlog, where
// they cost the process nothing.
type limitListener struct {
	net.Listener
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
}

// LimitListener accepts at most n connections of ln at once.
func LimitListener(ln net.Listener, n int) net.Listener { return newLimitListener(ln, n) }

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// ReadFrom is the connection's own (a TCP connection's sends a file with
// sendfile(2)): net/http hands a response body to it only when the
// connection has one, and the wrapper would otherwise hide it.
func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

var errBusy = &Error{Status: http.StatusServiceUnavailable, Code: "busy"}

// bodies lets at most n requests with a body be handled at once: each
// may hold its body (up to the body limit) in memory. A request waits
// *wait for its turn.
func bodies(n int, wait *time.Duration) echo.MiddlewareFunc {
	slots := make(chan struct{}, n)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
				return next(c)
			}
			t := time.NewTimer(*wait)
			defer t.Stop()
			select {
			case slots <- struct{}{}:
			case <-t.C:
				c.Response().Header().Set("Retry-After", strconv.Itoa(1))
				return errBusy
			case <-req.Context().Done():
				return errBusy // the client left; nothing to log
			}
			defer func() { <-slots }()
			return next(c)
		}
	}
}
