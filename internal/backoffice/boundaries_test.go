//go:build !mutation

package backoffice_test

// Not parallel: worlds share the SoftHSM tokens, and a login on a token in
// one world can invalidate a key handle another world is reading.
//
// Behaviour at the edges: cookies, an https origin, metrics, the exact
// lifetime of a prepared statement, the quota at prepare, the pages'
// redirects, the language cookie and the audit rows' actors.

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/server"
)

// frozen is a clock that moves only when told: for edges to the
// microsecond (PostgreSQL keeps microseconds).
type frozen struct {
	mu  sync.Mutex
	now time.Time
}

func newFrozen() *frozen { return &frozen{now: time.Now().Truncate(time.Second)} }

func (f *frozen) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *frozen) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// startOwn routes the test server to a back office on deps as given (its
// metrics registry included), as w.start does otherwise.
func (w *world) startOwn(deps backoffice.Deps) *backoffice.Service {
	w.t.Helper()
	svc, err := backoffice.New(w.cfg, deps)
	if err != nil {
		w.t.Fatal(err)
	}
	srv := server.New(server.Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	svc.Register(srv.Echo())
	w.handler.Store(srv.Echo())
	return svc
}

func setCookie(t *testing.T, resp *http.Response, name string) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no cookie %s in %v", name, resp.Header.Values("Set-Cookie"))
	return nil
}

type cookieAttrs struct {
	Value    bool // set, not cleared
	Path     string
	MaxAge   int
	Secure   bool
	HttpOnly bool
	SameSite http.SameSite
}

func attrsOf(c *http.Cookie) cookieAttrs {
	return cookieAttrs{Value: c.Value != "", Path: c.Path, MaxAge: c.MaxAge, Secure: c.Secure, HttpOnly: c.HttpOnly, SameSite: c.SameSite}
}

// TestCookies: the session cookie lives as long as a session may, is
// HttpOnly and SameSite=Strict, and is cleared on sign-out; the language
// cookie lives a year. With an http origin neither is Secure.
func TestCookies(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	b := w.browser()
	ch := b.challenge("sign-in")
	body := `{"challenge":"` + b64(ch) + `","authCert":"` + b64(gp.authDER()) + `","signCert":"` + b64(gp.signDER()) +
		`","signature":"` + b64(rsaSign(t, gp.auth, protocol.LoginMessage(w.origin, ch))) + `"}`
	resp, out := b.do(http.MethodPost, "/api/signin", "application/json", []byte(body))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d %s", resp.StatusCode, out)
	}
	want := cookieAttrs{Value: true, Path: "/", MaxAge: int((12 * time.Hour).Seconds()), HttpOnly: true, SameSite: http.SameSiteStrictMode}
	if diff := cmp.Diff(want, attrsOf(setCookie(t, resp, "vouch_session"))); diff != "" {
		t.Errorf("session cookie (-want +got):\n%s", diff)
	}

	resp, _ = b.do(http.MethodPost, "/lang", "application/x-www-form-urlencoded", []byte("lang=nl&back=/staff"))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/staff" {
		t.Errorf("switch: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	want = cookieAttrs{Value: true, Path: "/", MaxAge: 365 * 24 * 3600, HttpOnly: true, SameSite: http.SameSiteLaxMode}
	if diff := cmp.Diff(want, attrsOf(setCookie(t, resp, "vouch_lang"))); diff != "" {
		t.Errorf("language cookie (-want +got):\n%s", diff)
	}
	// A page that is not one of the three goes home.
	resp, _ = b.do(http.MethodPost, "/lang", "application/x-www-form-urlencoded", []byte("lang=en&back=//evil.example"))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Errorf("switch back elsewhere: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}

	resp, _ = b.do(http.MethodPost, "/api/signout", "application/json", []byte(`{}`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-out: %d", resp.StatusCode)
	}
	if lastOf(w.auditActions()) != "sign-out" || w.count(`select count(*) from backoffice_sessions`) != 0 {
		t.Errorf("sign-out: audit %v, %d sessions", w.auditActions(), w.count(`select count(*) from backoffice_sessions`))
	}
	want = cookieAttrs{Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode}
	if diff := cmp.Diff(want, attrsOf(setCookie(t, resp, "vouch_session"))); diff != "" {
		t.Errorf("cleared session cookie (-want +got):\n%s", diff)
	}
	// Signed out already: still answered, still cleared, nothing recorded.
	before := len(w.auditActions())
	resp, _ = b.do(http.MethodPost, "/api/signout", "application/json", []byte(`{}`))
	if resp.StatusCode != http.StatusOK || setCookie(t, resp, "vouch_session").MaxAge != -1 || len(w.auditActions()) != before {
		t.Errorf("sign-out when signed out: %d, audit %v", resp.StatusCode, w.auditActions())
	}
}

// TestHTTPSOrigin: with an https origin the session cookie is
// __Host-vouch_session and Secure, and it is the one the back office reads.
func TestHTTPSOrigin(t *testing.T) {
	const origin = "https://backoffice.test"
	w := newWorld(t, func(c *backoffice.Config) { c.Origin = origin })
	gp := w.card("gp")
	b := w.browser()
	st, r := b.post("/api/challenge", map[string]string{"purpose": "sign-in"})
	if st != http.StatusOK || r.str("origin") != origin {
		t.Fatalf("challenge: %d %v", st, r)
	}
	ch := r.bytes(t, "challenge")
	body := `{"challenge":"` + b64(ch) + `","authCert":"` + b64(gp.authDER()) + `","signCert":"` + b64(gp.signDER()) +
		`","signature":"` + b64(rsaSign(t, gp.auth, protocol.LoginMessage(origin, ch))) + `"}`
	resp, out := b.do(http.MethodPost, "/api/signin", "application/json", []byte(body))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d %s", resp.StatusCode, out)
	}
	ck := setCookie(t, resp, "__Host-vouch_session")
	if !ck.Secure || ck.Path != "/" || ck.Domain != "" || !ck.HttpOnly {
		t.Errorf("session cookie %+v", ck)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "vouch_session" {
			t.Errorf("an http cookie too: %v", c)
		}
	}
	get := func(name string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, w.srv.URL+"/vouch", nil)
		req.AddCookie(&http.Cookie{Name: name, Value: ck.Value})
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Location")
	}
	if st, loc := get("__Host-vouch_session"); st != http.StatusOK {
		t.Errorf("with the __Host- cookie: %d %s", st, loc)
	}
	if st, loc := get("vouch_session"); st != http.StatusSeeOther || loc != "/signin" {
		t.Errorf("with the token under the http name: %d %s", st, loc)
	}
}

