package cardagent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// The browser talks to a native messaging host over its standard input and
// output: each message is a 32-bit length in the machine's byte order
// (little-endian on every platform Vouch runs on) and that many bytes of
// UTF-8 JSON.

// MaxRequest bounds a message from the browser. A statement is under 200
// bytes and a challenge 32; the browser allows 4 GiB, which a hostile page
// would happily try.
const MaxRequest = 16 << 10

// MaxResponse is the browser's limit on a message to it (1 MiB).
const MaxResponse = 1 << 20

// ErrTooLarge is a message over the limit; the stream cannot be trusted
// after it and the host stops.
var ErrTooLarge = errors.New("cardagent: message too large")

// ReadMessage reads one framed message. io.EOF means the browser closed
// the channel between messages (the extension went away): a clean end.
func ReadMessage(r io.Reader) ([]byte, error) {
	var n uint32
	if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("cardagent: truncated length: %w", err)
		}
		return nil, err
	}
	if n > MaxRequest {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("cardagent: truncated message: %w", err)
	}
	return b, nil
}

// WriteMessage writes v as one framed JSON message, in one Write so that
// concurrent writers (replies and reader events) never interleave when the
// caller serialises calls.
func WriteMessage(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > MaxResponse {
		return fmt.Errorf("%w: reply of %d bytes", ErrTooLarge, len(b))
	}
	msg := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+len(b)), uint32(len(b)))
	_, err = w.Write(append(msg, b...))
	return err
}
