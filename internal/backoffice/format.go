package backoffice

import (
	"strings"
	"time"

	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"golang.org/x/text/number"

	"github.com/vouch-nl/vouch/internal/i18n"
)

// Dates and numbers as each language writes them. Numbers come from
// golang.org/x/text (CLDR: 1,234 · 1.234 · 1 234); x/text formats no
// dates, so dates are this table: numeric, the day first, except English,
// which gets ISO 8601 (read the same way in American and British English).
// Each catalogue's page.vouch.onset-format says the same in words
// (TestUnitDateFormats). A language without a row gets ISO 8601.
var dateLayouts = map[string]string{
	"en": time.DateOnly,
	"de": "02.01.2006",
	"fr": "02/01/2006",
	"it": "02/01/2006",
	"nl": "02-01-2006",
}

// dateLayoutOf is the Go layout of a date in lang.
func dateLayoutOf(lang string) string {
	if l, ok := dateLayouts[lang]; ok {
		return l
	}
	return time.DateOnly
}

// dateLayout is the Go layout of a date format as the catalogues write it
// for people: YYYY-MM-DD, DD-MM-JJJJ, JJ/MM/AAAA, TT.MM.JJJJ, GG/MM/AAAA.
func dateLayout(format string) string {
	return strings.NewReplacer("YYYY", "2006", "JJJJ", "2006", "AAAA", "2006", "MM", "01", "DD", "02", "TT", "02", "GG", "02", "JJ", "02").Replace(format)
}

// Date writes the day of v as the page's language does.
func (t tr) Date(v time.Time) string { return v.Format(dateLayoutOf(t.lang)) }

// DateTime writes v to the minute (24-hour clock in all five languages).
func (t tr) DateTime(v time.Time) string { return v.Format(dateLayoutOf(t.lang) + " 15:04") }

// Number writes a count or a figure with the language's digit grouping and
// decimal sign.
func (t tr) Number(n any) string {
	return message.NewPrinter(language.Make(t.lang)).Sprint(number.Decimal(n))
}

// languageChoice is one choice of the language switch: its tag and its name in
// itself (lang.name of its own catalogue), marked up with its own lang.
type languageChoice struct{ Tag, Name string }

// languageChoices are the switch's choices, every catalogue's language.
func languageChoices() []languageChoice {
	var out []languageChoice
	for _, l := range languages() {
		out = append(out, languageChoice{Tag: l, Name: i18n.T(l, "lang.name")})
	}
	return out
}

// backPath is where the language switch returns to: a page of the route
// table (a GET route without parameters), else home. Only such a path,
// never another host (no open redirect).
func (s *Service) backPath(back string) string {
	if s.echo != nil && strings.HasPrefix(back, "/") && !strings.HasPrefix(back, "//") {
		for _, r := range s.echo.Routes() {
			if r.Method == "GET" && r.Path == back && !strings.ContainsAny(r.Path, ":*") {
				return back
			}
		}
	}
	return "/"
}

// reasonMessages are the messages of the back office's own refusal codes
// as audit rows keep them (server.Error Code → Message), for the activity
// page; a protocol verdict or a license decision is reason.<code> or
// license.<code>. A message that fills in a value the row does not keep
// has a short text of its own (audit.reason.*).
var reasonMessages = map[string]string{
	"already-used": "error.409", "bad-request": "error.400", "cross-origin": "error.cross-origin", "internal": "error.internal",
	"rate-limited": "error.429", "unsupported-media-type": "error.415",
	"challenge-invalid": "signin.challenge-invalid", "challenge-other-browser": "signin.challenge-invalid",
	"other-card": "signin.other-card", "sign-cert-invalid": "signin.sign-cert-invalid", "signin-busy": "signin.busy",
	"locked": "session.locked", "signed-out": "session.signed-out",
	"code-character": "vouch.code-character", "code-check": "vouch.code-check", "code-length": "vouch.code-length",
	"no-consent": "vouch.consent-required", "no-pending-statement": "vouch.no-pending", "onset-future": "vouch.onset-future",
	"onset-invalid": "vouch.onset-invalid", "onset-too-old": "vouch.onset-too-old", "staff-may-not-vouch": "vouch.staff-may-not-vouch",
	"quota-reached": "audit.reason.quota-reached", ReasonHeartbeatMissed: "audit.reason.heartbeat-missed",
}

// Reason is an audit row's reason code in words; the code itself when no
// catalogue has words for it (better a code support staff can look up).
func (t tr) Reason(code string) string {
	cat := i18n.Default()
	for _, id := range []string{reasonMessages[code], "reason." + code, "license." + code, "roles." + strings.TrimPrefix(code, "role-"), "settings.reason." + code} {
		if id != "" && cat.Has(i18n.Source, id) {
			return i18n.T(t.lang, id)
		}
	}
	return code
}
