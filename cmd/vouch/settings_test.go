package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/retention"
	"github.com/vouch-nl/vouch/internal/settings"
	"github.com/vouch-nl/vouch/internal/testenv"
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
			if status, out, _ := configCheck(t, c.role); status != c.status || !strings.Contains(out, c.want) {
				t.Errorf("status %d, want %d naming %q; stdout:\n%s", status, c.status, c.want, out)
			}
		})
	}
}

// TestCleanupReadsTheAdminsPeriods: the cleanup role reads the retention
// period an admin set (a row of settings), at the rule's run, not at start.
func TestCleanupReadsTheAdminsPeriods(t *testing.T) {
	db := testenv.Database(t)
	ctx := t.Context()
	now := time.Now()
	for _, age := range []time.Duration{4 * 24 * time.Hour, 2 * 24 * time.Hour} {
		if _, err := db.Pool().Exec(ctx, `insert into authorizations (id, phone_code, statement, uzi_number, created_at, expires_at)
			values (gen_random_uuid(), substring(uuid_send(gen_random_uuid()) from 1 for 10), 's', '900000001', $1, $2)`, now.Add(-age), now.Add(-age+24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := startCleanup(retention.Config{}, settings.Config{}, db, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Authorizations(ctx, now); err != nil || n != 0 {
		t.Fatalf("by the default 30 days: %d deleted, %v", n, err)
	}
	if _, err := db.Pool().Exec(ctx, `insert into settings (name, value, version, changed_by, changed_at)
		values ('retention-authorizations', '{"number": 3}', 1, '900000010', now())`); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Authorizations(ctx, now); err != nil || n != 1 {
		t.Errorf("by the admin's 3 days: %d deleted, %v; want the 4-day-old one", n, err)
	}
}
