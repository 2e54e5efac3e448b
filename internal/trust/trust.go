// Package trust loads what a verifier trusts — UZI root CAs, the back end's
// attestation public keys, the CAs' CRLs, the jurisdiction and the card
// profile — from files named in configuration, and checks it before anything
// is verified with it. Misconfiguration stops the program at start rather
// than accepting or refusing cards at random later.
package trust

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// Config names the trust files. Lists are comma-separated in the environment.
type Config struct {
	Roots []string `env:"VOUCH_UZI_ROOTS" json:"roots"` // PEM files of UZI root CAs
	// CAs are the card-issuing CAs, a PEM file per card type:
	// "Z:care.pem,N:named.pem,M:nameless.pem,S:server.pem". A file may hold
	// several certificates (a CA's old and new key during a rollover).
	CAs           map[string]string `env:"VOUCH_UZI_CAS" json:"cas,omitempty"`
	Intermediates []string          `env:"VOUCH_UZI_INTERMEDIATES" json:"intermediates,omitempty"` // PEM files of CAs between issuing CAs and roots
	CRLs          []string          `env:"VOUCH_UZI_CRLS" json:"crls,omitempty"`                   // DER CRLs of the roots, intermediates and issuing CAs
	// CRLRefresh is how often a server reads its CRLs again (the files,
	// and those the sync stores).
	CRLRefresh      time.Duration `env:"VOUCH_UZI_CRL_REFRESH, default=1m" json:"-"`
	AttestationKeys []string      `env:"VOUCH_ATTESTATION_KEYS" json:"attestation_keys"` // PEM public keys
	Jurisdiction    string        `env:"VOUCH_JURISDICTION, default=NL" json:"jurisdiction"`
	Profile         string        `env:"VOUCH_CARD_PROFILE, default=production" json:"profile"`
	Professions     []string      `env:"VOUCH_VOUCH_PROFESSIONS" json:"professions,omitempty"` // default: uzi.DefaultVouchProfessions()
}

var cardTypes = []uzi.CardType{uzi.CardCareProvider, uzi.CardNamedEmployee, uzi.CardNameless, uzi.CardServer}

// Load reads and checks everything c names. Roots must belong to the card
// profile; CRLs must be signed by one of the configured CAs and be current
// at now.
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
		for _, r := range certs {
			if err := profile.CheckRoot(r); err != nil {
				return t, fmt.Errorf("trust: %s: %w", f, err)
			}
		}
		t.Roots = append(t.Roots, certs...)
	}
	t.IssuingCAs = map[uzi.CardType][]*x509.Certificate{}
	for typ, f := range c.CAs {
		if !slices.Contains(cardTypes, uzi.CardType(typ)) {
			return t, fmt.Errorf("trust: VOUCH_UZI_CAS names card type %q; want Z, N, M or S", typ)
		}
		certs, err := ReadCertificates(f)
		if err != nil {
			return t, err
		}
		t.IssuingCAs[uzi.CardType(typ)] = certs
	}
	for _, f := range c.Intermediates {
		certs, err := ReadCertificates(f)
		if err != nil {
			return t, err
		}
		t.Intermediates = append(t.Intermediates, certs...)
	}
	for _, f := range c.AttestationKeys {
		k, err := ReadECPublicKey(f)
		if err != nil {
			return t, err
		}
		t.AttestationKeys = append(t.AttestationKeys, k)
	}
	if len(c.CRLs) > 0 {
		// Files are read again by Set.Keep on a server; here each must be
		// good now, or the start stops.
		set := revocation.NewSet()
		if err := set.Refresh(context.Background(), revocation.Files(c.CRLs), t.CAs(), now); err != nil {
			return t, fmt.Errorf("trust: VOUCH_UZI_CRLS: %w", err)
		}
		t.Revocation = set
	}
	return t, nil
}

// ReadCertificates reads every PEM certificate in file.
func ReadCertificates(file string) ([]*x509.Certificate, error) {
	b, err := readFile(file, maxPEMFile)
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
	b, err := readFile(file, maxPEMFile)
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

// maxPEMFile bounds a PEM file of certificates or a key: it holds a
// handful. Anything larger is a wrong file, refused without reading it all.
// (CRLs are bounded by revocation.ReadCRL.)
const maxPEMFile = 1 << 20

// readFile reads at most max bytes of file, and fails when it holds more.
func readFile(file string, max int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("trust: %s: %w", file, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("trust: %s is larger than %d bytes", file, max)
	}
	return b, nil
}
