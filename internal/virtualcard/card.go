// Package virtualcard is a smart card in software for Vouch's tests and
// demo: a PIV applet (NIST SP 800-73) that a virtual reader (vsmartcard's
// vpcd, behind pcscd) sees as a card, so that the card agent reaches it the
// way it reaches a real one — PC/SC for the reader and OpenSC's PKCS#11
// module for the keys. Its keys stay on the SoftHSM test card behind it
// (internal/testpki): the applet hands each signature request to that
// token. Like a chip it counts wrong PINs and blocks after three, and it
// can be pulled out of the reader at any moment, mid-signature included.
//
// It is test equipment: nothing in a production binary imports it.
package virtualcard

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"sync"
)

// Key is a key on the card: its certificate and what signs with it.
type Key struct {
	Cert   []byte        // DER
	Signer crypto.Signer // RSA; the SoftHSM token's key for the test cards
}

// Config describes a card.
type Config struct {
	// GUID identifies the card (the CHUID's GUID); OpenSC derives the
	// token's serial number from it.
	GUID [16]byte
	PIN  string // 6 to 8 characters, as PIV requires
	// Auth is the PIV authentication key (slot 9A): the card's login key.
	// Sign is the digital signature key (slot 9C): it wants the PIN just
	// before each signature, as a UZI card's non-repudiation key does.
	Auth, Sign Key
}

// MaxTries is how many wrong PINs in a row block the card.
const MaxTries = 3

// Card is one card. Its PIN counter outlives insertions, as a chip's does;
// everything else starts afresh at each power-on.
type Card struct {
	mu    sync.Mutex
	cfg   Config
	tries int // left before the PIN blocks

	// Per power-on.
	selected    bool
	verified    bool // the PIN was verified
	signAllowed bool // ... and not yet used for a 9C signature since
	chain       []byte
	chainINS    byte
	pending     []byte // response bytes the reader has not fetched (61xx)

	// beforeSign, when set, is called before each signature: tests pull the
	// card out there.
	beforeSign func(keyRef byte)
}

// New makes a card with a fresh PIN counter.
func New(cfg Config) (*Card, error) {
	if n := len(cfg.PIN); n < 6 || n > 8 {
		return nil, errors.New("virtualcard: a PIV PIN has 6 to 8 characters")
	}
	for _, k := range []Key{cfg.Auth, cfg.Sign} {
		if len(k.Cert) == 0 || k.Signer == nil {
			return nil, errors.New("virtualcard: a card needs its authentication and signature keys")
		}
		if _, ok := k.Signer.Public().(*rsa.PublicKey); !ok {
			return nil, errors.New("virtualcard: only RSA keys")
		}
	}
	return &Card{cfg: cfg, tries: MaxTries}, nil
}

// TriesLeft is the PIN counter: 0 means blocked.
func (c *Card) TriesLeft() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tries
}

// SetBeforeSign installs f to run before each signature the card makes
// (nil removes it). It runs without the card's lock, so it may pull the
// card out.
func (c *Card) SetBeforeSign(f func(keyRef byte)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.beforeSign = f
}

// powerOn resets what a power cycle resets.
func (c *Card) powerOn() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.selected, c.verified, c.signAllowed = false, false, false
	c.chain, c.pending = nil, nil
}

// ATR is the card's answer to reset: T=1, with historical bytes that say
// it takes command chaining and extended lengths.
var ATR = func() []byte {
	hist := []byte{0x80, 0x73, 0xC0, 0x21, 0xC0, 0x55, 'V', 'o', 'u', 'c', 'h'}
	atr := []byte{0x3B, 0x80 | byte(len(hist)), 0x80, 0x01}
	atr = append(atr, hist...)
	var tck byte
	for _, b := range atr[1:] {
		tck ^= b
	}
	return append(atr, tck)
}()

// pivAID is the PIV applet's identifier; a SELECT may give a prefix of it.
var pivAID = []byte{0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00}

// Key references and algorithms of PIV.
const (
	keyAuth = 0x9A
	keySign = 0x9C
	algRSA  = 0x07 // RSA 2048
	pinRef  = 0x80 // the PIV application PIN
)

