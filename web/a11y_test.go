package web_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/registry"
)

// axeTags are the rules axe runs: WCAG 2.0 and 2.1, levels A and AA. A
// violation of any fails the test; best practices beyond WCAG do not.
var axeTags = []string{"wcag2a", "wcag2aa", "wcag21a", "wcag21aa"}

var axeOnce struct {
	sync.Once
	src string
	err error
}

// axeSource is the vendored axe-core (testdata/axe), checked against the
// sha256 its README names: a file changed by hand is not the one reviewed.
func axeSource(t *testing.T) string {
	t.Helper()
	axeOnce.Do(func() {
		src, err := os.ReadFile("testdata/axe/axe.min.js")
		if err != nil {
			axeOnce.err = err
			return
		}
		readme, err := os.ReadFile("testdata/axe/README.md")
		if err != nil {
			axeOnce.err = err
			return
		}
		sum := sha256.Sum256(src)
		m := regexp.MustCompile(`sha256 ([0-9a-f]{64})  axe\.min\.js`).FindSubmatch(readme)
		if m == nil || string(m[1]) != hex.EncodeToString(sum[:]) {
			axeOnce.err = fmt.Errorf("testdata/axe/axe.min.js has sha256 %x, not the one testdata/axe/README.md names", sum)
			return
		}
		axeOnce.src = string(src)
	})
	if axeOnce.err != nil {
		t.Fatal(axeOnce.err)
	}
	return axeOnce.src
}

type axeViolation struct {
	ID, Impact, Help, HelpURL string
	Nodes                     []struct{ Target, HTML, Summary string }
}

// checkAxe runs axe-core's WCAG 2.1 A and AA rules over ctx's page;
// every violation fails the test, with its rule, help and the nodes it
// found. what names the page in the messages.
func checkAxe(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	for _, v := range axeViolations(t, ctx) {
		var b strings.Builder
		fmt.Fprintf(&b, "axe: %s: %s (%s): %s — %s", what, v.ID, v.Impact, v.Help, v.HelpURL)
		for _, n := range v.Nodes {
			fmt.Fprintf(&b, "\n\t%s  %s\n\t\t%s", n.Target, n.HTML, strings.ReplaceAll(n.Summary, "\n", "\n\t\t"))
		}
		t.Error(b.String())
	}
}

// axeViolations injects axe-core into ctx's page (once per document) and
// returns what its WCAG 2.1 A and AA rules find over the whole document.
func axeViolations(t *testing.T, ctx context.Context) []axeViolation {
	t.Helper()
	var present bool
	js(t, ctx, `typeof window.axe === "object"`, &present)
	if !present {
		js(t, ctx, axeSource(t)+"\n;null", nil)
	}
	var vs []axeViolation
	tags, _ := json.Marshal(axeTags)
	js(t, ctx, fmt.Sprintf(`axe.run(document, {runOnly: {type: "tag", values: %s}, resultTypes: ["violations"]}).then((r) =>
		r.violations.map((v) => ({ID: v.id, Impact: v.impact || "", Help: v.help, HelpURL: v.helpUrl,
			Nodes: v.nodes.map((n) => ({Target: n.target.map(String).join(" "), HTML: n.html, Summary: n.failureSummary || ""}))})))`,
		tags), &vs)
	return vs
}

// key presses one key in ctx's page by the browser's input events, as a
// keyboard would: kb.Tab, kb.Enter, " " (Space) or a character; shift
// holds Shift down with it.
func key(t *testing.T, ctx context.Context, k string, shift bool) {
	t.Helper()
	var opts []chromedp.KeyOption
	if shift {
		opts = append(opts, chromedp.KeyModifiers(input.ModifierShift))
	}
	if err := run(ctx, chromedp.KeyEvent(k, opts...)); err != nil {
		t.Fatalf("pressing %q: %v", k, err)
	}
}

// focused describes the element that has the focus: its id (or tag and
// name), and whether its focus is visible — an outline of at least 2 px, or
// a box shadow, as the page's style draws it for :focus-visible.
type focused struct {
	Who     string
	Visible bool
	Style   string
}

