package virtualcard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// The virtual reader (vsmartcard's vpcd, a pcscd driver) listens on TCP and
// a card connects to it: connecting inserts the card, closing the
// connection pulls it out. Each message is a 2-byte big-endian length and
// its payload; a 1-byte payload from the reader is a control (power off,
// power on, reset, "send your ATR"), anything longer a command APDU,
// answered with a response APDU.
const (
	ctrlPowerOff = 0
	ctrlPowerOn  = 1
	ctrlReset    = 2
	ctrlATR      = 4
)

// Inserted is a card in a reader.
type Inserted struct {
	conn net.Conn
	done chan struct{}
	once sync.Once
	err  error
}

// Insert puts the card into the virtual reader at addr (vpcd's first
// reader is 127.0.0.1:35963, its second :35964) and serves it until it is
// removed, the reader goes away or ctx ends.
func (c *Card) Insert(ctx context.Context, addr string) (*Inserted, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("virtualcard: insert into the reader at %s (is pcscd with vpcd running?): %w", addr, err)
	}
	in := &Inserted{conn: conn, done: make(chan struct{})}
	stop := context.AfterFunc(ctx, func() { in.Remove() })
	go func() {
		defer stop()
		err := c.serve(conn)
		in.once.Do(func() {
			in.err = err
			conn.Close()
		})
		close(in.done)
	}()
	return in, nil
}

// Remove pulls the card out of the reader and waits until it is out.
func (in *Inserted) Remove() {
	in.Pull()
	<-in.done
}

// Pull pulls the card out without waiting: the one to call from the card's
// own hooks (SetBeforeSign), which run while the card serves a command and
// so before it can be out.
func (in *Inserted) Pull() {
	in.once.Do(func() { in.conn.Close() })
}

// Done is closed once the card is out, by Remove or because the reader
// went away.
func (in *Inserted) Done() <-chan struct{} { return in.done }

// Err says why the card left when it was not Remove: the reader's
// connection failed.
func (in *Inserted) Err() error {
	<-in.done
	return in.err
}

func (c *Card) serve(conn net.Conn) error {
	for {
		var n uint16
		if err := binary.Read(conn, binary.BigEndian, &n); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(conn, msg); err != nil {
			return err
		}
		var reply []byte
		switch {
		case n == 1 && (msg[0] == ctrlPowerOff || msg[0] == ctrlPowerOn || msg[0] == ctrlReset):
			c.powerOn()
			continue
		case n == 1 && msg[0] == ctrlATR:
			reply = ATR
		case n == 1:
			continue // a control this card does not know
		default:
			reply = c.Transmit(msg)
		}
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reply)), uint16(len(reply)))
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(append(out, reply...)); err != nil {
			return err
		}
	}
}
