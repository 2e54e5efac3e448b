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
	"path/filepath"
	"strings"
	"time"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
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
	Bus       bus.Config
	Bucket    string `env:"VOUCH_AUTHORIZATION_BUCKET, default=authorizations"`
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
	code := fs.String("code", "", "the phone's code; several separated by commas")
	codesFile := fs.String("codes", "", "a file of phone codes, one a line (phone simulate -codes writes one)")
	onset := fs.String("onset", "", "symptom onset date, YYYY-MM-DD (optional)")
	out := fs.String("out", "", "write the bundle to this file; with several codes, a directory for CODE.bundle files")
	publish := fs.Bool("publish", false, "put the bundles in the authorizations bucket (NATS_URL), for the phones to pick up")
	verbose := fs.Bool("v", false, "also print the technical cause of a refusal, after the reason")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *cardURI == "" || *attURI == "" || (*code == "" && *codesFile == "") || (*out == "" && !*publish) || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: vouch bundle issue -card URI -attestation URI -code CODE[,CODE...] | -codes FILE  -out FILE|DIR and/or -publish  (PINs from VOUCH_CARD_PIN, VOUCH_HSM_PIN)")
		if *cardURI == "" || *attURI == "" {
			fmt.Fprintln(stderr, explainMissing(errors.New("-card takes a test card's pkcs11: URI, such as $VOUCH_TEST_CARD_GP; -attestation takes $VOUCH_ATTESTATION_URI")))
		}
		return exitError(2)
	}
	var cfg issueConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if cfg.Trust.Profile == uzi.Production().Name() {
		return errors.New("bundle issue attests without the back office's checks: it runs only under a test card profile (VOUCH_CARD_PROFILE=test)")
	}
	// It never attests "active" without asking a register: the attestation
	// says the register was asked.
	if cfg.Directory.URL == "" {
		return errors.New("bundle issue asks the register before it attests: set VOUCH_REGISTRY_URL (make demo starts a test register)")
	}
	// An embedded bus in this short-lived process would hold the bundles
	// where no phone API looks.
	if *publish && cfg.Bus.URL == "" {
		return errors.New("-publish puts the bundles on the running system's bus: set NATS_URL (and VOUCH_BUS_TOKEN)")
	}
	// An empty PIN would be tried on the card, and count as a wrong one.
	if cfg.CardPIN == "" || cfg.HSMPIN == "" {
		return errors.New("bundle issue logs in to the card (VOUCH_CARD_PIN) and to the back end's token (VOUCH_HSM_PIN): set both")
	}
	codes, err := issueCodes(*code, *codesFile)
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
		// The reason, in words; the error chain is for -v.
		return refused(stdout, protocol.Verdict(err), cause(*verbose, err))
	}
	dir, err := directory.New(cfg.Directory)
	if err != nil {
		return err
	}
	dec, err := license.New(cfg.License, dir, nil, slog.New(slog.NewTextHandler(stderr, nil))).Decide(ctx, id)
	if !dec.Allowed {
		fmt.Fprintf(stdout, "REFUSED  %s\n%s\n", dec.Reason, dec.Reason.Text(defaultLang()))
		if c := cause(*verbose, err); c != nil {
			fmt.Fprintf(stdout, "  cause  %v\n", c)
		}
		return exitError(1)
	}
	type issued struct {
		code phonecode.Code
		aid  [protocol.AuthorizationIDLen]byte
		raw  []byte
	}
	bundles := make([]issued, 0, len(codes))
	for _, pc := range codes {
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
			// Not the card's fault: say so, whatever -v.
			return refused(stdout, protocol.Verdict(err), fmt.Errorf("the bundle just made does not verify: %w", err))
		}
		bundles = append(bundles, issued{pc, aid, raw})
	}
	if *out != "" {
		if len(bundles) > 1 {
			if err := os.MkdirAll(*out, 0o700); err != nil {
				return err
			}
		}
		for _, b := range bundles {
			file := *out
			if len(bundles) > 1 {
				file = filepath.Join(*out, b.code.Compact()+".bundle")
			}
			if err := os.WriteFile(file, b.raw, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "bundle %x for %s signed by %s, written to %s\n", b.aid, b.code, cert.Subject.CommonName, file)
		}
	}
	if *publish {
		entries := make([]bus.KeyValue, len(bundles))
		for i, b := range bundles {
			entries[i] = bus.KeyValue{Key: backoffice.BucketKey(b.code), Value: b.raw}
		}
		if err := publishBundles(ctx, cfg.Bus, cfg.Bucket, entries); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "published %d bundles to bucket %s, signed by %s\n", len(bundles), cfg.Bucket, cert.Subject.CommonName)
	}
	return nil
}

// issueCodes parses the codes of -code (comma-separated) and -codes (a
// file, one a line), all before anything is signed.
func issueCodes(list, file string) ([]phonecode.Code, error) {
	var texts []string
	if list != "" {
		texts = strings.Split(list, ",")
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		texts = append(texts, strings.Split(string(b), "\n")...)
	}
	var codes []phonecode.Code
	for _, t := range texts {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		pc, err := phonecode.Parse(t)
		if err != nil {
			return nil, fmt.Errorf("code %q: %w", t, err)
		}
		codes = append(codes, pc)
	}
	if len(codes) == 0 {
		return nil, errors.New("no phone code given")
	}
	return codes, nil
}

// publishBundles puts the bundles where the phone API picks them up, as
// the back office does, and returns once the bus acknowledged them.
func publishBundles(ctx context.Context, cfg bus.Config, bucket string, entries []bus.KeyValue) error {
	b, err := bus.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	kv, err := b.ExpiringBucket(ctx, bucket, "Vouched authorizations by phone code, for pickup", protocol.MaxValidity)
	if err != nil {
		return err
	}
	return kv.PutAll(ctx, entries)
}

// moduleOf is the module u names, SoftHSM2's when it names none.
func moduleOf(u p11.URI) string {
	if u.ModulePath != "" {
		return u.ModulePath
	}
	return "/usr/lib/softhsm/libsofthsm2.so"
}

// refused reports a refusal the way bundle verify does, exit status 1:
// the reason, and after it the technical cause when there is one to show.
func refused(stdout io.Writer, reason protocol.Reason, cause error) error {
	fmt.Fprintf(stdout, "REFUSED  %s\n%s\n", reason, reason.Text(defaultLang()))
	if cause != nil {
		fmt.Fprintf(stdout, "cause: %v\n", cause)
	}
	return exitError(1)
}

// cause is err when -v asked for the technical cause, else nil.
func cause(verbose bool, err error) error {
	if verbose {
		return err
	}
	return nil
}
