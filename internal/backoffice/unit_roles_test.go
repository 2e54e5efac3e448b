package backoffice

// The fast layer of roles: who may hold what, what a session holds, who
// may grant what, the route table and its gate, the bootstrap admins'
// validation. No database (unit_test.go).

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/server"
)

func TestUnitHoldable(t *testing.T) {
	t.Parallel()
	want := map[string][]string{
		"Z": {roleStaff, roleClinician, roleAuditor, roleAdmin},
		"N": {roleStaff, roleAuditor, roleAdmin},
		"M": nil, "S": nil, "": nil, "X": nil,
	}
	for typ, roles := range want {
		for _, r := range append(slices.Clone(allRoles), "root", "") {
			if got := holdable(typ, r); got != slices.Contains(roles, r) {
				t.Errorf("holdable(%q, %q) = %v", typ, r, got)
			}
		}
	}
}

func TestUnitEffectiveRoles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, class, cardType string
		granted               []string
		want                  []string
	}{
		{"clinician", roleClinician, "Z", nil, []string{roleStaff, roleClinician}},
		{"staff", roleStaff, "N", nil, []string{roleStaff}},
		{"N admin holds auditor and staff", roleStaff, "N", []string{roleAdmin}, []string{roleStaff, roleAuditor, roleAdmin}},
		{"Z clinician and auditor", roleClinician, "Z", []string{roleAuditor}, []string{roleStaff, roleClinician, roleAuditor}},
		{"N never clinician, even so classed", roleClinician, "N", nil, []string{roleStaff}},
		{"clinician is never granted", roleStaff, "Z", []string{roleClinician}, []string{roleStaff}},
		{"staff granted adds nothing", roleStaff, "Z", []string{roleStaff}, []string{roleStaff}},
		{"M holds nothing", roleStaff, "M", []string{roleAdmin}, nil},
		{"S holds nothing", roleClinician, "S", []string{roleAuditor}, nil},
		{"unknown role ignored", roleStaff, "N", []string{"root"}, []string{roleStaff}},
		{"unknown class ignored", "root", "Z", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := effectiveRoles(tt.class, tt.cardType, tt.granted)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("roles (-want +got):\n%s", diff)
			}
			s := &session{Role: tt.class, CardType: tt.cardType, Granted: tt.granted}
			for _, r := range allRoles {
				if s.has(r) != slices.Contains(tt.want, r) {
					t.Errorf("has(%s) = %v", r, s.has(r))
				}
			}
			if !s.has(needAnyone) || !s.has(needSignedIn) {
				t.Error("a session lacks what any session has")
			}
		})
	}
}

