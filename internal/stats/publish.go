package stats

import (
	"bytes"
	"context"
	"fmt"
	"time"
)

// Names of the public files beside the exports on the origin.
const (
	FileJSON = "stats.json"
	FileCSV  = "stats.csv"
)

// PublicFiles are stats.json and stats.csv as of now: every public day
// since the first one counted (the rows are kept forever), suppressed.
// They hold no per-clinician figure: that table is never read here.
func PublicFiles(ctx context.Context, q Querier, now time.Time, zone *time.Location) (jsonFile, csvFile []byte, err error) {
	last := dayOf(now, zone).AddDate(0, 0, -1)
	first, err := firstDay(ctx, q, last)
	if err != nil {
		return nil, nil, err
	}
	d, err := Load(ctx, q, first, last)
	if err != nil {
		return nil, nil, err
	}
	rows := Public(d, now, zone).Rows(Query{From: first, To: last})
	var j, c bytes.Buffer
	if err := WriteJSON(&j, rows, true, now); err != nil {
		return nil, nil, fmt.Errorf("stats: %s: %w", FileJSON, err)
	}
	if err := WriteCSV(&c, rows); err != nil {
		return nil, nil, fmt.Errorf("stats: %s: %w", FileCSV, err)
	}
	return j.Bytes(), c.Bytes(), nil
}

// firstDay is the first day counted, last when none is.
func firstDay(ctx context.Context, q Querier, last Day) (Day, error) {
	rows, err := q.Query(ctx, `select coalesce(min(day), $1::date) from stats_days`, last)
	if err != nil {
		return Day{}, fmt.Errorf("stats: first day: %w", err)
	}
	defer rows.Close()
	var d Day
	if rows.Next() {
		if err := rows.Scan(&d); err != nil {
			return Day{}, fmt.Errorf("stats: first day: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return Day{}, fmt.Errorf("stats: first day: %w", err)
	}
	return d, nil
}
