package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/vouch-nl/vouch/internal/phonecode"
)

// runRegister makes the phone's key pair (create) or reads it, and shows
// the code as text and as a QR code of its URI, as the app shows it to
// the clinician.
func runRegister(name string, args []string, stdout io.Writer, create bool) error {
	fs := newFlagSet(name, stdout)
	keyFile := fs.String("key", "phone.key", "file holding the phone's Ed25519 seed (hex)")
	noQR := fs.Bool("no-qr", false, "do not draw the QR code")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var (
		priv ed25519.PrivateKey
		err  error
	)
	if create {
		priv, err = createKey(*keyFile)
	} else {
		priv, err = readKey(*keyFile)
	}
	if err != nil {
		return err
	}
	pub := priv.Public().(ed25519.PublicKey)
	code := phonecode.FromPublicKey(pub)
	fmt.Fprintf(stdout, "code        %s\nqr          %s\npublic key  %s\n", code, code.URI(), hex.EncodeToString(pub))
	if !*noQR {
		qr, err := qrTerminal(code.URI())
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, qr)
	}
	return nil
}

// qrTerminal draws a QR code of s with half-block characters, two modules
// a character, which fits a terminal and scans from it.
func qrTerminal(s string) (string, error) {
	q, err := qrcode.New(s, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	return q.ToSmallString(false), nil
}

// createKey makes a key pair and writes its seed to file, never over an
// existing one (O_EXCL): that would lose a phone's identity.
func createKey(file string) (ed25519.PrivateKey, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintln(f, hex.EncodeToString(seed)); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// readKey reads the key pair createKey wrote.
func readKey(file string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s does not hold a 32-byte hex seed", file)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
