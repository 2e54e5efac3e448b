// Command cardagent runs beside the clinician's browser: it is the native
// messaging host of the Vouch browser extension (web/extension), and gives
// the back office page the card in the reader — whose it is, and a
// signature over a Vouch login challenge or authorization statement, after
// the PIN typed in the extension's own window. See docs/cardagent.md.
//
//	cardagent install -origin https://vouch.example [-module PATH]   once per user
//	cardagent tokens [-module PATH]                                   the cards it can see
//
// The browser starts it itself, with the calling extension as its argument
// (chrome-extension://ID/ from Chromium and Chrome; the manifest path and
// the extension id from Firefox).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vouch-nl/vouch/internal/cardagent"
	"github.com/vouch-nl/vouch/internal/p11"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err := realMain(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	var exit exitError
	switch {
	case errors.As(err, &exit):
		os.Exit(int(exit))
	case err != nil:
		fmt.Fprintln(os.Stderr, "cardagent:", err)
		os.Exit(2)
	}
}

// exitError ends the program with a status and nothing more to say.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

const usage = `usage:
  cardagent install -origin URL [-module PATH] [-extension-id ID] [-browsers chromium,chrome,firefox]
  cardagent tokens [-module PATH]

The browser starts cardagent itself once it is installed.
`

func realMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError(2)
	}
	switch {
	case args[0] == "tokens":
		return runTokens(args[1:], stdout, stderr)
	case args[0] == "install":
		return runInstall(args[1:], stdout, stderr)
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(stdout, usage)
		return nil
	case strings.HasPrefix(args[0], "chrome-extension://"), strings.HasSuffix(args[0], ".json") && len(args) == 2:
		return runHost(ctx, callerExtension(args), stdin, stdout, stderr)
	}
	fmt.Fprintf(stderr, "cardagent: unknown command %q\n\n%s", args[0], usage)
	return exitError(2)
}

// callerExtension is the id of the extension the browser started the host
// for: chrome-extension://ID/ (Chromium), or the second argument (Firefox).
func callerExtension(args []string) string {
	if id, ok := strings.CutPrefix(args[0], "chrome-extension://"); ok {
		return strings.TrimSuffix(id, "/")
	}
	return args[1]
}

// runHost serves the extension on standard input and output until the
// browser closes them. It logs to standard error, which the browser keeps
// in its own log: never a PIN, a challenge or a statement.
func runHost(ctx context.Context, caller string, stdin io.Reader, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg, err := loadConfig()
	if err != nil {
		log.Error("cardagent is not installed", "err", err)
		return exitError(2)
	}
	if caller != cfg.ExtensionID && caller != FirefoxExtensionID {
		// The browser checks the manifest's allowed origins; this is the
		// same check once more, against the configuration.
		log.Error("started for another extension", "extension", caller)
		return exitError(2)
	}
	for k, v := range cfg.ModuleEnv {
		os.Setenv(k, v)
	}
	m, err := p11.Open(cfg.Module)
	if err != nil {
		log.Error("PKCS#11 module", "module", cfg.Module, "err", err)
		return exitError(2)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer closeBounded(m, cancel, log)
	// The readers, through PC/SC: which card is in which reader, and an
	// event for the page whenever one goes in or out.
	readers := cardagent.WatchReaders(ctx, log)
	a, err := cardagent.New(cfg.Origins, cardagent.NewP11Cards(m, readers), log)
	if err != nil {
		log.Error("configuration", "err", err)
		return exitError(2)
	}
	changed, unsubscribe := readers.Subscribe()
	defer unsubscribe()
	return a.Serve(ctx, stdin, stdout, changed)
}

// closeBounded stops watching the readers and closes the module once the
// browser has gone (Serve returned): a module that does not finalize in a
// few seconds is left to the process's exit, so that a host whose browser
// died never lingers holding the readers.
func closeBounded(m *p11.Module, stopWatching context.CancelFunc, log *slog.Logger) {
	stopWatching()
	done := make(chan struct{})
	go func() {
		m.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		log.Warn("the PKCS#11 module did not close in 3 s; exiting anyway")
	}
}

// newCheckedAgent checks a configuration as the host will at its start.
func newCheckedAgent(cfg config) (*cardagent.Agent, error) {
	return cardagent.New(cfg.Origins, nil, slog.New(slog.DiscardHandler))
}

func runTokens(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cardagent tokens", flag.ContinueOnError)
	fs.SetOutput(stderr)
	module := fs.String("module", envOr("VOUCH_PKCS11_MODULE", defaultModule), "PKCS#11 module")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError(2)
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

// defaultModule is OpenSC's PKCS#11 module, which reads PIV cards (and
// Vouch's virtual test card); a clinician's workstation names its UZI card's
// own module at install.
const defaultModule = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
