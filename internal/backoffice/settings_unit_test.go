package backoffice

import (
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/settings"
)

// TestUnitMatchOffered: a browser's languages are matched among those
// offered only, each preference in its order; English when none matches
// and it is offered, else the first offered.
func TestUnitMatchOffered(t *testing.T) {
	t.Parallel()
	tests := []struct {
		offered []string
		header  string
		want    string
	}{
		{[]string{"en", "nl", "fr"}, "fr-CH, de;q=0.8", "fr"},
		{[]string{"en", "nl"}, "fr-CH, de;q=0.8, nl;q=0.5", "nl"},
		{[]string{"en", "nl"}, "fr-CH, de;q=0.8", "en"},
		{[]string{"nl", "de"}, "fr-CH", "nl"},
		{[]string{"nl", "de"}, "en-GB, de;q=0.9", "de"}, // English asked, not offered: the next preference
		{[]string{"nl", "en"}, "en-US", "en"},
		{[]string{"de"}, "", "de"},
		{[]string{"en", "it"}, "garbage;;q=x", "en"},
	}
	for _, tt := range tests {
		if got := matchOffered(tt.offered, tt.header); got != tt.want {
			t.Errorf("matchOffered(%v, %q) = %q, want %q", tt.offered, tt.header, got, tt.want)
		}
	}
}

// TestUnitOfferedLanguage: a request's language not offered (a cookie or a
// session from before the admin's change) becomes the best offered match.
func TestUnitOfferedLanguage(t *testing.T) {
	t.Parallel()
	s := unitService(t, nil)
	for _, tt := range []struct{ had, header, want string }{
		{"fr", "nl", "fr"}, // every catalogue is offered by default
		{"", "de", "de"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Accept-Language", tt.header)
		c, _ := unitContext(s, r)
		if tt.had != "" {
			c.Set(server.LangKey, tt.had)
		} else {
			c.Set(server.LangKey, "xx")
		}
		var got string
		_ = s.offeredLanguage(func(c echo.Context) error { got = langOf(c); return nil })(c)
		if got != tt.want {
			t.Errorf("had %q, browser %q: %q, want %q", tt.had, tt.header, got, tt.want)
		}
	}
}

// TestUnitSettingReasons: the activity page and the audit trail write a
// refused setting's reason in words, in every language.
func TestUnitSettingReasons(t *testing.T) {
	t.Parallel()
	for _, code := range []string{settings.RefusedAbove, settings.RefusedBelow, settings.RefusedChoice, settings.RefusedEmpty,
		settings.RefusedNumber, settings.RefusedStale, settings.RefusedUnknown} {
		for _, lang := range languages() {
			if got := (tr{lang}).Reason(code); got == code || (lang != "en" && got == (tr{"en"}).Reason(code)) {
				t.Errorf("%s in %s: %q", code, lang, got)
			}
		}
	}
}
