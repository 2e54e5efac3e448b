// The tests of the real parts (slapd, PostgreSQL, NATS); a mutation run
// builds with -tags mutation and leaves them out (see unit_test.go).

//go:build !mutation

package registrysync

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/registry"
)

// register reads every card holder's license status from the register
// itself.
func (f *fixture) register(t *testing.T) map[string]string {
	t.Helper()
	conn := f.ldap.Dial(t)
	defer conn.Close()
	res, err := conn.SearchWithPaging(ldap.NewSearchRequest("ou=people,dc=registry,dc=test", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=vouchCareProvider)", []string{"vouchUziNumber", "vouchLicenseStatus"}, nil), 500)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range res.Entries {
		out[e.GetAttributeValue("vouchUziNumber")] = e.GetAttributeValue("vouchLicenseStatus")
	}
	return out
}

// TestRegisterKilledMidSequence: slapd is killed with SIGKILL right after a
// burst of suspensions and restarted on the same data. Its sync state is
// checkpointed (syncprov-checkpoint 100 10), so after the crash it can be
// older than its entries: it then reports too little, or refuses the
// mirror's cookie as newer than its own. Either way the next sync must end
// with the mirror equal to the register, and a failed run must never mark
// the mirror fresh.
func TestRegisterKilledMidSequence(t *testing.T) {
	t.Parallel()
	f := setup(t, 100, nil)
	ctx := context.Background()
	var add []string
	for i := range 50 {
		add = append(add, entry(fmt.Sprintf("8%08d", i)))
	}
	f.ldap.LDIF(t, add...)
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		status := []string{"suspended", "active", "revoked"}[round]
		var mods []string
		for i := range 50 {
			mods = append(mods, modify(fmt.Sprintf("8%08d", i), "vouchLicenseStatus", status))
		}
		f.ldap.LDIF(t, mods...)
		f.ldap.Kill(t)
		var freshBefore time.Time
		f.db.Pool().QueryRow(ctx, `select coalesce(synced_at, 'epoch') from registry_sync_state`).Scan(&freshBefore)
		if _, err := f.s.Once(ctx); err == nil {
			t.Fatalf("round %d: a sync succeeded with the register down", round)
		}
		var freshAfter time.Time
		f.db.Pool().QueryRow(ctx, `select coalesce(synced_at, 'epoch') from registry_sync_state`).Scan(&freshAfter)
		if !freshAfter.Equal(freshBefore) {
			t.Errorf("round %d: a failed sync moved the mirror's freshness from %s to %s", round, freshBefore, freshAfter)
		}
		f.ldap.Start(t)
		if _, err := f.s.Once(ctx); err != nil {
			t.Fatalf("round %d: sync after the restart: %v", round, err)
		}
		reg, mirror := f.register(t), f.mirror(t)
		for uzi, st := range reg {
			if mirror[uzi] != st {
				t.Errorf("round %d: %s is %s in the register, %q in the mirror", round, uzi, st, mirror[uzi])
			}
		}
		if len(mirror) != len(reg) {
			t.Errorf("round %d: mirror has %d card holders, register %d", round, len(mirror), len(reg))
		}
		f.checkBucketFollowsMirror(t)
	}
}

