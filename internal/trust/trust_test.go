package trust

import (
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/testpki"
)

const vec = "../../testdata/bundle/"

func TestLoad(t *testing.T) {
	t.Parallel()
	good := Config{
		Roots: []string{vec + "root.pem"}, CAs: map[string]string{"Z": vec + "care-provider-ca.pem", "N": vec + "named-employee-ca.pem"},
		CRLs:            []string{vec + "care-provider.crl", vec + "root.crl", vec + "named-employee.crl"},
		AttestationKeys: []string{vec + "attestation.pub.pem"}, Jurisdiction: "NL", Profile: "test",
	}
	// The vectors' CRL is current at the vectors' own "now", not forever.
	b, err := os.ReadFile(vec + "vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Now time.Time }
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	tr, err := good.Load(v.Now)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Roots) != 1 || len(tr.AttestationKeys) != 1 || tr.Revocation == nil || tr.Profile.Name() != "test" ||
		len(tr.IssuingCAs["Z"]) != 6 || len(tr.IssuingCAs["N"]) != 1 || len(tr.IssuingCAs) != 2 {
		t.Errorf("loaded %+v", tr)
	}
	// A phone's trust has no CRLs and checks no revocation.
	phone := good
	phone.CRLs = nil
	if tr, err := phone.Load(v.Now); err != nil || tr.Revocation != nil {
		t.Errorf("without CRLs: revocation %v (%v), want none", tr.Revocation, err)
	}
	if got := len(tr.CAs()); got != 1+6+1 {
		t.Errorf("CAs: %d, want the root, six care-provider CA certificates and the named-employee CA", got)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no roots", func(c *Config) { c.Roots = nil }, "no UZI root"},
		{"missing file", func(c *Config) { c.Roots = []string{vec + "nope.pem"} }, "no such file"},
		{"root is not a certificate", func(c *Config) { c.Roots = []string{vec + "attestation.pub.pem"} }, "no PEM certificate"},
		{"attestation key is a certificate", func(c *Config) { c.AttestationKeys = []string{vec + "root.pem"} }, "no PEM public key"},
		{"CRL without its CA", func(c *Config) { c.CAs = map[string]string{"N": vec + "named-employee-ca.pem"} }, "not a configured CA"},
		{"CRL file missing", func(c *Config) { c.CRLs = append(c.CRLs, vec+"nope.crl") }, "nope.crl"},
		{"test profile, a root outside the test PKI", func(c *Config) { c.Roots = []string{vec + "services-ca.pem"} }, "not a root of the test PKI"},
		{"unknown card type", func(c *Config) { c.CAs = map[string]string{"X": vec + "care-provider-ca.pem"} }, "card type \"X\""},
		{"production profile, test root", func(c *Config) { c.Profile = "production" }, "test PKI"},
		{"stale CRL", func(c *Config) {}, "stale"},
		{"unknown profile", func(c *Config) { c.Profile = "lab" }, "unknown card profile"},
		{"root file too large", func(c *Config) { c.Roots = []string{bigFile(t, maxPEMFile+1)} }, "larger than"},
		{"root file at the bound", func(c *Config) { c.Roots = []string{bigFile(t, maxPEMFile)} }, "no PEM certificate"},
		{"bad profession", func(c *Config) { c.Professions = []string{"x"} }, "not two digits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := good
			tt.edit(&c)
			now := v.Now
			if tt.name == "stale CRL" {
				now = now.Add(365 * 24 * time.Hour)
			}
			_, err := c.Load(now)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// bigFile is a sparse file of n bytes.
func bigFile(t *testing.T, n int64) string {
	f, err := os.Create(t.TempDir() + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(n); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// TestLoadRefusesUnnumberedCRL: trust applies the same CRL rules as the
// sync (revocation.Parse); a CRL without a number is refused at start.
func TestLoadRefusesUnnumberedCRL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pki, err := testpki.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	write := func(name string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, der, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	numbered, err := pki.CRL("root", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	unnumbered, err := pki.CRLWith("root", x509.RevocationList{ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c := Config{Roots: []string{filepath.Join(dir, "pki", "root.crt")}, Jurisdiction: "NL", Profile: "test"}
	c.CRLs = []string{write("numbered.crl", numbered)}
	if tr, err := c.Load(now); err != nil || tr.Revocation == nil {
		t.Fatalf("numbered CRL: %v", err)
	}
	c.CRLs = []string{write("unnumbered.crl", unnumbered)}
	if _, err := c.Load(now); err == nil || !strings.Contains(err.Error(), "no CRL number") {
		t.Errorf("unnumbered CRL: %v", err)
	}
}

// TestLoadVectors: the two sets load, each in its mode; a set's mode must
// be known, a phone set may configure no CRLs, and a trust case replaces
// exactly the keys it has.
func TestLoadVectors(t *testing.T) {
	t.Parallel()
	back, tr, err := LoadVectors(vec + "vectors.json")
	if err != nil || back.Mode != ModeBackEnd || tr.Revocation == nil || len(back.TrustCases) == 0 {
		t.Fatalf("back-end set: mode %q, revocation %v, %d trust cases (%v)", back.Mode, tr.Revocation, len(back.TrustCases), err)
	}
	phone, tr, err := LoadVectors(vec + "vectors-phone.json")
	if err != nil || phone.Mode != ModePhone || tr.Revocation != nil {
		t.Fatalf("phone set: mode %q, revocation %v (%v)", phone.Mode, tr.Revocation, err)
	}
	// A trust case's "professions" replaces the set's (none: the default);
	// its other keys stay the set's, CRLs included.
	tc := TrustCase{Name: "t", Trust: json.RawMessage(`{"professions": ["17"]}`), Want: TrustAccepted}
	got, err := back.LoadTrustCase(tc)
	if err != nil || !slices.Equal(got.Profile.VouchProfessions(), []string{"17"}) || got.Revocation == nil || len(got.IssuingCAs) != 4 {
		t.Errorf("trust case: professions %v, revocation %v, %d card types (%v)", got.Profile.VouchProfessions(), got.Revocation, len(got.IssuingCAs), err)
	}
	tc.Trust = json.RawMessage(`{"crls": []}`)
	if got, err := back.LoadTrustCase(tc); err != nil || got.Revocation != nil {
		t.Errorf("trust case without CRLs: revocation %v (%v)", got.Revocation, err)
	}
	tc.Trust = json.RawMessage(`{"crl": []}`)
	if _, err := back.LoadTrustCase(tc); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("trust case with a misspelt key: %v", err)
	}

	for name, tt := range map[string]struct {
		edit func(v map[string]any)
		want string
	}{
		"no mode":             {func(v map[string]any) { delete(v, "mode") }, "mode"},
		"unknown mode":        {func(v map[string]any) { v["mode"] = "tablet" }, "mode"},
		"phone set with CRLs": {func(v map[string]any) { v["mode"] = ModePhone }, "no CRLs"},
		"trust case want":     {func(v map[string]any) { v["trust_cases"].([]any)[0].(map[string]any)["want"] = "ok" }, "want"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile(vec + "vectors.json")
			if err != nil {
				t.Fatal(err)
			}
			var v map[string]any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			tt.edit(v)
			b, _ = json.Marshal(v)
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "vectors.json"), b, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := LoadVectors(filepath.Join(dir, "vectors.json")); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
