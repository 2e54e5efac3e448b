package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/database"
)

type auditConfig struct {
	Database database.Config
}

const auditUsage = "usage: vouch audit verify [-head HASH]"

// runAudit is `vouch audit verify`: recompute the audit log's hash chain
// and say where it does not hold. Exit status 0 intact, 1 not, 2 could not
// run. It prints the chain's head for the auditor to note; -head checks
// that a head noted earlier is still in the chain (history not rewritten).
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && isHelp(args[0]) {
		fmt.Fprintln(stdout, auditUsage)
		return nil
	}
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, auditUsage)
		return exitError(2)
	}
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), auditUsage); fs.PrintDefaults() }
	headHex := fs.String("head", "", "a head noted earlier (hex): it must still be in the chain")
	if err := parseFlags(fs, args[1:], stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, auditUsage)
		return exitError(2)
	}
	var known []byte
	if *headHex != "" {
		b, err := hex.DecodeString(*headHex)
		if err != nil || len(b) != 32 {
			fmt.Fprintln(stderr, "vouch audit verify: -head takes the 64 hex digits a verify printed")
			return exitError(2)
		}
		known = b
	}
	var cfg auditConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	db, err := database.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	var rep audit.Report
	// One snapshot: rows appended meanwhile neither help nor hide.
	err = pgx.BeginTxFunc(ctx, db.Pool(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) (err error) {
		rep, err = audit.Verify(ctx, tx, known)
		return err
	})
	var p audit.Problem
	if errors.As(err, &p) {
		fmt.Fprintf(stdout, "BROKEN: %v (%d rows hold before it)\n", p, rep.Rows)
		return exitError(1)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "intact: %d rows\nhead:   %s\n", rep.Rows, rep.HeadHex())
	return nil
}