func TestUnitDecideRoleChange(t *testing.T) {
	t.Parallel()
	admin := []string{roleStaff, roleAuditor, roleAdmin}
	auditor := []string{roleStaff, roleAuditor}
	req := func(by string) *roleRequest { return &roleRequest{UZI: "900000003", Role: roleAdmin, RequestedBy: by} }
	base := func(op, role string) roleChange {
		return roleChange{Op: op, Actor: "900000001", ActorRoles: admin, Target: "900000003", Role: role}
	}
	with := func(ch roleChange, f func(*roleChange)) roleChange { f(&ch); return ch }
	tests := []struct {
		name    string
		ch      roleChange
		pending bool
		want    *server.Error
	}{
		{"grant auditor", base(opGrant, roleAuditor), false, nil},
		{"grant admin is pending", base(opGrant, roleAdmin), true, nil},
		{"grant to an N card", with(base(opGrant, roleAdmin), func(c *roleChange) { c.TargetType = "N" }), true, nil},
		{"an auditor grants", with(base(opGrant, roleAuditor), func(c *roleChange) { c.ActorRoles = auditor }), false, errRoleNotAdmin},
		{"nobody grants", with(base(opGrant, roleAuditor), func(c *roleChange) { c.ActorRoles = nil }), false, errRoleNotAdmin},
		{"self-grant", with(base(opGrant, roleAdmin), func(c *roleChange) { c.Target = c.Actor }), false, errRoleSelf},
		{"self-revoke", with(base(opRevoke, roleAdmin), func(c *roleChange) { c.Target = c.Actor; c.TargetHas = true }), false, errRoleSelf},
		{"self-approve", with(base(opApprove, roleAdmin), func(c *roleChange) { c.Target = c.Actor; c.Request = req("900000002") }), false, errRoleSelf},
		{"clinician", base(opGrant, roleClinician), false, errRoleNotGranted},
		{"staff", base(opGrant, roleStaff), false, errRoleNotGranted},
		{"unknown role", base(opGrant, "root"), false, errRoleUnknown},
		{"short UZI number", with(base(opGrant, roleAuditor), func(c *roleChange) { c.Target = "12345678" }), false, errRoleUZI},
		{"letters", with(base(opGrant, roleAuditor), func(c *roleChange) { c.Target = "90000000x" }), false, errRoleUZI},
		{"a role not held", with(base(opGrant, roleAuditor), func(c *roleChange) { c.ActorRoles = []string{roleAdmin} }), false, errRoleNotHeld},
		{"revoke a role not held", with(base(opRevoke, roleAuditor), func(c *roleChange) { c.ActorRoles = []string{roleAdmin}; c.TargetHas = true }), false, errRoleNotHeld},
		{"M card", with(base(opGrant, roleAuditor), func(c *roleChange) { c.TargetType = "M" }), false, errRoleCardType},
		{"S card", with(base(opGrant, roleAdmin), func(c *roleChange) { c.TargetType = "S" }), false, errRoleCardType},
		{"held", with(base(opGrant, roleAuditor), func(c *roleChange) { c.TargetHas = true }), false, errRoleHeld},
		{"pending", with(base(opGrant, roleAdmin), func(c *roleChange) { c.Request = req("900000002") }), false, errRolePending},
		{"revoke", with(base(opRevoke, roleAdmin), func(c *roleChange) { c.TargetHas = true }), false, nil},
		{"revoke absent", base(opRevoke, roleAuditor), false, errRoleAbsent},
		{"revoke by an auditor", with(base(opRevoke, roleAuditor), func(c *roleChange) { c.TargetHas = true; c.ActorRoles = auditor }), false, errRoleNotAdmin},
		{"approve", with(base(opApprove, roleAdmin), func(c *roleChange) { c.Request = req("900000002") }), false, nil},
		{"approve own request", with(base(opApprove, roleAdmin), func(c *roleChange) { c.Request = req(c.Actor) }), false, errRoleFourEyes},
		{"approve nothing", base(opApprove, roleAdmin), false, errRoleNoRequest},
		{"approve for an M card", with(base(opApprove, roleAdmin), func(c *roleChange) { c.Request = req("900000002"); c.TargetType = "M" }), false, errRoleCardType},
		{"cancel own request", with(base(opCancel, roleAdmin), func(c *roleChange) { c.Request = req(c.Actor) }), false, nil},
		{"cancel nothing", base(opCancel, roleAdmin), false, errRoleNoRequest},
		{"unknown operation", base("promote", roleAdmin), false, errRoleOpUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pending, got := decideRoleChange(tt.ch)
			if got != tt.want || pending != tt.pending {
				t.Errorf("decideRoleChange = %v, %v; want %v, %v", pending, got, tt.pending, tt.want)
			}
		})
	}
}

func TestUnitBootstrapAdminsValidated(t *testing.T) {
	t.Parallel()
	tests := []struct {
		admins []string
		want   string
	}{
		{nil, ""},
		{[]string{"900000001", "900000010"}, ""},
		{[]string{"90000001"}, "not a UZI number"},
		{[]string{"9000000010"}, "not a UZI number"},
		{[]string{" 900000001"}, "not a UZI number"},
		{[]string{""}, "not a UZI number"},
		{[]string{"900000001", "900000001"}, "twice"},
	}
	for _, tt := range tests {
		cfg := unitConfig()
		cfg.BootstrapAdmins = tt.admins
		_, err := cfg.Validate()
		if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.admins, err, tt.want)
		}
		if err != nil && !strings.Contains(err.Error(), "VOUCH_BOOTSTRAP_ADMINS") {
			t.Errorf("%q: %v does not name the variable", tt.admins, err)
		}
	}
}

