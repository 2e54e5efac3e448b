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
	"path/filepath"
	"strings"
	"time"

	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/trust"
)

type bundleConfig struct {
	Trust trust.Config
}

// stdin is what FILE "-" reads; tests replace it.
var stdin io.Reader = os.Stdin

// Remarks under an accepted bundle: what the verdict did not cover.
const (
	noteNoPhoneKey = "bundle.note.no-phone-key"
	noteNoCRLs     = "bundle.note.no-crls"
)

// runBundle is `vouch bundle verify`: it tells support staff, in plain words,
// why a bundle is accepted or refused. Exit status 0 means accepted, 1
// refused, 2 that the command itself could not run (bad flags, an unreadable
// file, a trust configuration that does not load), said in one line on
// stderr.
func runBundle(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	if len(args) > 0 && args[0] == "issue" {
		return runBundleIssue(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 1 && isHelp(args[0]) {
		fmt.Fprintln(stdout, "usage: vouch bundle verify [flags] FILE | vouch bundle issue [flags]   (-h after either for its flags)")
		return nil
	}
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: vouch bundle verify [flags] FILE | vouch bundle issue [flags]")
		return exitError(2)
	}
	fs := flag.NewFlagSet("bundle verify", flag.ContinueOnError)
	phoneHex := fs.String("phone-key", "", "the phone's Ed25519 public key, hex; without it the code binding is not checked (with -vectors: the case's key)")
	at := fs.String("at", "", "verify as of this time (RFC 3339), e.g. the moment of upload; default now")
	lang := fs.String("lang", defaultLang(), "language of the explanation: en or nl")
	vectors := fs.String("vectors", "", "take trust and time from a test vectors file (testdata/bundle/vectors.json)")
	verbose := fs.Bool("v", false, "also print the technical cause of a refusal")
	if err := parseFlags(fs, args[1:], stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: vouch bundle verify [flags] FILE   (FILE - reads standard input)")
		return exitError(2)
	}
	// Whatever goes wrong before a verdict is a failure to run, never a
	// refusal, and never a stack trace in front of support staff.
	fail := func(err error) error {
		fmt.Fprintf(stderr, "vouch bundle verify: %s\n", oneLine(explainMissing(err).Error()))
		return exitError(2)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fail(fmt.Errorf("internal error: %v", r))
		}
	}()
	var phone ed25519.PublicKey
	if *phoneHex != "" {
		if phone, err = parsePhoneKey(*phoneHex); err != nil {
			return fail(fmt.Errorf("-phone-key: %w", err))
		}
	}
	now := time.Now()
	if *at != "" {
		if now, err = time.Parse(time.RFC3339, *at); err != nil {
			return fail(fmt.Errorf("-at: want an RFC 3339 time such as 2026-11-22T01:00:00Z: %w", err))
		}
	}
	file := fs.Arg(0)
	raw, err := readBundle(file)
	if err != nil {
		return fail(err)
	}
	var tr protocol.Trust
	fromCase := ""
	if *vectors != "" {
		vec, vtr, err := trust.LoadVectors(*vectors)
		if err != nil {
			return fail(fmt.Errorf("-vectors: %w", err))
		}
		tr = vtr
		if *at == "" {
			now = vec.Now
		}
		if phone == nil {
			c, err := vectorCase(vec, file)
			if err != nil {
				return fail(fmt.Errorf("-vectors: %w", err))
			}
			if c != nil && c.PhoneKeyHex != "" {
				if phone, err = parsePhoneKey(c.PhoneKeyHex); err != nil {
					return fail(fmt.Errorf("-vectors: case %s: phone_public_key: %w", c.Name, err))
				}
				fromCase = c.Name
			}
		}
	} else {
		var cfg bundleConfig
		if err := loadConfig(ctx, &cfg); err != nil {
			return fail(err)
		}
		// CRLs must be current at the moment verified, which -at may move.
		if tr, err = cfg.Trust.Load(now); err != nil {
			return fail(err)
		}
	}
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		return fail(err)
	}
	res, err := v.Verify(raw, phone, now)
	reason := protocol.Verdict(err)
	if err != nil {
		fmt.Fprintf(stdout, "REFUSED  %s\n%s\n", reason, reason.Text(*lang))
		if *verbose {
			fmt.Fprintf(stdout, "cause: %v\n", err)
		}
		if fromCase != "" {
			fmt.Fprintf(stdout, "  phone key       from the vectors' case %q\n", fromCase)
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
	switch {
	case fromCase != "":
		fmt.Fprintf(stdout, "  phone key       from the vectors' case %q\n", fromCase)
	case phone == nil:
		fmt.Fprintf(stdout, "  note            %s\n", i18n.T(*lang, noteNoPhoneKey))
	}
	if tr.Revocation == nil {
		fmt.Fprintf(stdout, "  note            %s\n", i18n.T(*lang, noteNoCRLs))
	}
	return nil
}

// readBundle reads FILE, or standard input for "-", but never more than one
// byte past the largest bundle: an oversized input costs 16 KiB to read,
// whatever its size, and the verifier still sees that it is too large.
func readBundle(file string) ([]byte, error) {
	r, name := stdin, "standard input"
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r, name = f, file
	}
	b, err := io.ReadAll(io.LimitReader(r, protocol.MaxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}

func parsePhoneKey(s string) (ed25519.PublicKey, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("want 64 hex digits (an Ed25519 public key)")
	}
	return b, nil
}

// vectorCase returns the case of vec whose bundle is file, or nil. Paths are
// compared absolute and cleaned, so any spelling of the same path matches.
func vectorCase(vec *trust.Vectors, file string) (*trust.Case, error) {
	if file == "-" {
		return nil, nil
	}
	want, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	for i := range vec.Cases {
		got, err := filepath.Abs(vec.Cases[i].Bundle)
		if err != nil {
			return nil, err
		}
		if got == want {
			return &vec.Cases[i], nil
		}
	}
	return nil, nil
}

// oneLine joins a multi-line error (errors.Join) into one line.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

func defaultLang() string { return i18n.FromEnv() }
