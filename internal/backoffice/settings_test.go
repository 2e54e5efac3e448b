//go:build !mutation

package backoffice_test

// Settings on real parts: each number at its hard limit and one past it
// (refused in the admin's language, nothing changed), the audit rows with
// the old and the new value, a stale version refused, and the settings in
// effect where they are consumed — the quota, the professions, an
// authorization's validity, the languages offered — and in another copy
// within its refresh. Not parallel: worlds share the SoftHSM tokens.

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/settings"
)

// settingsRefresh is how often the test copies read the settings again.
const settingsRefresh = 200 * time.Millisecond

// settingsStore opens the settings of w's database as a copy does, with
// the default limits, and keeps it current until the test ends.
func settingsStore(w *world) *settings.Store {
	w.t.Helper()
	rules, err := settings.NewRules(w.cfg.Settings, settings.Bounds{DailyQuota: w.cfg.DailyQuota, MaxRegisterStaleness: 24 * time.Hour,
		Professions: w.deps.Professions, Languages: i18n.Default().Languages()})
	if err != nil {
		w.t.Fatal(err)
	}
	st, err := settings.Open(w.t.Context(), w.db.Pool(), rules, settingsRefresh, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { st.Run(ctx); close(done) }()
	w.t.Cleanup(func() { cancel(); <-done })
	return st
}

// settingsWorld is a world whose admin is the N card (staff), on a copy
// whose settings are in PostgreSQL.
func settingsWorld(t *testing.T) *world {
	t.Helper()
	w := rolesWorld(t, uziStaff)
	w.deps.Settings = settingsStore(w)
	w.svc = w.start(w.deps)
	w.run(w.svc)
	return w
}

// setting posts the settings page's form of name.
func (b *browser) setting(name settings.Name, version int, values ...string) (int, string) {
	b.w.t.Helper()
	return b.form("/settings", url.Values{"name": {string(name)}, "version": {strconv.Itoa(version)}, "value": values})
}

// stored is a setting's row as "value@version", "" when never set.
func (w *world) stored(name settings.Name) string {
	w.t.Helper()
	var s string
	if err := w.db.Pool().QueryRow(w.t.Context(), `select coalesce((select value::text || '@' || version from settings where name = $1), '')`,
		string(name)).Scan(&s); err != nil {
		w.t.Fatal(err)
	}
	return s
}

// TestSettingsAtTheirLimits: each number setting takes its hard limit (the
// configuration's defaults here) and refuses one past it, in the admin's
// language (Dutch), with the limit in words, changing nothing but an
// audit row of the refusal; a change's audit row holds the old and the
// new value.
func TestSettingsAtTheirLimits(t *testing.T) {
	w := settingsWorld(t)
	admin := w.browser()
	admin.lang = "nl"
	admin.mustSignIn(w.card("staff"))
	tests := []struct {
		name      settings.Name
		old, max  int
		maxInDuch string // the refusal names the limit
	}{
		{settings.DailyQuota, 50, 500, "hoogstens 500 codes per dag"},
		{settings.AuthorizationValidity, 24, 24, "hoogstens 24 uur"},
		{settings.RegisterStaleness, 1440, 1440, "hoogstens 1.440 minuten"},
		{settings.AuthorizationsKeep, 30, 30, "hoogstens 30 dagen"},
		{settings.AccessLogsKeep, 48, 48, "hoogstens 48 uur"},
		{settings.AuditKeep, 6, 10, "hoogstens 10 jaar"},
	}
	for _, tt := range tests {
		seq := w.lastSeq()
		version := 0
		if tt.old != tt.max { // at the limit already: saving it again changes nothing
			if st, loc := admin.setting(tt.name, 0, strconv.Itoa(tt.max)); st != http.StatusSeeOther || loc != "/settings?done="+string(tt.name) {
				t.Fatalf("%s at its limit %d: %d %s", tt.name, tt.max, st, loc)
			}
			version = 1
		}
		before := w.stored(tt.name)
		st, page := admin.setting(tt.name, version, strconv.Itoa(tt.max+1))
		if st != http.StatusBadRequest || !contains(page, tt.maxInDuch) || !contains(page, "Er is niets gewijzigd") ||
			!contains(page, `aria-invalid="true"`) || !contains(page, `id="`+string(tt.name)+`-problem"`) {
			t.Errorf("%s past its limit: %d, the page does not say why in Dutch (%q)", tt.name, st, tt.maxInDuch)
		}
		if after := w.stored(tt.name); after != before {
			t.Errorf("%s past its limit changed it: %s → %s", tt.name, before, after)
		}
		var want []string
		if version == 1 {
			want = append(want, "setting-changed by "+uziStaff+" on "+string(tt.name))
		}
		want = append(want, "setting-refused:setting-above-limit by "+uziStaff+" on "+string(tt.name))
		if diff := cmp.Diff(want, w.auditRows(seq)); diff != "" {
			t.Errorf("%s: audit (-want +got):\n%s", tt.name, diff)
		}
	}
	// The audit row of a change: the old value (the default) and the new.
	var detail map[string]any
	var raw string
	if err := w.db.Pool().QueryRow(t.Context(), `select detail from audit_log where action = 'setting-changed' and subject = 'daily-quota'`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(raw), &detail); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]any{"old": "50", "old_default": true, "new": "500", "version": float64(1)}, detail); diff != "" {
		t.Errorf("audit detail (-want +got):\n%s", diff)
	}
	// Lists: a choice not offered, and none.
	for _, c := range []struct {
		name   settings.Name
		values []string
		code   string
	}{{settings.Professions, []string{"01", "17"}, "setting-choice-unknown"}, {settings.Languages, nil, "setting-empty"}} {
		seq := w.lastSeq()
		if st, _ := admin.setting(c.name, 0, c.values...); st != http.StatusBadRequest || w.stored(c.name) != "" {
			t.Errorf("%s %v: %d, stored %q", c.name, c.values, st, w.stored(c.name))
		}
		if diff := cmp.Diff([]string{"setting-refused:" + c.code + " by " + uziStaff + " on " + string(c.name)}, w.auditRows(seq)); diff != "" {
			t.Errorf("%s: audit (-want +got):\n%s", c.name, diff)
		}
	}
	// Not a number, and a version that is no number: refused, nothing kept.
	if st, _ := admin.setting(settings.DailyQuota, 1, "veel"); st != http.StatusBadRequest || w.stored(settings.DailyQuota) != `{"number": 500}@1` {
		t.Errorf("not a number: %d %s", st, w.stored(settings.DailyQuota))
	}
	if st, _ := admin.form("/settings", url.Values{"name": {"daily-quota"}, "version": {"x"}, "value": {"5"}}); st != http.StatusBadRequest {
		t.Errorf("a version that is no number: %d", st)
	}
	if st, _ := admin.form("/settings", url.Values{"name": {"colour"}, "version": {"0"}, "value": {"5"}}); st != http.StatusBadRequest {
		t.Errorf("no such setting: %d", st)
	}
}

