package protocol_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
	"github.com/vouch-nl/vouch/internal/uzi"
)

func TestVerifyLogin(t *testing.T) {
	t.Parallel()
	pki, v, now := newPKI(t)
	key := mustRSA(t)
	const origin = "https://backoffice.vouch.test"
	challenge := []byte("0123456789abcdef0123456789abcdef")
	sign := func(origin string, challenge []byte) []byte {
		d := sha256.Sum256(protocol.LoginMessage(origin, challenge))
		s, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	chain := func(card string, usage testpki.Usage) []byte {
		cert, err := pki.IssueNamed(card, usage, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return cert.Raw
	}
	crafted := func(edit func(*x509.Certificate)) []byte {
		return craftGP(t, pki, testpki.UsageAuth, key.Public(), edit)
	}
	tests := []struct {
		name   string
		chain  []byte
		origin string
		want   protocol.Reason
	}{
		{"gp signs in", chain("gp", testpki.UsageAuth), origin, protocol.ReasonOK},
		{"staff signs in", chain("staff", testpki.UsageAuth), origin, protocol.ReasonOK},
		{"pharmacist signs in", chain("pharmacist", testpki.UsageAuth), origin, protocol.ReasonOK},
		{"nameless refused", chain("nameless", testpki.UsageAuth), origin, protocol.ReasonCardNameless},
		{"server refused", chain("server", testpki.UsageAuth), origin, protocol.ReasonCardServer},
		{"signature cert is not for login", chain("gp", testpki.UsageSign), origin, protocol.ReasonCertUsage},
		{"unknown CA", chain("unknownca", testpki.UsageAuth), origin, protocol.ReasonUnknownCA},
		{"expired card", chain("expired", testpki.UsageAuth), origin, protocol.ReasonCertExpired},
		{"signature for another origin", chain("gp", testpki.UsageAuth), "https://evil.test", protocol.ReasonSignature},
		{"no certificate", nil, origin, protocol.ReasonMalformed},
		{"certificate over 4 KiB", make([]byte, protocol.MaxCertSize+1), origin, protocol.ReasonMalformed},
		{"certificate of 4 KiB", make([]byte, protocol.MaxCertSize), origin, protocol.ReasonMalformed},
		{"no clientAuth", crafted(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection} }), origin, protocol.ReasonCertUsage},
		{"signature policy at login", crafted(func(c *x509.Certificate) {
			c.Policies = c.Policies[:0]
			c.Policies = append(c.Policies, mustOID(t, uzi.TestPolicySign))
		}), origin, protocol.ReasonCertPolicy},
		{"CA flag", crafted(func(c *x509.Certificate) { c.IsCA = true }), origin, protocol.ReasonCertNotEndEntity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sig := sign(tt.origin, challenge)
			_, err := v.VerifyLogin(tt.chain, origin, challenge, sig, now)
			if got := protocol.Verdict(err); got != tt.want {
				t.Errorf("verdict %q, want %q (%v)", got, tt.want, err)
			}
		})
	}
}

// testTrust trusts pki's root and its issuing CAs, under the test profile,
// without revocation.
func testTrust(pki *testpki.PKI) protocol.Trust {
	tr := protocol.Trust{Roots: []*x509.Certificate{pki.Root.Cert}, Jurisdiction: "NL", Profile: uzi.Test(),
		IssuingCAs: map[uzi.CardType][]*x509.Certificate{}}
	for name, typ := range testpki.CATypes {
		tr.IssuingCAs[typ] = append(tr.IssuingCAs[typ], pki.CAs[name].Cert)
	}
	return tr
}

// newPKI makes a test PKI and a verifier that trusts it, as of now.
func newPKI(t *testing.T) (*testpki.PKI, *protocol.Verifier, time.Time) {
	t.Helper()
	now := time.Now().UTC()
	pki, err := testpki.New(now)
	if err != nil {
		t.Fatal(err)
	}
	v, err := protocol.NewVerifier(testTrust(pki))
	if err != nil {
		t.Fatal(err)
	}
	return pki, v, now
}

// craftGP issues the GP card's certificate of usage for pub from its CA,
// its template first changed by edit: what a careless CA might sign.
func craftGP(t testing.TB, pki *testpki.PKI, usage testpki.Usage, pub crypto.PublicKey, edit func(*x509.Certificate)) []byte {
	t.Helper()
	c, _ := testpki.CardByName("gp")
	tmpl, err := pki.Template(c, usage)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(tmpl)
	}
	cert, err := pki.IssueFrom(tmpl, c.CA, pub)
	if err != nil {
		t.Fatal(err)
	}
	return cert.Raw
}

