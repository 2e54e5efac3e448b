package backoffice

import (
	"regexp"
	"testing"

	"github.com/vouch-nl/vouch/internal/cardagent"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/web"
)

// TestScriptTexts: every text the page's script shows by id reaches it, in
// every language, from the catalogues; the card agent's error codes too.
func TestScriptTexts(t *testing.T) {
	t.Parallel()
	js, err := web.Static.ReadFile("static/backoffice.js")
	if err != nil {
		t.Fatal(err)
	}
	ids := regexp.MustCompile(`\bt\("([a-z][a-z.-]*[a-z])"\)`).FindAllSubmatch(js, -1)
	if len(ids) < 10 {
		t.Fatalf("found %d texts in backoffice.js: the pattern no longer matches", len(ids))
	}
	// Every code the agent answers with, and those the extension adds.
	agentCodes := []string{cardagent.ErrMalformed, cardagent.ErrOrigin, cardagent.ErrNotVouch, cardagent.ErrWrongCard,
		cardagent.ErrStale, cardagent.ErrNoCard, cardagent.ErrPINWrong, cardagent.ErrPINBlocked, cardagent.ErrPINNeeded,
		cardagent.ErrCardRemoved, cardagent.ErrCardInUse, cardagent.ErrCardError, cardagent.ErrNoSigningCert,
		cardagent.ErrPINPadCancelled, "extension-missing", "extension-unavailable", "agent-missing", "agent-unavailable", "rate-limited"}
	for _, lang := range i18n.Default().Languages() {
		texts := scriptTexts(lang)
		for _, m := range ids {
			id := string(m[1])
			if _, ok := texts[id]; !ok || !i18n.Default().Has(lang, id) {
				t.Errorf("%s: the script shows %q, which it is not given", lang, id)
			}
		}
		for _, code := range agentCodes {
			if !i18n.Default().Has(lang, "agent."+code) || texts["agent."+code] == "" {
				t.Errorf("%s: no text for the card agent's %q", lang, code)
			}
		}
	}
}
