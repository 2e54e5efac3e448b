// The tests of the real parts (slapd, PostgreSQL, NATS); a mutation run
// builds with -tags mutation and leaves them out (see unit_test.go).

//go:build !mutation

package registrysync

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/registry"
)

type fixture struct {
	ldap *testenv.LDAPServer
	bus  *bus.Bus
	db   *database.DB
	s    *Syncer
	kv   jetstream.KeyValue
	js   jetstream.JetStream
}

func setup(t *testing.T, pageSize int, crls *CRLConfig) *fixture {
	t.Helper()
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	db := testenv.Database(t)
	b := testenv.Bus(t)
	dir, err := directory.New(directory.Config{URL: l.URL, BindDN: l.BindDN, BindPassword: l.BindPassword,
		BaseDN: "ou=people," + l.BaseDN, Filter: "(objectClass=vouchCareProvider)", Timeout: 2 * time.Second, PageSize: pageSize})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Interval: 50 * time.Millisecond, FullInterval: time.Hour, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, Bucket: "licenses"}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	s, err := New(context.Background(), cfg, dir, db, licenseBucket(t, b), crls, log, NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := b.JetStream().KeyValue(context.Background(), "licenses")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ldap: l, bus: b, db: db, s: s, kv: kv, js: b.JetStream()}
}

// licenseBucket opens the test bus's license bucket.
func licenseBucket(t *testing.T, b *bus.Bus) *bus.Bucket {
	t.Helper()
	bk, err := b.Bucket(context.Background(), "licenses", BucketDescription)
	if err != nil {
		t.Fatal(err)
	}
	return bk
}

func (f *fixture) mirror(t *testing.T) map[string]string {
	t.Helper()
	rows, err := f.db.Pool().Query(context.Background(), `select uzi_number, license_status from registry_entries`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var u, s string
		if err := rows.Scan(&u, &s); err != nil {
			t.Fatal(err)
		}
		out[u] = s
	}
	return out
}

