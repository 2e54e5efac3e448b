package protocol_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"vouch/internal/phonecode"
	"vouch/internal/protocol"
	"vouch/internal/testpki"
	"vouch/internal/trust"
	"vouch/internal/uzi"
)

var update = flag.Bool("update", false, "regenerate testdata/bundle (new keys, new bytes)")

const vectorDir = "../../testdata/bundle"

func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t)
	}
	vec, v := loadVectors(t)
	now := vec.Now
	seen := map[protocol.Reason]bool{}
	for _, c := range vec.Cases {
		t.Run(c.Name, func(t *testing.T) {
			raw, err := os.ReadFile(c.Bundle)
			if err != nil {
				t.Fatal(err)
			}
			phone, err := hex.DecodeString(c.PhoneKeyHex)
			if err != nil {
				t.Fatal(err)
			}
			res, err := v.Verify(raw, ed25519.PublicKey(phone), now)
			got := protocol.Verdict(err)
			seen[got] = true
			if got != protocol.Reason(c.Want) {
				t.Fatalf("verdict %q, want %q (%v)", got, c.Want, err)
			}
			if got == protocol.ReasonOK {
				// Canonical: decoding and encoding again gives the same bytes.
				b, _ := protocol.ParseBundle(raw)
				if string(b.Marshal()) != string(raw) || string(res.Statement.Marshal()) != string(b.Statement) {
					t.Error("re-encoding changes the bytes")
				}
			}
		})
	}
	// The attack table of issue 2: every one of these must have a case.
	for _, r := range []protocol.Reason{
		protocol.ReasonOK, protocol.ReasonSignature, protocol.ReasonUnknownCA, protocol.ReasonCertExpired,
		protocol.ReasonCertNotYetValid, protocol.ReasonCardStaff, protocol.ReasonCardNameless, protocol.ReasonCardServer,
		protocol.ReasonCardRole, protocol.ReasonExpired, protocol.ReasonAttestationUnknownKey, protocol.ReasonAttestationSignature,
		protocol.ReasonCodeMismatch, protocol.ReasonWrongJurisdiction, protocol.ReasonTruncated, protocol.ReasonTooLarge,
		protocol.ReasonMalformed, protocol.ReasonCertRevoked, protocol.ReasonCardWrongProfile, protocol.ReasonUnknownVersion,
		protocol.ReasonWrongType, protocol.ReasonNoConsent, protocol.ReasonLicenseNotActive, protocol.ReasonAttestationMismatch,
		protocol.ReasonSignerMismatch, protocol.ReasonCertUsage, protocol.ReasonNotYetValid, protocol.ReasonValidityTooLong,
	} {
		if !seen[r] {
			t.Errorf("no vector yields %q", r)
		}
	}
}

// loadVectors reads testdata/bundle/vectors.json into a verifier.
func loadVectors(t testing.TB) (*trust.Vectors, *protocol.Verifier) {
	t.Helper()
	vec, tr, err := trust.LoadVectors(filepath.Join(vectorDir, "vectors.json"))
	if err != nil {
		t.Fatalf("%v (regenerate with go test ./internal/protocol -run TestVectors -update)", err)
	}
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		t.Fatal(err)
	}
	return vec, v
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---- generation (-update) ----

type gen struct {
	t       *testing.T
	pki     *testpki.PKI
	now     time.Time
	att     *ecdsa.PrivateKey
	phone   ed25519.PublicKey
	vec     trust.Vectors
	keys    map[string]*rsa.PrivateKey
	certs   map[string]*x509.Certificate
	authKey map[string]*rsa.PrivateKey
}

func phoneKey(seed string) ed25519.PublicKey {
	s := sha256.Sum256([]byte(seed))
	return ed25519.NewKeyFromSeed(s[:]).Public().(ed25519.PublicKey)
}

func mustRSA(t *testing.T) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// card returns the signature key and certificate of a named test card.
func (g *gen) card(name string) (*rsa.PrivateKey, *x509.Certificate) {
	if k, ok := g.keys[name]; ok {
		return k, g.certs[name]
	}
	c, ok := testpki.CardByName(name)
	if !ok {
		g.t.Fatalf("no card %s", name)
	}
	k := mustRSA(g.t)
	cert, err := g.pki.Issue(c, testpki.UsageSign, k.Public())
	if err != nil {
		g.t.Fatal(err)
	}
	g.keys[name], g.certs[name] = k, cert
	return k, cert
}

