package directory

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// ErrRefreshRequired means the register cannot say what changed since the
// cookie (too old, or unknown): the mirror needs a full sync.
var ErrRefreshRequired = errors.New("directory: the register asks for a full refresh")

// Changes is what changed in the register since a cookie (RFC 4533,
// refreshOnly).
type Changes struct {
	Upserts []Entry  // added or modified card holders
	Deleted []string // entryUUIDs of removed entries
	// Invalid are entryUUIDs of entries that changed into something Vouch
	// cannot read: what the mirror says of them is no longer true, so a
	// sync must stop trusting it.
	Invalid []string
	// PresentPhase is set when the register answered by listing every entry
	// still there (Present) instead of naming deletions: then every mirror row
	// not in Present or Upserts is gone.
	PresentPhase bool
	Present      []string
	Cookie       []byte // where the next call starts
}

// ErrNoSyncrepl means the register does not offer RFC 4533 sync: changes
// are then found by modifyTimestamp (see ChangesSince).
var ErrNoSyncrepl = errors.New("directory: the register offers no syncrepl")

// Cookie returns a cookie for the register's current state, cheaply: a
// refresh of a search that matches nothing. Taken before a full scan, it
// lets the next Changes replay whatever changed during the scan.
//
// After a crash the register's sync state can lag its entries (see
// checkAhead) until it is written again, and Changes refuses such a state.
// A full scan that starts after this call reads every entry written before
// it, so the cookie also records the newest entryCSN the register holds now:
// the changes up to it are in the mirror, and Changes checks for hidden ones
// only after it. Without that, every sync until the register's next write
// would be a full one.
func (c *Client) Cookie(ctx context.Context) ([]byte, error) {
	cookie, err := c.registerCookie(ctx)
	if err != nil {
		return nil, err
	}
	reg, _ := splitCookie(cookie)
	newest := newestCSN(reg)
	if newest == "" {
		return cookie, nil
	}
	seen := newest
	err = c.scanRaw(ctx, fmt.Sprintf("(&%s%s)", c.cfg.Filter, newerThan(newest)), []string{"entryCSN"}, c.cfg.PageSize,
		func(_ string, raw *rawEntry) error {
			for _, v := range raw.GetEqualFoldAttributeValues("entryCSN") {
				if isCSN(v) {
					seen = max(seen, v)
				}
			}
			return nil
		}, nil, nil)
	if err != nil {
		return nil, err
	}
	return withSeen(reg, seen), nil
}

// registerCookie is the register's own cookie for its current state.
func (c *Client) registerCookie(ctx context.Context) ([]byte, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	req := ldap.NewSearchRequest(c.cfg.BaseDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(&(objectClass=*)(!(objectClass=*)))", []string{"1.1"}, nil)
	res := conn.Syncrepl(ctx, req, 16, ldap.SyncRequestModeRefreshOnly, nil, false)
	var cookie []byte
	for res.Next() {
		cookie = pickCookie(res.Controls(), cookie)
	}
	if err := res.Err(); err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultUnavailableCriticalExtension) {
			return nil, ErrNoSyncrepl
		}
		return nil, fmt.Errorf("%w: sync cookie: %v", ErrUnavailable, err)
	}
	if len(cookie) == 0 {
		return nil, ErrNoSyncrepl
	}
	return cookie, nil
}

// Changes returns what changed since cookie. skip is told about changed
// entries that are malformed.
func (c *Client) Changes(ctx context.Context, cookie []byte, skip func(dn string, err error)) (*Changes, error) {
	cookie, seen := splitCookie(cookie)
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	req := ldap.NewSearchRequest(c.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		c.cfg.Filter, c.cfg.Attributes.list(), nil)
	res := conn.Syncrepl(ctx, req, 256, ldap.SyncRequestModeRefreshOnly, cookie, false)
	ch := &Changes{Cookie: cookie}
	doneSeen := false
	for res.Next() {
		done, err := c.take(ch, res.Entry(), res.Controls(), skip)
		if err != nil {
			return nil, err
		}
		doneSeen = doneSeen || done
	}
	if err := res.Err(); err != nil {
		switch {
		case ldap.IsErrorWithCode(err, 4096): // e-syncRefreshRequired
			return nil, ErrRefreshRequired
		case ldap.IsErrorWithCode(err, ldap.LDAPResultUnwillingToPerform):
			// OpenLDAP: "consumer state is newer than provider!" — the
			// register lost changes (a crash, a restore) that the mirror
			// already has; only a full sync says what it holds now.
			return nil, fmt.Errorf("%w: %v", ErrRefreshRequired, err)
		}
		return nil, fmt.Errorf("%w: sync: %v", ErrUnavailable, err)
	}
	if !doneSeen {
		return nil, fmt.Errorf("%w: sync ended without its done control", ErrUnavailable)
	}
	if err := c.checkAhead(ctx, conn, ch.Cookie, seen); err != nil {
		// A write that landed after the answer is newer than its cookie
		// too: ask for the register's state now, and believe it behind only
		// if it still holds changes newer than that.
		now, cerr := c.registerCookie(ctx)
		if cerr != nil {
			return nil, cerr
		}
		if err := c.checkAhead(ctx, conn, now, seen); err != nil {
			return nil, err
		}
	}
	if sid, ok := cookieBehind(ch.Cookie, cookie); ok {
		// The register's state is older than ours: after a crash its
		// checkpointed state can lag its entries, and what it reports since
		// is incomplete. Trusting it would mark the mirror fresh while it
		// misses changes.
		return nil, fmt.Errorf("%w: its sync state for server %s went backwards", ErrRefreshRequired, sid)
	}
	ch.Cookie = withSeen(ch.Cookie, seen)
	return ch, nil
}