// Transmit answers one command APDU with a response APDU.
func (c *Card) Transmit(apdu []byte) []byte {
	cmd, err := parseCommand(apdu)
	if err != nil {
		return sw(swWrongLength)
	}
	if cmd.cla&0xEF != 0x00 { // only interindustry class, chaining bit aside
		return sw(swCLANotSupported)
	}
	if cmd.ins == 0xC0 { // GET RESPONSE
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.pending == nil {
			return sw(swConditionsNotMet)
		}
		data := c.pending
		c.pending = nil
		return c.respond(data, cmd)
	}
	c.mu.Lock()
	c.pending = nil
	if cmd.ins != c.chainINS || cmd.ins != 0x87 {
		c.chain = nil
	}
	c.mu.Unlock()
	switch cmd.ins {
	case 0xA4:
		return c.selectApplet(cmd)
	case 0xCB:
		return c.getData(cmd)
	case 0x20:
		return c.verify(cmd)
	case 0x87:
		return c.generalAuthenticate(cmd)
	}
	return sw(swINSNotSupported)
}

// respond sends data, or as much of it as the reader takes and 61xx for
// the rest (fetched with GET RESPONSE). Called with c.mu held.
func (c *Card) respond(data []byte, cmd command) []byte {
	ne := cmd.ne
	if !cmd.hasLe || ne == 0 {
		ne = 256
	}
	if len(data) <= ne {
		return append(bytes.Clone(data), sw(swOK)...)
	}
	c.pending = bytes.Clone(data[ne:])
	more := min(len(c.pending), 256) & 0xff
	return append(bytes.Clone(data[:ne]), 0x61, byte(more))
}

