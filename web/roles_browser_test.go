package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/virtualcard"
	"github.com/vouch-nl/vouch/registry"
)

// The cards of the roles' sessions (internal/testpki's standard set).
const (
	uziGP     = "900000001" // Z, general practitioner: clinician
	uziAdmin  = "900000002" // Z, medical specialist: admin from VOUCH_BOOTSTRAP_ADMINS
	uziNurse  = "900000003" // Z, nurse: asked to be admin, never approved here
	uziNamedN = "900000010" // N, named employee: staff, later auditor
)

// a11yLanguages are the two languages every page is used in.
var a11yLanguages = []string{"en", "nl"}

// tablePages are the back office's pages from its own route table (GET,
// no path parameter, no file): the pages a session holding need's roles
// may open. The table is read from a nil Service: building it touches
// nothing of the service (its handlers are method values).
func tablePages(t *testing.T, holds func(need string) bool) []string {
	t.Helper()
	var out []string
	for _, r := range (*backoffice.Service)(nil).Routes() {
		if r.Method != http.MethodGet || strings.ContainsAny(r.Path, ":*") || fileLike.MatchString(r.Path) || !holds(r.Need) {
			continue
		}
		out = append(out, r.Path)
	}
	return out
}

// fileLike: a path that names a download (stats.csv, audit.json…), not a page.
var fileLike = regexp.MustCompile(`\.[a-z0-9]+$`)

// holder is a session's roles, as the route table's needs name them.
func holder(roles ...string) func(string) bool {
	return func(need string) bool { return need == "" || need == "session" || slices.Contains(roles, need) }
}

// pageWalk opens every page a session may open, in one language: the
// route table's pages for its roles, the header's links, and the links
// of the pages it finds (one of each path: a page of filters is one page
// whatever the filter), and runs axe-core over each, with a screenshot.
type pageWalk struct {
	t      *testing.T
	page   context.Context
	origin string
	shot   int
	seen   map[string][]string // per role: the paths walked, for the report
}

// walk opens start and what it links to, in the page's current language
// lang, as who; it returns the paths opened.
func (w *pageWalk) walk(who, lang string, start []string) []string {
	t := w.t
	t.Helper()
	queue := slices.Clone(start)
	var nav []string
	js(t, w.page, `[...document.querySelectorAll("nav.pages a[href]")].map((a) => a.pathname)`, &nav)
	queue = append(queue, nav...)
	done := map[string]bool{}
	var opened []string
	for len(queue) > 0 && len(opened) < 40 {
		p := queue[0]
		queue = queue[1:]
		u, err := url.Parse(p)
		if err != nil || done[u.Path] {
			continue
		}
		done[u.Path] = true
		// A page, not a download or an answer for the script: asked first.
		var head string
		js(t, w.page, fmt.Sprintf(`fetch(%q, {credentials: "same-origin"}).then((r) => (r.headers.get("Content-Type") || "") + "|" + (r.headers.get("Content-Disposition") || ""))`, p), &head)
		if !strings.HasPrefix(head, "text/html") || strings.Contains(head, "attachment") {
			continue
		}
		if err := run(w.page, chromedp.Navigate(w.origin+p)); err != nil {
			t.Fatalf("%s: %s: %v", who, p, err)
		}
		waitJS(t, w.page, `document.readyState === "complete"`, 20*time.Second)
		var kind struct{ Type, Lang, Page, Path string }
		js(t, w.page, `({Type: document.contentType, Lang: document.documentElement.lang, Page: document.body ? document.body.dataset.page || "" : "", Path: location.pathname})`, &kind)
		if kind.Type != "text/html" || (kind.Path != u.Path && done[kind.Path]) {
			continue // a file, or a page already walked that p sends to
		}
		done[kind.Path] = true
		if kind.Lang != lang {
			t.Errorf("%s: %s is in %q, the session chose %q", who, p, kind.Lang, lang)
		}
		if kind.Page == "signin" {
			// The card list is drawn once the agent answered.
			waitJS(t, w.page, `document.getElementById("cards").textContent.trim() !==
				JSON.parse(document.getElementById("vouch-messages").textContent)["page.cards.looking"]`, 15*time.Second)
		}
		time.Sleep(300 * time.Millisecond) // the page's script has drawn what it draws at load
		opened = append(opened, kind.Path)
		w.shot++
		name := fmt.Sprintf("%02d-%s-%s-%s", w.shot, who, lang, strings.Trim(strings.ReplaceAll(kind.Path, "/", "-"), "-"))
		screenshot(t, w.page, name)
		checkAxe(t, w.page, fmt.Sprintf("%s, %s, %s", who, lang, kind.Path))
		var links []string
		js(t, w.page, `[...document.querySelectorAll("a[href]")].filter((a) => a.origin === location.origin && !a.hasAttribute("download") &&
			!a.pathname.startsWith("/static/") && !a.pathname.startsWith("/api/")).map((a) => a.pathname + a.search)`, &links)
		for _, l := range links {
			if u, err := url.Parse(l); err == nil && !done[u.Path] && !fileLike.MatchString(u.Path) {
				queue = append(queue, l)
			}
		}
	}
	if w.seen == nil {
		w.seen = map[string][]string{}
	}
	w.seen[who+" "+lang] = opened
	return opened
}

