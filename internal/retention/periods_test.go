package retention

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestPeriodsWithinTheLaw: the admin's periods are used when the law
// allows them, and the default when not, whatever the settings say.
func TestPeriodsWithinTheLaw(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		set  Periods
		want Periods
	}{
		{"none set", Periods{}, defaultPeriods},
		{"shorter", Periods{Authorizations: 3 * 24 * time.Hour, AccessLogs: 6 * time.Hour, AuditYears: 8},
			Periods{Authorizations: 3 * 24 * time.Hour, AccessLogs: 6 * time.Hour, AuditYears: 8}},
		{"at the bounds", Periods{Authorizations: MinAuthorizationKeep, AccessLogs: AccessLogKeep, AuditYears: AuditKeepYears},
			Periods{Authorizations: MinAuthorizationKeep, AccessLogs: AccessLogKeep, AuditYears: AuditKeepYears}},
		{"past the bounds", Periods{Authorizations: MinAuthorizationKeep - time.Second, AccessLogs: AccessLogKeep + time.Second, AuditYears: AuditKeepYears - 1},
			defaultPeriods},
		{"negative", Periods{Authorizations: -time.Hour, AccessLogs: -time.Hour, AuditYears: -1}, defaultPeriods},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := New(Config{}, nil, nil, nil, quiet)
			if err != nil {
				t.Fatal(err)
			}
			c.SetPeriods(func() Periods { return tt.set })
			if diff := cmp.Diff(tt.want, c.periods()); diff != "" {
				t.Errorf("periods (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAdminPeriodsDelete: each rule deletes by the admin's period, read at
// the run: authorizations after 3 days, access logs after 6 hours, audit
// rows after 7 years.
func TestAdminPeriodsDelete(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ctx := context.Background()
	now := time.Now()
	for _, a := range []struct {
		uzi     string
		created time.Time
	}{{"4-days", now.Add(-4 * 24 * time.Hour)}, {"2-days", now.Add(-2 * 24 * time.Hour)}} {
		exec(t, db, `insert into authorizations (id, phone_code, statement, uzi_number, created_at, expires_at)
			values (gen_random_uuid(), $1, 's', $2, $3, $4)`, random(10), a.uzi, a.created, a.created.Add(24*time.Hour))
	}
	for _, at := range []time.Time{now.AddDate(-8, 0, 0), now.AddDate(-6, -6, 0), now} {
		if err := db.InTx(ctx, func(tx pgx.Tx) error {
			_, err := audit.Append(ctx, tx, audit.Entry{Actor: "900000001", Action: audit.ActionSignIn}, at)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	for _, h := range []time.Duration{7 * time.Hour, 5 * time.Hour} {
		p := filepath.Join(dir, "access-"+now.Add(-h).UTC().Format(accessLogLayout)+".log")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(Config{AccessLogDir: dir}, db.Pool(), func() time.Time { return now }, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	set := Periods{}
	c.SetPeriods(func() Periods { return set })
	// Before the admin's change: the defaults keep everything but the
	// eight-year-old audit row.
	if n, err := c.Authorizations(ctx, now); err != nil || n != 0 {
		t.Errorf("default: Authorizations = %d, %v; want 0", n, err)
	}
	set = Periods{Authorizations: 3 * 24 * time.Hour, AccessLogs: 6 * time.Hour, AuditYears: 7}
	if n, err := c.Authorizations(ctx, now); err != nil || n != 1 {
		t.Errorf("Authorizations = %d, %v; want 1", n, err)
	}
	if diff := cmp.Diff([]string{"2-days"}, column(t, db, `select uzi_number from authorizations`)); diff != "" {
		t.Errorf("authorizations kept (-want +got):\n%s", diff)
	}
	if n, err := c.AccessLogs(ctx, now); err != nil || n != 1 {
		t.Errorf("AccessLogs = %d, %v; want 1 (the 7-hour one)", n, err)
	}
	if n, err := c.AuditRows(ctx, now); err != nil || n != 1 {
		t.Errorf("AuditRows = %d, %v; want 1 (the 8-year-old row; the 6½-year-old stays under 7 years)", n, err)
	}
}