// elementName names an element in the tests' messages: #id, else its tag
// with its name and value (a language's button) or its link.
const elementName = `(el) => el.id ? "#" + el.id : el.tagName.toLowerCase() + (el.name ? "[name=" + el.name + "]" : "") +
	(el.value && el.tagName === "BUTTON" ? "[value=" + el.value + "]" : "") + (el.tagName === "A" ? "[href=" + el.getAttribute("href") + "]" : "")`

func focusNow(t *testing.T, ctx context.Context) focused {
	t.Helper()
	var f focused
	js(t, ctx, `(() => {
		const el = document.activeElement;
		if (!el || el === document.body || el === document.documentElement) return {Who: "body", Visible: false, Style: ""};
		const s = getComputedStyle(el);
		const who = (`+elementName+`)(el);
		const outline = s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2;
		return {Who: who, Visible: el.matches(":focus-visible") && (outline || s.boxShadow !== "none"),
			Style: s.outlineStyle + " " + s.outlineWidth + " " + s.outlineColor + " / " + s.boxShadow};
	})()`, &f)
	return f
}

// tabbable lists the page's elements that Tab should reach, in document
// order (the page sets no positive tabindex, so this is the order Tab
// takes), as focusNow names them.
func tabbable(t *testing.T, ctx context.Context) []string {
	t.Helper()
	var out []string
	js(t, ctx, `[...document.querySelectorAll("a[href], button, input, select, textarea, [tabindex]")].filter((el) =>
		!el.disabled && el.tabIndex >= 0 && !el.closest("[inert]") && el.getClientRects().length > 0 &&
		getComputedStyle(el).visibility !== "hidden" && !(el.type === "radio" && !el.checked && document.querySelector("input[type=radio][name='" + el.name + "']:checked")) &&
		el.type !== "hidden").map(`+elementName+`)`, &out)
	return out
}

// tabTo presses Tab until the element named want has the focus, at most
// max times, checking that each element reached shows its focus; it
// returns the elements passed, want last.
func tabTo(t *testing.T, ctx context.Context, want string, max int) []string {
	t.Helper()
	var path []string
	for range max {
		key(t, ctx, kb.Tab, false)
		f := focusNow(t, ctx)
		path = append(path, f.Who)
		if f.Who != "body" && !f.Visible {
			t.Errorf("%s has the focus and does not show it (%s)", f.Who, f.Style)
		}
		if f.Who == want {
			return path
		}
	}
	t.Fatalf("Tab did not reach %s in %d presses: %v", want, max, path)
	return nil
}

// noTrap tabs once round the whole page, forwards and then backwards,
// from wherever the focus is: the focus must visit every element Tab
// should reach, in document order (the reverse with Shift), and come back
// to the first it reached — no element holds it, none is skipped. Every
// element reached shows its focus.
func noTrap(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	want := tabbable(t, ctx)
	if len(want) == 0 {
		t.Fatalf("%s: nothing to reach by Tab", what)
	}
	for _, shift := range []bool{false, true} {
		var got []string
		for i := 0; i < 2*len(want)+4; i++ {
			key(t, ctx, kb.Tab, shift)
			f := focusNow(t, ctx)
			if f.Who == "body" { // out of the page, to the browser's own controls
				continue
			}
			if len(got) > 0 && f.Who == got[0] {
				break
			}
			if !f.Visible {
				t.Errorf("%s: %s has the focus and does not show it (%s)", what, f.Who, f.Style)
			}
			got = append(got, f.Who)
		}
		order := slices.Clone(want)
		if shift {
			slices.Reverse(order)
		}
		// Once round from where it started: the page's order, rotated.
		if i := slices.Index(order, firstOr(got, "")); i > 0 {
			order = append(order[i:], order[:i]...)
		}
		if !slices.Equal(got, order) {
			t.Errorf("%s: Tab (shift %v) went %v; the page's order is %v", what, shift, got, order)
		}
	}
}