// TestMetrics: sign-ins and vouches are counted by result in the
// registry the back office was given.
func TestMetrics(t *testing.T) {
	w := newWorld(t, nil)
	reg := prometheus.NewRegistry()
	deps := w.deps
	deps.Metrics = reg
	w.svc = w.startOwn(deps)
	gp := w.card("gp")
	b := w.browser()
	b.mustSignIn(gp)
	if st, _ := w.browser().signIn(w.card("suspended")); st != http.StatusForbidden {
		t.Fatalf("suspended sign-in: %d", st)
	}
	_, code := phone(t)
	if st, r := b.vouch(gp, code.String(), ""); st != http.StatusOK {
		t.Fatalf("vouch: %d %v", st, r)
	}
	if st, _ := b.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": false}); st != http.StatusBadRequest {
		t.Fatalf("vouch without consent: %d", st)
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				got[mf.GetName()+"{"+l.GetValue()+"}"] = m.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{
		"vouch_backoffice_signins_total{ok}": 1, "vouch_backoffice_signins_total{license-suspended}": 1,
		"vouch_backoffice_vouches_total{ok}": 1, "vouch_backoffice_vouches_total{no-consent}": 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

// TestPendingLifetimeEdge: the card may sign a prepared statement up to
// PendingLifetime after it was prepared, to the microsecond, and not after.
func TestPendingLifetimeEdge(t *testing.T) {
	w := newWorld(t, nil)
	clk := newFrozen()
	deps := w.deps
	deps.Now = clk.Now
	w.svc = w.start(deps)
	gp := w.card("gp")
	b := w.browser()
	b.mustSignIn(gp)
	for _, tt := range []struct {
		after  time.Duration
		status int
	}{
		{backoffice.PendingLifetime + time.Microsecond, http.StatusConflict},
		{backoffice.PendingLifetime, http.StatusOK},
	} {
		_, code := phone(t)
		st, r := b.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true})
		if st != http.StatusOK {
			t.Fatalf("prepare: %d %v", st, r)
		}
		b.pass(clk.advance, tt.after)
		st, r = b.post("/api/vouch/sign", map[string]any{"signature": rsaSign(t, gp.sign, r.bytes(t, "statement"))})
		if st != tt.status {
			t.Errorf("signed %v after prepare: %d %v, want %d", tt.after, st, r, tt.status)
		}
	}
	// Nothing prepared: nothing to sign.
	if st, r := b.post("/api/vouch/sign", map[string]any{"signature": []byte("x")}); st != http.StatusConflict || r.str("error") != "no-pending-statement" {
		t.Errorf("sign without prepare: %d %v", st, r)
	}
}

