// Package protocol defines the signed messages between the card, the back
// office and the phone — the login signature, the authorization statement,
// the license attestation and the bundle the phone picks up — with their
// canonical encoding, and the one function that verifies a bundle and says
// why it refuses one. docs/protocol.md is its specification and
// testdata/bundle holds vectors that a second implementation can check.
//
// The encoding is deliberately small: a message is its label (which names
// type and version and separates domains), then its fields in a fixed order,
// each either a fixed-size big-endian integer or a uint32 length-prefixed
// byte string. There are no optional fields, no maps and no alternatives, so
// every message has exactly one encoding and the decoder is strict.
package protocol

import (
	"encoding/binary"
	"errors"
	"strings"
	"time"
)

// Decoding failures, mapped to reasons by the verifier.
var (
	errTruncated      = errors.New("protocol: input ends inside a field")
	errMalformed      = errors.New("protocol: not a Vouch message")
	errTrailing       = errors.New("protocol: bytes after the last field")
	errFieldTooLarge  = errors.New("protocol: field larger than allowed")
	errUnknownVersion = errors.New("protocol: unknown message version")
	errWrongType      = errors.New("protocol: message of another type")
	errNotASCII       = errors.New("protocol: string is not printable ASCII")
	errTimeRange      = errors.New("protocol: time outside the years 2000 to 2099")
)

// Times are Unix seconds within [minTime, maxTime): every time Vouch signs
// lies there, and a bound keeps arithmetic on them from overflowing and
// their printed years from being nonsense.
const (
	minTime = 946684800  // 2000-01-01T00:00:00Z
	maxTime = 4102444800 // 2100-01-01T00:00:00Z
)

// labelPrefix starts every label; a message that does not start with it is
// not ours at all.
const labelPrefix = "vouch/"

// maxLabel bounds a label's length.
const maxLabel = 64

type encoder struct{ b []byte }

func newEncoder(label string) *encoder {
	e := &encoder{b: make([]byte, 0, 256)}
	e.bytes([]byte(label))
	return e
}

func (e *encoder) bytes(v []byte) {
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(len(v)))
	e.b = append(e.b, v...)
}

func (e *encoder) str(v string) { e.bytes([]byte(v)) }
func (e *encoder) i64(v int64)  { e.b = binary.BigEndian.AppendUint64(e.b, uint64(v)) }
func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }

type decoder struct {
	b   []byte
	err error
}

// newDecoder checks the label: its kind ("statement") must match, and its
// version must be one this package reads.
func newDecoder(b []byte, label string) *decoder {
	d := &decoder{b: b}
	if len(b) < 4 {
		// Truncated only if these bytes could begin our label's length.
		var want [4]byte
		binary.BigEndian.PutUint32(want[:], uint32(len(label)))
		d.err = errMalformed
		if len(b) > 0 && string(want[:len(b)]) == string(b) {
			d.err = errTruncated
		}
		return d
	}
	n := binary.BigEndian.Uint32(b)
	if n < uint32(len(labelPrefix)) || n > maxLabel {
		d.err = errMalformed
		return d
	}
	if uint32(len(b)-4) < n {
		// A prefix of our label is still a truncated message of ours.
		if strings.HasPrefix(labelPrefix, string(b[4:min(len(b), 4+len(labelPrefix))])) || strings.HasPrefix(string(b[4:]), labelPrefix) {
			d.err = errTruncated
		} else {
			d.err = errMalformed
		}
		return d
	}
	got := string(b[4 : 4+n])
	d.b = b[4+n:]
	if got == label {
		return d
	}
	// A label of ours has the form vouch/<type>/v<version>; anything else
	// is not a message of ours at all. A label of that form names another
	// type or another version of ours.
	kind, ok := labelKind(got)
	switch {
	case !ok:
		d.err = errMalformed
	case strings.HasPrefix(label, kind):
		d.err = errUnknownVersion
	default:
		d.err = errWrongType
	}
	return d
}

// labelKind checks the v1 label grammar (docs/protocol.md §2) and returns
// the label up to its version, "vouch/<type>/". The type is one or more
// lowercase ASCII letters, digits and hyphens; the version decimal digits
// without a leading zero, not 0. One grammar, so that a verifier in any
// language gives an odd label the same reason: "vouch/Bundle/v1" and
// "vouch/bundle/v01" are not labels of ours (malformed), not another type
// or version.
func labelKind(s string) (string, bool) {
	rest, ok := strings.CutPrefix(s, labelPrefix)
	if !ok {
		return "", false
	}
	typ, version, ok := strings.Cut(rest, "/v")
	if !ok || typ == "" || version == "" || version[0] == '0' {
		return "", false
	}
	for _, c := range []byte(typ) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return "", false
		}
	}
	for _, c := range []byte(version) {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return labelPrefix + typ + "/", true
}

func (d *decoder) bytes(max int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < 4 {
		d.err = errTruncated
		return nil
	}
	n := binary.BigEndian.Uint32(d.b)
	if n > uint32(max) {
		d.err = errFieldTooLarge
		return nil
	}
	if uint32(len(d.b)-4) < n {
		d.err = errTruncated
		return nil
	}
	v := d.b[4 : 4+n]
	d.b = d.b[4+n:]
	return v
}

// fixed reads a byte string that must have exactly n bytes.
func (d *decoder) fixed(n int) []byte {
	v := d.bytes(n)
	if d.err == nil && len(v) != n {
		d.err = errMalformed
	}
	return v
}

// str reads a v1 string: printable ASCII only (0x20 to 0x7e), so that no
// control character, no homoglyph and no invalid UTF-8 ever reaches a log, a
// screen or a comparison.
func (d *decoder) str(max int) string {
	b := d.bytes(max)
	for _, c := range b {
		if (c < 0x20 || c > 0x7e) && d.err == nil {
			d.err = errNotASCII
		}
	}
	return string(b)
}

// time reads an int64 Unix time and checks its range.
func (d *decoder) time() time.Time {
	v := d.i64()
	if d.err == nil && (v < minTime || v >= maxTime) {
		d.err = errTimeRange
	}
	return time.Unix(v, 0).UTC()
}

func (d *decoder) i64() int64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.err = errTruncated
		return 0
	}
	v := int64(binary.BigEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

func (d *decoder) u8() uint8 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.err = errTruncated
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// finish reports the first error, or trailing bytes.
func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errTrailing
	}
	return d.err
}
