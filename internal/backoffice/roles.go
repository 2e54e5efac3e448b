package backoffice

// Roles. A card holder's roles are of two kinds:
//
//   - from the card and the register, at sign-in: a Z card whose license and
//     profession allow vouching is a clinician (session.Role); every card
//     that signs in is staff (it reads its own activity). Neither is ever
//     granted: the register, not an admin, decides who vouches, and a Z
//     card vouches only while its license allows, whatever else it holds.
//   - granted, kept in backoffice_roles (migration 016): auditor and admin.
//     The first admins come from VOUCH_BOOTSTRAP_ADMINS (Bootstrap);
//     afterwards admins grant and revoke on /roles. Granting admin takes a
//     second admin's approval (backoffice_role_requests until then).
//
// A granted role counts only on a card type that may hold it (N and Z: staff,
// auditor, admin; Z also clinician; M and S nothing), and is read afresh on
// every request, so a revocation takes effect at the next request. admin
// holds auditor, and auditor holds staff.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// Roles granted in the back office (roleClinician and roleStaff: store.go).
const (
	roleAuditor = "auditor"
	roleAdmin   = "admin"
)

// allRoles are the back office's roles, weakest first.
var allRoles = []string{roleStaff, roleClinician, roleAuditor, roleAdmin}

// grantable are the roles an admin grants; the others come from the card
// and the register.
func grantable(role string) bool { return role == roleAuditor || role == roleAdmin }

// holdable says whether a card of type cardType may hold role: N cards
// staff, auditor and admin, never clinician; Z cards any; M and S none.
func holdable(cardType, role string) bool {
	switch uzi.CardType(cardType) {
	case uzi.CardCareProvider:
		return slices.Contains(allRoles, role)
	case uzi.CardNamedEmployee:
		return role == roleStaff || role == roleAuditor || role == roleAdmin
	}
	return false
}

// implies: the roles a role holds besides itself.
var implies = map[string][]string{
	roleAdmin:     {roleAuditor, roleStaff},
	roleAuditor:   {roleStaff},
	roleClinician: {roleStaff},
}

// effectiveRoles are the roles of a card of type cardType signed in as
// class (roleClinician or roleStaff) with granted roles: the class, every
// granted role its card type may hold, and what they imply; in allRoles'
// order.
func effectiveRoles(class, cardType string, granted []string) []string {
	held := map[string]bool{}
	add := func(r string) {
		if !holdable(cardType, r) {
			return
		}
		held[r] = true
		for _, i := range implies[r] {
			if holdable(cardType, i) {
				held[i] = true
			}
		}
	}
	if class == roleClinician || class == roleStaff { // signed in: staff at least
		add(roleStaff)
		add(class)
	}
	for _, r := range granted {
		if grantable(r) {
			add(r)
		}
	}
	var out []string
	for _, r := range allRoles {
		if held[r] {
			out = append(out, r)
		}
	}
	return out
}

// roles are the session's roles now.
func (s *session) roles() []string { return effectiveRoles(s.Role, s.CardType, s.Granted) }

// has says whether the session holds need (needAnyone and needSignedIn:
// always).
func (s *session) has(need string) bool {
	return need == needAnyone || need == needSignedIn || slices.Contains(s.roles(), need)
}

// Operations on roles, as the forms post them.
const (
	opGrant   = "grant"
	opRevoke  = "revoke"
	opApprove = "approve"
	opCancel  = "cancel"
)

// roleChange is what decideRoleChange needs to know, read in the
// transaction that makes the change.
type roleChange struct {
	Op         string
	Actor      string   // the admin's UZI number
	ActorRoles []string // the admin's roles now
	Target     string   // the UZI number whose roles change
	TargetType string   // its card type in the register; "" if unknown
	Role       string
	TargetHas  bool         // the target holds Role (granted)
	Request    *roleRequest // the pending request for Target and Role
}

