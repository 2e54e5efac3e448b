package testpki

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/vouch-nl/vouch/internal/p11"
)

// DefaultModule is Debian's SoftHSM2 module.
const DefaultModule = "/usr/lib/softhsm/libsofthsm2.so"

// Manifest says where everything Provision made is; pkcs11-mocks writes it
// to cards.json so the demo, the registry fixtures and people can find it.
type Manifest struct {
	Module      string            `json:"module"`
	SoftHSMConf string            `json:"softhsm2_conf"`
	Made        time.Time         `json:"made"`
	RootCA      string            `json:"root_ca"`
	CAs         map[string]string `json:"cas"`
	CRLs        map[string]string `json:"crls"`
	Backend     Backend           `json:"backend"`
	Cards       []ManifestCard    `json:"cards"`
}

// Backend names the back end's keys on its token.
type Backend struct {
	Token          string `json:"token"`
	PIN            string `json:"pin"`
	ExportURI      string `json:"export_uri"`
	AttestationURI string `json:"attestation_uri"`
	ExportPub      string `json:"export_public_key"`
	AttestationPub string `json:"attestation_public_key"`
}

// ManifestCard is one personalised card.
type ManifestCard struct {
	Card
	UZIName  string `json:"uzi_name"`
	Token    string `json:"token"`
	PIN      string `json:"pin"`
	AuthURI  string `json:"auth_uri"`
	SignURI  string `json:"sign_uri"`
	AuthCert string `json:"auth_cert"`
	SignCert string `json:"sign_cert"`
}

// ConfPath is where Provision keeps the SoftHSM2 configuration for dir.
func ConfPath(dir string) string { return filepath.Join(dir, "softhsm2.conf") }

// WriteSoftHSMConf writes a SoftHSM2 configuration that keeps tokens in
// dir/tokens, away from the system store. SOFTHSM2_CONF must point at it
// before the module is loaded in a process.
func WriteSoftHSMConf(dir string) (string, error) {
	tokdir := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokdir, 0o700); err != nil {
		return "", err
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokdir)
	path := ConfPath(dir)
	if old, err := os.ReadFile(path); err == nil && string(old) == conf {
		return path, nil
	}
	return path, os.WriteFile(path, []byte(conf), 0o600)
}

// Provision makes (or completes) the PKI and the tokens of cards in dir, using
// the PKCS#11 module at module, and writes dir/cards.json. SOFTHSM2_CONF must
// be ConfPath(dir) (Provision sets it when unset). Running it again changes
// nothing that exists.
func Provision(dir, module string, cards []Card) (*Manifest, error) {
	if err := dropOldLayout(dir); err != nil {
		return nil, err
	}
	conf, err := WriteSoftHSMConf(dir)
	if err != nil {
		return nil, err
	}
	switch env := os.Getenv("SOFTHSM2_CONF"); env {
	case "":
		os.Setenv("SOFTHSM2_CONF", conf)
	case conf:
	default:
		return nil, fmt.Errorf("testpki: SOFTHSM2_CONF is %s, not %s", env, conf)
	}
	pki, err := LoadOrCreate(dir)
	if err != nil {
		return nil, err
	}
	// The tokens an earlier run of this layout made (its manifest).
	made := map[string]bool{}
	if old, err := LoadManifest(dir); err == nil {
		for _, c := range old.Cards {
			made[c.Token] = true
		}
		if old.Backend.Token != "" {
			made[old.Backend.Token] = true
		}
	}
	m, err := p11.Open(module)
	if err != nil {
		return nil, err
	}
	defer m.Close()

	man := &Manifest{Module: module, SoftHSMConf: conf, Made: pki.Made, RootCA: filepath.Join(dir, "pki", "root.crt"),
		CAs: map[string]string{}, CRLs: map[string]string{}}
	for name := range pki.CAs {
		man.CAs[name] = filepath.Join(dir, "pki", name+".crt")
	}
	revoked := map[string][]*big.Int{}
	for _, c := range cards {
		mc, certs, err := provisionCard(m, pki, dir, module, c, made[c.TokenLabel()])
		if err != nil {
			return nil, fmt.Errorf("testpki: card %s: %w", c.Name, err)
		}
		if c.Revoked {
			for _, cert := range certs {
				revoked[c.CA] = append(revoked[c.CA], cert.SerialNumber)
			}
		}
		man.Cards = append(man.Cards, mc)
	}
	if man.Backend, err = provisionBackend(m, dir, module, made[BackendToken]); err != nil {
		return nil, fmt.Errorf("testpki: back-end token: %w", err)
	}
	crlDir := filepath.Join(dir, "crl")
	if err := os.MkdirAll(crlDir, 0o700); err != nil {
		return nil, err
	}
	for _, name := range append([]string{"root"}, issuingCAs...) {
		der, err := pki.CRL(name, revoked[name], time.Now())
		if err != nil {
			return nil, err
		}
		path := filepath.Join(crlDir, name+".crl")
		if err := writeFile(path, der); err != nil {
			return nil, err
		}
		man.CRLs[name] = path
	}
	b, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, err
	}
	return man, writeFile(filepath.Join(dir, "cards.json"), b)
}

// layoutVersion changes whenever certificates are made differently, so that
// cards made by an older version (which today's profile would refuse) are
// made anew instead of reused.
const layoutVersion = "2"

