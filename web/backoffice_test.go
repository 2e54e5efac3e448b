package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/virtualcard"
	"github.com/vouch-nl/vouch/registry"
)

// contact is the back office's text of whom to contact, in startVouch.
const contact = "Call the Vouch desk: 020 123 45 67."

// startVouch runs `vouch all` — the back office, the register's sync, the
// embedded bus — as a deployment would, on a free loopback port, with the
// test PKI, the register ldap and the database at dbURL. It returns the
// back office's origin; the process stops with the test, and its log is
// kept with the artifacts.
func startVouch(t *testing.T, man *testpki.Manifest, ldap *testenv.LDAPServer, dbURL string) string {
	t.Helper()
	bin := testenv.Build(t, "./cmd/vouch")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	origin := "http://" + addr
	// Readiness is on the operations listener; the phone API on a port of
	// its own.
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	ops := free()
	cmd := exec.Command(bin, "all")
	cmd.Env = os.Environ()
	for _, kv := range man.Env() {
		cmd.Env = append(cmd.Env, kv[0]+"="+kv[1])
	}
	cmd.Env = append(cmd.Env, "DATABASE_URL="+dbURL, "VOUCH_HTTP_ADDR="+addr, "VOUCH_BACKOFFICE_ORIGIN="+origin,
		"VOUCH_OPS_LISTEN="+ops, "VOUCH_INGEST_ADDR="+free(),
		"VOUCH_BUS_DIR="+t.TempDir(), "VOUCH_HSM_PIN="+man.Backend.PIN, "VOUCH_BACKOFFICE_CONTACT="+contact,
		"VOUCH_REGISTRY_URL="+ldap.URL, "VOUCH_REGISTRY_BIND_DN="+ldap.BindDN, "VOUCH_REGISTRY_BIND_PASSWORD="+ldap.BindPassword)
	logFile, err := os.Create(filepath.Join(artifacts(t), "vouch.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + ops + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return origin
			}
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("vouch all stopped: %v\n%s", err, log)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("vouch all did not become ready in 60 s")
		}
	}
}

// js evaluates expr in ctx's page, awaiting a promise, and decodes its
// value into out (when out is not nil).
func js(t *testing.T, ctx context.Context, expr string, out any) {
	t.Helper()
	err := run(ctx, chromedp.ActionFunc(func(ctx context.Context) error {
		res, exc, err := runtime.Evaluate(expr).WithAwaitPromise(true).WithReturnByValue(true).Do(ctx)
		switch {
		case err != nil:
			return err
		case exc != nil:
			return fmt.Errorf("%s", exc.Text)
		case out == nil:
			return nil
		}
		return json.Unmarshal(res.Value, out)
	}))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
}

