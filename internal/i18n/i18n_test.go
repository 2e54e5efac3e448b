package i18n

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

// Offered are the languages the back office is built for: the
// Netherlands and a Swiss deployment. A catalogue file that goes missing
// fails TestCataloguesComplete rather than quietly shrinking the switch.
var offered = []string{"en", "de", "fr", "it", "nl"}

// TestCataloguesComplete fails when a language is missing, a message is
// missing in a language, a language has one the source does not, or a
// translation drops or invents a value ({{.Name}}).
func TestCataloguesComplete(t *testing.T) {
	t.Parallel()
	c := Default()
	if got := c.Languages(); !slices.Equal(got, offered) {
		t.Fatalf("languages %v, want %v (the source first)", got, offered)
	}
	for _, p := range incomplete(c) {
		t.Error(p)
	}
}

// TestIncompleteFindsEveryGap: the check TestCataloguesComplete runs
// finds a message missing from any one language, an extra one, and a
// dropped value.
func TestIncompleteFindsEveryGap(t *testing.T) {
	t.Parallel()
	full := `{"a": "A", "b": "B {{.N}}"}`
	for _, lang := range offered[1:] {
		files := fstest.MapFS{}
		for _, l := range offered {
			files["locales/"+l+".json"] = &fstest.MapFile{Data: []byte(full)}
		}
		c, err := Load(files)
		if err != nil {
			t.Fatal(err)
		}
		if p := incomplete(c); len(p) != 0 {
			t.Fatalf("complete catalogues: %v", p)
		}
		for name, data := range map[string]string{
			"missing": `{"a": "A"}`,
			"extra":   `{"a": "A", "b": "B {{.N}}", "c": "C"}`,
			"value":   `{"a": "A", "b": "B"}`,
		} {
			files["locales/"+lang+".json"] = &fstest.MapFile{Data: []byte(data)}
			c, err := Load(files)
			if err != nil {
				t.Fatal(err)
			}
			if p := incomplete(c); len(p) != 1 || !strings.HasPrefix(p[0], lang+":") {
				t.Errorf("%s %s: %v, want one problem in %s", lang, name, p, lang)
			}
		}
	}
}

// incomplete lists what every catalogue but the source lacks or adds.
func incomplete(c *Catalog) []string {
	var out []string
	values := regexp.MustCompile(`\{\{\s*\.(\w+)\s*\}\}`)
	src := c.IDs()
	for _, lang := range c.Languages()[1:] {
		for _, id := range src {
			if !c.Has(lang, id) {
				out = append(out, fmt.Sprintf("%s: message %q missing", lang, id))
				continue
			}
			if a, b := values.FindAllString(c.texts[Source][id], -1), values.FindAllString(c.texts[lang][id], -1); !slices.Equal(sorted(a), sorted(b)) {
				out = append(out, fmt.Sprintf("%s: %q fills in %v, the source %v", lang, id, b, a))
			}
		}
		for id := range c.ids[lang] {
			if !c.Has(Source, id) {
				out = append(out, fmt.Sprintf("%s: message %q is not in %s.json", lang, id, Source))
			}
		}
	}
	return out
}

func sorted(s []string) []string { slices.Sort(s); return s }

func TestMatch(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                        "en",
		"nl-NL,nl;q=0.9,en;q=0.8": "nl",
		"de-DE, en-GB;q=0.7":      "de",
		"fr, nl-BE;q=0.5":         "fr",
		"fr-CH":                   "fr",
		"de-CH,de;q=0.9":          "de",
		"it-CH":                   "it",
		"rm-CH, de-CH;q=0.8":      "de",
		"es, it;q=0.5":            "it",
		"rm, it;q=0.5":            "de", // Romansh: CLDR matches German
		"pt-BR, nl-BE;q=0.5":      "nl",
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

// A part's catalogue joins its language's: its ids are there, and the
// completeness check sees them.
func TestPartsJoin(t *testing.T) {
	t.Parallel()
	c, err := Load(fstest.MapFS{
		"locales/en.json":       {Data: []byte(`{"a": "A"}`)},
		"locales/nl.json":       {Data: []byte(`{"a": "Aa"}`)},
		"locales/audit/en.json": {Data: []byte(`{"b": "B"}`)},
		"locales/audit/nl.json": {Data: []byte(`{"b": "Bb"}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"Aa", "Bb"}, []string{c.T("nl", "a"), c.T("nl", "b")}); d != "" {
		t.Error(d)
	}
	if !c.Has("nl", "b") {
		t.Error("a part's id is not in its language")
	}
}

func TestLoadRefuses(t *testing.T) {
	t.Parallel()
	for name, fsys := range map[string]fstest.MapFS{
		"no source":                 {"locales/nl.json": {Data: []byte(`{"a": "A"}`)}},
		"malformed":                 {"locales/en.json": {Data: []byte(`{"a": `)}},
		"not a language":            {"locales/en.json": {Data: []byte(`{}`)}, "locales/dutch.json": {Data: []byte(`{}`)}},
		"not its tag":               {"locales/en.json": {Data: []byte(`{}`)}, "locales/NL.json": {Data: []byte(`{}`)}},
		"part without its language": {"locales/en.json": {Data: []byte(`{}`)}, "locales/audit/nl.json": {Data: []byte(`{"a": "A"}`)}},
		"id twice in parts":         {"locales/en.json": {Data: []byte(`{"a": "A"}`)}, "locales/audit/en.json": {Data: []byte(`{"a": "B"}`)}},
		"id twice across parts":     {"locales/en.json": {Data: []byte(`{}`)}, "locales/audit/en.json": {Data: []byte(`{"a": "A"}`)}, "locales/stats/en.json": {Data: []byte(`{"a": "B"}`)}},
	} {
		if _, err := Load(fsys); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}
