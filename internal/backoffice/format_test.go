package backoffice

import (
	"slices"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/i18n"
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
