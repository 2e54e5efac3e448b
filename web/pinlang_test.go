package web_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestExtensionPINWindowLanguage: the PIN window has a page language
// (WCAG 3.1.1) and speaks the language of the page that asked — a page in
// de-CH gets a German window, lang="de" — and, for a page without one,
// the browser's language, its lang saying which.
func TestExtensionPINWindowLanguage(t *testing.T) {
	man := testenv.Cards(t)
	origin := testPage(t, "127.0.0.1", map[string]string{
		"/de": `<!doctype html><html lang="de-CH"><head><meta charset="utf-8"><title>test</title>
<script src="/static/vouchcard.js"></script></head><body><p id="ready">bereit</p></body></html>`,
	})
	browser := testenv.Browser(t, []string{origin}, man.Module, man.SoftHSMConf)
	locales := extensionLocales(t)
	page := browser // the first tab: see TestExtensionSignsLogin

	for _, tt := range []struct {
		path, want string // want "": the browser's language, whichever it is
	}{
		{"/de", "de"},
		{"/", ""},
	} {
		if err := run(page, chromedp.Navigate(origin+tt.path), chromedp.WaitVisible("#ready")); err != nil {
			t.Fatal(err)
		}
		var gp string
		for _, c := range eval(t, page, `VouchCard.cards()`).Cards {
			if c.Reader == "vouch-gp" {
				gp = c.Token
			}
		}
		if gp == "" {
			t.Fatal("no GP card")
		}
		challenge := make([]byte, 32)
		rand.Read(challenge)
		eval(t, page, fmt.Sprintf(`window.signing = VouchCard.signLogin(%q, %q); ({})`, gp, base64.StdEncoding.EncodeToString(challenge)))
		pin, _ := pinWindow(t, browser)
		// The window shows its texts once the worker answered; the origin
		// comes with that answer. DOM queries only: this Chromium answers
		// no script in the popup.
		var lang, title, cancel, shown string
		var ok bool
		err := run(pin, chromedp.WaitVisible("#pin"), chromedp.WaitVisible(`//dd[@id="origin"][normalize-space(.)!=""]`),
			chromedp.AttributeValue("html", "lang", &lang, &ok), chromedp.Text("#title", &title), chromedp.Text("#cancel", &cancel), chromedp.Text("#origin", &shown))
		if err != nil {
			t.Fatalf("%s: PIN window: %v", tt.path, err)
		}
		want := tt.want
		if want == "" {
			want = lang
			if locales[lang] == nil {
				t.Errorf("%s: PIN window lang %q is none of the extension's languages", tt.path, lang)
			}
		}
		if !ok || lang != want {
			t.Errorf("%s: PIN window lang %q (present %v), want %q", tt.path, lang, ok, want)
		}
		if title != locales[want]["pinTitle"] || cancel != locales[want]["cancel"] {
			t.Errorf("%s: PIN window says %q, %q; want %s's %q, %q", tt.path, title, cancel, want, locales[want]["pinTitle"], locales[want]["cancel"])
		}
		if shown != origin {
			t.Errorf("%s: origin %q", tt.path, shown)
		}
		screenshot(t, pin, "pin-window-"+want)
		// Closed, as the person may: the request is cancelled.
		eval(t, serviceWorker(t, browser), `Promise.all([...pending.keys()].map((id) => chrome.windows.remove(id))).then(() => ({}))`)
		if r := eval(t, page, `window.signing`); r.Error != "cancelled" {
			t.Fatalf("%s: cancelled: %+v", tt.path, r)
		}
		waitGone(t, browser)
	}
}

// waitGone waits until no PIN window is open, so that the next attach
// finds the next window, not this one.
func waitGone(t *testing.T, browser context.Context) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		targets, err := chromedp.Targets(browser)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(targets, func(ti *target.Info) bool { return strings.HasSuffix(ti.URL, "/pin.html") }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the PIN window stayed open")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
