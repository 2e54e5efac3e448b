package web_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// answers posts to the page's own window what the page library posts (a
// card list, a signature and a watch), and returns every answer of the
// extension (a vouchCard response or event) that came within d. On a page
// the extension's content script is not in, there is none.
func answers(t *testing.T, page context.Context, d time.Duration) []string {
	t.Helper()
	var got []string
	js := fmt.Sprintf(`(async () => {
		const got = [];
		const on = (e) => {
			const m = e.data;
			if (m && typeof m === "object" && (m.vouchCard === "response" || m.vouchCard === "event")) got.push(JSON.stringify(m));
		};
		window.addEventListener("message", on);
		window.postMessage({ vouchCard: "request", id: "probe-cards", type: "cards" }, location.origin);
		window.postMessage({ vouchCard: "request", id: "probe-sign", type: "sign", token: "t", kind: "login", challenge: btoa("x".repeat(32)) }, location.origin);
		window.postMessage({ vouchCard: "watch" }, location.origin);
		await new Promise((r) => setTimeout(r, %d));
		window.postMessage({ vouchCard: "unwatch" }, location.origin);
		window.removeEventListener("message", on);
		return got;
	})()`, d.Milliseconds())
	if err := evalJSON(page, d+10*time.Second, js, &got); err != nil {
		t.Fatalf("probing the page: %v", err)
	}
	return got
}

// probeResult is what a hostile page learns from one try: the answers to
// a card list and to a watch, and how long each took (ms, the page's
// clock).
type probeResult struct {
	Cards   string  `json:"cards"`
	CardsMs float64 `json:"cardsMs"`
	Watch   string  `json:"watch"`
	WatchMs float64 `json:"watchMs"`
}