// Refusals of a change of roles.
var (
	errRoleNotAdmin    = &server.Error{Status: http.StatusForbidden, Code: "role-not-admin", Message: "roles.not-admin"}
	errRoleUZI         = &server.Error{Status: http.StatusBadRequest, Code: "role-uzi-invalid", Message: "roles.uzi-invalid"}
	errRoleUnknown     = &server.Error{Status: http.StatusBadRequest, Code: "role-unknown", Message: "roles.unknown"}
	errRoleSelf        = &server.Error{Status: http.StatusForbidden, Code: "role-self", Message: "roles.self"}
	errRoleNotGranted  = &server.Error{Status: http.StatusForbidden, Code: "role-not-grantable", Message: "roles.not-grantable"}
	errRoleNotHeld     = &server.Error{Status: http.StatusForbidden, Code: "role-not-held", Message: "roles.not-held"}
	errRoleCardType    = &server.Error{Status: http.StatusForbidden, Code: "role-card-type", Message: "roles.card-type"}
	errRoleHeld        = &server.Error{Status: http.StatusConflict, Code: "role-held", Message: "roles.held"}
	errRolePending     = &server.Error{Status: http.StatusConflict, Code: "role-pending", Message: "roles.pending"}
	errRoleAbsent      = &server.Error{Status: http.StatusConflict, Code: "role-absent", Message: "roles.absent"}
	errRoleNoRequest   = &server.Error{Status: http.StatusConflict, Code: "role-no-request", Message: "roles.no-request"}
	errRoleFourEyes    = &server.Error{Status: http.StatusForbidden, Code: "role-four-eyes", Message: "roles.four-eyes"}
	errRoleOpUnknown   = &server.Error{Status: http.StatusBadRequest, Code: "bad-request", Message: "error.400"}
	errRolesRolledBack = errors.New("backoffice: role change refused")
)

// decideRoleChange decides a change of roles. Grant: an admin, not their
// own roles, a grantable role they hold themselves, a card type that may
// hold it, not held or pending already; admin is then pending (four eyes).
// Revoke: the same but the target must hold it. Approve: a pending request
// that another admin made. Cancel: a pending request. pending says the
// grant waits for a second admin.
func decideRoleChange(ch roleChange) (pending bool, refusal *server.Error) {
	switch {
	case !slices.Contains(ch.ActorRoles, roleAdmin):
		return false, errRoleNotAdmin
	case !uzi.ValidUZINumber(ch.Target):
		return false, errRoleUZI
	case !slices.Contains(allRoles, ch.Role):
		return false, errRoleUnknown
	case ch.Target == ch.Actor:
		return false, errRoleSelf
	case !grantable(ch.Role):
		return false, errRoleNotGranted
	case !slices.Contains(ch.ActorRoles, ch.Role):
		return false, errRoleNotHeld
	}
	switch ch.Op {
	case opGrant:
		switch {
		case ch.TargetType != "" && !holdable(ch.TargetType, ch.Role):
			return false, errRoleCardType
		case ch.TargetHas:
			return false, errRoleHeld
		case ch.Request != nil:
			return false, errRolePending
		}
		return ch.Role == roleAdmin, nil
	case opRevoke:
		if !ch.TargetHas {
			return false, errRoleAbsent
		}
		return false, nil
	case opApprove:
		switch {
		case ch.Request == nil:
			return false, errRoleNoRequest
		case ch.Request.RequestedBy == ch.Actor:
			return false, errRoleFourEyes
		case ch.TargetType != "" && !holdable(ch.TargetType, ch.Role):
			return false, errRoleCardType
		}
		return false, nil
	case opCancel:
		if ch.Request == nil {
			return false, errRoleNoRequest
		}
		return false, nil
	}
	return false, errRoleOpUnknown
}

// Audit actions of roles.
const (
	ActionRoleGranted   = "role-granted"
	ActionRoleRequested = "role-requested" // admin, waiting for a second admin
	ActionRoleRevoked   = "role-revoked"
	ActionRoleCancelled = "role-request-cancelled"
	ActionRoleRefused   = "role-refused"
)

// BootstrapSource is who granted the admins of VOUCH_BOOTSTRAP_ADMINS.
const BootstrapSource = "VOUCH_BOOTSTRAP_ADMINS"

// rolesLock serialises changes of roles (all copies): a change reads the
// actor's roles and the target's and writes in one order.
const rolesLock int64 = 0x766f7563_726f6c65 // "voucrole"

