//go:build !mutation

package backoffice_test

// The audit trail's pages on real parts: the filter and keyset pages
// across rows of one time, the CSV and JSON downloads equal to the table
// with their signature by the attestation key, malformed filters refused,
// and the chain's verification in the background finding a tampered row.
// Not parallel: worlds share the SoftHSM tokens (boundaries_test.go).

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/trust"
)

// trailWorld is a world with an auditor signed in (the pharmacist) and a
// log of 150 rows more, several at each time, some refused.
func trailWorld(t *testing.T) (*world, *browser) {
	t.Helper()
	w := newWorld(t, nil)
	if _, err := w.db.Pool().Exec(t.Context(), `insert into backoffice_roles (uzi_number, role, granted_by, granted_at)
		values ($1, 'auditor', 'VOUCH_BOOTSTRAP_ADMINS', now())`, uziPharmacist); err != nil {
		t.Fatal(err)
	}
	b := w.browser()
	b.mustSignIn(w.card("pharmacist"))
	w.trailRows(150, time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC))
	return w, b
}

// trailRows appends n rows from start on, three at each minute, as
// different card holders, actions and reasons.
func (w *world) trailRows(n int, start time.Time) {
	w.t.Helper()
	actors := []string{uziGP, uziDoctor, uziNurse, uziStaff}
	actions := []string{audit.ActionSignIn, audit.ActionVouch, audit.ActionVouchRefused, audit.ActionSignOut, audit.ActionSignInRefused}
	for i := range n {
		e := audit.Entry{Actor: actors[i%len(actors)], Action: actions[i%len(actions)], IP: "192.0.2.7", UserAgent: "+test <agent>"}
		if strings.HasSuffix(e.Action, "-refused") {
			e.Reason = []string{"quota-reached", "cert-revoked", "onset-future"}[i%3]
			e.Subject = "POST /api/vouch/sign"
		}
		if err := w.db.InTx(context.Background(), func(tx pgx.Tx) error {
			_, err := audit.Append(context.Background(), tx, e, start.Add(time.Duration(i/3)*time.Minute))
			return err
		}); err != nil {
			w.t.Fatal(err)
		}
	}
}

var (
	trailRowRe  = regexp.MustCompile(`(?s)<tr data-seq="(\d+)">(.*?)</tr>`)
	trailCellRe = regexp.MustCompile(`(?s)<td>(.*?)</td>`)
	tagRe       = regexp.MustCompile(`<[^>]*>`)
)

// tableRows are the table's rows as "seq|time|actor|action|subject|result|reason".
func tableRows(page string) []string {
	var out []string
	for _, m := range trailRowRe.FindAllStringSubmatch(page, -1) {
		var cells []string
		for _, c := range trailCellRe.FindAllStringSubmatch(m[2], -1) {
			cells = append(cells, strings.Join(strings.Fields(html.UnescapeString(tagRe.ReplaceAllString(c[1], " "))), " "))
		}
		cells[0] = m[1] // the seq as a number, not as the language groups it
		out = append(out, strings.Join(cells, "|"))
	}
	return out
}

// rowLine is a downloaded row as the English table shows it.
func rowLine(r audit.Row) string {
	zone, _ := time.LoadLocation("Europe/Amsterdam")
	result := "done"
	if r.Refused() {
		result = "refused"
	}
	reason := ""
	if r.Reason != "" {
		reason = map[string]string{"quota-reached": "The day's limit of vouches for one card was reached.",
			"cert-revoked": "The clinician's card has been revoked.", "onset-future": i18n.T("en", "vouch.onset-future")}[r.Reason] + " " + r.Reason
	}
	return strings.Join([]string{fmt.Sprint(r.Seq), r.At.In(zone).Format("2006-01-02 15:04"), r.Actor,
		i18n.T("en", "audit.action."+r.Action), r.Subject, result, strings.TrimSpace(reason)}, "|")
}

