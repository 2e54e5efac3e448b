package backoffice

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/server"
)

// What a route needs, besides a role: nothing (anyone, signed in or not),
// or a session (locked or not: the handler decides).
const (
	needAnyone   = ""
	needSignedIn = "session"
)

// route is one line of the back office's one route table.
type route struct {
	Method, Path string
	// Need is needAnyone, needSignedIn, or the role the session must hold
	// (holds: roleHolds; admin holds auditor and staff).
	Need    string
	handler echo.HandlerFunc
	// Nav is the catalogue id of the page's link in the header, for the
	// pages a person opens; "" for actions.
	Nav string
}

// routes is the one route table: every route of the back office and the
// role it needs. Register registers exactly these, each behind the role
// gate (requireRole); a test walks it (TestRouteTableRefusesMissingRoles).
//
// A part of the back office with pages of its own keeps its lines in its
// own file (routes_<part>.go), appended here in the order of the header's
// links.
func (s *Service) routes() []route {
	core := []route{
		{http.MethodGet, "/", needAnyone, s.home, ""},
		{http.MethodGet, "/signin", needAnyone, s.signInPage, ""},
		{http.MethodGet, "/vouch", roleClinician, s.vouchPage, "nav.vouch"},
		{http.MethodGet, "/staff", roleStaff, s.staffPage, "nav.staff"},
		{http.MethodGet, "/roles", roleAdmin, s.rolesPage, "nav.roles"},
		{http.MethodPost, "/roles/grant", roleAdmin, s.grantRole, ""},
		{http.MethodPost, "/roles/revoke", roleAdmin, s.revokeRole, ""},
		{http.MethodPost, "/roles/approve", roleAdmin, s.approveRole, ""},
		{http.MethodPost, "/roles/cancel", roleAdmin, s.cancelRole, ""},
		{http.MethodPost, "/lang", needAnyone, s.switchLanguage, ""},

		{http.MethodPost, "/api/challenge", needAnyone, s.challenge, ""},
		{http.MethodPost, "/api/signin", needAnyone, s.signIn, ""},
		{http.MethodPost, "/api/signout", needAnyone, s.signOut, ""},
		{http.MethodPost, "/api/lock", needSignedIn, s.lock, ""},
		{http.MethodPost, heartbeatPath, needSignedIn, s.heartbeat, ""},
		{http.MethodPost, "/api/unlock", needSignedIn, s.unlock, ""},
		{http.MethodPost, "/api/vouch/prepare", roleClinician, s.prepare, ""},
		{http.MethodPost, "/api/vouch/sign", roleClinician, s.sign, ""},
	}
	return slices.Concat(core, s.auditTrailRoutes(), s.statisticsRoutes(), s.settingsRoutes())
}

// RouteNeed is one route of the table and what it needs, for tests and
// documentation.
type RouteNeed struct{ Method, Path, Need string }

// Routes lists the route table.
func (s *Service) Routes() []RouteNeed {
	var out []RouteNeed
	for _, r := range s.routes() {
		out = append(out, RouteNeed{r.Method, r.Path, r.Need})
	}
	return out
}

// errRole: the session lacks the role the route needs.
var errRole = &server.Error{Status: http.StatusForbidden, Code: "role-missing", Message: "roles.missing"}

// ActionAccessRefused is the audit action of a request refused because
// the session lacks the route's role.
const ActionAccessRefused = "access-refused"

// requireRole is the gate in front of a route: a session without the role
// the route needs is refused with 403 and an audit row of its own (the
// card holder is known: never only counted). Without a session a page
// sends to the sign-in and an action is refused as signed out.
func (s *Service) requireRole(need string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if need == needAnyone {
			return next
		}
		return func(c echo.Context) error {
			sess := sessionOf(c)
			switch {
			case sess == nil && c.Request().Method == http.MethodGet:
				return c.Redirect(http.StatusSeeOther, "/signin")
			case sess == nil:
				return errSignedOut
			case need == needSignedIn, sess.locked(): // a locked session got past lockGate: its handler decides
				return next(c)
			case sess.has(need):
				return next(c)
			}
			e := entry(c, ActionAccessRefused, errRole.Code)
			e.Subject = c.Request().Method + " " + c.Path()
			detail, _ := json.Marshal(map[string]any{"need": need, "roles": sess.roles()})
			e.Detail = string(detail)
			s.record(c, e)
			if strings.HasPrefix(c.Path(), "/api/") {
				return errRole
			}
			return s.renderStatus(c, http.StatusForbidden, "forbidden", page{})
		}
	}
}

// navLinks are the header's links: the pages of the table the session may
// open, in the table's order.
func (s *Service) navLinks(sess *session) []navLink {
	if sess == nil || sess.locked() {
		return nil
	}
	var out []navLink
	for _, r := range s.routes() {
		if r.Nav != "" && sess.has(r.Need) {
			out = append(out, navLink{Path: r.Path, Label: r.Nav})
		}
	}
	return out
}

type navLink struct{ Path, Label string }

// register adds the table's routes to g, each behind its role gate; API
// routes take JSON only, checked first as before the table.
func (s *Service) register(g *echo.Group) {
	for _, r := range s.routes() {
		var mw []echo.MiddlewareFunc
		if strings.HasPrefix(r.Path, "/api/") {
			mw = append(mw, requireJSON)
		}
		mw = append(mw, s.requireRole(r.Need))
		g.Add(r.Method, r.Path, r.handler, mw...)
	}
}
