package exposure

import (
	"encoding/binary"
	"errors"
	"time"
)

// Names on the bus shared by ingest (the writer) and the readers.
const (
	// Stream holds uploads until the readers stored them; Subject is where
	// ingest publishes them. The message id is the authorization id in hex,
	// so a retried publish is dropped by the bus.
	Stream  = "VOUCH_KEYS"
	Subject = "vouch.keys"
	// UsedBucket marks the authorizations that were uploaded with
	// (compare-and-set), keyed by authorization id in hex.
	UsedBucket = "vouch-used"
)

// Record is one accepted upload as it travels from ingest to the readers:
// what the store needs and nothing more — no phone key, no clinician, no
// exact time.
type Record struct {
	AuthorizationID [16]byte
	Received        time.Time // Coarse
	SymptomOnset    string    // "" or "YYYY-MM-DD", from the statement
	Keys            []Key
}

// recordLabel starts every encoded record; its version changes with the
// layout.
const recordLabel = "vouch/keys/v1"

// ErrRecord is any record that is not one this package encoded.
var ErrRecord = errors.New("exposure: not a valid key record")

// Marshal encodes r: the label, the authorization id, the received hour as
// Unix seconds, the onset (one length byte, then ASCII), the key count
// (one byte) and the keys.
func (r *Record) Marshal() []byte {
	var b []byte
	b = append(b, recordLabel...)
	b = append(b, r.AuthorizationID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Received.Unix()))
	b = append(b, byte(len(r.SymptomOnset)))
	b = append(b, r.SymptomOnset...)
	b = append(b, byte(len(r.Keys)))
	for _, k := range r.Keys {
		b = append(b, k.Data[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(k.RollingStart))
		b = binary.BigEndian.AppendUint32(b, uint32(k.RollingPeriod))
		b = append(b, byte(k.TransmissionRisk))
	}
	return b
}

// cursor reads fields off the front of an encoded record; the first read
// past its end spoils it.
type cursor struct {
	b  []byte
	ok bool
}

func (c *cursor) take(n int) []byte {
	if !c.ok || len(c.b) < n {
		c.ok = false
		return nil
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) byte() int {
	if v := c.take(1); v != nil {
		return int(v[0])
	}
	return 0
}

func (c *cursor) u32() uint32 {
	if v := c.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

// maxOnset is the length of "YYYY-MM-DD".
const maxOnset = len(time.DateOnly)

// UnmarshalRecord decodes what Marshal encoded, strictly: a reader must not
// store half of a message it does not understand.
func UnmarshalRecord(b []byte) (*Record, error) {
	c := &cursor{b: b, ok: true}
	if string(c.take(len(recordLabel))) != recordLabel {
		return nil, ErrRecord
	}
	r := &Record{}
	copy(r.AuthorizationID[:], c.take(16))
	if v := c.take(8); v != nil {
		r.Received = time.Unix(int64(binary.BigEndian.Uint64(v)), 0).UTC()
	}
	n := c.byte()
	if n > maxOnset {
		return nil, ErrRecord
	}
	r.SymptomOnset = string(c.take(n))
	if r.SymptomOnset != "" {
		if _, err := time.Parse(time.DateOnly, r.SymptomOnset); err != nil {
			return nil, ErrRecord
		}
	}
	count := c.byte()
	if count == 0 || count > MaxKeysPerUpload {
		return nil, ErrRecord
	}
	r.Keys = make([]Key, count)
	for i := range r.Keys {
		k := &r.Keys[i]
		copy(k.Data[:], c.take(KeySize))
		k.RollingStart = int32(c.u32())
		k.RollingPeriod = int32(c.u32())
		k.TransmissionRisk = int32(c.byte())
		if k.RollingPeriod < 1 || k.RollingPeriod > MaxRollingPeriod || k.TransmissionRisk > MaxTransmissionRisk || k.RollingStart < 0 {
			return nil, ErrRecord
		}
	}
	if !c.ok || len(c.b) != 0 {
		return nil, ErrRecord
	}
	return r, nil
}
