//go:build !mutation

package backoffice_test

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/i18n"
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

// TestLockedSessionShowsNothing: a locked session's pages show nothing of
// its card holder (name, UZI number, activity) and every action but the
// unlock, sign-in, sign-out and the language is refused with 423; the card
// that signed in unlocks it and the pages come back.
func TestLockedSessionShowsNothing(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	b := w.browser()
	b.mustSignIn(gp)
	_, code := phone(t)
	if st, r := b.vouch(gp, code.String(), ""); st != http.StatusOK {
		t.Fatalf("vouch: %d %v", st, r)
	}
	if st, _ := b.post("/api/lock", map[string]any{}); st != http.StatusOK {
		t.Fatalf("lock: %d", st)
	}
	for _, path := range []string{"/", "/vouch", "/staff", "/signin"} {
		st, page := b.get(path)
		if st != http.StatusLocked || !contains(page, `data-locked="true"`) || !contains(page, `data-page="locked"`) {
			t.Errorf("GET %s while locked: %d, want the locked page", path, st)
		}
		for _, secret := range []string{"A. Huisarts", "900000001", "data-uzi", "vouched"} {
			if contains(page, secret) {
				t.Errorf("GET %s while locked shows %q", path, secret)
			}
		}
	}
	_, code2 := phone(t)
	for _, path := range []string{"/api/vouch/prepare", "/api/vouch/sign", "/api/heartbeat"} {
		body := map[string]any{}
		switch path {
		case "/api/vouch/prepare":
			body = map[string]any{"code": code2.String(), "consent": true}
		case "/api/vouch/sign":
			body = map[string]any{"signature": []byte("x")}
		}
		if st, r := b.post(path, body); st != http.StatusLocked || r.str("error") != "locked" {
			t.Errorf("POST %s while locked: %d %v", path, st, r)
		}
	}
	if resp, _ := b.do(http.MethodPost, "/lang", "application/x-www-form-urlencoded", []byte("lang=nl&back=/vouch")); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("language while locked: %d", resp.StatusCode)
	}
	ch := b.challenge("unlock")
	if st, r := b.post("/api/unlock", map[string]any{"challenge": ch, "authCert": gp.authDER(),
		"signature": rsaSign(t, gp.auth, protocol.LoginMessage(w.origin, ch))}); st != http.StatusOK {
		t.Fatalf("unlock: %d %v", st, r)
	}
	if st, page := b.get("/staff"); st != http.StatusOK || !contains(page, "A. Huisarts") || !contains(page, `data-uzi="900000001"`) {
		t.Errorf("the staff page after the unlock: %d", st)
	}
}

// TestHeartbeat: a session whose page stops reporting its card is locked
// by the server once the last heartbeat is more than two minutes old —
// at its next request, or by the sweep if none comes — with an audit
// row; heartbeats keep it open, and the unlock starts the count again.
func TestHeartbeat(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	b := w.browser()
	b.mustSignIn(gp)
	w.clock.advance(w.cfg.HeartbeatTimeout - 10*time.Second)
	if st, r := b.post("/api/heartbeat", map[string]any{}); st != http.StatusOK {
		t.Fatalf("heartbeat: %d %v", st, r)
	}
	w.clock.advance(w.cfg.HeartbeatTimeout - 10*time.Second)
	if st, _ := b.get("/vouch"); st != http.StatusOK {
		t.Fatalf("%v after the last heartbeat: %d", w.cfg.HeartbeatTimeout-10*time.Second, st)
	}
	w.clock.advance(10*time.Second + time.Millisecond)
	if st, _ := b.get("/vouch"); st != http.StatusLocked {
		t.Fatalf("%v after the last heartbeat: %d, want 423", w.cfg.HeartbeatTimeout+time.Millisecond, st)
	}
	if st, _ := b.post("/api/heartbeat", map[string]any{}); st != http.StatusLocked {
		t.Fatalf("a heartbeat does not unlock: %d", st)
	}
	if n := w.count(`select count(*) from audit_log where action = 'lock' and reason = $1 and actor = '900000001'`,
		backoffice.ReasonHeartbeatMissed); n != 1 {
		t.Errorf("%d audit rows of the lock, want 1", n)
	}
	ch := b.challenge("unlock")
	if st, r := b.post("/api/unlock", map[string]any{"challenge": ch, "authCert": gp.authDER(),
		"signature": rsaSign(t, gp.auth, protocol.LoginMessage(w.origin, ch))}); st != http.StatusOK {
		t.Fatalf("unlock: %d %v", st, r)
	}
	if st, _ := b.get("/vouch"); st != http.StatusOK {
		t.Fatalf("after the unlock: %d", st)
	}

	// No request at all (the tab was closed): the sweep locks it.
	quiet := w.browser()
	quiet.mustSignIn(w.card("nurse"))
	w.clock.advance(w.cfg.HeartbeatTimeout + time.Second)
	w.eventually(2, `select count(*) from backoffice_sessions where locked_at is not null`)
	w.eventually(3, `select count(*) from audit_log where action = 'lock' and reason = 'heartbeat-missed'`)
}