// switchLanguage chooses lang with the header's language buttons.
func switchLanguage(t *testing.T, page context.Context, lang string) {
	t.Helper()
	js(t, page, fmt.Sprintf(`[...document.querySelectorAll("form.lang button")].find((b) => b.value === %q).click()`, lang), nil)
	waitJS(t, page, fmt.Sprintf(`document.documentElement.lang === %q && document.readyState === "complete"`, lang), 20*time.Second)
}

// signInAs signs in with the card of holder, the only card in reader, and
// returns once a page of the back office shows who is signed in.
func signInAs(t *testing.T, browser, page context.Context, origin, holder, shot string) {
	t.Helper()
	if err := run(page, chromedp.Navigate(origin+"/signin")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, page, fmt.Sprintf(`[...document.querySelectorAll("#cards label")].some((l) => l.textContent.includes(%q))`, holder), 30*time.Second)
	js(t, page, fmt.Sprintf(`(() => { for (const l of document.querySelectorAll("#cards label")) {
		if (l.textContent.includes(%q)) { l.querySelector("input").click(); } }
		document.getElementById("signin").click(); })()`, holder), nil)
	pinByKeys(t, browser, testpki.CardPIN, shot) // axe on the PIN window, in the page's language
	waitJS(t, page, `location.pathname !== "/signin" && document.readyState === "complete" && document.getElementById("who")`, 30*time.Second)
	if who := text(t, page, "who"); !strings.Contains(who, holder) {
		t.Fatalf("signed in as %q, want %s", who, holder)
	}
}

func signOut(t *testing.T, page context.Context) {
	t.Helper()
	// Locked, the dialog's own button: the header is inert behind it.
	js(t, page, `(() => { const l = document.getElementById("lock"), in_ = document.getElementById("lock-signout");
		(l && !l.hidden && in_ ? in_ : document.getElementById("signout")).click(); })()`, nil)
	waitJS(t, page, `location.pathname === "/signin"`, 10*time.Second)
}

// postForm posts a form of the back office from the page, as its own form
// would (same origin, the session's cookie), and returns the status.
func postForm(t *testing.T, page context.Context, path string, form url.Values) int {
	t.Helper()
	var status int
	js(t, page, fmt.Sprintf(`fetch(%q, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: %q, redirect: "manual"}).then((r) => r.status)`,
		path, form.Encode()), &status)
	return status
}

