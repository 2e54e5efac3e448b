//go:build !mutation

package backoffice_test

// Roles on real parts: the route table's gate, the roles page's forms, the
// first admins from configuration, four eyes for admin, and the refusals
// (escalation, self-grant), each with its audit row. Not parallel: worlds
// share the SoftHSM tokens (boundaries_test.go).

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/i18n"
)

// UZI numbers of the test cards (internal/testpki).
const (
	uziGP         = "900000001"
	uziDoctor     = "900000002"
	uziNurse      = "900000003"
	uziPharmacist = "900000005"
	uziStaff      = "900000010"
	uziNameless   = "900000011"
)

// form posts a form as the roles page does and returns the status and the
// Location or the page.
func (b *browser) form(path string, v url.Values) (int, string) {
	b.w.t.Helper()
	resp, out := b.do(http.MethodPost, path, "application/x-www-form-urlencoded", []byte(v.Encode()))
	if loc := resp.Header.Get("Location"); loc != "" {
		return resp.StatusCode, loc
	}
	return resp.StatusCode, string(out)
}

func roleForm(uzi, role string) url.Values { return url.Values{"uzi": {uzi}, "role": {role}} }

// rolesWorld is a world whose configuration names admins, bootstrapped.
func rolesWorld(t *testing.T, admins ...string) *world {
	t.Helper()
	w := newWorld(t, func(c *backoffice.Config) { c.BootstrapAdmins = admins })
	if n, err := w.svc.Bootstrap(t.Context()); err != nil || n != len(admins) {
		t.Fatalf("bootstrap: %d %v, want %d", n, err, len(admins))
	}
	return w
}

