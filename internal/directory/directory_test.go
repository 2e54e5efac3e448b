package directory_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/registry"
)

func client(t *testing.T, l *testenv.LDAPServer, pageSize int) *directory.Client {
	t.Helper()
	c, err := directory.New(directory.Config{URL: l.URL, BindDN: l.BindDN, BindPassword: l.BindPassword,
		BaseDN: "ou=people," + l.BaseDN, Filter: "(objectClass=vouchCareProvider)", Timeout: 2 * time.Second, PageSize: pageSize})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// EntryLDIF is a register entry for tests; extra lines replace or add
// attributes.
func entryLDIF(uzi string, extra ...string) string {
	attrs := map[string]string{"vouchCardType": "Z", "vouchRoleCode": "01.015", "vouchAgbCode": "01234567", "vouchLicenseStatus": "active"}
	for _, e := range extra {
		k, v, _ := strings.Cut(e, ": ")
		attrs[k] = v
	}
	var b strings.Builder
	fmt.Fprintf(&b, "dn: vouchUziNumber=%s,ou=people,dc=registry,dc=test\nobjectClass: inetOrgPerson\nobjectClass: vouchCareProvider\ncn: Test %s\nsn: Test\nvouchUziNumber: %s\n", uzi, uzi, uzi)
	for _, k := range []string{"vouchCardType", "vouchRoleCode", "vouchAgbCode", "vouchLicenseStatus", "vouchLicenseValidUntil"} {
		if v := attrs[k]; v != "" && v != "-" {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func TestParse(t *testing.T) {
	t.Parallel()
	a := directory.DefaultAttributes()
	mk := func(kv ...string) *ldap.Entry {
		attrs := map[string][]string{"vouchUziNumber": {"123456789"}, "vouchCardType": {"Z"}, "vouchRoleCode": {"01.015"},
			"vouchAgbCode": {"01234567"}, "vouchLicenseStatus": {"active"}}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(attrs, kv[i])
			} else {
				attrs[kv[i]] = strings.Split(kv[i+1], "|")
			}
		}
		return ldap.NewEntry("cn=x", attrs)
	}
	tests := []struct {
		name  string
		entry *ldap.Entry
		bad   string // attribute named in the error; "" = valid
	}{
		{"valid", mk(), ""},
		{"valid with times", mk("vouchLicenseValidFrom", "20200101000000Z", "vouchLicenseValidUntil", "20400101120000.5+0100"), ""},
		{"staff without role", mk("vouchCardType", "N", "vouchRoleCode", ""), ""},
		{"status in capitals", mk("vouchLicenseStatus", "Suspended"), ""},
		{"no UZI number", mk("vouchUziNumber", ""), "vouchUziNumber"},
		{"short UZI number", mk("vouchUziNumber", "12345678"), "vouchUziNumber"},
		{"injection as UZI", mk("vouchUziNumber", "*)(uid=*"), "vouchUziNumber"},
		{"two UZI numbers", mk("vouchUziNumber", "123456789|987654321"), "vouchUziNumber"},
		{"card type X", mk("vouchCardType", "X"), "vouchCardType"},
		{"care provider without role", mk("vouchRoleCode", ""), "vouchRoleCode"},
		{"bad role", mk("vouchRoleCode", "1.15"), "vouchRoleCode"},
		{"bad AGB", mk("vouchAgbCode", "12"), "vouchAgbCode"},
		{"unknown status", mk("vouchLicenseStatus", "pending"), "vouchLicenseStatus"},
		{"no status", mk("vouchLicenseStatus", ""), "vouchLicenseStatus"},
		{"bad time", mk("vouchLicenseValidUntil", "tomorrow"), "vouchLicenseValidUntil"},
		{"status with a space", mk("vouchLicenseStatus", "ACTIVE "), "vouchLicenseStatus"},
		{"UZI number with a space", mk("vouchUziNumber", " 123456789"), "vouchUziNumber"},
		{"zero date", mk("vouchLicenseValidUntil", "00010101000000Z"), "vouchLicenseValidUntil"},
		{"year 1899", mk("vouchLicenseValidFrom", "18991231235959Z"), "vouchLicenseValidFrom"},
		{"year 1900", mk("vouchLicenseValidFrom", "19000101000000Z"), ""},
		{"injection as BIG", mk("vouchBigNumber", "*)(uid=*"), "vouchBigNumber"},
		{"BIG of 10 digits", mk("vouchBigNumber", "1234567890"), "vouchBigNumber"},
		{"BIG", mk("vouchBigNumber", "19012345601"), ""},
		{"serial not hex", mk("vouchCertSerial", "12:AB"), "vouchCertSerial"},
		{"serial", mk("vouchCertSerial", "12abEF"), ""},
		{"NUL in a value", mk("vouchAgbCode", "0123\x004567"), "vouchAgbCode"},
		{"line break in a value", mk("vouchRoleCode", "01.015\n"), "vouchRoleCode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := a.Parse(tt.entry)
			var ee *directory.EntryError
			switch {
			case tt.bad == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.bad != "" && !errors.As(err, &ee):
				t.Fatalf("got %v, want an EntryError on %s", err, tt.bad)
			case tt.bad != "" && ee.Attribute != tt.bad:
				t.Errorf("error names %s, want %s", ee.Attribute, tt.bad)
			}
		})
	}
	// entryUUID in one spelling, as the mirror searches it.
	if e, err := a.Parse(mk("entryUUID", "0F8FAD5B-D9CB-469F-A165-70867728950E")); err != nil || e.EntryUUID != "0f8fad5b-d9cb-469f-a165-70867728950e" {
		t.Errorf("entryUUID: %q %v", e.EntryUUID, err)
	}
	// Other registers use other names.
	custom := directory.Attributes{UZI: "uziNr", CardType: "pasType", License: "status", Role: "rol"}
	e, err := custom.Parse(ldap.NewEntry("cn=y", map[string][]string{"uziNr": {"123456789"}, "pasType": {"N"}, "status": {"active"}}))
	if err != nil || e.UZI != "123456789" || e.CardType != "N" {
		t.Errorf("configured names: %+v, %v", e, err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	good := directory.Config{URL: "ldap://127.0.0.1:389/", BaseDN: "ou=people", Filter: "(objectClass=*)", Timeout: time.Second, PageSize: 10, Attributes: directory.DefaultAttributes()}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*directory.Config){
		"no URL":      func(c *directory.Config) { c.URL = "" },
		"http URL":    func(c *directory.Config) { c.URL = "http://x" },
		"bad filter":  func(c *directory.Config) { c.Filter = "(objectClass=*" },
		"page 0":      func(c *directory.Config) { c.PageSize = 0 },
		"no timeout":  func(c *directory.Config) { c.Timeout = 0 },
		"no UZI attr": func(c *directory.Config) { c.Attributes.UZI = "" },
	} {
		c := good
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	c := client(t, l, 100)
	ctx := context.Background()
	e, err := c.Lookup(ctx, "900000001")
	if err != nil {
		t.Fatal(err)
	}
	if e.License != "active" || e.CardType != "Z" || e.Role != "01.015" || e.EntryUUID == "" || !e.ActiveAt(time.Now()) {
		t.Errorf("gp: %+v", e)
	}
	if e, err := c.Lookup(ctx, "900000024"); err != nil || e.License != "suspended" || e.ActiveAt(time.Now()) {
		t.Errorf("suspended clinician: %+v, %v", e, err)
	}
	for _, uzi := range []string{"123123123", "*", "900000001)(vouchUziNumber=*", "*)(vouchUziNumber=*", "9000000*", `\2a`} {
		if _, err := c.Lookup(ctx, uzi); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("Lookup(%q) = %v, want not found", uzi, err)
		}
	}
	if f := c.UZIFilter("*)(uid=*"); !strings.Contains(f, `\2a\29\28uid=\2a`) {
		t.Errorf("filter not escaped: %s", f)
	}
}

func TestScanPagesAndSkips(t *testing.T) {
	t.Parallel()
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	l.LDIF(t, entryLDIF("100000001", "vouchRoleCode: 1.15"), entryLDIF("100000002", "vouchAgbCode: 12"))
	c := client(t, l, 4)
	var pages, n int
	var skipped []string
	err := c.Scan(context.Background(), func(p []directory.Entry) error {
		pages++
		n += len(p)
		return nil
	}, func(dn string, err error) { skipped = append(skipped, dn) })
	if err != nil {
		t.Fatal(err)
	}
	fixtures := strings.Count(string(registry.FixturesLDIF()), "\ndn: ") + 1
	if n != fixtures || len(skipped) != 2 || pages < 4 {
		t.Errorf("scan: %d entries in %d pages, skipped %v; want %d entries, 2 skipped, paged by 4", n, pages, skipped, fixtures)
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	c := client(t, l, 100)
	l.Stop(t)
	start := time.Now()
	if _, err := c.Lookup(context.Background(), "900000001"); !errors.Is(err, directory.ErrUnavailable) {
		t.Errorf("lookup with the register down: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("lookup took %s with the register down", time.Since(start))
	}
	if err := c.Scan(context.Background(), func([]directory.Entry) error { return nil }, func(string, error) {}); !errors.Is(err, directory.ErrUnavailable) {
		t.Errorf("scan with the register down: %v", err)
	}
	l.Start(t)
	if _, err := c.Lookup(context.Background(), "900000001"); err != nil {
		t.Errorf("after the register came back: %v", err)
	}
}

func TestChanges(t *testing.T) {
	t.Parallel()
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	c := client(t, l, 100)
	ctx := context.Background()
	cookie, err := c.Cookie(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.LDIF(t, "dn: vouchUziNumber=900000001,ou=people,dc=registry,dc=test\nchangetype: modify\nreplace: vouchLicenseStatus\nvouchLicenseStatus: suspended",
		"dn: vouchUziNumber=900000002,ou=people,dc=registry,dc=test\nchangetype: delete",
		entryLDIF("100000004"), entryLDIF("100000005", "vouchRoleCode: bad"))
	var skipped int
	ch, err := c.Changes(ctx, cookie, func(string, error) { skipped++ })
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range ch.Upserts {
		got[e.UZI] = e.License
	}
	if len(got) != 2 || got["900000001"] != "suspended" || got["100000004"] != "active" || len(ch.Deleted) != 1 || skipped != 1 || ch.PresentPhase {
		t.Errorf("changes: upserts %v deleted %v skipped %d present phase %v", got, ch.Deleted, skipped, ch.PresentPhase)
	}
	again, err := c.Changes(ctx, ch.Cookie, func(string, error) {})
	if err != nil || len(again.Upserts)+len(again.Deleted) != 0 || again.PresentPhase {
		t.Errorf("no changes since: %+v %v", again, err)
	}
}

// TestTLS: with StartTLS, lookups and the paged scan run over TLS to a real
// slapd whose certificate the configured CA issued; a register whose
// certificate the client cannot verify is unavailable, never used in clear.
func TestTLS(t *testing.T) {
	t.Parallel()
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true, TLS: true})
	cfg := directory.Config{URL: l.URL, BindDN: l.BindDN, BindPassword: l.BindPassword, BaseDN: "ou=people," + l.BaseDN,
		Filter: "(objectClass=vouchCareProvider)", Timeout: 2 * time.Second, PageSize: 5, StartTLS: true, CAFile: l.CAFile}
	c, err := directory.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if e, err := c.Lookup(ctx, "900000001"); err != nil || e.License != "active" {
		t.Fatalf("lookup over TLS: %+v %v", e, err)
	}
	n := 0
	if err := c.Scan(ctx, func(p []directory.Entry) error { n += len(p); return nil }, func(string, error) {}); err != nil || n == 0 {
		t.Fatalf("scan over TLS: %d entries, %v", n, err)
	}
	if _, err := c.Changes(ctx, nil, func(string, error) {}); err != nil {
		t.Fatalf("changes over TLS: %v", err)
	}
	untrusted := cfg
	untrusted.CAFile = ""
	u, err := directory.New(untrusted)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Lookup(ctx, "900000001"); !errors.Is(err, directory.ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("lookup against an unverifiable register: %v", err)
	}
	if err := u.Scan(ctx, func([]directory.Entry) error { return nil }, func(string, error) {}); !errors.Is(err, directory.ErrUnavailable) {
		t.Errorf("scan against an unverifiable register: %v", err)
	}
}

// TestNoPlaintextBind: a bind password crosses the network only
// encrypted; plain ldap:// is for a register on this machine.
func TestNoPlaintextBind(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url      string
		starttls bool
		wantOK   bool
	}{
		{"ldap://register.example.nl", false, false},
		{"ldap://10.0.0.5:389", false, false},
		{"ldap://register.example.nl", true, true},
		{"ldaps://register.example.nl", false, true},
		{"ldaps://register.example.nl", true, false},
		{"ldap://127.0.0.1:3890", false, true},
		{"ldap://[::1]:3890", false, true},
		{"ldap://localhost", false, true},
	} {
		_, err := directory.New(directory.Config{URL: tt.url, BindDN: "cn=x", BindPassword: "secret", BaseDN: "o=x",
			Filter: "(objectClass=*)", Timeout: time.Second, PageSize: 10, StartTLS: tt.starttls})
		if (err == nil) != tt.wantOK {
			t.Errorf("%s starttls=%v: %v, want ok=%v", tt.url, tt.starttls, err, tt.wantOK)
		}
	}
}