// probe asks as the page library does, from a page whose content script
// is there: a card list, then a watch, each answer timed.
func probe(t *testing.T, page context.Context) probeResult {
	t.Helper()
	var r probeResult
	if err := evalJSON(page, 30*time.Second, `(async () => {
		const ask = (msg, pick) => new Promise((resolve) => {
			const timer = setTimeout(() => done({ type: "none" }), 10000);
			const on = (e) => { if (e.source === window && pick(e.data)) done(e.data); };
			const done = (m) => { clearTimeout(timer); window.removeEventListener("message", on); resolve(m); };
			window.addEventListener("message", on);
			window.postMessage(msg, location.origin);
		});
		const what = (m) => m.type === "error" ? "error " + m.error : m.type;
		const id = "probe-" + Math.random();
		const t0 = performance.now();
		const c = await ask({ vouchCard: "request", id, type: "cards" }, (m) => m && m.vouchCard === "response" && m.id === id);
		const t1 = performance.now();
		const w = await ask({ vouchCard: "watch" }, (m) => m && m.vouchCard === "event" && m.type !== "watching");
		const t2 = performance.now();
		window.postMessage({ vouchCard: "unwatch" }, location.origin);
		return { cards: what(c), cardsMs: t1 - t0, watch: what(w), watchMs: t2 - t1 };
	})()`, &r); err != nil {
		t.Fatalf("probing the page: %v", err)
	}
	return r
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestHostilePageLearnsNothing: a page of another origin (the back
// office's host, another port) in the same Chromium profile as the real
// extension and card agent, with pcscd and a virtual card, tries to learn
// whether a card is in the reader and whether the back office is open:
//
//   - its own page has no answer of the extension at all, in every case
//     (the content script runs only in the back office's pages);
//   - even with the content script put into its page (as if the browser
//     injected it there), it gets the same answer as when no agent is
//     installed ("agent-missing") for a card list and for a watch, in the
//     same time: the medians of 30 tries in each of the four cases (card
//     in or out, a back-office tab watching or not) lie within 50 ms.
//
// The cases are interleaved in rounds, so that a slow moment of the
// machine falls on all of them.
func TestHostilePageLearnsNothing(t *testing.T) {
	man := testenv.Cards(t)
	readers := testenv.PCSC(t)
	origin := watchPages(t, "127.0.0.1")
	hostile := testPage(t, "127.0.0.1") // same host, another port: another origin
	if origin == hostile {
		t.Fatal("one origin for both")
	}
	browser := testenv.Browser(t, []string{origin}, testenv.OpenSCModule, man.SoftHSMConf)
	sw := worker(t, browser)
	page := browser // the first tab: the one whose scripts answer CDP here

	card, inserted := testenv.InsertCard(t, man, "gp", readers[0])
	cardIn := true
	setCard := func(in bool) {
		if in == cardIn {
			return
		}
		if in {
			var err error
			inserted, err = card.Insert(context.Background(), readers[0].Addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(inserted.Remove)
		} else {
			inserted.Remove()
		}
		cardIn = in
		// The next step starts once pcscd has seen it: a watch started in
		// between could report the card still there. (The case with the
		// card just taken out and the office just opened did not settle
		// once in CI under load.)
		testenv.WaitCard(t, readers[0], in)
	}
	var office context.Context // the back office's window, nil while closed
	setOffice := func(open bool) {
		if open == (office != nil) {
			return
		}
		if open {
			office = openWindow(t, browser, sw, origin+"/watching")
			return
		}
		if err := evalJSON(sw, 20*time.Second, fmt.Sprintf(`(async () => {
			for (const tab of await chrome.tabs.query({ url: %q })) await chrome.tabs.remove(tab.id);
			return {};
		})()`, origin+"/watching"), nil); err != nil {
			t.Fatal(err)
		}
		office = nil
	}
	// settled waits until the back office (when open) watches and lists
	// the reader as the case has it, and the worker holds the agent's
	// port exactly while it does.
	settled := func() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok := true
			if office != nil {
				evs := domEvents(t, office)
				want := "empty"
				if cardIn {
					want = "ready"
				}
				ok = len(evs) > 0 && evs[len(evs)-1].readerState(readers[0].Name) == want
			}
			var st struct {
				Watchers int  `json:"watchers"`
				Open     bool `json:"open"`
			}
			if err := evalJSON(sw, 10*time.Second, `({watchers: watchers.size, open: agentPort !== null})`, &st); err != nil {
				t.Fatal(err)
			}
			if ok && st.Open == (office != nil) && st.Watchers == map[bool]int{true: 1, false: 0}[office != nil] {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the case (card in %v, back office open %v) did not settle: worker %+v", cardIn, office != nil, st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	type key struct{ card, office bool }
	cases := []key{{true, true}, {false, false}, {true, false}, {false, true}}
	const tries, rounds = 30, 3
	results := map[key][]probeResult{}
	for round := range rounds {
		for i := range cases {
			c := cases[(i+round)%len(cases)]
			setCard(c.card)
			setOffice(c.office)
			settled()
			// A page of its own, fresh: no content script in it.
			if err := run(page, chromedp.Navigate(hostile+"/?round="+fmt.Sprint(round)), chromedp.WaitVisible("#ready")); err != nil {
				t.Fatal(err)
			}
			for range tries / rounds {
				if got := answers(t, page, 250*time.Millisecond); len(got) != 0 {
					t.Fatalf("card in %v, back office open %v: the hostile page got answers: %v", c.card, c.office, got)
				}
			}
			// The content script put into the hostile page by force: the
			// worker's own refusal is what it meets.
			if err := evalJSON(sw, 20*time.Second, fmt.Sprintf(`(async () => {
				const [tab] = await chrome.tabs.query({ url: %q });
				await chrome.scripting.executeScript({ target: { tabId: tab.id }, files: ["content.js"] });
				return {};
			})()`, hostile+"/*"), nil); err != nil {
				t.Fatal(err)
			}
			probe(t, page) // warm-up, not counted
			for range tries / rounds {
				results[c] = append(results[c], probe(t, page))
			}
		}
	}

	var cardsMed, watchMed []float64
	for _, c := range cases {
		rs := results[c]
		var cm, wm []float64
		for _, r := range rs {
			if r.Cards != "error agent-missing" || r.Watch != "error agent-missing" {
				t.Errorf("card in %v, back office open %v: the hostile page got %+v, want agent-missing for both", c.card, c.office, r)
			}
			cm, wm = append(cm, r.CardsMs), append(wm, r.WatchMs)
		}
		cardsMed, watchMed = append(cardsMed, median(cm)), append(watchMed, median(wm))
		t.Logf("card in %-5v back office open %-5v: %d tries, card list median %.1f ms, watch median %.1f ms", c.card, c.office, len(rs), median(cm), median(wm))
	}
	for name, meds := range map[string][]float64{"card list": cardsMed, "watch": watchMed} {
		if spread := slices.Max(meds) - slices.Min(meds); spread > 50 {
			t.Errorf("%s: the medians of the four cases differ by %.1f ms (over 50): %v", name, spread, meds)
		}
	}
}