// TestForwardedForIsNotTrusted: X-Forwarded-For from a client that is not
// a configured proxy is ignored: 200 challenges from one peer naming 200
// addresses meet the one peer's limit, and an audit row carries the peer's
// address, not the one the header claims.
func TestForwardedForIsNotTrusted(t *testing.T) {
	w := newWorld(t, func(c *backoffice.Config) { c.SignInPerMinute = 20 }) // bursts of 10
	b := w.browser()
	ok, limited := 0, 0
	for i := range 200 {
		b.headers = map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d, 203.0.113.%d", i%250, i%200), "X-Real-Ip": fmt.Sprintf("192.0.2.%d", i%250)}
		switch st, r := b.post("/api/challenge", map[string]string{"purpose": "sign-in"}); st {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("challenge %d: %d %v", i, st, r)
		}
	}
	if ok > 11 || limited < 189 {
		t.Errorf("%d challenges given, %d refused: the forwarded addresses were trusted", ok, limited)
	}
	if n := w.count(`select count(*) from login_challenges`); n != ok {
		t.Errorf("%d challenges stored, %d given", n, ok)
	}
	w.clock.advance(time.Hour) // the peer's bucket is full again
	b.headers = map[string]string{"X-Forwarded-For": "203.0.113.7", "X-Real-Ip": "203.0.113.8"}
	if st, r := b.signIn(w.card("suspended")); st != http.StatusForbidden {
		t.Fatalf("suspended sign-in: %d %v", st, r)
	}
	var ip string
	if err := w.db.Pool().QueryRow(t.Context(), `select ip from audit_log where action = 'sign-in-refused' order by seq desc limit 1`).Scan(&ip); err != nil {
		t.Fatal(err)
	}
	if ip != "127.0.0.1" {
		t.Errorf("audit row's address %q, want the peer's 127.0.0.1", ip)
	}
}

// TestChallengesAreBounded: past the cap of live challenges a challenge is
// refused (503 with Retry-After), whatever address asks; expired ones do
// not count and are swept, so sign-in resumes by itself.
func TestChallengesAreBounded(t *testing.T) {
	w := newWorld(t, func(c *backoffice.Config) { c.MaxChallenges = 5 })
	for i := range 5 {
		w.browser().challenge("sign-in")
		if i == 2 {
			w.clock.advance(time.Minute)
		}
	}
	resp, out := w.browser().do(http.MethodPost, "/api/challenge", "application/json", []byte(`{"purpose":"sign-in"}`))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !contains(string(out), "signin-busy") {
		t.Fatalf("challenge past the cap: %d %s (Retry-After %q)", resp.StatusCode, out, resp.Header.Get("Retry-After"))
	}
	if n := w.count(`select count(*) from login_challenges`); n != 5 {
		t.Errorf("%d challenges stored, want the cap of 5", n)
	}
	// The first three expire: three fit again.
	w.clock.advance(backoffice.ChallengeLifetime - time.Minute + time.Second)
	for range 3 {
		w.browser().challenge("sign-in")
	}
	if st, _ := w.browser().post("/api/challenge", map[string]string{"purpose": "sign-in"}); st != http.StatusServiceUnavailable {
		t.Errorf("past the cap again: %d", st)
	}
	if n := w.count(`select count(*) from login_challenges`); n > 5 {
		t.Errorf("%d challenges stored, want at most 5", n)
	}
}

// counted is an audit row of counted refusals.
type counted struct {
	actor, ip, reason, subject string
	count                      int
}

// countedRows lists the request-refused rows with their counts.
func (w *world) countedRows() []counted {
	w.t.Helper()
	rows, err := w.db.Pool().Query(w.t.Context(), `select actor, coalesce(ip, ''), reason, coalesce(subject, ''), detail
		from audit_log where action = 'request-refused' order by seq`)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	var out []counted
	for rows.Next() {
		var c counted
		var detail string
		if err := rows.Scan(&c.actor, &c.ip, &c.reason, &c.subject, &detail); err != nil {
			w.t.Fatal(err)
		}
		var d struct{ Count int }
		if err := json.Unmarshal([]byte(detail), &d); err != nil {
			w.t.Fatalf("detail %q: %v", detail, err)
		}
		c.count = d.Count
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		w.t.Fatal(err)
	}
	return out
}

