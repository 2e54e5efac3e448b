package testpki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"vouch/internal/uzi"
)

// CA is one certificate authority of the test PKI.
type CA struct {
	Name string
	Cert *x509.Certificate
	Key  crypto.Signer
}

// PKI is the test PKI: a root, the issuing CAs below it, and a rogue root
// with the "unknown" CA that no configuration trusts.
type PKI struct {
	Dir   string
	Made  time.Time
	Root  *CA
	Rogue *CA
	CAs   map[string]*CA
}

var issuingCAs = []string{CACareProvider, CANamedEmployee, CAServices, CAServer}

// LoadOrCreate opens the PKI in dir, making what is missing. Existing CA keys
// and certificates are reused, so re-running changes nothing.
func LoadOrCreate(dir string) (*PKI, error) {
	pdir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CAs: map[string]*CA{}}
	madePath := filepath.Join(pdir, "made")
	if b, err := os.ReadFile(madePath); err == nil {
		if p.Made, err = time.Parse(time.RFC3339, string(b)); err != nil {
			return nil, fmt.Errorf("testpki: %s: %w", madePath, err)
		}
	} else {
		p.Made = time.Now().UTC().Truncate(time.Second)
		if err := os.WriteFile(madePath, []byte(p.Made.Format(time.RFC3339)), 0o600); err != nil {
			return nil, err
		}
	}
	if err := p.build(p.loadOrMakeCA); err != nil {
		return nil, err
	}
	return p, nil
}

// New makes a PKI in memory only, for tests and golden vectors.
func New(made time.Time) (*PKI, error) {
	p := &PKI{Made: made, CAs: map[string]*CA{}}
	if err := p.build(p.makeCA); err != nil {
		return nil, err
	}
	return p, nil
}

// build fills in the CAs, getting each from get (made, or loaded from disk).
func (p *PKI) build(get func(name string, parent *CA, cn string) (*CA, error)) error {
	var err error
	if p.Root, err = get("root", nil, "Vouch Test UZI Root CA"); err != nil {
		return err
	}
	if p.Rogue, err = get("rogue-root", nil, "Unknown Root CA"); err != nil {
		return err
	}
	for _, name := range issuingCAs {
		if p.CAs[name], err = get(name, p.Root, "Vouch Test UZI "+name+" CA"); err != nil {
			return err
		}
	}
	p.CAs[CAUnknown], err = get(CAUnknown, p.Rogue, "Unknown care-provider CA")
	return err
}

func (p *PKI) loadOrMakeCA(name string, parent *CA, cn string) (*CA, error) {
	certPath := filepath.Join(p.Dir, "pki", name+".crt")
	keyPath := filepath.Join(p.Dir, "pki", name+".key")
	if cb, err := os.ReadFile(certPath); err == nil {
		kb, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, err
		}
		cert, err := ParseCertPEM(cb)
		if err != nil {
			return nil, fmt.Errorf("testpki: %s: %w", certPath, err)
		}
		blk, _ := pem.Decode(kb)
		if blk == nil {
			return nil, fmt.Errorf("testpki: %s: no PEM", keyPath)
		}
		key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("testpki: %s: %w", keyPath, err)
		}
		return &CA{Name: name, Cert: cert, Key: key.(crypto.Signer)}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ca, err := p.makeCA(name, parent, cn)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certPath, CertPEM(ca.Cert), 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

func (p *PKI) makeCA(name string, parent *CA, cn string) (*CA, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Vouch test PKI"}, Country: []string{"NL"}},
		NotBefore:             p.Made.Add(-10 * 365 * 24 * time.Hour), // older than any card it issued
		NotAfter:              p.Made.Add(20 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
		tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("testpki: make CA %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Name: name, Cert: cert, Key: key}, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n.Add(n, big.NewInt(1))
}

// Usage of a card certificate.
type Usage string

// A card has one certificate of each usage.
const (
	UsageAuth Usage = "auth" // login: digitalSignature, clientAuth
	UsageSign Usage = "sign" // authorization statements: nonRepudiation
)

// Issue makes the card's certificate of the given usage for pub.
func (p *PKI) Issue(c Card, usage Usage, pub crypto.PublicKey) (*x509.Certificate, error) {
	ca, ok := p.CAs[c.CA]
	if !ok {
		return nil, fmt.Errorf("testpki: card %s names unknown CA %q", c.Name, c.CA)
	}
	san, err := uzi.SANExtension(c.UZIName())
	if err != nil {
		return nil, err
	}
	nb, na := validity(c.Validity, p.Made)
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject: pkix.Name{CommonName: c.CommonName, SerialNumber: c.UZI, Organization: []string{"Praktijk " + c.Subscriber},
			Country: []string{"NL"}, OrganizationalUnit: []string{string(usage)}},
		NotBefore:       nb,
		NotAfter:        na,
		ExtraExtensions: []pkix.Extension{san},
	}
	switch usage {
	case UsageAuth:
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case UsageSign:
		tmpl.KeyUsage = x509.KeyUsageContentCommitment
	default:
		return nil, fmt.Errorf("testpki: unknown usage %q", usage)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("testpki: issue %s %s: %w", c.Name, usage, err)
	}
	return x509.ParseCertificate(der)
}

// IssueNamed issues the certificate of usage for the standard card named
// name, for pub.
func (p *PKI) IssueNamed(name string, usage Usage, pub crypto.PublicKey) (*x509.Certificate, error) {
	c, ok := CardByName(name)
	if !ok {
		return nil, fmt.Errorf("testpki: no card %q", name)
	}
	return p.Issue(c, usage, pub)
}

// CRL makes the CA's certificate revocation list over the given serials, valid
// for a week from now.
func (p *PKI) CRL(caName string, revoked []*big.Int, now time.Time) ([]byte, error) {
	ca, ok := p.CAs[caName]
	if !ok {
		return nil, fmt.Errorf("testpki: unknown CA %q", caName)
	}
	entries := make([]x509.RevocationListEntry, len(revoked))
	for i, s := range revoked {
		entries[i] = x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.Add(-time.Hour)}
	}
	return x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(now.Unix()),
		ThisUpdate:                now.Add(-time.Minute),
		NextUpdate:                now.Add(7 * 24 * time.Hour),
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.Key)
}

// CertPEM encodes a certificate as PEM.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// ParseCertPEM reads the first certificate of a PEM file.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}
