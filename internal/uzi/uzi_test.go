package uzi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const gp = "2.16.528.1.1003.1.3.5.9.2-1-123456789-Z-12345678-01.015-12345678"

func TestParseName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in        string
		wantField string // "" means valid
	}{
		{gp, ""},
		{"2.16.528.1.1003.1.3.5.5.2-1-000000001-N-87654321-00.000-00000000", ""},
		{"2.16.528.1.1003.1.3.5.9.2-1-123456789-Z-12345678-01.015", "count"},
		{gp + "-x", "count"},
		{"", "count"},
		{"2..16-1-123456789-Z-12345678-01.015-12345678", "oid-ca"},
		{"2-1-123456789-Z-12345678-01.015-12345678", "oid-ca"},
		{"2.016.1-1-123456789-Z-12345678-01.015-12345678", "oid-ca"},
		{"2.16.528.1.1003.1.3.5.9.2-2-123456789-Z-12345678-01.015-12345678", "version"},
		{"2.16.528.1.1003.1.3.5.9.2-1-12345678-Z-12345678-01.015-12345678", "uzi-number"},
		{"2.16.528.1.1003.1.3.5.9.2-1-12345678a-Z-12345678-01.015-12345678", "uzi-number"},
		{"2.16.528.1.1003.1.3.5.9.2-1-123456789-X-12345678-01.015-12345678", "card-type"},
		{"2.16.528.1.1003.1.3.5.9.2-1-123456789-z-12345678-01.015-12345678", "card-type"},
		{"2.16.528.1.1003.1.3.5.9.2-1-123456789-Z-1234567-01.015-12345678", "subscriber"},
		{"2.16.528.1.1003.1.3.5.9.2-1-123456789-Z-12345678-01015-12345678", "role"},
		{"2.16.528.1.1003.1.3.5.9.2-1-123456789-Z-12345678-1.0150-12345678", "role"},
		{"2.16.528.1.1003.1.3.5.9.2-1-123456789-Z-12345678-01.015-1234567", "agb"},
		{"2.16.528.1.1003.1.3.5.9.2-1-123456789-Z-12345678-01.015-123456789", "agb"},
		// Boundaries of the OID CA field: two arcs, a lone zero arc, nine
		// digits in an arc are fine; one arc and ten digits are not.
		{"2.16-1-123456789-Z-12345678-01.015-12345678", ""},
		{"2.0.5-1-123456789-Z-12345678-01.015-12345678", ""},
		{"2.123456789-1-123456789-Z-12345678-01.015-12345678", ""},
		{"2.1234567890-1-123456789-Z-12345678-01.015-12345678", "oid-ca"},
		// At the length bound the name is read; one past it, it is not.
		{strings.Repeat("1.", 110) + "1-1-123456789-Z-12345678-01.015-12345678"[:256-221], "agb"},
		{strings.Repeat("1", 257), "length"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			id, err := ParseName(tt.in)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("ParseName: %v", err)
				}
				if got := id.String(); got != tt.in {
					t.Errorf("round trip: got %q", got)
				}
				return
			}
			var ne *NameError
			if !errors.As(err, &ne) {
				t.Fatalf("got %v, want NameError on %s", err, tt.wantField)
			}
			if ne.Field != tt.wantField {
				t.Errorf("field = %s, want %s", ne.Field, tt.wantField)
			}
		})
	}
}

