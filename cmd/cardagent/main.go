// Command cardagent runs beside the clinician's browser and gives the back
// office page access to the card in the reader: certificates and signatures
// through PKCS#11, reader events through PC/SC. For now it lists the cards
// it can see; the localhost agent for the browser comes with the login issue.
//
//	cardagent tokens [-module /usr/lib/softhsm/libsofthsm2.so]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"text/tabwriter"

	"github.com/vouch-nl/vouch/internal/p11"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := realMain(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cardagent:", err)
		os.Exit(1)
	}
}

func realMain(_ context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "tokens" {
		return fmt.Errorf("usage: cardagent tokens [-module PATH]")
	}
	fs := flag.NewFlagSet("tokens", flag.ContinueOnError)
	module := fs.String("module", envOr("VOUCH_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so"), "PKCS#11 module")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	m, err := p11.Open(*module)
	if err != nil {
		return err
	}
	defer m.Close()
	toks, err := m.Tokens()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tLABEL\tSERIAL\tPIN PAD")
	for _, t := range toks {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%v\n", t.Slot, t.Label, t.Serial, t.ProtectedPath)
	}
	return tw.Flush()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
