package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"vouch/internal/i18n"
	"vouch/internal/protocol"
	"vouch/internal/trust"
)

type bundleConfig struct {
	Trust trust.Config
}

// runBundle is `vouch bundle verify`: it tells support staff, in plain words,
// why a bundle is accepted or refused. Exit status 0 means accepted, 1
// refused, 2 that the command itself could not run.
func runBundle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "issue" {
		return runBundleIssue(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: vouch bundle verify [flags] FILE | vouch bundle issue [flags]")
		return exitError(2)
	}
	fs := flag.NewFlagSet("bundle verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	phoneHex := fs.String("phone-key", "", "the phone's Ed25519 public key, hex; without it the code binding is not checked")
	at := fs.String("at", "", "verify as of this time (RFC 3339), e.g. the moment of upload; default now")
	lang := fs.String("lang", defaultLang(), "language of the explanation: en or nl")
	vectors := fs.String("vectors", "", "take trust and time from a test vectors file (testdata/bundle/vectors.json)")
	verbose := fs.Bool("v", false, "also print the technical cause of a refusal")
	if err := fs.Parse(args[1:]); err != nil {
		return exitError(2)
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: vouch bundle verify [flags] FILE")
		return exitError(2)
	}
	raw, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	var tr protocol.Trust
	now := time.Now()
	if *vectors != "" {
		var vec *trust.Vectors
		if vec, tr, err = trust.LoadVectors(*vectors); err != nil {
			return err
		}
		now = vec.Now
	} else {
		var cfg bundleConfig
		if err := loadConfig(ctx, &cfg); err != nil {
			return err
		}
		if tr, err = cfg.Trust.Load(now); err != nil {
			return err
		}
	}
	if *at != "" {
		if now, err = time.Parse(time.RFC3339, *at); err != nil {
			return fmt.Errorf("-at: %w", err)
		}
	}
	var phone ed25519.PublicKey
	if *phoneHex != "" {
		b, err := hex.DecodeString(*phoneHex)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return errors.New("-phone-key: want 64 hex digits (an Ed25519 public key)")
		}
		phone = b
	}
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		return err
	}
	res, err := v.Verify(raw, phone, now)
	reason := protocol.Verdict(err)
	if err != nil {
		fmt.Fprintf(stdout, "REFUSED  %s\n%s\n", reason, reason.Text(*lang))
		if *verbose {
			fmt.Fprintf(stdout, "cause: %v\n", err)
		}
		return exitError(1)
	}
	st, att := res.Statement, res.Attestation
	fmt.Fprintf(stdout, "OK  %s\n", reason.Text(*lang))
	fmt.Fprintf(stdout, "  authorization   %x\n", st.AuthorizationID)
	fmt.Fprintf(stdout, "  phone code      %s\n", st.PhoneCode)
	fmt.Fprintf(stdout, "  vouched by      %s (UZI %s, role %s, card type %s)\n", res.Signer.Subject.CommonName, res.Identity.UZI, res.Identity.Role, res.Identity.CardType)
	fmt.Fprintf(stdout, "  valid           %s to %s\n", st.IssuedAt.Format(time.RFC3339), st.ExpiresAt.Format(time.RFC3339))
	fmt.Fprintf(stdout, "  license         %s at %s (attestation key %x)\n", att.License, att.CheckedAt.Format(time.RFC3339), att.KeyID[:8])
	if phone == nil {
		fmt.Fprintln(stdout, "  note            no -phone-key given: whether the bundle belongs to the phone was not checked")
	}
	return nil
}

func defaultLang() string { return i18n.FromEnv() }
