package i18n

import "testing"

func TestFromAcceptLanguage(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                        "en",
		"nl-NL,nl;q=0.9,en;q=0.8": "nl",
		"de-DE, en-GB;q=0.7":      "en",
		"fr, nl-BE;q=0.5":         "nl",
		"*":                       "en",
		"NL":                      "nl",
	} {
		if got := FromAcceptLanguage(in); got != want {
			t.Errorf("FromAcceptLanguage(%q) = %s, want %s", in, got, want)
		}
	}
	txt := Text{EN: "hello", NL: "hallo"}
	if txt.In("nl") != "hallo" || txt.In("en") != "hello" || txt.In("fr") != "hello" || (Text{EN: "x"}).In("nl") != "x" {
		t.Error("Text.In")
	}
}

func TestOf(t *testing.T) {
	t.Parallel()
	type code string
	cat := map[code]Text{"a": {EN: "A", NL: "Aa"}}
	if Of(cat, "a", "nl") != "Aa" || Of(cat, "a", "en") != "A" || Of(cat, "zz", "nl") != "zz" {
		t.Error("Of")
	}
}