// dropOldLayout empties dir when it holds cards of another layout version.
func dropOldLayout(dir string) error {
	path := filepath.Join(dir, "layout")
	b, err := os.ReadFile(path)
	if err == nil && string(b) == layoutVersion {
		return nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, sub := range []string{"pki", "tokens", "cards", "crl", "backend", "cards.json"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(layoutVersion), 0o600)
}

// LoadManifest reads dir/cards.json.
func LoadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cards.json"))
	if err != nil {
		return nil, err
	}
	var m Manifest
	return &m, json.Unmarshal(b, &m)
}

// openToken logs in to the token with label, initializing it first if absent.
// Once the directory's tokens were made (made), an absent token is never
// made again: another process's login rewrites a token's file, and one
// read at that moment looks absent — a second token of the same label
// made then breaks every later lookup ("2 tokens match"). It is looked
// for again for a while instead, and missing stays an error.
func openToken(m *p11.Module, label, pin string, made bool) (*p11.Session, error) {
	u := p11.URI{Token: label}
	_, err := m.FindToken(u)
	for i := 0; made && i < 50 && errors.Is(err, p11.ErrTokenNotFound); i++ {
		time.Sleep(100 * time.Millisecond)
		_, err = m.FindToken(u)
	}
	if errors.Is(err, p11.ErrTokenNotFound) && !made {
		if err := m.InitToken(label, CardSOPIN, pin); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	return m.Login(u, pin)
}

func provisionCard(m *p11.Module, pki *PKI, dir, module string, c Card, made bool) (ManifestCard, []*x509.Certificate, error) {
	s, err := openToken(m, c.TokenLabel(), CardPIN, made)
	if err != nil {
		return ManifestCard{}, nil, err
	}
	defer s.Close()
	mc := ManifestCard{Card: c, UZIName: c.UZIName(), Token: c.TokenLabel(), PIN: CardPIN}
	var certs []*x509.Certificate
	for _, k := range []struct {
		usage Usage
		id    []byte
		uri   *string
		path  *string
	}{{UsageAuth, AuthKeyID, &mc.AuthURI, &mc.AuthCert}, {UsageSign, SignKeyID, &mc.SignURI, &mc.SignCert}} {
		label := string(k.usage)
		u := p11.URI{Token: c.TokenLabel(), Object: label, ID: k.id, ModulePath: module}
		*k.uri = u.String()
		hasKey, err := s.HasObject(true, k.id)
		if err != nil {
			return mc, nil, err
		}
		if !hasKey {
			if _, err := s.GenerateKey(p11.KeySpec{Label: label, ID: k.id, RSABits: 2048, AlwaysAuthenticate: k.usage == UsageSign}); err != nil {
				return mc, nil, err
			}
		}
		hasCert, err := s.HasObject(false, k.id)
		if err != nil {
			return mc, nil, err
		}
		if !hasCert {
			sig, err := s.Signer(p11.URI{ID: k.id})
			if err != nil {
				return mc, nil, err
			}
			cert, err := pki.Issue(c, k.usage, sig.Public())
			if err != nil {
				return mc, nil, err
			}
			if err := s.StoreCertificate(label, k.id, cert); err != nil {
				return mc, nil, err
			}
		}
		sig, err := s.Signer(p11.URI{ID: k.id})
		if err != nil {
			return mc, nil, err
		}
		cert := sig.Certificate()
		if cert == nil {
			return mc, nil, errors.New("certificate missing after issue")
		}
		certs = append(certs, cert)
		*k.path = filepath.Join(dir, "cards", c.Name+"-"+label+".crt")
		if err := writeFile(*k.path, CertPEM(cert)); err != nil {
			return mc, nil, err
		}
	}
	return mc, certs, nil
}

func provisionBackend(m *p11.Module, dir, module string, made bool) (Backend, error) {
	b := Backend{Token: BackendToken, PIN: BackendPIN}
	s, err := openToken(m, BackendToken, BackendPIN, made)
	if err != nil {
		return b, err
	}
	defer s.Close()
	for _, k := range []struct {
		label string
		id    []byte
		uri   *string
		path  *string
	}{{"export", ExportKeyID, &b.ExportURI, &b.ExportPub}, {"attestation", AttestationKeyID, &b.AttestationURI, &b.AttestationPub}} {
		has, err := s.HasObject(true, k.id)
		if err != nil {
			return b, err
		}
		if !has {
			if _, err := s.GenerateKey(p11.KeySpec{Label: k.label, ID: k.id}); err != nil {
				return b, err
			}
		}
		sig, err := s.Signer(p11.URI{ID: k.id})
		if err != nil {
			return b, err
		}
		der, err := x509.MarshalPKIXPublicKey(sig.Public())
		if err != nil {
			return b, err
		}
		*k.uri = p11.URI{Token: BackendToken, Object: k.label, ID: k.id, ModulePath: module}.String()
		*k.path = filepath.Join(dir, "backend", k.label+".pub.pem")
		if err := writeFile(*k.path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); err != nil {
			return b, err
		}
	}
	return b, nil
}

// writeFile replaces path whole, through a temporary file and a rename:
// Provision runs again in every test process, and another process may be
// reading the CRLs and certificates it rewrites.
func writeFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
