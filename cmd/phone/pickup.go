package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/phoneclient"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/transparency"
	"github.com/vouch-nl/vouch/internal/trust"
)

// runPickup polls for the bundle until the phone is vouched, verifies it
// offline and saves it.
func runPickup(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("pickup", stdout)
	keyFile := fs.String("key", "phone.key", "the phone's key file")
	api := fs.String("api", "http://127.0.0.1:8081", "the phone API's base URL")
	out := fs.String("out", "bundle.bin", "write the verified bundle here")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	poll := fs.Duration("poll", time.Second, "first wait between polls (doubles up to -poll-max)")
	pollMax := fs.Duration("poll-max", 30*time.Second, "longest wait between polls")
	state := fs.String("state", "phone-state", "directory keeping the log's checkpoint and the leaves to prove (with -log-key)")
	lf := addLogFlags(fs, "default http://127.0.0.1:8082/log/")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The log's policy is read before polling too: a bad key need not wait.
	pl, err := lf.open(*state, "http://127.0.0.1:8082/log/")
	if err != nil {
		return err
	}
	priv, err := readKey(*keyFile)
	if err != nil {
		return err
	}
	// The trust is read before polling: a phone without roots need not wait.
	v, err := phoneVerifier(ctx, time.Now())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := phoneclient.New(*api)
	bundle, err := c.PickupWait(ctx, priv, phoneclient.Backoff{Initial: *poll, Max: *pollMax})
	if err != nil {
		if errors.Is(err, phoneclient.ErrPending) {
			return fmt.Errorf("not vouched within %s", *timeout)
		}
		return err
	}
	res, err := v.Verify(bundle, priv.Public().(ed25519.PublicKey), time.Now())
	if err != nil {
		// The server must never be trusted blindly: the phone refuses a
		// bundle its own roots do not vouch for, and says why.
		r := protocol.Verdict(err)
		fmt.Fprintf(stdout, "REFUSED  %s\n%s\n  cause  %v\n", r, r.Text(i18n.FromEnv()), err)
		return exitError(1)
	}
	if err := os.WriteFile(*out, bundle, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "OK  bundle %x vouched by %s, valid until %s, written to %s\n",
		res.Statement.AuthorizationID, res.Signer.Subject.CommonName, res.Statement.ExpiresAt.UTC().Format(time.RFC3339), *out)
	if pl == nil {
		return nil
	}
	// The leaf is the hash of the very bytes picked up: the phone computes
	// it, records it, and proves it now or at a later sync (the log is fed
	// asynchronously: it may not be there yet).
	entry := transparency.AuthorizationEntry(bundle, res.Statement.IssuedAt)
	if err := pl.record(hex.EncodeToString(res.Statement.AuthorizationID[:]), entry); err != nil {
		return err
	}
	return pl.check(ctx, stdout)
}

// phoneVerifier is the verifier of an offline phone: the configured roots
// and attestation keys, no revocation.
func phoneVerifier(ctx context.Context, now time.Time) (*protocol.Verifier, error) {
	tr, err := phoneTrust(ctx, now)
	if err != nil {
		return nil, err
	}
	return protocol.NewVerifier(tr)
}

// phoneTrust is the trust of the environment without revocation.
func phoneTrust(ctx context.Context, now time.Time) (protocol.Trust, error) {
	var cfg struct{ Trust trust.Config }
	if err := envconfig.Process(ctx, &cfg); err != nil {
		return protocol.Trust{}, fmt.Errorf("configuration: %w", err)
	}
	if len(cfg.Trust.AttestationKeys) == 0 {
		return protocol.Trust{}, errors.New("no attestation key to verify bundles with (VOUCH_ATTESTATION_KEYS: the back end's attestation public key; after make demo, eval \"$(bin/vouch demo env)\" sets it)")
	}
	// A phone has no CRLs: it cannot fetch them offline, and the server
	// checks revocation again at upload.
	cfg.Trust.CRLs = nil
	tr, err := cfg.Trust.Load(now)
	if err != nil {
		return protocol.Trust{}, err
	}
	tr.Revocation = nil
	return tr, nil
}
