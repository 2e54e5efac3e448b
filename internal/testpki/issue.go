package testpki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// Issuer makes bundles as the back office would, without it: a test card
// signs the statement and the back end's attestation key countersigns it,
// attesting an active license. The end-to-end tests and the benchmark use
// it to vouch thousands of phones; it does not ask a register, so it is for
// tests only.
//
// It holds one signer of the card: a card's sessions share one login, and
// closing one invalidates the others' objects, so two signers of one card
// in one process break each other. Issue is safe for concurrent use, one
// signature at a time.
type Issuer struct {
	mu           sync.Mutex
	mod          *p11.Module
	card, att    *p11.Signer
	cert         *x509.Certificate
	id           uzi.Identity
	jurisdiction string
}

// OpenIssuer opens the signature key of m's card named card ("gp") and the
// back end's attestation key. It sets SOFTHSM2_CONF to m's when it is not
// set, since the module reads it when it loads. Close it when done.
func OpenIssuer(m *Manifest, card string) (iss *Issuer, err error) {
	var mc *ManifestCard
	for i := range m.Cards {
		if m.Cards[i].Name == card {
			mc = &m.Cards[i]
		}
	}
	if mc == nil {
		return nil, fmt.Errorf("testpki: no card %q in the manifest", card)
	}
	su, err := p11.ParseURI(mc.SignURI)
	if err != nil {
		return nil, fmt.Errorf("testpki: card %s: %w", card, err)
	}
	au, err := p11.ParseURI(m.Backend.AttestationURI)
	if err != nil {
		return nil, fmt.Errorf("testpki: attestation key: %w", err)
	}
	if os.Getenv("SOFTHSM2_CONF") == "" {
		os.Setenv("SOFTHSM2_CONF", m.SoftHSMConf)
	}
	mod, err := p11.Open(m.Module)
	if err != nil {
		return nil, err
	}
	// Closed through its own variable: a failing return sets iss to nil
	// before the deferred call runs.
	opened := &Issuer{mod: mod, jurisdiction: "NL"}
	iss = opened
	defer func() {
		if err != nil {
			opened.Close()
		}
	}()
	if iss.card, err = mod.Signer(su, mc.PIN); err != nil {
		return nil, fmt.Errorf("testpki: card %s: %w", card, err)
	}
	pin := mc.PIN
	iss.card.SetPINPrompt(func() ([]byte, error) { return []byte(pin), nil })
	if iss.att, err = mod.Signer(au, m.Backend.PIN); err != nil {
		return nil, fmt.Errorf("testpki: attestation key: %w", err)
	}
	if iss.cert = iss.card.Certificate(); iss.cert == nil {
		return nil, fmt.Errorf("testpki: card %s: no certificate beside the signature key", card)
	}
	if iss.id, err = uzi.FromCertificate(iss.cert); err != nil {
		return nil, fmt.Errorf("testpki: card %s: %w", card, err)
	}
	return iss, nil
}

// Identity is the card holder's, as the attestation names it (its UZI is
// the key of the license record ingest looks up).
func (i *Issuer) Identity() uzi.Identity { return i.id }

// Certificate is the card's signature certificate.
func (i *Issuer) Certificate() *x509.Certificate { return i.cert }

// Issue makes a bundle for the phone with key phone, issued now, with a
// fresh authorization id and no symptom onset.
func (i *Issuer) Issue(phone ed25519.PublicKey) ([]byte, error) {
	return i.IssueAt(phone, time.Now())
}

// IssueAt makes a bundle for the phone issued at now.
func (i *Issuer) IssueAt(phone ed25519.PublicKey, now time.Time) ([]byte, error) {
	if len(phone) != ed25519.PublicKeySize {
		return nil, errors.New("testpki: not an Ed25519 public key")
	}
	var aid [protocol.AuthorizationIDLen]byte
	if _, err := rand.Read(aid[:]); err != nil {
		return nil, err
	}
	st, err := protocol.NewStatement(i.jurisdiction, aid, phonecode.FromPublicKey(phone), now, "", i.cert.Raw)
	if err != nil {
		return nil, err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	enc, sig, err := protocol.SignStatement(i.card, st)
	if err != nil {
		return nil, fmt.Errorf("testpki: card: %w", err)
	}
	aenc, asig, err := protocol.Attest(i.att, enc, i.id, protocol.LicenseActive, st.ExpiresAt, now)
	if err != nil {
		return nil, fmt.Errorf("testpki: attestation: %w", err)
	}
	return (&protocol.Bundle{Statement: enc, StatementSignature: sig, Cert: i.cert.Raw, Attestation: aenc, AttestationSignature: asig}).Marshal(), nil
}

// Close closes the keys' sessions and the module.
func (i *Issuer) Close() error {
	if i.card != nil {
		i.card.Close()
	}
	if i.att != nil {
		i.att.Close()
	}
	if i.mod != nil {
		return i.mod.Close()
	}
	return nil
}
