package virtualcard

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

func testCard(t testing.TB) *Card {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{PIN: "123456", Auth: Key{Cert: der, Signer: key}, Sign: Key{Cert: der, Signer: key}})
	if err != nil {
		t.Fatal(err)
	}
	c.powerOn()
	return c
}

// selectPIV selects the PIV applet.
var selectPIV = []byte{0x00, 0xA4, 0x04, 0x00, 0x09, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00}

func status(resp []byte) int {
	if len(resp) < 2 {
		return -1
	}
	return int(resp[len(resp)-2])<<8 | int(resp[len(resp)-1])
}

func verifyAPDU(pin string) []byte {
	p := append([]byte(pin), bytes.Repeat([]byte{0xFF}, 8-len(pin))...)
	return append([]byte{0x00, 0x20, 0x00, 0x80, 0x08}, p...)
}

// TestPINCounter: the counter the agent's PIN messages are read from —
// 63Cx after a wrong PIN, 6983 once blocked, even for the right PIN, and a
// power cycle does not reset it.
func TestPINCounter(t *testing.T) {
	t.Parallel()
	c := testCard(t)
	if got := status(c.Transmit(selectPIV)); got != 0x9000 {
		t.Fatalf("SELECT: %04X", got)
	}
	for i, want := range []int{0x63C2, 0x63C1} {
		if got := status(c.Transmit(verifyAPDU("000000"))); got != want {
			t.Fatalf("wrong PIN %d: %04X, want %04X", i+1, got, want)
		}
	}
	if got := status(c.Transmit(verifyAPDU("123456"))); got != 0x9000 {
		t.Fatalf("right PIN: %04X", got)
	}
	if c.TriesLeft() != MaxTries {
		t.Fatalf("the right PIN leaves %d tries", c.TriesLeft())
	}
	for range MaxTries {
		c.Transmit(verifyAPDU("000000"))
	}
	c.powerOn()
	c.Transmit(selectPIV)
	if got := status(c.Transmit(verifyAPDU("123456"))); got != 0x6983 {
		t.Fatalf("right PIN on a blocked card: %04X", got)
	}
}

// TestParseCommand: the four APDU cases, and malformed lengths refused.
func TestParseCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in    []byte
		ok    bool
		data  int
		ne    int
		hasLe bool
	}{
		{in: []byte{0, 0xA4, 0, 0}, ok: true},
		{in: []byte{0, 0xA4, 0, 0, 0}, ok: true, ne: 256, hasLe: true},
		{in: []byte{0, 0xA4, 0, 0, 2, 1, 2}, ok: true, data: 2},
		{in: []byte{0, 0xA4, 0, 0, 2, 1, 2, 0x10}, ok: true, data: 2, ne: 16, hasLe: true},
		{in: []byte{0, 0xA4, 0, 0, 3, 1, 2}},
		{in: []byte{0, 0xA4, 0}},
	} {
		c, err := parseCommand(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("% X: err %v", tc.in, err)
			continue
		}
		if tc.ok && (len(c.data) != tc.data || c.ne != tc.ne || c.hasLe != tc.hasLe) {
			t.Errorf("% X: %+v", tc.in, c)
		}
	}
}

// FuzzTransmit: whatever a reader sends, the card answers with a status
// word and does not panic.
func FuzzTransmit(f *testing.F) {
	f.Add(selectPIV)
	f.Add(verifyAPDU("123456"))
	f.Add([]byte{0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x05, 0x00})
	f.Add([]byte{0x00, 0x87, 0x07, 0x9A, 0x04, 0x7C, 0x02, 0x81, 0x00, 0x00})
	c := testCard(f)
	f.Fuzz(func(t *testing.T, apdu []byte) {
		c.Transmit(selectPIV)
		if resp := c.Transmit(apdu); len(resp) < 2 {
			t.Fatalf("answer without a status word: % X", resp)
		}
	})
}