// uziSAN is a subjectAltName with an otherName 2.5.5.5 around value (an
// encoded string, of any form), followed by more encoded GeneralNames.
func uziSAN(value []byte, more ...[]byte) pkix.Extension {
	oid := []byte{0x06, 0x03, 0x55, 0x05, 0x05}
	explicit := append([]byte{0xa0, byte(len(value))}, value...)
	gns := append([]byte{0xa0, byte(len(oid) + len(explicit))}, append(oid, explicit...)...)
	for _, m := range more {
		gns = append(gns, m...)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: append([]byte{0x30, byte(len(gns))}, gns...)}
}

func mustOID(t testing.TB, s string) x509.OID {
	o, err := x509.ParseOID(s)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestReasonTexts: every reason has its message in every catalogue, and
// every "reason." message of the catalogues is a reason.
func TestReasonTexts(t *testing.T) {
	t.Parallel()
	cat := i18n.Default()
	known := map[string]bool{}
	for _, r := range protocol.Reasons() {
		known[r.MessageID()] = true
		for _, lang := range cat.Languages() {
			if !cat.Has(lang, r.MessageID()) {
				t.Errorf("reason %q has no text in %s", r, lang)
			}
		}
		if en, nl := r.Text("en"), r.Text("nl"); en == string(r) || en == nl {
			t.Errorf("reason %q: English %q, Dutch %q", r, en, nl)
		}
	}
	for _, id := range cat.IDs() {
		if strings.HasPrefix(id, "reason.") && !known[id] {
			t.Errorf("catalogue message %q is no reason of protocol.Reasons()", id)
		}
	}
}

func FuzzParseBundle(f *testing.F) {
	for _, name := range []string{"valid-gp", "truncated-half", "garbage", "unknown-version", "statement-as-bundle"} {
		f.Add(readFile(f, "cases/"+name+".bin"))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := protocol.ParseBundle(raw)
		if err != nil {
			return
		}
		if string(b.Marshal()) != string(raw) {
			t.Fatal("a bundle decoded but does not re-encode to the same bytes")
		}
		if st, err := protocol.ParseStatement(b.Statement); err == nil && string(st.Marshal()) != string(b.Statement) {
			t.Fatal("statement not canonical")
		}
		if at, err := protocol.ParseAttestation(b.Attestation); err == nil && string(at.Marshal()) != string(b.Attestation) {
			t.Fatal("attestation not canonical")
		}
	})
}

// validCases returns the bytes of every vector that verifies.
func validCases(t testing.TB) map[string]bool {
	vec, _ := loadVectors(t)
	out := map[string]bool{}
	for _, c := range vec.Cases {
		if c.Want == string(protocol.ReasonOK) {
			b, err := os.ReadFile(c.Bundle)
			if err != nil {
				t.Fatal(err)
			}
			out[string(b)] = true
		}
	}
	return out
}

func FuzzVerify(f *testing.F) {
	vec, v := loadVectors(f)
	now := vec.Now
	valid := validCases(f)
	for b := range valid {
		f.Add([]byte(b))
	}
	f.Add(readFile(f, "cases/attestation-forged.bin"))
	f.Add(readFile(f, "cases/attestation-high-s.bin"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, err := v.Verify(raw, nil, now)
		if err == nil && !valid[string(raw)] {
			// A bundle has one encoding: only byte-identical copies of a
			// valid bundle can pass; any other accepted input would be a
			// forgery or a malleated copy.
			t.Fatalf("accepted a bundle that is not one of the valid vectors: %x", raw)
		}
	})
}