func (g *gen) chain(cert *x509.Certificate) [][]byte {
	c, _ := testpki.CardByName("gp")
	for _, card := range testpki.Cards() {
		if card.CommonName == cert.Subject.CommonName {
			c = card
		}
	}
	return [][]byte{cert.Raw, g.pki.CAs[c.CA].Cert.Raw}
}

func (g *gen) statement(name string, edit func(*protocol.Statement)) (*protocol.Statement, []byte, []byte) {
	key, cert := g.card(name)
	var id [16]byte
	h := sha256.Sum256([]byte(name))
	copy(id[:], h[:16])
	st, err := protocol.NewStatement("NL", id, phonecode.FromPublicKey(g.phone), g.now.Add(-time.Hour), "2026-11-18", cert.Raw)
	if err != nil {
		g.t.Fatal(err)
	}
	if edit != nil {
		edit(st)
	}
	enc, sig, err := protocol.SignStatement(key, st)
	if err != nil {
		g.t.Fatal(err)
	}
	return st, enc, sig
}

func (g *gen) attest(key *ecdsa.PrivateKey, enc []byte, st *protocol.Statement, cert *x509.Certificate, license string) ([]byte, []byte) {
	id, err := uzi.FromCertificate(cert)
	if err != nil {
		g.t.Fatal(err)
	}
	a, s, err := protocol.Attest(key, enc, id, license, st.ExpiresAt, st.IssuedAt)
	if err != nil {
		g.t.Fatal(err)
	}
	return a, s
}

// bundle makes a complete bundle for card name, with optional edits.
func (g *gen) bundle(name string, edit func(*protocol.Statement)) *protocol.Bundle {
	st, enc, sig := g.statement(name, edit)
	_, cert := g.card(name)
	a, as := g.attest(g.att, enc, st, cert, protocol.LicenseActive)
	return &protocol.Bundle{Statement: enc, StatementSignature: sig, Chain: g.chain(cert), Attestation: a, AttestationSignature: as}
}

func (g *gen) add(name string, raw []byte, phone ed25519.PublicKey, want protocol.Reason) {
	file := filepath.Join("cases", name+".bin")
	if err := os.WriteFile(filepath.Join(vectorDir, file), raw, 0o644); err != nil {
		g.t.Fatal(err)
	}
	g.vec.Cases = append(g.vec.Cases, trust.Case{Name: name, Bundle: file, PhoneKeyHex: hex.EncodeToString(phone), Want: string(want)})
}

