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

// keyLen is one encoded key: data, start, period, risk.
const keyLen = KeySize + 4 + 4 + 1

// ErrRecord is any record that is not one this package encoded.
var ErrRecord = errors.New("exposure: not a valid key record")

// Marshal encodes r: the label, the authorization id, the received hour as
// Unix seconds, the onset (one length byte, then ASCII), the key count
// (one byte) and the keys.
func (r *Record) Marshal() []byte {
	b := make([]byte, 0, len(recordLabel)+16+8+1+len(r.SymptomOnset)+1+len(r.Keys)*keyLen)
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

// UnmarshalRecord decodes what Marshal encoded, strictly: a reader must not
// store half of a message it does not understand.
func UnmarshalRecord(b []byte) (*Record, error) {
	if len(b) < len(recordLabel) || string(b[:len(recordLabel)]) != recordLabel {
		return nil, ErrRecord
	}
	b = b[len(recordLabel):]
	r := &Record{}
	if len(b) < 16+8+1 {
		return nil, ErrRecord
	}
	copy(r.AuthorizationID[:], b[:16])
	r.Received = time.Unix(int64(binary.BigEndian.Uint64(b[16:24])), 0).UTC()
	n := int(b[24])
	b = b[25:]
	if n > 10 || len(b) < n+1 {
		return nil, ErrRecord
	}
	r.SymptomOnset = string(b[:n])
	if n > 0 {
		if _, err := time.Parse(time.DateOnly, r.SymptomOnset); err != nil {
			return nil, ErrRecord
		}
	}
	count := int(b[n])
	b = b[n+1:]
	if count == 0 || count > MaxKeysPerUpload || len(b) != count*keyLen {
		return nil, ErrRecord
	}
	r.Keys = make([]Key, count)
	for i := range r.Keys {
		k := &r.Keys[i]
		copy(k.Data[:], b[:KeySize])
		k.RollingStart = int32(binary.BigEndian.Uint32(b[KeySize:]))
		k.RollingPeriod = int32(binary.BigEndian.Uint32(b[KeySize+4:]))
		k.TransmissionRisk = int32(b[KeySize+8])
		if k.RollingPeriod < 1 || k.RollingPeriod > MaxRollingPeriod || k.TransmissionRisk > MaxTransmissionRisk || k.RollingStart < 0 {
			return nil, ErrRecord
		}
		b = b[keyLen:]
	}
	return r, nil
}
