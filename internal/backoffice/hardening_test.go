package backoffice_test

import (
	"net/http"
	"testing"

	"github.com/vouch-nl/vouch/internal/protocol"
)

// TestSignInBoundToBrowser: a challenge the card signed in one browser is
// no bearer token: a cookie-less client, or another browser with its own
// challenge, cannot redeem it (and their attempts do not use it up), while
// the browser that asked for it signs in.
func TestSignInBoundToBrowser(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	b := w.browser()
	ch := b.challenge("sign-in")
	req := map[string]any{"challenge": ch, "authCert": gp.authDER(), "signCert": gp.signDER(),
		"signature": rsaSign(t, gp.auth, protocol.LoginMessage(w.origin, ch))}

	elsewhere := w.browser() // no cookies at all
	if st, r := elsewhere.post("/api/signin", req); st != http.StatusUnauthorized || r.str("error") != "challenge-other-browser" {
		t.Fatalf("from a cookie-less client: %d %v", st, r)
	}
	other := w.browser() // a browser that asked for a challenge of its own
	other.challenge("sign-in")
	if st, r := other.post("/api/signin", req); st != http.StatusUnauthorized || r.str("error") != "challenge-other-browser" {
		t.Fatalf("from another browser: %d %v", st, r)
	}
	if n := w.count(`select count(*) from backoffice_sessions`); n != 0 {
		t.Fatalf("%d sessions opened elsewhere", n)
	}
	if st, page := elsewhere.get("/vouch"); st != http.StatusSeeOther || page != "/signin" {
		t.Fatalf("the vouch page elsewhere: %d %s", st, page)
	}
	if st, r := b.post("/api/signin", req); st != http.StatusOK {
		t.Fatalf("in the browser that asked: %d %v", st, r)
	}
	want := []string{"sign-in-refused:challenge-other-browser", "sign-in-refused:challenge-other-browser", "sign-in"}
	if got := w.auditActions(); len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("audit %v, want %v", got, want)
	}
}