// TestSeenKeepsTheSessionOpen: a request 30 s after the last one that was
// written counts as seen, so idle time starts again from it.
func TestSeenKeepsTheSessionOpen(t *testing.T) {
	w := newWorld(t, nil)
	clk := newFrozen()
	deps := w.deps
	deps.Now = clk.Now
	w.svc = w.start(deps)
	b := w.browser()
	b.mustSignIn(w.card("gp"))
	clk.advance(30 * time.Second) // seen now
	if st, _ := b.get("/vouch"); st != http.StatusOK {
		t.Fatalf("after 30 s: %d", st)
	}
	b.pass(clk.advance, w.cfg.IdleTimeout-time.Microsecond)
	if st, loc := b.get("/vouch"); st != http.StatusOK {
		t.Fatalf("idle just under %v since the last request: %d %s", w.cfg.IdleTimeout, st, loc)
	}
}

// TestQuotaAtPrepare: once the day's quota is used, prepare refuses
// already, before the clinician is asked for the PIN; the next day counts
// again from nothing.
func TestQuotaAtPrepare(t *testing.T) {
	w := newWorld(t, func(c *backoffice.Config) { c.DailyQuota = 1 })
	clk := newFrozen()
	deps := w.deps
	deps.Now = clk.Now
	w.svc = w.start(deps)
	gp := w.card("gp")
	b := w.browser()
	b.mustSignIn(gp)
	_, code := phone(t)
	if st, r := b.vouch(gp, code.String(), ""); st != http.StatusOK {
		t.Fatalf("vouch: %d %v", st, r)
	}
	st, r := b.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true})
	if st != http.StatusTooManyRequests || r.str("error") != "quota-reached" || !contains(r.str("message"), "1 times") {
		t.Fatalf("prepare over the quota: %d %v", st, r)
	}
	if n := w.count(`select count(*) from backoffice_sessions where pending_statement is not null`); n != 0 {
		t.Error("a statement was prepared over the quota")
	}
	if lastOf(w.auditActions()) != "vouch-refused:quota-reached" {
		t.Errorf("audit: %v", w.auditActions())
	}
}

// TestPagesAndRedirects: home sends each person where they belong; the
// pages a signed-out person asks for send them to sign in; the vouch page
// bounds the onset date.
func TestPagesAndRedirects(t *testing.T) {
	w := newWorld(t, nil)
	anon, gp, staff := w.browser(), w.browser(), w.browser()
	gp.mustSignIn(w.card("gp"))
	staff.mustSignIn(w.card("staff"))
	tests := []struct {
		b      *browser
		path   string
		status int
		loc    string
	}{
		{anon, "/", http.StatusSeeOther, "/signin"},
		{anon, "/vouch", http.StatusSeeOther, "/signin"},
		{anon, "/staff", http.StatusSeeOther, "/signin"},
		{gp, "/", http.StatusSeeOther, "/vouch"},
		{staff, "/", http.StatusSeeOther, "/staff"},
		{staff, "/vouch", http.StatusForbidden, ""}, // the route table: TestRouteTableRefusesMissingRoles
		{gp, "/staff", http.StatusOK, ""},
		{anon, "/signin", http.StatusOK, ""},
	}
	for _, tt := range tests {
		resp, _ := tt.b.do(http.MethodGet, tt.path, "", nil)
		if resp.StatusCode != tt.status || resp.Header.Get("Location") != tt.loc {
			t.Errorf("%s: %d %s, want %d %s", tt.path, resp.StatusCode, resp.Header.Get("Location"), tt.status, tt.loc)
		}
	}
	resp, page := gp.do(http.MethodGet, "/vouch", "", nil)
	today := time.Now().In(mustZone(t))
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	for _, want := range []string{"at most 28 days ago", `max="` + today.Format(time.DateOnly) + `"`,
		`min="` + today.AddDate(0, 0, -backoffice.MaxOnsetDays).Format(time.DateOnly) + `"`} {
		if !contains(string(page), want) {
			t.Errorf("vouch page without %q", want)
		}
	}
	if st, page := gp.get("/vouch"); st != http.StatusOK || contains(page, `data-locked="true"`) {
		t.Errorf("an unlocked session's page opens locked: %d", st)
	}
}

