package backoffice

// The per-card quota view (auditor, and so admin): today's vouches of
// each card against the daily quota in effect, and the cards that reached
// it in the last seven days. A card vouching up to its quota day after day
// is a stolen-card signal, which is an auditor's to follow up: an auditor
// reads it without being able to change the quota.

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
)

// quotaDays is how many days, today included, the view looks back for cards
// that reached the quota.
const quotaDays = 7

// quotaRowsMax bounds each table: past it the page says so.
const quotaRowsMax = 500

// cardCount is one card's vouches today.
type cardCount struct {
	UZI   string
	Count int
}

// vouchesToday counts each card's authorizations since the day's start,
// the most first.
func vouchesToday(ctx context.Context, q querier, since time.Time, limit int) ([]cardCount, error) {
	rows, err := q.Query(ctx, `select uzi_number, count(*) from authorizations where created_at >= $1
		group by uzi_number order by count(*) desc, uzi_number limit $2`, since, limit)
	if err != nil {
		return nil, fmt.Errorf("backoffice: count vouches per card: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (cardCount, error) {
		var c cardCount
		err := r.Scan(&c.UZI, &c.Count)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("backoffice: count vouches per card: %w", err)
	}
	return out, nil
}

// quotaHit is a card that reached the quota on a day: it vouched quota
// times or more (the quota in effect now), or was refused for the quota.
type quotaHit struct {
	UZI     string
	Day     time.Time
	Vouched int
	Refused int
}

// quotaHits lists the days since which a card reached quota, the newest
// first: from the authorizations (vouched ≥ quota) and the audit log's
// refusals for the quota, by day in zone.
func quotaHits(ctx context.Context, q querier, since time.Time, zone string, quota, limit int) ([]quotaHit, error) {
	rows, err := q.Query(ctx, `with vouched as (
			select uzi_number as uzi, (created_at at time zone $2)::date as day, count(*) as n
			from authorizations where created_at >= $1 group by 1, 2),
		refused as (
			select actor as uzi, (at at time zone $2)::date as day, count(*) as n
			from audit_log where at >= $1 and action = $4 and reason = 'quota-reached' group by 1, 2)
		select coalesce(v.uzi, r.uzi), coalesce(v.day, r.day), coalesce(v.n, 0), coalesce(r.n, 0)
		from vouched v full join refused r on v.uzi = r.uzi and v.day = r.day
		where coalesce(v.n, 0) >= $3 or r.n > 0
		order by 2 desc, 1 limit $5`, since, zone, quota, audit.ActionVouchRefused, limit)
	if err != nil {
		return nil, fmt.Errorf("backoffice: quota reached: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (quotaHit, error) {
		var h quotaHit
		err := r.Scan(&h.UZI, &h.Day, &h.Vouched, &h.Refused)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("backoffice: quota reached: %w", err)
	}
	return out, nil
}

// quotaView is the quota page's data, written out in the page's language.
type quotaView struct {
	Quota     string
	Today     string
	Since     string
	Cards     []quotaCardView
	Hits      []quotaHitView
	Truncated bool
}

type quotaCardView struct {
	UZI, Count, Left string
	Reached          bool
}

type quotaHitView struct {
	UZI, Day, Vouched, Refused string
}

// quotaPage shows today's count of each card against the quota, and the
// cards that reached it in the last seven days.
func (s *Service) quotaPage(c echo.Context) error {
	ctx, now := c.Request().Context(), s.now()
	t := tr{langOf(c)}
	quota := s.quota()
	today := s.dayStart(now)
	since := today.AddDate(0, 0, -(quotaDays - 1))
	counts, err := vouchesToday(ctx, s.deps.DB.Pool(), today, quotaRowsMax+1)
	if err != nil {
		return err
	}
	hits, err := quotaHits(ctx, s.deps.DB.Pool(), since, s.zone.String(), quota, quotaRowsMax+1)
	if err != nil {
		return err
	}
	v := &quotaView{Quota: t.Number(quota), Today: t.Date(today), Since: t.Date(since),
		Truncated: len(counts) > quotaRowsMax || len(hits) > quotaRowsMax}
	for _, cc := range counts[:min(len(counts), quotaRowsMax)] {
		v.Cards = append(v.Cards, quotaCardView{UZI: cc.UZI, Count: t.Number(cc.Count), Left: t.Number(max(0, quota-cc.Count)),
			Reached: cc.Count >= quota})
	}
	for _, h := range hits[:min(len(hits), quotaRowsMax)] {
		day := time.Date(h.Day.Year(), h.Day.Month(), h.Day.Day(), 0, 0, 0, 0, s.zone)
		v.Hits = append(v.Hits, quotaHitView{UZI: h.UZI, Day: t.Date(day), Vouched: t.Number(h.Vouched), Refused: t.Number(h.Refused)})
	}
	return s.renderStatus(c, http.StatusOK, "quota", page{QuotaView: v})
}
