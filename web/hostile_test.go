package web_test

import (
	"context"
	"fmt"
	"testing"
	"time"
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
