package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/vouch-nl/vouch/internal/audit"
)

const auditDownloadUsage = "usage: vouch audit verify-download [-key FILE]... FILE FILE.sig"

// runAuditGroup is the audit commands: verify-download here, verify in
// audit.go.
func runAuditGroup(ctx context.Context, _ *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && isHelp(args[0]) {
		fmt.Fprintf(stdout, "%s\n%s\n", auditUsage, auditDownloadUsage)
		return nil
	}
	if len(args) > 0 && args[0] == "verify-download" {
		return runAuditDownload(ctx, args[1:], stdout, stderr)
	}
	return runAudit(ctx, args, stdout, stderr)
}

// keyFiles is -key, given once per key.
type keyFiles []string

func (k *keyFiles) String() string     { return strings.Join(*k, ",") }
func (k *keyFiles) Set(v string) error { *k = append(*k, v); return nil }

// runAuditDownload is `vouch audit verify-download FILE SIG`: checks an
// audit trail download (CSV or JSON, from the back office's audit trail
// page) against its detached signature with the attestation keys an
// inspector trusts (-key, PEM public keys or certificates; without it
// VOUCH_ATTESTATION_KEYS), then its rows: their count, order, newest row
// and each row's hash. It needs no database: a copy handed to an
// inspector is checked anywhere. Exit status 0 verified, 1 not, 2 could
// not run.
func runAuditDownload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit verify-download", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), auditDownloadUsage); fs.PrintDefaults() }
	var files keyFiles
	fs.Var(&files, "key", "a trusted attestation key: a PEM public key or certificate (repeat for several; default VOUCH_ATTESTATION_KEYS)")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(stderr, auditDownloadUsage)
		return exitError(2)
	}
	if len(files) == 0 {
		var cfg struct {
			Keys []string `env:"VOUCH_ATTESTATION_KEYS"`
		}
		if err := loadConfig(ctx, &cfg); err != nil {
			return err
		}
		files = cfg.Keys
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "vouch audit verify-download: name the attestation key with -key (or VOUCH_ATTESTATION_KEYS)")
		return exitError(2)
	}
	var keys []crypto.PublicKey
	for _, f := range files {
		k, err := readPublicKeys(f)
		if err != nil {
			fmt.Fprintf(stderr, "vouch audit verify-download: %v\n", err)
			return exitError(2)
		}
		keys = append(keys, k...)
	}
	file, err := os.Open(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "vouch audit verify-download: %v\n", err)
		return exitError(2)
	}
	defer file.Close()
	sig, err := readLimited(fs.Arg(1), 64<<10)
	if err != nil {
		fmt.Fprintf(stderr, "vouch audit verify-download: %v\n", err)
		return exitError(2)
	}
	st, err := audit.VerifyDownload(file, sig, keys)
	switch {
	case errors.Is(err, audit.ErrSignatureFile), errors.Is(err, audit.ErrUnknownKey), errors.Is(err, audit.ErrBadSignature),
		errors.Is(err, audit.ErrFileChanged), errors.Is(err, audit.ErrContent):
		fmt.Fprintf(stdout, "NOT VERIFIED: %v\n", err)
		return exitError(1)
	case err != nil:
		fmt.Fprintf(stderr, "vouch audit verify-download: %v\n", err)
		return exitError(2)
	}
	filter := st.Filter
	if filter == "" {
		filter = "(none: every row)"
	}
	fmt.Fprintf(stdout, "verified: %s\nformat:   %s\nrows:     %d\nup to:    row %d of the audit log\nfilter:   %s\nsha256:   %x\nkey:      %x\n",
		fs.Arg(0), st.Format, st.Rows, st.UpTo, filter, st.SHA256, st.KeyID)
	return nil
}

// readPublicKeys reads the ECDSA keys of a PEM file: public keys and
// certificates.
func readPublicKeys(file string) ([]crypto.PublicKey, error) {
	b, err := readLimited(file, 1<<20)
	if err != nil {
		return nil, err
	}
	var out []crypto.PublicKey
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		var pub any
		switch blk.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(blk.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
				pub = c.PublicKey
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if k, ok := pub.(*ecdsa.PublicKey); ok {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no ECDSA public key or certificate (PEM)", file)
	}
	return out, nil
}

// readLimited reads a small file whole, refusing one larger than limit.
func readLimited(file string, limit int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, limit)
	}
	return b, nil
}
