package registry_test

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/registry"
)

var update = flag.Bool("update", false, "rewrite registry/fixtures.ldif from testpki.Cards()")

func fixtureCards() []registry.FixtureCard {
	var fc []registry.FixtureCard
	for _, c := range testpki.Cards() {
		fc = append(fc, registry.FixtureCard{UZI: c.UZI, Type: string(c.Type), Role: c.Role,
			AGB: c.AGB, CommonName: c.CommonName, License: c.License})
	}
	return fc
}

// TestFixturesMatchTestCards keeps fixtures.ldif in step with the test PKI:
// go test ./registry -run TestFixtures -update rewrites it.
func TestFixturesMatchTestCards(t *testing.T) {
	t.Parallel()
	want, err := registry.FixtureEntries(fixtureCards())
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("fixtures.ldif", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got := registry.FixturesLDIF(); !bytes.Equal(got, want) {
		t.Fatalf("fixtures.ldif is stale; run go test ./registry -run TestFixtures -update\ngot:\n%s\nwant:\n%s", got, want)
	}
}

func TestFixtureLayout(t *testing.T) {
	t.Parallel()
	got, err := registry.FixtureEntries([]registry.FixtureCard{
		{UZI: "900000001", Type: "Z", Role: "01.015", AGB: "01234567", CommonName: "A. Huisarts", License: "active"},
		{UZI: "900000010", Type: "N", Role: "00.000", AGB: "00000000", CommonName: "Ëlla de Wit", License: "suspended"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `dn: vouchUziNumber=900000001,ou=people,dc=registry,dc=test
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: inetOrgPerson
objectClass: vouchCareProvider
cn: A. Huisarts
sn: Huisarts
vouchUziNumber: 900000001
vouchCardType: Z
vouchRoleCode: 01.015
vouchAgbCode: 01234567
vouchBigNumber: 90000000101
vouchLicenseStatus: active
vouchLicenseValidFrom: 20200101000000Z
vouchLicenseValidUntil: 20400101000000Z

dn: vouchUziNumber=900000010,ou=people,dc=registry,dc=test
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: inetOrgPerson
objectClass: vouchCareProvider
cn:: w4tsbGEgZGUgV2l0
sn: Wit
vouchUziNumber: 900000010
vouchCardType: N
vouchRoleCode: 00.000
vouchAgbCode: 00000000
vouchLicenseStatus: suspended
vouchLicenseValidFrom: 20200101000000Z
vouchLicenseValidUntil: 20400101000000Z

`
	if string(got) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestFixtureEntriesRefuseMalformed(t *testing.T) {
	t.Parallel()
	ok := registry.FixtureCard{UZI: "900000001", Type: "Z", Role: "01.015", AGB: "01234567", CommonName: "X", License: "active"}
	tests := []struct {
		name string
		mod  func(*registry.FixtureCard)
		want string
	}{
		{"short uzi", func(c *registry.FixtureCard) { c.UZI = "12345" }, "UZI"},
		{"letters in uzi", func(c *registry.FixtureCard) { c.UZI = "12345678x" }, "UZI"},
		{"long agb", func(c *registry.FixtureCard) { c.AGB = "012345678" }, "AGB"},
		{"role without profession", func(c *registry.FixtureCard) { c.Role = "x" }, "role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tt.mod(&c)
			_, err := registry.FixtureEntries([]registry.FixtureCard{c})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %s", err, tt.want)
			}
		})
	}
}
