// Command phone is the reference phone client and the load simulator: it
// does what the app does, against the real phone API and origin.
//
//	phone register -key phone.key          make a key pair; print the code and its QR code
//	phone code -key phone.key              print the code of an existing key
//	phone pickup -key K -api URL -out B    wait until vouched, verify the bundle offline, save it
//	phone upload -key K -api URL -bundle B [-keys FILE] [-n 14]
//	                                       publish temporary exposure keys
//	phone sync -cdn URL -export-key PEM -state DIR [-seen FILE]
//	                                       fetch new exports, verify them, report matches
//	phone simulate -n N -api URL -codes FILE
//	                                       N phones at once: register, wait, upload
//
// pickup verifies the bundle with the trust a server reads from its
// environment (VOUCH_UZI_ROOTS, VOUCH_UZI_CAS, VOUCH_ATTESTATION_KEYS,
// VOUCH_CARD_PROFILE, VOUCH_JURISDICTION), standing in for the roots built
// into an app; it checks no CRL, as a phone offline cannot.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err := realMain(ctx, os.Args[1:], os.Stdout)
	var exit exitError
	if errors.As(err, &exit) {
		os.Exit(int(exit))
	}
	// -h printed the command's help: that is all it was asked for.
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "phone:", err)
		os.Exit(1)
	}
}

// exitError ends the program with a status, its message already printed.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

const usage = "usage: phone register|code|pickup|upload|sync|simulate [flags]  (phone CMD -h for each)"

func realMain(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	rest := args[1:]
	switch args[0] {
	case "register", "new": // "new" is the older name
		return runRegister(rest, stdout, true)
	case "code":
		return runRegister(rest, stdout, false)
	case "pickup":
		return runPickup(ctx, rest, stdout)
	case "upload":
		return runUpload(ctx, rest, stdout)
	case "sync":
		return runSync(ctx, rest, stdout)
	case "simulate":
		return runSimulate(ctx, rest, stdout)
	}
	return errors.New(usage)
}
