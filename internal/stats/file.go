package stats

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The view as a file: one row per period, figure and label, the same rows
// in CSV and JSON. A hidden value is written as the page shows it: "<10"
// for a small count, "x" for a withheld total; never the number.
const (
	ShownSmall    = "<10"
	ShownWithheld = "x"
)

// FileRow is one row of stats.csv and stats.json.
type FileRow struct {
	Period string `json:"period"` // 2026-12-07, or 2026-W50
	Kind   string `json:"kind"`   // day or week
	Figure string `json:"figure"`
	Label  string `json:"label"` // "" for the figure's total
	// Value is the number, or ShownSmall or ShownWithheld.
	Value any `json:"value"`
}

// Shown is the cell as written: the number, or its marker.
func (c Cell) Shown() any {
	switch {
	case c.Small:
		return ShownSmall
	case c.Withheld:
		return ShownWithheld
	}
	return c.Value
}

// PeriodName is a day as 2006-01-02, a week as ISO's 2006-W01.
func (p Period) Name() string {
	if p.Week {
		y, w := p.Start.ISOWeek()
		return fmt.Sprintf("%04d-W%02d", y, w)
	}
	return p.Start.Format(time.DateOnly)
}

// Rows are the view's rows that q selects: days, then weeks; figures in
// Figures' order; each figure's total, then its parts.
func (v *View) Rows(q Query) []FileRow {
	var out []FileRow
	add := func(periods []Period, kind string) {
		if q.Kind != "" && q.Kind != kind {
			return
		}
		for _, p := range periods {
			if p.Start.Before(q.From) || p.Start.After(q.To) {
				continue
			}
			for _, f := range Figures {
				cells, ok := p.Cells[f]
				if !ok || (q.Figure != "" && q.Figure != f) {
					continue
				}
				for _, l := range append([]string{Total}, v.Labels[f]...) {
					if c, ok := cells[l]; ok {
						out = append(out, FileRow{Period: p.Name(), Kind: kind, Figure: f, Label: l, Value: c.Shown()})
					}
				}
			}
		}
	}
	add(v.Days, "day")
	add(v.Weeks, "week")
	return out
}

// WriteCSV writes rows with a header line.
func WriteCSV(w io.Writer, rows []FileRow) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"period", "kind", "figure", "label", "value"}); err != nil {
		return err
	}
	for _, r := range rows {
		if err := cw.Write([]string{r.Period, r.Kind, r.Figure, cellText(r.Label), fmt.Sprint(r.Value)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// cellText keeps a spreadsheet from reading a label as a formula.
func cellText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// fileJSON is stats.json.
type fileJSON struct {
	Generated time.Time `json:"generated"`
	Public    bool      `json:"public"`
	// MinPublic and PublicDelay say how the public figures were made.
	MinPublic  int       `json:"minPublic,omitempty"`
	DelayHours int       `json:"delayHours,omitempty"`
	Rows       []FileRow `json:"rows"`
}

// WriteJSON writes rows as one JSON object, with when and how they were made.
func WriteJSON(w io.Writer, rows []FileRow, public bool, now time.Time) error {
	f := fileJSON{Generated: now.UTC().Truncate(time.Second), Public: public, Rows: rows}
	if f.Rows == nil {
		f.Rows = []FileRow{}
	}
	if public {
		f.MinPublic, f.DelayHours = MinPublic, int(PublicDelay/time.Hour)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(f)
}

// Query is what a page or a download asks for: the days from..to
// (inclusive), one figure or all (""), days or weeks or both ("").
type Query struct {
	From, To Day
	Figure   string
	Kind     string
}

// MaxSpan is the most days one query reads: a year, and a leap day.
const MaxSpan = 366

// DefaultSpan is the days a page shows unless asked: the last 13 weeks.
const DefaultSpan = 91

// Errors of ParseQuery, each a message id of the statistics catalogue.
var (
	ErrBadDate = errors.New("statistics.error.date")
	ErrSpan    = errors.New("statistics.error.span")
	ErrFigure  = errors.New("statistics.error.figure")
	ErrKind    = errors.New("statistics.error.kind")
)

// ParseQuery reads from, to (YYYY-MM-DD), figure and kind from a request's
// query; the days default to the DefaultSpan days up to last (yesterday,
// the last day that can be counted). A parameter given twice, a date
// that is no date, a span past MaxSpan or ending after last, an unknown
// figure or kind is refused.
func ParseQuery(v url.Values, last Day) (Query, error) {
	q := Query{To: last}
	for k, vals := range v {
		if len(vals) > 1 && slices.Contains([]string{"from", "to", "figure", "kind"}, k) {
			return Query{}, ErrBadDate
		}
	}
	date := func(s string) (Day, error) {
		if len(s) != len(time.DateOnly) {
			return Day{}, ErrBadDate
		}
		d, err := time.Parse(time.DateOnly, s)
		if err != nil {
			return Day{}, ErrBadDate
		}
		return d, nil
	}
	var err error
	if s := v.Get("to"); s != "" {
		if q.To, err = date(s); err != nil {
			return Query{}, err
		}
	}
	q.From = q.To.AddDate(0, 0, -(DefaultSpan - 1))
	if s := v.Get("from"); s != "" {
		if q.From, err = date(s); err != nil {
			return Query{}, err
		}
	}
	if q.To.After(last) || q.From.After(q.To) || q.To.Sub(q.From) >= MaxSpan*24*time.Hour {
		return Query{}, ErrSpan
	}
	if q.Figure = v.Get("figure"); q.Figure != "" && !slices.Contains(Figures, q.Figure) {
		return Query{}, ErrFigure
	}
	if q.Kind = v.Get("kind"); q.Kind != "" && q.Kind != "day" && q.Kind != "week" {
		return Query{}, ErrKind
	}
	return q, nil
}

// Encode is q as a query string, for links.
func (q Query) Encode() string {
	v := url.Values{"from": {q.From.Format(time.DateOnly)}, "to": {q.To.Format(time.DateOnly)}}
	if q.Figure != "" {
		v.Set("figure", q.Figure)
	}
	if q.Kind != "" {
		v.Set("kind", q.Kind)
	}
	return v.Encode()
}