func writeVectors(t *testing.T) {
	made := time.Now().UTC().Truncate(time.Hour)
	pki, err := testpki.New(made)
	if err != nil {
		t.Fatal(err)
	}
	att, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	g := &gen{t: t, pki: pki, now: made.Add(2 * time.Hour), att: att, phone: phoneKey("vouch test phone"),
		keys: map[string]*rsa.PrivateKey{}, certs: map[string]*x509.Certificate{}}
	os.RemoveAll(vectorDir)
	if err := os.MkdirAll(filepath.Join(vectorDir, "cases"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(vectorDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("root.pem", testpki.CertPEM(pki.Root.Cert))
	write("care-provider-ca.pem", testpki.CertPEM(pki.CAs[testpki.CACareProvider].Cert))
	pubDER, _ := x509.MarshalPKIXPublicKey(att.Public())
	write("attestation.pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	g.vec = trust.Vectors{
		Description: "Vouch bundle test vectors (docs/protocol.md). Verify each case's bundle at 'now' with the phone key given, " +
			"trusting the roots, attestation keys and CRLs (issued by the CAs) listed, under the named card profile and jurisdiction; " +
			"the verdict must equal 'want'.",
		Now: g.now,
		Trust: trust.Config{Roots: []string{"root.pem"}, CAs: []string{"care-provider-ca.pem"}, CRLs: []string{"care-provider.crl"},
			AttestationKeys: []string{"attestation.pub.pem"}, Jurisdiction: "NL", Profile: "test"},
	}
	phone, otherPhone := g.phone, phoneKey("another phone")

	gp := g.bundle("gp", nil)
	g.add("valid-gp", gp.Marshal(), phone, protocol.ReasonOK)
	g.add("valid-nurse", g.bundle("nurse", nil).Marshal(), phone, protocol.ReasonOK)
	g.add("valid-dentist-no-onset", g.bundle("dentist", func(s *protocol.Statement) { s.SymptomOnset = "" }).Marshal(), phone, protocol.ReasonOK)

	// Cards that may not vouch, or whose certificates are not good.
	for name, want := range map[string]protocol.Reason{
		"staff": protocol.ReasonCardStaff, "nameless": protocol.ReasonCardNameless, "server": protocol.ReasonCardServer,
		"pharmacist": protocol.ReasonCardRole, "unknownca": protocol.ReasonUnknownCA, "expired": protocol.ReasonCertExpired,
		"notyet": protocol.ReasonCertNotYetValid, "revoked": protocol.ReasonCertRevoked, "gp-prodlike": protocol.ReasonCardWrongProfile,
	} {
		g.add("card-"+name, g.bundle(name, nil).Marshal(), phone, want)
	}
	_, revokedCert := g.card("revoked")
	crl, err := pki.CRL(testpki.CACareProvider, []*big.Int{revokedCert.SerialNumber}, g.now)
	if err != nil {
		t.Fatal(err)
	}
	write("care-provider.crl", crl)
	// The other issuing CAs revoke nothing, but their CRLs must be current:
	// without one a card's status is unknown, and that refuses.
	for _, ca := range []string{testpki.CANamedEmployee, testpki.CAServices, testpki.CAServer} {
		empty, err := pki.CRL(ca, nil, g.now)
		if err != nil {
			t.Fatal(err)
		}
		write(ca+".crl", empty)
		write(ca+"-ca.pem", testpki.CertPEM(pki.CAs[ca].Cert))
		g.vec.Trust.CRLs = append(g.vec.Trust.CRLs, ca+".crl")
		g.vec.Trust.CAs = append(g.vec.Trust.CAs, ca+"-ca.pem")
	}

	// A signature by a key that is not the card's.
	forged := *gp
	st, _ := protocol.ParseStatement(gp.Statement)
	digest := sha256.Sum256(gp.Statement)
	forged.StatementSignature, _ = rsa.SignPKCS1v15(rand.Reader, mustRSA(t), crypto.SHA256, digest[:])
	g.add("forged-signature", forged.Marshal(), phone, protocol.ReasonSignature)

	// Each field of the statement tampered in turn, after signing.
	tamper := map[string]func(*protocol.Statement){
		"jurisdiction":     func(s *protocol.Statement) { s.Jurisdiction = "NX" },
		"authorization-id": func(s *protocol.Statement) { s.AuthorizationID[0] ^= 1 },
		"phone-code":       func(s *protocol.Statement) { s.PhoneCode = phonecode.FromPublicKey(otherPhone) },
		"issued-at":        func(s *protocol.Statement) { s.IssuedAt = s.IssuedAt.Add(time.Hour) },
		"expires-at":       func(s *protocol.Statement) { s.ExpiresAt = s.ExpiresAt.Add(time.Hour) },
		"consent":          func(s *protocol.Statement) { s.Consent = false },
		"symptom-onset":    func(s *protocol.Statement) { s.SymptomOnset = "2026-11-01" },
		"signer-cert-hash": func(s *protocol.Statement) { s.SignerCertHash[0] ^= 1 },
	}
	for field, edit := range tamper {
		tb := *gp
		ts := *st
		edit(&ts)
		tb.Statement = ts.Marshal()
		// The phone code field is tampered to the other phone, which then
		// presents its own key: only the signature stands in the way.
		key := phone
		if field == "phone-code" {
			key = otherPhone
		}
		g.add("tampered-"+field, tb.Marshal(), key, protocol.ReasonSignature)
	}
	// Properly signed statements that are still not acceptable.
	g.add("authorization-expired", g.bundle("gp", func(s *protocol.Statement) {
		s.IssuedAt, s.ExpiresAt = g.now.Add(-25*time.Hour), g.now.Add(-time.Hour)
	}).Marshal(), phone, protocol.ReasonExpired)
	g.add("authorization-future", g.bundle("gp", func(s *protocol.Statement) {
		s.IssuedAt, s.ExpiresAt = g.now.Add(time.Hour), g.now.Add(25*time.Hour)
	}).Marshal(), phone, protocol.ReasonNotYetValid)
	g.add("authorization-validity-too-long", g.bundle("gp", func(s *protocol.Statement) {
		s.ExpiresAt = s.IssuedAt.Add(48 * time.Hour)
	}).Marshal(), phone, protocol.ReasonValidityTooLong)
	g.add("no-consent", g.bundle("gp", func(s *protocol.Statement) { s.Consent = false }).Marshal(), phone, protocol.ReasonNoConsent)
	g.add("other-jurisdiction", g.bundle("gp", func(s *protocol.Statement) { s.Jurisdiction = "BE" }).Marshal(), phone, protocol.ReasonWrongJurisdiction)
	g.add("code-mismatch", gp.Marshal(), otherPhone, protocol.ReasonCodeMismatch)
	gpKey, gpCert := g.card("gp")
	signerMismatch := g.bundle("gp", func(s *protocol.Statement) { s.SignerCertHash = sha256.Sum256(g.certs["nurse"].Raw) })
	g.add("signer-mismatch", signerMismatch.Marshal(), phone, protocol.ReasonSignerMismatch)

	// The authentication certificate may not sign statements.
	gpCard, _ := testpki.CardByName("gp")
	authCert, err := pki.Issue(gpCard, testpki.UsageAuth, gpKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	usage := g.bundle("gp", func(s *protocol.Statement) { s.SignerCertHash = sha256.Sum256(authCert.Raw) })
	usage.Chain = g.chain(authCert)
	g.add("auth-cert-signs", usage.Marshal(), phone, protocol.ReasonCertUsage)

	// Attestations that do not hold.
	stGP, encGP, sigGP := g.statement("gp", nil)
	mk := func(a, as []byte) []byte {
		return (&protocol.Bundle{Statement: encGP, StatementSignature: sigGP, Chain: g.chain(gpCert), Attestation: a, AttestationSignature: as}).Marshal()
	}
	a, as := g.attest(other, encGP, stGP, gpCert, protocol.LicenseActive)
	g.add("attestation-other-key", mk(a, as), phone, protocol.ReasonAttestationUnknownKey)
	a, _ = g.attest(att, encGP, stGP, gpCert, protocol.LicenseActive)
	d := sha256.Sum256(a)
	forgedAtt, _ := ecdsa.SignASN1(rand.Reader, other, d[:])
	g.add("attestation-forged", mk(a, forgedAtt), phone, protocol.ReasonAttestationSignature)
	_, encNurse, _ := g.statement("nurse", nil)
	a, as = g.attest(att, encNurse, stGP, gpCert, protocol.LicenseActive)
	g.add("attestation-of-other-statement", mk(a, as), phone, protocol.ReasonAttestationMismatch)
	a, as = g.attest(att, encGP, stGP, gpCert, "suspended")
	g.add("license-suspended", mk(a, as), phone, protocol.ReasonLicenseNotActive)

	// Bytes that are not a bundle.
	raw := gp.Marshal()
	g.add("truncated-half", raw[:len(raw)/2], phone, protocol.ReasonTruncated)
	g.add("truncated-last-byte", raw[:len(raw)-1], phone, protocol.ReasonTruncated)
	g.add("trailing-bytes", append(append([]byte{}, raw...), 0), phone, protocol.ReasonMalformed)
	g.add("oversized", append(append([]byte{}, raw...), make([]byte, protocol.MaxBundleSize)...), phone, protocol.ReasonTooLarge)
	garbage := make([]byte, 300)
	rand.Read(garbage)
	garbage[0] = 0xff
	g.add("garbage", garbage, phone, protocol.ReasonMalformed)
	g.add("empty", nil, phone, protocol.ReasonMalformed)
	v2 := append([]byte{0, 0, 0, 15}, "vouch/bundle/v2"...)
	g.add("unknown-version", append(v2, raw[4+len(protocol.LabelBundle):]...), phone, protocol.ReasonUnknownVersion)
	g.add("statement-as-bundle", encGP, phone, protocol.ReasonWrongType)

	b, err := json.MarshalIndent(g.vec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	write("vectors.json", append(b, '\n'))
}