// link finds the href of the element with id in page.
func link(page, id string) string {
	m := regexp.MustCompile(`href="([^"]*)" id="` + id + `"`).FindStringSubmatch(page)
	if m == nil {
		m = regexp.MustCompile(`id="` + id + `"[^>]*href="([^"]*)"`).FindStringSubmatch(page)
	}
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

// walk follows the pages from path by the link id, and returns every
// page's table rows and the last page.
func (b *browser) walk(path, id string) (pages [][]string, last string) {
	b.w.t.Helper()
	for path != "" {
		st, page := b.get(path)
		if st != http.StatusOK {
			b.w.t.Fatalf("%s: %d", path, st)
		}
		rows := tableRows(page)
		if len(rows) > 50 {
			b.w.t.Fatalf("%s: %d rows on a page", path, len(rows))
		}
		pages = append(pages, rows)
		last, path = page, link(page, id)
		if len(pages) > 20 {
			b.w.t.Fatal("the pages do not end")
		}
	}
	return pages, last
}

// TestAuditTrailPagesEqualDownloads: for each filter, the pages walked
// older and back newer hold each row once, in the trail's order, across
// page ends between rows of one minute; the CSV and JSON downloads of the
// first page's links hold exactly the table's rows, even after rows were
// appended, and their signature verifies with the attestation key and not
// after a one-byte change; each download and signature is an audit row.
func TestAuditTrailPagesEqualDownloads(t *testing.T) {
	w, b := trailWorld(t)
	pub, err := trust.ReadECPublicKey(w.man.Backend.AttestationPub)
	if err != nil {
		t.Fatal(err)
	}
	keys := []crypto.PublicKey{pub}
	filters := []url.Values{
		{},
		{"actor": {uziNurse}},
		{"result": {"refused"}},
		{"action": {"vouch"}, "from": {"2026-11-02T10:00"}, "to": {"2026-11-02"}},
		{"reason": {"cert-revoked"}, "result": {"refused"}},
		{"actor": {uziGP}, "action": {"sign-out"}},
	}
	for _, f := range filters {
		first := "/audit"
		if len(f) > 0 {
			first += "?" + f.Encode()
		}
		pages, lastPage := b.walk(first, "page-older")
		table := slices.Concat(pages...)
		if len(f) == 0 && len(pages) < 3 {
			t.Fatalf("%d pages of the whole log", len(pages))
		}
		// Back again, newer from the last page, page by page.
		if len(pages) > 1 {
			back, _ := b.walk(link(lastPage, "page-newer"), "page-newer")
			slices.Reverse(back)
			if diff := cmp.Diff(pages[:len(pages)-1], back); diff != "" {
				t.Errorf("%v: pages walked back (-forward +back):\n%s", f, diff)
			}
		}
		// Rows appended now are not in the pinned downloads.
		_, page := b.get(first)
		w.trailRows(2, time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC))
		for _, format := range []string{"csv", "json"} {
			seq := w.lastSeq()
			st, body := b.get(link(page, "download-"+format))
			if st != http.StatusOK {
				t.Fatalf("%v %s: %d %s", f, format, st, body)
			}
			var got []string
			if _, err := audit.Decode(strings.NewReader(body), format, func(r audit.Row) error {
				got = append(got, rowLine(r))
				return nil
			}); err != nil {
				t.Fatalf("%v %s: %v", f, format, err)
			}
			if diff := cmp.Diff(table, got); diff != "" {
				t.Errorf("%v: the %s is not the table (-table +file):\n%s", f, format, diff)
			}
			_, sig := b.get(link(page, "signature-"+format))
			stmt, err := audit.VerifyDownload(strings.NewReader(body), []byte(sig), keys)
			if err != nil {
				t.Fatalf("%v %s: %v", f, format, err)
			}
			if stmt.Filter != f.Encode() || stmt.Rows != int64(len(table)) {
				t.Errorf("%v %s: statement %+v", f, format, stmt)
			}
			bad := []byte(body)
			bad[len(bad)/2] ^= 0x20
			if _, err := audit.VerifyDownload(bytes.NewReader(bad), []byte(sig), keys); !errors.Is(err, audit.ErrFileChanged) {
				t.Errorf("%v %s: one byte changed: %v", f, format, err)
			}
			want := []string{"audit-download by " + uziPharmacist + " on " + format, "audit-signature by " + uziPharmacist + " on " + format}
			if diff := cmp.Diff(want, w.auditRows(seq)); diff != "" {
				t.Errorf("%v %s: audit (-want +got):\n%s", f, format, diff)
			}
		}
	}
	// A download without its pin is sent to the head now.
	if st, loc := b.get("/audit-download?format=csv&actor=" + uziGP); st != http.StatusSeeOther || !strings.Contains(loc, "upto=") {
		t.Errorf("an unpinned download: %d %s", st, loc)
	}
}

