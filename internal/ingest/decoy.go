package ingest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"

	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// decoy is what a chaff upload verifies in place of a bundle: a genuine
// bundle of a PKI made at start — a root, as many intermediates as the
// configured trust has (at most one), an issuing CA of care-provider
// cards, a card certificate with an RSA-2048 key, the configured profile's
// naming scheme and policy and a profession that may vouch, an attestation
// key — checked by a protocol.Verifier of its own with a revocation set
// holding each CA's CRL. Chaff so runs the verification code a real upload
// runs, step for step, and the verification succeeds as a real one does.
type decoy struct {
	verifier *protocol.Verifier
	bundle   []byte
	phone    ed25519.PublicKey
	at       time.Time // within every validity of the decoy's: the time it is verified at
	uzi      string
}

// verify verifies the decoy bundle; its answer is always yes.
func (d *decoy) verify() error {
	_, err := d.verifier.Verify(d.bundle, d.phone, d.at)
	return err
}

func newDecoy(real protocol.Trust, now time.Time) (*decoy, error) {
	d := &decoy{at: now}
	notBefore, notAfter := now.Add(-time.Hour), now.Add(20*365*24*time.Hour)
	serial := int64(1)
	issue := func(tmpl *x509.Certificate, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
		serial++
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(serial), notBefore, notAfter
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		if err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}
	type ca struct {
		cert *x509.Certificate
		key  *ecdsa.PrivateKey
	}
	newCA := func(cn string, parent *ca) (*ca, error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
		var pc *x509.Certificate
		signer := k
		if parent != nil {
			pc, signer = parent.cert, parent.key
		}
		c, err := issue(tmpl, pc, &k.PublicKey, signer)
		if err != nil {
			return nil, err
		}
		return &ca{c, k}, nil
	}
	root, err := newCA("Vouch chaff decoy root", nil)
	if err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}
	chain := []*ca{root}
	if len(real.Intermediates) > 0 {
		in, err := newCA("Vouch chaff decoy intermediate", root)
		if err != nil {
			return nil, fmt.Errorf("ingest: decoy: %w", err)
		}
		chain = append(chain, in)
	}
	issuing, err := newCA("Vouch chaff decoy care provider CA", chain[len(chain)-1])
	if err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}
	chain = append(chain, issuing)

	// The card.
	profs := real.Profile.VouchProfessions()
	if len(profs) == 0 {
		return nil, fmt.Errorf("ingest: decoy: the profile lets no profession vouch")
	}
	d.uzi = "999999990"
	name := real.Profile.OIDCA(uzi.CardCareProvider) + "-1-" + d.uzi + "-Z-99999999-" + profs[0] + ".000-99999999"
	san, err := uzi.SANExtension(name)
	if err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}
	policy, err := x509.ParseOID(real.Profile.Policy(uzi.PurposeVouch))
	if err != nil {
		return nil, fmt.Errorf("ingest: decoy: the profile's signing policy: %w", err)
	}
	cardKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}
	card, err := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "Vouch chaff decoy card"},
		KeyUsage: x509.KeyUsageContentCommitment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		Policies: []x509.OID{policy}, ExtraExtensions: []pkix.Extension{san}}, issuing.cert, &cardKey.PublicKey, issuing.key)
	if err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}

	// Each CA's CRL, current for as long as the certificates.
	set := revocation.NewSet()
	for _, c := range chain {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
			ThisUpdate: notBefore, NextUpdate: notAfter}, c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("ingest: decoy: %w", err)
		}
		if err := set.AddCRL(der, c.cert, now); err != nil {
			return nil, fmt.Errorf("ingest: decoy: %w", err)
		}
	}
	attKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}
	tr := protocol.Trust{Roots: []*x509.Certificate{root.cert}, IssuingCAs: map[uzi.CardType][]*x509.Certificate{uzi.CardCareProvider: {issuing.cert}},
		AttestationKeys: []*ecdsa.PublicKey{&attKey.PublicKey}, Jurisdiction: real.Jurisdiction, Profile: real.Profile,
		Revocation: set, ClockSkew: real.ClockSkew}
	for _, c := range chain[1 : len(chain)-1] {
		tr.Intermediates = append(tr.Intermediates, c.cert)
	}
	if d.verifier, err = protocol.NewVerifier(tr); err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}

	// The bundle, vouched for a phone of its own.
	if d.phone, _, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}
	id, err := uzi.FromCertificate(card)
	if err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}
	var aid [protocol.AuthorizationIDLen]byte
	_, _ = rand.Read(aid[:])
	st, err := protocol.NewStatement(real.Jurisdiction, aid, phonecode.FromPublicKey(d.phone), now, "", card.Raw)
	if err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}
	enc, sig, err := protocol.SignStatement(cardKey, st)
	if err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}
	aenc, asig, err := protocol.Attest(attKey, enc, id, protocol.LicenseActive, st.ExpiresAt, now)
	if err != nil {
		return nil, fmt.Errorf("ingest: decoy: %w", err)
	}
	d.bundle = (&protocol.Bundle{Statement: enc, StatementSignature: sig, Cert: card.Raw, Attestation: aenc, AttestationSignature: asig}).Marshal()
	d.at = now.Add(time.Minute)
	if err := d.verify(); err != nil {
		return nil, fmt.Errorf("ingest: decoy bundle does not verify: %w", err)
	}
	return d, nil
}