// TestBundleIsCanonical changes a valid bundle in every byte — flipped bits,
// a byte dropped, a byte added — and wants each change refused: nothing in a
// bundle is unsigned or has a second encoding, so nothing downstream can key
// on bundle bytes that an attacker could vary.
func TestBundleIsCanonical(t *testing.T) {
	t.Parallel()
	vec, v := loadVectors(t)
	raw := readFile(t, "cases/valid-gp.bin")
	if _, err := v.Verify(raw, nil, vec.Now); err != nil {
		t.Fatal(err)
	}
	try := func(what string, b []byte) {
		if _, err := v.Verify(b, nil, vec.Now); err == nil {
			t.Errorf("%s: accepted", what)
		}
	}
	for i := range raw {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			b := append([]byte{}, raw...)
			b[i] ^= x
			try(fmt.Sprintf("byte %d ^ %#x", i, x), b)
		}
		try(fmt.Sprintf("byte %d dropped", i), append(append([]byte{}, raw[:i]...), raw[i+1:]...))
		try(fmt.Sprintf("byte inserted at %d", i), append(append(append([]byte{}, raw[:i]...), raw[i]), raw[i:]...))
	}
}

// stubRevocation answers every check with err.
type stubRevocation struct{ err error }

func (s stubRevocation) Check(_, _ *x509.Certificate, _ time.Time) error { return s.err }

