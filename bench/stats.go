package main

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// statsStage measures the statistics pages over a year of daily rows: the
// auditors' page (every chart and table, the codes per card holder), the
// public one (suppressed) and the auditors' CSV of the year, each a GET
// to the back office in this process, one at a time, so that the time is
// the server's (loopback adds well under a millisecond).
func statsStage(fs *flag.FlagSet) measure {
	requests := fs.Int("stats-requests", 40, "requests of each statistics page per run (stage stats)")
	clinicians := fs.Int("stats-clinicians", 2000, "card holders who vouch during the year (stage stats)")
	return func(ctx context.Context, b *bench) ([]Row, error) {
		return statsBench(ctx, b.dbURL, *requests, *clinicians)
	}
}

func statsBench(ctx context.Context, serverURL string, requests, clinicians int) ([]Row, error) {
	dbURL, drop, err := benchDatabase(ctx, serverURL)
	if err != nil {
		return nil, err
	}
	defer drop()
	if err := database.Migrate(ctx, dbURL); err != nil {
		return nil, err
	}
	db, err := database.Open(ctx, database.Config{URL: dbURL})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	zone, _ := time.LoadLocation("Europe/Amsterdam")
	y, m, d := time.Now().In(zone).Date()
	last := time.Date(y, m, d-1, 0, 0, 0, 0, time.UTC)
	first := last.AddDate(0, 0, -364)
	if err := seedStats(ctx, db, first, last, clinicians); err != nil {
		return nil, fmt.Errorf("stats: seed a year: %w", err)
	}
	cookie, err := auditorSession(ctx, db)
	if err != nil {
		return nil, err
	}

	_, att, _ := ed25519.GenerateKey(rand.Reader)
	cfg := backoffice.Config{Origin: "http://127.0.0.1", DailyQuota: 60, DayZone: "Europe/Amsterdam", Bucket: "authorizations",
		IdleTimeout: 15 * time.Minute, AbsoluteTimeout: 12 * time.Hour, SignInPerMinute: 1000, VouchPerMinute: 1000, MaxChallenges: 10000,
		HeartbeatTimeout: 10 * time.Minute}
	svc, err := backoffice.New(cfg, backoffice.Deps{DB: db, Verifier: statsNone{}, Licenses: statsNone{}, Publisher: statsNone{},
		Attestation: []crypto.Signer{att}, Log: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry()})
	if err != nil {
		return nil, err
	}
	srv := server.New(server.Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	svc.Register(srv.Echo())
	hs := httptest.NewServer(srv.Echo())
	defer hs.Close()

	span := "?from=" + first.Format(time.DateOnly) + "&to=" + last.Format(time.DateOnly)
	time1 := func(path string, auditor bool) ([]time.Duration, error) {
		var out []time.Duration
		for i := range requests + 2 {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+path+span, nil)
			if auditor {
				req.AddCookie(&http.Cookie{Name: "vouch_session", Value: cookie})
			}
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return nil, err
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			took := time.Since(start)
			if err != nil || resp.StatusCode != http.StatusOK || n < 1000 {
				return nil, fmt.Errorf("stats: GET %s: %d, %d bytes: %v", path, resp.StatusCode, n, err)
			}
			if i >= 2 { // the first two warm the pool and the templates
				out = append(out, took)
			}
		}
		return out, nil
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	var rows []Row
	for _, p := range []struct {
		path, name string
		auditor    bool
	}{
		{"/statistics", "auditors' statistics page", true},
		{"/statistics-public", "public statistics page", false},
		{"/statistics.csv", "auditors' statistics CSV", true},
	} {
		took, err := time1(p.path, p.auditor)
		if err != nil {
			return nil, err
		}
		detail := fmt.Sprintf("%d requests one at a time; 365 counted days, %d card holders", len(took), clinicians)
		rows = append(rows,
			Row{Name: p.name + ", a year of daily statistics, server side: p50", Unit: "ms", Value: ms(percentile(took, 50)), Detail: detail},
			Row{Name: p.name + ", a year of daily statistics, server side: p99", Unit: "ms", Value: ms(percentile(took, 99)), Target: target(200), Detail: detail})
	}
	return rows, nil
}

// seedStats writes the counted days first..last as `vouch stats` would: a
// busy site's figures, with small counts among them, and each day some of
// the card holders' codes.
func seedStats(ctx context.Context, db *database.DB, first, last time.Time, clinicians int) error {
	r := mrand.New(mrand.NewPCG(7, 22))
	var days, daily, clin [][]any
	professions := []string{"01", "02", "03", "04", "17", "30"}
	reasons := []string{"rate-limited", "locked", "signed-out", "quota-reached", "license-suspended", "code-check", "no-consent",
		"challenge-invalid", "other-card", "cross-origin", "role-missing", "card-role-not-allowed"}
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		days = append(days, []any{d, time.Now()})
		for i, p := range professions {
			daily = append(daily, []any{d, "vouches", p, int64(r.IntN(400 >> i))})
		}
		for _, reason := range reasons {
			daily = append(daily, []any{d, "refusals", reason, int64(r.IntN(60))})
		}
		daily = append(daily, []any{d, "sign-ins", "", int64(200 + r.IntN(300))},
			[]any{d, "keys-published", "uploaded", int64(r.IntN(3000))}, []any{d, "keys-published", "imported", int64(r.IntN(500))},
			[]any{d, "export-files", "", int64(24)}, []any{d, "export-keys", "", int64(5000 + r.IntN(3000))},
			[]any{d, "export-age", "", int64(60 + r.IntN(30))})
		for range clinicians / 4 {
			clin = append(clin, []any{d, fmt.Sprintf("9%08d", r.IntN(clinicians)), int32(1 + r.IntN(20))})
		}
	}
	// The same card holder drawn twice on a day: keep one.
	seen := map[string]bool{}
	uniq := clin[:0]
	for _, c := range clin {
		k := fmt.Sprint(c[0], c[1])
		if !seen[k] {
			seen[k] = true
			uniq = append(uniq, c)
		}
	}
	for _, t := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"stats_days", []string{"day", "computed_at"}, days},
		{"stats_daily", []string{"day", "figure", "label", "value"}, daily},
		{"stats_clinician_daily", []string{"day", "uzi_number", "vouched"}, uniq},
	} {
		if _, err := db.Pool().CopyFrom(ctx, pgx.Identifier{t.table}, t.cols, pgx.CopyFromRows(t.rows)); err != nil {
			return fmt.Errorf("%s: %w", t.table, err)
		}
	}
	_, err := db.Pool().Exec(ctx, `analyze`)
	return err
}