// TestCrossSitePostsAreCounted: 300 cross-site POSTs to any path write no
// row each: one row for the source and minute, with the count, once the
// minute is over.
func TestCrossSitePostsAreCounted(t *testing.T) {
	w := newWorld(t, nil)
	w.newMinute()
	b := w.browser()
	b.headers = map[string]string{"Sec-Fetch-Site": "cross-site", "X-Forwarded-For": "203.0.113.9"}
	for i := range 300 {
		path := fmt.Sprintf("/nothing/%d", i)
		if i%3 == 0 {
			path = "/api/vouch/prepare"
		}
		if resp, out := b.do(http.MethodPost, path, "application/json", []byte(`{}`)); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, out)
		}
	}
	if n := w.count(`select count(*) from audit_log`); n != 0 {
		t.Fatalf("%d audit rows during the minute, want none yet", n)
	}
	w.clock.advance(time.Minute)
	w.eventually(1, `select count(*) from audit_log`)
	time.Sleep(500 * time.Millisecond) // a second row would be written by now
	got := w.countedRows()
	if len(got) != 1 || got[0].count != 300 || got[0].reason != "cross-origin" || got[0].ip != "127.0.0.1" || got[0].actor != "" {
		t.Fatalf("rows %+v, want one of 300 cross-origin refusals from 127.0.0.1", got)
	}
}

// TestRefusalsAreAudited: signed out (401), rate limited (429), nothing
// pending (409) and locked (423) each leave an audit row — counted per
// source (card holder or address), reason and minute.
func TestRefusalsAreAudited(t *testing.T) {
	w := newWorld(t, func(c *backoffice.Config) { c.SignInPerMinute = 2 }) // bursts of 5
	w.newMinute()
	gp := w.browser()
	gp.mustSignIn(w.card("gp")) // two of the address's five
	if st, r := gp.post("/api/vouch/sign", map[string]any{"signature": []byte("x")}); st != http.StatusConflict {
		t.Fatalf("sign with nothing pending: %d %v", st, r)
	}
	if st, _ := gp.post("/api/lock", map[string]any{}); st != http.StatusOK {
		t.Fatalf("lock: %d", st)
	}
	if st, _ := gp.get("/vouch"); st != http.StatusLocked {
		t.Fatalf("page while locked: %d", st)
	}
	_, code := phone(t)
	if st, _ := gp.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true}); st != http.StatusLocked {
		t.Fatalf("prepare while locked: %d", st)
	}
	anon := w.browser()
	if st, _ := anon.post("/api/lock", map[string]any{}); st != http.StatusUnauthorized {
		t.Fatalf("lock signed out: %d", st)
	}
	if st, _ := anon.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true}); st != http.StatusUnauthorized {
		t.Fatalf("prepare signed out: %d", st)
	}
	statuses := []int{}
	for range 5 {
		st, _ := anon.post("/api/challenge", map[string]string{"purpose": "sign-in"})
		statuses = append(statuses, st)
	}
	if statuses[2] != http.StatusOK || statuses[3] != http.StatusTooManyRequests || statuses[4] != http.StatusTooManyRequests {
		t.Fatalf("challenges: %v", statuses)
	}
	w.clock.advance(time.Minute)
	w.eventually(4, `select count(*) from audit_log where action = 'request-refused'`)
	got := map[string]counted{}
	for _, c := range w.countedRows() {
		got[c.reason] = c
	}
	want := map[string]counted{
		"no-pending-statement": {actor: "900000001", ip: "127.0.0.1", reason: "no-pending-statement", subject: "POST /api/vouch/sign", count: 1},
		"locked":               {actor: "900000001", ip: "127.0.0.1", reason: "locked", subject: "GET /vouch", count: 2},
		"signed-out":           {ip: "127.0.0.1", reason: "signed-out", subject: "POST /api/lock", count: 2},
		"rate-limited":         {ip: "127.0.0.1", reason: "rate-limited", subject: "POST /api/challenge", count: 2},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(counted{})); diff != "" {
		t.Errorf("counted refusals (-want +got):\n%s", diff)
	}
}

