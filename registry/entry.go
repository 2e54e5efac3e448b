package registry

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// entry is one vouchCareProvider record. Numbers stay numbers so the
// generator can write a million of them without making a string each.
type entry struct {
	UZI    uint64 // 9 digits
	Type   string // Z, N, M or S
	Role   string // e.g. 01.015
	AGB    uint64 // 8 digits
	BIG    uint64 // 11 digits; 0 means none (only Z cards have one)
	CN, SN string
	Status string
	From   time.Time
	Until  time.Time
}

// ldapTime is the GeneralizedTime layout slapd stores.
const ldapTime = "20060102150405Z"

// appendEntry appends e as one LDIF record, blank line included. The layout
// is fixed: registry-sync and the fixture test depend on it.
func appendEntry(b []byte, e *entry) []byte {
	b = append(b, "dn: vouchUziNumber="...)
	b = appendDigits(b, e.UZI, 9)
	b = append(b, ","+PeopleDN+"\n"+
		"objectClass: top\n"+
		"objectClass: person\n"+
		"objectClass: organizationalPerson\n"+
		"objectClass: inetOrgPerson\n"+
		"objectClass: vouchCareProvider\n"...)
	b = appendValue(b, "cn", e.CN)
	b = appendValue(b, "sn", e.SN)
	b = append(b, "vouchUziNumber: "...)
	b = appendDigits(b, e.UZI, 9)
	b = appendValue(b, "\nvouchCardType", e.Type)
	b = appendValue(b, "vouchRoleCode", e.Role)
	b = append(b, "vouchAgbCode: "...)
	b = appendDigits(b, e.AGB, 8)
	b = append(b, '\n')
	if e.BIG != 0 {
		b = append(b, "vouchBigNumber: "...)
		b = appendDigits(b, e.BIG, 11)
		b = append(b, '\n')
	}
	b = appendValue(b, "vouchLicenseStatus", e.Status)
	b = append(b, "vouchLicenseValidFrom: "...)
	b = e.From.UTC().AppendFormat(b, ldapTime)
	b = append(b, "\nvouchLicenseValidUntil: "...)
	b = e.Until.UTC().AppendFormat(b, ldapTime)
	return append(b, "\n\n"...)
}

// appendDigits appends v zero-padded to width digits.
func appendDigits(b []byte, v uint64, width int) []byte {
	var tmp [20]byte
	d := strconv.AppendUint(tmp[:0], v, 10)
	for range width - len(d) {
		b = append(b, '0')
	}
	return append(b, d...)
}

// appendValue appends "attr: value\n", or "attr:: base64\n" where LDIF
// (RFC 2849) does not allow the value as plain text.
func appendValue(b []byte, attr, v string) []byte {
	b = append(b, attr...)
	if safeString(v) {
		b = append(b, ": "...)
		b = append(b, v...)
	} else {
		b = append(b, ":: "...)
		b = base64.StdEncoding.AppendEncode(b, []byte(v))
	}
	return append(b, '\n')
}

// safeString reports whether v is an RFC 2849 SAFE-STRING that also does
// not end in a space (which LDIF readers strip).
func safeString(v string) bool {
	if v == "" {
		return true
	}
	if c := v[0]; c == ' ' || c == ':' || c == '<' || v[len(v)-1] == ' ' {
		return false
	}
	for i := range len(v) {
		if c := v[i]; c == 0 || c == '\n' || c == '\r' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// FixtureCard is what the registry lists about one test card. It mirrors
// the fields of testpki.Card that the register knows, so that this package
// does not depend on the test PKI.
type FixtureCard struct {
	UZI        string // 9 digits
	Type       string // Z, N, M or S
	Role       string // e.g. 01.015
	AGB        string // 8 digits
	CommonName string
	License    string // active, suspended, revoked or deceased
}

// The license window of every fixture: long past to far ahead, so fixtures
// never expire under a test.
var (
	fixtureFrom  = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	fixtureUntil = time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
)

// FixtureEntries renders one LDIF entry per card, in the layout of every
// registry entry. Z cards get a BIG number: the UZI number followed by the
// two-digit profession of the role, the way a real BIG number ends in its
// profession group.
func FixtureEntries(cards []FixtureCard) ([]byte, error) {
	var b []byte
	for _, c := range cards {
		e := entry{Type: c.Type, Role: c.Role, CN: c.CommonName, SN: surname(c.CommonName),
			Status: c.License, From: fixtureFrom, Until: fixtureUntil}
		var err error
		if e.UZI, err = parseDigits(c.UZI, 9); err != nil {
			return nil, fmt.Errorf("registry: fixture %q: UZI number: %w", c.CommonName, err)
		}
		if e.AGB, err = parseDigits(c.AGB, 8); err != nil {
			return nil, fmt.Errorf("registry: fixture %q: AGB code: %w", c.CommonName, err)
		}
		if c.Type == "Z" {
			prof, err := parseDigits(strings.SplitN(c.Role, ".", 2)[0], 2)
			if err != nil {
				return nil, fmt.Errorf("registry: fixture %q: role: %w", c.CommonName, err)
			}
			e.BIG = e.UZI*100 + prof
		}
		b = appendEntry(b, &e)
	}
	return b, nil
}

// surname takes the last word of a common name ("A. Huisarts" → "Huisarts"),
// enough for the required sn of a test entry.
func surname(cn string) string {
	f := strings.Fields(cn)
	if len(f) == 0 {
		return cn
	}
	return f[len(f)-1]
}

func parseDigits(s string, n int) (uint64, error) {
	if len(s) != n {
		return 0, fmt.Errorf("%q: want %d digits", s, n)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	return v, nil
}

// FixturesLDIF returns fixtures.ldif: the registry entries of the standard
// test cards (testpki.Cards), the suspended clinician included.
func FixturesLDIF() []byte {
	b, err := files.ReadFile("fixtures.ldif")
	if err != nil {
		panic(err) // embedded at build time; missing means a broken build
	}
	return b
}
