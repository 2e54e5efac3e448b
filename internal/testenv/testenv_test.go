package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/registry"
)

func TestDatabaseIsFreshAndMigrated(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b := testenv.Database(t), testenv.Database(t)

	var nameA, nameB string
	if err := a.Pool().QueryRow(ctx, `select current_database()`).Scan(&nameA); err != nil {
		t.Fatal(err)
	}
	if err := b.Pool().QueryRow(ctx, `select current_database()`).Scan(&nameB); err != nil {
		t.Fatal(err)
	}
	if nameA == nameB {
		t.Fatalf("two calls share database %s", nameA)
	}

	// Migrated: the schema is there; fresh: it is empty and writes stay apart.
	const insertSQL = `insert into registry_entries (uzi_number, license_status) values ($1, $2)`
	if _, err := a.Pool().Exec(ctx, insertSQL, "123456789", "active"); err != nil {
		t.Fatalf("insert into a: %v", err)
	}
	var n int
	if err := b.Pool().QueryRow(ctx, `select count(*) from registry_entries`).Scan(&n); err != nil {
		t.Fatalf("count in b: %v", err)
	}
	if n != 0 {
		t.Fatalf("b sees %d rows written to a", n)
	}
}

func TestDatabaseDroppedAfterTest(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("use", func(t *testing.T) {
		db := testenv.Database(t)
		if err := db.Pool().QueryRow(t.Context(), `select current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
	})
	url := testenv.DatabaseURL(t) // any live database on the same server
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	const existsSQL = `select exists (select 1 from pg_database where datname = $1)`
	if err := conn.QueryRow(t.Context(), existsSQL, name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("database %s still exists after its test ended", name)
	}
}

func TestDatabaseManyInParallel(t *testing.T) {
	t.Parallel()
	for i := range 8 {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			db := testenv.Database(t)
			if err := db.Ping(t.Context()); err != nil {
				t.Fatalf("db %d: %v", i, err)
			}
		})
	}
}

func TestLDAP(t *testing.T) {
	t.Parallel()
	s := testenv.LDAP(t)
	s.LDIF(t, `dn: cn=Alice Arts,ou=people,dc=registry,dc=test
objectClass: vouchCareProvider
cn: Alice Arts
sn: Arts
vouchUziNumber: 900000001
vouchCardType: Z
vouchRoleCode: 01.015
vouchLicenseStatus: active
vouchLicenseValidFrom: 20240101000000Z`,
		`dn: cn=Bob Bakker,ou=people,dc=registry,dc=test
objectClass: vouchCareProvider
cn: Bob Bakker
sn: Bakker
vouchUziNumber: 900000002
vouchCardType: N
vouchLicenseStatus: active`)
	// A modify record goes through the same helper.
	s.LDIF(t, `dn: cn=Alice Arts,ou=people,dc=registry,dc=test
changetype: modify
replace: vouchLicenseStatus
vouchLicenseStatus: suspended`)

	conn := s.Dial(t)
	res, err := conn.SearchWithPaging(ldap.NewSearchRequest(
		"ou=people,"+s.BaseDN, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=vouchCareProvider)", []string{"vouchUziNumber", "vouchLicenseStatus"}, nil,
	), 1)
	if err != nil {
		t.Fatalf("paged search: %v", err)
	}
	got := map[string]string{}
	for _, e := range res.Entries {
		got[e.GetAttributeValue("vouchUziNumber")] = e.GetAttributeValue("vouchLicenseStatus")
	}
	want := map[string]string{"900000001": "suspended", "900000002": "active"}
	if len(got) != len(want) || got["900000001"] != want["900000001"] || got["900000002"] != want["900000002"] {
		t.Fatalf("entries = %v, want %v", got, want)
	}

	// Anonymous reads work (no access lines); anonymous writes do not.
	anon, err := ldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	err = anon.Add(&ldap.AddRequest{DN: "ou=x," + s.BaseDN, Attributes: []ldap.Attribute{
		{Type: "objectClass", Vals: []string{"organizationalUnit"}}, {Type: "ou", Vals: []string{"x"}},
	}})
	if !ldap.IsErrorAnyOf(err, ldap.LDAPResultStrongAuthRequired, ldap.LDAPResultInsufficientAccessRights) {
		t.Fatalf("anonymous add: err = %v, want refused", err)
	}
}

func TestLDAPServersAreSeparate(t *testing.T) {
	t.Parallel()
	a, b := testenv.LDAP(t), testenv.LDAP(t)
	if a.URL == b.URL {
		t.Fatalf("same URL %s", a.URL)
	}
	a.LDIF(t, "dn: ou=only-a,dc=registry,dc=test\nobjectClass: organizationalUnit\nou: only-a")
	_, err := b.Dial(t).Search(ldap.NewSearchRequest("ou=only-a,dc=registry,dc=test",
		ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", nil, nil))
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		t.Fatalf("b search: err = %v, want no such object", err)
	}
}

func TestLDAPWithFixturesAndOutage(t *testing.T) {
	t.Parallel()
	s := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	find := func(conn *ldap.Conn) (string, error) {
		res, err := conn.Search(ldap.NewSearchRequest(registry.PeopleDN, ldap.ScopeSingleLevel,
			ldap.NeverDerefAliases, 0, 0, false, "(vouchUziNumber=900000024)", []string{"vouchLicenseStatus"}, nil))
		if err != nil {
			return "", err
		}
		if len(res.Entries) != 1 {
			return "", fmt.Errorf("%d entries", len(res.Entries))
		}
		return res.Entries[0].GetAttributeValue("vouchLicenseStatus"), nil
	}
	conn := s.Dial(t)
	if got, err := find(conn); err != nil || got != "suspended" {
		t.Fatalf("suspended clinician: %q, %v", got, err)
	}

	url := s.URL
	s.Stop(t)
	if _, err := find(conn); err == nil {
		t.Fatal("search answered while the register was down")
	}
	if _, err := ldap.DialURL(url); err == nil {
		t.Fatal("dial succeeded while the register was down")
	}
	s.Start(t)
	if s.URL != url {
		t.Fatalf("URL %s after restart, was %s", s.URL, url)
	}
	if got, err := find(s.Dial(t)); err != nil || got != "suspended" {
		t.Fatalf("after restart: %q, %v", got, err)
	}
}

func TestBus(t *testing.T) {
	t.Parallel()
	b := testenv.Bus(t)
	if err := b.Healthy(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	js := b.JetStream()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "t.one", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != "T" || ack.Sequence != 1 {
		t.Fatalf("ack = %+v", ack)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "absent"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("get absent: %v", err)
	}
}
