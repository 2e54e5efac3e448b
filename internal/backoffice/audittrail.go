package backoffice

// The audit trail's pages (auditor; admin holds auditor): the log filtered
// by time, action, actor, result and reason, newest first, a page at a
// time by keyset; each row's chain check; the whole chain's verification
// in the background (audittrail_verify.go); and signed CSV and JSON
// downloads of the filtered rows (audittrail_download.go).
//
// Every link of a page pins the newest row it shows (upto: the head when
// the auditor first opened it), so that the pages after it, and the
// downloads, hold exactly the rows that filter chose then, whatever was
// appended since.

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// trailPageSize is how many rows a page of the trail shows.
const trailPageSize = 50

// Audit actions of the trail's pages.
const (
	ActionAuditVerifyStarted = "audit-verify"        // a verification of the chain began
	ActionAuditVerified      = "audit-verified"      // it found the chain intact (detail: rows, head)
	ActionAuditVerifyBroken  = "audit-verify-broken" // it found where the chain does not hold (reason: the kind)
	ActionAuditVerifyFailed  = "audit-verify-failed" // it could not read the chain to the end
	ActionAuditDownload      = "audit-download"      // rows downloaded (detail: format, filter, upto)
	ActionAuditSignature     = "audit-signature"     // a download's signature downloaded
)

// Refusals of the trail's filter: each names what is wrong, in the
// auditor's language.
var (
	errTrailParam  = &server.Error{Status: http.StatusBadRequest, Code: "audit-filter-unknown", Message: "audittrail.bad.param"}
	errTrailTime   = &server.Error{Status: http.StatusBadRequest, Code: "audit-filter-time", Message: "audittrail.bad.time"}
	errTrailRange  = &server.Error{Status: http.StatusBadRequest, Code: "audit-filter-range", Message: "audittrail.bad.range"}
	errTrailAction = &server.Error{Status: http.StatusBadRequest, Code: "audit-filter-action", Message: "audittrail.bad.action"}
	errTrailActor  = &server.Error{Status: http.StatusBadRequest, Code: "audit-filter-actor", Message: "audittrail.bad.actor"}
	errTrailResult = &server.Error{Status: http.StatusBadRequest, Code: "audit-filter-result", Message: "audittrail.bad.result"}
	errTrailReason = &server.Error{Status: http.StatusBadRequest, Code: "audit-filter-reason", Message: "audittrail.bad.reason"}
	errTrailUpTo   = &server.Error{Status: http.StatusBadRequest, Code: "audit-filter-upto", Message: "audittrail.bad.upto"}
	errTrailCursor = &server.Error{Status: http.StatusBadRequest, Code: "audit-filter-cursor", Message: "audittrail.bad.cursor"}
	errTrailFormat = &server.Error{Status: http.StatusBadRequest, Code: "audit-download-format", Message: "audittrail.bad.format"}
	errTrailRow    = &server.Error{Status: http.StatusNotFound, Code: "audit-row-unknown", Message: "audittrail.bad.row"}
)

// The filter's parameters, in the order of the form.
var trailFilterParams = []string{"from", "to", "action", "actor", "result", "reason"}

// reasonCode is the form of a reason code: what the back office writes.
var reasonCode = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// trailQuery is a filter as the page's query string gives it.
type trailQuery struct {
	audit.Filter
	Values        url.Values // the filter's parameters as given, for the form and the links
	After, Before *audit.Cursor
	Format        string // downloads: csv or json
}