// TestAbandonedRunsAreClosed: a run killed with -9 leaves its record open;
// the next run closes it as abandoned instead of letting it read as
// "still running" forever.
func TestAbandonedRunsAreClosed(t *testing.T) {
	t.Parallel()
	f := setup(t, 100, nil)
	ctx := context.Background()
	var id int64
	if err := f.db.Pool().QueryRow(ctx, `insert into registry_sync_runs (kind, started_at) values ('full', now() - interval '1 hour') returning id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	var msg *string
	var finished *time.Time
	if err := f.db.Pool().QueryRow(ctx, `select finished_at, error from registry_sync_runs where id = $1`, id).Scan(&finished, &msg); err != nil {
		t.Fatal(err)
	}
	if finished == nil || msg == nil || !strings.HasPrefix(*msg, "abandoned") {
		t.Errorf("killed run: finished %v, error %v", finished, msg)
	}
	var open int
	f.db.Pool().QueryRow(ctx, `select count(*) from registry_sync_runs where finished_at is null`).Scan(&open)
	if open != 0 {
		t.Errorf("%d runs left open", open)
	}
}

// TestSharedEntryUUIDIsSkipped: a register that gives two card holders one
// entryUUID (a restore gone wrong) contradicts itself about both; they are
// left out, every other card holder is mirrored, and the full sync does not
// fail for it.
func TestSharedEntryUUIDIsSkipped(t *testing.T) {
	t.Parallel()
	const uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
	seed := entry("100000001") + "\nentryUUID: " + uuid + "\n\n" + entry("100000002") + "\nentryUUID: " + uuid + "\n"
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true, Seed: []io.Reader{strings.NewReader(seed)}})
	f := setup(t, 5, nil)
	dir, err := directory.New(directory.Config{URL: l.URL, BindDN: l.BindDN, BindPassword: l.BindPassword,
		BaseDN: "ou=people," + l.BaseDN, Filter: "(objectClass=vouchCareProvider)", Timeout: 2 * time.Second, PageSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	f.s.dir = dir
	res, err := f.s.Full(context.Background())
	if err != nil {
		t.Fatalf("full sync: %v", err)
	}
	m := f.mirror(t)
	_, one := m["100000001"]
	_, two := m["100000002"]
	if one || two || len(m) != len(testpki.Cards()) || res.Skipped != 2 {
		t.Errorf("mirror %d rows (100000001 %v, 100000002 %v), skipped %d", len(m), one, two, res.Skipped)
	}
}

// TestOneFullSyncAfterARegisterCrash: after slapd is killed with SIGKILL
// and restarted, its sync state lags its entries until it is written again.
// The first run after the crash is a full sync; the runs after it are
// incremental again — a full scan of a million card holders every 30 s is
// not a way to run — and still see every change made after.
func TestOneFullSyncAfterARegisterCrash(t *testing.T) {
	t.Parallel()
	f := setup(t, 100, nil)
	ctx := context.Background()
	var add []string
	for i := range 50 {
		add = append(add, entry(fmt.Sprintf("8%08d", i)))
	}
	f.ldap.LDIF(t, add...)
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	// Fewer writes than slapd's checkpoint (syncprov-checkpoint 100 10)
	// counts, with the 50 above: its state on disk stays behind them.
	var mods []string
	for i := range 20 {
		mods = append(mods, modify(fmt.Sprintf("8%08d", i), "vouchLicenseStatus", "suspended"))
	}
	f.ldap.LDIF(t, mods...)
	f.ldap.Kill(t)
	f.ldap.Start(t)
	res, err := f.s.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != "full" {
		t.Fatalf("first run after the crash: %s; the register's state lags its entries, so a full sync was expected (the test lost its premise)", res.Kind)
	}
	for run := range 3 {
		if res, err = f.s.Once(ctx); err != nil {
			t.Fatal(err)
		}
		if res.Kind != "incremental" {
			t.Errorf("run %d after the crash's full sync: %s, want incremental", run+2, res.Kind)
		}
	}
	// Changes after it still arrive, and the hidden ones stay mirrored.
	f.ldap.LDIF(t, modify("800000000", "vouchLicenseStatus", "revoked"), modify("900000001", "vouchLicenseStatus", "suspended"))
	if res, err = f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if res.Kind != "incremental" {
		t.Errorf("run after a write: %s, want incremental", res.Kind)
	}
	reg, mirror := f.register(t), f.mirror(t)
	for uzi, st := range reg {
		if mirror[uzi] != st {
			t.Errorf("%s is %s in the register, %q in the mirror", uzi, st, mirror[uzi])
		}
	}
	if len(mirror) != len(reg) {
		t.Errorf("mirror has %d card holders, register %d", len(mirror), len(reg))
	}
	f.checkBucketFollowsMirror(t)
}
