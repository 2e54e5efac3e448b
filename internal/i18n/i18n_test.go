package i18n

import (
	"regexp"
	"slices"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

// TestCataloguesComplete fails when a message is missing in a language, a
// language has one the source does not, or a translation drops or invents
// a value ({{.Name}}).
func TestCataloguesComplete(t *testing.T) {
	t.Parallel()
	c := Default()
	if got := c.Languages(); len(got) < 2 || got[0] != Source || !slices.Contains(got, "nl") {
		t.Fatalf("languages %v, want the source first and Dutch", got)
	}
	values := regexp.MustCompile(`\{\{\s*\.(\w+)\s*\}\}`)
	src := c.IDs()
	for _, lang := range c.Languages()[1:] {
		for _, id := range src {
			if !c.Has(lang, id) {
				t.Errorf("%s: message %q missing", lang, id)
				continue
			}
			if a, b := values.FindAllString(c.T(Source, id), -1), values.FindAllString(c.T(lang, id), -1); !slices.Equal(sorted(a), sorted(b)) {
				t.Errorf("%s: %q fills in %v, the source %v", lang, id, b, a)
			}
		}
		for id := range c.ids[lang] {
			if !c.Has(Source, id) {
				t.Errorf("%s: message %q is not in %s.json", lang, id, Source)
			}
		}
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }

func TestMatch(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                        "en",
		"nl-NL,nl;q=0.9,en;q=0.8": "nl",
		"de-DE, en-GB;q=0.7":      "en",
		"fr, nl-BE;q=0.5":         "nl",
		"*":                       "en",
		"NL":                      "nl",
		"en-US,nl;q=0.9":          "en",
		"zz, x-klingon":           "en",
	} {
		if got := FromAcceptLanguage(in); got != want {
			t.Errorf("FromAcceptLanguage(%q) = %s, want %s", in, got, want)
		}
	}
	if got := Default().Match("", "nl", "en"); got != "nl" {
		t.Errorf("first non-empty preference: %s", got)
	}
}

func TestFromEnv(t *testing.T) {
	for _, tt := range []struct{ all, lang, want string }{
		{"", "nl_NL.UTF-8", "nl"},
		{"", "nl_BE@euro", "nl"},
		{"en_GB.UTF-8", "nl_NL.UTF-8", "en"},
		{"", "C", "en"},
		{"", "", "en"},
	} {
		t.Setenv("LC_ALL", tt.all)
		t.Setenv("LC_MESSAGES", "")
		t.Setenv("LANG", tt.lang)
		if got := FromEnv(); got != tt.want {
			t.Errorf("LC_ALL=%q LANG=%q: %s, want %s", tt.all, tt.lang, got, tt.want)
		}
	}
}

func TestTFallsBack(t *testing.T) {
	t.Parallel()
	c, err := Load(fstest.MapFS{
		"locales/en.json": {Data: []byte(`{"a": "A", "b": "Hello {{.Name}}"}`)},
		"locales/nl.json": {Data: []byte(`{"b": "Hallo {{.Name}}"}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := []string{c.T("nl", "a"), c.T("nl", "b", map[string]any{"Name": "Ada"}), c.T("fr", "b", map[string]any{"Name": "Ada"}), c.T("nl", "zz")}
	if d := cmp.Diff([]string{"A", "Hallo Ada", "Hello Ada", "zz"}, got); d != "" {
		t.Error(d)
	}
	if c.Has("nl", "a") || !c.Has("en", "a") {
		t.Error("Has counts a fallback")
	}
}

func TestLoadRefuses(t *testing.T) {
	t.Parallel()
	for name, fsys := range map[string]fstest.MapFS{
		"no source":      {"locales/nl.json": {Data: []byte(`{"a": "A"}`)}},
		"malformed":      {"locales/en.json": {Data: []byte(`{"a": `)}},
		"not a language": {"locales/en.json": {Data: []byte(`{}`)}, "locales/dutch.json": {Data: []byte(`{}`)}},
		"not its tag":    {"locales/en.json": {Data: []byte(`{}`)}, "locales/NL.json": {Data: []byte(`{}`)}},
	} {
		if _, err := Load(fsys); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}
