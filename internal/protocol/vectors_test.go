package protocol_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
	"github.com/vouch-nl/vouch/internal/uzi"
)

var update = flag.Bool("update", false, "regenerate testdata/bundle (new keys, new bytes)")

const vectorDir = "../../testdata/bundle"

// The vector sets: the back end's (with CRLs) and what a phone sees
// offline (no CRLs), beside each other in testdata/bundle.
const (
	backEndSet = "vectors.json"
	phoneSet   = "vectors-phone.json"
)

// TestVectors checks every case of both sets, and every trust case of the
// back end's, against this implementation: what a second implementation
// must reproduce.
func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t)
	}
	seen := map[protocol.Reason]bool{}
	for _, set := range []string{backEndSet, phoneSet} {
		t.Run(set, func(t *testing.T) {
			vec, v := loadVectorSet(t, set)
			runCases(t, v, vec.Now, vec.Cases, seen)
			for _, tc := range vec.TrustCases {
				t.Run("trust/"+tc.Name, func(t *testing.T) {
					tr, err := vec.LoadTrustCase(tc)
					var tv *protocol.Verifier
					if err == nil {
						tv, err = protocol.NewVerifier(tr)
					}
					switch {
					case tc.Want == trust.TrustRefused && err == nil:
						t.Fatal("configuration accepted, want refused")
					case tc.Want == trust.TrustRefused:
						t.Logf("refused: %v", err)
						return
					case err != nil:
						t.Fatalf("configuration refused, want accepted: %v", err)
					}
					runCases(t, tv, vec.Now, tc.Cases, seen)
				})
			}
		})
	}
	// Every reason in the catalogue has a vector: a reason no vector
	// produces is either dead or untested.
	for _, r := range protocol.Reasons() {
		if !seen[r] {
			t.Errorf("no vector yields %q", r)
		}
	}
}

// runCases verifies each case at now and checks its verdict.
func runCases(t *testing.T, v *protocol.Verifier, now time.Time, cases []trust.Case, seen map[protocol.Reason]bool) {
	t.Helper()
	for _, c := range cases {
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
}

// TestPhoneVectors: the phone's set is the back end's without CRLs. It has
// every case of the back end's set, with the same verdict except where only
// the back end can refuse (a revoked card or CA, a CA whose CRL is missing):
// offline those bundles are accepted, and the back end refuses them at
// upload.
func TestPhoneVectors(t *testing.T) {
	back, _ := loadVectorSet(t, backEndSet)
	phone, _ := loadVectorSet(t, phoneSet)
	if back.Mode != trust.ModeBackEnd || phone.Mode != trust.ModePhone {
		t.Fatalf("modes %q and %q", back.Mode, phone.Mode)
	}
	if len(phone.Trust.CRLs) != 0 || len(phone.TrustCases) != 0 {
		t.Fatal("the phone's set configures CRLs or trust cases")
	}
	withoutCRLs := back.Trust
	withoutCRLs.CRLs = nil
	a, _ := json.Marshal(withoutCRLs)
	b, _ := json.Marshal(phone.Trust)
	if string(a) != string(b) || !back.Now.Equal(phone.Now) {
		t.Errorf("the phone's trust or now is not the back end's without CRLs:\n%s\n%s", a, b)
	}
	want := map[string]string{}
	for _, c := range back.Cases {
		switch protocol.Reason(c.Want) {
		case protocol.ReasonCertRevoked, protocol.ReasonRevocationUnknown:
			want[c.Name] = string(protocol.ReasonOK)
		default:
			want[c.Name] = c.Want
		}
	}
	backOnly := 0
	for _, c := range phone.Cases {
		w, ok := want[c.Name]
		if !ok {
			t.Errorf("phone case %s is not in the back end's set", c.Name)
		}
		if c.Want != w {
			t.Errorf("phone case %s wants %q, want %q", c.Name, c.Want, w)
		}
		if i := slices.IndexFunc(back.Cases, func(b trust.Case) bool { return b.Name == c.Name }); i >= 0 && c.Want != back.Cases[i].Want {
			backOnly++
		}
		delete(want, c.Name)
	}
	if len(want) != 0 {
		t.Errorf("back-end cases missing from the phone's set: %v", slices.Sorted(maps.Keys(want)))
	}
	if backOnly < 4 {
		t.Errorf("%d cases differ between the sets; want the four that depend on CRLs", backOnly)
	}
}

// TestReasonTextsFile: testdata/bundle/reasons.json, which phones show,
// holds for every reason exactly the texts the back office shows
// (Reason.Text) in every language of the catalogue.
func TestReasonTextsFile(t *testing.T) {
	var file reasonTexts
	if err := json.Unmarshal(readFile(t, "reasons.json"), &file); err != nil {
		t.Fatal(err)
	}
	want := makeReasonTexts()
	if !slices.Equal(file.Languages, want.Languages) {
		t.Errorf("languages %v, catalogue %v", file.Languages, want.Languages)
	}
	for _, r := range protocol.Reasons() {
		for _, lang := range want.Languages {
			if got := file.Reasons[string(r)][lang]; got != r.Text(lang) {
				t.Errorf("%s in %s: file says %q, the back office %q (regenerate with -update)", r, lang, got, r.Text(lang))
			}
		}
	}
	if len(file.Reasons) != len(protocol.Reasons()) {
		t.Errorf("%d reasons in the file, %d in the protocol", len(file.Reasons), len(protocol.Reasons()))
	}
}

// reasonTexts is the format of testdata/bundle/reasons.json.
type reasonTexts struct {
	Description string                       `json:"description"`
	Languages   []string                     `json:"languages"`
	Reasons     map[string]map[string]string `json:"reasons"` // code → language → text
}

func makeReasonTexts() reasonTexts {
	rt := reasonTexts{
		Description: "What each verdict of docs/protocol.md §8 means to a person, in each language, exactly as the back office and " +
			"'vouch bundle verify' show it (internal/i18n, message reason.<code>). A phone shows the same words.",
		Languages: i18n.Default().Languages(),
		Reasons:   map[string]map[string]string{},
	}
	for _, r := range protocol.Reasons() {
		rt.Reasons[string(r)] = map[string]string{}
		for _, lang := range rt.Languages {
			rt.Reasons[string(r)][lang] = r.Text(lang)
		}
	}
	return rt
}

// loadVectors reads testdata/bundle/vectors.json into a verifier.
func loadVectors(t testing.TB) (*trust.Vectors, *protocol.Verifier) {
	t.Helper()
	return loadVectorSet(t, backEndSet)
}

// loadVectorSet reads one vector set of testdata/bundle into a verifier.
func loadVectorSet(t testing.TB, set string) (*trust.Vectors, *protocol.Verifier) {
	t.Helper()
	vec, tr, err := trust.LoadVectors(filepath.Join(vectorDir, set))
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
	t     *testing.T
	pki   *testpki.PKI
	now   time.Time
	att   *ecdsa.PrivateKey
	phone ed25519.PublicKey
	vec   trust.Vectors
	keys  map[string]*rsa.PrivateKey
	certs map[string]*x509.Certificate
}

func phoneKey(seed string) ed25519.PublicKey {
	s := sha256.Sum256([]byte(seed))
	return ed25519.NewKeyFromSeed(s[:]).Public().(ed25519.PublicKey)
}

func mustRSA(t testing.TB) *rsa.PrivateKey { return mustRSABits(t, 2048) }

func mustRSABits(t testing.TB, bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
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

// crafted issues, from CA caName, a signature certificate for key made from
// the GP card's template changed by edit: what a compromised or careless CA
// might sign, or an attacker with a test CA's key.
func (g *gen) crafted(key crypto.Signer, caName string, edit func(*x509.Certificate)) *x509.Certificate {
	c, _ := testpki.CardByName("gp")
	tmpl, err := g.pki.Template(c, testpki.UsageSign)
	if err != nil {
		g.t.Fatal(err)
	}
	if edit != nil {
		edit(tmpl)
	}
	cert, err := g.pki.IssueFrom(tmpl, caName, key.Public())
	if err != nil {
		g.t.Fatal(err)
	}
	return cert
}

// onset is the date days after the UTC date of the vectors' statements
// (issued an hour before now), as a symptom onset.
func (g *gen) onset(days int) string {
	return g.now.Add(-time.Hour).UTC().Truncate(24*time.Hour).AddDate(0, 0, days).Format(time.DateOnly)
}

// signed makes a statement for cert, edited, signed by key.
func (g *gen) signed(key crypto.Signer, cert *x509.Certificate, edit func(*protocol.Statement)) (*protocol.Statement, []byte, []byte) {
	var id [16]byte
	h := sha256.Sum256(cert.Raw)
	copy(id[:], h[:16])
	st, err := protocol.NewStatement("NL", id, phonecode.FromPublicKey(g.phone), g.now.Add(-time.Hour), g.onset(-4), cert.Raw)
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
		// Crafted certificates may carry no usable name; attest the GP's.
		id, _ = uzi.ParseName(testpki.Cards()[0].UZIName())
	}
	a, s, err := protocol.Attest(key, enc, id, license, st.ExpiresAt, st.IssuedAt)
	if err != nil {
		g.t.Fatal(err)
	}
	return a, s
}

// signAttestation signs an attestation built by hand.
func (g *gen) signAttestation(a *protocol.Attestation) ([]byte, []byte) {
	kid, _ := protocol.KeyID(g.att.Public())
	a.KeyID = kid
	enc := a.Marshal()
	d := sha256.Sum256(enc)
	sig, err := ecdsa.SignASN1(rand.Reader, g.att, d[:])
	if err != nil {
		g.t.Fatal(err)
	}
	sig, err = protocol.LowS(elliptic.P256(), sig)
	if err != nil {
		g.t.Fatal(err)
	}
	return enc, sig
}

// bundleFor makes a complete bundle for cert and key, with optional edits.
func (g *gen) bundleFor(key crypto.Signer, cert *x509.Certificate, edit func(*protocol.Statement)) *protocol.Bundle {
	st, enc, sig := g.signed(key, cert, edit)
	a, as := g.attest(g.att, enc, st, cert, protocol.LicenseActive)
	return &protocol.Bundle{Statement: enc, StatementSignature: sig, Cert: cert.Raw, Attestation: a, AttestationSignature: as}
}

// bundle makes a complete bundle for card name, with optional edits.
func (g *gen) bundle(name string, edit func(*protocol.Statement)) *protocol.Bundle {
	key, cert := g.card(name)
	return g.bundleFor(key, cert, edit)
}

func (g *gen) add(name string, raw []byte, phone ed25519.PublicKey, want protocol.Reason) {
	file := filepath.Join("cases", name+".bin")
	if err := os.WriteFile(filepath.Join(vectorDir, file), raw, 0o644); err != nil {
		g.t.Fatal(err)
	}
	g.vec.Cases = append(g.vec.Cases, trust.Case{Name: name, Bundle: file, PhoneKeyHex: hex.EncodeToString(phone), Want: string(want)})
}

// rsaWithE makes an RSA key with public exponent e, which rsa.GenerateKey
// cannot (it always uses 65537).
func rsaWithE(bits, e int) (*rsa.PrivateKey, error) {
	E := big.NewInt(int64(e))
	one := big.NewInt(1)
	for {
		p, err := rand.Prime(rand.Reader, bits/2)
		if err != nil {
			return nil, err
		}
		q, err := rand.Prime(rand.Reader, bits-bits/2)
		if err != nil {
			return nil, err
		}
		n := new(big.Int).Mul(p, q)
		phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
		d := new(big.Int).ModInverse(E, phi)
		if d == nil || n.BitLen() != bits || p.Cmp(q) == 0 {
			continue
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: e}, D: d, Primes: []*big.Int{p, q}}
		if err := k.Validate(); err != nil {
			continue
		}
		k.Precompute()
		return k, nil
	}
}

