package web_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/internal/i18n"
)

// extensionLocales reads extension/_locales: language → message name →
// text.
func extensionLocales(t *testing.T) map[string]map[string]string {
	t.Helper()
	dirs, err := os.ReadDir("extension/_locales")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join("extension/_locales", d.Name(), "messages.json"))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]struct {
			Message string `json:"message"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
		out[d.Name()] = map[string]string{}
		for k, v := range m {
			out[d.Name()][k] = v.Message
		}
	}
	return out
}

// TestExtensionLocalesComplete: the extension has messages in every
// language of the back office, each file holds exactly the English one's
// names, none empty, and its "lang" message (the PIN window's html lang)
// is its own language; every message the manifest, pin.html and pin.js
// name exists; the languages background.js and pin.js accept are those of
// _locales.
func TestExtensionLocalesComplete(t *testing.T) {
	t.Parallel()
	locales := extensionLocales(t)
	var langs []string
	for l := range locales {
		langs = append(langs, l)
	}
	slices.Sort(langs)
	want := i18n.Default().Languages()
	slices.Sort(want)
	if !slices.Equal(langs, want) {
		t.Fatalf("extension languages %v, the back office's %v", langs, want)
	}
	en := locales["en"]
	for _, l := range langs {
		for k := range en {
			if locales[l][k] == "" {
				t.Errorf("%s: message %q missing or empty", l, k)
			}
		}
		for k := range locales[l] {
			if _, ok := en[k]; !ok {
				t.Errorf("%s: message %q is not in en", l, k)
			}
		}
		if got := locales[l]["lang"]; got != l {
			t.Errorf("%s: lang message %q, want %q", l, got, l)
		}
	}

	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("extension", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	named := map[string][]string{
		"manifest.json": submatches(`__MSG_(\w+)__`, read("manifest.json")),
		"pin.html":      submatches(`data-msg="(\w+)"`, read("pin.html")),
		"pin.js":        submatches(`msg\("(\w+)"\)`, read("pin.js")),
	}
	for file, names := range named {
		if len(names) == 0 {
			t.Errorf("%s names no message: the pattern is out of date", file)
		}
		for _, k := range names {
			if _, ok := en[k]; !ok {
				t.Errorf("%s names message %q, which en lacks", file, k)
			}
		}
	}
	for _, file := range []string{"background.js", "pin.js"} {
		m := regexp.MustCompile(`const LANGUAGES = \[([^\]]*)\]`).FindStringSubmatch(read(file))
		if m == nil {
			t.Errorf("%s: no LANGUAGES", file)
			continue
		}
		got := submatches(`"(\w+)"`, m[1])
		slices.Sort(got)
		if !slices.Equal(got, langs) {
			t.Errorf("%s: LANGUAGES %v, _locales %v", file, got, langs)
		}
	}
	if !strings.Contains(read("pin.html"), `<html lang="en">`) {
		t.Error("pin.html: no page language before its script runs (WCAG 3.1.1)")
	}
}

func submatches(pattern, s string) []string {
	var out []string
	for _, m := range regexp.MustCompile(pattern).FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}