func firstOr(xs []string, none string) string {
	if len(xs) == 0 {
		return none
	}
	return xs[0]
}

// dispatchKey sends one key to a window that may close while it handles
// it (the PIN window closes as its form is sent): the error of a target
// gone is not a failure.
func dispatchKey(ctx context.Context, k string) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	chromedp.Run(dctx, chromedp.KeyEvent(k))
}

// pinByKeys types pin into the extension's PIN window by keys and sends
// its form with Enter, after axe-core has looked at the window (its lang,
// WCAG 3.1.1, among the rest) and the PIN field was found to have the
// focus: the person types at once, without a click.
func pinByKeys(t *testing.T, browser context.Context, pin, shot string) {
	t.Helper()
	win, cancel := pinWindow(t, browser)
	defer cancel()
	if err := run(win, chromedp.WaitVisible("#pin"), chromedp.WaitVisible(`//dd[@id="origin"][normalize-space(.)!=""]`)); err != nil {
		t.Fatal(err)
	}
	screenshot(t, win, shot)
	checkAxe(t, win, "the PIN window ("+shot+")")
	if f := focusNow(t, win); f.Who != "#pin" {
		t.Errorf("the PIN window opens with the focus on %s, not the PIN field", f.Who)
	}
	if err := run(win, chromedp.KeyEvent(pin)); err != nil {
		t.Fatalf("typing the PIN: %v", err)
	}
	dispatchKey(win, kb.Enter)
	pinHandedOver(t, browser)
}

