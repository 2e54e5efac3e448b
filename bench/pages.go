package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// pagesStage is the stage "pages": every page of the back office's route
// table a person opens (its GET pages), each requested by users concurrent
// users of the role it needs, signed in with the test cards as the
// backoffice stage signs in clinicians (the N card granted admin in
// backoffice_roles, which holds auditor and staff). The database holds a
// year of daily statistics and a realistic audit log (auditRows rows
// written by generate_series: their hash chain does not verify, which a
// page read never checks). The time is the request's as the client sees
// it on loopback, the server in this process (httptest), as in the
// backoffice stage's rows.
func pagesStage(fs *flag.FlagSet) measure {
	users := fs.Int("pages-users", 50, "concurrent users of each page (stage pages)")
	perEach := fs.Int("pages-requests", 4, "requests of each page per user and run (stage pages)")
	auditRows := fs.Int("pages-audit-rows", 1_000_000, "rows of the audit log the audit pages read (stage pages)")
	return func(ctx context.Context, b *bench) ([]Row, error) {
		var rows []Row
		pb := backofficeBench{dbURL: b.dbURL, cardsDir: b.cardsDir, clinicians: *users,
			// Six cards in turn: users sessions of each at least.
			perEach:   6,
			cardNames: []string{"gp", "doctor", "nurse", "dentist", "midwife", "staff"},
			pages: func(ctx context.Context, base string, db *database.DB, clients []*benchClient, cards []benchCard) (err error) {
				rows, err = measurePages(ctx, base, db, clients, cards, *users, *perEach, *auditRows)
				return err
			}}
		if _, err := pb.run(ctx); err != nil {
			return nil, err
		}
		return rows, nil
	}
}