func (f *fixture) license(t *testing.T, uzi string) *LicenseRecord {
	t.Helper()
	e, err := f.kv.Get(context.Background(), uzi)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var r LicenseRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func modify(uzi, attr, value string) string {
	return fmt.Sprintf("dn: vouchUziNumber=%s,ou=people,dc=registry,dc=test\nchangetype: modify\nreplace: %s\n%s: %s", uzi, attr, attr, value)
}

// entry is a register entry; extra "attr: value" lines replace defaults.
func entry(uzi string, extra ...string) string {
	attrs := [][2]string{{"vouchCardType", "Z"}, {"vouchLicenseStatus", "active"}, {"vouchAgbCode", "01234567"}, {"vouchRoleCode", "01.015"}}
	for _, e := range extra {
		k, v, _ := strings.Cut(e, ": ")
		for i := range attrs {
			if attrs[i][0] == k {
				attrs[i][1] = v
			}
		}
	}
	s := fmt.Sprintf("dn: vouchUziNumber=%s,ou=people,dc=registry,dc=test\nobjectClass: inetOrgPerson\nobjectClass: vouchCareProvider\ncn: T %s\nsn: T\nvouchUziNumber: %s", uzi, uzi, uzi)
	for _, a := range attrs {
		s += "\n" + a[0] + ": " + a[1]
	}
	return s
}

func TestFullThenIncremental(t *testing.T) {
	t.Parallel()
	f := setup(t, 4, nil)
	ctx := context.Background()
	res, err := f.s.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fixtures := len(testpki.Cards())
	m := f.mirror(t)
	if res.Kind != "full" || len(m) != fixtures || m["900000024"] != "suspended" || m["900000001"] != "active" {
		t.Fatalf("full sync: %+v, mirror %v", res, m)
	}
	if r := f.license(t, "900000024"); r == nil || r.Status != "suspended" || r.MayVouch {
		t.Errorf("suspended clinician not published: %+v", r)
	}
	if r := f.license(t, "900000001"); r != nil {
		t.Errorf("an active clinician was published on first sight: %+v", r)
	}

	// A suspension, a removal, a newcomer, a reinstatement.
	f.ldap.LDIF(t, modify("900000001", "vouchLicenseStatus", "suspended"),
		"dn: vouchUziNumber=900000002,ou=people,dc=registry,dc=test\nchangetype: delete",
		entry("100000001"), modify("900000024", "vouchLicenseStatus", "active"))
	res, err = f.s.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m = f.mirror(t)
	if res.Kind != "incremental" || m["900000001"] != "suspended" || m["900000024"] != "active" || m["100000001"] != "active" {
		t.Errorf("incremental: %+v, mirror %v", res, m)
	}
	if _, ok := m["900000002"]; ok {
		t.Error("deleted entry still mirrored")
	}
	if r := f.license(t, "900000001"); r == nil || r.Status != "suspended" || r.MayVouch {
		t.Errorf("suspension did not reach the bucket: %+v", r)
	}
	if r := f.license(t, "900000002"); r == nil || r.Status != StatusRemoved {
		t.Errorf("removal did not reach the bucket: %+v", r)
	}
	if r := f.license(t, "900000024"); r == nil || !r.MayVouch {
		t.Errorf("reinstatement did not reach the bucket: %+v", r)
	}
	// Every run is recorded.
	var runs, failed int
	if err := f.db.Pool().QueryRow(ctx, `select count(*), count(error) from registry_sync_runs where finished_at is not null`).Scan(&runs, &failed); err != nil {
		t.Fatal(err)
	}
	if runs != 2 || failed != 0 {
		t.Errorf("runs recorded: %d (%d failed)", runs, failed)
	}
	// A second full sync leaves the same schema (index names restored) and content.
	if _, err := f.s.Full(ctx); err != nil {
		t.Fatal(err)
	}
	if again := f.mirror(t); len(again) != len(m) {
		t.Errorf("full sync after incremental: %d rows, want %d", len(again), len(m))
	}
	var idx []string
	rows, _ := f.db.Pool().Query(ctx, `select indexname from pg_indexes where tablename = 'registry_entries' order by 1`)
	for rows.Next() {
		var n string
		rows.Scan(&n)
		idx = append(idx, n)
	}
	if strings.Join(idx, ",") != "registry_entries_entry_uuid_key,registry_entries_pkey" {
		t.Errorf("mirror indexes after swaps: %v", idx)
	}
}

func TestMalformedAndDuplicateEntriesAreSkipped(t *testing.T) {
	t.Parallel()
	f := setup(t, 3, nil)
	f.ldap.LDIF(t, entry("100000001", "vouchRoleCode: 1.15"), entry("100000002", "vouchAgbCode: 12x"),
		"dn: ou=elsewhere,ou=people,dc=registry,dc=test\nobjectClass: organizationalUnit\nou: elsewhere",
		strings.Replace(entry("100000003"), "ou=people", "ou=elsewhere,ou=people", 1), entry("100000003"))
	res, err := f.s.Full(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := f.mirror(t)
	if res.Skipped != 4 || len(m) != len(testpki.Cards()) {
		t.Errorf("skipped %d (want 2 malformed + 2 duplicates), mirror %d rows", res.Skipped, len(m))
	}
	var skipped int
	f.db.Pool().QueryRow(context.Background(), `select skipped from registry_sync_runs order by id desc limit 1`).Scan(&skipped)
	if skipped != 4 {
		t.Errorf("run records %d skipped", skipped)
	}
}

func TestOutages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("register down at start", func(t *testing.T) {
		t.Parallel()
		f := setup(t, 4, nil)
		f.ldap.Stop(t)
		if _, err := f.s.Once(ctx); !errors.Is(err, directory.ErrUnavailable) {
			t.Fatalf("sync with the register down: %v", err)
		}
		if m := f.mirror(t); len(m) != 0 {
			t.Errorf("mirror changed: %v", m)
		}
		f.ldap.Start(t)
		if _, err := f.s.Once(ctx); err != nil {
			t.Fatal(err)
		}
		if m := f.mirror(t); len(m) != len(testpki.Cards()) {
			t.Errorf("did not catch up: %d rows", len(m))
		}
	})

	t.Run("register down during a full sync", func(t *testing.T) {
		t.Parallel()
		f := setup(t, 2, nil)
		if _, err := f.s.Full(ctx); err != nil {
			t.Fatal(err)
		}
		before := f.mirror(t)
		f.ldap.LDIF(t, modify("900000001", "vouchLicenseStatus", "suspended"))
		f.s.afterPage = func(n int) {
			if n == 2 {
				f.ldap.Stop(t)
			}
		}
		if _, err := f.s.Full(ctx); err == nil {
			t.Fatal("full sync succeeded although the register went down")
		}
		if after := f.mirror(t); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("a broken full sync changed the mirror:\n%v\n%v", before, after)
		}
		f.s.afterPage = nil
		f.ldap.Start(t)
		if _, err := f.s.Full(ctx); err != nil {
			t.Fatal(err)
		}
		if m := f.mirror(t); m["900000001"] != "suspended" || len(m) != len(before) {
			t.Errorf("did not catch up: %v", m)
		}
	})

	t.Run("register frozen during a full sync", func(t *testing.T) {
		t.Parallel()
		f := setup(t, 2, nil)
		if _, err := f.s.Full(ctx); err != nil {
			t.Fatal(err)
		}
		dir, err := directory.New(directory.Config{URL: f.ldap.URL, BindDN: f.ldap.BindDN, BindPassword: f.ldap.BindPassword,
			BaseDN: "ou=people," + f.ldap.BaseDN, Filter: "(objectClass=vouchCareProvider)", Timeout: 2 * time.Second,
			PageSize: 2, ScanTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		f.s.dir = dir
		f.s.afterPage = func(n int) {
			if n == 2 {
				f.ldap.Freeze(t)
			}
		}
		start := time.Now()
		_, err = f.s.Full(ctx)
		took := time.Since(start)
		f.ldap.Thaw(t)
		if !errors.Is(err, directory.ErrUnavailable) || took > 10*time.Second {
			t.Fatalf("full sync against a frozen register: %v after %s, want unavailable within the scan timeout", err, took)
		}
		// The lock was released: the next run takes it.
		f.s.afterPage = nil
		if _, err := f.s.Full(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("register down during incremental sync", func(t *testing.T) {
		t.Parallel()
		f := setup(t, 4, nil)
		if _, err := f.s.Once(ctx); err != nil {
			t.Fatal(err)
		}
		cookie, _, _ := loadState(ctx, f.db.Pool())
		f.ldap.LDIF(t, modify("900000003", "vouchLicenseStatus", "revoked"))
		f.ldap.Stop(t)
		if _, err := f.s.Once(ctx); err == nil {
			t.Fatal("incremental sync succeeded with the register down")
		}
		if after, _, _ := loadState(ctx, f.db.Pool()); string(after) != string(cookie) {
			t.Error("a failed incremental sync moved the cookie")
		}
		if m := f.mirror(t); m["900000003"] != "active" {
			t.Errorf("mirror changed by a failed sync: %v", m["900000003"])
		}
		f.ldap.Start(t)
		if _, err := f.s.Once(ctx); err != nil {
			t.Fatal(err)
		}
		if m := f.mirror(t); m["900000003"] != "revoked" {
			t.Errorf("did not catch up: %v", m["900000003"])
		}
		if r := f.license(t, "900000003"); r == nil || r.Status != "revoked" {
			t.Errorf("revocation not published after the outage: %+v", r)
		}
	})

	t.Run("the loop retries until the register returns", func(t *testing.T) {
		t.Parallel()
		f := setup(t, 4, nil)
		f.ldap.Stop(t)
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- f.s.Run(ctx) }()
		time.Sleep(300 * time.Millisecond) // several failed attempts
		f.ldap.Start(t)
		deadline := time.Now().Add(20 * time.Second)
		for len(f.mirror(t)) != len(testpki.Cards()) {
			if time.Now().After(deadline) {
				t.Fatal("the loop did not catch up")
			}
			time.Sleep(50 * time.Millisecond)
		}
		f.ldap.LDIF(t, modify("900000004", "vouchLicenseStatus", "suspended"))
		for f.license(t, "900000004") == nil {
			if time.Now().After(deadline) {
				t.Fatal("the loop did not publish the suspension")
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		var failed int
		f.db.Pool().QueryRow(context.Background(), `select count(*) from registry_sync_runs where error is not null`).Scan(&failed)
		if failed == 0 {
			t.Error("failed attempts were not recorded")
		}
	})
}

func TestCRLs(t *testing.T) {
	t.Parallel()
	now := time.Now()
	pki, err := testpki.New(now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string) *x509.Certificate {
		cert, err := pki.IssueNamed(name, testpki.UsageSign, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	revoked, good := issue("revoked"), issue("gp")
	dir := t.TempDir()
	write := func(name string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, der, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	crl, _ := pki.CRL(testpki.CACareProvider, []*big.Int{revoked.SerialNumber}, now)
	older, _ := pki.CRL(testpki.CACareProvider, nil, now.Add(-time.Hour))
	rogue, _ := pki.CRL(testpki.CAUnknown, nil, now)
	care := pki.CAs[testpki.CACareProvider].Cert
	cfg := &CRLConfig{Sources: []string{write("care.crl", crl), write("rogue.crl", rogue), filepath.Join(dir, "missing.crl")},
		CAs: []*x509.Certificate{care}}
	f := setup(t, 10, cfg)
	ctx := context.Background()
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err) // a bad CRL source is logged, not fatal to the register sync
	}
	var n int
	f.db.Pool().QueryRow(ctx, `select count(*) from uzi_crls`).Scan(&n)
	if n != 1 {
		t.Fatalf("%d CRLs stored, want only the care-provider one", n)
	}
	// The stored CRL's NextUpdate is what the CRL-expiry alert watches.
	list, err := x509.ParseRevocationList(crl)
	if err != nil {
		t.Fatal(err)
	}
	var next dto.Metric
	if err := f.s.metrics.crlNextUpdate.WithLabelValues(care.Subject.String()).Write(&next); err != nil {
		t.Fatal(err)
	}
	if got := next.GetGauge().GetValue(); got != float64(list.NextUpdate.Unix()) {
		t.Errorf("vouch_crl_next_update_timestamp_seconds{issuer=%q} = %v, want %d", care.Subject.String(), got, list.NextUpdate.Unix())
	}
	set := revocation.NewSet()
	if err := set.Refresh(ctx, revocation.Stored{DB: f.db.Pool()}, []*x509.Certificate{care}, now); err != nil {
		t.Fatal(err)
	}
	if err := set.Check(revoked, care, now); !errors.Is(err, revocation.ErrRevoked) {
		t.Errorf("revoked card: %v", err)
	}
	if err := set.Check(good, care, now); err != nil {
		t.Errorf("good card: %v", err)
	}
	// A replayed older CRL is refused and the stored one stays.
	fetch := &crlFetcher{cfg: CRLConfig{Sources: []string{write("older.crl", older)}, CAs: cfg.CAs}, db: f.db, log: f.s.log}
	if err := fetch.fetchAll(ctx, now); err == nil || !strings.Contains(err.Error(), "older") {
		t.Errorf("older CRL: %v", err)
	}
	set = revocation.NewSet()
	if err := set.Refresh(ctx, revocation.Stored{DB: f.db.Pool()}, []*x509.Certificate{care}, now); err != nil || !errors.Is(set.Check(revoked, care, now), revocation.ErrRevoked) {
		t.Errorf("after the replay the revocation must stand: %v", err)
	}
	// The sync applies the verifiers' rules (revocation.Parse, NotOlder):
	// a CRL without a number, and one with the stored number but an older
	// date, are refused; the stored one stays.
	unnumbered, err := pki.CRLWith(testpki.CACareProvider, x509.RevocationList{ThisUpdate: now, NextUpdate: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var number pgtype.Numeric
	f.db.Pool().QueryRow(ctx, `select number from uzi_crls`).Scan(&number)
	backdated, err := pki.CRLWith(testpki.CACareProvider, x509.RevocationList{Number: number.Int, ThisUpdate: now.Add(-2 * time.Minute), NextUpdate: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for name, der := range map[string][]byte{"unnumbered": unnumbered, "backdated": backdated} {
		fetch.cfg.Sources = []string{write(name+".crl", der)}
		if err := fetch.fetchAll(ctx, now); err == nil {
			t.Errorf("%s CRL stored", name)
		}
	}
	set = revocation.NewSet()
	if err := set.Refresh(ctx, revocation.Stored{DB: f.db.Pool()}, []*x509.Certificate{care}, now); err != nil || !errors.Is(set.Check(revoked, care, now), revocation.ErrRevoked) {
		t.Errorf("after the refused CRLs the revocation must stand: %v", err)
	}
}

// TestWithoutSyncrepl syncs a register that offers no syncrepl: changes by
// modifyTimestamp, deletions by a present scan.
func TestWithoutSyncrepl(t *testing.T) {
	t.Parallel()
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true, NoSyncprov: true})
	db := testenv.Database(t)
	b := testenv.Bus(t)
	dir, err := directory.New(directory.Config{URL: l.URL, BindDN: l.BindDN, BindPassword: l.BindPassword,
		BaseDN: "ou=people," + l.BaseDN, Filter: "(objectClass=vouchCareProvider)", Timeout: 2 * time.Second, PageSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), Config{Bucket: "licenses", FullInterval: time.Hour, ClockSkew: time.Minute}, dir, db, licenseBucket(t, b), nil,
		slog.New(slog.NewJSONHandler(io.Discard, nil)), NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	kv, _ := b.JetStream().KeyValue(context.Background(), "licenses")
	f := &fixture{ldap: l, db: db, s: s, kv: kv}
	ctx := context.Background()
	if res, err := s.Once(ctx); err != nil || res.Kind != "full" {
		t.Fatalf("full sync: %+v %v", res, err)
	}
	cookie, _, _ := loadState(ctx, db.Pool())
	if !directory.IsTimestampCookie(cookie) {
		t.Fatalf("cookie %q is not a timestamp cookie", cookie)
	}
	l.LDIF(t, modify("900000001", "vouchLicenseStatus", "suspended"),
		"dn: vouchUziNumber=900000002,ou=people,dc=registry,dc=test\nchangetype: delete", entry("100000001"))
	res, err := s.Once(ctx)
	if err != nil || res.Kind != "incremental" {
		t.Fatalf("incremental sync: %+v %v", res, err)
	}
	m := f.mirror(t)
	if m["900000001"] != "suspended" || m["100000001"] != "active" || len(m) != len(testpki.Cards()) {
		t.Errorf("mirror after timestamp sync: %v", m)
	}
	if _, ok := m["900000002"]; ok {
		t.Error("deletion not seen without syncrepl")
	}
	if r := f.license(t, "900000001"); r == nil || r.Status != "suspended" {
		t.Errorf("suspension not published: %+v", r)
	}
	if r := f.license(t, "900000002"); r == nil || r.Status != StatusRemoved {
		t.Errorf("removal not published: %+v", r)
	}
}

// TestFailClosedChanges: an entry that turns unreadable or is listed twice
// leaves the mirror and is refused; one deleted and re-added in the same
// batch is not lost; one that comes back is announced again.
func TestFailClosedChanges(t *testing.T) {
	t.Parallel()
	f := setup(t, 10, nil)
	ctx := context.Background()
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	f.ldap.LDIF(t,
		modify("900000001", "vouchRoleCode", "1.15"),
		"dn: vouchUziNumber=900000003,ou=people,dc=registry,dc=test\nchangetype: delete",
		entry("900000003", "vouchRoleCode: 30.000"),
		"dn: ou=elsewhere,ou=people,dc=registry,dc=test\nobjectClass: organizationalUnit\nou: elsewhere",
		strings.Replace(entry("900000004", "vouchRoleCode: 02.000"), "ou=people", "ou=elsewhere,ou=people", 1))
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	m := f.mirror(t)
	if _, ok := m["900000001"]; ok {
		t.Error("an entry that became unreadable is still mirrored")
	}
	if r := f.license(t, "900000001"); r == nil || r.Status != StatusInvalid || r.MayVouch {
		t.Errorf("unreadable entry: bucket %+v", r)
	}
	if m["900000003"] != "active" {
		t.Errorf("deleted and re-added in one batch: mirror %q", m["900000003"])
	}
	if r := f.license(t, "900000003"); r != nil && !r.MayVouch {
		t.Errorf("deleted and re-added: bucket refuses %+v", r)
	}
	if _, ok := m["900000004"]; ok {
		t.Error("a card holder listed twice is still mirrored")
	}
	if r := f.license(t, "900000004"); r == nil || r.Status != StatusDuplicate {
		t.Errorf("duplicate: bucket %+v", r)
	}
	// The register is mended: both come back and are announced.
	f.ldap.LDIF(t, modify("900000001", "vouchRoleCode", "01.015"),
		"dn: vouchUziNumber=900000004,ou=elsewhere,ou=people,dc=registry,dc=test\nchangetype: delete")
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"900000001"} {
		if r := f.license(t, u); r == nil || !r.MayVouch {
			t.Errorf("%s came back but the bucket still refuses: %+v", u, r)
		}
	}
	if m := f.mirror(t); m["900000001"] != "active" {
		t.Errorf("mended entry not mirrored: %v", m["900000001"])
	}
}

// TestShrinkGuard: a register that suddenly lists far fewer card holders is
// not believed until an operator says so.
func TestShrinkGuard(t *testing.T) {
	t.Parallel()
	var gen bytes.Buffer
	if err := registry.Generate(&gen, 200, 3, nil); err != nil {
		t.Fatal(err)
	}
	var dns []string
	for _, line := range strings.Split(gen.String(), "\n") {
		if strings.HasPrefix(line, "dn: ") {
			dns = append(dns, strings.TrimPrefix(line, "dn: "))
		}
	}
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true, Seed: []io.Reader{bytes.NewReader(gen.Bytes())}})
	db := testenv.Database(t)
	b := testenv.Bus(t)
	dir, err := directory.New(directory.Config{URL: l.URL, BindDN: l.BindDN, BindPassword: l.BindPassword,
		BaseDN: "ou=people," + l.BaseDN, Filter: "(objectClass=vouchCareProvider)", Timeout: 2 * time.Second, PageSize: 50})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), Config{Bucket: "licenses", FullInterval: time.Hour, MaxShrink: 0.1}, dir, db, licenseBucket(t, b), nil,
		slog.New(slog.NewJSONHandler(io.Discard, nil)), NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ldap: l, db: db, s: s}
	ctx := context.Background()
	if _, err := s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	before := len(f.mirror(t))
	var del []string
	for _, dn := range dns[:60] {
		del = append(del, "dn: "+dn+"\nchangetype: delete")
	}
	l.LDIF(t, del...)
	if _, err := s.Once(ctx); !errors.Is(err, ErrShrink) {
		t.Fatalf("incremental sync removing 60 of %d: %v, want ErrShrink", before, err)
	}
	if _, err := s.Full(ctx); !errors.Is(err, ErrShrink) {
		t.Fatalf("full sync removing 60 of %d: %v, want ErrShrink", before, err)
	}
	if got := len(f.mirror(t)); got != before {
		t.Errorf("a refused sync changed the mirror: %d rows, had %d", got, before)
	}
	// As many strangers as left: the total is unchanged, 60 still leave.
	var add []string
	for i := range 60 {
		add = append(add, entry(fmt.Sprintf("7%08d", i)))
	}
	l.LDIF(t, add...)
	if _, err := s.Full(ctx); !errors.Is(err, ErrShrink) {
		t.Fatalf("full sync replacing 60 of %d: %v, want ErrShrink", before, err)
	}
	if _, err := s.FullAcceptingShrink(ctx); err != nil {
		t.Fatal(err)
	}
	m := f.mirror(t)
	if _, ok := m["700000059"]; len(m) != before || !ok {
		t.Errorf("after accepting: %d rows, want %d with the newcomers", len(m), before)
	}
}

// TestLeavingStatusIsOneRule: a card holder whose entry turned unreadable,
// one listed twice and one deleted leave the mirror with the same status
// in the bucket — invalid, duplicate, removed — whether an incremental or
// a full sync saw it.
func TestLeavingStatusIsOneRule(t *testing.T) {
	t.Parallel()
	want := map[string]string{"900000001": StatusInvalid, "900000004": StatusDuplicate, "900000002": StatusRemoved}
	got := map[string]map[string]string{}
	for _, kind := range []string{"incremental", "full"} {
		f := setup(t, 10, nil)
		ctx := context.Background()
		if _, err := f.s.Once(ctx); err != nil {
			t.Fatal(err)
		}
		f.ldap.LDIF(t,
			modify("900000001", "vouchRoleCode", "1.15"),
			"dn: vouchUziNumber=900000002,ou=people,dc=registry,dc=test\nchangetype: delete",
			"dn: ou=elsewhere,ou=people,dc=registry,dc=test\nobjectClass: organizationalUnit\nou: elsewhere",
			strings.Replace(entry("900000004", "vouchRoleCode: 02.000"), "ou=people", "ou=elsewhere,ou=people", 1))
		sync := f.s.Once
		if kind == "full" {
			sync = f.s.Full
		}
		res, err := sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Kind != kind {
			t.Fatalf("%s: ran a %s sync", kind, res.Kind)
		}
		m := f.mirror(t)
		for uzi, status := range want {
			if _, ok := m[uzi]; ok {
				t.Errorf("%s: %s is still mirrored", kind, uzi)
			}
			if r := f.license(t, uzi); r == nil || r.Status != status || r.MayVouch {
				t.Errorf("%s: %s: bucket %+v, want %s", kind, uzi, r, status)
			}
		}
		got[kind] = map[string]string{}
		for uzi, r := range f.bucket(t) {
			got[kind][uzi] = fmt.Sprintf("%s may_vouch=%v", r.Status, r.MayVouch)
		}
	}
	for uzi, inc := range got["incremental"] {
		if full := got["full"][uzi]; full != inc {
			t.Errorf("%s: incremental left %q, full %q", uzi, inc, full)
		}
	}
	for uzi, full := range got["full"] {
		if _, ok := got["incremental"][uzi]; !ok {
			t.Errorf("%s: only the full sync published %q", uzi, full)
		}
	}
}
