package testpki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/vouch-nl/vouch/internal/uzi"
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

// CATypes says which card type each issuing CA issues, as the UZI register
// has one CA per card type.
var CATypes = map[string]uzi.CardType{
	CACareProvider: uzi.CardCareProvider, CANamedEmployee: uzi.CardNamedEmployee,
	CAServices: uzi.CardNameless, CAServer: uzi.CardServer,
}

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
	} else if name == "root" {
		// The mark of the test PKI's root: the test card profile trusts
		// only roots that carry it, production never one that does.
		tmpl.Policies = []x509.OID{mustOID(uzi.TestRootPolicy)}
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
	tmpl, err := p.Template(c, usage)
	if err != nil {
		return nil, err
	}
	return p.IssueFrom(tmpl, c.CA, pub)
}

// Template is the certificate a card of c gets for usage, before signing:
// tests change it to make certificates a real UZI CA would never issue.
func (p *PKI) Template(c Card, usage Usage) (*x509.Certificate, error) {
	san, err := uzi.SANExtension(c.UZIName())
	if err != nil {
		return nil, err
	}
	nb, na := validity(c.Validity, p.Made)
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject: pkix.Name{CommonName: c.CommonName, SerialNumber: c.UZI, Organization: []string{"Praktijk " + c.Subscriber},
			Country: []string{"NL"}, OrganizationalUnit: []string{string(usage)}},
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true, // critical CA:FALSE, as on UZI cards
		ExtraExtensions:       []pkix.Extension{san},
	}
	// The UZI layout: the authentication certificate has digitalSignature
	// and clientAuth, the signature certificate nonRepudiation and
	// emailProtection plus document signing; each carries its purpose's
	// certificate policy.
	switch usage {
	case UsageAuth:
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection}
		tmpl.Policies = []x509.OID{mustOID(uzi.TestPolicyAuth)}
	case UsageSign:
		tmpl.KeyUsage = x509.KeyUsageContentCommitment
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
		tmpl.UnknownExtKeyUsage = []asn1.ObjectIdentifier{OIDDocumentSigning}
		tmpl.Policies = []x509.OID{mustOID(uzi.TestPolicySign)}
	default:
		return nil, fmt.Errorf("testpki: unknown usage %q", usage)
	}
	return tmpl, nil
}

// IssueFrom signs tmpl for pub with the CA named caName ("root" for the
// root itself).
func (p *PKI) IssueFrom(tmpl *x509.Certificate, caName string, pub crypto.PublicKey) (*x509.Certificate, error) {
	ca, ok := p.CAs[caName]
	if caName == "root" {
		ca, ok = p.Root, true
	}
	if !ok {
		return nil, fmt.Errorf("testpki: unknown CA %q", caName)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("testpki: issue %s: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// AddCA makes another issuing CA under the root, for tests.
func (p *PKI) AddCA(name string) (*CA, error) {
	ca, err := p.makeCA(name, p.Root, "Vouch Test UZI "+name+" CA")
	if err != nil {
		return nil, err
	}
	p.CAs[name] = ca
	return ca, nil
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

// OIDDocumentSigning is Microsoft's document-signing extended key usage,
// which UZI signature certificates carry.
var OIDDocumentSigning = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 10, 3, 12}

func mustOID(s string) x509.OID {
	o, err := x509.ParseOID(s)
	if err != nil {
		panic(err) // constants only
	}
	return o
}

// CRL makes the CA's certificate revocation list over the given serials, valid
// for a week from now. caName "root" is the root's (its CRL lists revoked
// issuing CAs).
func (p *PKI) CRL(caName string, revoked []*big.Int, now time.Time) ([]byte, error) {
	ca, ok := p.CAs[caName]
	if caName == "root" {
		ca, ok = p.Root, true
	}
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

// CRLWith signs tmpl as caName's CRL ("root" for the root's), for tests
// that craft CRLs. Unlike x509.CreateRevocationList it also makes a CRL
// without a CRL number (tmpl.Number nil) or without a nextUpdate, as some
// CAs publish: the verifiers must refuse those.
func (p *PKI) CRLWith(caName string, tmpl x509.RevocationList) ([]byte, error) {
	ca, ok := p.CAs[caName]
	if caName == "root" {
		ca, ok = p.Root, true
	}
	if !ok {
		return nil, fmt.Errorf("testpki: unknown CA %q", caName)
	}
	if tmpl.Number != nil {
		return x509.CreateRevocationList(rand.Reader, &tmpl, ca.Cert, ca.Key)
	}
	// RFC 5280 §5.1 by hand: x509 insists on a number.
	type tbsCertList struct {
		Version    int
		Signature  pkix.AlgorithmIdentifier
		Issuer     asn1.RawValue
		ThisUpdate time.Time        `asn1:"utc"`
		NextUpdate time.Time        `asn1:"utc,optional"`
		Revoked    []asn1.RawValue  `asn1:"optional"`
		Extensions []pkix.Extension `asn1:"tag:0,optional,explicit"`
	}
	alg := pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, Parameters: asn1.NullRawValue}
	tbs, err := asn1.Marshal(tbsCertList{Version: 1, Signature: alg, Issuer: asn1.RawValue{FullBytes: ca.Cert.RawSubject},
		ThisUpdate: tmpl.ThisUpdate.UTC(), NextUpdate: tmpl.NextUpdate.UTC(), Extensions: tmpl.ExtraExtensions})
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(tbs)
	sig, err := ca.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, alg, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
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
