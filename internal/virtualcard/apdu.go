package virtualcard

import (
	"errors"
)

// command is a parsed command APDU (ISO/IEC 7816-4 §5.1): short or
// extended length, any of the four cases.
type command struct {
	cla, ins, p1, p2 byte
	data             []byte
	ne               int // bytes the reader will take; 256 or 65536 when Le is 0
	hasLe            bool
}

var errAPDU = errors.New("virtualcard: malformed command APDU")

// parseCommand decodes b strictly: every byte accounted for.
func parseCommand(b []byte) (command, error) {
	if len(b) < 4 {
		return command{}, errAPDU
	}
	c := command{cla: b[0], ins: b[1], p1: b[2], p2: b[3]}
	body := b[4:]
	switch {
	case len(body) == 0: // case 1
		return c, nil
	case len(body) == 1: // case 2 short
		c.ne, c.hasLe = int(body[0]), true
		if c.ne == 0 {
			c.ne = 256
		}
		return c, nil
	case body[0] != 0: // case 3 or 4 short
		n := int(body[0])
		switch len(body) {
		case 1 + n:
		case 2 + n:
			c.ne, c.hasLe = int(body[1+n]), true
			if c.ne == 0 {
				c.ne = 256
			}
		default:
			return command{}, errAPDU
		}
		c.data = body[1 : 1+n]
		return c, nil
	case len(body) == 3: // case 2 extended
		c.ne, c.hasLe = int(body[1])<<8|int(body[2]), true
		if c.ne == 0 {
			c.ne = 65536
		}
		return c, nil
	case len(body) > 3: // case 3 or 4 extended
		n := int(body[1])<<8 | int(body[2])
		if n == 0 {
			return command{}, errAPDU
		}
		switch len(body) {
		case 3 + n:
		case 5 + n:
			c.ne, c.hasLe = int(body[3+n])<<8|int(body[4+n]), true
			if c.ne == 0 {
				c.ne = 65536
			}
		default:
			return command{}, errAPDU
		}
		c.data = body[3 : 3+n]
		return c, nil
	}
	return command{}, errAPDU
}

// Status words the card answers with.
const (
	swOK                = 0x9000
	swMoreData          = 0x6100 // | bytes still to fetch (0 for 256 or more)
	swWrongLength       = 0x6700
	swSecurityStatus    = 0x6982 // the PIN was not verified (for this key, just before)
	swPINBlocked        = 0x6983
	swWrongData         = 0x6A80
	swNotFound          = 0x6A82
	swRefNotFound       = 0x6A88
	swWrongP1P2         = 0x6B00
	swINSNotSupported   = 0x6D00
	swCLANotSupported   = 0x6E00
	swPINWrong          = 0x63C0 // | tries left
	swConditionsNotMet  = 0x6985
	swFunctionNotSupp   = 0x6A81
	swLastCommandChainE = 0x6883
)

func sw(code int) []byte { return []byte{byte(code >> 8), byte(code)} }

// tlv encodes a BER-TLV with a one- or two-byte tag.
func tlv(tag int, value []byte) []byte {
	var out []byte
	if tag > 0xff {
		out = append(out, byte(tag>>8))
	}
	out = append(out, byte(tag))
	out = appendLength(out, len(value))
	return append(out, value...)
}

// tlv3 encodes a TLV with a three-byte tag (PIV object tags 5FC1xx).
func tlv3(tag int, value []byte) []byte {
	out := []byte{byte(tag >> 16), byte(tag >> 8), byte(tag)}
	out = appendLength(out, len(value))
	return append(out, value...)
}

func appendLength(b []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n < 0x100:
		return append(b, 0x81, byte(n))
	default:
		return append(b, 0x82, byte(n>>8), byte(n))
	}
}

// readTLV splits one BER-TLV with a one-byte tag off b.
func readTLV(b []byte) (tag byte, value, rest []byte, err error) {
	if len(b) < 2 {
		return 0, nil, nil, errAPDU
	}
	tag, b = b[0], b[1:]
	n := int(b[0])
	b = b[1:]
	switch {
	case n == 0x81:
		if len(b) < 1 {
			return 0, nil, nil, errAPDU
		}
		n, b = int(b[0]), b[1:]
	case n == 0x82:
		if len(b) < 2 {
			return 0, nil, nil, errAPDU
		}
		n, b = int(b[0])<<8|int(b[1]), b[2:]
	case n > 0x80:
		return 0, nil, nil, errAPDU
	}
	if len(b) < n {
		return 0, nil, nil, errAPDU
	}
	return tag, b[:n], b[n:], nil
}