func certWith(t *testing.T, exts ...pkix.Extension) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(1),
		Subject:         pkix.Name{CommonName: "card"},
		NotBefore:       time.Now().Add(-time.Hour),
		NotAfter:        time.Now().Add(time.Hour),
		ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestFromCertificate(t *testing.T) {
	t.Parallel()
	ext, err := SANExtension(gp)
	if err != nil {
		t.Fatal(err)
	}
	id, err := FromCertificate(certWith(t, ext))
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{OIDCA: TestOIDCA, Version: "1", UZI: "123456789", CardType: CardCareProvider, Subscriber: "12345678", Role: "01.015", AGB: "12345678"}
	if d := cmp.Diff(want, id); d != "" {
		t.Errorf("identity (-want +got):\n%s", d)
	}

	if _, err := FromCertificate(certWith(t)); !errors.Is(err, ErrNoName) {
		t.Errorf("no SAN: got %v, want ErrNoName", err)
	}
	// A UTF8String instead of IA5String is refused, not guessed at.
	bad := pkix.Extension{Id: oidSubjectAltName, Value: []byte{0x30, 0x0d, 0xa0, 0x0b, 0x06, 0x03, 0x55, 0x05, 0x05, 0xa0, 0x04, 0x0c, 0x02, 'h', 'i'}}
	if _, err := FromCertificate(certWith(t, bad)); CodeOf(err) != CodeNameMalformed {
		t.Errorf("UTF8String value: got %v, want malformed", err)
	}
	// otherName [0] { 2.5.5.5, [0] EXPLICIT <value> } around a given value.
	san := func(value []byte) pkix.Extension {
		oid := []byte{0x06, 0x03, 0x55, 0x05, 0x05}
		explicit := append([]byte{0xa0, byte(len(value))}, value...)
		other := append([]byte{0xa0, byte(len(oid) + len(explicit))}, append(oid, explicit...)...)
		return pkix.Extension{Id: oidSubjectAltName, Value: append([]byte{0x30, byte(len(other))}, other...)}
	}
	short := "2.16.528.1.1003.1.3.5.9.2-1-123456789-Z-12345678-01.015-12345678"
	// The same name as a constructed IA5String (BER, not DER): two
	// primitive segments inside a constructed 0x36.
	seg1, seg2 := short[:20], short[20:]
	inner := append(append([]byte{0x16, byte(len(seg1))}, seg1...), append([]byte{0x16, byte(len(seg2))}, seg2...)...)
	constructed := append([]byte{0x36, byte(len(inner))}, inner...)
	if _, err := FromCertificate(certWith(t, san(constructed))); CodeOf(err) != CodeNameMalformed {
		t.Errorf("constructed IA5String: got %v, want malformed", err)
	}
	primitive := append([]byte{0x16, byte(len(short))}, short...)
	if id, err := FromCertificate(certWith(t, san(primitive))); err != nil || id.String() != short {
		t.Errorf("the same name as a primitive IA5String: %v", err)
	}
	nonASCII := append([]byte{0x16, byte(len(short))}, short...)
	for _, b := range []byte{0x80, 0xb9, 0xff} { // the first byte past ASCII, a Latin-1 superscript one, ...
		nonASCII[len(nonASCII)-1] = b
		if _, err := FromCertificate(certWith(t, san(nonASCII))); CodeOf(err) != CodeNameMalformed {
			t.Errorf("IA5String with byte %#x: got %v, want malformed", b, err)
		}
	}
	nonASCII[len(nonASCII)-1] = 0x7f // DEL is ASCII, so the string is read (and the AGB field refused)
	var ne *NameError
	if _, err := FromCertificate(certWith(t, san(nonASCII))); !errors.As(err, &ne) || ne.Field != "agb" {
		t.Errorf("IA5String ending in DEL: got %v, want the agb field refused", err)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	mk := func(oid string, typ CardType, role string) Identity {
		return Identity{OIDCA: oid, Version: "1", UZI: "123456789", CardType: typ, Subscriber: "12345678", Role: role, AGB: "12345678"}
	}
	Z, N, M, S := CardCareProvider, CardNamedEmployee, CardNameless, CardServer
	tests := []struct {
		name    string
		profile Profile
		id      Identity
		issuer  CardType
		purpose Purpose
		want    Code
	}{
		{"GP vouches", Test(), mk(TestOIDCA, Z, "01.015"), Z, PurposeVouch, ""},
		{"nurse vouches", Test(), mk(TestOIDCA, Z, "30.000"), Z, PurposeVouch, ""},
		{"dentist vouches", Test(), mk(TestOIDCA, Z, "02.000"), Z, PurposeVouch, ""},
		{"midwife vouches", Test(), mk(TestOIDCA, Z, "03.000"), Z, PurposeVouch, ""},
		{"pharmacist may not vouch", Test(), mk(TestOIDCA, Z, "17.000"), Z, PurposeVouch, CodeRoleNotAllowed},
		{"pharmacist signs in", Test(), mk(TestOIDCA, Z, "17.000"), Z, PurposeLogin, ""},
		{"staff signs in", Test(), mk(TestOIDCANamed, N, "00.000"), N, PurposeLogin, ""},
		{"staff never vouches", Test(), mk(TestOIDCANamed, N, "01.015"), N, PurposeVouch, CodeStaffCard},
		{"nameless refused at login", Test(), mk(TestOIDCANameless, M, "00.000"), M, PurposeLogin, CodeNamelessCard},
		{"nameless refused to vouch", Test(), mk(TestOIDCANameless, M, "01.015"), M, PurposeVouch, CodeNamelessCard},
		{"server refused", Test(), mk(TestOIDCAServer, S, "00.000"), S, PurposeLogin, CodeServerCard},
		{"unknown card type", Test(), mk(TestOIDCA, "X", "01.015"), "X", PurposeLogin, CodeTypeWrongCA},
		{"test card in production", Production(), mk(TestOIDCA, Z, "01.015"), Z, PurposeVouch, CodeWrongProfile},
		{"production card in test", Test(), mk(ProductionOIDCA, Z, "01.015"), Z, PurposeLogin, CodeWrongProfile},
		{"production GP", Production(), mk(ProductionOIDCA, Z, "01.015"), Z, PurposeVouch, ""},
		{"production staff", Production(), mk(ProductionOIDCANamed, N, "00.000"), N, PurposeLogin, ""},
		{"production nameless", Production(), mk(ProductionOIDCANameless, M, "00.000"), M, PurposeLogin, CodeNamelessCard},
		{"production server", Production(), mk(ProductionOIDCAServer, S, "00.000"), S, PurposeLogin, CodeServerCard},
		// The card type must match the OID CA in the name and the CA that
		// issued the certificate.
		{"Z name under the N naming scheme", Test(), mk(TestOIDCANamed, Z, "01.015"), Z, PurposeVouch, CodeTypeWrongCA},
		{"Z card from the server CA", Test(), mk(TestOIDCA, Z, "01.015"), S, PurposeVouch, CodeTypeWrongCA},
		{"Z card from the named-employee CA", Test(), mk(TestOIDCA, Z, "01.015"), N, PurposeLogin, CodeTypeWrongCA},
		{"Z card from the nameless CA", Test(), mk(TestOIDCA, Z, "01.015"), M, PurposeVouch, CodeTypeWrongCA},
		{"Z card from no typed CA", Test(), mk(TestOIDCA, Z, "01.015"), "", PurposeVouch, CodeTypeWrongCA},
		{"empty profile refuses", Profile{}, mk(TestOIDCA, Z, "01.015"), Z, PurposeVouch, CodeWrongProfile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := CodeOf(tt.profile.Check(tt.id, tt.issuer, tt.purpose)); got != tt.want {
				t.Errorf("Check = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCheckRefusesUnknownPurpose(t *testing.T) {
	t.Parallel()
	id := Identity{OIDCA: TestOIDCA, Version: "1", UZI: "123456789", CardType: CardCareProvider, Subscriber: "12345678", Role: "01.015", AGB: "12345678"}
	for _, p := range []Purpose{"", "admin", "Login"} {
		if err := Test().Check(id, CardCareProvider, p); !errors.Is(err, ErrUnknownPurpose) {
			t.Errorf("purpose %q: %v, want ErrUnknownPurpose", p, err)
		}
	}
}

func TestProfiles(t *testing.T) {
	t.Parallel()
	if _, err := ProfileByName("test"); err != nil {
		t.Errorf("test profile missing from a non-production build: %v", err)
	}
	if p, err := ProfileByName("production"); err != nil || p.Name() != "production" {
		t.Errorf("production profile: %v %q", err, p.Name())
	}
	if _, err := ProfileByName("nonsense"); err == nil {
		t.Error("unknown profile accepted")
	}
	if d := cmp.Diff([]string{"production", "test"}, ProfileNames()); d != "" {
		t.Errorf("names (-want +got):\n%s", d)
	}
	p, err := Test().WithVouchProfessions([]string{"17"})
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{OIDCA: TestOIDCA, Version: "1", UZI: "123456789", CardType: CardCareProvider, Subscriber: "12345678", Role: "17.000", AGB: "12345678"}
	if err := p.Check(id, CardCareProvider, PurposeVouch); err != nil {
		t.Errorf("configured profession refused: %v", err)
	}
	if err := Test().Check(id, CardCareProvider, PurposeVouch); CodeOf(err) != CodeRoleNotAllowed {
		t.Errorf("WithVouchProfessions changed the original: %v", err)
	}
	for _, bad := range [][]string{{"1"}, {"abc"}, {"0a"}, nil} {
		if _, err := Test().WithVouchProfessions(bad); err == nil {
			t.Errorf("professions %q accepted", bad)
		}
	}
}

// No caller can widen a profile by editing what it was given.
func TestProfilesCannotBeWidened(t *testing.T) {
	t.Parallel()
	d := DefaultVouchProfessions()
	d[0] = "17"
	pr := Production().VouchProfessions()
	pr[1] = "17"
	in := []string{"01"}
	p, _ := Production().WithVouchProfessions(in)
	in[0] = "17"
	id := Identity{OIDCA: ProductionOIDCA, Version: "1", UZI: "123456789", CardType: CardCareProvider, Subscriber: "12345678", Role: "17.000", AGB: "12345678"}
	for _, prof := range []Profile{Production(), p} {
		if err := prof.Check(id, CardCareProvider, PurposeVouch); CodeOf(err) != CodeRoleNotAllowed {
			t.Errorf("a pharmacist may vouch after editing a returned slice: %v", err)
		}
	}
	if d := cmp.Diff([]string{"01", "02", "03", "30"}, Production().VouchProfessions()); d != "" {
		t.Errorf("defaults changed (-want +got):\n%s", d)
	}
}

func TestPoliciesAndRoots(t *testing.T) {
	t.Parallel()
	withPolicies := func(oids ...string) *x509.Certificate {
		c := &x509.Certificate{}
		for _, o := range oids {
			oid, err := x509.ParseOID(o)
			if err != nil {
				t.Fatal(err)
			}
			c.Policies = append(c.Policies, oid)
		}
		return c
	}
	const anyPolicy = "2.5.29.32.0"
	tests := []struct {
		name    string
		profile Profile
		cert    *x509.Certificate
		purpose Purpose
		want    bool
	}{
		{"test auth", Test(), withPolicies(TestPolicyAuth), PurposeLogin, true},
		{"test sign", Test(), withPolicies(TestPolicySign), PurposeVouch, true},
		{"auth policy on the signature key", Test(), withPolicies(TestPolicyAuth), PurposeVouch, false},
		{"sign policy at login", Test(), withPolicies(TestPolicySign), PurposeLogin, false},
		{"anyPolicy", Test(), withPolicies(anyPolicy), PurposeVouch, false},
		{"no policy", Test(), withPolicies(), PurposeVouch, false},
		{"production policy under test", Test(), withPolicies(ProductionPolicySign), PurposeVouch, false},
		{"production sign", Production(), withPolicies(anyPolicy, ProductionPolicySign), PurposeVouch, true},
		{"production auth", Production(), withPolicies(ProductionPolicyAuth), PurposeLogin, true},
		{"test policy in production", Production(), withPolicies(TestPolicySign), PurposeVouch, false},
		{"unknown purpose", Test(), withPolicies(TestPolicySign), "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.profile.HasPolicy(tt.cert, tt.purpose); got != tt.want {
				t.Errorf("HasPolicy = %v, want %v", got, tt.want)
			}
		})
	}
	testRoot, plainRoot := withPolicies(TestRootPolicy), withPolicies(anyPolicy)
	if err := Test().CheckRoot(testRoot); err != nil {
		t.Errorf("test root refused by the test profile: %v", err)
	}
	if err := Test().CheckRoot(plainRoot); err == nil {
		t.Error("a root outside the test PKI accepted by the test profile")
	}
	if err := Production().CheckRoot(testRoot); err == nil {
		t.Error("the test root accepted by the production profile")
	}
	if err := Production().CheckRoot(plainRoot); err != nil {
		t.Errorf("a real root refused by production: %v", err)
	}
	if Test().OIDCA(CardNamedEmployee) != TestOIDCANamed || Production().OIDCA(CardServer) != ProductionOIDCAServer || Test().OIDCA("X") != "" {
		t.Error("OIDCA per card type")
	}
}

func FuzzParseName(f *testing.F) {
	f.Add(gp)
	f.Add("2.16.528.1.1003.1.3.5.5.2-1-000000001-N-87654321-00.000-00000000")
	f.Add("--------")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseName(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("accepted %q but renders %q", s, id.String())
		}
		if _, err := ParseName(id.String()); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

func FuzzOtherNames(f *testing.F) {
	v, _ := MarshalSAN(gp)
	f.Add(v)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		names, err := otherNames(der)
		if err == nil {
			for _, n := range names {
				_, _ = ParseName(n)
			}
		}
	})
}
