package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/trust"
	"github.com/vouch-nl/vouch/internal/uzi"
)

type issueConfig struct {
	Trust     trust.Config
	Directory directory.Config
	License   license.Config
	CardPIN   string `env:"VOUCH_CARD_PIN"`
	HSMPIN    string `env:"VOUCH_HSM_PIN"`
}

// runBundleIssue is `vouch bundle issue`: it has a card on a token sign a
// statement and the back end's attestation key countersign it, without the
// back office. It exists for test environments — demos, support rehearsals,
// load tests — and refuses to run under the production card profile, because
// it attests without the back office's checks. When a register is
// configured (VOUCH_REGISTRY_URL) it asks it, and refuses as vouching would.
func runBundleIssue(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle issue", flag.ContinueOnError)
	cardURI := fs.String("card", "", "pkcs11: URI of the card's signature key")
	attURI := fs.String("attestation", "", "pkcs11: URI of the back end's attestation key")
	code := fs.String("code", "", "the phone's code")
	onset := fs.String("onset", "", "symptom onset date, YYYY-MM-DD (optional)")
	out := fs.String("out", "", "write the bundle to this file")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *cardURI == "" || *attURI == "" || *code == "" || *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: vouch bundle issue -card URI -attestation URI -code CODE -out FILE  (PINs from VOUCH_CARD_PIN, VOUCH_HSM_PIN)")
		return exitError(2)
	}
	var cfg issueConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if cfg.Trust.Profile == uzi.Production().Name() {
		return errors.New("bundle issue attests without the back office's checks: it runs only under a test card profile")
	}
	// It never attests "active" without asking a register: the attestation
	// says the register was asked.
	if cfg.Directory.URL == "" {
		return errors.New("bundle issue asks the register before it attests: set VOUCH_REGISTRY_URL (make demo starts a test register)")
	}
	pc, err := phonecode.Parse(*code)
	if err != nil {
		return err
	}
	now := time.Now()
	tr, err := cfg.Trust.Load(now)
	if err != nil {
		return err
	}
	// The finished bundle is verified below as a phone would; this verifier
	// also holds the test profile's roots, so a card outside the test PKI
	// is refused before anything is signed.
	verifier, err := protocol.NewVerifier(tr)
	if err != nil {
		return err
	}
	cu, err := p11.ParseURI(*cardURI)
	if err != nil {
		return err
	}
	au, err := p11.ParseURI(*attURI)
	if err != nil {
		return err
	}
	// Each URI names its own module (a card reader's and an HSM's, say);
	// Open counts its users, so one module named twice is loaded once.
	// Both load before the card is asked for its PIN.
	cm, err := p11.Open(moduleOf(cu))
	if err != nil {
		return fmt.Errorf("card: %w", err)
	}
	defer cm.Close()
	am, err := p11.Open(moduleOf(au))
	if err != nil {
		return fmt.Errorf("attestation key: %w", err)
	}
	defer am.Close()
	card, err := cm.Signer(cu, cfg.CardPIN)
	if err != nil {
		return fmt.Errorf("card: %w", err)
	}
	defer card.Close()
	// The signature key asks for the PIN at every signature; p11 wipes each copy.
	card.SetPINPrompt(func() ([]byte, error) { return []byte(cfg.CardPIN), nil })
	att, err := am.Signer(au, cfg.HSMPIN)
	if err != nil {
		return fmt.Errorf("attestation key: %w", err)
	}
	defer att.Close()
	cert := card.Certificate()
	if cert == nil {
		return errors.New("card: no certificate beside the signature key")
	}
	// The card is checked as the verifier will check it — issuing CA,
	// usage, validity, revocation, profile — before it signs anything.
	id, err := verifier.VerifyCard(cert.Raw, uzi.PurposeVouch, now)
	if err != nil {
		fmt.Fprintf(stderr, "vouch: %v\n", err)
		return refused(stdout, protocol.Verdict(err))
	}
	dir, err := directory.New(cfg.Directory)
	if err != nil {
		return err
	}
	dec, err := license.New(cfg.License, dir, nil, slog.New(slog.NewTextHandler(stderr, nil))).Decide(ctx, id)
	if !dec.Allowed {
		fmt.Fprintf(stdout, "REFUSED  %s\n%s\n", dec.Reason, dec.Reason.Text(defaultLang()))
		if err != nil {
			fmt.Fprintf(stdout, "  cause  %v\n", err)
		}
		return exitError(1)
	}
	var aid [protocol.AuthorizationIDLen]byte
	if _, err := rand.Read(aid[:]); err != nil {
		return err
	}
	st, err := protocol.NewStatement(tr.Jurisdiction, aid, pc, now, *onset, cert.Raw)
	if err != nil {
		return err
	}
	enc, sig, err := protocol.SignStatement(card, st)
	if err != nil {
		return err
	}
	aenc, asig, err := protocol.Attest(att, enc, id, protocol.LicenseActive, st.ExpiresAt, now)
	if err != nil {
		return err
	}
	raw := (&protocol.Bundle{Statement: enc, StatementSignature: sig, Cert: cert.Raw, Attestation: aenc, AttestationSignature: asig}).Marshal()
	if _, err := verifier.Verify(raw, nil, now); err != nil {
		fmt.Fprintf(stderr, "vouch: the bundle just made does not verify: %v\n", err)
		return refused(stdout, protocol.Verdict(err))
	}
	if err := os.WriteFile(*out, raw, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bundle %x for %s signed by %s, written to %s\n", aid, pc, cert.Subject.CommonName, *out)
	return nil
}

// moduleOf is the module u names, SoftHSM2's when it names none.
func moduleOf(u p11.URI) string {
	if u.ModulePath != "" {
		return u.ModulePath
	}
	return "/usr/lib/softhsm/libsofthsm2.so"
}

// refused reports a refusal the way bundle verify does, exit status 1.
func refused(stdout io.Writer, reason protocol.Reason) error {
	fmt.Fprintf(stdout, "REFUSED  %s\n%s\n", reason, reason.Text(defaultLang()))
	return exitError(1)
}
