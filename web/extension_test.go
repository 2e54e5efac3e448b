package web_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
	"github.com/vouch-nl/vouch/web"
)

// testPage serves the page library and a page that uses it, on a loopback
// address of its own (host is 127.0.0.1 or localhost: two origins), and
// more pages at the paths of extra.
func testPage(t *testing.T, host string, extra ...map[string]string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	static, _ := fs.Sub(web.Static, "static")
	mux.Handle("/static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	for _, pages := range extra {
		for path, html := range pages {
			mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, html) })
		}
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><html><head><meta charset="utf-8"><title>test</title>
<script src="/static/vouchcard.js"></script></head><body><p id="ready">ready</p></body></html>`)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return "http://" + host + ":" + port
}

// artifacts is where the browser tests keep their screenshots.
func artifacts(t *testing.T) string {
	dir := os.Getenv("VOUCH_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", ".vouch", "artifacts")
	}
	dir = filepath.Join(dir, t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	var png []byte
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Run(sctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(artifacts(t), name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

type reply struct {
	Type        string `json:"type"`
	Error       string `json:"error"`
	TriesLeft   int    `json:"triesLeft"`
	Signature   []byte `json:"signature"`
	Certificate []byte `json:"certificate"`
	Cards       []struct {
		Token, Reader, Holder string
	} `json:"cards"`
}

// stepTimeout bounds each browser step, so that a page that never answers
// fails the test with its step named, instead of hanging the suite.
const stepTimeout = 60 * time.Second

// run runs actions in ctx's tab, within stepTimeout.
func run(ctx context.Context, actions ...chromedp.Action) error {
	rctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	return chromedp.Run(rctx, actions...)
}

func eval(t *testing.T, ctx context.Context, js string) reply {
	t.Helper()
	var r reply
	// Runtime.evaluate itself, not chromedp.Evaluate: that one waits for
	// the frame's execution context as chromedp tracked it, and with the
	// extension's content script in the page (a second, isolated world)
	// this Chromium leaves it waiting forever.
	err := run(ctx, chromedp.ActionFunc(func(ctx context.Context) error {
		res, exc, err := runtime.Evaluate(js).WithAwaitPromise(true).WithReturnByValue(true).Do(ctx)
		switch {
		case err != nil:
			return err
		case exc != nil:
			return fmt.Errorf("%s", exc.Text)
		}
		return json.Unmarshal(res.Value, &r)
	}))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return r
}

// serviceWorker is the context of the extension's service worker.
func serviceWorker(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	return attach(t, browser, "the extension's service worker", func(ti *target.Info) bool {
		return ti.Type == "service_worker" && strings.HasSuffix(ti.URL, "/background.js")
	})
}

// pinWindow waits for the extension's PIN window and returns its context.
func pinWindow(t *testing.T, browser context.Context) (context.Context, context.CancelFunc) {
	t.Helper()
	return attach(t, browser, "PIN window", func(ti *target.Info) bool { return strings.HasSuffix(ti.URL, "/pin.html") }), func() {}
}

// TestExtensionSignsLogin: a page of the back office's origin lists the
// cards and has the GP's card sign a login challenge, the PIN typed in the
// extension's own window; the signature verifies for that origin. A page of
// another origin gets nothing.
func TestExtensionSignsLogin(t *testing.T) {
	man := testenv.Cards(t)
	origin := testPage(t, "127.0.0.1")
	other := testPage(t, "localhost")
	browser := testenv.Browser(t, []string{origin}, man.Module, man.SoftHSMConf)
	// The browser's first tab: a tab opened through CDP next to the
	// extension never answers Runtime.evaluate with this Chromium (156).
	page := browser
	if err := run(page, chromedp.Navigate(origin), chromedp.WaitVisible("#ready")); err != nil {
		t.Fatal(err)
	}
	r := eval(t, page, `VouchCard.cards()`)
	var gp string
	for _, c := range r.Cards {
		if c.Reader == "vouch-gp" {
			gp = c.Token
		}
	}
	if r.Type != "cards" || gp == "" {
		t.Fatalf("cards: %+v", r)
	}

	challenge := make([]byte, 32)
	rand.Read(challenge)
	eval(t, page, fmt.Sprintf(`window.signing = VouchCard.signLogin(%q, %q); ({})`, gp, base64.StdEncoding.EncodeToString(challenge)))
	pin, cancelPIN := pinWindow(t, browser)
	defer cancelPIN()
	var shown string
	if err := run(pin, chromedp.WaitVisible("#pin"), chromedp.Text("#origin", &shown)); err != nil {
		t.Fatal(err)
	}
	if shown != origin {
		t.Errorf("PIN window shows origin %q, want %q", shown, origin)
	}
	screenshot(t, pin, "01-pin-window")
	// Headless Chromium 156 answers no script and no input in the popup
	// (DOM queries only), so the PIN reaches the worker as the window's
	// form would hand it over.
	eval(t, serviceWorker(t, browser), fmt.Sprintf(`(() => { for (const [, p] of pending) p.resolve(%q); return {}; })()`, testpki.CardPIN))
	r = eval(t, page, `window.signing`)
	if r.Type != "signature" {
		t.Fatalf("sign: %+v", r)
	}
	v := verifier(t, man)
	if res, err := v.VerifyLogin(r.Certificate, origin, challenge, r.Signature, time.Now()); err != nil || res.Identity.UZI != "900000001" {
		t.Fatalf("VerifyLogin: %v", err)
	}

	// Another origin (another host name here): the extension's content
	// script is not in its pages, so nothing answers it at all — not a
	// refusal, nothing; the page library gives up after its own wait.
	if err := run(page, chromedp.Navigate(other), chromedp.WaitVisible("#ready")); err != nil {
		t.Fatal(err)
	}
	if got := answers(t, page, 500*time.Millisecond); len(got) != 0 {
		t.Fatalf("another origin got answers: %v", got)
	}
	if r := eval(t, page, `VouchCard.cards()`); r.Error != "extension-missing" || len(r.Cards) != 0 {
		t.Fatalf("another origin: %+v", r)
	}
}

func verifier(t *testing.T, man *testpki.Manifest) *protocol.Verifier {
	t.Helper()
	files := man.TrustFiles()
	cfg := trust.Config{Roots: files.Roots, CAs: files.CAs(), CRLs: files.CRLs, Jurisdiction: "NL", Profile: "test"}
	tr, err := cfg.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestExtensionPINPadConfirms: with a reader that has a PIN pad, the
// extension still shows its own window with who asks, whose card and the
// code about to be signed, and the agent is asked to sign only after the
// person confirmed there (a click: the PIN is then typed on the reader);
// a cancel signs nothing. vpcd has no PIN pad, so the worker's view of
// the agent's card list is marked pinPad here (at the native boundary);
// the window, the worker and the agent are the real ones.
func TestExtensionPINPadConfirms(t *testing.T) {
	man := testenv.Cards(t)
	origin := testPage(t, "127.0.0.1")
	browser := testenv.Browser(t, []string{origin}, man.Module, man.SoftHSMConf)
	page := browser
	if err := run(page, chromedp.Navigate(origin), chromedp.WaitVisible("#ready")); err != nil {
		t.Fatal(err)
	}
	sw := worker(t, browser)
	// Every request the worker sends the agent is recorded (its type, and
	// whether a PIN went with it); the cards are listed with a PIN pad.
	if err := evalJSON(sw, 10*time.Second, `(() => {
		self.sent = [];
		const real = native;
		native = async (req) => {
			sent.push(req.type + (req.pin === undefined ? "" : req.pin === "" ? ":no-pin" : ":pin"));
			const r = await real(req);
			if (req.type === "cards" && r && Array.isArray(r.cards)) r.cards.forEach((c) => { c.pinPad = true; });
			return r;
		};
		return {};
	})()`, nil); err != nil {
		t.Fatal(err)
	}
	var listed struct {
		Type  string
		Cards []struct {
			Token, Reader string
			PINPad        bool   `json:"pinPad"`
			SignCert      []byte `json:"signCert"`
		}
	}
	if err := evalJSON(page, stepTimeout, `VouchCard.cards()`, &listed); err != nil {
		t.Fatal(err)
	}
	var gp string
	var signCert []byte
	for _, c := range listed.Cards {
		if c.Reader == "vouch-gp" && c.PINPad {
			gp, signCert = c.Token, c.SignCert
		}
	}
	if gp == "" {
		t.Fatalf("cards: %+v", listed)
	}
	phone, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	code := phonecode.FromPublicKey(phone)
	st, err := protocol.NewStatement("NL", [16]byte{7}, code, time.Now(), "", signCert)
	if err != nil {
		t.Fatal(err)
	}
	statement := base64.StdEncoding.EncodeToString(st.Marshal())
	sent := func() []string {
		t.Helper()
		var s []string
		if err := evalJSON(sw, 10*time.Second, `sent`, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	for _, tc := range []struct {
		name, button string
		want         string // the page's answer: the agent's, or the extension's cancel
		signed       bool
	}{
		// The card is no PIN pad's: the agent, asked without a PIN,
		// answers pin-needed — after the click, and only then.
		{"confirmed", "sign", "pin-needed", true},
		{"cancelled", "cancel", "cancelled", false},
	} {
		if err := evalJSON(sw, 10*time.Second, `(() => { sent.length = 0; return {}; })()`, nil); err != nil {
			t.Fatal(err)
		}
		if err := evalJSON(page, 10*time.Second, fmt.Sprintf(`(() => { window.signing = VouchCard.signStatement(%q, %q); return {}; })()`, gp, statement), nil); err != nil {
			t.Fatal(err)
		}
		win, cancel := pinWindow(t, browser)
		if err := run(win, chromedp.WaitVisible("#pinpad"), chromedp.WaitNotVisible("#pin")); err != nil {
			t.Fatalf("%s: the PIN pad's window: %v", tc.name, err)
		}
		for id, want := range map[string]string{"origin": origin, "holder": "A. Huisarts", "code": code.String(), "sign": "Confirm"} {
			var got string
			if err := run(win, chromedp.Text("#"+id, &got, chromedp.ByQuery)); err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(got) != want {
				t.Errorf("%s: the window's #%s shows %q, want %q", tc.name, id, got, want)
			}
		}
		if tc.name == "confirmed" {
			screenshot(t, win, "pin-pad-window")
		}
		// Waiting for the person: nothing is signed meanwhile.
		time.Sleep(time.Second)
		if s := sent(); slices.ContainsFunc(s, func(r string) bool { return strings.HasPrefix(r, "sign") }) {
			t.Fatalf("%s: the agent was asked to sign before the person confirmed: %v", tc.name, s)
		}
		// Pressed from a timer: the window closes as it answers.
		if err := evalJSON(win, 10*time.Second, fmt.Sprintf(`(() => { setTimeout(() => document.getElementById(%q).click(), 0); return {}; })()`, tc.button), nil); err != nil {
			t.Fatal(err)
		}
		cancel()
		var r reply
		if err := evalJSON(page, stepTimeout, `window.signing`, &r); err != nil {
			t.Fatal(err)
		}
		if r.Error != tc.want {
			t.Errorf("%s: the page got %+v, want %s", tc.name, r, tc.want)
		}
		s := sent()
		if signed := slices.Contains(s, "sign:no-pin"); signed != tc.signed || slices.Contains(s, "sign:pin") {
			t.Errorf("%s: the agent was asked %v", tc.name, s)
		}
	}
}

// TestExtensionRateAndForgedEvents: a back-office tab gets RATE_BURST
// requests at once and then RATE_PER_S a second ("rate-limited" past
// them); a message event a script made itself (not posted: isTrusted is
// false), even one claiming the page's own window and origin, is not
// relayed at all.
func TestExtensionRateAndForgedEvents(t *testing.T) {
	man := testenv.Cards(t)
	origin := testPage(t, "127.0.0.1")
	browser := testenv.Browser(t, []string{origin}, man.Module, man.SoftHSMConf)
	page := browser
	if err := run(page, chromedp.Navigate(origin), chromedp.WaitVisible("#ready")); err != nil {
		t.Fatal(err)
	}
	// Requests of a type the worker answers itself ("malformed"): no
	// agent is started for them, and they count all the same.
	burst := func(n int) []string {
		t.Helper()
		var got []string
		if err := evalJSON(page, 30*time.Second, fmt.Sprintf(`(async () => {
			const ids = Array.from({ length: %d }, (_, i) => "rate-" + Math.random() + "-" + i);
			const answers = new Map();
			await new Promise((resolve) => {
				const on = (e) => {
					const m = e.data;
					if (e.source !== window || !m || m.vouchCard !== "response" || !ids.includes(m.id)) return;
					answers.set(m.id, m.error || m.type);
					if (answers.size === ids.length) { window.removeEventListener("message", on); resolve(); }
				};
				window.addEventListener("message", on);
				for (const id of ids) window.postMessage({ vouchCard: "request", id, type: "bogus" }, location.origin);
				setTimeout(resolve, 10000);
			});
			return ids.map((id) => answers.get(id) || "none");
		})()`, n), &got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	count := func(xs []string, v string) int {
		n := 0
		for _, x := range xs {
			if x == v {
				n++
			}
		}
		return n
	}
	got := burst(25)
	if m, r := count(got, "malformed"), count(got, "rate-limited"); m+r != 25 || m < 20 || m > 21 || r < 4 {
		t.Fatalf("25 requests at once: %d answered, %d rate-limited: %v", m, r, got)
	}
	// Two a second come back.
	time.Sleep(1500 * time.Millisecond)
	got = burst(5)
	if m := count(got, "malformed"); m < 2 || m > 4 || count(got, "rate-limited") != 5-m {
		t.Fatalf("5 requests 1.5 s later: %v", got)
	}

	// A forged event: the page's own script dispatches a MessageEvent
	// that names the page's window and origin. Not relayed: no answer.
	var forged []string
	if err := evalJSON(page, 10*time.Second, `(async () => {
		const got = [];
		const on = (e) => { if (e.data && e.data.vouchCard === "response") got.push(JSON.stringify(e.data)); };
		window.addEventListener("message", on);
		window.dispatchEvent(new MessageEvent("message", {
			data: { vouchCard: "request", id: "forged", type: "cards" }, origin: location.origin, source: window,
		}));
		await new Promise((r) => setTimeout(r, 1000));
		window.removeEventListener("message", on);
		return got;
	})()`, &forged); err != nil {
		t.Fatal(err)
	}
	if len(forged) != 0 {
		t.Errorf("a forged message event was answered: %v", forged)
	}
}

// TestExtensionConfiguresLater: an extension that found no agent origins
// at its start (loaded before cardagent install) has no page that could
// wake it; it asks the agent again on an alarm every minute, registers the
// content script then, and asks every 5 minutes after (an agent installed
// again for another origin).
func TestExtensionConfiguresLater(t *testing.T) {
	man := testenv.Cards(t)
	origin := testPage(t, "127.0.0.1")
	browser := testenv.Browser(t, []string{origin}, man.Module, man.SoftHSMConf)
	sw := worker(t, browser)
	// As at a start without an agent: nothing registered, the first ask
	// finds nothing.
	var st struct {
		Alarm      float64  `json:"alarm"` // its period, minutes; 0: none
		Registered []string `json:"registered"`
	}
	state := `(async () => ({
		alarm: ((await chrome.alarms.get(CONFIGURE_ALARM)) || { periodInMinutes: 0 }).periodInMinutes,
		registered: (await chrome.scripting.getRegisteredContentScripts()).flatMap((s) => s.matches),
	}))()`
	if err := evalJSON(sw, 20*time.Second, `(async () => {
		await chrome.scripting.unregisterContentScripts({ ids: [SCRIPT_ID] });
		allowed = null;
		configuring = null;
		const real = configureOnce;
		configureOnce = async () => { configureOnce = real; return new Set(); };
		await configureAndRetry();
		return {};
	})()`, nil); err != nil {
		t.Fatal(err)
	}
	if err := evalJSON(sw, 10*time.Second, state, &st); err != nil {
		t.Fatal(err)
	}
	if st.Alarm != 1 || len(st.Registered) != 0 {
		t.Fatalf("after a start without origins: %+v, want an alarm every minute and nothing registered", st)
	}
	// The alarm, brought forward (it fires every minute).
	if err := evalJSON(sw, 10*time.Second, `(async () => { await chrome.alarms.create(CONFIGURE_ALARM, { when: Date.now() + 200 }); return {}; })()`, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := evalJSON(sw, 10*time.Second, state, &st); err != nil {
			t.Fatal(err)
		}
		if st.Alarm == 5 && len(st.Registered) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the alarm: %+v, want the origin registered and an alarm every 5 minutes", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	page := browser
	if err := run(page, chromedp.Navigate(origin), chromedp.WaitVisible("#ready")); err != nil {
		t.Fatal(err)
	}
	if r := eval(t, page, `VouchCard.cards()`); r.Type != "cards" {
		t.Fatalf("cards after the extension configured itself: %+v", r)
	}
}
