package ingest

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/protocol"
)

// The fast decoder of uploads. encoding/json, which decodeStrict runs,
// spent a sixth of an upload's CPU on the padded 8 KiB body — reading the
// padding into a string nobody uses, reflecting over every field — and
// allocated more than the rest of the request together.
//
// fastUpload reads only the form phones send (json.Marshal's): the
// documented field names, each at most once, without escapes; the byte
// fields as base64 strings without escapes; integers as plain decimals;
// the keys an array of objects or null; the padding any JSON string, skipped
// without being copied. It accepts only an upload of the right shape and
// declines everything else — a refusal, and the odd forms encoding/json
// also takes (field names in another case or escaped, a field twice,
// null, numbers as 1e0, byte fields as arrays, other Unicode spaces
// around the object) — which decodeStrict then decides. So what is
// accepted, what is refused (with the same cause) and what an accepted
// body decodes to are encoding/json's to the byte; FuzzFastUpload compares
// the two on random bodies.

// Field names of phoneapi.UploadRequest and phoneapi.Key, as sent.
const (
	fieldBundle    = "bundle"
	fieldPublicKey = "public_key"
	fieldTime      = "time"
	fieldKeys      = "keys"
	fieldSignature = "signature"
	fieldPadding   = "padding"

	fieldKey          = "key"
	fieldRollingStart = "rolling_start_interval_number"
	fieldRollingPer   = "rolling_period"
	fieldRisk         = "transmission_risk"
)

// Base64 lengths of the fixed-size byte fields: with padding, the only
// lengths that decode to that many bytes.
var (
	b64PublicKey = base64.StdEncoding.EncodedLen(ed25519.PublicKeySize)
	b64Signature = base64.StdEncoding.EncodedLen(ed25519.SignatureSize)
	b64Key       = base64.StdEncoding.EncodedLen(exposure.KeySize)
	b64BundleMax = base64.StdEncoding.EncodedLen(protocol.MaxBundleSize)
)

// rawKey is a key as read, its base64 not yet decoded.
type rawKey struct {
	key                 []byte
	start, period, risk int32
}

// fastUpload decodes b when it is an upload in the form phones send and
// of the right shape; ok is false for anything else.
func fastUpload(b []byte) (d *decodedUpload, ok bool) {
	s := scanner{b: b}
	var (
		bundle, pub, sig []byte
		at               int64
		keys             [exposure.MaxKeysPerUpload]rawKey
		nkeys            int
		seen             uint8
	)
	s.ws()
	if !s.is('{') {
		return nil, false
	}
	s.ws()
	if !s.is('}') {
		for {
			name, ok := s.plain()
			if !ok {
				return nil, false
			}
			s.ws()
			if !s.is(':') {
				return nil, false
			}
			s.ws()
			var bit uint8
			switch string(name) {
			case fieldBundle:
				bit = 1 << 0
				bundle, ok = s.plain()
			case fieldPublicKey:
				bit = 1 << 1
				pub, ok = s.plain()
			case fieldTime:
				bit = 1 << 2
				at, ok = s.int(64)
			case fieldKeys:
				bit = 1 << 3
				nkeys, ok = s.keys(&keys)
			case fieldSignature:
				bit = 1 << 4
				sig, ok = s.plain()
			case fieldPadding:
				bit = 1 << 5
				ok = s.str()
			}
			if !ok || bit == 0 || seen&bit != 0 {
				return nil, false
			}
			seen |= bit
			s.ws()
			if s.is('}') {
				break
			}
			if !s.is(',') {
				return nil, false
			}
			s.ws()
		}
	}
	s.ws()
	if s.i != len(s.b) {
		return nil, false
	}

	// The shape decodeUpload checks, on the base64 before decoding it.
	if len(pub) != b64PublicKey || len(sig) != b64Signature || len(bundle) == 0 || len(bundle) > b64BundleMax {
		return nil, false
	}
	enc := base64.StdEncoding
	lp, ls := enc.DecodedLen(len(pub)), enc.DecodedLen(len(sig))
	arena := make([]byte, lp+ls+enc.DecodedLen(len(bundle)))
	np, err := enc.Decode(arena[:lp], pub)
	if err != nil || np != ed25519.PublicKeySize {
		return nil, false
	}
	ns, err := enc.Decode(arena[lp:lp+ls], sig)
	if err != nil || ns != ed25519.SignatureSize {
		return nil, false
	}
	nb, err := enc.Decode(arena[lp+ls:], bundle)
	if err != nil || nb == 0 || nb > protocol.MaxBundleSize {
		return nil, false
	}
	ks := make([]exposure.Key, nkeys)
	for i, k := range keys[:nkeys] {
		if len(k.key) != b64Key {
			return nil, false
		}
		var buf [exposure.KeySize + 2]byte // DecodedLen(b64Key)
		if n, err := enc.Decode(buf[:], k.key); err != nil || n != exposure.KeySize {
			return nil, false
		}
		copy(ks[i].Data[:], buf[:exposure.KeySize])
		ks[i].RollingStart, ks[i].RollingPeriod, ks[i].TransmissionRisk = k.start, k.period, k.risk
	}
	d = &decodedUpload{
		upload: protocol.Upload{Bundle: arena[lp+ls : lp+ls+nb : lp+ls+nb], Phone: ed25519.PublicKey(arena[:np:np]),
			At: time.Unix(at, 0), Keys: ks},
		sig: arena[lp : lp+ns : lp+ns],
	}
	d.canon = d.upload.Marshal()
	return d, true
}