// seenPrefix starts a cookie that carries, besides the register's own, the
// newest entryCSN the mirror is known to hold (Cookie). It is Vouch's: only
// the register's part is ever sent.
const seenPrefix = "vouch-seen="

// withSeen wraps the register's cookie with seen while seen is newer than
// the register's own state; once the register is written again its state
// passes seen, and the plain cookie says as much.
func withSeen(register []byte, seen string) []byte {
	if seen == "" || seen <= newestCSN(register) {
		return register
	}
	return append([]byte(seenPrefix+seen+"\n"), register...)
}

// splitCookie returns the register's cookie and the CSN a wrapped cookie
// carries ("" for none).
func splitCookie(cookie []byte) (register []byte, seen string) {
	rest, ok := strings.CutPrefix(string(cookie), seenPrefix)
	if !ok {
		return cookie, ""
	}
	csn, reg, ok := strings.Cut(rest, "\n")
	if !ok || !isCSN(csn) {
		return cookie, "" // not ours after all: the register's to judge
	}
	return []byte(reg), csn
}

// newestCSN is the newest CSN of an OpenLDAP cookie, of any server; "" when
// it has none.
func newestCSN(cookie []byte) string {
	var newest string
	for _, csn := range cookieCSNs(cookie) {
		newest = max(newest, csn)
	}
	return newest
}

// newerThan is a filter for entries changed after csn.
func newerThan(csn string) string {
	csn = ldap.EscapeFilter(csn)
	return fmt.Sprintf("(entryCSN>=%s)(!(entryCSN=%s))", csn, csn)
}

// isCSN reports whether s has the form of an OpenLDAP CSN
// (20261122041234.123456Z#000000#000#000000).
func isCSN(s string) bool {
	f := strings.Split(s, "#")
	return len(f) == 4 && len(f[0]) >= 15
}

// checkAhead asks whether the register holds entries changed after its own
// sync state, the cookie: after a crash its checkpointed state can lag its
// entries, and it then leaves those changes out of every answer — for good
// once newer changes move its state past them. Only OpenLDAP cookies and
// entryCSN can be compared; for others the scheduled full sync bounds what
// such a lag can hide.
//
// seen, when set, is the newest entryCSN the mirror already holds (Cookie):
// only changes after both it and the cookie are hidden ones.
func (c *Client) checkAhead(ctx context.Context, conn *ldap.Conn, cookie []byte, seen string) error {
	newest := newestCSN(cookie)
	if newest == "" {
		return nil
	}
	newest = max(newest, seen)
	req := ldap.NewSearchRequest(c.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 1, 0, false,
		fmt.Sprintf("(&%s%s)", c.cfg.Filter, newerThan(newest)), []string{"1.1"}, nil)
	res, err := conn.Search(req) // bounded by the connection's timeout
	switch {
	case err == nil && len(res.Entries) > 0, ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded):
		return fmt.Errorf("%w: it holds changes newer than its sync state (%s)", ErrRefreshRequired, newest)
	case err != nil:
		return fmt.Errorf("%w: sync state check: %v", ErrUnavailable, err)
	}
	return nil
}

// cookieBehind reports whether the register's cookie now is older than the
// one it was asked from, for some server id: OpenLDAP cookies carry a change
// sequence number per server ("rid=001,csn=20261122041234.123456Z#000000#000#000000;…"),
// and CSNs of one server order as text. Cookies of another form cannot be
// compared; the scheduled full sync bounds what they can hide.
func cookieBehind(now, before []byte) (sid string, behind bool) {
	was, is := cookieCSNs(before), cookieCSNs(now)
	for id, old := range was {
		if csn, ok := is[id]; ok && csn < old || !ok && len(is) > 0 {
			return id, true // older, or the server's state vanished
		}
	}
	return "", false
}

// cookieCSNs returns the CSNs of an OpenLDAP cookie by server id.
func cookieCSNs(cookie []byte) map[string]string {
	out := map[string]string{}
	for _, part := range strings.Split(string(cookie), ",") {
		list, ok := strings.CutPrefix(part, "csn=")
		if !ok {
			continue
		}
		for _, csn := range strings.Split(list, ";") {
			if !isCSN(csn) {
				continue
			}
			out[strings.Split(csn, "#")[2]] = csn
		}
	}
	return out
}

