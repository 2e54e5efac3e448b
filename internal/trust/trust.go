// Package trust loads what a verifier trusts — UZI root CAs, the back end's
// attestation public keys, the CAs' CRLs, the jurisdiction and the card
// profile — from files named in configuration, and checks it before anything
// is verified with it. Misconfiguration stops the program at start rather
// than accepting or refusing cards at random later.
package trust

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"vouch/internal/protocol"
	"vouch/internal/revocation"
	"vouch/internal/uzi"
)

// Config names the trust files. Lists are comma-separated in the environment.
type Config struct {
	Roots           []string `env:"VOUCH_UZI_ROOTS" json:"roots"`                   // PEM files of UZI root CAs
	CAs             []string `env:"VOUCH_UZI_CAS" json:"cas,omitempty"`             // PEM files of issuing CAs (CRL issuers)
	CRLs            []string `env:"VOUCH_UZI_CRLS" json:"crls,omitempty"`           // DER CRL files of the issuing CAs
	AttestationKeys []string `env:"VOUCH_ATTESTATION_KEYS" json:"attestation_keys"` // PEM public keys
	Jurisdiction    string   `env:"VOUCH_JURISDICTION, default=NL" json:"jurisdiction"`
	Profile         string   `env:"VOUCH_CARD_PROFILE, default=production" json:"profile"`
	Professions     []string `env:"VOUCH_VOUCH_PROFESSIONS" json:"professions,omitempty"` // default: uzi.DefaultVouchProfessions
}

// Load reads and checks everything c names. CRLs must be signed by one of the
// configured CAs and be current at now.
func (c Config) Load(now time.Time) (protocol.Trust, error) {
	var t protocol.Trust
	if len(c.Roots) == 0 {
		return t, errors.New("trust: no UZI root CA configured (VOUCH_UZI_ROOTS)")
	}
	profile, err := uzi.ProfileByName(c.Profile)
	if err != nil {
		return t, fmt.Errorf("trust: %w", err)
	}
	if len(c.Professions) > 0 {
		if profile, err = profile.WithVouchProfessions(c.Professions); err != nil {
			return t, fmt.Errorf("trust: %w", err)
		}
	}
	t.Profile, t.Jurisdiction = profile, c.Jurisdiction
	for _, f := range c.Roots {
		certs, err := ReadCertificates(f)
		if err != nil {
			return t, err
		}
		t.Roots = append(t.Roots, certs...)
	}
	var cas []*x509.Certificate
	for _, f := range c.CAs {
		certs, err := ReadCertificates(f)
		if err != nil {
			return t, err
		}
		cas = append(cas, certs...)
	}
	for _, f := range c.AttestationKeys {
		k, err := ReadECPublicKey(f)
		if err != nil {
			return t, err
		}
		t.AttestationKeys = append(t.AttestationKeys, k)
	}
	if len(c.CRLs) > 0 {
		set := revocation.NewSet()
		for _, f := range c.CRLs {
			if err := addCRL(set, f, append(cas, t.Roots...), now); err != nil {
				return t, err
			}
		}
		t.Revocation = set
	}
	return t, nil
}

func addCRL(set *revocation.Set, file string, issuers []*x509.Certificate, now time.Time) error {
	der, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("trust: CRL %s: %w", file, err)
	}
	for _, ca := range issuers {
		if string(ca.RawSubject) == string(crl.RawIssuer) {
			if err := set.AddCRL(der, ca, now); err != nil {
				return fmt.Errorf("trust: CRL %s: %w", file, err)
			}
			return nil
		}
	}
	return fmt.Errorf("trust: CRL %s: its issuer is not among the configured CAs (VOUCH_UZI_CAS)", file)
}

// ReadCertificates reads every PEM certificate in file.
func ReadCertificates(file string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trust: %s: %w", file, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("trust: %s holds no PEM certificate", file)
	}
	return out, nil
}

// ReadECPublicKey reads a PEM "PUBLIC KEY" that must be ECDSA P-256.
func ReadECPublicKey(file string) (*ecdsa.PublicKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("trust: %s holds no PEM public key", file)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("trust: %s: %w", file, err)
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve.Params().Name != "P-256" {
		return nil, fmt.Errorf("trust: %s is not an ECDSA P-256 key", file)
	}
	return k, nil
}
