package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// lockWithin is the back office's requirement: the page knows the card is
// out (and locks) within this time of the card leaving the reader.
const lockWithin = 2 * time.Second

// watchEvent is what VouchCard.watch hands the page, with the page's clock
// (Date.now(), milliseconds) at the call.
type watchEvent struct {
	At    int64  `json:"at"`
	Type  string `json:"type"`
	Error string `json:"error"`
	Cards []struct {
		Reader, State, Token, Holder string
	} `json:"cards"`
}

// readerState is the state the event's list gives the reader ("" when the
// event is no list, "absent" when the list does not name the reader).
func (e watchEvent) readerState(reader string) string {
	if e.Type != "cards" {
		return ""
	}
	for _, c := range e.Cards {
		if c.Reader == reader {
			return c.State
		}
	}
	return "absent"
}

// watchPages serves testPage's page, and at /watching a page that watches
// the readers from its own script, writing every event into #events, one
// JSON line each: a page that the test reads by its DOM alone (in a window
// other than the browser's first tab, where the page's own script watches
// from the start).
func watchPages(t *testing.T, host string) string {
	t.Helper()
	return testPage(t, host, map[string]string{"/watching": `<!doctype html><html><head><meta charset="utf-8"><title>watching</title>
<script src="/static/vouchcard.js"></script></head><body><p id="ready">ready</p><pre id="events"></pre>
<script>
VouchCard.watch((e) => {
  document.getElementById("events").append(JSON.stringify(Object.assign({ at: Date.now() }, e)) + "\n");
});
</script></body></html>`})
}

// evalJSON evaluates js in ctx's tab, within d, into v.
func evalJSON(ctx context.Context, d time.Duration, js string, v any) error {
	ectx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return chromedp.Run(ectx, chromedp.ActionFunc(func(ctx context.Context) error {
		res, exc, err := runtime.Evaluate(js).WithAwaitPromise(true).WithReturnByValue(true).Do(ctx)
		switch {
		case err != nil:
			return err
		case exc != nil:
			return fmt.Errorf("%s", exc.Text)
		}
		if v == nil {
			return nil
		}
		return json.Unmarshal(res.Value, v)
	}))
}

// pageEvents is what the watching page in the first tab has seen so far.
func pageEvents(t *testing.T, page context.Context) []watchEvent {
	t.Helper()
	var raw string
	if err := evalJSON(page, 10*time.Second, `JSON.stringify(window.events)`, &raw); err != nil {
		t.Fatalf("reading the page's events: %v", err)
	}
	var evs []watchEvent
	if err := json.Unmarshal([]byte(raw), &evs); err != nil {
		t.Fatalf("the page's events %q: %v", raw, err)
	}
	return evs
}