// TestRegistrationRefusalSaysWhomToContact: a clinician refused for their
// registration is told the reason and whom to contact — the configured
// text, else a general one — in their language; at sign-in and when the
// registration is suspended during the session.
func TestRegistrationRefusalSaysWhomToContact(t *testing.T) {
	const contact = "Call the Vouch desk: 020 123 45 67."
	w := newWorld(t, func(c *backoffice.Config) { c.Contact = contact })
	for _, lang := range []string{"en", "nl"} {
		b := w.browser()
		b.lang = lang
		st, r := b.signIn(w.card("suspended"))
		reason := i18n.T(lang, "license.license-suspended")
		if st != http.StatusForbidden || r.str("error") != "license-suspended" || r.str("message") != reason+" "+contact {
			t.Errorf("%s: %d %v, want %q", lang, st, r, reason+" "+contact)
		}
	}
	// Without a configured text: the general one.
	deps := w.deps
	w.cfg.Contact = ""
	w.svc = w.start(deps)
	b := w.browser()
	b.lang = "nl"
	if _, r := b.signIn(w.card("suspended")); r.str("message") != i18n.T("nl", "license.license-suspended")+" "+i18n.T("nl", "signin.contact-default") {
		t.Errorf("without a contact: %q", r.str("message"))
	}
	// Suspended during the session: the vouch is refused the same way.
	gp := w.browser()
	gp.mustSignIn(w.card("gp"))
	w.ldap.LDIF(t, "dn: vouchUziNumber=900000001,ou=people,dc=registry,dc=test\nchangetype: modify\nreplace: vouchLicenseStatus\nvouchLicenseStatus: suspended")
	_, code := phone(t)
	st, r := gp.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true})
	if st != http.StatusForbidden || !contains(r.str("message"), i18n.T("en", "signin.contact-default")) {
		t.Errorf("vouch after suspension: %d %v", st, r)
	}
	// Other refusals are as they were.
	if st, r := w.browser().signIn(w.card("revoked")); st != http.StatusForbidden || contains(r.str("message"), i18n.T("en", "signin.contact-default")) {
		t.Errorf("revoked card: %d %v", st, r)
	}
}

// TestVouchPageHelpsInEveryLanguage: in every language of the catalogue
// the vouch page says how each awkward check character is read aloud, and
// its date field is in the page's language (its lang, its format, an
// example of today in that format), not the browser's.
func TestVouchPageHelpsInEveryLanguage(t *testing.T) {
	w := newWorld(t, nil)
	for _, lang := range i18n.Default().Languages() {
		b := w.browser()
		b.lang = lang
		b.mustSignIn(w.card("gp"))
		st, page := b.get("/vouch")
		if st != http.StatusOK {
			t.Fatalf("%s: %d", lang, st)
		}
		help := i18n.T(lang, "page.vouch.check-help")
		if !i18n.Default().Has(lang, "page.vouch.check-help") || !contains(page, template.HTMLEscapeString(help)) {
			t.Errorf("%s: the page does not say how check characters are read", lang)
		}
		for _, sym := range []string{"$", "*", "~", "=", "U"} {
			if !contains(help, sym) {
				t.Errorf("%s: the help does not say how %s is read", lang, sym)
			}
		}
		format := i18n.T(lang, "page.vouch.onset-format")
		layout := strings.NewReplacer("YYYY", "2006", "JJJJ", "2006", "AAAA", "2006", "MM", "01", "DD", "02", "TT", "02", "GG", "02", "JJ", "02").Replace(format)
		today := time.Now().In(mustZone(t)).Format(layout)
		for _, want := range []string{`type="text" id="onset" name="onset" lang="` + lang + `"`, `placeholder="` + format + `"`, today} {
			if !contains(page, want) {
				t.Errorf("%s: the date field lacks %q", lang, want)
			}
		}
		if contains(page, `type="date"`) {
			t.Errorf("%s: a date field in the browser's language", lang)
		}
	}
}

// TestBodyLimitIs16KiB: an API body of 16 KiB (16,384 bytes) is read, one
// byte more is refused with 413, as docs/backoffice.md says.
func TestBodyLimitIs16KiB(t *testing.T) {
	w := newWorld(t, nil)
	b := w.browser()
	body := func(n int) []byte {
		js := `{"purpose":"sign-in"}`
		return []byte(js + strings.Repeat(" ", n-len(js)))
	}
	if resp, out := b.do(http.MethodPost, "/api/challenge", "application/json", body(16384)); resp.StatusCode != http.StatusOK {
		t.Errorf("16,384 bytes: %d %s", resp.StatusCode, out)
	}
	if resp, out := b.do(http.MethodPost, "/api/challenge", "application/json", body(16385)); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("16,385 bytes: %d %s", resp.StatusCode, out)
	}
}