// trailActions are the actions the filter offers and accepts: those the
// catalogues name (audit.action.*).
func trailActions() []string {
	var out []string
	for _, id := range i18n.Default().IDs() {
		if a, ok := strings.CutPrefix(id, "audit.action."); ok {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// parseTrail reads the filter of the request strictly: an unknown or
// repeated parameter, or a value of the wrong form, is refused with what
// is wrong; an empty value is no filter. allowed are the other
// parameters the route takes.
func (s *Service) parseTrail(c echo.Context, allowed ...string) (trailQuery, *server.Error) {
	q := trailQuery{Values: url.Values{}}
	params := c.QueryParams()
	for k, v := range params {
		if !slices.Contains(trailFilterParams, k) && !slices.Contains(allowed, k) || len(v) != 1 {
			return q, errTrailParam
		}
	}
	get := func(k string) string {
		v := strings.TrimSpace(params.Get(k))
		if v != "" && slices.Contains(trailFilterParams, k) {
			q.Values.Set(k, v)
		}
		return v
	}
	var err *server.Error
	if q.From, err = s.trailTime(get("from"), false); err != nil {
		return q, err
	}
	if q.To, err = s.trailTime(get("to"), true); err != nil {
		return q, err
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		return q, errTrailRange
	}
	if q.Action = get("action"); q.Action != "" && !slices.Contains(trailActions(), q.Action) {
		return q, errTrailAction
	}
	if q.Actor = get("actor"); q.Actor != "" && !uzi.ValidUZINumber(q.Actor) {
		return q, errTrailActor
	}
	if q.Result = get("result"); q.Result != "" && q.Result != audit.ResultOK && q.Result != audit.ResultRefused {
		return q, errTrailResult
	}
	if q.Reason = get("reason"); q.Reason != "" && !reasonCode.MatchString(q.Reason) {
		return q, errTrailReason
	}
	if v := get("upto"); v != "" {
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || n < 1 || strconv.FormatInt(n, 10) != v {
			return q, errTrailUpTo
		}
		q.UpTo = n
	}
	for k, cur := range map[string]**audit.Cursor{"after": &q.After, "before": &q.Before} {
		if v := get(k); v != "" {
			if *cur = parseCursor(v); *cur == nil {
				return q, errTrailCursor
			}
		}
	}
	if q.After != nil && q.Before != nil {
		return q, errTrailCursor
	}
	if v := get("format"); slices.Contains(allowed, "format") {
		if v != audit.FormatCSV && v != audit.FormatJSON {
			return q, errTrailFormat
		}
		q.Format = v
	}
	return q, nil
}

// trailTimeLayouts are the forms a time of the filter takes: the
// datetime-local input's, and a day.
var trailTimeLayouts = []string{"2006-01-02T15:04", time.DateOnly}

// trailTime reads a time of the filter in the back office's zone. The end
// of the range (to) includes the minute or the day it names.
func (s *Service) trailTime(v string, end bool) (time.Time, *server.Error) {
	if v == "" {
		return time.Time{}, nil
	}
	for i, layout := range trailTimeLayouts {
		t, err := time.ParseInLocation(layout, v, s.zone)
		if err != nil || t.Year() < 2000 || t.Year() > 9999 {
			continue
		}
		if end && i == 0 {
			t = t.Add(time.Minute)
		} else if end {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	return time.Time{}, errTrailTime
}

// A cursor in a link: the row's time in microseconds since 1970 and its
// seq, "1733577600000000.42".
func formatCursor(c audit.Cursor) string {
	return strconv.FormatInt(c.At.UnixMicro(), 10) + "." + strconv.FormatInt(c.Seq, 10)
}

func parseCursor(v string) *audit.Cursor {
	a, b, ok := strings.Cut(v, ".")
	at, err1 := strconv.ParseInt(a, 10, 64)
	seq, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || seq < 1 || strconv.FormatInt(at, 10) != a || strconv.FormatInt(seq, 10) != b {
		return nil
	}
	return &audit.Cursor{At: time.UnixMicro(at).UTC(), Seq: seq}
}

// filterString is the filter in canonical form (sorted, encoded): in the
// links, and in a download's signed statement.
func (q trailQuery) filterString() string { return q.Values.Encode() }

// link is a URL of path with the filter, the pinned head and more.
func (q trailQuery) link(path string, more ...string) string {
	v := url.Values{}
	for k, vs := range q.Values {
		v[k] = vs
	}
	if q.UpTo > 0 {
		v.Set("upto", strconv.FormatInt(q.UpTo, 10))
	}
	for i := 0; i+1 < len(more); i += 2 {
		v.Set(more[i], more[i+1])
	}
	if len(v) == 0 {
		return path
	}
	return path + "?" + v.Encode()
}

// auditTrailView is what the trail's pages show.
type auditTrailView struct {
	Problem string // a refusal's text
	// The filter form.
	From, To, Action, Actor, Result, Reason string
	Actions                                 []choice
	Results                                 []choice
	Reasons                                 []string
	// The table and its links.
	Rows                       []trailRowView
	UpTo                       string // the head the pages are pinned to, as the language writes numbers
	Newest, Newer, Older       string
	CSV, JSON, CSVSig, JSONSig string
	Filtered                   bool
	// The row page.
	Check *rowCheckView
	// The verification page.
	Verify *verifyView
}

type choice struct{ Value, Label string }

type trailRowView struct {
	Seq                int64
	SeqText            string
	At                 string
	Actor, Subject     string
	Action, ActionCode string
	Refused            bool
	Reason, ReasonCode string
	Link               string
}

// rowView is a row as the table shows it, in the page's language.
func (s *Service) rowView(t tr, r audit.Row) trailRowView {
	v := trailRowView{Seq: r.Seq, SeqText: t.Number(r.Seq), At: t.DateTime(r.At.In(s.zone)), Actor: r.Actor, Subject: r.Subject,
		Action: actionText(t, r.Action), ActionCode: r.Action, Refused: r.Refused(), ReasonCode: r.Reason,
		Link: "/audit-row?seq=" + strconv.FormatInt(r.Seq, 10)}
	if r.Reason != "" {
		v.Reason = t.Reason(r.Reason)
	}
	return v
}

// actionText is an action in words; the code when the catalogues have
// none (an action of a newer version).
func actionText(t tr, action string) string {
	if i18n.Default().Has(i18n.Source, "audit.action."+action) {
		return t.T("audit.action." + action)
	}
	return action
}

// trailForm fills the filter form of v from q.
func (s *Service) trailForm(t tr, v *auditTrailView, q trailQuery) {
	v.From, v.To, v.Action = q.Values.Get("from"), q.Values.Get("to"), q.Values.Get("action")
	v.Actor, v.Result, v.Reason = q.Values.Get("actor"), q.Values.Get("result"), q.Values.Get("reason")
	for _, a := range trailActions() {
		v.Actions = append(v.Actions, choice{a, actionText(t, a)})
	}
	slices.SortFunc(v.Actions, func(a, b choice) int { return strings.Compare(a.Label, b.Label) })
	v.Results = []choice{{audit.ResultOK, t.T("audittrail.result.ok")}, {audit.ResultRefused, t.T("audittrail.result.refused")}}
	for code := range reasonMessages {
		v.Reasons = append(v.Reasons, code)
	}
	slices.Sort(v.Reasons)
	v.Filtered = len(q.Values) > 0
}

// auditTrailPage is GET /audit: the filter form, a page of rows, the links
// to the pages before and after it and to the downloads.
func (s *Service) auditTrailPage(c echo.Context) error {
	t := tr{langOf(c)}
	q, refusal := s.parseTrail(c, "upto", "after", "before")
	if refusal != nil {
		return s.refuseTrail(c, "audit", q, refusal)
	}
	ctx := c.Request().Context()
	pool := s.deps.DB.Pool()
	if q.UpTo == 0 {
		head, err := audit.Head(ctx, pool)
		if err != nil {
			return err
		}
		q.UpTo = head
	}
	v := &auditTrailView{UpTo: t.Number(q.UpTo)}
	s.trailForm(t, v, q)
	if q.UpTo > 0 { // an empty log has no rows to show
		// One more row than shown says whether there is a page beyond.
		rows, err := audit.Page(ctx, pool, q.Filter, q.After, q.Before, trailPageSize+1)
		if err != nil {
			return err
		}
		more := len(rows) > trailPageSize
		if more && q.Before != nil {
			rows = rows[1:] // the extra row is the newest
		} else if more {
			rows = rows[:trailPageSize]
		}
		for _, r := range rows {
			v.Rows = append(v.Rows, s.rowView(t, r))
		}
		if len(rows) > 0 {
			if more || q.Before != nil {
				v.Older = q.link("/audit", "after", formatCursor(audit.CursorOf(rows[len(rows)-1])))
			}
			if q.After != nil || q.Before != nil && more {
				v.Newer = q.link("/audit", "before", formatCursor(audit.CursorOf(rows[0])))
			}
		}
		if q.After != nil || q.Before != nil {
			v.Newest = q.link("/audit")
		}
		v.CSV, v.JSON = q.link("/audit-download", "format", audit.FormatCSV), q.link("/audit-download", "format", audit.FormatJSON)
		v.CSVSig, v.JSONSig = q.link("/audit-signature", "format", audit.FormatCSV), q.link("/audit-signature", "format", audit.FormatJSON)
	}
	return s.render(c, "audit", page{AuditTrail: v})
}

// refuseTrail answers a malformed filter: the page again with what is
// wrong (400), the filter as given, no rows, nothing else done; the
// refusal is counted for its minute's audit row.
func (s *Service) refuseTrail(c echo.Context, name string, q trailQuery, refusal *server.Error) error {
	s.tally(c, entry(c, audit.ActionRequestRefused, refusal.Code))
	t := tr{langOf(c)}
	v := &auditTrailView{Problem: t.T(refusal.Message)}
	if name == "audit" {
		s.trailForm(t, v, q)
	}
	if name == "audit-verify" {
		v.Verify = s.verifyView(c, t)
	}
	return s.renderStatus(c, refusal.Status, name, page{AuditTrail: v})
}

// rowCheckView is one row in full and how it holds in the chain.
type rowCheckView struct {
	Row                   trailRowView
	AtUTC                 string
	IP, UserAgent, Detail string
	PrevHash, Hash        string
	Holds                 bool   // the row's hash is that of its fields
	Prev                  string // how the link to the row before holds: ok, broken, first, missing
	Next                  string // how the row after links to it: ok, broken, head
	PrevSeq, NextSeq      string
	PrevLink, NextLink    string
}

// auditRowPage is GET /audit-row?seq=N: one row, every field, and its
// place in the chain: its hash recomputed, its link to the row before,
// the link of the row after to it; and the form to verify the whole chain
// up to it.
func (s *Service) auditRowPage(c echo.Context) error {
	t := tr{langOf(c)}
	params := c.QueryParams()
	v := params.Get("seq")
	seq, err := strconv.ParseInt(v, 10, 64)
	if len(params) != 1 || len(params["seq"]) != 1 || err != nil || seq < 1 || strconv.FormatInt(seq, 10) != v {
		return s.refuseTrail(c, "audit-row", trailQuery{}, errTrailRow)
	}
	n, err := audit.Around(c.Request().Context(), s.deps.DB.Pool(), seq)
	if err != nil {
		return err
	}
	if n.Row == nil {
		return s.refuseTrail(c, "audit-row", trailQuery{}, errTrailRow)
	}
	r := n.Row
	ch := &rowCheckView{Row: s.rowView(t, *r), AtUTC: r.At.UTC().Format(time.RFC3339Nano), IP: r.IP, UserAgent: r.UserAgent,
		Detail: r.Detail, PrevHash: fmt.Sprintf("%x", r.PrevHash), Hash: fmt.Sprintf("%x", r.Hash), Holds: r.Holds(),
		PrevSeq: t.Number(seq - 1), NextSeq: t.Number(seq + 1)}
	switch {
	case n.Prev == nil && r.PrevHash == nil:
		ch.Prev = "first"
	case n.Prev == nil:
		ch.Prev = "missing" // pruned (the anchor says so) or deleted: the whole chain's check tells
	case string(n.Prev.Hash) == string(r.PrevHash):
		ch.Prev, ch.PrevLink = "ok", "/audit-row?seq="+strconv.FormatInt(seq-1, 10)
	default:
		ch.Prev, ch.PrevLink = "broken", "/audit-row?seq="+strconv.FormatInt(seq-1, 10)
	}
	switch {
	case n.Next == nil:
		ch.Next = "head"
	case string(n.Next.PrevHash) == string(r.Hash):
		ch.Next, ch.NextLink = "ok", "/audit-row?seq="+strconv.FormatInt(seq+1, 10)
	default:
		ch.Next, ch.NextLink = "broken", "/audit-row?seq="+strconv.FormatInt(seq+1, 10)
	}
	return s.render(c, "audit-row", page{AuditTrail: &auditTrailView{Check: ch}})
}