// TestAuditTrailRefusesMalformedFilters: a filter of the wrong form is
// refused with what is wrong, in the auditor's language, shows no rows,
// and downloads nothing (no download row in the log).
func TestAuditTrailRefusesMalformedFilters(t *testing.T) {
	w, b := trailWorld(t)
	head := w.lastSeq()
	tests := []struct{ query, msg string }{
		{"actor=12345", "audittrail.bad.actor"},
		{"actor=90000000x", "audittrail.bad.actor"},
		{"action=drop-table", "audittrail.bad.action"},
		{"result=maybe", "audittrail.bad.result"},
		{"reason=" + url.QueryEscape("a b"), "audittrail.bad.reason"},
		{"from=yesterday", "audittrail.bad.time"},
		{"from=2026-11-03&to=2026-11-01", "audittrail.bad.range"},
		{"upto=-1", "audittrail.bad.upto"},
		{"upto=01", "audittrail.bad.upto"},
		{"after=abc", "audittrail.bad.cursor"},
		{"after=1.1&before=1.2", "audittrail.bad.cursor"},
		{"actor=" + uziGP + "&actor=" + uziNurse, "audittrail.bad.param"},
		{"sql=1", "audittrail.bad.param"},
	}
	for _, lang := range []string{"en", "nl"} {
		b.lang = lang
		if st, _ := b.form("/lang", url.Values{"lang": {lang}, "back": {"/audit"}}); st != http.StatusSeeOther {
			t.Fatalf("language: %d", st)
		}
		for _, tt := range tests {
			for _, path := range []string{"/audit?", "/audit-download?format=csv&", "/audit-signature?format=json&upto=1&"} {
				if path != "/audit?" && strings.Contains(tt.query, "upto") || path != "/audit?" && strings.Contains(tt.query, "after") {
					continue
				}
				st, page := b.get(path + tt.query)
				if st != http.StatusBadRequest || !contains(page, html.EscapeString(i18n.T(lang, tt.msg))) || len(tableRows(page)) > 0 {
					t.Errorf("%s%s in %s: %d, want 400 with %s", path, tt.query, lang, st, tt.msg)
				}
			}
		}
		// A download pinned past the head, and of no format.
		for _, q := range []string{fmt.Sprintf("format=csv&upto=%d", head+1000), "upto=1", "format=xml&upto=1"} {
			if st, _ := b.get("/audit-download?" + q); st != http.StatusBadRequest {
				t.Errorf("download %s: %d", q, st)
			}
		}
	}
	if n := w.count(`select count(*) from audit_log where action in ('audit-download', 'audit-signature')`); n != 0 {
		t.Errorf("%d downloads recorded from refused filters", n)
	}
}

// verifyDone waits for the copy's verification to end.
func (b *browser) verifyDone() {
	b.w.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, body := b.get("/audit-verify/status")
		var st struct{ Running bool }
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			b.w.t.Fatalf("status %q: %v", body, err)
		}
		if !st.Running {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.w.t.Fatal("the verification did not end")
}

var headRe = regexp.MustCompile(`id="verify-head" class="hash" value="([0-9a-f]{64})"`)