// granted lists backoffice_roles as "uzi role by approver".
func (w *world) granted() []string {
	w.t.Helper()
	rows, err := w.db.Pool().Query(w.t.Context(), `select uzi_number || ' ' || role || ' ' || granted_by || coalesce(' ' || approved_by, '')
		from backoffice_roles order by uzi_number, role`)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// auditRows lists the audit rows after seq as "action:reason by actor on
// subject".
func (w *world) auditRows(after int) []string {
	w.t.Helper()
	rows, err := w.db.Pool().Query(w.t.Context(), `select action || coalesce(':' || reason, '') || ' by ' || actor || coalesce(' on ' || subject, '')
		from audit_log where seq > $1 and action <> 'request-refused' order by seq`, after)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func (w *world) lastSeq() int { return w.count(`select coalesce(max(seq), 0)::int from audit_log`) }

// TestBootstrapAdmins: the configured UZI numbers become admin, each with
// an audit row, while no card holds admin; a second copy (or a restart)
// grants nothing, and a revocation stays revoked.
func TestBootstrapAdmins(t *testing.T) {
	w := rolesWorld(t, uziGP, uziStaff)
	want := []string{uziGP + " admin VOUCH_BOOTSTRAP_ADMINS", uziStaff + " admin VOUCH_BOOTSTRAP_ADMINS"}
	if diff := cmp.Diff(want, w.granted()); diff != "" {
		t.Errorf("roles (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"role-granted by  on " + uziGP, "role-granted by  on " + uziStaff}, w.auditRows(0)); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
	// The N card's admin: it signs in as staff and opens the roles page.
	b := w.browser()
	b.mustSignIn(w.card("staff"))
	if st, page := b.get("/roles"); st != http.StatusOK || !contains(page, `href="/roles"`) || !contains(page, uziGP) {
		t.Fatalf("roles page for a bootstrapped admin: %d", st)
	}
	if st, loc := b.form("/roles/revoke", roleForm(uziGP, "admin")); st != http.StatusSeeOther || loc != "/roles?done=revoke" {
		t.Fatalf("revoke: %d %s", st, loc)
	}
	again := w.start(w.deps) // another copy, the same configuration
	if n, err := again.Bootstrap(t.Context()); err != nil || n != 0 {
		t.Errorf("second bootstrap granted %d (%v), want 0 while an admin exists", n, err)
	}
	if diff := cmp.Diff([]string{uziStaff + " admin VOUCH_BOOTSTRAP_ADMINS"}, w.granted()); diff != "" {
		t.Errorf("roles after a restart (-want +got):\n%s", diff)
	}
}

// TestGrantAdminNeedsASecondAdmin: a grant of admin is pending (shown so)
// until another admin approves; its requester cannot approve it, nor can
// the card holder it is for; a refused approval is an audit row.
func TestGrantAdminNeedsASecondAdmin(t *testing.T) {
	w := rolesWorld(t, uziGP, uziDoctor)
	gp, doctor, nurse := w.browser(), w.browser(), w.browser()
	gp.mustSignIn(w.card("gp"))
	doctor.mustSignIn(w.card("doctor"))
	nurse.mustSignIn(w.card("nurse"))
	seq := w.lastSeq()
	if st, loc := gp.form("/roles/grant", roleForm(uziNurse, "admin")); st != http.StatusSeeOther || loc != "/roles?done=requested" {
		t.Fatalf("grant admin: %d %s", st, loc)
	}
	if st, page := gp.get("/roles?done=requested"); st != http.StatusOK || !contains(page, "(pending)") || !contains(page, "once a second administrator approves") {
		t.Errorf("the roles page does not show the grant as pending: %d", st)
	}
	if st, _ := nurse.get("/roles"); st != http.StatusForbidden {
		t.Errorf("a pending admin opens the roles page: %d", st)
	}
	if st, page := gp.form("/roles/approve", roleForm(uziNurse, "admin")); st != http.StatusForbidden || !contains(page, "A second administrator must approve") {
		t.Errorf("the requester approves: %d", st)
	}
	if st, _ := gp.form("/roles/grant", roleForm(uziNurse, "admin")); st != http.StatusConflict {
		t.Errorf("a second grant while pending: %d", st)
	}
	if st, loc := doctor.form("/roles/approve", roleForm(uziNurse, "admin")); st != http.StatusSeeOther || loc != "/roles?done=approve" {
		t.Fatalf("the second admin approves: %d %s", st, loc)
	}
	if st, _ := nurse.get("/roles"); st != http.StatusOK {
		t.Errorf("the approved admin cannot open the roles page: %d", st)
	}
	want := []string{
		"role-requested by " + uziGP + " on " + uziNurse,
		"access-refused:role-missing by " + uziNurse + " on GET /roles",
		"role-refused:role-four-eyes by " + uziGP + " on " + uziNurse,
		"role-refused:role-pending by " + uziGP + " on " + uziNurse,
		"role-granted by " + uziDoctor + " on " + uziNurse,
	}
	if diff := cmp.Diff(want, w.auditRows(seq)); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
	if !slices.Contains(w.granted(), uziNurse+" admin "+uziGP+" "+uziDoctor) {
		t.Errorf("roles %v: the nurse's admin without requester and approver", w.granted())
	}
	if n := w.count(`select count(*) from backoffice_role_requests`); n != 0 {
		t.Errorf("%d requests left after the approval", n)
	}
	// Withdrawn: a request another admin cancels grants nothing.
	if st, _ := gp.form("/roles/grant", roleForm(uziPharmacist, "admin")); st != http.StatusSeeOther {
		t.Fatalf("grant admin: %d", st)
	}
	if st, loc := nurse.form("/roles/cancel", roleForm(uziPharmacist, "admin")); st != http.StatusSeeOther || loc != "/roles?done=cancel" {
		t.Fatalf("cancel: %d %s", st, loc)
	}
	if slices.ContainsFunc(w.granted(), func(s string) bool { return strings.HasPrefix(s, uziPharmacist) }) {
		t.Errorf("a withdrawn request granted: %v", w.granted())
	}
	// An admin revoked: the grants of admin they asked for wait for nobody.
	if st, _ := nurse.form("/roles/grant", roleForm(uziPharmacist, "admin")); st != http.StatusSeeOther {
		t.Fatalf("grant admin: %d", st)
	}
	if st, _ := gp.form("/roles/revoke", roleForm(uziNurse, "admin")); st != http.StatusSeeOther {
		t.Fatalf("revoke: %d", st)
	}
	if n := w.count(`select count(*) from backoffice_role_requests`); n != 0 {
		t.Errorf("%d requests of a revoked admin left", n)
	}
	if n := w.count(`select count(*) from audit_log where action = 'role-revoked' and detail::jsonb->>'requests_dropped' = '1'`); n != 1 {
		t.Errorf("%d revocations that say they dropped the request", n)
	}
	if st, _ := nurse.get("/roles"); st != http.StatusForbidden {
		t.Errorf("a revoked admin opens the roles page: %d", st)
	}
	// The schema holds four eyes too: an admin row without a second admin.
	if _, err := w.db.Pool().Exec(t.Context(), `insert into backoffice_roles (uzi_number, role, granted_by, granted_at)
		values ($1, 'admin', $2, now())`, uziPharmacist, uziGP); err == nil {
		t.Error("the database took an admin without approval")
	}
}

// TestRoleEscalationAndSelfGrantRefused: an auditor cannot grant (not
// even themselves admin); an admin cannot change their own roles, grant
// clinician, or give a card type a role it cannot hold; each attempt is
// refused, changes nothing, and is an audit row.
func TestRoleEscalationAndSelfGrantRefused(t *testing.T) {
	w := rolesWorld(t, uziGP)
	gp, staff := w.browser(), w.browser()
	gp.mustSignIn(w.card("gp"))
	staff.mustSignIn(w.card("staff"))
	if st, _ := gp.form("/roles/grant", roleForm(uziStaff, "auditor")); st != http.StatusSeeOther {
		t.Fatalf("grant auditor: %d", st)
	}
	// The mirror says the nameless card is M: it holds nothing.
	if _, err := w.db.Pool().Exec(t.Context(), `insert into registry_entries (uzi_number, card_type, license_status)
		values ($1, 'M', 'active')`, uziNameless); err != nil {
		t.Fatal(err)
	}
	before := w.granted()
	seq := w.lastSeq()
	tests := []struct {
		name   string
		b      *browser
		path   string
		form   url.Values
		status int
		row    string
	}{
		{"auditor grants self admin", staff, "/roles/grant", roleForm(uziStaff, "admin"), http.StatusForbidden,
			"access-refused:role-missing by " + uziStaff + " on POST /roles/grant"},
		{"auditor grants another admin", staff, "/roles/grant", roleForm(uziNurse, "admin"), http.StatusForbidden,
			"access-refused:role-missing by " + uziStaff + " on POST /roles/grant"},
		{"auditor approves", staff, "/roles/approve", roleForm(uziStaff, "admin"), http.StatusForbidden,
			"access-refused:role-missing by " + uziStaff + " on POST /roles/approve"},
		{"admin grants self auditor", gp, "/roles/grant", roleForm(uziGP, "auditor"), http.StatusForbidden,
			"role-refused:role-self by " + uziGP + " on " + uziGP},
		{"admin revokes own admin", gp, "/roles/revoke", roleForm(uziGP, "admin"), http.StatusForbidden,
			"role-refused:role-self by " + uziGP + " on " + uziGP},
		{"clinician is not granted", gp, "/roles/grant", roleForm(uziStaff, "clinician"), http.StatusForbidden,
			"role-refused:role-not-grantable by " + uziGP + " on " + uziStaff},
		{"an M card holds nothing", gp, "/roles/grant", roleForm(uziNameless, "auditor"), http.StatusForbidden,
			"role-refused:role-card-type by " + uziGP + " on " + uziNameless},
		{"held already", gp, "/roles/grant", roleForm(uziStaff, "auditor"), http.StatusConflict,
			"role-refused:role-held by " + uziGP + " on " + uziStaff},
		{"revoke what is not held", gp, "/roles/revoke", roleForm(uziNurse, "auditor"), http.StatusConflict,
			"role-refused:role-absent by " + uziGP + " on " + uziNurse},
		{"no such role", gp, "/roles/grant", roleForm(uziNurse, "root"), http.StatusBadRequest,
			"role-refused:role-unknown by " + uziGP + " on " + uziNurse},
		{"not a UZI number", gp, "/roles/grant", roleForm("12345", "auditor"), http.StatusBadRequest,
			"role-refused:role-uzi-invalid by " + uziGP},
	}
	for _, tt := range tests {
		seq := w.lastSeq()
		if st, _ := tt.b.form(tt.path, tt.form); st != tt.status {
			t.Errorf("%s: %d, want %d", tt.name, st, tt.status)
		}
		if diff := cmp.Diff([]string{tt.row}, w.auditRows(seq)); diff != "" {
			t.Errorf("%s: audit (-want +got):\n%s", tt.name, diff)
		}
	}
	if diff := cmp.Diff(before, w.granted()); diff != "" {
		t.Errorf("refused changes changed roles (-before +after):\n%s", diff)
	}
	if n := w.count(`select count(*) from backoffice_role_requests`); n != 0 {
		t.Errorf("%d requests from refused changes", n)
	}
	if n := len(w.auditRows(seq)); n != len(tests) {
		t.Errorf("%d audit rows for %d refusals", n, len(tests))
	}
	// The refusal is shown on the page, in the admin's language.
	if st, _ := gp.form("/lang", url.Values{"lang": {"nl"}, "back": {"/roles"}}); st != http.StatusSeeOther {
		t.Fatalf("language: %d", st)
	}
	if st, page := gp.form("/roles/grant", roleForm(uziGP, "auditor")); st != http.StatusForbidden || !contains(page, "Niemand wijzigt zijn eigen rollen") {
		t.Errorf("self-grant in Dutch: %d", st)
	}
	// Another site's form is refused before any of this (the origin check).
	gp.headers = map[string]string{"Sec-Fetch-Site": "cross-site"}
	if st, _ := gp.form("/roles/grant", roleForm(uziNurse, "auditor")); st != http.StatusForbidden {
		t.Errorf("cross-site grant: %d", st)
	}
	gp.headers = map[string]string{}
	if diff := cmp.Diff(before, w.granted()); diff != "" {
		t.Errorf("roles changed (-before +after):\n%s", diff)
	}
	// The auditor sees the refusals in their own activity, and their roles
	// in the header; a revocation takes effect at the next request of a
	// signed-in session.
	if st, page := staff.get("/staff"); st != http.StatusOK || !contains(page, "access refused (role)") || !contains(page, "· auditor</span>") {
		t.Errorf("the auditor's own activity: %d", st)
	}
	if st, _ := gp.form("/roles/revoke", roleForm(uziStaff, "auditor")); st != http.StatusSeeOther {
		t.Fatalf("revoke: %d", st)
	}
	if slices.Contains(w.granted(), uziStaff+" auditor "+uziGP) {
		t.Errorf("revoked, still %v", w.granted())
	}
	if st, page := staff.get("/staff"); st != http.StatusOK || !contains(page, "· staff</span>") {
		t.Errorf("after the revocation the header still says auditor: %d", st)
	}
}

// TestRouteTableRefusesMissingRoles walks the route table: for every route
// that needs a role and every role that lacks it, a session holding just
// that role gets 403 and an audit row naming the route; a session holding
// the role is never refused for it.
func TestRouteTableRefusesMissingRoles(t *testing.T) {
	w := newWorld(t, nil)
	grant := func(u, role string) {
		t.Helper()
		if _, err := w.db.Pool().Exec(t.Context(), `insert into backoffice_roles (uzi_number, role, granted_by, granted_at)
			values ($1, $2, 'VOUCH_BOOTSTRAP_ADMINS', now())`, u, role); err != nil {
			t.Fatal(err)
		}
	}
	grant(uziPharmacist, "auditor")
	grant(uziStaff, "admin")
	// One session per role, holding it and what it implies only.
	sessions := map[string]*browser{}
	for role, card := range map[string]string{"clinician": "nurse", "auditor": "pharmacist", "admin": "staff"} {
		sessions[role] = w.browser()
		sessions[role].mustSignIn(w.card(card))
	}
	holds := map[string][]string{ // what each session holds
		"clinician": {"clinician", "staff"},
		"auditor":   {"auditor", "staff"},
		"admin":     {"admin", "auditor", "staff"},
	}
	uzis := map[string]string{"clinician": uziNurse, "auditor": uziPharmacist, "admin": uziStaff}
	request := func(b *browser, r backoffice.RouteNeed) int {
		t.Helper()
		switch {
		case r.Method == http.MethodGet:
			st, _ := b.get(r.Path)
			return st
		case strings.HasPrefix(r.Path, "/api/"):
			resp, _ := b.do(r.Method, r.Path, "application/json", []byte(`{}`))
			return resp.StatusCode
		}
		st, _ := b.form(r.Path, url.Values{})
		return st
	}
	refused, allowed := 0, 0
	walk := func(role string, b *browser, holds []string, uzi string) {
		t.Helper()
		for _, r := range w.svc.Routes() {
			if r.Need == "" || r.Need == "session" {
				continue
			}
			seq := w.lastSeq()
			st := request(b, r)
			// A verification of the chain an earlier allowed request began
			// writes its result from the background, when it ends: no
			// request's row.
			rows := slices.DeleteFunc(w.auditRows(seq), func(s string) bool {
				return strings.HasPrefix(s, backoffice.ActionAuditVerified) || strings.HasPrefix(s, backoffice.ActionAuditVerifyBroken) ||
					strings.HasPrefix(s, backoffice.ActionAuditVerifyFailed)
			})
			if slices.Contains(holds, r.Need) {
				allowed++
				if st == http.StatusForbidden || slices.ContainsFunc(rows, func(s string) bool { return strings.HasPrefix(s, "access-refused") }) {
					t.Errorf("%s %s (needs %s): the %s, who holds it, is refused: %d %v", r.Method, r.Path, r.Need, role, st, rows)
				}
				continue
			}
			refused++
			want := []string{"access-refused:role-missing by " + uzi + " on " + r.Method + " " + r.Path}
			if st != http.StatusForbidden {
				t.Errorf("%s %s (needs %s) as %s: %d, want 403", r.Method, r.Path, r.Need, role, st)
			}
			if diff := cmp.Diff(want, rows); diff != "" {
				t.Errorf("%s %s as %s: audit (-want +got):\n%s", r.Method, r.Path, role, diff)
			}
		}
	}
	for _, role := range []string{"clinician", "auditor", "admin"} {
		walk(role, sessions[role], holds[role], uzis[role])
	}
	// The pharmacist without auditor holds staff only; roles are read at
	// every request, so the same session walks again.
	if _, err := w.db.Pool().Exec(t.Context(), `delete from backoffice_roles where uzi_number = $1`, uziPharmacist); err != nil {
		t.Fatal(err)
	}
	walk("staff", sessions["auditor"], []string{"staff"}, uziPharmacist)
	if refused < 10 || allowed < 5 {
		t.Errorf("the walk refused %d and allowed %d requests: the table lost its roles", refused, allowed)
	}
	if n := w.count(`select count(*) from authorizations`); n != 0 {
		t.Errorf("%d authorizations from the walk", n)
	}
	// Signed out: pages send to the sign-in, actions are refused (401).
	anon := w.browser()
	if st, loc := anon.get("/roles"); st != http.StatusSeeOther || loc != "/signin" {
		t.Errorf("roles page signed out: %d %s", st, loc)
	}
	if st, _ := anon.form("/roles/grant", roleForm(uziNurse, "admin")); st != http.StatusUnauthorized {
		t.Errorf("grant signed out: %d", st)
	}
}

// TestRolesPagesHaveEveryText renders the roles page (with a holder and a
// pending grant), a refusal on it and the forbidden page in every
// language of the catalogues: a message id
// missing from a catalogue shows as the id itself.
func TestRolesPagesHaveEveryText(t *testing.T) {
	w := rolesWorld(t, uziGP)
	admin := w.browser()
	admin.mustSignIn(w.card("gp"))
	if st, _ := admin.form("/roles/grant", roleForm(uziNurse, "admin")); st != http.StatusSeeOther {
		t.Fatalf("grant: %d", st)
	}
	for _, lang := range i18n.Default().Languages() {
		if st, _ := admin.form("/lang", url.Values{"lang": {lang}, "back": {"/roles"}}); st != http.StatusSeeOther {
			t.Fatalf("language: %d", st)
		}
		staff := w.browser()
		staff.lang = lang
		staff.mustSignIn(w.card("staff"))
		pages := map[string]string{}
		_, pages["roles"] = admin.get("/roles?done=requested")
		_, pages["refused"] = admin.form("/roles/grant", roleForm(uziGP, "auditor"))
		_, pages["forbidden"] = staff.get("/roles")
		for name, page := range pages {
			body := page[strings.Index(page, "</script>")+1:]
			for _, prefix := range []string{">page.", ">role.", ">roles.", ">nav.", "page.roles", "page.forbidden"} {
				if contains(body, prefix) {
					t.Errorf("%s page in %s shows a message id (%s…)", name, lang, prefix)
				}
			}
			if !contains(page, `<html lang="`+lang+`">`) {
				t.Errorf("%s page is not in %s", name, lang)
			}
		}
	}
}
