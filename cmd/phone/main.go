// Command phone is the reference phone client and the load simulator: it
// does what the app does, against the real phone API and origin.
//
//	phone register -key phone.key          make a key pair; print the code and its QR code
//	phone code -key phone.key              print the code of an existing key
//	phone pickup -key K -api URL -out B    wait until vouched, verify the bundle offline, save it
//	phone upload -key K -api URL -bundle B [-keys FILE] [-n 14]
//	                                       publish temporary exposure keys
//	phone sync -cdn URL -export-key PEM -state DIR [-seen FILE] [-log-key K]
//	                                       fetch new exports, verify them, report matches;
//	                                       with -log-key, check the transparency log too
//	phone verify-fork -log-key K FILE      check a fork proof a phone printed
//	phone simulate -n N -api URL -codes FILE
//	                                       N phones at once: register, wait, upload
//
// With -log-key (or VOUCH_TRANSPARENCY_PUBLIC_KEY), pickup and sync check
// the transparency log (docs/transparency.md, "The phone"): the signed
// checkpoint, under the witness policy of -log-witness and
// -log-witness-quorum; its consistency with the checkpoint kept in the
// state directory; and the inclusion of the phone's authorization.
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

// command is one of the phone's subcommands.
type command struct {
	name, args, summary string
	run                 func(ctx context.Context, args []string, stdout io.Writer) error
}

// commands is the phone's command table; "new" is the older name of
// register and still works.
var commands = []command{
	{"register", "-key FILE", "make a key pair; print the code and its QR code", func(_ context.Context, a []string, w io.Writer) error {
		return runRegister("register", a, w, true)
	}},
	{"code", "-key FILE", "print the code of an existing key", func(_ context.Context, a []string, w io.Writer) error {
		return runRegister("code", a, w, false)
	}},
	{"pickup", "-key K -api URL -out B [-log-key K]", "wait until vouched, verify the bundle offline, save it; check the log", runPickup},
	{"upload", "-key K -api URL -bundle B [-keys FILE] [-n 14]", "publish temporary exposure keys", runUpload},
	{"sync", "-cdn URL -export-key PEM -state DIR [-seen FILE] [-log-key K]", "fetch new exports, verify them, report matches; check the log", runSync},
	{"verify-fork", "-log-key K FILE", "check a fork proof a phone printed", runVerifyFork},
	{"simulate", "-n N -api URL -codes FILE", "N phones at once: register, wait, upload", runSimulate},
}

// aliases are older names of commands.
var aliases = map[string]string{"new": "register"}

const usage = "usage: phone register|code|pickup|upload|sync|verify-fork|simulate [flags]  (phone -h for more, phone CMD -h for each)"

// printHelp writes the command table.
func printHelp(w io.Writer) {
	fmt.Fprintln(w, "usage: phone COMMAND [flags]   (phone COMMAND -h for its flags)")
	fmt.Fprintln(w)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n  %-9s     %s\n", c.name, c.args, "", c.summary)
	}
}

// newFlagSet is a subcommand's flag set, named for it, whose -h prints its
// own usage to w.
func newFlagSet(name string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	return fs
}

func realMain(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		printHelp(stdout)
		return nil
	}
	name := args[0]
	if a, ok := aliases[name]; ok {
		name = a
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(ctx, args[1:], stdout)
		}
	}
	return errors.New(usage)
}
