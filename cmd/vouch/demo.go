//go:build !production

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
)

// `vouch demo env` exists in test builds only: a production binary has no
// make demo to describe.
func init() {
	commands = append(commands, command{"demo env", "print make demo's environment, for eval \"$(bin/vouch demo env)\"", "", runDemo})
	demoHint = `make demo's value: eval "$(bin/vouch demo env)"`
}

const demoUsage = `usage: vouch demo env

Prints the environment of the running make demo — its test cards, trust
files, register, bus and addresses — as shell exports, for a new shell:

	eval "$(bin/vouch demo env)"

make demo writes it to $VOUCH_STATE_DIR/demo.env (default .vouch/demo.env)
once the system runs. Its register and bus live only as long as the demo:
without a running demo this refuses (status 2).`

// runDemo is `vouch demo env`.
func runDemo(_ context.Context, _ *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) >= 1 && isHelp(args[len(args)-1]) {
		fmt.Fprintln(stdout, demoUsage)
		return nil
	}
	if len(args) != 1 || args[0] != "env" {
		fmt.Fprintln(stderr, demoUsage)
		return exitError(2)
	}
	env, err := demoEnv()
	if err != nil {
		fmt.Fprintf(stderr, "vouch demo env: %v\n", err)
		return exitError(2)
	}
	_, err = stdout.Write(env)
	return err
}

// demoStateDir is where make demo keeps its state: VOUCH_STATE_DIR, else
// .vouch in the working directory (the checkout, where make runs).
func demoStateDir() string {
	if d := os.Getenv("VOUCH_STATE_DIR"); d != "" {
		return d
	}
	return ".vouch"
}

// demoEnv reads the environment file of the running demo. The demo holds
// an exclusive lock on demo.lock while it runs; a file left by a demo that
// stopped names a register and a bus that are gone, so it is refused.
func demoEnv() ([]byte, error) {
	dir := demoStateDir()
	file := filepath.Join(dir, "demo.env")
	env, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no %s: start make demo (in the checkout, or with this VOUCH_STATE_DIR); it writes it once the system runs", file)
	}
	if err != nil {
		return nil, err
	}
	lock, err := os.Open(filepath.Join(dir, "demo.lock"))
	if err != nil {
		return nil, fmt.Errorf("make demo is not running (no %s): start it; %s is from an earlier one", filepath.Join(dir, "demo.lock"), file)
	}
	defer lock.Close()
	switch err := syscall.Flock(int(lock.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); {
	case err == nil:
		return nil, fmt.Errorf("make demo is not running: start it; %s is from an earlier one, whose register and bus are gone", file)
	case !errors.Is(err, syscall.EWOULDBLOCK):
		return nil, fmt.Errorf("%s: %w", lock.Name(), err)
	}
	return env, nil
}
