// Command testregistry makes stand-ins for the national care-provider
// register: it writes synthetic registers as LDIF, and serves a throwaway
// OpenLDAP slapd seeded with the test-card fixtures and, if asked, a
// generated register.
//
//	testregistry generate -n 1000000 -seed 1 -o register.ldif
//	testregistry serve -generate 100000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vouch-nl/vouch/registry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "testregistry:", err)
		stop()
		os.Exit(1)
	}
}

const usage = `usage:
  testregistry generate [-n N] [-seed S] [-o FILE]
  testregistry serve [-dir D] [-port P] [-generate N] [-seed S]`

// app is the command with its outputs, so tests can run it in process.
type app struct {
	stdout, stderr io.Writer
	progress       bool   // draw a progress bar on stderr
	tempDir        string // where serve makes its temporary directory; "" is os.TempDir
}

func realMain(ctx context.Context, args []string) error {
	a := app{stdout: os.Stdout, stderr: os.Stderr, progress: isTerminal(os.Stderr)}
	return a.run(ctx, args)
}

// isTerminal reports whether f is a character device: a terminal, for the
// purpose of drawing a progress bar that nobody wants in a log file.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (a app) run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "generate":
		return a.generate(ctx, args[1:])
	case "serve":
		return a.serve(ctx, args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(a.stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func (a app) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("testregistry "+name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	return fs
}

func (a app) generate(ctx context.Context, args []string) error {
	fs := a.flags("generate")
	n := fs.Int("n", 1000, "number of entries")
	seed := fs.Uint64("seed", 1, "random seed; the same seed writes the same register")
	out := fs.String("o", "-", "output file; - is stdout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("generate: unexpected arguments %q", fs.Args())
	}
	w, closeOut := a.stdout, func() error { return nil }
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			return fmt.Errorf("generate: %w", err)
		}
		defer f.Close()
		w, closeOut = f, f.Close
	}
	if err := registry.Generate(ctxWriter{ctx, w}, *n, *seed, a.progressBar(*n)); err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	if err := closeOut(); err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	return nil
}

// ctxWriter stops a long generation at Ctrl-C.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// progressBar returns a progress callback drawing on stderr, or nil when
// stderr is not a terminal.
func (a app) progressBar(total int) func(int) {
	if !a.progress || total == 0 {
		return nil
	}
	const width = 40
	start := time.Now()
	return func(done int) {
		filled := width * done / total
		fmt.Fprintf(a.stderr, "\r[%s%s] %3d%% %d/%d %s", strings.Repeat("#", filled), strings.Repeat(" ", width-filled),
			100*done/total, done, total, time.Since(start).Round(100*time.Millisecond))
		if done == total {
			fmt.Fprintln(a.stderr)
		}
	}
}

// serveConfig is what serve runs with.
type serveConfig struct {
	dir      string // empty: a temporary directory, removed at the end
	port     int
	generate int
	seed     uint64
}

func (a app) serve(ctx context.Context, args []string) error {
	fs := a.flags("serve")
	var cfg serveConfig
	fs.StringVar(&cfg.dir, "dir", "", "directory for config and database, served again if it holds one (default: temporary, removed at exit)")
	fs.IntVar(&cfg.port, "port", 0, "loopback port (default: a free one)")
	fs.IntVar(&cfg.generate, "generate", 0, "also load this many generated entries")
	fs.Uint64Var(&cfg.seed, "seed", 1, "seed of the generated entries")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	srv, cleanup, err := a.startServer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer cleanup()
	fmt.Fprintf(a.stdout, "registry running (%d generated entries, %s)\n"+
		"URL:      %s\nbase DN:  %s\nbind DN:  %s\npassword: %s\ndir:      %s\n"+
		"Ctrl-C stops it.\n",
		cfg.generate, "fixtures of the test cards", srv.URL, srv.BaseDN, srv.BindDN, srv.BindPassword, srv.Dir)
	// A register that crashes comes back, on the same port with the same
	// data, as a supervised production one would: tests kill slapd with -9
	// and watch what Vouch makes of it.
	for {
		select {
		case <-ctx.Done():
			if err := srv.Stop(); err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			return nil
		case <-srv.Done():
		}
		if ctx.Err() != nil {
			continue
		}
		fmt.Fprintf(a.stderr, "testregistry: slapd exited; starting it again\n%s", srv.Output())
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := srv.Start(sctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("serve: slapd exited and did not start again: %w", err)
		}
	}
}

// startServer builds and starts a slapd for cfg. cleanup stops it and
// removes a temporary directory; it is safe after Stop.
func (a app) startServer(ctx context.Context, cfg serveConfig) (srv *registry.Server, cleanup func(), err error) {
	dir := cfg.dir
	var removeDir func()
	if dir == "" {
		if dir, err = os.MkdirTemp(a.tempDir, "testregistry-"); err != nil {
			return nil, nil, err
		}
		removeDir = func() { os.RemoveAll(dir) }
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	} else if registry.HasDatabase(dir) {
		if cfg.generate > 0 {
			return nil, nil, fmt.Errorf("%s already holds a register; -generate makes a new one only in an empty directory", dir)
		}
		if srv, err = registry.OpenServer(dir, cfg.port, nil); err != nil {
			return nil, nil, err
		}
		if err := srv.Start(ctx); err != nil {
			return nil, nil, err
		}
		return srv, func() {
			if err := srv.Stop(); err != nil {
				fmt.Fprintln(a.stderr, "testregistry:", err)
			}
		}, nil
	}
	fail := func(err error) (*registry.Server, func(), error) {
		if removeDir != nil {
			removeDir()
		}
		return nil, nil, err
	}

	opts := registry.ServerOptions{Port: cfg.port, Fixtures: true}
	genErr := make(chan error, 1)
	pr, pw := io.Pipe()
	if cfg.generate > 0 {
		// Stream the register into slapadd: no copy of it on disk.
		go func() {
			err := registry.Generate(ctxWriter{ctx, pw}, cfg.generate, cfg.seed, a.progressBar(cfg.generate))
			pw.CloseWithError(err)
			genErr <- err
		}()
		opts.Seed = []io.Reader{pr}
	} else {
		genErr <- nil
	}
	srv, err = registry.NewServer(dir, opts)
	// If slapadd quit early nobody reads the pipe any more: closing it ends
	// the generator instead of leaving it blocked.
	pr.Close()
	// An interrupted generator leaves a short register that slapadd took
	// without complaint; its error is the one that counts.
	if gerr := <-genErr; gerr != nil && err == nil {
		err = fmt.Errorf("generate: %w", gerr)
	}
	if err != nil {
		return fail(err)
	}
	if err := srv.Start(ctx); err != nil {
		return fail(err)
	}
	return srv, func() {
		if err := srv.Stop(); err != nil {
			fmt.Fprintln(a.stderr, "testregistry:", err)
		}
		if removeDir != nil {
			removeDir()
		}
	}, nil
}
