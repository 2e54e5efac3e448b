//go:build !mutation

package backoffice_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/stats"
)

// statsSeed writes counted days directly: the pages read only the
// statistics tables (internal/stats counts them; its tests check that).
func statsSeed(t *testing.T, w *world, days map[string][]stats.Row, clinicians map[string]int) {
	t.Helper()
	for day, rows := range days {
		if _, err := w.db.Pool().Exec(t.Context(), `insert into stats_days (day, computed_at) values ($1, now())`, day); err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if _, err := w.db.Pool().Exec(t.Context(), `insert into stats_daily (day, figure, label, value) values ($1, $2, $3, $4)`,
				day, r.Figure, r.Label, r.Value); err != nil {
				t.Fatal(err)
			}
		}
		for uzi, n := range clinicians {
			if _, err := w.db.Pool().Exec(t.Context(), `insert into stats_clinician_daily (day, uzi_number, vouched) values ($1, $2, $3)`,
				day, uzi, n); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestStatisticsPages: the auditor sees exact figures, their parts and the
// codes per card holder; anyone sees the public page and files, which hold
// days 48 hours over only, totals only, "<10" for small counts, and no
// card holder.
func TestStatisticsPages(t *testing.T) {
	w := rolesWorld(t, uziPharmacist)
	// Days of the real clock's (the cards' validity is): the one five days
	// ago is public, yesterday ended less than 48 hours ago.
	zone, _ := time.LoadLocation("Europe/Amsterdam")
	y, m, d := time.Now().In(zone).Date()
	day := func(back int) string { return time.Date(y, m, d-back, 0, 0, 0, 0, time.UTC).Format(time.DateOnly) }
	from, old, recent := day(6), day(5), day(1)
	r := strings.NewReplacer("2026-11-01", from, "2026-11-02", old, "2026-11-03", recent)
	statsSeed(t, w, map[string][]stats.Row{
		r.Replace("2026-11-02"): {{Figure: "vouches", Label: "01", Value: 1234}, {Figure: "vouches", Label: "03", Value: 7}, {Figure: "sign-ins", Value: 321}},
		r.Replace("2026-11-03"): {{Figure: "vouches", Label: "01", Value: 4321}, {Figure: "sign-ins", Value: 12}},
	}, map[string]int{"900000777": 55})

	auditor := w.browser()
	auditor.mustSignIn(w.card("pharmacist"))
	st, page := auditor.get(r.Replace("/statistics?from=2026-11-01&to=2026-11-03"))
	if st != http.StatusOK {
		t.Fatalf("auditor's page: %d\n%s", st, page)
	}
	for _, want := range []string{"1,234", "4,321", ">7<", "900000777", `role="img"`, "<title id=\"chart-vouches-title\">", "Doctors", "Midwives",
		r.Replace(`href="/statistics.csv?figure=vouches&amp;from=2026-11-01&amp;to=2026-11-03"`)} {
		if !strings.Contains(page, want) {
			t.Errorf("auditor's page lacks %q", want)
		}
	}

	anyone := w.browser()
	st, page = anyone.get(r.Replace("/statistics-public?from=2026-11-01&to=2026-11-03"))
	if st != http.StatusOK {
		t.Fatalf("public page: %d\n%s", st, page)
	}
	for _, want := range []string{"1,241", "&lt;10"} {
		if !strings.Contains(page, want) {
			t.Errorf("public page lacks %q", want)
		}
	}
	for _, bad := range []string{"4,321", "900000777", ">7<", "1,234", "Midwives", "Codes vouched for per care provider"} {
		if strings.Contains(page, bad) {
			t.Errorf("public page holds %q", bad)
		}
	}
	st, csv := anyone.get(r.Replace("/statistics-public.csv?from=2026-11-01&to=2026-11-03"))
	if st != http.StatusOK || !strings.Contains(csv, r.Replace("2026-11-02,day,vouches,,1241\n")) || !strings.Contains(csv, r.Replace("2026-11-02,day,refusals,,<10\n")) ||
		strings.Contains(csv, "vouches,03") ||
		strings.Contains(csv, r.Replace("2026-11-03")) || strings.Contains(csv, "900000777") {
		t.Errorf("public CSV: %d\n%s", st, csv)
	}
	st, js := anyone.get(r.Replace("/statistics-public.json?from=2026-11-01&to=2026-11-03&figure=vouches"))
	var f struct {
		Public bool
		Rows   []stats.FileRow
	}
	if err := json.Unmarshal([]byte(js), &f); st != http.StatusOK || err != nil || !f.Public || len(f.Rows) != 1 {
		t.Errorf("public JSON: %d %v\n%s", st, err, js)
	}
	st, csv = auditor.get(r.Replace("/statistics.csv?from=2026-11-01&to=2026-11-03&figure=vouches&kind=day"))
	if st != http.StatusOK || !strings.Contains(csv, r.Replace("2026-11-02,day,vouches,03,7\n")) || !strings.Contains(csv, r.Replace("2026-11-03,day,vouches,,4321\n")) {
		t.Errorf("auditor's CSV: %d\n%s", st, csv)
	}

	// Refused queries change nothing and say why, in the page's language.
	for _, q := range []string{"from=2026-13-01", "from=" + day(0) + "&to=" + recent, "to=2030-01-01", "figure=uzi_number"} {
		if st, page := anyone.get("/statistics-public.csv?" + q); st != http.StatusBadRequest || strings.Contains(page, "stats:") {
			t.Errorf("%s: %d %s", q, st, page)
		}
	}
	if st, page := anyone.get("/statistics-public?from=2026-02-30"); st != http.StatusBadRequest || !strings.Contains(page, "write it as year-month-day") {
		t.Errorf("bad date on the page: %d", st)
	}
	// Not an auditor: the auditors' files are refused like their page.
	if st, _ := anyone.get("/statistics.csv"); st == http.StatusOK {
		t.Errorf("the auditors' CSV without a session: %d", st)
	}
}

// TestStatisticsPagesFollowTheCount: the pages are laid out once for all
// their readers, and again once a day is counted or counted again — never
// a stale page after the count, and in each reader's language.
func TestStatisticsPagesFollowTheCount(t *testing.T) {
	w := rolesWorld(t, uziPharmacist)
	zone, _ := time.LoadLocation("Europe/Amsterdam")
	y, m, d := time.Now().In(zone).Date()
	day := func(back int) string { return time.Date(y, m, d-back, 0, 0, 0, 0, time.UTC).Format(time.DateOnly) }
	auditor := w.browser()
	auditor.mustSignIn(w.card("pharmacist"))
	url := "/statistics?from=" + day(6) + "&to=" + day(1)
	// No day counted yet: each chart's table says so, not only its head.
	if st, body := auditor.get(url); st != http.StatusOK || !strings.Contains(body, `<td colspan="2">No figures for these days.</td>`) {
		t.Errorf("no days counted: %d, the tables do not say there are no figures", st)
	}
	statsSeed(t, w, map[string][]stats.Row{day(5): {{Figure: "vouches", Label: "01", Value: 1234}}}, nil)
	page := func(want ...string) {
		t.Helper()
		st, body := auditor.get(url)
		if st != http.StatusOK {
			t.Fatalf("%d\n%s", st, body)
		}
		for _, s := range want {
			if !strings.Contains(body, s) {
				t.Errorf("page lacks %q", s)
			}
		}
	}
	page("1,234")
	page("1,234") // laid out before
	// A new day counted.
	statsSeed(t, w, map[string][]stats.Row{day(4): {{Figure: "vouches", Label: "01", Value: 5678}}}, nil)
	page("1,234", "5,678")
	// A day counted again with another figure, as an operator may ask.
	if _, err := w.db.Pool().Exec(t.Context(), `update stats_daily set value = 4321 where day = $1`, day(4)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.db.Pool().Exec(t.Context(), `update stats_days set computed_at = now() + interval '1 second' where day = $1`, day(4)); err != nil {
		t.Fatal(err)
	}
	page("4,321")
	// Another language is laid out for itself.
	if st, _ := auditor.form("/lang", map[string][]string{"lang": {"nl"}}); st >= 400 {
		t.Fatalf("language switch: %d", st)
	}
	page("4.321")
}
