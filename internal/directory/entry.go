package directory

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"github.com/vouch-nl/vouch/internal/uzi"
)

// License states a register may hold. Only Active may vouch.
const (
	LicenseActive    = "active"
	LicenseSuspended = "suspended"
	LicenseRevoked   = "revoked"
	LicenseDeceased  = "deceased"
)

// Entry is one card holder as the register lists them.
type Entry struct {
	DN         string
	EntryUUID  string // RFC 4530; ties syncrepl deletions to a mirror row
	UZI        string
	BIG        string
	CardType   string
	Role       string
	AGB        string
	License    string
	ValidFrom  time.Time // zero: not given
	ValidUntil time.Time // zero: not given
	CertSerial string
}

// EntryError says why an entry was skipped.
type EntryError struct {
	Attribute string
	Problem   string
	// EntryUUID of the entry, when it had a readable one: a sync must then
	// stop trusting what it mirrored of that entry.
	EntryUUID string
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("directory: attribute %s %s", e.Attribute, e.Problem)
}

// Parse reads and checks an LDAP entry under these attribute names.
func (a Attributes) Parse(le *ldap.Entry) (Entry, error) { return a.parse(le, le.DN) }

// attributeSource is an entry as go-ldap or the fast scan read it.
type attributeSource interface {
	GetEqualFoldAttributeValues(name string) []string
}

func (a Attributes) parse(le attributeSource, dn string) (Entry, error) {
	e, err := a.parseFields(le, dn)
	if ee, ok := err.(*EntryError); ok {
		if v := le.GetEqualFoldAttributeValues("entryUUID"); len(v) == 1 && isUUID(v[0]) {
			ee.EntryUUID = strings.ToLower(v[0])
		}
	}
	return e, err
}

func (a Attributes) parseFields(le attributeSource, dn string) (Entry, error) {
	if p := textProblem(dn); p != "" {
		return Entry{}, &EntryError{Attribute: "dn", Problem: p}
	}
	get := func(name string) (string, error) {
		if name == "" {
			return "", nil
		}
		v := le.GetEqualFoldAttributeValues(name)
		switch len(v) {
		case 0:
			return "", nil
		case 1:
			// Not trimmed: "ACTIVE " is not a status, and a register that
			// writes it needs mending, not a guess.
			if p := textProblem(v[0]); p != "" {
				return "", &EntryError{Attribute: name, Problem: p}
			}
			return v[0], nil
		}
		return "", &EntryError{Attribute: name, Problem: "has several values"}
	}
	e := Entry{DN: dn}
	var err error
	fields := []struct {
		dst  *string
		name string
	}{{&e.UZI, a.UZI}, {&e.BIG, a.BIG}, {&e.CardType, a.CardType}, {&e.Role, a.Role}, {&e.AGB, a.AGB},
		{&e.License, a.License}, {&e.CertSerial, a.CertSerial}, {&e.EntryUUID, "entryUUID"}}
	for _, f := range fields {
		if *f.dst, err = get(f.name); err != nil {
			return Entry{}, err
		}
	}
	// Registers differ in case; not in spaces, which no status has.
	e.License = strings.ToLower(e.License)
	switch {
	case !uzi.ValidUZINumber(e.UZI):
		return Entry{}, &EntryError{Attribute: a.UZI, Problem: "is not a 9-digit UZI number"}
	case len(e.CardType) != 1 || !strings.Contains("ZNMS", e.CardType):
		return Entry{}, &EntryError{Attribute: a.CardType, Problem: "is not Z, N, M or S"}
	case e.CardType == "Z" && !uzi.ValidRole(e.Role):
		return Entry{}, &EntryError{Attribute: a.Role, Problem: "is missing or not NN.NNN on a care provider"}
	case e.Role != "" && !uzi.ValidRole(e.Role):
		return Entry{}, &EntryError{Attribute: a.Role, Problem: "is not NN.NNN"}
	case e.AGB != "" && !uzi.ValidAGB(e.AGB):
		return Entry{}, &EntryError{Attribute: a.AGB, Problem: "is not 8 digits"}
	case e.BIG != "" && (len(e.BIG) != 11 || !digitsOnly(e.BIG)):
		return Entry{}, &EntryError{Attribute: a.BIG, Problem: "is not an 11-digit BIG number"}
	case e.CertSerial != "" && !hexOnly(e.CertSerial):
		return Entry{}, &EntryError{Attribute: a.CertSerial, Problem: "is not a hexadecimal serial number"}
	case e.EntryUUID != "" && !isUUID(e.EntryUUID):
		return Entry{}, &EntryError{Attribute: "entryUUID", Problem: "is not a UUID"}
	}
	// One spelling, as PostgreSQL's uuid prints it: the mirror is searched
	// by the text.
	e.EntryUUID = strings.ToLower(e.EntryUUID)
	switch e.License {
	case LicenseActive, LicenseSuspended, LicenseRevoked, LicenseDeceased:
	default:
		return Entry{}, &EntryError{Attribute: a.License, Problem: "is not active, suspended, revoked or deceased"}
	}
	for _, t := range []struct {
		dst  *time.Time
		name string
	}{{&e.ValidFrom, a.ValidFrom}, {&e.ValidUntil, a.ValidUntil}} {
		s, err := get(t.name)
		if err != nil {
			return Entry{}, err
		}
		if s == "" {
			continue
		}
		if *t.dst, err = parseGeneralizedTime(s); err != nil {
			return Entry{}, &EntryError{Attribute: t.name, Problem: "is not a GeneralizedTime"}
		}
		// Year 1 would read as "not given", that is no limit at all.
		if y := t.dst.Year(); y < 1900 || y > 9999 {
			return Entry{}, &EntryError{Attribute: t.name, Problem: "is not a date between 1900 and 9999"}
		}
	}
	return e, nil
}