// TestSignedOutAndBadRequests: lock, unlock and the unlock challenge need a
// session; requests that lack what they need are bad requests; none of
// them changes anything or writes a row of its own (the signed-out ones
// are counted: TestRefusalsAreAudited).
func TestSignedOutAndBadRequests(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	anon, b := w.browser(), w.browser()
	b.mustSignIn(gp)
	ch := make([]byte, backoffice.ChallengeSize)
	full := map[string]any{"challenge": ch, "authCert": gp.authDER(), "signature": []byte("sig")}
	without := func(k string, short bool) map[string]any {
		m := map[string]any{}
		for kk, v := range full {
			m[kk] = v
		}
		if short {
			m[k] = ch[:backoffice.ChallengeSize-1]
		} else {
			delete(m, k)
		}
		return m
	}
	before := w.auditActions()
	tests := []struct {
		name   string
		b      *browser
		path   string
		body   any
		status int
		code   string
	}{
		{"lock, signed out", anon, "/api/lock", map[string]any{}, http.StatusUnauthorized, "signed-out"},
		{"unlock, signed out", anon, "/api/unlock", full, http.StatusUnauthorized, "signed-out"},
		{"unlock challenge, signed out", anon, "/api/challenge", map[string]string{"purpose": "unlock"}, http.StatusUnauthorized, "signed-out"},
		{"unlock, short challenge", b, "/api/unlock", without("challenge", true), http.StatusBadRequest, "bad-request"},
		{"unlock, no certificate", b, "/api/unlock", without("authCert", false), http.StatusBadRequest, "bad-request"},
		{"unlock, no signature", b, "/api/unlock", without("signature", false), http.StatusBadRequest, "bad-request"},
		{"sign-in, short challenge", anon, "/api/signin", without("challenge", true), http.StatusBadRequest, "bad-request"},
		{"sign-in, no certificate", anon, "/api/signin", without("authCert", false), http.StatusBadRequest, "bad-request"},
		{"sign-in, no signature", anon, "/api/signin", without("signature", false), http.StatusBadRequest, "bad-request"},
		{"sign-in, unknown field", anon, "/api/signin", map[string]any{"challenge": ch, "admin": true}, http.StatusBadRequest, "bad-request"},
		{"prepare, signed out", anon, "/api/vouch/prepare", map[string]any{"code": "x", "consent": true}, http.StatusUnauthorized, "signed-out"},
		{"sign, signed out", anon, "/api/vouch/sign", map[string]any{"signature": []byte("x")}, http.StatusUnauthorized, "signed-out"},
	}
	for _, tt := range tests {
		if st, r := tt.b.post(tt.path, tt.body); st != tt.status || r.str("error") != tt.code {
			t.Errorf("%s: %d %v, want %d %s", tt.name, st, r, tt.status, tt.code)
		}
	}
	// Trailing data after the JSON value.
	resp, out := b.do(http.MethodPost, "/api/challenge", "application/json", []byte(`{"purpose":"sign-in"} {}`))
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("trailing data: %d %s", resp.StatusCode, out)
	}
	if diff := cmp.Diff(before, w.auditActions()); diff != "" {
		t.Errorf("audit rows (-before +after):\n%s", diff)
	}
	if n := w.count(`select count(*) from backoffice_sessions where locked_at is not null`); n != 0 {
		t.Errorf("%d sessions locked", n)
	}
}