func (c *Card) selectApplet(cmd command) []byte {
	if cmd.p1 != 0x04 {
		return sw(swNotFound)
	}
	if len(cmd.data) < 5 || !bytes.HasPrefix(pivAID, cmd.data) {
		return sw(swNotFound)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.selected = true
	// Application property template: the PIX and the authority.
	apt := tlv(0x61, append(tlv(0x4F, pivAID[5:]), tlv(0x79, tlv(0x4F, pivAID[:5]))...))
	return c.respond(apt, cmd)
}

// PIV data objects by tag.
const (
	objCHUID     = 0x5FC102
	objAuthCert  = 0x5FC105
	objSignCert  = 0x5FC10A
	objDiscovery = 0x7E
)

func (c *Card) getData(cmd command) []byte {
	if cmd.p1 != 0x3F || cmd.p2 != 0xFF {
		return sw(swWrongP1P2)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.selected {
		return sw(swConditionsNotMet)
	}
	tag, value, rest, err := readTLV(cmd.data)
	if err != nil || tag != 0x5C || len(rest) != 0 {
		return sw(swWrongData)
	}
	id := 0
	for _, b := range value {
		id = id<<8 | int(b)
	}
	var obj []byte
	switch id {
	case objDiscovery:
		// The PIV AID and the PIN usage policy: the application PIN only.
		obj = tlv(0x7E, append(tlv(0x4F, pivAID), tlv(0x5F2F, []byte{0x40, 0x00})...))
	case objCHUID:
		// OpenSC makes the token's serial number of the FASC-N: one of
		// the card's own, from its GUID, so that two cards differ.
		fascn := append(bytes.Repeat([]byte{0xD4}, 9), c.cfg.GUID[:]...)
		var v []byte
		v = append(v, tlv(0x30, fascn)...)
		v = append(v, tlv(0x34, c.cfg.GUID[:])...)
		v = append(v, tlv(0x35, []byte("20991231"))...)
		v = append(v, tlv(0x3E, nil)...)
		v = append(v, tlv(0xFE, nil)...)
		obj = tlv(0x53, v)
	case objAuthCert:
		obj = certObject(c.cfg.Auth.Cert)
	case objSignCert:
		obj = certObject(c.cfg.Sign.Cert)
	default:
		return sw(swNotFound)
	}
	return c.respond(obj, cmd)
}

func certObject(der []byte) []byte {
	v := tlv(0x70, der)
	v = append(v, tlv(0x71, []byte{0x00})...) // not compressed
	v = append(v, tlv(0xFE, nil)...)
	return tlv(0x53, v)
}

func (c *Card) verify(cmd command) []byte {
	if cmd.p2 != pinRef {
		return sw(swRefNotFound)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.selected {
		return sw(swConditionsNotMet)
	}
	switch {
	case cmd.p1 == 0xFF && len(cmd.data) == 0: // reset the security status
		c.verified, c.signAllowed = false, false
		return sw(swOK)
	case cmd.p1 != 0x00:
		return sw(swWrongP1P2)
	case c.tries == 0:
		return sw(swPINBlocked)
	case len(cmd.data) == 0: // ask the status
		if c.verified {
			return sw(swOK)
		}
		return sw(swPINWrong | c.tries)
	case len(cmd.data) != 8:
		return sw(swWrongLength)
	}
	pin := bytes.TrimRight(cmd.data, "\xff")
	if subtle.ConstantTimeCompare(pin, []byte(c.cfg.PIN)) == 1 {
		c.tries = MaxTries
		c.verified, c.signAllowed = true, true
		return sw(swOK)
	}
	c.tries--
	c.verified, c.signAllowed = false, false
	if c.tries == 0 {
		return sw(swPINBlocked)
	}
	return sw(swPINWrong | c.tries)
}

func (c *Card) generalAuthenticate(cmd command) []byte {
	c.mu.Lock()
	if !c.selected {
		c.mu.Unlock()
		return sw(swConditionsNotMet)
	}
	if cmd.cla&0x10 != 0 { // more to come
		c.chain = append(c.chain, cmd.data...)
		c.chainINS = cmd.ins
		tooLong := len(c.chain) > 4096
		if tooLong {
			c.chain = nil
		}
		c.mu.Unlock()
		if tooLong {
			return sw(swWrongLength)
		}
		return sw(swOK)
	}
	data := append(c.chain, cmd.data...)
	c.chain, c.chainINS = nil, 0
	var key Key
	switch {
	case cmd.p1 != algRSA:
		c.mu.Unlock()
		return sw(swWrongP1P2)
	case cmd.p2 == keyAuth:
		key = c.cfg.Auth
		if !c.verified {
			c.mu.Unlock()
			return sw(swSecurityStatus)
		}
	case cmd.p2 == keySign:
		key = c.cfg.Sign
		if !c.signAllowed {
			c.mu.Unlock()
			return sw(swSecurityStatus)
		}
		c.signAllowed = false // the PIN again before the next one
	default:
		c.mu.Unlock()
		return sw(swRefNotFound)
	}
	before := c.beforeSign
	c.mu.Unlock()

	block, ok := challenge(data)
	if !ok {
		return sw(swWrongData)
	}
	digest, ok := sha256DigestInfo(block, key.Signer.Public().(*rsa.PublicKey).Size())
	if !ok {
		return sw(swWrongData)
	}
	if before != nil {
		before(cmd.p2)
	}
	sig, err := key.Signer.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		return sw(swConditionsNotMet)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.respond(tlv(0x7C, tlv(0x82, sig)), cmd)
}

// challenge finds the block to sign in a GENERAL AUTHENTICATE's dynamic
// authentication template: 7C { 82 00, 81 block }.
func challenge(data []byte) ([]byte, bool) {
	tag, tmpl, rest, err := readTLV(data)
	if err != nil || tag != 0x7C || len(rest) != 0 {
		return nil, false
	}
	var block []byte
	wantsResponse := false
	for len(tmpl) > 0 {
		t, v, r, err := readTLV(tmpl)
		if err != nil {
			return nil, false
		}
		switch {
		case t == 0x82 && len(v) == 0:
			wantsResponse = true
		case t == 0x81:
			block = v
		default:
			return nil, false
		}
		tmpl = r
	}
	return block, wantsResponse && block != nil
}

// digestInfoSHA256 is the DER prefix of a PKCS #1 v1.5 DigestInfo for
// SHA-256.
var digestInfoSHA256 = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

// sha256DigestInfo takes the SHA-256 digest out of a PKCS #1 v1.5
// signature block (00 01 FF… 00 DigestInfo) of the key's size. A real card
// would apply its private key to any block; this one signs through the
// token's PKCS #1 mechanism, which pads the same way, so it takes only
// blocks it can hand on whole — the only kind Vouch makes.
func sha256DigestInfo(block []byte, size int) ([]byte, bool) {
	if len(block) != size || len(block) < 11+len(digestInfoSHA256)+32 || block[0] != 0 || block[1] != 1 {
		return nil, false
	}
	i := 2
	for i < len(block) && block[i] == 0xFF {
		i++
	}
	if i < 10 || i >= len(block) || block[i] != 0 {
		return nil, false
	}
	rest := block[i+1:]
	if len(rest) != len(digestInfoSHA256)+32 || !bytes.HasPrefix(rest, digestInfoSHA256) {
		return nil, false
	}
	return rest[len(digestInfoSHA256):], true
}
