package registry_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/registry"
)

func TestWriteConfigPassesSlaptest(t *testing.T) {
	t.Parallel()
	slaptest, err := exec.LookPath("slaptest")
	if err != nil {
		slaptest = "/usr/sbin/slaptest"
	}
	if _, err := os.Stat(slaptest); err != nil {
		t.Fatalf("slaptest not found (run `make deps` to install slapd): %v", err)
	}
	dir := t.TempDir()
	conf, err := registry.WriteConfig(dir, "pw")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(slaptest, "-u", "-f", conf).CombinedOutput()
	if err != nil {
		t.Fatalf("slaptest: %v\n%s", err, out)
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "rootpw\t\tpw") || !strings.Contains(string(b), "{SSHA}") {
		t.Fatal("root password not stored hashed")
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Fatalf("data dir: %v", err)
	}
}

// TestSchemaTakesFullEntry adds an entry using every Vouch attribute and reads
// it back by its indexed UZI number and by license date ordering.
func TestSchemaTakesFullEntry(t *testing.T) {
	t.Parallel()
	s := testenv.LDAP(t)
	s.LDIF(t, `dn: vouchUziNumber=123456789,`+registry.PeopleDN+`
objectClass: vouchCareProvider
cn: Carla de Vries
sn: de Vries
vouchUziNumber: 123456789
vouchBigNumber: 19012345601
vouchCardType: Z
vouchRoleCode: 01.015
vouchAgbCode: 01012345
vouchLicenseStatus: active
vouchLicenseValidFrom: 20240101000000Z
vouchLicenseValidUntil: 20290101000000Z
vouchCertSerial: 0a1b2c`)

	tests := []struct{ name, filter string }{
		{"by uzi number", "(vouchUziNumber=123456789)"},
		{"license valid now", "(&(vouchLicenseValidFrom<=20250101000000Z)(vouchLicenseValidUntil>=20250101000000Z))"},
		{"status ignores case", "(vouchLicenseStatus=ACTIVE)"},
	}
	conn := s.Dial(t)
	for _, tt := range tests {
		res, err := conn.Search(ldap.NewSearchRequest(registry.PeopleDN, ldap.ScopeSingleLevel,
			ldap.NeverDerefAliases, 0, 0, false, tt.filter, []string{"vouchAgbCode"}, nil))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if len(res.Entries) != 1 || res.Entries[0].GetAttributeValue("vouchAgbCode") != "01012345" {
			t.Fatalf("%s: entries = %v", tt.name, res.Entries)
		}
	}

	// The constraint overlay refuses values outside the coded sets.
	bad := []struct{ attr, val string }{
		{"vouchCardType", "ZZ"},
		{"vouchCardType", "X"},
		{"vouchLicenseStatus", "retired"},
		{"vouchUziNumber", "12345"},
	}
	for _, b := range bad {
		err := conn.Modify(&ldap.ModifyRequest{DN: "vouchUziNumber=123456789," + registry.PeopleDN,
			Changes: []ldap.Change{{Operation: ldap.ReplaceAttribute,
				Modification: ldap.PartialAttribute{Type: b.attr, Vals: []string{b.val}}}}})
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultConstraintViolation) {
			t.Errorf("%s=%s: err = %v, want constraint violation", b.attr, b.val, err)
		}
	}
	err := conn.Modify(&ldap.ModifyRequest{DN: "vouchUziNumber=123456789," + registry.PeopleDN,
		Changes: []ldap.Change{{Operation: ldap.ReplaceAttribute,
			Modification: ldap.PartialAttribute{Type: "vouchLicenseStatus", Vals: []string{"suspended"}}}}})
	if err != nil {
		t.Errorf("valid change refused: %v", err)
	}
}

func TestBaseLDIFNamesSuffix(t *testing.T) {
	t.Parallel()
	b := string(registry.BaseLDIF())
	for _, dn := range []string{"dn: " + registry.Suffix, "dn: " + registry.PeopleDN} {
		if !strings.Contains(b, dn+"\n") {
			t.Errorf("base.ldif lacks %q", dn)
		}
	}
}
