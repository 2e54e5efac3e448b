package backoffice

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/server"
)

// TestUnitDateFormats: every language writes a date and a number its own
// way, and its catalogue's date format (the onset field's placeholder)
// says the layout the pages use.
func TestUnitDateFormats(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 7, 9, 5, 0, 0, time.UTC)
	for _, tt := range []struct {
		lang, date, dateTime, number string
	}{
		{"en", "2026-12-07", "2026-12-07 09:05", "1,234,567.5"},
		{"nl", "07-12-2026", "07-12-2026 09:05", "1.234.567,5"},
		{"de", "07.12.2026", "07.12.2026 09:05", "1.234.567,5"},
		{"fr", "07/12/2026", "07/12/2026 09:05", "1\u00a0234\u00a0567,5"},
		{"it", "07/12/2026", "07/12/2026 09:05", "1.234.567,5"},
	} {
		t.Run(tt.lang, func(t *testing.T) {
			t.Parallel()
			tr := tr{tt.lang}
			if got := tr.Date(at); got != tt.date {
				t.Errorf("Date %q, want %q", got, tt.date)
			}
			if got := tr.DateTime(at); got != tt.dateTime {
				t.Errorf("DateTime %q, want %q", got, tt.dateTime)
			}
			if got := tr.Number(1234567.5); got != tt.number {
				t.Errorf("Number %q, want %q", got, tt.number)
			}
			if f := i18n.T(tt.lang, "page.vouch.onset-format"); dateLayout(f) != dateLayoutOf(tt.lang) {
				t.Errorf("the catalogue's date format %q is %q, the pages write %q", f, dateLayout(f), dateLayoutOf(tt.lang))
			}
		})
	}
	for _, l := range languages() {
		if _, ok := dateLayouts[l]; !ok {
			t.Errorf("%s has a catalogue but no date layout", l)
		}
	}
}

// TestUnitLanguageChoices: the switch offers every catalogue's language,
// each named in itself.
func TestUnitLanguageChoices(t *testing.T) {
	t.Parallel()
	var got []string
	for _, c := range languageChoices() {
		got = append(got, c.Tag+" "+c.Name)
	}
	if want := []string{"en English", "de Deutsch", "fr Français", "it Italiano", "nl Nederlands"}; !slices.Equal(got, want) {
		t.Errorf("choices %q, want %q", got, want)
	}
}

// TestUnitReasonTexts: the activity page writes an audit row's reason in
// words in every language: the back office's own refusals (each as its
// error's message, or a short text of its own where that message fills in
// a value), protocol verdicts, license decisions and role refusals; an
// unknown code stays a code.
func TestUnitReasonTexts(t *testing.T) {
	t.Parallel()
	for _, e := range []*server.Error{errBadRequest, errUnsupported, errRateLimited, errForbidden, errSignedOut, errLocked, errChallenge,
		errOtherCard, errSignCert, errBusy, errOtherBrowser, errStaff, errConsent, errOnsetForm, errOnsetLater, errOnsetOld, errQuota, errNoPending} {
		id, ok := reasonMessages[e.Code]
		switch {
		case !ok:
			t.Errorf("%s: no text for the activity page", e.Code)
		case id != e.Message && !strings.HasPrefix(id, "audit.reason."):
			t.Errorf("%s: %s, the refusal says %s", e.Code, id, e.Message)
		}
	}
	for _, lang := range languages() {
		tr := tr{lang}
		for code, id := range map[string]string{
			ReasonHeartbeatMissed: "audit.reason.heartbeat-missed", "quota-reached": "audit.reason.quota-reached",
			"cert-revoked": "reason.cert-revoked", "license-expired": "license.license-expired", "role-self": "roles.self",
			"locked": "session.locked",
		} {
			if got := tr.Reason(code); got != i18n.T(lang, id) || got == code || strings.Contains(got, "<no value>") {
				t.Errorf("%s: %s is %q, want %s", lang, code, got, id)
			}
		}
		if got := tr.Reason("no-such-reason"); got != "no-such-reason" {
			t.Errorf("%s: an unknown code is %q", lang, got)
		}
	}
	for code, id := range reasonMessages {
		if !i18n.Default().Has(i18n.Source, id) {
			t.Errorf("%s: message %s does not exist", code, id)
		}
	}
}