// Bootstrap grants admin to the configured VOUCH_BOOTSTRAP_ADMINS when no
// card holds admin: the first admins. Once there is one, the configuration
// is not read again (a revocation stays), so it also lets an operator
// recover a back office whose admins were all revoked. Each grant is an
// audit row. It returns how many it granted.
func (s *Service) Bootstrap(ctx context.Context) (int, error) {
	if len(s.cfg.BootstrapAdmins) == 0 {
		return 0, nil
	}
	now, n := s.now(), 0
	err := s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
		n = 0
		if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock($1)`, rolesLock); err != nil {
			return fmt.Errorf("backoffice: roles lock: %w", err)
		}
		var admins int
		if err := tx.QueryRow(ctx, `select count(*) from backoffice_roles where role = 'admin'`).Scan(&admins); err != nil {
			return fmt.Errorf("backoffice: count admins: %w", err)
		}
		if admins > 0 {
			return nil
		}
		for _, u := range s.cfg.BootstrapAdmins {
			if err := insertRole(ctx, tx, u, roleAdmin, BootstrapSource, "", now); err != nil {
				return err
			}
			detail, _ := json.Marshal(map[string]string{"role": roleAdmin, "source": BootstrapSource})
			if _, err := audit.Append(ctx, tx, audit.Entry{Action: ActionRoleGranted, Subject: u, Detail: string(detail)}, now); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// roleHolder is a row of backoffice_roles.
type roleHolder struct {
	UZI, Role, GrantedBy, ApprovedBy string
	GrantedAt                        time.Time
}

// roleRequest is a grant of admin waiting for a second admin.
type roleRequest struct {
	UZI, Role, RequestedBy string
	RequestedAt            time.Time
}

func insertRole(ctx context.Context, q querier, u, role, by, approvedBy string, now time.Time) error {
	if _, err := q.Exec(ctx, `insert into backoffice_roles (uzi_number, role, granted_by, approved_by, granted_at)
		values ($1, $2, $3, nullif($4, ''), $5)`, u, role, by, approvedBy, now); err != nil {
		return fmt.Errorf("backoffice: grant role: %w", err)
	}
	return nil
}

// grantedRoles are the roles granted to u.
func grantedRoles(ctx context.Context, q querier, u string) ([]string, error) {
	rows, err := q.Query(ctx, `select role from backoffice_roles where uzi_number = $1 order by role`, u)
	if err != nil {
		return nil, fmt.Errorf("backoffice: read roles: %w", err)
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("backoffice: read roles: %w", err)
	}
	return roles, nil
}

// registerCardType is u's card type in the register's mirror, "" when the
// mirror does not know u.
func registerCardType(ctx context.Context, q querier, u string) (string, error) {
	var t *string
	err := q.QueryRow(ctx, `select card_type from registry_entries where uzi_number = $1`, u).Scan(&t)
	switch {
	case errors.Is(err, pgx.ErrNoRows), err == nil && t == nil:
		return "", nil
	case err != nil:
		return "", fmt.Errorf("backoffice: read card type: %w", err)
	}
	return strings.TrimSpace(*t), nil
}

func pendingRequest(ctx context.Context, q querier, u, role string) (*roleRequest, error) {
	r := &roleRequest{}
	err := q.QueryRow(ctx, `select uzi_number, role, requested_by, requested_at from backoffice_role_requests
		where uzi_number = $1 and role = $2`, u, role).Scan(&r.UZI, &r.Role, &r.RequestedBy, &r.RequestedAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("backoffice: read role request: %w", err)
	}
	return r, nil
}

func roleHolders(ctx context.Context, q querier) ([]roleHolder, error) {
	rows, err := q.Query(ctx, `select uzi_number, role, granted_by, coalesce(approved_by, ''), granted_at
		from backoffice_roles order by uzi_number, role`)
	if err != nil {
		return nil, fmt.Errorf("backoffice: list roles: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (roleHolder, error) {
		var h roleHolder
		err := r.Scan(&h.UZI, &h.Role, &h.GrantedBy, &h.ApprovedBy, &h.GrantedAt)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("backoffice: list roles: %w", err)
	}
	return out, nil
}

func roleRequests(ctx context.Context, q querier) ([]roleRequest, error) {
	rows, err := q.Query(ctx, `select uzi_number, role, requested_by, requested_at from backoffice_role_requests
		order by requested_at, uzi_number`)
	if err != nil {
		return nil, fmt.Errorf("backoffice: list role requests: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (roleRequest, error) {
		var q roleRequest
		err := r.Scan(&q.UZI, &q.Role, &q.RequestedBy, &q.RequestedAt)
		return q, err
	})
	if err != nil {
		return nil, fmt.Errorf("backoffice: list role requests: %w", err)
	}
	return out, nil
}

// applyRoleChange writes a decided change and returns its audit row.
func applyRoleChange(ctx context.Context, tx pgx.Tx, ch roleChange, pending bool, now time.Time) (audit.Entry, error) {
	e := audit.Entry{Actor: ch.Actor, Subject: ch.Target}
	d := map[string]any{"role": ch.Role}
	var err error
	switch {
	case ch.Op == opGrant && pending:
		e.Action = ActionRoleRequested
		_, err = tx.Exec(ctx, `insert into backoffice_role_requests (uzi_number, role, requested_by, requested_at)
			values ($1, $2, $3, $4)`, ch.Target, ch.Role, ch.Actor, now)
	case ch.Op == opGrant:
		e.Action = ActionRoleGranted
		err = insertRole(ctx, tx, ch.Target, ch.Role, ch.Actor, "", now)
	case ch.Op == opApprove:
		e.Action = ActionRoleGranted
		d["requested_by"], d["approved_by"] = ch.Request.RequestedBy, ch.Actor
		if _, err = tx.Exec(ctx, `delete from backoffice_role_requests where uzi_number = $1 and role = $2`, ch.Target, ch.Role); err == nil {
			err = insertRole(ctx, tx, ch.Target, ch.Role, ch.Request.RequestedBy, ch.Actor, now)
		}
	case ch.Op == opCancel:
		e.Action = ActionRoleCancelled
		d["requested_by"] = ch.Request.RequestedBy
		_, err = tx.Exec(ctx, `delete from backoffice_role_requests where uzi_number = $1 and role = $2`, ch.Target, ch.Role)
	case ch.Op == opRevoke:
		e.Action = ActionRoleRevoked
		if _, err = tx.Exec(ctx, `delete from backoffice_roles where uzi_number = $1 and role = $2`, ch.Target, ch.Role); err == nil && ch.Role == roleAdmin {
			// An admin no longer: their requests wait for nobody.
			var tag interface{ RowsAffected() int64 }
			tag, err = tx.Exec(ctx, `delete from backoffice_role_requests where requested_by = $1`, ch.Target)
			if err == nil && tag.RowsAffected() > 0 {
				d["requests_dropped"] = tag.RowsAffected()
			}
		}
	}
	if err != nil {
		return e, fmt.Errorf("backoffice: %s role: %w", ch.Op, err)
	}
	detail, _ := json.Marshal(d)
	e.Detail = string(detail)
	return e, nil
}

// changeRole is the roles page's forms: read, decide and write in one
// transaction under the roles lock, with its audit row; a refusal is an
// audit row of its own and the page again with the reason.
func (s *Service) changeRole(c echo.Context, op string) error {
	sess := sessionOf(c) // the route needs admin: there is an unlocked one
	ctx, now := c.Request().Context(), s.now()
	ch := roleChange{Op: op, Actor: sess.UZI, Target: strings.TrimSpace(c.FormValue("uzi")), Role: c.FormValue("role")}
	var refusal *server.Error
	var pending bool
	err := s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
		refusal = nil
		if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock($1)`, rolesLock); err != nil {
			return fmt.Errorf("backoffice: roles lock: %w", err)
		}
		// The actor's roles as they are now, not as the request found them.
		granted, err := grantedRoles(ctx, tx, sess.UZI)
		if err != nil {
			return err
		}
		ch.ActorRoles = effectiveRoles(sess.Role, sess.CardType, granted)
		if uzi.ValidUZINumber(ch.Target) {
			if ch.TargetType, err = registerCardType(ctx, tx, ch.Target); err != nil {
				return err
			}
			tg, err := grantedRoles(ctx, tx, ch.Target)
			if err != nil {
				return err
			}
			ch.TargetHas = slices.Contains(tg, ch.Role)
			if ch.Request, err = pendingRequest(ctx, tx, ch.Target, ch.Role); err != nil {
				return err
			}
		}
		if pending, refusal = decideRoleChange(ch); refusal != nil {
			return errRolesRolledBack
		}
		e, err := applyRoleChange(ctx, tx, ch, pending, now)
		if err != nil {
			return err
		}
		e.IP, e.UserAgent = c.RealIP(), c.Request().UserAgent()
		_, err = audit.Append(ctx, tx, e, now)
		return err
	})
	if refusal != nil {
		e := entry(c, ActionRoleRefused, refusal.Code)
		if uzi.ValidUZINumber(ch.Target) {
			e.Subject = ch.Target
		}
		detail, _ := json.Marshal(map[string]string{"op": op, "role": ch.Role})
		e.Detail = string(detail)
		s.record(c, e)
		return s.renderRoles(c, refusal.Status, refusal.Message, "")
	}
	if err != nil {
		return err
	}
	done := op
	if pending {
		done = "requested"
	}
	return c.Redirect(http.StatusSeeOther, "/roles?done="+done)
}

