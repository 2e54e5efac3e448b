package backoffice

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/server"
)

// Refusals anyone can make in bulk — another site's request, a request
// signed out, rate limited, locked, or with nothing pending — are counted
// in memory and written as one audit row per source, action, reason and
// minute, with the count: never an audit row (and the audit chain's lock,
// which every vouch takes) per anonymous request.

// MaxRefusalSources bounds the sources counted apart in one minute; the
// refusals of any more are counted together, under the source "*".
const MaxRefusalSources = 1000

// tallied are the refusal codes a handler returns that are counted rather
// than written one by one (another site's request is counted where it is
// refused, before any handler: crossOrigin).
// Every other refusal keeps its own row (a refused sign-in names a card;
// a refused vouch a card holder).
var tallied = map[string]bool{
	errLocked.Code: true, errRateLimited.Code: true, errNoPending.Code: true, errSignedOut.Code: true,
}

type refusalKey struct{ actor, ip, action, reason string }

type refusalCount struct {
	n             int
	first         audit.Entry // subject and user agent of the first one
	firstAt, last time.Time
}

// refusals counts the current minute's refusals; closed are the minutes
// not written yet.
type refusals struct {
	mu     sync.Mutex
	minute time.Time
	counts map[refusalKey]*refusalCount
	order  []refusalKey // the order they came in, for the rows' order
	closed []refusalMinute
}

type refusalMinute struct {
	counts map[refusalKey]*refusalCount
	order  []refusalKey
}

// add counts one refusal at now.
func (r *refusals) add(e audit.Entry, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := now.Truncate(time.Minute); !m.Equal(r.minute) {
		r.closeLocked()
		r.minute = m
	}
	if r.counts == nil {
		r.counts = map[refusalKey]*refusalCount{}
	}
	k := refusalKey{e.Actor, e.IP, e.Action, e.Reason}
	if _, ok := r.counts[k]; !ok && len(r.counts) >= MaxRefusalSources {
		k.actor, k.ip = "", "*"
		e.Actor, e.IP = "", "*"
	}
	c, ok := r.counts[k]
	if !ok {
		c = &refusalCount{first: e, firstAt: now}
		r.counts[k] = c
		r.order = append(r.order, k)
	}
	c.n++
	c.last = now
}

func (r *refusals) closeLocked() {
	if len(r.counts) > 0 {
		r.closed = append(r.closed, refusalMinute{r.counts, r.order})
	}
	r.counts, r.order = nil, nil
}

// take returns the minutes that ended by now (all, with everything),
// forgetting them.
func (r *refusals) take(now time.Time, everything bool) []refusalMinute {
	r.mu.Lock()
	defer r.mu.Unlock()
	if everything || !now.Before(r.minute.Add(time.Minute)) {
		r.closeLocked()
	}
	out := r.closed
	r.closed = nil
	return out
}

// tally counts a refusal of the request for its minute's audit row.
func (s *Service) tally(c echo.Context, e audit.Entry) {
	e.IP, e.UserAgent = c.RealIP(), c.Request().UserAgent()
	if e.Subject == "" {
		e.Subject = c.Request().Method + " " + c.Path()
	}
	s.refused.add(e, s.now())
}

// auditRefusals counts the tallied refusals the handlers return.
func (s *Service) auditRefusals(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		var se *server.Error
		if errors.As(err, &se) && tallied[se.Code] {
			s.tally(c, entry(c, audit.ActionRequestRefused, se.Code))
		}
		return err
	}
}

// flushRefusals writes the counted refusals of the minutes that ended (or,
// with everything, of all) as audit rows, in one transaction. Rows that
// cannot be written are logged and dropped: the refusals stood.
func (s *Service) flushRefusals(ctx context.Context, everything bool) {
	minutes := s.refused.take(s.now(), everything)
	if len(minutes) == 0 {
		return
	}
	now := s.now()
	rows := 0
	for _, m := range minutes {
		rows += len(m.order)
	}
	err := s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
		for _, m := range minutes {
			for _, k := range m.order {
				c := m.counts[k]
				e := c.first
				detail, _ := json.Marshal(map[string]any{"count": c.n, "first": c.firstAt.UTC(), "last": c.last.UTC()})
				e.Detail = string(detail)
				if _, err := audit.Append(ctx, tx, e, now); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		s.deps.Log.Error("audit rows of counted refusals not written", "rows", rows, "err", err)
	}
}
