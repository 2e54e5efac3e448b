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
// (chrome-extension://ID/ from Chromium and Chrome). Firefox is not
// supported.
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
	"sync"
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
  cardagent install -origin URL [-module PATH] [-extension-id ID] [-browsers chromium,chrome]
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
	case strings.HasPrefix(args[0], "chrome-extension://"):
		return runHost(ctx, callerExtension(args[0]), stdin, stdout, stderr)
	}
	fmt.Fprintf(stderr, "cardagent: unknown command %q\n\n%s", args[0], usage)
	return exitError(2)
}

// callerExtension is the id of the extension the browser started the host
// for, from its argument chrome-extension://ID/. Firefox, which starts a
// host with a manifest's path and an add-on id, is not supported: the
// extension is a Chromium MV3 one (docs/cardagent.md).
func callerExtension(arg string) string {
	return strings.TrimSuffix(strings.TrimPrefix(arg, "chrome-extension://"), "/")
}

// runHost serves the extension on standard input and output until the
// browser closes them. It logs to standard error, which the browser keeps
// in its own log: never a PIN, a challenge or a statement. The PKCS#11
// module is opened and the readers watched only once a request of a
// configured origin came: a refused first request has read no card.
func runHost(ctx context.Context, caller string, stdin io.Reader, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg, err := loadConfig()
	if err != nil {
		log.Error("cardagent is not installed", "err", err)
		return exitError(2)
	}
	if caller != cfg.ExtensionID {
		// The browser checks the manifest's allowed origins; this is the
		// same check once more, against the configuration.
		log.Error("started for another extension", "extension", caller)
		return exitError(2)
	}
	ctx, cancel := context.WithCancel(ctx)
	var src struct {
		sync.Mutex
		m           *p11.Module
		unsubscribe func()
		stopReaders context.CancelFunc
	}
	defer func() {
		src.Lock()
		defer src.Unlock()
		if src.m == nil {
			cancel()
			return
		}
		src.unsubscribe()
		closeBounded(src.m, func() { src.stopReaders(); cancel() }, log)
	}()
	lazy := cardagent.NewLazyCards(ctx, func(context.Context) (cardagent.Cards, <-chan struct{}, error) {
		for k, v := range cfg.ModuleEnv {
			os.Setenv(k, v)
		}
		// The readers, through PC/SC: which card is in which reader, and
		// an event for the page whenever one goes in or out. Started
		// first: PC/SC answers while the module loads.
		rctx, stopReaders := context.WithCancel(ctx)
		readers := cardagent.WatchReaders(rctx, log)
		m, err := p11.Open(cfg.Module)
		if err != nil {
			stopReaders() // the next request starts them again
			return nil, nil, fmt.Errorf("PKCS#11 module %s: %w", cfg.Module, err)
		}
		changed, unsubscribe := readers.Subscribe()
		src.Lock()
		src.m, src.unsubscribe, src.stopReaders = m, unsubscribe, stopReaders
		src.Unlock()
		return cardagent.NewP11Cards(m, readers), changed, nil
	})
	a, err := cardagent.New(cfg.Origins, lazy, log)
	if err != nil {
		log.Error("configuration", "err", err)
		return exitError(2)
	}
	return a.Serve(ctx, stdin, stdout, lazy.Changed())
}

// closeBounded stops watching the readers and closes the module once the
// browser has gone (Serve returned): a module that does not finalize in a
// few seconds is left to the process's exit, so that a host whose browser
// died never lingers holding the readers.
func closeBounded(m *p11.Module, stopWatching func(), log *slog.Logger) {
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
