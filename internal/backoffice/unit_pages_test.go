package backoffice

// The fast layer, continued (see unit_test.go): where the pages send a
// person, what they show, and the audit entries and metrics of a request,
// with a database that is never opened.

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/server"
)

func TestUnitRedirects(t *testing.T) {
	t.Parallel()
	s := unitService(t, nil)
	for _, tt := range []struct {
		handler string
		sess    *session
		want    string
	}{
		{"home", nil, "/signin"},
		{"home", &session{Role: roleClinician}, "/vouch"},
		{"home", &session{Role: roleStaff}, "/staff"},
		{"vouch", nil, "/signin"},
		{"vouch", &session{Role: roleStaff}, "/staff"},
		{"staff", nil, "/signin"},
	} {
		c, w := unitContext(s, httptest.NewRequest(http.MethodGet, "/", nil))
		if tt.sess != nil {
			c.Set(sessionKey, tt.sess)
		}
		h := map[string]echo.HandlerFunc{"home": s.home, "vouch": s.vouchPage, "staff": s.staffPage}[tt.handler]
		if err := h(c); err != nil || w.Code != http.StatusSeeOther || w.Header().Get("Location") != tt.want {
			t.Errorf("%s, %+v: %d %s %v, want %s", tt.handler, tt.sess, w.Code, w.Header().Get("Location"), err, tt.want)
		}
	}
}

// TestUnitVouchPage: the onset field allows today back to MaxOnsetDays,
// in the back office's zone; the page is never cached and shows who is
// signed in, but nothing of a locked session's holder.
func TestUnitVouchPage(t *testing.T) {
	t.Parallel()
	d := unitDeps(t)
	now := time.Date(2026, 12, 7, 23, 30, 0, 0, time.UTC) // 8 December in Amsterdam
	d.Now = func() time.Time { return now }
	cfg := unitConfig()
	cfg.DailyQuota = 7
	s, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	c, w := unitContext(s, httptest.NewRequest(http.MethodGet, "/vouch", nil))
	c.Set(server.LangKey, "en")
	c.Set(sessionKey, &session{Role: roleClinician, UZI: "900000001", Holder: "A. Huisarts", CardType: "Z"})
	if err := s.vouchPage(c); err != nil {
		t.Fatal(err)
	}
	body := w.Body.String()
	for _, want := range []string{`data-min="2026-11-10"`, `data-max="2026-12-08"`, `data-uzi="900000001"`, "A. Huisarts", `lang="en"`, `data-page="vouch"`, "28"} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("%d, Cache-Control %q", w.Code, w.Header().Get("Cache-Control"))
	}

	locked := now
	c, w = unitContext(s, httptest.NewRequest(http.MethodGet, "/vouch", nil))
	c.Set(sessionKey, &session{Role: roleClinician, UZI: "900000001", Holder: "A. Huisarts", LockedAt: &locked})
	if err := s.renderStatus(c, http.StatusLocked, "locked", page{}); err != nil {
		t.Fatal(err)
	}
	body = w.Body.String()
	if w.Code != http.StatusLocked || strings.Contains(body, "900000001") || strings.Contains(body, "Huisarts") || !strings.Contains(body, `data-locked="true"`) {
		t.Errorf("locked page: %d, shows the holder or not locked:\n%s", w.Code, body)
	}
	c, w = unitContext(s, httptest.NewRequest(http.MethodGet, "/signin", nil))
	if err := s.signInPage(c); err != nil || w.Code != http.StatusOK || strings.Contains(w.Body.String(), "data-locked") {
		t.Errorf("sign-in page: %d %v", w.Code, err)
	}
}

// TestUnitEntry: an audit entry names the session's card holder and the
// request's address; a tallied refusal without a subject gets the route.
func TestUnitEntry(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)
	d := unitDeps(t)
	d.Now = func() time.Time { return now }
	s, err := New(unitConfig(), d)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/api/x", nil)
	r.RemoteAddr = "192.0.2.9:1"
	r.Header.Set("User-Agent", "ua")
	c, _ := unitContext(s, r)
	c.SetPath("/api/x")
	if e := entry(c, "act", "why"); e != (audit.Entry{Action: "act", Reason: "why", IP: "192.0.2.9", UserAgent: "ua"}) {
		t.Errorf("signed out: %+v", e)
	}
	c.Set(sessionKey, &session{UZI: "900000001"})
	if e := entry(c, "act", ""); e.Actor != "900000001" {
		t.Errorf("signed in: %+v", e)
	}
	s.tally(c, audit.Entry{Action: "a", Reason: "r"})
	s.tally(c, audit.Entry{Action: "a", Reason: "s", Subject: "given"})
	m := s.refused.take(now, true)
	if len(m) != 1 || len(m[0].order) != 2 {
		t.Fatalf("%+v", m)
	}
	first := m[0].counts[refusalKey{"", "192.0.2.9", "a", "r"}]
	second := m[0].counts[refusalKey{"", "192.0.2.9", "a", "s"}]
	if first == nil || first.first.Subject != "POST /api/x" || first.first.UserAgent != "ua" || second == nil || second.first.Subject != "given" {
		t.Errorf("%+v %+v", first, second)
	}
}

func TestUnitMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	d := unitDeps(t)
	d.Metrics = reg
	s, err := New(unitConfig(), d)
	if err != nil {
		t.Fatal(err)
	}
	s.metrics.signins.WithLabelValues("ok").Inc()
	s.metrics.vouches.WithLabelValues("ok").Add(2)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] += m.GetCounter().GetValue()
		}
	}
	if got["vouch_backoffice_signins_total"] != 1 || got["vouch_backoffice_vouches_total"] != 2 || len(got) != 2 {
		t.Errorf("%v", got)
	}
}

func TestUnitTf(t *testing.T) {
	t.Parallel()
	for _, kv := range [][]any{{"Days", 28}, {"Days", 28, "Lonely"}} {
		if got := (tr{"en"}).Tf("page.vouch.onset-hint", kv...); !strings.Contains(got, "28") {
			t.Errorf("Tf(%v) = %q", kv, got)
		}
	}
}

// TestUnitSessionCookieShape: a session cookie that is not 43 base64url
// characters (32 bytes) is not looked up: the request goes on signed out.
func TestUnitSessionCookieShape(t *testing.T) {
	t.Parallel()
	s := unitService(t, func(c *Config) { c.Origin = "http://127.0.0.1:8080" })
	for _, v := range []string{"", strings.Repeat("A", 42), strings.Repeat("A", 44), strings.Repeat("A", 42) + "!", strings.Repeat("A", 42) + "="} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: v})
		c, _ := unitContext(s, r)
		reached := false
		err := s.loadSession(func(c echo.Context) error { reached = sessionOf(c) == nil; return nil })(c)
		if err != nil || !reached {
			t.Errorf("cookie %q: %v, reached signed out %v", v, err, reached)
		}
	}
}
