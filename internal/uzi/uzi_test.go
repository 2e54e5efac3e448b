package uzi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
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
}

func TestCheck(t *testing.T) {
	t.Parallel()
	mk := func(oid string, typ CardType, role string) Identity {
		return Identity{OIDCA: oid, Version: "1", UZI: "123456789", CardType: typ, Subscriber: "12345678", Role: role, AGB: "12345678"}
	}
	tests := []struct {
		name    string
		profile Profile
		id      Identity
		purpose Purpose
		want    Code
	}{
		{"GP vouches", Test(), mk(TestOIDCA, CardCareProvider, "01.015"), PurposeVouch, ""},
		{"nurse vouches", Test(), mk(TestOIDCA, CardCareProvider, "30.000"), PurposeVouch, ""},
		{"dentist vouches", Test(), mk(TestOIDCA, CardCareProvider, "02.000"), PurposeVouch, ""},
		{"midwife vouches", Test(), mk(TestOIDCA, CardCareProvider, "03.000"), PurposeVouch, ""},
		{"pharmacist may not vouch", Test(), mk(TestOIDCA, CardCareProvider, "17.000"), PurposeVouch, CodeRoleNotAllowed},
		{"pharmacist signs in", Test(), mk(TestOIDCA, CardCareProvider, "17.000"), PurposeLogin, ""},
		{"staff signs in", Test(), mk(TestOIDCA, CardNamedEmployee, "00.000"), PurposeLogin, ""},
		{"staff never vouches", Test(), mk(TestOIDCA, CardNamedEmployee, "01.015"), PurposeVouch, CodeStaffCard},
		{"nameless refused at login", Test(), mk(TestOIDCA, CardNameless, "00.000"), PurposeLogin, CodeNamelessCard},
		{"nameless refused to vouch", Test(), mk(TestOIDCA, CardNameless, "01.015"), PurposeVouch, CodeNamelessCard},
		{"server refused", Test(), mk(TestOIDCA, CardServer, "00.000"), PurposeLogin, CodeServerCard},
		{"test card in production", Production(), mk(TestOIDCA, CardCareProvider, "01.015"), PurposeVouch, CodeWrongProfile},
		{"production card in test", Test(), mk(ProductionOIDCA, CardCareProvider, "01.015"), PurposeLogin, CodeWrongProfile},
		{"production GP", Production(), mk(ProductionOIDCA, CardCareProvider, "01.015"), PurposeVouch, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := CodeOf(tt.profile.Check(tt.id, tt.purpose)); got != tt.want {
				t.Errorf("Check = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestProfiles(t *testing.T) {
	t.Parallel()
	if _, err := ProfileByName("test"); err != nil {
		t.Errorf("test profile missing from a non-production build: %v", err)
	}
	if _, err := ProfileByName("nonsense"); err == nil {
		t.Error("unknown profile accepted")
	}
	p, err := Test().WithVouchProfessions([]string{"17"})
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{OIDCA: TestOIDCA, Version: "1", UZI: "123456789", CardType: CardCareProvider, Subscriber: "12345678", Role: "17.000", AGB: "12345678"}
	if err := p.Check(id, PurposeVouch); err != nil {
		t.Errorf("configured profession refused: %v", err)
	}
	if _, err := Test().WithVouchProfessions([]string{"1"}); err == nil {
		t.Error("bad profession code accepted")
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