// ActiveAt reports whether the license lets its holder work at t: status
// active and t inside the validity window, where one is given.
func (e Entry) ActiveAt(t time.Time) bool {
	return e.License == LicenseActive &&
		(e.ValidFrom.IsZero() || !t.Before(e.ValidFrom)) &&
		(e.ValidUntil.IsZero() || t.Before(e.ValidUntil))
}

// parseGeneralizedTime reads the LDAP GeneralizedTime forms registers use
// (RFC 4517 3.3.13): seconds optional, fraction optional, Z or an offset.
func parseGeneralizedTime(s string) (time.Time, error) {
	// The common form, YYYYMMDDHHMMSSZ, read directly: time.Parse was a
	// tenth of a full sync's CPU.
	if len(s) == 15 && s[14] == 'Z' && digitsOnly(s[:14]) {
		n := func(i, j int) int {
			v := 0
			for _, c := range s[i:j] {
				v = v*10 + int(c-'0')
			}
			return v
		}
		t := time.Date(n(0, 4), time.Month(n(4, 6)), n(6, 8), n(8, 10), n(10, 12), n(12, 14), 0, time.UTC)
		if t.Month() == time.Month(n(4, 6)) && t.Day() == n(6, 8) && n(8, 10) < 24 && n(10, 12) < 60 && n(12, 14) < 60 {
			return t, nil
		}
		return time.Time{}, fmt.Errorf("directory: %q is not a GeneralizedTime", s)
	}
	for _, layout := range []string{"20060102150405Z0700", "20060102150405.999999999Z0700", "200601021504Z0700", "2006010215Z0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("directory: %q is not a GeneralizedTime", s)
}

func digitsOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// textProblem says what is wrong with s as text, or "": invalid UTF-8 and
// control characters (NUL, which PostgreSQL's text cannot hold, among
// them). One such value must skip its entry, not stop every sync.
func textProblem(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8 text"
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "contains a control character"
		}
	}
	return ""
}

func hexOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// isUUID accepts the RFC 4122 text form, as entryUUID (RFC 4530) is.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
