// Command phone is the reference phone client and, later, the load
// simulator. For now it makes the phone's key pair and shows its code, the
// way the app does before the patient sees a clinician.
//
//	phone new -key phone.key    make a key pair, print the code
//	phone code -key phone.key   print the code of an existing key
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/vouch-nl/vouch/internal/phonecode"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := realMain(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "phone:", err)
		os.Exit(1)
	}
}

func realMain(_ context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "new" && args[0] != "code") {
		return errors.New("usage: phone new|code -key FILE")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	keyFile := fs.String("key", "phone.key", "file holding the phone's Ed25519 seed (hex)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var priv ed25519.PrivateKey
	if args[0] == "new" {
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return err
		}
		// O_EXCL: never overwrite a phone's identity by accident.
		f, err := os.OpenFile(*keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintln(f, hex.EncodeToString(seed)); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		priv = ed25519.NewKeyFromSeed(seed)
	} else {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return err
		}
		seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(seed) != ed25519.SeedSize {
			return fmt.Errorf("%s does not hold a 32-byte hex seed", *keyFile)
		}
		priv = ed25519.NewKeyFromSeed(seed)
	}
	pub := priv.Public().(ed25519.PublicKey)
	code := phonecode.FromPublicKey(pub)
	fmt.Fprintf(stdout, "code        %s\nqr          %s\npublic key  %s\n", code, code.URI(), hex.EncodeToString(pub))
	return nil
}