// scanner reads JSON from b at i. Each method reads one thing after the
// whitespace was skipped, and says false for what it does not read.
type scanner struct {
	b []byte
	i int
}

// ws skips JSON's whitespace (not bytes.TrimSpace's other spaces).
func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// is reads c.
func (s *scanner) is(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// plain reads a string without escapes and control characters and
// returns its bytes, which are then what encoding/json unquotes it to,
// bar invalid UTF-8 (which no base64 or field name holds).
func (s *scanner) plain() ([]byte, bool) {
	if !s.is('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c < 0x20 || c == '\\':
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// eights is eight '=' as a little-endian word: the padding is skipped a
// word at a time.
const eights = 0x3d3d3d3d3d3d3d3d

// str skips any JSON string (the padding): escapes are checked, not
// decoded, and any byte from 0x20 up is taken, as encoding/json takes it.
func (s *scanner) str() bool {
	if !s.is('"') {
		return false
	}
	for s.i+8 <= len(s.b) && binary.LittleEndian.Uint64(s.b[s.i:]) == eights {
		s.i += 8
	}
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return false
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !isHex(h) {
						return false
					}
				}
				s.i += 6
			default:
				return false
			}
		default:
			s.i++
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// int reads an integer of bits bits written as JSON writes one: an
// optional minus, then 0 or digits without a leading zero. A fraction or
// an exponent is left unread, so the caller finds no delimiter after it
// and declines, as it declines a value out of range.
func (s *scanner) int(bits uint) (int64, bool) {
	neg := s.is('-')
	start := s.i
	var v uint64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		if s.i-start == 19 { // past any int64; 19 digits fit a uint64
			return 0, false
		}
		v = v*10 + uint64(s.b[s.i]-'0')
		s.i++
	}
	switch n := s.i - start; {
	case n == 0, n > 1 && s.b[start] == '0':
		return 0, false
	}
	limit := uint64(1) << (bits - 1) // the magnitude of the most negative
	if neg {
		if v > limit {
			return 0, false
		}
		return -int64(v), true // -(1<<63) wraps to itself, which it is
	}
	if v >= limit {
		return 0, false
	}
	return int64(v), true
}

// keys reads the array of keys into ks: at most len(ks) of them, each an
// object of Key's fields, each field at most once; or null, which
// json.Marshal writes for none.
func (s *scanner) keys(ks *[exposure.MaxKeysPerUpload]rawKey) (int, bool) {
	if bytes.HasPrefix(s.b[s.i:], []byte("null")) {
		s.i += len("null")
		return 0, true
	}
	if !s.is('[') {
		return 0, false
	}
	s.ws()
	if s.is(']') {
		return 0, true
	}
	n := 0
	for {
		if n == len(ks) || !s.key(&ks[n]) {
			return 0, false
		}
		n++
		s.ws()
		if s.is(']') {
			return n, true
		}
		if !s.is(',') {
			return 0, false
		}
		s.ws()
	}
}

// key reads one key's object.
func (s *scanner) key(k *rawKey) bool {
	*k = rawKey{}
	if !s.is('{') {
		return false
	}
	s.ws()
	if s.is('}') {
		return true
	}
	var seen uint8
	for {
		name, ok := s.plain()
		if !ok {
			return false
		}
		s.ws()
		if !s.is(':') {
			return false
		}
		s.ws()
		var bit uint8
		var v int64
		switch string(name) {
		case fieldKey:
			bit = 1 << 0
			k.key, ok = s.plain()
		case fieldRollingStart:
			bit = 1 << 1
			v, ok = s.int(32)
			k.start = int32(v)
		case fieldRollingPer:
			bit = 1 << 2
			v, ok = s.int(32)
			k.period = int32(v)
		case fieldRisk:
			bit = 1 << 3
			v, ok = s.int(32)
			k.risk = int32(v)
		}
		if !ok || bit == 0 || seen&bit != 0 {
			return false
		}
		seen |= bit
		s.ws()
		if s.is('}') {
			return true
		}
		if !s.is(',') {
			return false
		}
		s.ws()
	}
}
