package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestConfigCheckSettings: vouch config check knows the settings' hard
// limits (VOUCH_SETTINGS_*) in the roles that read them, and refuses a limit
// past the law or a default past its limit, naming the variable.
func TestConfigCheckSettings(t *testing.T) {
	tcfg, _ := testTrust(t)
	var cas []string
	for typ, f := range tcfg.CAs {
		cas = append(cas, typ+":"+f)
	}
	trust := []string{"VOUCH_UZI_ROOTS", strings.Join(tcfg.Roots, ","), "VOUCH_UZI_CAS", strings.Join(cas, ","),
		"VOUCH_CARD_PROFILE", "test", "VOUCH_ATTESTATION_KEYS", "../../testdata/bundle/attestation.pub.pem",
		"VOUCH_ATTESTATION_URI", "pkcs11:token=t;object=k?module-path=/x.so"}
	cases := []struct {
		name, role string
		env        []string
		status     int
		want       string
	}{
		{"cleanup reads the limits", "cleanup", []string{"VOUCH_SETTINGS_AUDIT_KEEP_YEARS_MAX", "12",
			"VOUCH_SETTINGS_ACCESS_LOGS_KEEP_MAX", "24h", "VOUCH_SETTINGS_AUTHORIZATIONS_KEEP_MAX", "240h"}, 0, "cleanup: ok"},
		{"access logs past the law", "cleanup", []string{"VOUCH_SETTINGS_ACCESS_LOGS_KEEP_MAX", "49h"}, 1, "VOUCH_SETTINGS_ACCESS_LOGS_KEEP_MAX"},
		{"audit under the law", "cleanup", []string{"VOUCH_SETTINGS_AUDIT_KEEP_YEARS_MAX", "5"}, 1, "VOUCH_SETTINGS_AUDIT_KEEP_YEARS_MAX"},
		{"backoffice ok", "backoffice", append(trust, "VOUCH_SETTINGS_DAILY_QUOTA_MAX", "60", "VOUCH_SETTINGS_REFRESH", "10s"), 0, "backoffice: ok"},
		{"default quota past its limit", "backoffice", append(trust, "VOUCH_SETTINGS_DAILY_QUOTA_MAX", "59"), 1, "VOUCH_VOUCH_DAILY_QUOTA"},
		{"refresh over a minute", "backoffice", append(trust, "VOUCH_SETTINGS_REFRESH", "61s"), 1, "VOUCH_SETTINGS_REFRESH"},
		{"validity past the protocol", "backoffice", append(trust, "VOUCH_SETTINGS_AUTHORIZATION_VALIDITY_MAX", "25h"), 1,
			"VOUCH_SETTINGS_AUTHORIZATION_VALIDITY_MAX"},
		{"staleness bound in seconds", "backoffice", append(trust, "VOUCH_LICENSE_MAX_MIRROR_AGE", "90s"), 1, "VOUCH_LICENSE_MAX_MIRROR_AGE"},
		{"a role that does not read them", "store", []string{"VOUCH_SETTINGS_REFRESH", "10s"}, 1,
			"VOUCH_SETTINGS_REFRESH is set, but vouch store does not read it"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{}
			for i := 0; i+1 < len(c.env); i += 2 {
				env[c.env[i]] = c.env[i+1]
			}
			onlyEnv(t, env)
			var stdout, stderr bytes.Buffer
			err := realMain(context.Background(), []string{"config", "check", c.role}, &stdout, &stderr)
			status := 0
			var exit exitError
			if errors.As(err, &exit) {
				status = int(exit)
			} else if err != nil {
				t.Fatalf("error %v", err)
			}
			if out := stdout.String(); status != c.status || !strings.Contains(out, c.want) {
				t.Errorf("status %d, want %d naming %q; stdout:\n%s", status, c.status, c.want, out)
			}
		})
	}
}