// TestSettingsStaleVersion: two admins opened the page at version 0; the
// first saves, the second is refused with 409 and told what is in effect
// now; nothing of theirs is written.
func TestSettingsStaleVersion(t *testing.T) {
	w := settingsWorld(t)
	first, second := w.browser(), w.browser()
	first.mustSignIn(w.card("staff"))
	second.mustSignIn(w.card("staff"))
	if st, _ := first.setting(settings.DailyQuota, 0, "40"); st != http.StatusSeeOther {
		t.Fatalf("first: %d", st)
	}
	seq := w.lastSeq()
	st, page := second.setting(settings.DailyQuota, 0, "45")
	if st != http.StatusConflict || !contains(page, "Another administrator changed this setting") || !contains(page, "it is now 40 codes a day") ||
		!contains(page, `name="version" value="1"`) {
		t.Errorf("the second admin: %d, not told", st)
	}
	if got := w.stored(settings.DailyQuota); got != `{"number": 40}@1` {
		t.Errorf("stored %s, want the first admin's", got)
	}
	if diff := cmp.Diff([]string{"setting-refused:setting-stale-version by " + uziStaff + " on daily-quota"}, w.auditRows(seq)); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
}

// TestSettingsTakeEffect: the quota lowered refuses the next vouch over
// it; a validity changed is the next authorization's; a profession
// removed stops its cards vouching at once (and signing in as clinicians);
// languages not offered are neither shown, nor chosen, nor matched.
func TestSettingsTakeEffect(t *testing.T) {
	w := settingsWorld(t)
	admin, gp, nurse := w.browser(), w.browser(), w.browser()
	admin.mustSignIn(w.card("staff"))
	gp.mustSignIn(w.card("gp"))
	nurse.mustSignIn(w.card("nurse"))
	_, code := phone(t)
	if st, r := gp.vouch(w.card("gp"), code.String(), ""); st != http.StatusOK {
		t.Fatalf("vouch: %d %v", st, r)
	}
	// Quota 1: the GP has vouched once today.
	if st, _ := admin.setting(settings.DailyQuota, 0, "1"); st != http.StatusSeeOther {
		t.Fatalf("quota: %d", st)
	}
	_, code = phone(t)
	if st, r := gp.vouch(w.card("gp"), code.String(), ""); st != http.StatusTooManyRequests || r.str("error") != "quota-reached" {
		t.Errorf("a vouch over the lowered quota: %d %v", st, r)
	}
	// Validity 2 hours.
	if st, _ := admin.setting(settings.AuthorizationValidity, 0, "2"); st != http.StatusSeeOther {
		t.Fatalf("validity: %d", st)
	}
	_, code = phone(t)
	st, r := nurse.vouch(w.card("nurse"), code.String(), "")
	if st != http.StatusOK {
		t.Fatalf("nurse vouch: %d %v", st, r)
	}
	vouched, _ := time.Parse(time.RFC3339, r.str("vouchedAt"))
	valid, _ := time.Parse(time.RFC3339, r.str("validUntil"))
	if d := valid.Sub(vouched.Truncate(time.Second)); d != 2*time.Hour {
		t.Errorf("valid for %s, want the 2 hours set", d)
	}
	// Nurses (30) no longer vouch.
	if st, _ := admin.setting(settings.Professions, 0, "01", "02", "03"); st != http.StatusSeeOther {
		t.Fatalf("professions: %d", st)
	}
	_, code = phone(t)
	if st, r := nurse.vouch(w.card("nurse"), code.String(), ""); st != http.StatusForbidden || r.str("error") != "role-may-not-vouch" {
		t.Errorf("a nurse's vouch once nurses may not: %d %v", st, r)
	}
	again := w.browser()
	if st, r := again.signIn(w.card("nurse")); st != http.StatusOK || r.str("role") != "staff" {
		t.Errorf("a nurse signing in once nurses may not vouch: %d %v", st, r)
	}
	// Languages: Dutch and English only.
	if st, _ := admin.setting(settings.Languages, 0, "nl", "en"); st != http.StatusSeeOther {
		t.Fatalf("languages: %d", st)
	}
	fr := w.browser()
	fr.lang = "fr-CH, de;q=0.8, nl;q=0.5"
	if st, page := fr.get("/signin"); st != http.StatusOK || !contains(page, `<html lang="nl">`) || contains(page, `value="fr"`) {
		t.Errorf("a French browser when French is not offered: %d, not in Dutch or French still offered", st)
	}
	if st, _ := fr.form("/lang", url.Values{"lang": {"fr"}, "back": {"/signin"}}); st != http.StatusBadRequest {
		t.Errorf("French chosen when not offered: %d", st)
	}
	if st, loc := fr.form("/lang", url.Values{"lang": {"en"}, "back": {"/signin"}}); st != http.StatusSeeOther || loc != "/signin" {
		t.Errorf("English chosen: %d %s", st, loc)
	}
}