// measurePages seeds the data, grants the N card admin, and measures every
// page.
func measurePages(ctx context.Context, base string, db *database.DB, clients []*benchClient, cards []benchCard, users, perEach, auditRows int) ([]Row, error) {
	var clinicians, admins []*benchClient
	var staff string
	for i, c := range clients {
		id, err := uzi.FromCertificate(cards[i].auth.Certificate())
		if err != nil {
			return nil, err
		}
		// A page answers itself: a redirect (to the sign-in) is a failure.
		c.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		if id.CardType == uzi.CardNamedEmployee {
			admins, staff = append(admins, c), id.UZI
		} else {
			clinicians = append(clinicians, c)
		}
	}
	if len(admins) == 0 || len(clinicians) == 0 {
		return nil, fmt.Errorf("pages: %d admins' and %d clinicians' sessions: the staff card and a clinician's are needed", len(admins), len(clinicians))
	}
	if _, err := db.Pool().Exec(ctx, `insert into backoffice_roles (uzi_number, role, granted_by, granted_at)
		values ($1, 'admin', 'VOUCH_BOOTSTRAP_ADMINS', now())`, staff); err != nil {
		return nil, fmt.Errorf("pages: grant admin: %w", err)
	}

	start := time.Now()
	if err := seedAudit(ctx, db, auditRows); err != nil {
		return nil, fmt.Errorf("pages: seed the audit log: %w", err)
	}
	zone, _ := time.LoadLocation("Europe/Amsterdam")
	y, m, d := time.Now().In(zone).Date()
	last := time.Date(y, m, d-1, 0, 0, 0, 0, time.UTC)
	first := last.AddDate(0, 0, -364)
	if err := seedStats(ctx, db, first, last, 2000); err != nil {
		return nil, fmt.Errorf("pages: seed a year of statistics: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench: pages: %d audit rows and a year of statistics seeded in %s\n", auditRows, time.Since(start).Round(time.Second))

	// A page far back: the filter's rows (a third of the log) older than the one three quarters down.
	var farAt time.Time
	var farSeq int64
	if err := db.Pool().QueryRow(ctx, `select at, seq from audit_log where action = 'vouch'
		order by at desc, seq desc offset $1 limit 1`, auditRows/4).Scan(&farAt, &farSeq); err != nil {
		return nil, fmt.Errorf("pages: a cursor far back: %w", err)
	}
	var midSeq int64
	if err := db.Pool().QueryRow(ctx, `select seq from audit_log order by seq offset $1 limit 1`, auditRows/2).Scan(&midSeq); err != nil {
		return nil, fmt.Errorf("pages: a row in the middle: %w", err)
	}
	yearAgo := time.Now().In(zone).AddDate(-1, 0, 0).Format(time.DateOnly)
	far := url.Values{"action": {"vouch"}, "from": {yearAgo}, "after": {strconv.FormatInt(farAt.UnixMicro(), 10) + "." + strconv.FormatInt(farSeq, 10)}}
	span := url.Values{"from": {first.Format(time.DateOnly)}, "to": {last.Format(time.DateOnly)}}

	anonymous := make([]*benchClient, users)
	for i := range anonymous {
		anonymous[i] = newBenchClient(base)
	}
	// Each page's label names it in its rows: the same in every run (its
	// query holds times and numbers of the run).
	pages := []struct {
		label, path, who string
		pool             []*benchClient
		tgt              float64
	}{
		{"/signin", "/signin", "anyone", anonymous, 50},
		{"/vouch", "/vouch", "clinicians", clinicians, 50},
		{"/staff", "/staff", "admins (staff)", admins, 50},
		{"/roles", "/roles", "admins", admins, 50},
		{"/settings", "/settings", "admins", admins, 50},
		{"/quota", "/quota", "admins (auditor)", admins, 50},
		{"/audit, the first page", "/audit", "admins (auditor)", admins, 50},
		{"/audit, filtered by action and time, a page three quarters back", "/audit?" + far.Encode(), "admins (auditor)", admins, 50},
		{"/audit-row, a row in the middle", "/audit-row?seq=" + strconv.FormatInt(midSeq, 10), "admins (auditor)", admins, 50},
		{"/statistics, its default span", "/statistics", "admins (auditor)", admins, 50},
		// A year's span: the bound for it, one at a time in stage
		// stats, is 200 ms; here as many ask for it at once.
		{"/statistics, a year's span", "/statistics?" + span.Encode(), "admins (auditor)", admins, 200},
		{"/statistics-public", "/statistics-public", "anyone", anonymous, 50},
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	var rows []Row
	for _, p := range pages {
		pool := p.pool[:min(users, len(p.pool))]
		get := func(i int) error { return pool[i%len(pool)].getPage(ctx, p.path) }
		for i := range pool { // warm each session's connection and the templates
			if err := get(i); err != nil {
				return nil, err
			}
		}
		lat, _, err := concurrently(users, users*perEach, thinkTime, get)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("back-office page GET %s, server side, %d users at once, a request each every 0-2 s", p.label, users)
		detail := fmt.Sprintf("%d requests, %d sessions of %s; client on loopback, server in this process; %d audit rows (seeded: chain not verifiable), 365 counted days",
			len(lat), len(pool), p.who, auditRows)
		rows = append(rows,
			Row{Name: name + ": p50", Unit: "ms", Value: ms(percentile(lat, 50)), Detail: detail},
			Row{Name: name + ": p99", Unit: "ms", Value: ms(percentile(lat, 99)), Target: target(p.tgt), Detail: detail})
	}
	return rows, nil
}

// getPage GETs a page and reads it: anything but 200 is an error.
func (c *benchClient) getPage(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d (%d bytes)", path, resp.StatusCode, n)
	}
	return nil
}

// seedAudit appends n rows to the audit log over the past year, by
// generate_series in the database: sign-ins, vouches and sign-outs of
// 500 card holders, one row in 25 a refusal (a quarter of those for the
// quota). Their hashes are random (a page read does not
// verify the chain; vouch audit verify would fail on them).
func seedAudit(ctx context.Context, db *database.DB, n int) error {
	if _, err := db.Pool().Exec(ctx, `insert into audit_log (seq, at, actor, action, subject, detail, prev_hash, hash, reason)
		select last.seq + i, now() - make_interval(secs => (i * 31536000.0 / $1)),
			'9' || lpad((i % 500)::text, 8, '0'),
			case i % 50 when 0 then 'vouch-refused' when 1 then 'sign-in-refused'
				else (array['sign-in', 'vouch', 'sign-out'])[1 + i % 3] end,
			'bench', null, sha256(int8send(i - 1)), sha256(int8send(i)),
			case when i % 50 < 2 then (array['quota-reached', 'rate-limited', 'code-check', 'license-suspended'])[1 + i / 50 % 4] end
		from generate_series(1, $1::bigint) as i,
			(select coalesce(max(seq), 0) as seq from audit_log) as last`, n); err != nil {
		return err
	}
	_, err := db.Pool().Exec(ctx, `analyze audit_log`)
	return err
}
