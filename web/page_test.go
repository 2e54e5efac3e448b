package web_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/web"
)

// plainPage opens the back office's scripts in a page of their own in a
// headless Chromium without extension or card agent: for the checks the
// page makes by itself.
func plainPage(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(testenv.Chromium); err != nil {
		t.Fatalf("Chromium: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/static/", http.FileServerFS(web.Static))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><html lang="en"><head><script type="application/json" id="vouch-messages">{}</script>
<script src="/static/vouchcard.js" defer></script><script src="/static/backoffice.js" defer></script></head>
<body data-page="test"></body></html>`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	dir, err := os.MkdirTemp("", "vouch-page-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 20 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), chromedp.ExecPath(testenv.Chromium),
		chromedp.Flag("headless", "new"), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.UserDataDir(dir))
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Started without a timeout: the browser lives as long as the context
	// of its first Run.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, `window.VouchPage`, 10*time.Second)
	return ctx
}

// TestPageChecksCodesAsTyped: the vouch page's own check of a typed code
// says what internal/phonecode says, for valid codes in every spelling the
// server reads, each check character put in their place, and random
// strings; a code still being typed is not wrong yet, a wrong character
// is at once. Dates typed as the page's languages write them go to the
// server as YYYY-MM-DD.
func TestPageChecksCodesAsTyped(t *testing.T) {
	ctx := plainPage(t)
	const checkSymbols = "0123456789ABCDEFGHJKMNPQRSTVWXYZ*~$=U"
	var inputs []string
	for range 200 {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		c := phonecode.FromPublicKey(pub)
		s := c.String()
		inputs = append(inputs, s, c.Compact(), strings.ToLower(s), c.URI(), " "+strings.ReplaceAll(s, "-", " ")+" ",
			strings.NewReplacer("0", "O", "1", "I").Replace(s))
		for i := range len(checkSymbols) {
			inputs = append(inputs, s[:len(s)-1]+checkSymbols[i:i+1])
		}
		// One symbol of the code mistyped.
		b := []byte(c.Compact())
		b[mrand.IntN(16)] = checkSymbols[mrand.IntN(32)]
		inputs = append(inputs, string(b))
	}
	for range 2000 {
		b := make([]byte, 17)
		for i := range b {
			b[i] = (checkSymbols + "!#uo")[mrand.IntN(len(checkSymbols)+4)]
		}
		inputs = append(inputs, string(b))
	}
	want := make([]string, len(inputs))
	for i, in := range inputs {
		switch _, err := phonecode.Parse(in); {
		case err == nil:
		case errors.Is(err, phonecode.ErrCheck):
			want[i] = "vouch.code-check"
		case errors.Is(err, phonecode.ErrCharacter):
			want[i] = "vouch.code-character"
		default:
			want[i] = "vouch.code-length"
		}
	}
	arg, _ := json.Marshal(inputs)
	var got []string
	js(t, ctx, fmt.Sprintf(`%s.map((s) => VouchPage.codeProblem(s))`, arg), &got)
	if len(got) != len(want) {
		t.Fatalf("%d answers for %d codes", len(got), len(want))
	}
	bad := 0
	for i := range want {
		if got[i] != want[i] {
			if bad++; bad <= 10 {
				t.Errorf("%q: the page says %q, the server %q", inputs[i], got[i], want[i])
			}
		}
	}

	// While being typed.
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	code := phonecode.FromPublicKey(pub).String()
	for _, tt := range []struct{ typed, want string }{
		{"", ""}, {code[:4], ""}, {code[:len(code)-1], ""}, {code[:3] + "!", "vouch.code-character"},
		{code + "X", "vouch.code-length"},
	} {
		var got string
		js(t, ctx, fmt.Sprintf(`VouchPage.codeProblem(%q)`, tt.typed), &got)
		if got != tt.want {
			t.Errorf("typing %q: %q, want %q", tt.typed, got, tt.want)
		}
	}

	for _, tt := range []struct{ typed, want string }{
		{"2026-12-07", "2026-12-07"}, {"07-12-2026", "2026-12-07"}, {"7-12-2026", "2026-12-07"}, {"7/1/2026", "2026-01-07"},
		{"2026.1.7", "2026-01-07"}, {" 07.12.2026 ", "2026-12-07"}, {"", ""}, {"gisteren", "gisteren"}, {"12-2026-07", "12-2026-07"},
	} {
		var got string
		js(t, ctx, fmt.Sprintf(`VouchPage.isoDate(%q)`, tt.typed), &got)
		if got != tt.want {
			t.Errorf("date typed %q: %q, want %q", tt.typed, got, tt.want)
		}
	}
}