// TestUnitRouteTable: Register registers exactly the table, every route
// needs something known, and the header's links are pages.
func TestUnitRouteTable(t *testing.T) {
	t.Parallel()
	s := unitService(t, nil)
	e := echo.New()
	s.Register(e)
	var got, want []string
	for _, r := range e.Routes() {
		if !strings.HasPrefix(r.Method, "echo_") { // echo's own not-found routes
			got = append(got, r.Method+" "+r.Path)
		}
	}
	needs := map[string]bool{}
	for _, r := range s.routes() {
		want = append(want, r.Method+" "+r.Path)
		needs[r.Need] = true
		if r.Need != needAnyone && r.Need != needSignedIn && !slices.Contains(allRoles, r.Need) {
			t.Errorf("%s %s needs %q, which is no role", r.Method, r.Path, r.Need)
		}
		if r.Nav != "" && r.Method != http.MethodGet {
			t.Errorf("%s %s is a link in the header", r.Method, r.Path)
		}
		if strings.HasPrefix(r.Path, "/roles") && r.Need != roleAdmin {
			t.Errorf("%s %s needs %q, not admin", r.Method, r.Path, r.Need)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("registered routes (-table +registered):\n%s", diff)
	}
	for _, n := range []string{roleClinician, roleStaff, roleAdmin} {
		if !needs[n] {
			t.Errorf("no route needs %s", n)
		}
	}
	var links []string
	for _, l := range s.navLinks(&session{Role: roleStaff, CardType: "N", Granted: []string{roleAdmin}}) {
		links = append(links, l.Path)
	}
	// The core's links first, then the parts' (routes_<part>.go).
	if diff := cmp.Diff([]string{"/staff", "/roles"}, links[:min(2, len(links))]); diff != "" || !slices.Contains(links, "/settings") {
		t.Errorf("an N admin's links (-want +got):\n%s, and /settings in %q", diff, links)
	}
	if l := s.navLinks(nil); l != nil {
		t.Errorf("links signed out: %v", l)
	}
}

// TestUnitRequireRole: the gate lets through what a session holds, sends a
// signed-out page to the sign-in and refuses a signed-out action (the
// refusal of a session that lacks the role writes an audit row: roles_test.go).
func TestUnitRequireRole(t *testing.T) {
	t.Parallel()
	s := unitService(t, nil)
	ok := func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }
	clinician := &session{Role: roleClinician, CardType: "Z"}
	tests := []struct {
		name   string
		need   string
		method string
		sess   *session
		status int
		err    error
	}{
		{"anyone, signed out", needAnyone, http.MethodPost, nil, http.StatusNoContent, nil},
		{"signed in, signed out", needSignedIn, http.MethodPost, nil, 0, errSignedOut},
		{"role, signed-out page", roleAdmin, http.MethodGet, nil, http.StatusSeeOther, nil},
		{"role, signed-out action", roleAdmin, http.MethodPost, nil, 0, errSignedOut},
		{"role held", roleClinician, http.MethodPost, clinician, http.StatusNoContent, nil},
		{"implied role held", roleStaff, http.MethodGet, clinician, http.StatusNoContent, nil},
		{"signed in", needSignedIn, http.MethodPost, clinician, http.StatusNoContent, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, rec := unitContext(s, httptest.NewRequest(tt.method, "/x", nil))
			if tt.sess != nil {
				c.Set(sessionKey, tt.sess)
			}
			err := s.requireRole(tt.need)(ok)(c)
			if !errors.Is(err, tt.err) || tt.err == nil && rec.Code != tt.status {
				t.Errorf("%d %v, want %d %v", rec.Code, err, tt.status, tt.err)
			}
		})
	}
}
