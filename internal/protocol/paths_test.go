package protocol_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// mkCA signs a CA certificate for key under parent.
func mkCA(t *testing.T, name string, serial int64, notBefore, notAfter time.Time, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true}, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRenewedIntermediate: an intermediate renewed with the same key. The
// issuing CA was certified under the old intermediate certificate, which
// has expired; the path through the renewed one is valid now and is taken,
// whatever the order of the configured intermediates.
func TestRenewedIntermediate(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Truncate(time.Second)
	pki, err := testpki.New(now)
	if err != nil {
		t.Fatal(err)
	}
	const year = 365 * 24 * time.Hour
	ikey := mustRSA(t)
	oldI := mkCA(t, "Vouch Test Intermediate", 1, now.Add(-5*year), now.Add(-time.Hour), pki.Root.Cert, ikey.Public(), pki.Root.Key)
	newI := mkCA(t, "Vouch Test Intermediate", 2, now.Add(-30*24*time.Hour), now.Add(5*year), pki.Root.Cert, ikey.Public(), pki.Root.Key)
	ckey := mustRSA(t)
	issuing := mkCA(t, "Vouch Test Z CA under an intermediate", 3, now.Add(-2*year), now.Add(3*year), oldI, ckey.Public(), ikey)
	pki.CAs["zi"] = &testpki.CA{Name: "zi", Cert: issuing, Key: ckey}
	c, _ := testpki.CardByName("gp")
	tmpl, err := pki.Template(c, testpki.UsageSign)
	if err != nil {
		t.Fatal(err)
	}
	card, err := pki.IssueFrom(tmpl, "zi", mustRSA(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		inter []*x509.Certificate
		want  protocol.Reason
	}{
		{"old, renewed", []*x509.Certificate{oldI, newI}, "ok"},
		{"renewed, old", []*x509.Certificate{newI, oldI}, "ok"},
		{"old only", []*x509.Certificate{oldI}, protocol.ReasonCertExpired},
	} {
		tr := protocol.Trust{Roots: []*x509.Certificate{pki.Root.Cert}, Intermediates: tt.inter, Jurisdiction: "NL", Profile: uzi.Test(),
			IssuingCAs: map[uzi.CardType][]*x509.Certificate{uzi.CardCareProvider: {issuing}}}
		v, err := protocol.NewVerifier(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.VerifyCard(card.Raw, uzi.PurposeVouch, now); protocol.Verdict(err) != tt.want {
			t.Errorf("%s: %q (%v), want %q", tt.name, protocol.Verdict(err), err, tt.want)
		}
	}
}

// TestRenewedCARevokedOld: a CA renewed with the same key, its superseded
// certificate revoked by the root, both within their validity. A card is
// accepted through the renewed certificate, whatever the order in the CA
// file; with only the revoked one it is refused.
func TestRenewedCARevokedOld(t *testing.T) {
	t.Parallel()
	pki, _, now := newPKI(t)
	care := pki.CAs[testpki.CACareProvider]
	tmpl := *care.Cert
	tmpl.SerialNumber = big.NewInt(4242)
	tmpl.NotBefore = now.Add(-24 * time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, pki.Root.Cert, care.Key.Public(), pki.Root.Key)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	card, err := pki.IssueNamed("gp", testpki.UsageSign, mustRSA(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	rootCRL, _ := pki.CRL("root", []*big.Int{care.Cert.SerialNumber}, now)
	careCRL, _ := pki.CRL(testpki.CACareProvider, nil, now)
	for _, tt := range []struct {
		name string
		cas  []*x509.Certificate
		want protocol.Reason
	}{
		{"revoked first", []*x509.Certificate{care.Cert, renewed}, "ok"},
		{"renewed first", []*x509.Certificate{renewed, care.Cert}, "ok"},
		{"revoked only", []*x509.Certificate{care.Cert}, protocol.ReasonCertRevoked},
	} {
		set := revocation.NewSet()
		if err := set.AddCRL(rootCRL, pki.Root.Cert, now); err != nil {
			t.Fatal(err)
		}
		if err := set.AddCRL(careCRL, care.Cert, now); err != nil {
			t.Fatal(err)
		}
		tr := testTrust(pki)
		tr.IssuingCAs[uzi.CardCareProvider] = tt.cas
		tr.Revocation = set
		v, err := protocol.NewVerifier(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.VerifyCard(card.Raw, uzi.PurposeVouch, now); protocol.Verdict(err) != tt.want {
			t.Errorf("%s: %q (%v), want %q", tt.name, protocol.Verdict(err), err, tt.want)
		}
	}
}

// TestChainBundleRefused: CA files are often chain bundles. A root or an
// intermediate among the issuing CAs would make every certificate it
// signed a card of that type, so the configuration is refused.
func TestChainBundleRefused(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Truncate(time.Second)
	pki, err := testpki.New(now)
	if err != nil {
		t.Fatal(err)
	}
	ikey, ckey := mustRSA(t), mustRSA(t)
	inter := mkCA(t, "Vouch Test Intermediate", 1, now.Add(-time.Hour), now.Add(24*time.Hour), pki.Root.Cert, ikey.Public(), pki.Root.Key)
	issuing := mkCA(t, "Vouch Test Z CA under an intermediate", 2, now.Add(-time.Hour), now.Add(24*time.Hour), inter, ckey.Public(), ikey)
	for _, tt := range []struct {
		name string
		edit func(*protocol.Trust)
		want string
	}{
		{"root in the Z file", func(tr *protocol.Trust) {
			tr.IssuingCAs[uzi.CardCareProvider] = append(tr.IssuingCAs[uzi.CardCareProvider], pki.Root.Cert)
		}, "self-signed"},
		{"intermediate in the Z file", func(tr *protocol.Trust) {
			tr.IssuingCAs[uzi.CardCareProvider] = []*x509.Certificate{issuing, inter}
		}, "issues cards only"},
		{"intermediate configured twice", func(tr *protocol.Trust) {
			tr.Intermediates = []*x509.Certificate{inter}
			tr.IssuingCAs[uzi.CardNamedEmployee] = []*x509.Certificate{inter}
		}, "also configured as a root or intermediate"},
		{"the bundle as it should be", func(tr *protocol.Trust) {
			tr.Intermediates = []*x509.Certificate{inter}
			tr.IssuingCAs[uzi.CardCareProvider] = []*x509.Certificate{issuing}
		}, ""},
	} {
		tr := testTrust(pki)
		tt.edit(&tr)
		_, err := protocol.NewVerifier(tr)
		if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	// What the refusal prevents: with the root as an issuing CA, a Z card
	// the root signed directly would pass.
	c, _ := testpki.CardByName("gp")
	tmpl, err := pki.Template(c, testpki.UsageSign)
	if err != nil {
		t.Fatal(err)
	}
	card, err := pki.IssueFrom(tmpl, "root", mustRSA(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	v, err := protocol.NewVerifier(testTrust(pki))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyCard(card.Raw, uzi.PurposeVouch, now); protocol.Verdict(err) != protocol.ReasonUnknownCA {
		t.Errorf("card signed by the root: %q (%v)", protocol.Verdict(err), err)
	}
}

// TestSignatureAlgorithms: certificates count only when signed with RSA
// PKCS#1 v1.5 or ECDSA and SHA-256, -384 or -512 (docs/protocol.md §6,
// "Signature algorithms"). A CA certificate on a path signed otherwise
// refuses the configuration; a card certificate signed otherwise is
// cert-signature-invalid, though x509 verifies RSASSA-PSS.
func TestSignatureAlgorithms(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Truncate(time.Second)
	pki, err := testpki.New(now)
	if err != nil {
		t.Fatal(err)
	}
	// One key for the CAs and one for the cards: the algorithm is what
	// varies, and RSA keys are slow to make.
	caKey, cardKey := mustRSA(t), mustRSA(t)
	caWith := func(alg x509.SignatureAlgorithm, pub crypto.PublicKey) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Vouch Test Z CA " + alg.String()},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true, SignatureAlgorithm: alg}, pki.Root.Cert, pub, pki.Root.Key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	for alg, ok := range map[x509.SignatureAlgorithm]bool{
		x509.SHA256WithRSA: true, x509.SHA384WithRSA: true, x509.SHA512WithRSA: true,
		x509.SHA256WithRSAPSS: false, x509.SHA384WithRSAPSS: false, x509.SHA1WithRSA: false,
	} {
		tr := testTrust(pki)
		tr.IssuingCAs[uzi.CardCareProvider] = []*x509.Certificate{caWith(alg, caKey.Public())}
		_, err := protocol.NewVerifier(tr)
		if ok != (err == nil) {
			t.Errorf("issuing CA signed with %s: %v, want accepted %v", alg, err, ok)
		}
	}
	// An ECDSA issuing CA: its cards are signed with ECDSA.
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecCA := caWith(x509.SHA256WithRSA, ecKey.Public())
	pki.CAs["ec"] = &testpki.CA{Name: "ec", Cert: ecCA, Key: ecKey}
	tr := testTrust(pki)
	tr.IssuingCAs[uzi.CardCareProvider] = []*x509.Certificate{pki.CAs[testpki.CACareProvider].Cert, ecCA}
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := testpki.CardByName("gp")
	for _, tt := range []struct {
		ca   string
		alg  x509.SignatureAlgorithm
		want protocol.Reason
	}{
		{testpki.CACareProvider, x509.SHA256WithRSA, protocol.ReasonOK},
		{testpki.CACareProvider, x509.SHA512WithRSA, protocol.ReasonOK},
		{testpki.CACareProvider, x509.SHA256WithRSAPSS, protocol.ReasonCertSignature},
		{testpki.CACareProvider, x509.SHA1WithRSA, protocol.ReasonCertSignature},
		{"ec", x509.ECDSAWithSHA256, protocol.ReasonOK},
		{"ec", x509.ECDSAWithSHA384, protocol.ReasonOK},
		{"ec", x509.ECDSAWithSHA512, protocol.ReasonOK},
		{"ec", x509.ECDSAWithSHA1, protocol.ReasonCertSignature},
	} {
		tmpl, err := pki.Template(c, testpki.UsageSign)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.SignatureAlgorithm = tt.alg
		card, err := pki.IssueFrom(tmpl, tt.ca, cardKey.Public())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.VerifyCard(card.Raw, uzi.PurposeVouch, now); protocol.Verdict(err) != tt.want {
			t.Errorf("card signed with %s: %q (%v), want %q", tt.alg, protocol.Verdict(err), err, tt.want)
		}
	}
}
