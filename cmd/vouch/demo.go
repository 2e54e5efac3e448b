//go:build !production

package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// `vouch demo env` exists in test builds only: a production binary has no
// make demo to describe.
func init() {
	commands = append(commands, command{"demo env|store", "print make demo's environment, for eval \"$(bin/vouch demo env)\"; store bundles as the back office would", "", runDemo})
	demoHint = `make demo's value: eval "$(bin/vouch demo env)"`
}

const demoUsage = `usage: vouch demo env
       vouch demo store BUNDLE...

env prints the environment of the running make demo — its test cards, trust
files, register, bus and addresses — as shell exports, for a new shell:

	eval "$(bin/vouch demo env)"

make demo writes it to $VOUCH_STATE_DIR/demo.env (default .vouch/demo.env)
once the system runs. Its register and bus live only as long as the demo:
without a running demo this refuses (status 2).

store stands in for the back office beside vouch bundle issue -publish: it
stores each bundle file as a vouch in the database (DATABASE_URL), marked
published, so that the transparency log's writer logs it.`

// runDemo is `vouch demo env`.
func runDemo(ctx context.Context, _ *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) >= 1 && isHelp(args[len(args)-1]) {
		fmt.Fprintln(stdout, demoUsage)
		return nil
	}
	if len(args) >= 2 && args[0] == "store" {
		return demoStore(ctx, args[1:], stdout)
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

// demoStore stores bundle files as the back office stores a vouch (its
// row in authorizations, here already published: vouch bundle issue
// -publish put it on the bus), so that the demo's transparency log has
// the vouches its phones pick up. A bundle stored before is left alone.
func demoStore(ctx context.Context, files []string, stdout io.Writer) error {
	var cfg struct{ Database database.Config }
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	db, err := database.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		b, err := protocol.ParseBundle(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		st, err := protocol.ParseStatement(b.Statement)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		cert, err := x509.ParseCertificate(b.Cert)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		id, err := uzi.FromCertificate(cert)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if _, err := db.Pool().Exec(ctx, `insert into authorizations
			(id, phone_code, statement, statement_sig, attestation, attestation_sig, signer_cert, uzi_number, role_code,
			 created_at, expires_at, published_at)
			values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), $10, now())
			on conflict (id) do nothing`,
			st.AuthorizationID, st.PhoneCode[:], b.Statement, b.StatementSignature, b.Attestation, b.AttestationSignature, b.Cert,
			id.UZI, id.Role, st.ExpiresAt); err != nil {
			return fmt.Errorf("store %s: %w", f, err)
		}
		fmt.Fprintf(stdout, "stored authorization %x as the back office would\n", st.AuthorizationID)
	}
	return nil
}