// take adds one message of a sync answer to ch: an entry with its sync
// state, or the controls of an intermediate or final message. done is set
// by the final one.
func (c *Client) take(ch *Changes, le *ldap.Entry, ctls []ldap.Control, skip func(dn string, err error)) (done bool, err error) {
	if le != nil {
		state := findSyncState(ctls)
		if state == nil {
			return false, errors.New("directory: sync entry without sync state")
		}
		switch state.State {
		case ldap.SyncStateAdd, ldap.SyncStateModify:
			e, err := c.parseEntry(le, le.DN)
			if err != nil {
				skip(le.DN, err)
				ch.Invalid = append(ch.Invalid, state.EntryUUID.String())
				// Still present: a malformed change is not a deletion.
				ch.Present = append(ch.Present, state.EntryUUID.String())
				return false, nil
			}
			e.EntryUUID = state.EntryUUID.String()
			ch.Upserts = append(ch.Upserts, e)
		case ldap.SyncStateDelete:
			ch.Deleted = append(ch.Deleted, state.EntryUUID.String())
		case ldap.SyncStatePresent:
			ch.Present = append(ch.Present, state.EntryUUID.String())
		default:
			return false, fmt.Errorf("directory: sync entry with unknown state %d", state.State)
		}
		ch.Cookie = pickCookie(ctls, ch.Cookie)
		return false, nil
	}
	for _, ctl := range ctls {
		switch v := ctl.(type) {
		case *ldap.ControlSyncInfo:
			if v.SyncIdSet != nil {
				for _, u := range v.SyncIdSet.SyncUUIDs {
					if v.SyncIdSet.RefreshDeletes {
						ch.Deleted = append(ch.Deleted, u.String())
					} else {
						ch.Present = append(ch.Present, u.String())
					}
				}
			}
		case *ldap.ControlSyncDone:
			done = true
			ch.PresentPhase = !v.RefreshDeletes
		}
	}
	ch.Cookie = pickCookie(ctls, ch.Cookie)
	return done, nil
}

func findSyncState(ctls []ldap.Control) *ldap.ControlSyncState {
	for _, c := range ctls {
		if s, ok := c.(*ldap.ControlSyncState); ok {
			return s
		}
	}
	return nil
}

// pickCookie returns the newest cookie among the controls, or old.
func pickCookie(ctls []ldap.Control, old []byte) []byte {
	for _, c := range ctls {
		var ck []byte
		switch v := c.(type) {
		case *ldap.ControlSyncState:
			ck = v.Cookie
		case *ldap.ControlSyncDone:
			ck = v.Cookie
		case *ldap.ControlSyncInfo:
			switch {
			case v.NewCookie != nil:
				ck = v.NewCookie.Cookie
			case v.RefreshDelete != nil:
				ck = v.RefreshDelete.Cookie
			case v.RefreshPresent != nil:
				ck = v.RefreshPresent.Cookie
			case v.SyncIdSet != nil:
				ck = v.SyncIdSet.Cookie
			}
		}
		if len(ck) > 0 {
			old = ck
		}
	}
	return old
}

// timestampPrefix marks a cookie of the modifyTimestamp fallback.
const timestampPrefix = "modifyTimestamp>="

// TimestampCookie is the cookie of the fallback: changes at or after t.
func TimestampCookie(t time.Time) []byte {
	return []byte(timestampPrefix + t.UTC().Format("20060102150405Z"))
}

// IsTimestampCookie reports whether cookie is a fallback cookie.
func IsTimestampCookie(cookie []byte) bool { return strings.HasPrefix(string(cookie), timestampPrefix) }

// ChangesSince is the fallback for registers without syncrepl: entries whose
// modifyTimestamp is at or after the cookie's time, and — since a deletion
// leaves no timestamp — the entryUUID of every entry still present (a
// present phase). It costs a light scan of the register per call.
func (c *Client) ChangesSince(ctx context.Context, cookie []byte, skip func(dn string, err error)) (*Changes, error) {
	since := strings.TrimPrefix(string(cookie), timestampPrefix)
	if !IsTimestampCookie(cookie) || len(since) != 15 {
		return nil, fmt.Errorf("directory: %q is not a timestamp cookie", cookie)
	}
	ch := &Changes{PresentPhase: true}
	filter := fmt.Sprintf("(&%s(modifyTimestamp>=%s))", c.cfg.Filter, ldap.EscapeFilter(since))
	err := c.scanRaw(ctx, filter, c.cfg.Attributes.list(), c.cfg.PageSize, nil, func(p []Entry) error {
		ch.Upserts = append(ch.Upserts, p...)
		return nil
	}, func(dn string, err error) {
		skip(dn, err)
		if ee, ok := err.(*EntryError); ok && ee.EntryUUID != "" {
			ch.Invalid = append(ch.Invalid, ee.EntryUUID)
		}
	})
	if err != nil {
		return nil, err
	}
	err = c.scanRaw(ctx, c.cfg.Filter, []string{"entryUUID"}, c.cfg.PageSize, func(dn string, raw *rawEntry) error {
		if v := raw.GetEqualFoldAttributeValues("entryUUID"); len(v) == 1 && isUUID(v[0]) {
			ch.Present = append(ch.Present, strings.ToLower(v[0]))
		}
		return nil
	}, nil, nil)
	if err != nil {
		return nil, err
	}
	return ch, nil
}