// rawStatement encodes a statement with any int64 times and strings, as an
// attacker's encoder would; Marshal cannot express out-of-range times.
func rawStatement(jurisdiction string, st *protocol.Statement, issued, expires int64) []byte {
	var b []byte
	str := func(s string) { b = binary.BigEndian.AppendUint32(b, uint32(len(s))); b = append(b, s...) }
	str(protocol.LabelStatement)
	str(jurisdiction)
	str(string(st.AuthorizationID[:]))
	str(string(st.PhoneCode[:]))
	b = binary.BigEndian.AppendUint64(b, uint64(issued))
	b = binary.BigEndian.AppendUint64(b, uint64(expires))
	b = append(b, 1)
	str(st.SymptomOnset)
	str(string(st.SignerCertHash[:]))
	return b
}

const oidAnyPolicy = "2.5.29.32.0"

func policy(t *testing.T, s string) []x509.OID {
	o, err := x509.ParseOID(s)
	if err != nil {
		t.Fatal(err)
	}
	return []x509.OID{o}
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
	for _, d := range []string{"cases", "crls"} {
		if err := os.MkdirAll(filepath.Join(vectorDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(vectorDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Two more care-provider CAs: one the root revokes, one whose CRL is
	// not configured (so nobody can know its cards' status).
	revokedCA, err := pki.AddCA("care-provider-revoked")
	if err != nil {
		t.Fatal(err)
	}
	noCRLCA, err := pki.AddCA("care-provider-no-crl")
	if err != nil {
		t.Fatal(err)
	}
	// And one the root revokes whose own CRL is not configured: a card
	// from it shows which is checked first, the card or its CA.
	revokedNoCRLCA, err := pki.AddCA("care-provider-revoked-no-crl")
	if err != nil {
		t.Fatal(err)
	}
	// A CA renewed with the same name and key, once under the root and
	// once under an intermediate: two paths for its cards (§6 step 4).
	renewedA, renewedB := g.renewedCA()
	// Named as in a card manifest, so the vectors trust the files the way a
	// test deployment of the SoftHSM cards does.
	files := &testpki.Manifest{RootCA: "root.pem", CAs: map[string]string{testpki.CACareProvider: "care-provider-ca.pem"},
		CRLs: map[string]string{}}
	writeCRL := func(ca string, der []byte) {
		write(ca+".crl", der)
		files.CRLs[ca] = ca + ".crl"
	}
	write("root.pem", testpki.CertPEM(pki.Root.Cert))
	zFile := func(renewed ...*x509.Certificate) []byte {
		var b []byte
		for _, c := range append([]*x509.Certificate{pki.CAs[testpki.CACareProvider].Cert, revokedCA.Cert, noCRLCA.Cert, revokedNoCRLCA.Cert}, renewed...) {
			b = append(b, testpki.CertPEM(c)...)
		}
		return b
	}
	write("care-provider-ca.pem", zFile(renewedA, renewedB))
	// The same CAs with the renewed CA's certificates the other way round,
	// for a trust case: the first path is then the one through B.
	write("care-provider-ca-renewed-b-first.pem", zFile(renewedB, renewedA))
	write("intermediate.pem", testpki.CertPEM(pki.CAs["intermediate"].Cert))
	pubDER, _ := x509.MarshalPKIXPublicKey(att.Public())
	write("attestation.pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	g.vec = trust.Vectors{
		Description: "Vouch bundle test vectors (docs/protocol.md). Verify each case's bundle at 'now' with the phone key given, " +
			"trusting the roots, the issuing CAs per card type, the attestation keys and the CRLs listed, under the named card profile and jurisdiction; " +
			"the verdict must equal 'want'.",
		Mode:  trust.ModeBackEnd,
		Now:   g.now,
		Trust: trust.Config{Intermediates: []string{"intermediate.pem"}, AttestationKeys: []string{"attestation.pub.pem"}, Jurisdiction: "NL", Profile: "test"},
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
	writeCRL(testpki.CACareProvider, crl)
	rootCRL, err := pki.CRL("root", []*big.Int{revokedCA.Cert.SerialNumber, revokedNoCRLCA.Cert.SerialNumber, renewedA.SerialNumber}, g.now)
	if err != nil {
		t.Fatal(err)
	}
	writeCRL("root", rootCRL)
	revokedCACRL, err := pki.CRL("care-provider-revoked", nil, g.now)
	if err != nil {
		t.Fatal(err)
	}
	writeCRL("care-provider-revoked", revokedCACRL)
	// The other issuing CAs revoke nothing, but their CRLs must be current:
	// without one a card's status is unknown, and that refuses.
	renewedCRL, err := pki.CRL("care-provider-renewed", nil, g.now)
	if err != nil {
		t.Fatal(err)
	}
	writeCRL("care-provider-renewed", renewedCRL)
	// The intermediate's CRL is not in the set's list: the path through
	// it has an unknown status, until a trust case adds it.
	interCRL, err := pki.CRL("intermediate", nil, g.now)
	if err != nil {
		t.Fatal(err)
	}
	write("crls/intermediate.crl", interCRL)
	for _, ca := range []string{testpki.CANamedEmployee, testpki.CAServices, testpki.CAServer} {
		empty, err := pki.CRL(ca, nil, g.now)
		if err != nil {
			t.Fatal(err)
		}
		writeCRL(ca, empty)
		write(ca+"-ca.pem", testpki.CertPEM(pki.CAs[ca].Cert))
		files.CAs[ca] = ca + "-ca.pem"
	}
	tf := files.TrustFiles()
	g.vec.Trust.Roots, g.vec.Trust.CAs, g.vec.Trust.CRLs = tf.Roots, tf.CAs(), tf.CRLs

	// Certificates a real UZI relying party refuses, each signed by a
	// trusted CA (as by a careless CA, or an attacker holding its key).
	key := mustRSA(t)
	certCase := func(name, caName string, want protocol.Reason, edit func(*x509.Certificate)) {
		cert := g.crafted(key, caName, edit)
		g.add(name, g.bundleFor(key, cert, nil).Marshal(), phone, want)
	}
	certCase("card-ca-flag", testpki.CACareProvider, protocol.ReasonCertNotEndEntity, func(c *x509.Certificate) { c.IsCA = true })
	certCase("card-ca-pathlen-0", testpki.CACareProvider, protocol.ReasonCertNotEndEntity, func(c *x509.Certificate) {
		c.IsCA, c.MaxPathLen, c.MaxPathLenZero = true, 0, true
	})
	certCase("card-keycertsign", testpki.CACareProvider, protocol.ReasonCertNotEndEntity, func(c *x509.Certificate) {
		c.KeyUsage |= x509.KeyUsageCertSign
	})
	certCase("card-z-from-server-ca", testpki.CAServer, protocol.ReasonCardTypeWrongCA, nil)
	certCase("card-z-from-nameless-ca", testpki.CAServices, protocol.ReasonCardTypeWrongCA, nil)
	certCase("card-z-from-named-employee-ca", testpki.CANamedEmployee, protocol.ReasonCardTypeWrongCA, nil)
	certCase("card-z-from-root", "root", protocol.ReasonUnknownCA, nil)
	certCase("card-ca-revoked", "care-provider-revoked", protocol.ReasonCertRevoked, nil)
	certCase("card-ca-without-crl", "care-provider-no-crl", protocol.ReasonRevocationUnknown, nil)
	certCase("card-any-policy", testpki.CACareProvider, protocol.ReasonCertPolicy, func(c *x509.Certificate) { c.Policies = policy(t, oidAnyPolicy) })
	certCase("card-auth-policy-on-signature-key", testpki.CACareProvider, protocol.ReasonCertPolicy, func(c *x509.Certificate) {
		c.Policies = policy(t, uzi.TestPolicyAuth)
	})
	certCase("card-production-policy", testpki.CACareProvider, protocol.ReasonCertPolicy, func(c *x509.Certificate) {
		c.Policies = policy(t, uzi.ProductionPolicySign)
	})
	certCase("card-eku-server-client", testpki.CACareProvider, protocol.ReasonCertUsage, func(c *x509.Certificate) {
		c.ExtKeyUsage, c.UnknownExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, nil
	})
	certCase("card-eku-any", testpki.CACareProvider, protocol.ReasonCertUsage, func(c *x509.Certificate) {
		c.ExtKeyUsage, c.UnknownExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, nil
	})
	certCase("card-eku-any-and-email", testpki.CACareProvider, protocol.ReasonCertUsage, func(c *x509.Certificate) {
		c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageAny)
	})
	certCase("card-no-eku", testpki.CACareProvider, protocol.ReasonCertUsage, func(c *x509.Certificate) {
		c.ExtKeyUsage, c.UnknownExtKeyUsage = nil, nil
	})
	certCase("card-eku-document-signing-only", testpki.CACareProvider, protocol.ReasonOK, func(c *x509.Certificate) {
		c.ExtKeyUsage = nil
	})
	certCase("card-ku-signature-and-nonrepudiation", testpki.CACareProvider, protocol.ReasonCertUsage, func(c *x509.Certificate) {
		c.KeyUsage |= x509.KeyUsageDigitalSignature
	})
	certCase("card-no-uzi-name", testpki.CACareProvider, protocol.ReasonCardNameMissing, func(c *x509.Certificate) {
		c.ExtraExtensions = nil
	})
	certCase("card-name-six-fields", testpki.CACareProvider, protocol.ReasonCardNameMalformed, func(c *x509.Certificate) {
		san, _ := uzi.SANExtension(uzi.TestOIDCA + "-1-900000001-Z-90000001-01.015")
		c.ExtraExtensions = []pkix.Extension{san}
	})
	certCase("card-name-constructed-ia5string", testpki.CACareProvider, protocol.ReasonCardNameMalformed, func(c *x509.Certificate) {
		name := testpki.Cards()[0].UZIName()
		seg := func(s string) []byte { return append([]byte{0x16, byte(len(s))}, s...) }
		inner := append(seg(name[:30]), seg(name[30:])...)
		c.ExtraExtensions = []pkix.Extension{uziSAN(append([]byte{0x36, byte(len(inner))}, inner...))}
	})
	certCase("card-critical-san", testpki.CACareProvider, protocol.ReasonCertExtension, func(c *x509.Certificate) {
		c.ExtraExtensions[0].Critical = true
	})
	certCase("card-unknown-critical-extension", testpki.CACareProvider, protocol.ReasonCertExtension, func(c *x509.Certificate) {
		c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{0x05, 0x00}})
	})
	small := mustRSABits(t, 1024)
	g.add("card-rsa-1024", g.bundleFor(small, g.crafted(small, testpki.CACareProvider, nil), nil).Marshal(), phone, protocol.ReasonCertKey)
	for _, bits := range []int{2047, 2049, 3072} {
		k := mustRSABits(t, bits)
		g.add(fmt.Sprintf("card-rsa-%d", bits), g.bundleFor(k, g.crafted(k, testpki.CACareProvider, nil), nil).Marshal(), phone, protocol.ReasonCertKey)
	}
	// Exponent 3: the same size, but not the UZI cards' key.
	e3, err := rsaWithE(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	g.add("card-rsa-e3", g.bundleFor(e3, g.crafted(e3, testpki.CACareProvider, nil), nil).Marshal(), phone, protocol.ReasonCertKey)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecCert := g.crafted(ecKey, testpki.CACareProvider, nil)
	ecBundle := g.bundle("gp", func(s *protocol.Statement) { s.SignerCertHash = sha256.Sum256(ecCert.Raw) })
	ecBundle.Cert = ecCert.Raw
	g.add("card-ecdsa-key", ecBundle.Marshal(), phone, protocol.ReasonCertKey)

	// A certificate changed after its CA signed it, and one that names
	// the CA but was signed by another key.
	gpKey, gpCert := g.card("gp")
	tampered := append([]byte{}, gpCert.Raw...)
	i := bytes.Index(tampered, []byte(gpCert.Subject.CommonName))
	tampered[i] ^= 0x20 // "A. Huisarts" -> "a. Huisarts"
	tb := g.bundle("gp", func(s *protocol.Statement) { s.SignerCertHash = sha256.Sum256(tampered) })
	tb.Cert = tampered
	g.add("card-altered-after-signing", tb.Marshal(), phone, protocol.ReasonCertSignature)
	forgedTmpl, _ := pki.Template(testpki.Cards()[0], testpki.UsageSign)
	rogueKey := mustRSA(t)
	impostor := *pki.CAs[testpki.CACareProvider].Cert // the CA's name, another key
	impostor.PublicKey = rogueKey.Public()
	forgedDER, err := x509.CreateCertificate(rand.Reader, forgedTmpl, &impostor, key.Public(), rogueKey)
	if err != nil {
		t.Fatal(err)
	}
	forgedCert, _ := x509.ParseCertificate(forgedDER)
	g.add("card-forged-issuer-signature", g.bundleFor(key, forgedCert, nil).Marshal(), phone, protocol.ReasonCertSignature)

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
		"symptom-onset":    func(s *protocol.Statement) { s.SymptomOnset = g.onset(-10) },
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
	skew := 5 * time.Minute
	at := func(issued, expires time.Time) func(*protocol.Statement) {
		return func(s *protocol.Statement) { s.IssuedAt, s.ExpiresAt = issued, expires }
	}
	g.add("authorization-expired", g.bundle("gp", at(g.now.Add(-25*time.Hour), g.now.Add(-time.Hour))).Marshal(), phone, protocol.ReasonExpired)
	g.add("authorization-expires-now", g.bundle("gp", at(g.now.Add(-24*time.Hour), g.now)).Marshal(), phone, protocol.ReasonExpired)
	g.add("authorization-expires-in-1s", g.bundle("gp", at(g.now.Add(-24*time.Hour+time.Second), g.now.Add(time.Second))).Marshal(), phone, protocol.ReasonOK)
	g.add("authorization-future", g.bundle("gp", at(g.now.Add(time.Hour), g.now.Add(25*time.Hour))).Marshal(), phone, protocol.ReasonNotYetValid)
	g.add("authorization-issued-at-skew", g.bundle("gp", at(g.now.Add(skew), g.now.Add(skew+time.Hour))).Marshal(), phone, protocol.ReasonOK)
	g.add("authorization-issued-past-skew", g.bundle("gp", at(g.now.Add(skew+time.Second), g.now.Add(skew+time.Hour))).Marshal(), phone, protocol.ReasonNotYetValid)
	g.add("authorization-validity-too-long", g.bundle("gp", func(s *protocol.Statement) {
		s.ExpiresAt = s.IssuedAt.Add(24*time.Hour + time.Second)
	}).Marshal(), phone, protocol.ReasonValidityTooLong)
	g.add("authorization-validity-24h", g.bundle("gp", func(s *protocol.Statement) {
		s.IssuedAt, s.ExpiresAt = g.now.Add(-time.Hour), g.now.Add(23*time.Hour)
	}).Marshal(), phone, protocol.ReasonOK)
	g.add("authorization-validity-zero", g.bundle("gp", func(s *protocol.Statement) { s.ExpiresAt = s.IssuedAt }).Marshal(), phone, protocol.ReasonValidityTooLong)
	g.add("no-consent", g.bundle("gp", func(s *protocol.Statement) { s.Consent = false }).Marshal(), phone, protocol.ReasonNoConsent)
	g.add("other-jurisdiction", g.bundle("gp", func(s *protocol.Statement) { s.Jurisdiction = "BE" }).Marshal(), phone, protocol.ReasonWrongJurisdiction)
	g.add("code-mismatch", gp.Marshal(), otherPhone, protocol.ReasonCodeMismatch)
	g.add("signer-mismatch", g.bundle("gp", func(s *protocol.Statement) { s.SignerCertHash = sha256.Sum256(g.certs["nurse"].Raw) }).Marshal(),
		phone, protocol.ReasonSignerMismatch)

	// Statement contents the spec bounds, each properly signed.
	issuedDay := g.now.Add(-time.Hour).UTC().Truncate(24 * time.Hour)
	for name, tt := range map[string]struct {
		onset string
		want  protocol.Reason
	}{
		"onset-2099":           {"2099-01-01", protocol.ReasonSymptomOnset},
		"onset-year-0":         {"0000-01-01", protocol.ReasonSymptomOnset},
		"onset-year-9999":      {"9999-12-31", protocol.ReasonSymptomOnset},
		"onset-day-after":      {issuedDay.Add(24 * time.Hour).Format(time.DateOnly), protocol.ReasonOK},
		"onset-two-days-after": {issuedDay.Add(48 * time.Hour).Format(time.DateOnly), protocol.ReasonSymptomOnset},
		"onset-same-day":       {issuedDay.Format(time.DateOnly), protocol.ReasonOK},
		"onset-30-days-before": {issuedDay.Add(-protocol.MaxOnsetAge).Format(time.DateOnly), protocol.ReasonOK},
		"onset-31-days-before": {issuedDay.Add(-protocol.MaxOnsetAge - 24*time.Hour).Format(time.DateOnly), protocol.ReasonSymptomOnset},
		"onset-not-a-date":     {"2026-02-30", protocol.ReasonSymptomOnset},
		"onset-other-format":   {"18-11-2026", protocol.ReasonSymptomOnset},
		// At most 10 characters: longer is a field over its maximum.
		"onset-11-chars":  {g.onset(-4) + "0", protocol.ReasonMalformed},
		"onset-9-chars":   {g.onset(-4)[:9], protocol.ReasonSymptomOnset},
		"onset-slashes":   {strings.ReplaceAll(g.onset(-4), "-", "/"), protocol.ReasonSymptomOnset},
		"onset-non-ascii": {g.onset(-4)[:9] + "\xc3", protocol.ReasonMalformed},
	} {
		// NewStatement refuses such onsets, so sign a hand-edited one.
		k, c := g.card("gp")
		stOK, _, _ := g.signed(k, c, nil)
		stOK.SymptomOnset = tt.onset
		enc := stOK.Marshal()
		d := sha256.Sum256(enc)
		sig, _ := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
		a, as := g.signAttestation(&protocol.Attestation{StatementHash: sha256.Sum256(enc), UZI: "900000001", Role: "01.015",
			License: protocol.LicenseActive, CheckedAt: stOK.IssuedAt, ExpiresAt: stOK.ExpiresAt})
		g.add("statement-"+name, (&protocol.Bundle{Statement: enc, StatementSignature: sig, Cert: c.Raw, Attestation: a, AttestationSignature: as}).Marshal(),
			phone, tt.want)
	}
	// Encodings only an attacker's encoder makes, each signed by the card.
	for name, tt := range map[string]struct {
		jurisdiction    string
		issued, expires int64
		want            protocol.Reason
	}{
		"jurisdiction-non-ascii":    {"N\xc3\x9c", st.IssuedAt.Unix(), st.ExpiresAt.Unix(), protocol.ReasonMalformed},
		"jurisdiction-control-char": {"N\x00", st.IssuedAt.Unix(), st.ExpiresAt.Unix(), protocol.ReasonMalformed},
		"jurisdiction-one-letter":   {"N", st.IssuedAt.Unix(), st.ExpiresAt.Unix(), protocol.ReasonMalformed},
		"jurisdiction-nine-letters": {"NLNLNLNLN", st.IssuedAt.Unix(), st.ExpiresAt.Unix(), protocol.ReasonMalformed},
		"time-int64-max":            {"NL", math.MaxInt64 - 10, math.MaxInt64, protocol.ReasonMalformed},
		"time-int64-min":            {"NL", math.MinInt64, math.MinInt64 + 10, protocol.ReasonMalformed},
		"time-year-2100":            {"NL", 4102444800, 4102444800 + 3600, protocol.ReasonMalformed},
		"time-year-1999":            {"NL", 946684799 - 3600, 946684799, protocol.ReasonMalformed},
	} {
		k, c := g.card("gp")
		enc := rawStatement(tt.jurisdiction, st, tt.issued, tt.expires)
		d := sha256.Sum256(enc)
		sig, _ := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
		a, as := g.attest(att, gp.Statement, st, c, protocol.LicenseActive)
		g.add("statement-"+name, (&protocol.Bundle{Statement: enc, StatementSignature: sig, Cert: c.Raw, Attestation: a, AttestationSignature: as}).Marshal(),
			phone, tt.want)
	}

	// The authentication certificate may not sign statements.
	gpCard, _ := testpki.CardByName("gp")
	authCert, err := pki.Issue(gpCard, testpki.UsageAuth, gpKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	usage := g.bundle("gp", func(s *protocol.Statement) { s.SignerCertHash = sha256.Sum256(authCert.Raw) })
	usage.Cert = authCert.Raw
	g.add("auth-cert-signs", usage.Marshal(), phone, protocol.ReasonCertUsage)

	// Attestations that do not hold.
	stGP, encGP, sigGP := g.signed(gpKey, gpCert, nil)
	mk := func(a, as []byte) []byte {
		return (&protocol.Bundle{Statement: encGP, StatementSignature: sigGP, Cert: gpCert.Raw, Attestation: a, AttestationSignature: as}).Marshal()
	}
	a, as := g.attest(other, encGP, stGP, gpCert, protocol.LicenseActive)
	g.add("attestation-other-key", mk(a, as), phone, protocol.ReasonAttestationUnknownKey)
	a, as = g.attest(att, encGP, stGP, gpCert, protocol.LicenseActive)
	d := sha256.Sum256(a)
	forgedAtt, _ := ecdsa.SignASN1(rand.Reader, other, d[:])
	g.add("attestation-forged", mk(a, forgedAtt), phone, protocol.ReasonAttestationSignature)
	// The same valid signature with S replaced by n−S verifies under plain
	// ECDSA; only the low-S form is accepted, so the bundle stays unique.
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(as, &rs); err != nil {
		t.Fatal(err)
	}
	rs.S = new(big.Int).Sub(elliptic.P256().Params().N, rs.S)
	highS, _ := asn1.Marshal(rs)
	g.add("attestation-high-s", mk(a, highS), phone, protocol.ReasonAttestationSignature)
	g.add("attestation-signature-trailing-byte", mk(a, append(append([]byte{}, as...), 0)), phone, protocol.ReasonAttestationSignature)
	_, encNurse, _ := g.signed(g.keys["gp"], gpCert, func(s *protocol.Statement) { s.AuthorizationID[1] ^= 1 })
	a, as = g.attest(att, encNurse, stGP, gpCert, protocol.LicenseActive)
	g.add("attestation-of-other-statement", mk(a, as), phone, protocol.ReasonAttestationMismatch)
	base := func() *protocol.Attestation {
		return &protocol.Attestation{StatementHash: sha256.Sum256(encGP), UZI: "900000001", Role: "01.015", License: protocol.LicenseActive,
			CheckedAt: stGP.IssuedAt, ExpiresAt: stGP.ExpiresAt}
	}
	for name, edit := range map[string]func(*protocol.Attestation){
		"uzi":                  func(a *protocol.Attestation) { a.UZI = "900000002" },
		"role":                 func(a *protocol.Attestation) { a.Role = "01.010" },
		"expiry":               func(a *protocol.Attestation) { a.ExpiresAt = a.ExpiresAt.Add(-time.Second) },
		"checked-before-issue": func(a *protocol.Attestation) { a.CheckedAt = stGP.IssuedAt.Add(-skew - time.Second) },
		"checked-after-now":    func(a *protocol.Attestation) { a.CheckedAt = g.now.Add(skew + time.Second) },
	} {
		at := base()
		edit(at)
		a, as := g.signAttestation(at)
		g.add("attestation-mismatch-"+name, mk(a, as), phone, protocol.ReasonAttestationMismatch)
	}
	for name, edit := range map[string]func(*protocol.Attestation){
		"checked-at-issue-minus-skew": func(a *protocol.Attestation) { a.CheckedAt = stGP.IssuedAt.Add(-skew) },
		"checked-at-now-plus-skew":    func(a *protocol.Attestation) { a.CheckedAt = g.now.Add(skew) },
	} {
		at := base()
		edit(at)
		a, as := g.signAttestation(at)
		g.add("attestation-"+name, mk(a, as), phone, protocol.ReasonOK)
	}
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
	// The list of certificates that bundles once carried: the card's
	// certificate followed by its CA. Not a bundle any more.
	var listed []byte
	field := func(b []byte) {
		listed = binary.BigEndian.AppendUint32(listed, uint32(len(b)))
		listed = append(listed, b...)
	}
	field([]byte(protocol.LabelBundle))
	field(gp.Statement)
	field(gp.StatementSignature)
	listed = append(listed, 2)
	field(gp.Cert)
	field(pki.CAs[testpki.CACareProvider].Cert.Raw)
	field(gp.Attestation)
	field(gp.AttestationSignature)
	g.add("certificate-list-with-ca", listed, phone, protocol.ReasonMalformed)

	g.addRuleCases(key, certCase, raw, revokedNoCRLCA)
	g.vec.TrustCases = g.trustCases(write, tf.CRLs, revokedCert)
	writeJSON := func(name string, v any) {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		write(name, append(b, '\n'))
	}
	writeJSON(backEndSet, g.vec)
	writeJSON(phoneSet, g.phoneVectors())
	writeJSON("reasons.json", makeReasonTexts())
}

// addRuleCases adds the cases that pin the rules docs/protocol.md states
// for a second implementation (issue 19): signature algorithms, validity
// boundaries, basicConstraints, issuer names, the label grammar,
// truncation, the card name's OID and the order of revocation checks.
func (g *gen) addRuleCases(key *rsa.PrivateKey, certCase func(string, string, protocol.Reason, func(*x509.Certificate)), raw []byte, revokedNoCRLCA *testpki.CA) {
	t, phone := g.t, g.phone
	// Signature algorithms on certificates: RSA PKCS#1 v1.5 or ECDSA with
	// SHA-256, -384 or -512; RSASSA-PSS and SHA-1 are not accepted.
	for name, tt := range map[string]struct {
		alg  x509.SignatureAlgorithm
		want protocol.Reason
	}{
		"card-signed-rsa-pss-sha256": {x509.SHA256WithRSAPSS, protocol.ReasonCertSignature},
		"card-signed-rsa-pss-sha512": {x509.SHA512WithRSAPSS, protocol.ReasonCertSignature},
		"card-signed-sha1-rsa":       {x509.SHA1WithRSA, protocol.ReasonCertSignature},
		"card-signed-sha384-rsa":     {x509.SHA384WithRSA, protocol.ReasonOK},
		"card-signed-sha512-rsa":     {x509.SHA512WithRSA, protocol.ReasonOK},
	} {
		certCase(name, testpki.CACareProvider, tt.want, func(c *x509.Certificate) { c.SignatureAlgorithm = tt.alg })
	}
	// Validity is inclusive at both ends: notBefore <= now <= notAfter.
	certCase("card-valid-until-now", testpki.CACareProvider, protocol.ReasonOK, func(c *x509.Certificate) { c.NotAfter = g.now })
	certCase("card-expired-1s-ago", testpki.CACareProvider, protocol.ReasonCertExpired, func(c *x509.Certificate) { c.NotAfter = g.now.Add(-time.Second) })
	certCase("card-valid-from-now", testpki.CACareProvider, protocol.ReasonOK, func(c *x509.Certificate) { c.NotBefore = g.now })
	certCase("card-valid-from-1s-later", testpki.CACareProvider, protocol.ReasonCertNotYetValid, func(c *x509.Certificate) {
		c.NotBefore = g.now.Add(time.Second)
	})
	// basicConstraints may be absent from a card certificate; when present,
	// cA is false (card-ca-flag).
	certCase("card-no-basic-constraints", testpki.CACareProvider, protocol.ReasonOK, func(c *x509.Certificate) { c.BasicConstraintsValid = false })
	// The card name's OID CA: arcs without leading zeros.
	certCase("card-name-oid-leading-zero", testpki.CACareProvider, protocol.ReasonCardNameMalformed, func(c *x509.Certificate) {
		name := strings.Replace(testpki.Cards()[0].UZIName(), "2.16.528.", "2.16.0528.", 1)
		san, _ := uzi.SANExtension(name)
		c.ExtraExtensions = []pkix.Extension{san}
	})
	certCase("card-name-oid-one-arc", testpki.CACareProvider, protocol.ReasonCardNameMalformed, func(c *x509.Certificate) {
		name := testpki.Cards()[0].UZIName()
		san, _ := uzi.SANExtension("2" + name[strings.IndexByte(name, '-'):])
		c.ExtraExtensions = []pkix.Extension{san}
	})
	// Issuer names are compared byte for byte: the CA's name encoded
	// otherwise (UTF8String for PrintableString), signed by the CA's own
	// key, is not the CA's name.
	ca := g.pki.CAs[testpki.CACareProvider]
	parent := *ca.Cert
	parent.RawSubject = utf8Name(t, ca.Cert.RawSubject)
	tmpl, _ := g.pki.Template(testpki.Cards()[0], testpki.UsageSign)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, &parent, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	reencoded, _ := x509.ParseCertificate(der)
	g.add("card-issuer-name-other-encoding", g.bundleFor(key, reencoded, nil).Marshal(), phone, protocol.ReasonUnknownCA)
	// Revocation: the card is checked before its CA. Its CA has no CRL
	// (status unknown) and is revoked by the root: the card's reason wins.
	k := mustRSA(t)
	tmpl, _ = g.pki.Template(testpki.Cards()[0], testpki.UsageSign)
	underRevoked, err := g.pki.IssueFrom(tmpl, revokedNoCRLCA.Name, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	g.add("card-unknown-under-revoked-ca", g.bundleFor(k, underRevoked, nil).Marshal(), phone, protocol.ReasonRevocationUnknown)
	// Two paths, both failing: through A (the root revoked A) and through
	// B (the intermediate's CRL is missing). A comes first in the CA file,
	// so its reason is reported; trust cases turn the order round, and add
	// the intermediate's CRL so that B's path passes.
	tmpl, _ = g.pki.Template(testpki.Cards()[0], testpki.UsageSign)
	renewedCard, err := g.pki.IssueFrom(tmpl, "care-provider-renewed", k.Public())
	if err != nil {
		t.Fatal(err)
	}
	g.add("card-renewed-ca-first-path-reason", g.bundleFor(k, renewedCard, nil).Marshal(), phone, protocol.ReasonCertRevoked)

	// The label grammar: vouch/<type>/v<version>, type [a-z0-9-]+, version
	// decimal without a leading zero; at most 64 bytes.
	relabel := func(label string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(label)))
		return append(append(b, label...), raw[4+len(protocol.LabelBundle):]...)
	}
	long := func(n int) string { return "vouch/" + strings.Repeat("x", n-len("vouch//v1")) + "/v1" }
	for name, tt := range map[string]struct {
		label string
		want  protocol.Reason
	}{
		"label-type-uppercase":       {"vouch/Bundle/v1", protocol.ReasonMalformed},
		"label-prefix-uppercase":     {"Vouch/bundle/v1", protocol.ReasonMalformed},
		"label-version-uppercase-v":  {"vouch/bundle/V1", protocol.ReasonMalformed},
		"label-version-leading-zero": {"vouch/bundle/v01", protocol.ReasonMalformed},
		"label-version-zero":         {"vouch/bundle/v0", protocol.ReasonMalformed},
		"label-version-missing":      {"vouch/bundle/v", protocol.ReasonMalformed},
		"label-extra-segment":        {"vouch/bundle/v1/x", protocol.ReasonMalformed},
		"label-type-empty":           {"vouch//v1", protocol.ReasonMalformed},
		"label-type-non-ascii":       {"vouch/b\xc3\xbcndle/v1", protocol.ReasonMalformed},
		"label-version-large":        {"vouch/bundle/v18446744073709551616", protocol.ReasonUnknownVersion},
		"label-type-hyphen-digit":    {"vouch/key-upload2/v1", protocol.ReasonWrongType},
		"label-64-bytes":             {long(64), protocol.ReasonWrongType},
		"label-65-bytes":             {long(65), protocol.ReasonMalformed},
	} {
		g.add(name, relabel(tt.label), phone, tt.want)
	}
	// Truncation: one or more bytes that begin a bundle's label; zero
	// bytes are malformed (the "empty" case).
	g.add("truncated-in-length", raw[:2], phone, protocol.ReasonTruncated)
	g.add("truncated-in-label", raw[:4+8], phone, protocol.ReasonTruncated)
	g.add("one-byte-not-a-length", []byte{0xff}, phone, protocol.ReasonMalformed)
}

// renewedCA makes an intermediate CA under the root and a card-issuing CA
// "care-provider-renewed" whose one key and name have two certificates: A
// signed by the root, B by the intermediate. Both go into pki.CAs (A as
// the issuing CA's certificate).
func (g *gen) renewedCA() (a, b *x509.Certificate) {
	t, made := g.t, g.pki.Made
	create := func(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	caTmpl := func(cn string, serial int64) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: []string{"Vouch test PKI"}, Country: []string{"NL"}},
			NotBefore: made.Add(-10 * 365 * 24 * time.Hour), NotAfter: made.Add(20 * 365 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true}
	}
	interKey, caKey := mustRSA(t), mustRSA(t)
	it := caTmpl("Vouch Test UZI Intermediate CA", 19001)
	it.MaxPathLen, it.MaxPathLenZero = 1, false
	inter := create(it, g.pki.Root.Cert, interKey.Public(), g.pki.Root.Key)
	a = create(caTmpl("Vouch Test UZI care-provider-renewed CA", 19002), g.pki.Root.Cert, caKey.Public(), g.pki.Root.Key)
	b = create(caTmpl("Vouch Test UZI care-provider-renewed CA", 19003), inter, caKey.Public(), interKey)
	g.pki.CAs["intermediate"] = &testpki.CA{Name: "intermediate", Cert: inter, Key: interKey}
	g.pki.CAs["care-provider-renewed"] = &testpki.CA{Name: "care-provider-renewed", Cert: a, Key: caKey}
	return a, b
}

// utf8Name re-encodes a DER Name with every PrintableString as a
// UTF8String: the same name to RFC 5280's comparison, other bytes.
func utf8Name(t *testing.T, raw []byte) []byte {
	type atv struct {
		Type  asn1.ObjectIdentifier
		Value asn1.RawValue
	}
	type rdnSET []atv
	var in []rdnSET
	if _, err := asn1.Unmarshal(raw, &in); err != nil {
		t.Fatal(err)
	}
	for _, rdn := range in {
		for i := range rdn {
			if rdn[i].Value.Tag == asn1.TagPrintableString {
				rdn[i].Value = asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: rdn[i].Value.Bytes}
			}
		}
	}
	out, err := asn1.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(out, raw) {
		t.Fatal("name not re-encoded")
	}
	return out
}

// trustCases makes the back end's trust cases: CRL lists that must be
// refused or taken (each replacing the care-provider CA's CRL in the set's
// list), a root that is not the test PKI's, and another set of
// professions.
func (g *gen) trustCases(write func(string, []byte), crls []string, revokedCert *x509.Certificate) []trust.TrustCase {
	t, now := g.t, g.now
	const caName = testpki.CACareProvider
	valid := trust.Case{Name: "valid-gp", Bundle: "cases/valid-gp.bin", PhoneKeyHex: hex.EncodeToString(g.phone), Want: string(protocol.ReasonOK)}
	revokedCase := trust.Case{Name: "card-revoked", Bundle: "cases/card-revoked.bin", PhoneKeyHex: hex.EncodeToString(g.phone), Want: string(protocol.ReasonCertRevoked)}
	gpRevoked := valid
	gpRevoked.Want = string(protocol.ReasonCertRevoked)
	entry := func(c *x509.Certificate, at time.Time) x509.RevocationListEntry {
		return x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: at}
	}
	revokedEntry := []x509.RevocationListEntry{entry(revokedCert, now.Add(-time.Hour))}
	// crl writes a CRL of caName (or another CA) made from tmpl.
	crl := func(file, ca string, tmpl x509.RevocationList) string {
		der, err := g.pki.CRLWith(ca, tmpl)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		name := "crls/" + file + ".crl"
		write(name, der)
		return name
	}
	std := func(number int64, this, next time.Time) x509.RevocationList {
		return x509.RevocationList{Number: big.NewInt(number), ThisUpdate: this, NextUpdate: next, RevokedCertificateEntries: revokedEntry}
	}
	week := now.Add(7 * 24 * time.Hour)
	// with replaces the care-provider CA's CRL in the set's list.
	with := func(files ...string) json.RawMessage {
		var list []string
		for _, f := range crls {
			if f == caName+".crl" {
				list = append(list, files...)
			} else {
				list = append(list, f)
			}
		}
		b, _ := json.Marshal(map[string][]string{"crls": list})
		return b
	}
	ext := func(id asn1.ObjectIdentifier, critical bool, value []byte) x509.RevocationList {
		l := std(2, now.Add(-time.Minute), week)
		l.ExtraExtensions = []pkix.Extension{{Id: id, Critical: critical, Value: value}}
		return l
	}
	algo := func(a x509.SignatureAlgorithm) x509.RevocationList {
		l := std(2, now.Add(-time.Minute), week)
		l.SignatureAlgorithm = a
		return l
	}
	noNumber := std(0, now.Add(-time.Minute), week)
	noNumber.Number = nil
	futureRevocation := std(2, now.Add(-time.Minute), week)
	futureRevocation.RevokedCertificateEntries = append(futureRevocation.RevokedCertificateEntries, entry(g.certs["gp"], now.Add(24*time.Hour)))
	accepted := func(name string, trustKeys json.RawMessage, cases ...trust.Case) trust.TrustCase {
		return trust.TrustCase{Name: name, Trust: trustKeys, Want: trust.TrustAccepted, Cases: cases}
	}
	refused := func(name string, trustKeys json.RawMessage) trust.TrustCase {
		return trust.TrustCase{Name: name, Trust: trustKeys, Want: trust.TrustRefused}
	}
	pharmacist, _ := testpki.CardByName("pharmacist")
	professions, _ := json.Marshal(map[string][]string{"professions": append(uzi.DefaultVouchProfessions(), pharmacist.Role[:2])})
	write("rogue-root.pem", testpki.CertPEM(g.pki.Rogue.Cert))
	renewed := func(want protocol.Reason) trust.Case {
		return trust.Case{Name: "card-renewed-ca-first-path-reason", Bundle: "cases/card-renewed-ca-first-path-reason.bin", PhoneKeyHex: hex.EncodeToString(g.phone), Want: string(want)}
	}
	withInterCRL, _ := json.Marshal(map[string][]string{"crls": append(slices.Clone(crls), "crls/intermediate.crl")})
	bFirst, _ := json.Marshal(map[string]map[string]string{"cas": {"Z": "care-provider-ca-renewed-b-first.pem"}})
	roots, _ := json.Marshal(map[string][]string{"roots": {"root.pem", "rogue-root.pem"}})
	return []trust.TrustCase{
		// Boundaries: a CRL is current up to and including its nextUpdate,
		// and may be dated up to and including 5 minutes ahead.
		accepted("crl-next-update-now", with(crl("next-update-now", caName, std(2, now.Add(-time.Hour), now))), valid, revokedCase),
		refused("crl-next-update-1s-ago", with(crl("next-update-1s-ago", caName, std(2, now.Add(-time.Hour), now.Add(-time.Second))))),
		accepted("crl-this-update-in-5m", with(crl("this-update-in-5m", caName, std(2, now.Add(5*time.Minute), week))), valid, revokedCase),
		refused("crl-this-update-in-5m1s", with(crl("this-update-in-5m1s", caName, std(2, now.Add(5*time.Minute+time.Second), week)))),
		// The list is a series of updates, in order: each CRL of an issuer
		// replaces the one before unless it is older by number or by
		// thisUpdate, which refuses the configuration.
		accepted("crl-series-newer-revokes", with(
			crl("series-1-empty", caName, x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now.Add(-2 * time.Hour), NextUpdate: week}),
			crl("series-2-revokes", caName, std(2, now.Add(-time.Hour), week))), valid, revokedCase),
		refused("crl-series-older-number-after", with(
			crl("series-2-revokes", caName, std(2, now.Add(-time.Hour), week)),
			crl("series-1-empty", caName, x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now.Add(-2 * time.Hour), NextUpdate: week}))),
		refused("crl-series-number-up-this-update-down", with(
			crl("series-2-revokes", caName, std(2, now.Add(-time.Hour), week)),
			crl("series-3-earlier", caName, std(3, now.Add(-2*time.Hour), week)))),
		// Complete lists only, numbered, with a nextUpdate, signed with an
		// accepted algorithm by a configured CA.
		refused("crl-delta", with(crl("delta", caName, ext(asn1.ObjectIdentifier{2, 5, 29, 27}, true, []byte{0x02, 0x01, 0x01})))),
		refused("crl-issuing-distribution-point", with(crl("issuing-distribution-point", caName, ext(asn1.ObjectIdentifier{2, 5, 29, 28}, true, []byte{0x30, 0x00})))),
		refused("crl-unknown-critical-extension", with(crl("unknown-critical-extension", caName, ext(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2}, true, []byte{0x05, 0x00})))),
		accepted("crl-unknown-non-critical-extension", with(crl("unknown-non-critical-extension", caName, ext(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2}, false, []byte{0x05, 0x00}))), valid, revokedCase),
		refused("crl-no-number", with(crl("no-number", caName, noNumber))),
		refused("crl-sha1", with(crl("sha1", caName, algo(x509.SHA1WithRSA)))),
		refused("crl-rsa-pss", with(crl("rsa-pss", caName, algo(x509.SHA256WithRSAPSS)))),
		accepted("crl-sha384", with(crl("sha384", caName, algo(x509.SHA384WithRSA))), valid, revokedCase),
		refused("crl-of-unconfigured-ca", with(crl("unconfigured-ca", testpki.CAUnknown, std(2, now.Add(-time.Minute), week)))),
		// A listed serial is revoked whatever its revocation date.
		accepted("crl-revocation-date-in-future", with(crl("revocation-date-in-future", caName, futureRevocation)), gpRevoked, revokedCase),
		// The test profile trusts only roots with the test PKI's mark.
		refused("root-without-test-mark", roots),
		// Paths: one that passes is enough; when none does, the first
		// path's reason is reported, in the order of the CA file.
		accepted("intermediate-crl-second-path-passes", withInterCRL, renewed(protocol.ReasonOK), valid),
		accepted("renewed-ca-other-path-first", bFirst, renewed(protocol.ReasonRevocationUnknown), valid),
		// Professions replace the default list.
		accepted("professions-with-pharmacist", professions,
			trust.Case{Name: "card-pharmacist", Bundle: "cases/card-pharmacist.bin", PhoneKeyHex: hex.EncodeToString(g.phone), Want: string(protocol.ReasonOK)}),
	}
}

// phoneVectors is the back end's set as a phone sees it: no CRLs, so the
// cases that only revocation refuses are accepted.
func (g *gen) phoneVectors() trust.Vectors {
	v := g.vec
	v.Description = "Vouch bundle test vectors as a phone verifies offline (docs/protocol.md §6, phone mode): the back end's set " +
		"(vectors.json) without CRLs. Verify each case's bundle at 'now' with the phone key given; the verdict must equal 'want'."
	v.Mode = trust.ModePhone
	v.Trust.CRLs = nil
	v.TrustCases = nil
	v.Cases = slices.Clone(g.vec.Cases)
	for i, c := range v.Cases {
		switch protocol.Reason(c.Want) {
		case protocol.ReasonCertRevoked, protocol.ReasonRevocationUnknown:
			v.Cases[i].Want = string(protocol.ReasonOK)
		}
	}
	return v
}