// TestSettingsReachAnotherCopy: a change made through one copy is in effect
// in another, running on the same database, within its refresh — here by
// the NOTIFY, well before.
func TestSettingsReachAnotherCopy(t *testing.T) {
	w := settingsWorld(t)
	other := settingsStore(w) // the other copy's, read before the change
	depsB := w.deps
	depsB.Settings = other
	admin, gp := w.browser(), w.browser()
	admin.mustSignIn(w.card("staff"))
	gp.mustSignIn(w.card("gp"))
	if st, _ := admin.setting(settings.DailyQuota, 0, "1"); st != http.StatusSeeOther {
		t.Fatalf("quota: %d", st)
	}
	start := time.Now()
	for other.Current().DailyQuota != 1 {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the other copy still has quota %d", other.Current().DailyQuota)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("in effect in the other copy after %s (refresh %s)", time.Since(start).Round(time.Millisecond), settingsRefresh)
	w.start(depsB) // the requests go to the other copy now
	for i, want := range []int{http.StatusOK, http.StatusTooManyRequests} {
		_, code := phone(t)
		if st, r := gp.vouch(w.card("gp"), code.String(), ""); st != want {
			t.Errorf("vouch %d on the other copy: %d %v, want %d", i+1, st, r, want)
		}
	}
}

// TestQuotaPage: an auditor sees today's count of each card against the
// quota and the cards that reached it this week; a card refused at the
// quota is among them.
func TestQuotaPage(t *testing.T) {
	w := settingsWorld(t)
	admin, gp := w.browser(), w.browser()
	admin.mustSignIn(w.card("staff"))
	gp.mustSignIn(w.card("gp"))
	if st, _ := admin.setting(settings.DailyQuota, 0, "2"); st != http.StatusSeeOther {
		t.Fatalf("quota: %d", st)
	}
	for range 3 {
		_, code := phone(t)
		gp.vouch(w.card("gp"), code.String(), "")
	}
	st, page := admin.get("/quota")
	if st != http.StatusOK || !contains(page, "The daily quota is 2 codes per card") || !contains(page, "<td>"+uziGP+"</td><td>2 (quota reached)</td><td>0</td>") {
		t.Errorf("quota page today: %d", st)
	}
	if !contains(page, `id="quota-hits"`) || !contains(page, "<td>2</td><td>1</td>") {
		t.Errorf("quota page: the GP's day at the quota, with one refusal, is not listed")
	}
	if st, _ := gp.get("/quota"); st != http.StatusForbidden {
		t.Errorf("a clinician opens the quota page: %d", st)
	}
}
