//go:build !mutation

package backoffice_test

import (
	"net/http"
	"net/url"
	"regexp"
	"testing"
)

// TestLanguageSwitchKeepsChoice: the switch offers the five languages,
// each named in itself; Accept-Language picks among them (de-CH is
// German); a choice made before sign-in is the session's after it, one
// made while signed in holds on every page, in refusals and after sign-out;
// dates are written as the chosen language writes them; the switch
// returns to the page it was used on, and to no other host.
func TestLanguageSwitchKeepsChoice(t *testing.T) {
	w := newWorld(t, nil)
	b := w.browser()
	b.lang = "de-CH,de;q=0.9,en;q=0.5"
	st, page := b.get("/signin")
	if st != http.StatusOK || !contains(page, `<html lang="de">`) || !contains(page, "Mit Ihrer Karte anmelden") {
		t.Fatalf("sign-in page for a Swiss German browser: %d", st)
	}
	for _, want := range []string{
		`<button name="lang" value="en" lang="en">English</button>`,
		`<button name="lang" value="de" lang="de" aria-current="true">Deutsch</button>`,
		`<button name="lang" value="fr" lang="fr">Français</button>`,
		`<button name="lang" value="it" lang="it">Italiano</button>`,
		`<button name="lang" value="nl" lang="nl">Nederlands</button>`,
		`aria-label="Sprache"`,
	} {
		if !contains(page, want) {
			t.Errorf("the switch lacks %s", want)
		}
	}

	switchTo := func(lang, back, wantBack string) {
		t.Helper()
		st, loc := b.form("/lang", url.Values{"lang": {lang}, "back": {back}})
		if st != http.StatusSeeOther || loc != wantBack {
			t.Fatalf("switch to %s from %s: %d %s, want %s", lang, back, st, loc, wantBack)
		}
	}
	switchTo("fr", "/signin", "/signin")
	if _, page := b.get("/signin"); !contains(page, `<html lang="fr">`) || !contains(page, "Connexion avec votre carte") {
		t.Fatal("the switch to French did not hold")
	}
	b.mustSignIn(w.card("gp")) // Accept-Language still says German
	_, page = b.get("/vouch")
	if !contains(page, `<html lang="fr">`) || !contains(page, "Attester avec ma carte") || !contains(page, `placeholder="JJ/MM/AAAA"`) {
		t.Fatal("the choice made before sign-in is not the session's")
	}
	if !regexp.MustCompile(`Par exemple \d{2}/\d{2}/\d{4}\.`).MatchString(page) {
		t.Error("the onset example is not a French date")
	}

	switchTo("it", "/vouch", "/vouch")
	for path, text := range map[string]string{"/vouch": "Attesta con la mia carta", "/staff": "La Sua attività"} {
		if _, page := b.get(path); !contains(page, `<html lang="it">`) || !contains(page, text) {
			t.Errorf("%s is not in Italian", path)
		}
	}
	if _, page := b.get("/staff"); !regexp.MustCompile(`<td>\d{2}/\d{2}/\d{4} \d{2}:\d{2}</td>`).MatchString(page) {
		t.Error("the activity's times are not written as Italian dates")
	}
	if _, r := b.post("/api/vouch/prepare", map[string]any{"code": "1234", "consent": true}); !contains(r.str("message"), "16 caratteri") {
		t.Errorf("a refusal not in the chosen language: %v", r)
	}
	if _, page := b.get("/staff"); !contains(page, "<td>Un codice ha 16 caratteri in quattro gruppi, più un carattere di controllo.</td>") {
		t.Error("the activity page does not give the refusal's reason in words, in Italian")
	}
	switchTo("nl", "//evil.example", "/")
	switchTo("nl", "https://evil.example/vouch", "/")
	switchTo("it", "/no-such-page", "/")

	if st, r := b.post("/api/signout", map[string]any{}); st != http.StatusOK {
		t.Fatalf("sign-out: %d %v", st, r)
	}
	if _, page := b.get("/signin"); !contains(page, `<html lang="it">`) || !contains(page, "Accesso con la Sua carta") {
		t.Error("the choice did not outlast the session")
	}
}