// waitJS waits until expr is true in ctx's page, for at most d, and
// returns how long that took.
func waitJS(t *testing.T, ctx context.Context, expr string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		var ok bool
		js(t, ctx, "(() => { try { return !!("+expr+"); } catch (e) { return false; } })()", &ok)
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > d {
			var problem string
			js(t, ctx, `(document.getElementById("problem") || {}).textContent || ""`, &problem)
			t.Fatalf("not within %s: %s (page says %q)", d, expr, problem)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func text(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	var s string
	js(t, ctx, fmt.Sprintf(`(document.getElementById(%q) || {}).textContent || ""`, id), &s)
	return strings.TrimSpace(s)
}

// typePIN waits for the extension's PIN window, checks what it shows, keeps
// a screenshot, and types the PIN into the window's own form.
func typePIN(t *testing.T, browser context.Context, pin string, want map[string]string, shot string) {
	t.Helper()
	win, cancel := pinWindow(t, browser)
	defer cancel()
	if err := run(win, chromedp.WaitVisible("#pin")); err != nil {
		t.Fatal(err)
	}
	for id, w := range want {
		var got string
		if err := run(win, chromedp.Text("#"+id, &got)); err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(got) != w {
			t.Errorf("PIN window #%s shows %q, want %q", id, got, w)
		}
	}
	screenshot(t, win, shot)
	if err := run(win, chromedp.SendKeys("#pin", pin)); err != nil {
		t.Fatalf("typing the PIN: %v", err)
	}
	// Pressed from a timer: the window closes as it submits, and an action
	// still waiting on it would wait for a window that is gone.
	js(t, win, `setTimeout(() => document.getElementById("sign").click(), 0), null`, nil)
	pinHandedOver(t, browser)
}

// pinHandedOver waits until the PIN window's form handed the PIN to the
// extension's worker (nothing pending there any more), for 10 s at most.
func pinHandedOver(t *testing.T, browser context.Context) {
	t.Helper()
	sw := serviceWorker(t, browser)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		js(t, sw, `pending.size`, &waiting)
		if waiting == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the PIN window's form did not hand the PIN to the extension")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBackofficeInTheBrowser is the clinician's morning, in headless
// Chromium with the real extension, the real card agent, pcscd with a
// virtual reader and the GP's card (its keys on SoftHSM), and `vouch all`:
// sign in, vouch for a phone's code, pull the card and see the page lock,
// put it back and unlock (a wrong PIN first, which says how many tries are
// left); then the staff card signs in to the staff view only, and the
// suspended clinician is refused with the reason. Screenshots of each step
// are kept in .vouch/artifacts.
func TestBackofficeInTheBrowser(t *testing.T) {
	man := testenv.Cards(t)
	readers := testenv.PCSC(t)
	// make demo-browser runs this session against the demo's back office.
	origin, dbURL := os.Getenv("VOUCH_BROWSER_TARGET"), os.Getenv("DATABASE_URL")
	if origin == "" {
		dbURL = testenv.DatabaseURL(t)
		origin = startVouch(t, man, testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true}), dbURL)
	} else if dbURL == "" {
		dbURL = database.DefaultURL
	}
	published := countRows(t, dbURL, `select count(*) from authorizations where published_at is not null`)
	suspendedRows := countRows(t, dbURL, `select count(*) from audit_log where action = 'sign-in-refused' and reason = 'license-suspended'`)
	_, gpCard := testenv.InsertCard(t, man, "gp", readers[0])
	browser := testenv.Browser(t, []string{origin}, testenv.OpenSCModule, man.SoftHSMConf)
	page := browser // the first tab: see TestExtensionSignsLogin
	t.Cleanup(func() {
		if t.Failed() {
			screenshot(t, page, "99-failed")
			var state string
			js(t, page, `JSON.stringify({path: location.pathname, status: (document.getElementById("status") || {}).textContent,
				problem: (document.getElementById("problem") || {}).textContent, cards: (document.getElementById("cards") || {}).textContent})`, &state)
			t.Logf("the page when the test failed: %s", state)
		}
	})

	// Sign in with the GP's card.
	if err := run(page, chromedp.Navigate(origin+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, page, `location.pathname === "/signin" && !document.getElementById("signin").disabled`, 30*time.Second)
	if got := text(t, page, "cards"); !strings.Contains(got, "A. Huisarts") || !strings.Contains(got, readers[0].Name) {
		t.Errorf("card list: %q", got)
	}
	screenshot(t, page, "01-signin")
	js(t, page, `document.getElementById("signin").click()`, nil)
	typePIN(t, browser, testpki.CardPIN, map[string]string{"origin": origin, "holder": "A. Huisarts"}, "02-pin-signin")
	waitJS(t, page, `location.pathname === "/vouch" && document.readyState === "complete" && document.getElementById("code")`, 30*time.Second)
	if who := text(t, page, "who"); !strings.Contains(who, "A. Huisarts") {
		t.Errorf("signed in as %q", who)
	}
	screenshot(t, page, "03-vouch-page")
	// The page reports the card it sees: the session's heartbeat.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if countRows(t, dbURL, `select count(*) from backoffice_sessions where uzi_number = '900000001' and heartbeat_at > created_at`) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Error("the vouch page sent no heartbeat while its card was in the reader")
			break
		}
	}
	// A mistyped code is pointed out as it is typed.
	if err := run(page, chromedp.SendKeys("#code", "0000-0000-0000-0000-1")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, page, `!document.getElementById("code-problem").hidden`, 2*time.Second)
	js(t, page, `document.getElementById("code").value = ""`, nil)

	// Vouch for the code of a phone made by cmd/phone.
	code := phoneCode(t)
	js(t, page, fmt.Sprintf(`(() => { document.getElementById("code").value = %q; document.getElementById("consent").checked = true;
		document.getElementById("vouch").click(); })()`, code), nil)
	typePIN(t, browser, testpki.CardPIN, map[string]string{"origin": origin, "code": code}, "04-pin-vouch")
	waitJS(t, page, `!document.getElementById("done").hidden`, 30*time.Second)
	if got := text(t, page, "done-code"); got != code {
		t.Errorf("confirmation shows code %q, want %q", got, code)
	}
	screenshot(t, page, "05-vouched")
	// Marked published once the bus acknowledged, off the request.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		n := countRows(t, dbURL, `select count(*) from authorizations where published_at is not null`)
		if n == published+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d published authorizations, want %d", n, published+1)
			break
		}
	}

	// Pull the card: the page locks within 2 seconds.
	gpCard.Remove()
	pulled := time.Now()
	waitJS(t, page, `!document.getElementById("lock").hidden`, 10*time.Second)
	took := time.Since(pulled)
	t.Logf("locked %s after the card was pulled", took)
	if took > 2*time.Second {
		t.Errorf("the page locked %s after the card was pulled; at most 2 s", took)
	}
	screenshot(t, page, "06-locked")
	waitJS(t, page, `document.getElementById("unlock").disabled`, 5*time.Second)
	// The lock is the server's: the page loaded again is the locked page,
	// with nothing of the card holder; it unlocks from there.
	if err := run(page, chromedp.Navigate(origin+"/vouch")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, page, `document.body.dataset.page === "locked" && !document.getElementById("lock").hidden`, 10*time.Second)
	var shown string
	js(t, page, `document.documentElement.outerHTML`, &shown)
	if strings.Contains(shown, "A. Huisarts") || strings.Contains(shown, "900000001") {
		t.Error("the locked page shows the card holder")
	}
	waitJS(t, page, `document.getElementById("unlock").disabled`, 5*time.Second)

	// Put it back: unlock, a wrong PIN first.
	testenv.InsertCard(t, man, "gp", readers[0])
	waitJS(t, page, `!document.getElementById("unlock").disabled`, 10*time.Second)
	js(t, page, `document.getElementById("unlock").click()`, nil)
	typePIN(t, browser, "000000", map[string]string{"origin": origin}, "07-pin-unlock")
	waitJS(t, page, `document.getElementById("lock-status").textContent.includes("Wrong PIN")`, 30*time.Second)
	// The card tells its tries only when one is left (PIV: the PIN
	// counter's low mark); a second wrong PIN says so.
	waitJS(t, page, `!document.getElementById("unlock").disabled`, 10*time.Second)
	js(t, page, `document.getElementById("lock-status").textContent = ""; document.getElementById("unlock").click()`, nil)
	typePIN(t, browser, "000000", nil, "08-pin-unlock-wrong-again")
	waitJS(t, page, `document.getElementById("lock-status").textContent.includes("Wrong PIN")`, 30*time.Second)
	if got := text(t, page, "lock-status"); !strings.Contains(got, "One try left") {
		t.Errorf("the second wrong PIN says %q: no word of the one try left", got)
	}
	screenshot(t, page, "08-wrong-pin")
	waitJS(t, page, `!document.getElementById("unlock").disabled`, 10*time.Second)
	js(t, page, `document.getElementById("unlock").click()`, nil)
	typePIN(t, browser, testpki.CardPIN, nil, "09-pin-unlock-again")
	waitJS(t, page, `document.getElementById("lock").hidden`, 30*time.Second)
	screenshot(t, page, "10-unlocked")

	// Sign out; the staff card signs in to the staff view and cannot vouch.
	js(t, page, `document.getElementById("signout").click()`, nil)
	waitJS(t, page, `location.pathname === "/signin"`, 10*time.Second)
	readerCard := func(name string) *virtualcard.Inserted {
		t.Helper()
		_, in := testenv.InsertCard(t, man, name, readers[1])
		if err := run(page, chromedp.Navigate(origin+"/signin")); err != nil {
			t.Fatal(err)
		}
		waitJS(t, page, fmt.Sprintf(`[...document.querySelectorAll("#cards label")].some((l) => l.textContent.includes(%q))`, readers[1].Name), 30*time.Second)
		js(t, page, fmt.Sprintf(`(() => { for (const l of document.querySelectorAll("#cards label")) {
			if (l.textContent.includes(%q)) { l.querySelector("input").click(); } }
			document.getElementById("signin").click(); })()`, readers[1].Name), nil)
		return in
	}
	staff := readerCard("staff")
	typePIN(t, browser, testpki.CardPIN, map[string]string{"holder": "G. Medewerker"}, "11-pin-staff")
	waitJS(t, page, `location.pathname === "/staff" && document.readyState === "complete" && document.getElementById("who")`, 30*time.Second)
	if got := text(t, page, "who"); !strings.Contains(got, "staff") {
		t.Errorf("staff signed in as %q", got)
	}
	screenshot(t, page, "12-staff-view")
	if err := run(page, chromedp.Navigate(origin+"/vouch")); err != nil {
		t.Fatal(err)
	}
	// The route table: a staff card lacks clinician, so the vouch page is refused (403).
	waitJS(t, page, `document.body.dataset.page === "forbidden" && document.readyState === "complete"`, 10*time.Second)
	if err := run(page, chromedp.Navigate(origin+"/staff")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, page, `location.pathname === "/staff" && document.readyState === "complete"`, 10*time.Second)
	js(t, page, `document.getElementById("signout").click()`, nil)
	waitJS(t, page, `location.pathname === "/signin"`, 10*time.Second)
	staff.Remove()

	// The suspended clinician is refused at sign-in, with the reason.
	readerCard("suspended")
	typePIN(t, browser, testpki.CardPIN, nil, "13-pin-suspended")
	waitJS(t, page, `!document.getElementById("problem").hidden`, 30*time.Second)
	if got := text(t, page, "problem"); !strings.Contains(got, "suspended") {
		t.Errorf("the suspended clinician is told %q", got)
	}
	// One message, the true one, with whom to contact; the card list stays.
	if got := text(t, page, "problem"); os.Getenv("VOUCH_BROWSER_TARGET") == "" && !strings.Contains(got, contact) {
		t.Errorf("the suspended clinician is not told whom to contact: %q", got)
	}
	time.Sleep(6 * time.Second) // what the page would show after its next look at the readers
	if got := text(t, page, "cards"); strings.Contains(got, "not installed") || !strings.Contains(got, readers[1].Name) {
		t.Errorf("beside the refusal the card list says %q", got)
	}
	screenshot(t, page, "14-suspended-refused")
	if n := countRows(t, dbURL, `select count(*) from audit_log where action = 'sign-in-refused' and reason = 'license-suspended'`); n != suspendedRows+1 {
		t.Errorf("%d audit rows of the suspended sign-in", n)
	}
}

// phoneCode makes a phone key with cmd/phone and returns its code.
func phoneCode(t *testing.T) string {
	t.Helper()
	bin := testenv.Build(t, "./cmd/phone")
	key := filepath.Join(t.TempDir(), "phone.key")
	if out, err := exec.Command(bin, "new", "-key", key).CombinedOutput(); err != nil {
		t.Fatalf("phone new: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "code", "-key", key).Output()
	if err != nil {
		t.Fatalf("phone code: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "code" {
			return f[1]
		}
	}
	t.Fatalf("phone code printed no code: %s", out)
	return ""
}

func countRows(t *testing.T, dbURL, sql string, args ...any) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
