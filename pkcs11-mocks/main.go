// Command pkcs11-mocks makes Vouch's UZI-like test PKI and one SoftHSM2 token
// per test card, plus the back end's token with its export and attestation
// keys. Running it again changes nothing that exists.
//
//	go run ./pkcs11-mocks -dir .vouch/cards
//	SOFTHSM2_CONF=.vouch/cards/softhsm2.conf pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so -L
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/virtualcard"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := realMain(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "pkcs11-mocks:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("pkcs11-mocks", flag.ContinueOnError)
	dir := fs.String("dir", defaultDir(), "directory for the PKI, the tokens and cards.json")
	module := fs.String("module", testpki.DefaultModule, "PKCS#11 module (SoftHSM2)")
	quiet := fs.Bool("q", false, "print nothing but errors")
	env := fs.Bool("env", false, "print shell exports that point Vouch at these cards (for make demo)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := os.Stat(*module); err != nil {
		return fmt.Errorf("no PKCS#11 module at %s: run make deps (Debian package softhsm2)", *module)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	conf := testpki.ConfPath(abs)
	if env := os.Getenv("SOFTHSM2_CONF"); env != "" && env != conf {
		return errors.New("SOFTHSM2_CONF points elsewhere; unset it or pass -dir matching it")
	}
	man, err := testpki.Provision(abs, *module, testpki.Cards())
	if err != nil {
		return err
	}
	if fs.Arg(0) == "insert" {
		return runInsert(ctx, man, fs.Args()[1:])
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unknown command %q (insert)", fs.Arg(0))
	}
	if *env {
		return printEnv(os.Stdout, man)
	}
	if *quiet {
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CARD\tTOKEN\tUZI NAME\tLICENSE\tWHAT IT IS FOR")
	for _, c := range man.Cards {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Token, c.UZIName, c.License, c.Description)
	}
	fmt.Fprintf(tw, "backend\t%s\t\t\texport and attestation keys (ECDSA P-256)\n", man.Backend.Token)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Printf("\nPIN of every card: %s. Tokens: SOFTHSM2_CONF=%s\nManifest: %s\n", testpki.CardPIN, conf, filepath.Join(abs, "cards.json"))
	return nil
}

// runInsert puts a test card into a virtual card reader (pcscd with
// vsmartcard's vpcd) until interrupted or the reader goes away: the card
// agent then finds it as it finds a real card.
func runInsert(ctx context.Context, man *testpki.Manifest, args []string) error {
	fs := flag.NewFlagSet("pkcs11-mocks insert", flag.ContinueOnError)
	reader := fs.String("reader", "127.0.0.1:35963", "the virtual reader's address (vpcd: :35963 for its first reader, :35964 for its second)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: pkcs11-mocks [-dir D] insert [-reader ADDR] CARD")
	}
	var mc *testpki.ManifestCard
	for i := range man.Cards {
		if man.Cards[i].Name == fs.Arg(0) {
			mc = &man.Cards[i]
		}
	}
	if mc == nil {
		return fmt.Errorf("no test card %q", fs.Arg(0))
	}
	os.Setenv("SOFTHSM2_CONF", man.SoftHSMConf)
	m, err := p11.Open(man.Module)
	if err != nil {
		return err
	}
	defer m.Close()
	card, closeCard, err := virtualcard.FromTestCard(m, *mc)
	if err != nil {
		return err
	}
	defer closeCard()
	in, err := card.Insert(ctx, *reader)
	if err != nil {
		return err
	}
	fmt.Printf("card %s (%s) is in the reader at %s; PIN %s. Ctrl-C pulls it out.\n", mc.Name, mc.CommonName, *reader, mc.PIN)
	select {
	case <-ctx.Done():
		in.Remove()
		return nil
	case <-in.Done():
		return fmt.Errorf("the reader went away: %v", in.Err())
	}
}

// printEnv writes the configuration of a test deployment trusting these
// cards, as shell exports with single-quoted values.
func printEnv(w io.Writer, man *testpki.Manifest) error {
	vars := man.Env()
	for _, v := range vars {
		if _, err := fmt.Fprintf(w, "export %s='%s'\n", v[0], strings.ReplaceAll(v[1], "'", `'\''`)); err != nil {
			return err
		}
	}
	return nil
}

func defaultDir() string {
	if d := os.Getenv("VOUCH_STATE_DIR"); d != "" {
		return filepath.Join(d, "cards")
	}
	return filepath.Join(".vouch", "cards")
}