func TestRevocationFailsClosed(t *testing.T) {
	t.Parallel()
	vec, _ := loadVectors(t)
	_, tr, err := trust.LoadVectors(filepath.Join(vectorDir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	raw := readFile(t, "cases/valid-gp.bin")
	for _, tt := range []struct {
		err  error
		want protocol.Reason
	}{
		{nil, protocol.ReasonOK},
		{revocation.ErrUnknown, protocol.ReasonRevocationUnknown},
		{fmt.Errorf("wrapped: %w", revocation.ErrRevoked), protocol.ReasonCertRevoked},
	} {
		tr.Revocation = stubRevocation{tt.err}
		v, err := protocol.NewVerifier(tr)
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(raw, nil, vec.Now)
		if got := protocol.Verdict(err); got != tt.want {
			t.Errorf("revocation %v: verdict %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestDecodeReasons(t *testing.T) {
	t.Parallel()
	label := func(l string) []byte { return append([]byte{0, 0, 0, byte(len(l))}, l...) }
	for name, tt := range map[string]struct {
		in   []byte
		want protocol.Reason
	}{
		"three bytes of garbage":    {[]byte{0xff, 0xee, 0xdd}, protocol.ReasonMalformed},
		"three bytes of a length":   {[]byte{0, 0, 0}, protocol.ReasonTruncated},
		"label without a version":   {label("vouch/bundle"), protocol.ReasonMalformed},
		"label vouch/ alone":        {label("vouch/"), protocol.ReasonMalformed},
		"label with an odd version": {label("vouch/bundle/2"), protocol.ReasonMalformed},
		"a later version":           {label("vouch/bundle/v2"), protocol.ReasonUnknownVersion},
		"another type":              {label("vouch/export/v1"), protocol.ReasonWrongType},
		"not ours":                  {label("other/bundle/v1"), protocol.ReasonMalformed},
	} {
		v, err := protocol.NewVerifier(protocol.Trust{Roots: []*x509.Certificate{{}}, Jurisdiction: "NL"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(tt.in, nil, time.Now())
		if got := protocol.Verdict(err); got != tt.want {
			t.Errorf("%s: %q, want %q", name, got, tt.want)
		}
	}
}

// TestCriticalExtensionsAllowList: only keyUsage, basicConstraints and
// extKeyUsage may be critical, whatever Go's parser counts as handled.
func TestCriticalExtensionsAllowList(t *testing.T) {
	t.Parallel()
	pki, v, now := newPKI(t)
	key := mustRSA(t)
	issue := func(edit func(*x509.Certificate)) []byte {
		return craftGP(t, pki, testpki.UsageSign, key.Public(), edit)
	}
	// The UZI name plus an e-mail address, in one critical SAN.
	name := testpki.Cards()[0].UZIName()
	san := uziSAN(append([]byte{0x16, byte(len(name))}, name...), append([]byte{0x81, 8}, "a@b.test"...))
	san.Critical = true
	for name, tt := range map[string]struct {
		edit func(*x509.Certificate)
		want protocol.Reason
	}{
		"as issued":                   {func(*x509.Certificate) {}, protocol.ReasonOK},
		"critical SAN with an e-mail": {func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{san} }, protocol.ReasonCertExtension},
		"critical name constraints": {func(c *x509.Certificate) {
			c.PermittedDNSDomains, c.PermittedDNSDomainsCritical = []string{"x.test"}, true
		}, protocol.ReasonCertExtension},
		"non-critical name constraints": {func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"x.test"} }, protocol.ReasonOK},
	} {
		_, err := v.VerifyCard(issue(tt.edit), uzi.PurposeVouch, now)
		if got := protocol.Verdict(err); got != tt.want {
			t.Errorf("%s: %q, want %q (%v)", name, got, tt.want, err)
		}
	}
}

// TestRenewedCA: a CA certificate renewed with the same key, the old one
// expired, both configured in any order: a card verifies under the one
// valid now. A CA configured for two card types refuses to start.
func TestRenewedCA(t *testing.T) {
	t.Parallel()
	pki, _, now := newPKI(t)
	care := pki.CAs[testpki.CACareProvider]
	old := *care.Cert
	old.NotBefore, old.NotAfter = now.Add(-9*365*24*time.Hour), now.Add(-time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &old, pki.Root.Cert, care.Key.Public(), pki.Root.Key)
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := x509.ParseCertificate(der)
	card, err := pki.IssueNamed("gp", testpki.UsageSign, mustRSA(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	for _, order := range [][]*x509.Certificate{{expired, care.Cert}, {care.Cert, expired}} {
		tr := testTrust(pki)
		tr.IssuingCAs[uzi.CardCareProvider] = order
		v, err := protocol.NewVerifier(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.VerifyCard(card.Raw, uzi.PurposeVouch, now); err != nil {
			t.Errorf("expired certificate first = %v: %v", order[0] == expired, err)
		}
	}
	tr := testTrust(pki)
	tr.IssuingCAs[uzi.CardNamedEmployee] = append(tr.IssuingCAs[uzi.CardNamedEmployee], care.Cert)
	if _, err := protocol.NewVerifier(tr); err == nil {
		t.Error("a CA configured for two card types was accepted")
	}
}

// TestVerifyStatementAgreesWithVerify: for every vector, the back office's
// check of the card's statement (before the attestation exists) gives the
// verdict the phone's full check gives, but for what only the full check
// can see: the attestation, and the phone's key.
func TestVerifyStatementAgreesWithVerify(t *testing.T) {
	t.Parallel()
	vec, v := loadVectors(t)
	onlyInBundle := map[protocol.Reason]bool{
		protocol.ReasonAttestationUnknownKey: true, protocol.ReasonAttestationSignature: true,
		protocol.ReasonAttestationMismatch: true, protocol.ReasonLicenseNotActive: true, protocol.ReasonCodeMismatch: true,
	}
	checked := 0
	for _, c := range vec.Cases {
		raw, err := os.ReadFile(c.Bundle)
		if err != nil {
			t.Fatal(err)
		}
		b, err := protocol.ParseBundle(raw)
		if err != nil || len(raw) > protocol.MaxBundleSize {
			continue // nothing to take apart
		}
		want := protocol.Reason(c.Want)
		if onlyInBundle[want] {
			want = protocol.ReasonOK
		}
		if _, err := protocol.ParseAttestation(b.Attestation); err != nil && protocol.Verdict(err) == want {
			want = protocol.ReasonOK // the attestation's own encoding
		}
		_, err = v.VerifyStatement(b.Statement, b.StatementSignature, b.Cert, vec.Now)
		if got := protocol.Verdict(err); got != want {
			t.Errorf("%s: VerifyStatement says %s, want %s", c.Name, got, want)
		}
		checked++
	}
	if checked < 20 {
		t.Fatalf("only %d vectors checked", checked)
	}
}

// FuzzVerifyStatement: only the statement, signature and certificate of a
// valid bundle, byte for byte, pass the back office's check.
func FuzzVerifyStatement(f *testing.F) {
	vec, v := loadVectors(f)
	valid := map[string]bool{}
	for raw := range validCases(f) {
		b, err := protocol.ParseBundle([]byte(raw))
		if err != nil {
			f.Fatal(err)
		}
		valid[string(b.Statement)+"|"+string(b.StatementSignature)+"|"+string(b.Cert)] = true
		f.Add(b.Statement, b.StatementSignature, b.Cert)
	}
	f.Fuzz(func(t *testing.T, st, sig, cert []byte) {
		if _, err := v.VerifyStatement(st, sig, cert, vec.Now); err == nil && !valid[string(st)+"|"+string(sig)+"|"+string(cert)] {
			t.Fatalf("accepted a statement that is not one of the valid vectors'")
		}
	})
}