func (s *Service) grantRole(c echo.Context) error   { return s.changeRole(c, opGrant) }
func (s *Service) revokeRole(c echo.Context) error  { return s.changeRole(c, opRevoke) }
func (s *Service) approveRole(c echo.Context) error { return s.changeRole(c, opApprove) }
func (s *Service) cancelRole(c echo.Context) error  { return s.changeRole(c, opCancel) }

// rolesDone are the results a redirect to /roles may name.
var rolesDone = []string{opGrant, opRevoke, opApprove, opCancel, "requested"}

// rolesPage lists who holds which granted role, the grants of admin
// waiting for a second admin, and the form to grant.
func (s *Service) rolesPage(c echo.Context) error {
	done := c.QueryParam("done")
	if !slices.Contains(rolesDone, done) {
		done = ""
	}
	return s.renderRoles(c, http.StatusOK, "", done)
}

// renderRoles renders the roles page with status, a problem's message id
// or a result.
func (s *Service) renderRoles(c echo.Context, status int, problem, done string) error {
	ctx := c.Request().Context()
	holders, err := roleHolders(ctx, s.deps.DB.Pool())
	if err != nil {
		return err
	}
	requests, err := roleRequests(ctx, s.deps.DB.Pool())
	if err != nil {
		return err
	}
	p := page{Roles: &rolesView{Grantable: []string{roleAuditor, roleAdmin}}}
	t := tr{langOf(c)} // dates in the page's language
	for _, h := range holders {
		p.Roles.Holders = append(p.Roles.Holders, roleHolderView{roleHolder: h, At: t.DateTime(h.GrantedAt.In(s.zone)),
			Self: h.UZI == sessionOf(c).UZI})
	}
	for _, r := range requests {
		p.Roles.Requests = append(p.Roles.Requests, roleRequestView{roleRequest: r, At: t.DateTime(r.RequestedAt.In(s.zone)),
			Mine: r.RequestedBy == sessionOf(c).UZI, Self: r.UZI == sessionOf(c).UZI})
	}
	if problem != "" {
		p.Roles.Problem = tr{langOf(c)}.T(problem)
	}
	if done != "" {
		p.Roles.Done = tr{langOf(c)}.T("roles.done." + done)
	}
	return s.renderStatus(c, status, "roles", p)
}

// rolesView is the roles page's data.
type rolesView struct {
	Holders   []roleHolderView
	Requests  []roleRequestView
	Grantable []string
	Problem   string // a refusal's text
	Done      string // the last change's result
}

type roleHolderView struct {
	roleHolder
	At   string
	Self bool // the viewer's own: no revoke button
}

type roleRequestView struct {
	roleRequest
	At   string
	Mine bool // requested by the viewer: no approve button
	Self bool // for the viewer: no buttons
}