// waitEvent waits, for at most d, until the page saw an event after the
// first `from` that satisfies ok; it returns that event and how many the
// page had seen then.
func waitEvent(t *testing.T, page context.Context, from int, d time.Duration, what string, ok func(watchEvent) bool) (watchEvent, int) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		evs := pageEvents(t, page)
		for _, e := range evs[min(from, len(evs)):] {
			if ok(e) {
				return e, len(evs)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page saw no event within %s: %s; it saw %+v", d, what, evs[min(from, len(evs)):])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// domEvents reads the events a /watching page in another window wrote, by
// its DOM alone.
func domEvents(t *testing.T, win context.Context) []watchEvent {
	t.Helper()
	var text string
	dctx, cancel := context.WithTimeout(win, 10*time.Second)
	defer cancel()
	if err := chromedp.Run(dctx, chromedp.TextContent("#events", &text, chromedp.ByQuery)); err != nil {
		t.Fatalf("reading the other window's events: %v", err)
	}
	var evs []watchEvent
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if line == "" {
			continue
		}
		var e watchEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("the other window's event %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// attach returns a context for the browser's first target that match
// accepts, waiting for it up to 20 s. Its first Run is not bounded by a
// timeout: chromedp ties a target's session to the context of that first
// Run, and a session attached under a timeout context answers nothing once
// that context ends (every later command hangs). It is bounded here by
// waiting for it instead.
func attach(t *testing.T, browser context.Context, what string, match func(*target.Info) bool) context.Context {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		targets, err := chromedp.Targets(browser)
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range targets {
			if !match(ti) {
				continue
			}
			ctx, cancel := chromedp.NewContext(browser, chromedp.WithTargetID(ti.TargetID))
			t.Cleanup(cancel)
			attached := make(chan error, 1)
			go func() { attached <- chromedp.Run(ctx) }()
			select {
			case err := <-attached:
				if err != nil {
					t.Fatalf("attaching to %s: %v", what, err)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("attaching to %s: no answer in 20 s", what)
			}
			return ctx
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// worker is the context of the extension's service worker.
func worker(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	return attach(t, browser, "service worker", func(ti *target.Info) bool {
		return ti.Type == "service_worker" && strings.HasSuffix(ti.URL, "/background.js")
	})
}

// openWindow has the extension open url in a window of its own (in the
// background: the first tab stays in front) and returns that window's
// context once the page has loaded.
func openWindow(t *testing.T, browser, sw context.Context, url string) context.Context {
	t.Helper()
	// Loaded first: chromedp attached to a page still loading can lose
	// track of its frame.
	js := fmt.Sprintf(`(async () => {
		const win = await chrome.windows.create({url: %q, type: "normal", focused: false});
		const id = win.tabs[0].id;
		for (let i = 0; i < 200; i++) {
			const tab = await chrome.tabs.get(id);
			if (tab.status === "complete") return {};
			await new Promise((r) => setTimeout(r, 50));
		}
		throw new Error("the window did not load");
	})()`, url)
	if err := evalJSON(sw, 20*time.Second, js, nil); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	return attach(t, browser, "window with "+url, func(ti *target.Info) bool {
		return ti.Type == "page" && ti.URL == url
	})
}

// agentProcesses are the card agents the browser started for this test's
// agent binary, by process id, from /proc (the binary's path is this test
// process's own).
func agentProcesses(t *testing.T) []int {
	t.Helper()
	bin := testenv.CardAgent(t)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if len(args) >= 2 && string(args[0]) == bin && bytes.HasPrefix(args[1], []byte("chrome-extension://")) {
			if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// TestWatchCardPulledAndBack: a back-office page watches the readers
// (VouchCard.watch) through the extension's long-lived port to the card
// agent, on real PC/SC with a virtual card. Pulling the card reaches the
// page within lockWithin; putting it back shows it again; the agent going
// away is told and the port comes back by itself. A page of another origin,
// watching all along in another window, has no answer of the extension
// (its content script is not there) and sees no event of the card at all. When the page stops watching, the agent's port is
// closed.
func TestWatchCardPulledAndBack(t *testing.T) {
	man := testenv.Cards(t)
	readers := testenv.PCSC(t)
	reader := readers[0].Name
	_, in := testenv.InsertCard(t, man, "gp", readers[0])
	origin := watchPages(t, "127.0.0.1")
	other := watchPages(t, "localhost")
	browser := testenv.Browser(t, []string{origin}, testenv.OpenSCModule, man.SoftHSMConf)

	sw := worker(t, browser)

	// Another origin watches first, in a window of its own. The
	// extension's content script is not in its page: nothing answers, and
	// the page library says so itself after its wait (5 s).
	otherWin := openWindow(t, browser, sw, other+"/watching")
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs := domEvents(t, otherWin)
		if len(evs) > 0 {
			if len(evs) != 1 || evs[0].Type != "error" || evs[0].Error != "extension-missing" {
				t.Fatalf("another origin watching: %+v", evs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("another origin watching was told nothing")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The back office, in the browser's first tab, watching from a script
	// the test runs there.
	page := browser
	if err := run(page, chromedp.Navigate(origin), chromedp.WaitVisible("#ready")); err != nil {
		t.Fatal(err)
	}
	if err := evalJSON(page, 10*time.Second, `(() => {
		window.events = [];
		window.unwatch = VouchCard.watch((e) => window.events.push(Object.assign({ at: Date.now() }, e)));
		return {};
	})()`, nil); err != nil {
		t.Fatal(err)
	}
	first, _ := waitEvent(t, page, 0, 20*time.Second, "the first list, with the GP's card", func(e watchEvent) bool {
		return e.readerState(reader) == "ready"
	})
	for _, c := range first.Cards {
		if c.Reader == reader && c.Holder != "A. Huisarts" {
			t.Errorf("the card in %s: %+v", reader, c)
		}
	}
	// Let the readers settle (OpenSC reading the card just inserted may
	// still move them), so that what follows is the pull alone.
	time.Sleep(500 * time.Millisecond)
	seen := len(pageEvents(t, page))

	// Pulled: the page learns it within lockWithin of the card leaving.
	pulled := time.Now()
	in.Pull()
	gone, n := waitEvent(t, page, seen, 10*time.Second, "the GP's card pulled", func(e watchEvent) bool {
		s := e.readerState(reader)
		return s != "" && s != "ready"
	})
	latency := time.Duration(gone.At-pulled.UnixMilli()) * time.Millisecond
	changed := time.Duration(-1)
	for _, e := range pageEvents(t, page)[seen:n] {
		if e.Type == "changed" {
			changed = time.Duration(e.At-pulled.UnixMilli()) * time.Millisecond
			break
		}
	}
	t.Logf("card pulled: the page had {type: changed} after %v and the list without the card after %v (state %q)", changed, latency, gone.readerState(reader))
	if latency >= lockWithin {
		t.Errorf("the page learnt of the pulled card after %v, want under %v", latency, lockWithin)
	}
	seen = n

	// Put back: the page sees the card again.
	back := time.Now()
	testenv.InsertCard(t, man, "gp", readers[0])
	again, n := waitEvent(t, page, seen, 15*time.Second, "the GP's card back in", func(e watchEvent) bool {
		return e.readerState(reader) == "ready"
	})
	var steps []string
	for _, e := range pageEvents(t, page)[seen:n] {
		steps = append(steps, fmt.Sprintf("%s %s +%dms", e.Type, e.readerState(reader), e.At-back.UnixMilli()))
	}
	t.Logf("card put back: the page listed it ready after %v (%s)", time.Duration(again.At-back.UnixMilli())*time.Millisecond, strings.Join(steps, ", "))
	seen = n

	// The agent stops (killed): the page is told, and the extension
	// starts it again and lists the cards once more by itself.
	pids := agentProcesses(t)
	if len(pids) != 1 {
		t.Fatalf("card agents running for the watching page: %v, want one", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, n = waitEvent(t, page, seen, 10*time.Second, "the agent gone", func(e watchEvent) bool {
		return e.Type == "error" && e.Error == "agent-missing"
	})
	waitEvent(t, page, n, 20*time.Second, "the cards again from a new agent", func(e watchEvent) bool {
		return e.readerState(reader) == "ready"
	})

	// All along, the other origin got the refusal and nothing else.
	if evs := domEvents(t, otherWin); len(evs) != 1 {
		t.Errorf("another origin, after the card moved: %+v", evs)
	}

	// Unwatched: the worker closes the agent's port, and the agent ends.
	if err := evalJSON(page, 10*time.Second, `(() => { window.unwatch(); return {}; })()`, nil); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		var st struct {
			Watchers int  `json:"watchers"`
			Open     bool `json:"open"`
		}
		if err := evalJSON(sw, 10*time.Second, `({watchers: watchers.size, open: agentPort !== null})`, &st); err != nil {
			t.Fatal(err)
		}
		if st.Watchers == 0 && !st.Open && len(agentProcesses(t)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the last tab stopped watching: %+v, agents %v", st, agentProcesses(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