// auditorSession opens a back-office session of an N card holder granted
// auditor, as a sign-in would store it, and returns its cookie.
func auditorSession(ctx context.Context, db *database.DB) (string, error) {
	token := make([]byte, 32)
	if _, err := rand.Read(token); err != nil {
		return "", err
	}
	h := sha256.Sum256(token)
	now := time.Now()
	if _, err := db.Pool().Exec(ctx, `insert into backoffice_roles (uzi_number, role, granted_by, granted_at)
		values ('900000010', 'auditor', 'VOUCH_BOOTSTRAP_ADMINS', now())`); err != nil {
		return "", err
	}
	if _, err := db.Pool().Exec(ctx, `insert into backoffice_sessions
		(hash, uzi_number, holder, role, card_type, role_code, auth_cert_hash, lang, created_at, seen_at, heartbeat_at)
		values ($1, '900000010', 'Bench Auditor', 'staff', 'N', '', $2, 'en', $3, $3, $3)`, h[:], make([]byte, 32), now); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(token), nil
}

// statsNone is the back office's card, register and bus dependencies,
// which the statistics pages never use: every call fails.
type statsNone struct{}

var errStatsNone = errors.New("not in the statistics bench")

func (statsNone) VerifyLogin([]byte, string, []byte, []byte, time.Time) (*protocol.LoginResult, error) {
	return nil, errStatsNone
}
func (statsNone) VerifyCard([]byte, uzi.Purpose, time.Time) (uzi.Identity, error) {
	return uzi.Identity{}, errStatsNone
}
func (statsNone) VerifyStatement([]byte, []byte, []byte, time.Time) (*protocol.Result, error) {
	return nil, errStatsNone
}
func (statsNone) Decide(context.Context, uzi.Identity) (license.Decision, error) {
	return license.Decision{}, errStatsNone
}
func (statsNone) PutAll(context.Context, []bus.KeyValue) error { return errStatsNone }
