package trust

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

const vec = "../../testdata/bundle/"

func TestLoad(t *testing.T) {
	t.Parallel()
	good := Config{
		Roots: []string{vec + "root.pem"}, CAs: []string{vec + "care-provider-ca.pem"}, CRLs: []string{vec + "care-provider.crl"},
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
	if len(tr.Roots) != 1 || len(tr.AttestationKeys) != 1 || tr.Revocation == nil || tr.Profile.Name != "test" {
		t.Errorf("loaded %+v", tr)
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
		{"CRL without its CA", func(c *Config) { c.CAs = nil }, "issuer is not among"},
		{"stale CRL", func(c *Config) {}, "stale"},
		{"unknown profile", func(c *Config) { c.Profile = "lab" }, "unknown card profile"},
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