// TestAuditTrailVerifyFindsTampering: the page's verification finds the
// chain intact with the head of the chain when it started, one at a time
// in a copy (a second is refused while the first runs), with a head
// noted earlier, and finds a row edited in the database, which the row's
// own chain check shows too. Starts and results are audit rows.
func TestAuditTrailVerifyFindsTampering(t *testing.T) {
	w, b := trailWorld(t)
	ctx := t.Context()
	// Hold the verification at its start: the anchor table locked.
	hold, err := w.db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `lock table audit_anchor in access exclusive mode`); err != nil {
		t.Fatal(err)
	}
	seq := w.lastSeq()
	if st, loc := b.form("/audit-verify", url.Values{}); st != http.StatusSeeOther || loc != "/audit-verify" {
		t.Fatalf("start: %d %s", st, loc)
	}
	if st, page := b.get("/audit-verify"); st != http.StatusOK || !contains(page, `id="verify-running"`) || !contains(page, "<progress") {
		t.Errorf("the page does not show the verification under way: %d", st)
	}
	if st, page := b.form("/audit-verify", url.Values{}); st != http.StatusConflict || !contains(page, "already under way") {
		t.Errorf("a second verification at once: %d", st)
	}
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	b.verifyDone()
	_, page := b.get("/audit-verify")
	m := headRe.FindStringSubmatch(page)
	if m == nil || !contains(page, "The chain is intact") {
		t.Fatalf("no intact result with a head on the page")
	}
	// The head on the page is that of the chain when it started (the row
	// saying it started is in it).
	var headAt string
	if err := w.db.Pool().QueryRow(ctx, `select encode(hash, 'hex') from audit_log where seq = $1`, seq+1).Scan(&headAt); err != nil || headAt != m[1] {
		t.Errorf("head %s, the chain's head when it started %s (%v)", m[1], headAt, err)
	}
	// With that head noted: intact again.
	if st, _ := b.form("/audit-verify", url.Values{"head": {m[1]}}); st != http.StatusSeeOther {
		t.Fatalf("start with a head: %d", st)
	}
	b.verifyDone()
	if _, page := b.get("/audit-verify"); !contains(page, "The chain is intact") {
		t.Error("not intact with its own head")
	}
	if st, page := b.form("/audit-verify", url.Values{"head": {"abc"}}); st != http.StatusBadRequest || !contains(page, "64 hexadecimal digits") {
		t.Errorf("a malformed head: %d", st)
	}
	// An attacker with the database owner's rights edits row 40, and its
	// hash (they cannot make it that of the new content without the rows
	// after it changing too).
	if _, err := w.db.Pool().Exec(ctx, `alter table audit_log disable trigger user;
		update audit_log set actor = '900000666', hash = sha256(hash) where seq = 40;
		alter table audit_log enable trigger user`); err != nil {
		t.Fatal(err)
	}
	if st, _ := b.form("/audit-verify", url.Values{}); st != http.StatusSeeOther {
		t.Fatal("start")
	}
	b.verifyDone()
	if _, page := b.get("/audit-verify"); !contains(page, "The chain does not hold at row 40") {
		t.Error("the edited row is not found")
	}
	if _, page := b.get("/audit-row?seq=40"); !contains(page, `class="bad" id="check-hash"`) {
		t.Error("the row's chain check does not show it edited")
	}
	if _, page := b.get("/audit-row?seq=41"); !contains(page, `class="ok" id="check-hash"`) || !contains(page, `class="bad" id="check-prev"`) {
		t.Error("the next row's chain check does not show the broken link")
	}
	var kinds []string
	for _, r := range w.auditRows(seq) {
		if strings.HasPrefix(r, "audit-verif") {
			kinds = append(kinds, strings.Fields(r)[0])
		}
	}
	wantKinds := []string{"audit-verify", "audit-verified", "audit-verify", "audit-verified", "audit-verify", "audit-verify-broken:chain-edited"}
	if diff := cmp.Diff(wantKinds, kinds); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
	if _, page := b.get("/audit-verify"); !contains(page, "chain verified broken") {
		t.Error("the last results do not list the broken chain")
	}
}

// TestAuditTrailPagesHaveEveryText renders the trail's pages in every
// language: no message id shows, the page is in its language.
func TestAuditTrailPagesHaveEveryText(t *testing.T) {
	_, b := trailWorld(t)
	if st, _ := b.form("/audit-verify", url.Values{}); st != http.StatusSeeOther {
		t.Fatal("start")
	}
	b.verifyDone()
	for _, lang := range i18n.Default().Languages() {
		if st, _ := b.form("/lang", url.Values{"lang": {lang}, "back": {"/audit"}}); st != http.StatusSeeOther {
			t.Fatalf("language: %d", st)
		}
		for _, path := range []string{"/audit", "/audit?actor=" + uziGP + "&result=refused", "/audit-row?seq=3", "/audit-verify", "/audit?actor=1"} {
			_, page := b.get(path)
			body := page[strings.Index(page, "</script>")+1:]
			for _, prefix := range []string{">audittrail.", ">page.", ">nav.", ">audit.action.", `"audittrail.`} {
				if contains(body, prefix) {
					t.Errorf("%s in %s shows a message id (%s…)", path, lang, prefix)
				}
			}
			if !contains(page, `<html lang="`+lang+`">`) {
				t.Errorf("%s is not in %s", path, lang)
			}
		}
	}
}
