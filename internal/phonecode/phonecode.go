// Package phonecode derives, formats and parses the code a patient's phone
// shows: the first 80 bits of SHA-256 over the phone's Ed25519 public key, as
// 16 Crockford base32 characters in groups of four plus one Crockford check
// character (the 80-bit value modulo 37).
//
// The code only names the phone; it grants nothing. Pickup and upload must be
// signed by the private key whose public key hashes to the code.
package phonecode

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
)

// Size is the code's length in bytes (80 bits).
const Size = 10

// Code is the 80-bit phone code.
type Code [Size]byte

const (
	alphabet     = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	checkSymbols = alphabet + "*~$=U"
	// URIScheme prefixes the code in QR codes.
	URIScheme = "vouch:"
)

// Errors a person can act on: retype the code.
var (
	ErrLength    = errors.New("phonecode: a code has 16 characters and a check character")
	ErrCharacter = errors.New("phonecode: the code contains a character that is not allowed")
	ErrCheck     = errors.New("phonecode: the check character does not match; the code was mistyped")
)

// FromPublicKey derives the code of a phone's public key.
func FromPublicKey(pub ed25519.PublicKey) Code {
	sum := sha256.Sum256(pub)
	var c Code
	copy(c[:], sum[:Size])
	return c
}

// Matches reports, in constant time, whether pub hashes to c.
func (c Code) Matches(pub ed25519.PublicKey) bool {
	if len(pub) != ed25519.PublicKeySize {
		return false
	}
	d := FromPublicKey(pub)
	return subtle.ConstantTimeCompare(c[:], d[:]) == 1
}

// check returns the Crockford check value: the code as a big-endian number
// modulo 37.
func (c Code) check() int {
	r := 0
	for _, b := range c {
		r = (r*256 + int(b)) % 37
	}
	return r
}

// Compact renders the 17 symbols without separators.
func (c Code) Compact() string {
	var sb strings.Builder
	sb.Grow(17)
	// 80 bits = 16 groups of 5 bits, most significant first.
	var acc uint64
	bits := 0
	for _, b := range c {
		acc = acc<<8 | uint64(b)
		bits += 8
		for bits >= 5 {
			bits -= 5
			sb.WriteByte(alphabet[(acc>>bits)&31])
		}
	}
	sb.WriteByte(checkSymbols[c.check()])
	return sb.String()
}

// String renders the code for people: XXXX-XXXX-XXXX-XXXX-C.
func (c Code) String() string {
	s := c.Compact()
	return s[0:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:]
}

// URI is what the QR code holds.
func (c Code) URI() string { return URIScheme + c.Compact() }

// Parse reads a code as a person typed or a scanner read it: case does not
// matter, hyphens and spaces are ignored, O reads as 0 and I and L as 1, and a
// "vouch:" prefix is allowed. The check character must match.
func Parse(s string) (Code, error) {
	syms, err := symbols(s)
	if err != nil {
		return Code{}, err
	}
	return decode(syms)
}

// symbols normalises what a person typed into the 17 symbols of a code.
func symbols(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), URIScheme)
	if len(s) > 64 {
		return nil, ErrLength
	}
	syms := make([]byte, 0, 17)
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '-' || ch == ' ':
			continue
		case ch >= 'a' && ch <= 'z':
			ch -= 'a' - 'A'
		}
		switch ch {
		case 'O':
			ch = '0'
		case 'I', 'L':
			ch = '1'
		}
		syms = append(syms, ch)
	}
	if len(syms) != 17 {
		return nil, ErrLength
	}
	return syms, nil
}

// decode reads 17 normalised symbols and checks the check character.
func decode(syms []byte) (Code, error) {
	var c Code
	var acc uint64
	bits, n := 0, 0
	for _, ch := range syms[:16] {
		v := strings.IndexByte(alphabet, ch)
		if v < 0 {
			return Code{}, ErrCharacter
		}
		acc = acc<<5 | uint64(v)
		bits += 5
		for bits >= 8 {
			bits -= 8
			c[n] = byte(acc >> bits)
			n++
		}
	}
	chk := strings.IndexByte(checkSymbols, syms[16])
	if chk < 0 {
		return Code{}, ErrCharacter
	}
	if chk != c.check() {
		return Code{}, ErrCheck
	}
	return c, nil
}

// lookalikes are symbols people misread for one another on a phone's screen.
var lookalikes = [][2]byte{{'5', 'S'}, {'2', 'Z'}, {'8', 'B'}, {'6', 'G'}, {'0', 'D'}, {'0', 'Q'}, {'1', '7'}, {'M', 'N'}, {'V', 'W'}, {'V', 'U'}}

// LikelyGroup says, for a code whose check character does not match, which
// group of four (1 to 4; 5 for the check character) was most likely
// mistyped: the one group where swapping two neighbouring symbols — the
// commonest slip — makes the check character match, or, when no swap does,
// the one group where reading a symbol as its lookalike does. It returns 0
// when the code is well formed, or when no single group explains the
// mistake: the check character is one symbol, and cannot say more.
func LikelyGroup(s string) int {
	syms, err := symbols(s)
	if err != nil {
		return 0
	}
	if _, err := decode(syms); err != ErrCheck {
		return 0
	}
	cand := make([]byte, len(syms))
	var swaps, looks []int // groups where a fix works
	for i := 0; i+1 < len(syms); i++ {
		// Neighbours across a hyphen are rarely swapped; the check
		// character is typed right after the last group, so that swap is
		// tried.
		if syms[i] == syms[i+1] || i/4 != (i+1)/4 && i+1 != 16 {
			continue
		}
		copy(cand, syms)
		cand[i], cand[i+1] = cand[i+1], cand[i]
		if _, err := decode(cand); err == nil {
			swaps = append(swaps, i/4+1)
		}
	}
	for i := range syms {
		for _, pair := range lookalikes {
			for k := range 2 {
				if syms[i] != pair[k] {
					continue
				}
				copy(cand, syms)
				cand[i] = pair[1-k]
				if _, err := decode(cand); err == nil {
					looks = append(looks, i/4+1)
				}
			}
		}
	}
	for _, groups := range [][]int{swaps, looks} {
		if len(groups) == 0 {
			continue
		}
		for _, g := range groups[1:] {
			if g != groups[0] {
				return 0
			}
		}
		return groups[0]
	}
	return 0
}

// Equal compares two codes in constant time.
func (c Code) Equal(d Code) bool { return subtle.ConstantTimeCompare(c[:], d[:]) == 1 }

// GoString avoids printing raw bytes in %#v.
func (c Code) GoString() string { return fmt.Sprintf("phonecode.Code(%q)", c.String()) }