// TestAuditActors: a refused sign-in is recorded under the card's UZI
// number, a refused unlock under the session's; a second sign-in in the
// same browser replaces its session.
func TestAuditActors(t *testing.T) {
	w := newWorld(t, nil)
	gp, nurse := w.card("gp"), w.card("nurse")
	if st, _ := w.browser().signIn(w.card("suspended")); st != http.StatusForbidden {
		t.Fatalf("suspended: %d", st)
	}
	b := w.browser()
	b.mustSignIn(gp)
	b.mustSignIn(gp)
	if n := w.count(`select count(*) from backoffice_sessions`); n != 1 {
		t.Errorf("%d sessions after signing in twice in one browser, want 1", n)
	}
	if st, _ := b.post("/api/lock", map[string]any{}); st != http.StatusOK {
		t.Fatalf("lock: %d", st)
	}
	ch := b.challenge("unlock")
	if st, r := b.post("/api/unlock", map[string]any{"challenge": ch, "authCert": nurse.authDER(),
		"signature": rsaSign(t, nurse.auth, protocol.LoginMessage(w.origin, ch))}); st != http.StatusForbidden {
		t.Fatalf("unlock with the nurse's card: %d %v", st, r)
	}
	rows, err := w.db.Pool().Query(t.Context(), `select action || coalesce(':' || reason, '') || ' by ' || coalesce(actor, '') from audit_log order by seq`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	var suspended string
	for _, mc := range w.man.Cards {
		if mc.Name == "suspended" {
			suspended = mc.UZI
		}
	}
	want := []string{"sign-in-refused:license-suspended by " + suspended, "sign-in by 900000001", "sign-in by 900000001",
		"lock by 900000001", "unlock-refused:other-card by 900000001"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
}

// TestLanguageCookie: the language cookie is used when it names a
// language, else Accept-Language decides.
func TestLanguageCookie(t *testing.T) {
	w := newWorld(t, nil)
	tests := []struct {
		cookie, accept, want string
	}{
		{"nl", "en", "nl"},
		{"en", "nl", "en"},
		{"en-GB", "nl", "en"},
		{"xx", "nl", "nl"},
		{"", "nl", "nl"},
	}
	for _, tt := range tests {
		b := w.browser()
		b.lang = tt.accept
		if tt.cookie != "" {
			b.headers["Cookie"] = "vouch_lang=" + tt.cookie
		}
		if st, page := b.get("/signin"); st != http.StatusOK || !contains(page, `<html lang="`+tt.want+`">`) {
			t.Errorf("cookie %q, Accept-Language %q: %d, want %s", tt.cookie, tt.accept, st, tt.want)
		}
	}
	// A session cookie that is no token is no session.
	for _, v := range []string{"short", strings.Repeat("!", 43), strings.Repeat("A", 43)} {
		b := w.browser()
		b.headers["Cookie"] = "vouch_session=" + v
		if st, loc := b.get("/vouch"); st != http.StatusSeeOther || loc != "/signin" {
			t.Errorf("cookie %q: %d %s", v, st, loc)
		}
	}
}

// TestCodeCheckWithoutGroup: a mistyped code whose mistake is in no one
// group says to compare every group.
func TestCodeCheckWithoutGroup(t *testing.T) {
	w := newWorld(t, nil)
	b := w.browser()
	b.mustSignIn(w.card("gp"))
	typed := ""
	for i := 0; i < 1000 && typed == ""; i++ {
		_, code := phone(t)
		s := []byte(code.Compact())
		// Two groups changed: no one swap or look-alike explains it.
		s[1], s[9] = alt(s[1]), alt(s[9])
		if _, err := phonecode.Parse(string(s)); errors.Is(err, phonecode.ErrCheck) && phonecode.LikelyGroup(string(s)) == 0 {
			typed = string(s)
		}
	}
	if typed == "" {
		t.Fatal("no code found that is mistyped in no one group")
	}
	st, r := b.post("/api/vouch/prepare", map[string]any{"code": typed, "consent": true})
	if st != http.StatusBadRequest || r.str("error") != "code-check" || !contains(r.str("message"), "Compare every group") {
		t.Errorf("%s: %d %v", typed, st, r)
	}
}

func alt(c byte) byte {
	if c == 'X' {
		return 'Y'
	}
	return 'X'
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// TestVouchDetail: the vouch's audit row says whether an onset date was
// given, and never the date.
func TestVouchDetail(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	b := w.browser()
	b.mustSignIn(gp)
	onset := time.Now().In(mustZone(t)).AddDate(0, 0, -2).Format(time.DateOnly)
	for _, o := range []string{onset, ""} {
		_, code := phone(t)
		if st, r := b.vouch(gp, code.String(), o); st != http.StatusOK {
			t.Fatalf("vouch with onset %q: %d %v", o, st, r)
		}
	}
	rows, err := w.db.Pool().Query(t.Context(), `select detail::jsonb->>'onset_given', detail from audit_log where action = 'vouch' order by seq`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var given, detail string
		if err := rows.Scan(&given, &detail); err != nil {
			t.Fatal(err)
		}
		if contains(detail, onset) {
			t.Errorf("the onset date is in the audit row: %s", detail)
		}
		got = append(got, given)
	}
	if diff := cmp.Diff([]string{"true", "false"}, got); diff != "" {
		t.Errorf("onset_given (-want +got):\n%s", diff)
	}
}

// TestLargestCertificate: a refused sign-in with an authentication
// certificate of exactly protocol.MaxCertSize bytes is still recorded under
// the UZI number it names; one byte more is not read.
func TestLargestCertificate(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	for _, tt := range []struct {
		size  int
		actor string
	}{
		{protocol.MaxCertSize, "900000001"},
		{protocol.MaxCertSize + 1, ""},
	} {
		der := certOfSize(t, gp.authDER(), tt.size)
		b := w.browser()
		ch := b.challenge("sign-in")
		st, r := b.post("/api/signin", map[string]any{"challenge": ch, "authCert": der, "signature": []byte("not a signature")})
		if st == http.StatusOK {
			t.Fatalf("a self-signed certificate signed in: %v", r)
		}
		var actor string
		if err := w.db.Pool().QueryRow(t.Context(), `select coalesce(actor, '') from audit_log order by seq desc limit 1`).Scan(&actor); err != nil {
			t.Fatal(err)
		}
		if actor != tt.actor {
			t.Errorf("certificate of %d bytes (%s): recorded under %q, want %q", tt.size, r.str("error"), actor, tt.actor)
		}
	}
}

// certOfSize re-issues like's name and extensions, self-signed, padded with
// an extension of no meaning to exactly size bytes.
func certOfSize(t *testing.T, like []byte, size int) []byte {
	t.Helper()
	orig, err := x509.ParseCertificate(like)
	if err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pad := 100
	for range 20 {
		tmpl := &x509.Certificate{SerialNumber: orig.SerialNumber, Subject: orig.Subject, NotBefore: orig.NotBefore,
			NotAfter: orig.NotAfter, ExtraExtensions: append(slices.Clone(orig.Extensions),
				pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: make([]byte, pad)})}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(der) == size {
			return der
		}
		pad += size - len(der)
	}
	t.Fatalf("no certificate of %d bytes", size)
	return nil
}

// TestRefusalWithoutAuditRow: a refusal whose audit row cannot be written
// still refuses, and the missing row is logged for the operator; a row
// written is not.
func TestRefusalWithoutAuditRow(t *testing.T) {
	w := newWorld(t, nil)
	logs := &syncBuffer{}
	deps := w.deps
	deps.Log = slog.New(slog.NewTextHandler(logs, nil))
	deps.Metrics = prometheus.NewRegistry()
	w.svc = w.startOwn(deps)
	b := w.browser()
	b.mustSignIn(w.card("gp"))
	_, code := phone(t)
	noConsent := map[string]any{"code": code.String(), "consent": false}
	if st, r := b.post("/api/vouch/prepare", noConsent); st != http.StatusBadRequest || r.str("error") != "no-consent" {
		t.Fatalf("no consent: %d %v", st, r)
	}
	if contains(logs.String(), "audit row not written") {
		t.Errorf("a written row logged as missing:\n%s", logs.String())
	}
	for _, sql := range []string{
		`create function refuse() returns trigger language plpgsql as $$ begin raise exception 'refused (test)'; end $$`,
		`create trigger refuse_audit before insert on audit_log for each row execute function refuse()`,
	} {
		if _, err := w.db.Pool().Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
	}
	if st, r := b.post("/api/vouch/prepare", noConsent); st != http.StatusBadRequest || r.str("error") != "no-consent" {
		t.Fatalf("no consent, audit down: %d %v", st, r)
	}
	if !contains(logs.String(), "audit row not written") {
		t.Errorf("the missing row is not logged:\n%s", logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
