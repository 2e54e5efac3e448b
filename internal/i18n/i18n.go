// Package i18n holds the shape of Vouch's user-facing texts — each in
// English and Dutch — and picks the language for a request or a terminal.
// The texts themselves live with the feature that says them.
package i18n

import (
	"os"
	"strings"
)

// Text is one message in every language Vouch speaks.
type Text struct {
	EN string
	NL string
}

// In returns the text in lang ("en" or "nl"); English when there is no
// translation.
func (t Text) In(lang string) string {
	if lang == "nl" && t.NL != "" {
		return t.NL
	}
	return t.EN
}

// Of returns the text of code in lang from a feature's catalogue, or the
// code itself when the catalogue has none (better a code support staff can
// look up than nothing).
func Of[K ~string](catalogue map[K]Text, code K, lang string) string {
	t, ok := catalogue[code]
	if !ok {
		return string(code)
	}
	return t.In(lang)
}

// FromAcceptLanguage picks "nl" or "en" from an Accept-Language header, in
// the order of preference the browser gives (q-values are rarely out of
// order, and a wrong guess between two languages costs little).
func FromAcceptLanguage(header string) string {
	for _, part := range strings.Split(header, ",") {
		tag, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		switch lang, _, _ := strings.Cut(strings.ToLower(tag), "-"); lang {
		case "nl", "en":
			return lang
		}
	}
	return "en"
}

// FromEnv picks the language of a terminal from LC_ALL, LC_MESSAGES or LANG.
func FromEnv() string {
	for _, k := range []string{"LC_ALL", "LC_MESSAGES", "LANG"} {
		if v := os.Getenv(k); v != "" {
			if strings.HasPrefix(v, "nl") {
				return "nl"
			}
			return "en"
		}
	}
	return "en"
}