// TestRolesInTheBrowser signs in as each role — clinician (a Z card),
// staff only (an N card), admin (a Z card from VOUCH_BOOTSTRAP_ADMINS),
// auditor (the N card once the admin granted it on the roles page) — in
// headless Chromium with the real extension, card agent and virtual
// cards, and opens every page the role may open (the route table's, the
// header's and what they link to: pages added to the table later are
// walked too) in English and Dutch, with a screenshot of each and
// axe-core's WCAG 2.1 A/AA rules, which must find nothing; likewise the
// sign-in page signed out, the forbidden page, the lock dialog (over the
// vouch page and the roles page) and the locked page, and each PIN window (in Dutch, the language chosen last).
// On the way the escalations are refused and audited: the
// staff card posting a grant (403, access-refused), the admin granting
// themselves a role (role-self), and the admin approving their own
// request to make another card admin (four eyes: it stays pending).
func TestRolesInTheBrowser(t *testing.T) {
	man := testenv.Cards(t)
	readers := testenv.PCSC(t)
	dbURL := testenv.DatabaseURL(t)
	t.Setenv("VOUCH_BOOTSTRAP_ADMINS", uziAdmin) // startVouch passes its environment on
	origin := startVouch(t, man, testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true}), dbURL)
	browser := testenv.Browser(t, []string{origin}, testenv.OpenSCModule, man.SoftHSMConf)
	page := browser // the first tab: see TestExtensionSignsLogin
	t.Cleanup(func() {
		if t.Failed() {
			screenshot(t, page, "99-failed")
		}
	})
	w := &pageWalk{t: t, page: page, origin: origin}
	audited := func(sql string, args ...any) int {
		t.Helper()
		return countRows(t, dbURL, sql, args...)
	}
	card := func(name string) *virtualcard.Inserted {
		t.Helper()
		_, in := testenv.InsertCard(t, man, name, readers[0])
		return in
	}

	// Signed out: the sign-in page and the table's public pages.
	if err := run(page, chromedp.Navigate(origin+"/signin")); err != nil {
		t.Fatal(err)
	}
	anyone := func(need string) bool { return need == "" }
	for _, lang := range a11yLanguages {
		switchLanguage(t, page, lang)
		w.walk("signed-out", lang, tablePages(t, anyone))
	}

	// The clinician: the vouch page and their activity; then the card
	// pulled: the lock dialog and the locked page, in both languages.
	gp := card("gp")
	signInAs(t, browser, page, origin, "A. Huisarts", "pin-clinician")
	// One vouch first, so that the pages of counts (quota, statistics,
	// the audit trail) show a row, not only their empty state.
	waitJS(t, page, `location.pathname === "/vouch" && window.VouchPage`, 20*time.Second)
	js(t, page, fmt.Sprintf(`(() => { document.getElementById("code").value = %q; document.getElementById("consent").checked = true;
		document.getElementById("vouch").click(); })()`, phoneCode(t)), nil)
	pinByKeys(t, browser, testpki.CardPIN, "pin-clinician-vouch")
	waitJS(t, page, `!document.getElementById("done").hidden`, 30*time.Second)
	for _, lang := range a11yLanguages {
		switchLanguage(t, page, lang)
		opened := w.walk("clinician", lang, tablePages(t, holder("staff", "clinician")))
		for _, p := range []string{"/vouch", "/staff"} {
			if !slices.Contains(opened, p) {
				t.Errorf("clinician, %s: %s not among the pages walked %v", lang, p, opened)
			}
		}
		if slices.Contains(opened, "/roles") {
			t.Errorf("clinician, %s: the roles page was walked: %v", lang, opened)
		}
	}
	if err := run(page, chromedp.Navigate(origin+"/vouch")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, page, `document.body.dataset.page === "vouch" && window.VouchPage`, 20*time.Second)
	gp.Remove()
	waitJS(t, page, `!document.getElementById("lock").hidden`, 15*time.Second)
	screenshot(t, page, "lock-dialog-nl")
	var bg string
	js(t, page, `getComputedStyle(document.getElementById("lock")).backgroundColor`, &bg)
	if !strings.HasPrefix(bg, "rgb(") { // rgba(…): the vouch's code shows through
		t.Errorf("the lock lets the page show through: its background is %s", bg)
	}
	checkAxe(t, page, "clinician, nl, the lock dialog")
	for _, lang := range a11yLanguages {
		if err := run(page, chromedp.Navigate(origin+"/vouch")); err != nil {
			t.Fatal(err)
		}
		waitJS(t, page, `document.body.dataset.page === "locked" && !document.getElementById("lock").hidden`, 15*time.Second)
		switchLanguage(t, page, lang)
		waitJS(t, page, `document.body.dataset.page === "locked" && !document.getElementById("lock").hidden`, 15*time.Second)
		screenshot(t, page, "locked-page-"+lang)
		checkAxe(t, page, "clinician, "+lang+", the locked page")
	}
	signOut(t, page)
	testenv.WaitCard(t, readers[0], false)

	// Staff only (the N card): its activity; the roles page is refused
	// (403, the forbidden page), and so is a grant posted by hand.
	named := card("staff")
	signInAs(t, browser, page, origin, "G. Medewerker", "pin-staff")
	refusedBefore := audited(`select count(*) from audit_log where action = 'access-refused' and actor = $1 and subject = 'POST /roles/grant'`, uziNamedN)
	for _, lang := range a11yLanguages {
		switchLanguage(t, page, lang)
		opened := w.walk("staff", lang, tablePages(t, holder("staff")))
		if slices.Contains(opened, "/vouch") || slices.Contains(opened, "/roles") {
			t.Errorf("staff, %s: walked %v", lang, opened)
		}
		if err := run(page, chromedp.Navigate(origin+"/roles")); err != nil {
			t.Fatal(err)
		}
		waitJS(t, page, `document.body.dataset.page === "forbidden" && document.readyState === "complete"`, 10*time.Second)
		screenshot(t, page, "forbidden-"+lang)
		checkAxe(t, page, "staff, "+lang+", the forbidden page")
	}
	if st := postForm(t, page, "/roles/grant", url.Values{"uzi": {uziNamedN}, "role": {"admin"}}); st != http.StatusForbidden {
		t.Errorf("the staff card's grant of admin to itself: %d, want 403", st)
	}
	if st := postForm(t, page, "/roles/grant", url.Values{"uzi": {uziGP}, "role": {"auditor"}}); st != http.StatusForbidden {
		t.Errorf("the staff card's grant of auditor: %d, want 403", st)
	}
	if n := audited(`select count(*) from audit_log where action = 'access-refused' and actor = $1 and subject = 'POST /roles/grant'`, uziNamedN); n != refusedBefore+2 {
		t.Errorf("%d access-refused audit rows of the staff card's grants, want %d", n, refusedBefore+2)
	}
	if n := audited(`select count(*) from backoffice_roles where uzi_number = $1`, uziNamedN); n != 0 {
		t.Errorf("the staff card's own grant gave it %d roles", n)
	}
	signOut(t, page)
	named.Remove()
	testenv.WaitCard(t, readers[0], false)

	// The admin: every page; on the roles page, in Dutch, the forms used
	// as a person would: auditor granted to the N card; admin asked for
	// the nurse (pending: four eyes); the admin's own approval of it and
	// a grant to themselves refused and audited.
	doctor := card("doctor")
	signInAs(t, browser, page, origin, "B. Specialist", "pin-admin")
	for _, lang := range a11yLanguages {
		switchLanguage(t, page, lang)
		opened := w.walk("admin", lang, tablePages(t, holder("staff", "clinician", "auditor", "admin")))
		if !slices.Contains(opened, "/roles") {
			t.Errorf("admin, %s: the roles page not among %v", lang, opened)
		}
	}
	grant := func(uziNo, role string) {
		t.Helper()
		if err := run(page, chromedp.Navigate(origin+"/roles")); err != nil {
			t.Fatal(err)
		}
		waitJS(t, page, `document.body.dataset.page === "roles" && document.readyState === "complete"`, 10*time.Second)
		// The page before the form's answer is marked: the answer is a
		// document without the mark.
		js(t, page, fmt.Sprintf(`(() => { window.vouchOldPage = true; document.getElementById("grant-uzi").value = %q;
			document.getElementById("grant-role").value = %q; document.getElementById("grant-uzi").form.requestSubmit(); })()`, uziNo, role), nil)
		waitJS(t, page, `!window.vouchOldPage && document.body.dataset.page === "roles" && document.readyState === "complete"`, 20*time.Second)
	}
	grant(uziNamedN, "auditor")
	if got := text(t, page, "roles-done"); got == "" {
		t.Errorf("granting auditor: no word of it (problem %q)", text(t, page, "roles-problem"))
	}
	screenshot(t, page, "roles-granted-auditor-nl")
	grant(uziNurse, "admin")
	if got := text(t, page, "role-requests"); !strings.Contains(got, uziNurse) {
		t.Errorf("admin asked for %s: the pending requests say %q", uziNurse, got)
	}
	screenshot(t, page, "roles-admin-pending-nl")
	checkAxe(t, page, "admin, nl, the roles page with a pending request")
	fourEyes := audited(`select count(*) from audit_log where action = 'role-refused' and reason = 'role-four-eyes' and actor = $1 and subject = $2`, uziAdmin, uziNurse)
	if st := postForm(t, page, "/roles/approve", url.Values{"uzi": {uziNurse}, "role": {"admin"}}); st != http.StatusForbidden {
		t.Errorf("the admin approving their own request: %d, want 403", st)
	}
	if n := audited(`select count(*) from audit_log where action = 'role-refused' and reason = 'role-four-eyes' and actor = $1 and subject = $2`, uziAdmin, uziNurse); n != fourEyes+1 {
		t.Errorf("%d four-eyes refusals audited, want %d", n, fourEyes+1)
	}
	if n := audited(`select count(*) from backoffice_roles where uzi_number = $1`, uziNurse); n != 0 {
		t.Errorf("the nurse holds %d roles after one admin's approval of their own request", n)
	}
	self := audited(`select count(*) from audit_log where action = 'role-refused' and reason = 'role-self' and actor = $1 and subject = $1`, uziAdmin)
	grant(uziAdmin, "auditor")
	if got := text(t, page, "roles-problem"); got == "" {
		t.Error("a grant to oneself: the page says nothing")
	} else {
		t.Logf("a grant to oneself, in Dutch: %q", got)
	}
	screenshot(t, page, "roles-self-refused-nl")
	checkAxe(t, page, "admin, nl, the roles page refusing a grant")
	if n := audited(`select count(*) from audit_log where action = 'role-refused' and reason = 'role-self' and actor = $1 and subject = $1`, uziAdmin); n != self+1 {
		t.Errorf("%d self-grant refusals audited, want %d", n, self+1)
	}
	if n := audited(`select count(*) from backoffice_roles where uzi_number = $1 and role = 'auditor'`, uziAdmin); n != 0 {
		t.Error("the admin granted themselves auditor")
	}
	// The card pulled on the roles page: it locks, as the vouch page does;
	// the dialog's own sign-out ends the session.
	doctor.Remove()
	waitJS(t, page, `!document.getElementById("lock").hidden`, 15*time.Second)
	screenshot(t, page, "roles-locked-nl")
	checkAxe(t, page, "admin, nl, the lock dialog over the roles page")
	signOut(t, page)
	testenv.WaitCard(t, readers[0], false)

	// The auditor: the N card again, now holding auditor.
	card("staff")
	signInAs(t, browser, page, origin, "G. Medewerker", "pin-auditor")
	if who := text(t, page, "who"); !strings.Contains(strings.ToLower(who), "audit") {
		t.Errorf("the N card after the grant: %q", who)
	}
	for _, lang := range a11yLanguages {
		switchLanguage(t, page, lang)
		opened := w.walk("auditor", lang, tablePages(t, holder("staff", "auditor")))
		if slices.Contains(opened, "/roles") || slices.Contains(opened, "/vouch") {
			t.Errorf("auditor, %s: walked %v", lang, opened)
		}
	}
	signOut(t, page)
	for who, paths := range w.seen {
		t.Logf("%s: %v", who, paths)
	}
	if dir := os.Getenv("VOUCH_ARTIFACTS"); dir != "" {
		t.Logf("screenshots in %s", artifacts(t))
	}
}
