package backoffice

// `vouch audit verify` from the page: the whole chain recomputed in the
// background (a year of rows takes a while), one verification at a time
// in each copy of the back office, its progress on the page, and its
// result — intact with the head hash to note down, or the first row where
// the chain does not hold — kept as an audit row, so that every copy's
// page lists the last results.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/server"
)

// verifyTimeout bounds one verification: far more than a year of rows
// takes, so only a stuck database ends one.
const verifyTimeout = 2 * time.Hour

// Refusals of a verification.
var (
	errVerifyBusy = &server.Error{Status: http.StatusConflict, Code: "audit-verify-busy", Message: "audittrail.verify.busy"}
	errVerifyHead = &server.Error{Status: http.StatusBadRequest, Code: "audit-verify-head", Message: "audittrail.verify.bad-head"}
)

// auditTrail is a copy's verification: the one under way, or the last.
type auditTrail struct {
	mu  sync.Mutex
	job *verifyJob
}

// verifyJob is one verification of the chain.
type verifyJob struct {
	By      string // the auditor's UZI number
	Known   []byte // the head they asked to find in the chain, or nil
	Started time.Time
	checked atomic.Int64
	total   atomic.Int64 // rows in the chain (from its first and last seq)
	done    chan struct{}
	// Set before done is closed.
	Finished time.Time
	Report   audit.Report
	Problem  *audit.Problem
	Failed   bool // the chain could not be read to the end
}

func (j *verifyJob) running() bool {
	select {
	case <-j.done:
		return false
	default:
		return true
	}
}

// startAuditVerify is POST /audit-verify: begins a verification, with a
// head noted earlier (head, optional) that must be in the chain. A second
// one while one runs in this copy is refused.
func (s *Service) startAuditVerify(c echo.Context) error {
	sess := sessionOf(c) // the route needs auditor: there is an unlocked one
	var known []byte
	if h := strings.TrimSpace(c.FormValue("head")); h != "" {
		b, err := hex.DecodeString(strings.ToLower(h))
		if err != nil || len(b) != 32 {
			return s.refuseTrail(c, "audit-verify", trailQuery{}, errVerifyHead)
		}
		known = b
	}
	s.trail.mu.Lock()
	if s.trail.job != nil && s.trail.job.running() {
		s.trail.mu.Unlock()
		return s.refuseTrail(c, "audit-verify", trailQuery{}, errVerifyBusy)
	}
	job := &verifyJob{By: sess.UZI, Known: known, Started: s.now(), done: make(chan struct{})}
	s.trail.job = job
	s.trail.mu.Unlock()

	e := entry(c, ActionAuditVerifyStarted, "")
	if known != nil {
		e.Detail = `{"head":"` + hex.EncodeToString(known) + `"}`
	}
	s.record(c, e)
	// The result's row names the auditor and where they asked from.
	result := audit.Entry{Actor: sess.UZI, IP: c.RealIP(), UserAgent: c.Request().UserAgent()}
	go s.runVerify(job, result)
	return c.Redirect(http.StatusSeeOther, "/audit-verify")
}

// runVerify verifies the chain in one read-only snapshot, off the
// request, and records the result.
func (s *Service) runVerify(job *verifyJob, result audit.Entry) {
	ctx, cancel := context.WithTimeout(context.Background(), verifyTimeout)
	defer cancel()
	var rep audit.Report
	err := pgx.BeginTxFunc(ctx, s.deps.DB.Pool(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var total int64
		if err := tx.QueryRow(ctx, `select coalesce(max(seq) - min(seq) + 1, 0) from audit_log`).Scan(&total); err != nil {
			return err
		}
		job.total.Store(total)
		var err error
		rep, err = audit.VerifyProgress(ctx, tx, job.Known, func(n int64) { job.checked.Store(n) })
		return err
	})
	var p audit.Problem
	detail := map[string]any{"rows": rep.Rows, "started": job.Started.UTC()}
	switch {
	case errors.As(err, &p):
		job.Problem = &p
		result.Action, result.Reason = ActionAuditVerifyBroken, "chain-"+p.Kind
		if p.Seq > 0 {
			result.Subject = "seq " + strconv.FormatInt(p.Seq, 10)
		}
	case err != nil:
		job.Failed = true
		result.Action = ActionAuditVerifyFailed
		s.deps.Log.Error("audit trail: verification could not read the chain", "err", err)
	default:
		result.Action = ActionAuditVerified
		detail["head"] = rep.HeadHex()
	}
	if job.Known != nil {
		detail["known"] = hex.EncodeToString(job.Known)
	}
	b, _ := json.Marshal(detail)
	result.Detail = string(b)
	job.Report, job.Finished = rep, s.now()
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := s.deps.DB.InTx(wctx, func(tx pgx.Tx) error {
		_, err := audit.Append(wctx, tx, result, s.now())
		return err
	}); err != nil {
		s.deps.Log.Error("audit row not written", "action", result.Action, "err", err)
	}
	close(job.done)
}

