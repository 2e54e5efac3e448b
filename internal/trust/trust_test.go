package trust

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
		len(tr.IssuingCAs["Z"]) != 3 || len(tr.IssuingCAs["N"]) != 1 || len(tr.IssuingCAs) != 2 {
		t.Errorf("loaded %+v", tr)
	}
	if d := cmp.Diff([]string{vec + "root.pem", vec + "care-provider-ca.pem", vec + "named-employee-ca.pem"}, good.CAFiles()); d != "" {
		t.Errorf("CAFiles (-want +got):\n%s", d)
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
		{"CRL without its CA", func(c *Config) { c.CAs = map[string]string{"N": vec + "named-employee-ca.pem"} }, "issuer is not among"},
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
