package server_test

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/internal/server"
)

// oneConn is a listener that accepts c once.
type oneConn struct {
	net.Listener
	c net.Conn
}

func (l *oneConn) Accept() (net.Conn, error) { return l.c, nil }

// readerFromConn records that its ReadFrom was used, as a TCP connection's
// would be to send a file with sendfile(2).
type readerFromConn struct {
	net.Conn
	got bytes.Buffer
	n   int
}

func (c *readerFromConn) ReadFrom(r io.Reader) (int64, error) {
	c.n++
	return c.got.ReadFrom(r)
}

// TestLimitedConnKeepsReadFrom: a connection accepted through
// LimitListener still hands a response body to the connection's own
// ReadFrom (net/http uses it, and a TCP connection's is sendfile(2));
// one without a ReadFrom still gets the bytes.
func TestLimitedConnKeepsReadFrom(t *testing.T) {
	t.Parallel()
	inner := &readerFromConn{}
	c, err := server.LimitListener(&oneConn{c: inner}, 1).Accept()
	if err != nil {
		t.Fatal(err)
	}
	rf, ok := c.(io.ReaderFrom)
	if !ok {
		t.Fatalf("the accepted %T has no ReadFrom", c)
	}
	if n, err := rf.ReadFrom(strings.NewReader("a file's bytes")); n != 14 || err != nil || inner.n != 1 || inner.got.String() != "a file's bytes" {
		t.Errorf("ReadFrom: %d, %v; the connection's own called %d times with %q", n, err, inner.n, inner.got.String())
	}

	a, b := net.Pipe()
	defer b.Close()
	c, err = server.LimitListener(&oneConn{c: a}, 1).Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan string)
	go func() { got, _ := io.ReadAll(b); done <- string(got) }()
	if n, err := c.(io.ReaderFrom).ReadFrom(strings.NewReader("piped")); n != 5 || err != nil {
		t.Errorf("ReadFrom on a pipe: %d, %v", n, err)
	}
	c.Close()
	if got := <-done; got != "piped" {
		t.Errorf("the pipe got %q", got)
	}
}