// verifyView is the verification page's data.
type verifyView struct {
	Running        bool
	Checked, Total int64
	Progress       string // "12,345 of 67,890 rows checked"
	By, Started    string
	Finished       string
	Intact, Broken bool
	Failed         bool
	Rows           string
	Head           string // hex, to note down
	Problem        string // where the chain does not hold, in words
	Known          string // the head asked for, hex
	Recent         []trailRowView
	RecentHeads    map[int64]string
}

// verifyView is this copy's verification, and the last results recorded
// by any copy.
func (s *Service) verifyView(c echo.Context, t tr) *verifyView {
	v := &verifyView{}
	s.trail.mu.Lock()
	job := s.trail.job
	s.trail.mu.Unlock()
	if job != nil {
		v.Running = job.running()
		v.Checked, v.Total = job.checked.Load(), max(job.total.Load(), job.checked.Load())
		v.Progress = t.Tf("audittrail.verify.progress", "Checked", t.Number(v.Checked), "Total", t.Number(v.Total))
		v.By, v.Started = job.By, t.DateTime(job.Started.In(s.zone))
		if job.Known != nil {
			v.Known = hex.EncodeToString(job.Known)
		}
		if !v.Running {
			v.Finished = t.DateTime(job.Finished.In(s.zone))
			v.Rows = t.Number(job.Report.Rows)
			switch {
			case job.Problem != nil:
				v.Broken, v.Problem = true, problemText(t, *job.Problem)
			case job.Failed:
				v.Failed = true
			default:
				v.Intact, v.Head = true, job.Report.HeadHex()
			}
		}
	}
	// The last results of every copy, from the log itself.
	rows, err := audit.Page(c.Request().Context(), s.deps.DB.Pool(),
		audit.Filter{Actions: []string{ActionAuditVerified, ActionAuditVerifyBroken, ActionAuditVerifyFailed}}, nil, nil, 10)
	if err != nil {
		s.deps.Log.Warn("audit trail: last verifications not read", "err", err)
	}
	v.RecentHeads = map[int64]string{}
	for _, r := range rows {
		v.Recent = append(v.Recent, s.rowView(t, r))
		var d struct{ Head string }
		if json.Unmarshal([]byte(r.Detail), &d) == nil && d.Head != "" {
			v.RecentHeads[r.Seq] = d.Head
		}
	}
	return v
}

// problemText is where the chain does not hold, in words.
func problemText(t tr, p audit.Problem) string {
	return t.Tf("audittrail.verify.problem."+p.Kind, "Seq", t.Number(p.Seq))
}

// auditVerifyPage is GET /audit-verify: the verification under way in
// this copy with its progress (the page's script follows it; without
// script, reloading the page does), or its result, and the form to start
// one.
func (s *Service) auditVerifyPage(c echo.Context) error {
	if len(c.QueryParams()) > 0 {
		return s.refuseTrail(c, "audit-verify", trailQuery{}, errTrailParam)
	}
	t := tr{langOf(c)}
	return s.render(c, "audit-verify", page{AuditTrail: &auditTrailView{Verify: s.verifyView(c, t)}})
}

// verifyStatus is the progress the page's script shows.
type verifyStatus struct {
	Running bool   `json:"running"`
	Checked int64  `json:"checked"`
	Total   int64  `json:"total"`
	Text    string `json:"text"`
}

// auditVerifyStatus is GET /audit-verify/status: the progress, for the
// page's script.
func (s *Service) auditVerifyStatus(c echo.Context) error {
	t := tr{langOf(c)}
	st := verifyStatus{}
	s.trail.mu.Lock()
	job := s.trail.job
	s.trail.mu.Unlock()
	if job != nil {
		st.Running, st.Checked = job.running(), job.checked.Load()
		st.Total = max(job.total.Load(), st.Checked)
		st.Text = t.Tf("audittrail.verify.progress", "Checked", t.Number(st.Checked), "Total", t.Number(st.Total))
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, st)
}