// TestKeyboardOnly signs in, vouches and unlocks with the keyboard alone
// — Tab, Shift+Tab, Space and Enter as the browser's key events, never a
// click — in headless Chromium with the real extension, card agent and
// the GP's virtual card. On each page Tab goes round every control in the
// page's order and comes back (no trap), and whatever has the focus shows
// it; the lock dialog keeps the focus inside it while the page behind is
// locked, and gives it back where it was once unlocked.
func TestKeyboardOnly(t *testing.T) {
	man := testenv.Cards(t)
	readers := testenv.PCSC(t)
	origin := startVouch(t, man, testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true}), testenv.DatabaseURL(t))
	_, gp := testenv.InsertCard(t, man, "gp", readers[0])
	browser := testenv.Browser(t, []string{origin}, testenv.OpenSCModule, man.SoftHSMConf)
	page := browser // the first tab: see TestExtensionSignsLogin
	t.Cleanup(func() {
		if t.Failed() {
			screenshot(t, page, "99-failed")
		}
	})

	// Sign in.
	if err := run(page, chromedp.Navigate(origin+"/signin")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, page, `!document.getElementById("signin").disabled`, 30*time.Second)
	noTrap(t, page, "the sign-in page")
	js(t, page, `document.activeElement && document.activeElement.blur(), null`, nil)
	tabTo(t, page, "#signin", 20)
	key(t, page, kb.Tab, true) // the card comes right before the button
	if f := focusNow(t, page); f.Who != "input[name=card]" {
		t.Fatalf("Shift+Tab from the sign-in button: %s", f.Who)
	}
	key(t, page, " ", false)
	var checked bool
	js(t, page, `document.querySelector("input[name=card]").checked`, &checked)
	if !checked {
		t.Error("Space did not choose the card")
	}
	screenshot(t, page, "01-signin-card-focused")
	tabTo(t, page, "#signin", 1)
	screenshot(t, page, "02-signin-button-focused")
	key(t, page, kb.Enter, false)
	pinByKeys(t, browser, testpki.CardPIN, "03-pin-signin")
	waitJS(t, page, `location.pathname === "/vouch" && document.readyState === "complete" && window.VouchPage`, 30*time.Second)

	// Vouch: the code field has the focus at once.
	if f := focusNow(t, page); f.Who != "#code" {
		t.Errorf("the vouch page opens with the focus on %s, not the code", f.Who)
	}
	noTrap(t, page, "the vouch page")
	js(t, page, `document.activeElement && document.activeElement.blur(), null`, nil)
	tabTo(t, page, "#code", 20)
	code := phoneCode(t)
	if err := run(page, chromedp.KeyEvent(code)); err != nil {
		t.Fatal(err)
	}
	tabTo(t, page, "#consent", 2) // the camera's button, where there is one, first
	key(t, page, " ", false)
	js(t, page, `document.getElementById("consent").checked`, &checked)
	if !checked {
		t.Error("Space did not tick the consent")
	}
	tabTo(t, page, "#vouch", 2) // past the day of onset, left empty
	screenshot(t, page, "04-vouch-button-focused")
	key(t, page, kb.Enter, false)
	pinByKeys(t, browser, testpki.CardPIN, "05-pin-vouch")
	waitJS(t, page, `!document.getElementById("done").hidden`, 30*time.Second)
	if got := text(t, page, "done-code"); got != code {
		t.Errorf("vouched for %q, typed %q", got, code)
	}
	if f := focusNow(t, page); f.Who != "#again" {
		t.Errorf("after the vouch the focus is on %s, not the next vouch's button", f.Who)
	}
	screenshot(t, page, "06-vouched")

	// The card pulled: the lock dialog takes the focus and keeps it.
	gp.Remove()
	waitJS(t, page, `!document.getElementById("lock").hidden`, 10*time.Second)
	waitJS(t, page, `document.getElementById("lock").contains(document.activeElement)`, 5*time.Second)
	screenshot(t, page, "07-locked")
	testenv.InsertCard(t, man, "gp", readers[0])
	waitJS(t, page, `!document.getElementById("unlock").disabled`, 15*time.Second)
	if f := focusNow(t, page); f.Who != "#unlock" {
		t.Errorf("the card back, the focus is on %s, not on Unlock", f.Who)
	}
	noTrap(t, page, "the lock dialog")
	tabTo(t, page, "#unlock", 4) // through the browser's own controls, maybe
	screenshot(t, page, "08-unlock-focused")
	key(t, page, kb.Enter, false)
	pinByKeys(t, browser, testpki.CardPIN, "09-pin-unlock")
	waitJS(t, page, `document.getElementById("lock").hidden`, 30*time.Second)
	if f := focusNow(t, page); f.Who != "#again" {
		t.Errorf("unlocked, the focus is on %s, not where it was (#again)", f.Who)
	}
	key(t, page, kb.Enter, false)
	waitJS(t, page, `!document.getElementById("vouch-form-section").hidden && document.activeElement === document.getElementById("code")`, 5*time.Second)
	screenshot(t, page, "10-again")
}

// TestAxeFindsViolations: the axe-core the browser tests inject finds
// what it must — a page without a language, an image without a text, a
// field without a label, text too faint to read — and nothing on the same
// page made right; a check that finds nothing on the back office's pages
// is worth only this much.
func TestAxeFindsViolations(t *testing.T) {
	ctx := plainPage(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if r.URL.Path == "/bad" {
			fmt.Fprint(w, `<!doctype html><html><head><title>bad</title></head><body><main><h1>Bad</h1>
<img src="/x.png"><input id="uzi"><p style="color:#bbb;background:#fff">faint</p></main></body></html>`)
			return
		}
		fmt.Fprint(w, `<!doctype html><html lang="en"><head><title>good</title></head><body><main><h1>Good</h1>
<img src="/x.png" alt="a card"><label for="uzi">UZI number</label><input id="uzi"><p style="color:#333;background:#fff">plain</p></main></body></html>`)
	}))
	t.Cleanup(srv.Close)
	for _, tt := range []struct {
		path string
		want []string
	}{
		{"/bad", []string{"color-contrast", "html-has-lang", "image-alt", "label"}},
		{"/good", nil},
	} {
		if err := run(ctx, chromedp.Navigate(srv.URL+tt.path)); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, v := range axeViolations(t, ctx) {
			got = append(got, v.ID)
		}
		slices.Sort(got)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: axe found (-want +got):\n%s", tt.path, diff)
		}
	}
}
