package backoffice

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"golang.org/x/text/number"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/stats"
)

// The statistics pages: the auditors' (every figure, the codes vouched per
// card holder) and the public one (internal/stats.Public: days 48 hours
// over, small counts suppressed, nothing per card holder), each chart with
// its table under it and its figures as CSV and JSON.

// statsView is what the statistics templates get.
type statsView struct {
	Public   bool
	Problem  string
	From, To string // the form's dates, as <input type=date> takes them
	Span     string // the days shown, in words
	Charts   []statsChart
	Weeks    statsTable
	// Clinicians: auditors only, the last ClinicianSpan days of the span.
	Clinicians    []statsClinician
	ClinicianSpan string
	CSV, JSON     string

	data *stats.View // what it was laid out from
}

type statsChart struct {
	ID, Title string
	SVG       template.HTML
	Table     statsTable
	CSV, JSON string
}

type statsTable struct {
	Head []string
	Rows []statsRow
}

type statsRow struct {
	Period string
	Cells  []string
}

type statsClinician struct {
	UZI                      string
	Vouched, MaxPerDay, Days string
	Share                    string // of all the span's vouches
}

// statsFigures are the charts of a page, in order, and how each is drawn.
var statsFigures = []struct {
	figure string
	kind   stats.ChartKind
}{
	{stats.FigureVouches, stats.Bars}, {stats.FigureSignIns, stats.Bars}, {stats.FigureRefusals, stats.Bars},
	{stats.FigureKeys, stats.Bars}, {stats.FigureFiles, stats.Bars}, {stats.FigureSize, stats.Bars}, {stats.FigureAge, stats.Line},
}

// errStatsQuery: a malformed query of the statistics (its message says what).
func statsRefusal(err error) *server.Error {
	e := &server.Error{Status: http.StatusBadRequest, Code: "statistics-query", Message: "statistics.error.date"}
	for _, known := range []error{stats.ErrBadDate, stats.ErrSpan, stats.ErrFigure, stats.ErrKind} {
		if errors.Is(err, known) {
			e.Message = known.Error()
		}
	}
	return e
}

// lastStatsDay is the last day that can have been counted: yesterday in
// the back office's zone.
func (s *Service) lastStatsDay() stats.Day {
	y, m, d := s.now().In(s.zone).Date()
	return time.Date(y, m, d-1, 0, 0, 0, 0, time.UTC)
}

// statsData reads the query's days; the public view is suppressed.
func (s *Service) statsData(c echo.Context, q stats.Query, public bool) (*stats.View, error) {
	d, err := stats.Load(c.Request().Context(), s.deps.DB.Pool(), q.From, q.To)
	if err != nil {
		return nil, err
	}
	if public {
		return stats.Public(d, s.now(), s.zone), nil
	}
	return stats.Build(d), nil
}

// statsViewsKept bounds the laid-out statistics pages a copy keeps: five
// languages, both pages, the usual spans.
const statsViewsKept = 64

// statsVersion names the days counted so far: it changes when a day is
// counted, or counted again.
func (s *Service) statsVersion(c echo.Context) (string, error) {
	var n int64
	var last time.Time
	if err := s.deps.DB.Pool().QueryRow(c.Request().Context(),
		`select count(*), coalesce(max(computed_at), 'epoch') from stats_days`).Scan(&n, &last); err != nil {
		return "", fmt.Errorf("statistics: days counted: %w", err)
	}
	return strconv.FormatInt(n, 10) + "@" + last.UTC().Format(time.RFC3339Nano), nil
}

// statisticsPage is the auditors' page.
func (s *Service) statisticsPage(c echo.Context) error { return s.statsPage(c, false) }

// statisticsPublicPage is anyone's.
func (s *Service) statisticsPublicPage(c echo.Context) error { return s.statsPage(c, true) }

func (s *Service) statsPage(c echo.Context, public bool) error {
	name, base := "statistics", "/statistics"
	if public {
		name, base = "statistics-public", "/statistics-public"
	}
	t := tr{langOf(c)}
	q, err := stats.ParseQuery(c.QueryParams(), s.lastStatsDay())
	if err != nil {
		refusal := statsRefusal(err)
		s.tally(c, entry(c, audit.ActionRequestRefused, refusal.Code))
		v := &statsView{Public: public, Problem: t.T(refusal.Message), From: c.QueryParam("from"), To: c.QueryParam("to")}
		return s.renderStatus(c, refusal.Status, name, page{Stats: v})
	}
	q.Figure = "" // the page shows every figure
	// The charts and tables change only when a day is counted (and, for
	// the public page, when a day's 48 hours are over): laid out once for
	// every reader of the same page, not for each of fifty at once.
	version, err := s.statsVersion(c)
	if err != nil {
		return err
	}
	key := strings.Join([]string{strconv.FormatBool(public), t.lang, base, q.Encode(), version,
		s.now().In(s.zone).Format("2006-01-02T15")}, "|")
	cached, ok := s.statsViews.Get(key)
	if !ok {
		view, err := s.statsData(c, q, public)
		if err != nil {
			return err
		}
		cached = s.statsViewOf(t, view, q, base)
		s.statsViews.Add(key, cached)
	}
	vv := *cached // shared: this page's own fields go on a copy
	v := &vv
	if !public {
		// The stolen-card signal is recent: the last weeks, whatever the
		// span (a year of card holders' days took most of the page).
		from := q.To.AddDate(0, 0, -(stats.ClinicianSpan - 1))
		if from.Before(q.From) {
			from = q.From
		}
		v.ClinicianSpan = t.Tf("statistics.clinicians-span", "From", t.Date(from), "To", t.Date(q.To))
		cl, err := stats.LoadClinicians(c.Request().Context(), s.deps.DB.Pool(), from, q.To)
		if err != nil {
			return err
		}
		var all int64
		for _, p := range v.data.Days {
			if !p.Start.Before(from) {
				all += p.Cell(stats.FigureVouches, stats.Total).Value
			}
		}
		for _, r := range cl {
			row := statsClinician{UZI: r.UZI, Vouched: t.Number(r.Vouched), MaxPerDay: t.Number(r.MaxPerDay), Days: t.Number(r.ActiveDays)}
			if all > 0 {
				row.Share = t.Number(math.Round(float64(r.Vouched)*1000/float64(all))/10) + " %"
			}
			v.Clinicians = append(v.Clinicians, row)
		}
	}
	return s.render(c, name, page{Stats: v})
}

// statsViewOf lays out view's charts and tables in t's language.
func (s *Service) statsViewOf(t tr, view *stats.View, q stats.Query, base string) *statsView {
	// One printer for the page's thousands of numbers: making one per
	// number (tr.Number) took most of a year's page.
	printer := message.NewPrinter(language.Make(t.lang))
	num := func(n any) string { return printer.Sprint(number.Decimal(n)) }
	v := &statsView{data: view, Public: view.Public, From: q.From.Format(time.DateOnly), To: q.To.Format(time.DateOnly),
		Span: t.Tf("statistics.span", "From", t.Date(q.From), "To", t.Date(q.To))}
	v.CSV, v.JSON = base+".csv?"+q.Encode(), base+".json?"+q.Encode()
	for _, f := range statsFigures {
		if len(view.Days) > 0 {
			if _, ok := view.Days[0].Cells[f.figure]; !ok {
				continue // not in this view (the export's size is not public)
			}
		} else if view.Public && f.figure == stats.FigureSize {
			continue
		}
		fq := q
		fq.Figure = f.figure
		title := t.T("statistics.figure." + f.figure)
		ch := stats.Chart{ID: "chart-" + f.figure, Title: title, Kind: f.kind, Unit: t.T("statistics.unit." + f.figure),
			Desc:   t.Tf("statistics.desc."+f.figure, "From", t.Date(q.From), "To", t.Date(q.To)),
			Number: func(x float64) string { return num(x) }}
		if view.Public {
			if len(view.Labels[f.figure]) == 0 && f.kind == stats.Bars {
				// The public figures have no parts (internal/stats.Public).
				ch.Desc = t.Tf("statistics.desc.total", "From", t.Date(q.From), "To", t.Date(q.To))
			}
			ch.Desc += " " + t.T("statistics.desc.suppressed")
		}
		table := statsTable{Head: []string{t.T("statistics.period.day")}}
		labels := view.Labels[f.figure]
		if len(labels) > 0 {
			table.Head = append(table.Head, t.T("statistics.total"))
			for _, l := range labels {
				table.Head = append(table.Head, statsLabel(t, f.figure, l))
			}
		} else {
			table.Head = append(table.Head, title)
		}
		for _, p := range view.Days {
			c := p.Cell(f.figure, stats.Total)
			ch.X = append(ch.X, t.Date(p.Start))
			if c.Hidden() {
				ch.Values = append(ch.Values, math.NaN())
			} else {
				ch.Values = append(ch.Values, float64(c.Value))
			}
			row := statsRow{Period: t.Date(p.Start), Cells: []string{statsCell(num, c)}}
			for _, l := range labels {
				row.Cells = append(row.Cells, statsCell(num, p.Cell(f.figure, l)))
			}
			table.Rows = append(table.Rows, row)
		}
		v.Charts = append(v.Charts, statsChart{ID: ch.ID, Title: title, SVG: template.HTML(ch.SVG()), Table: table, // #nosec G203 -- SVG escapes every text it draws (stats.Chart)
			CSV: base + ".csv?" + fq.Encode(), JSON: base + ".json?" + fq.Encode()})
	}
	// The weeks: each figure's total.
	v.Weeks.Head = []string{t.T("statistics.period.week")}
	for _, ch := range statsFigures {
		if len(view.Weeks) > 0 {
			if _, ok := view.Weeks[0].Cells[ch.figure]; !ok {
				continue
			}
			v.Weeks.Head = append(v.Weeks.Head, t.T("statistics.figure."+ch.figure))
		}
	}
	for _, w := range view.Weeks {
		row := statsRow{Period: t.Tf("statistics.week", "Week", w.Name(), "From", t.Date(w.Start))}
		for _, ch := range statsFigures {
			if _, ok := w.Cells[ch.figure]; ok {
				row.Cells = append(row.Cells, statsCell(num, w.Cell(ch.figure, stats.Total)))
			}
		}
		v.Weeks.Rows = append(v.Weeks.Rows, row)
	}
	return v
}

// statsCell is a cell as the table shows it: the number in the page's
// language, or the marker of a hidden one.
func statsCell(num func(any) string, c stats.Cell) string {
	switch {
	case c.Small:
		return stats.ShownSmall
	case c.Withheld:
		return stats.ShownWithheld
	}
	return num(c.Value)
}

// statsLabel names a part of a figure: a profession, a reason.
func statsLabel(t tr, figure, label string) string {
	switch figure {
	case stats.FigureVouches:
		if id := "statistics.profession." + label; i18n.Default().Has(i18n.Source, id) {
			return t.T(id)
		}
		return t.Tf("statistics.profession", "Code", label)
	case stats.FigureRefusals:
		return t.Reason(label)
	case stats.FigureKeys:
		return t.T("statistics.keys." + label)
	}
	return label
}

// statisticsFile is the auditors' CSV or JSON of the query's figures.
func (s *Service) statisticsFile(format string, public bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		q, err := stats.ParseQuery(c.QueryParams(), s.lastStatsDay())
		if err != nil {
			refusal := statsRefusal(err)
			s.tally(c, entry(c, audit.ActionRequestRefused, refusal.Code))
			return c.String(refusal.Status, tr{langOf(c)}.T(refusal.Message))
		}
		view, err := s.statsData(c, q, public)
		if err != nil {
			return err
		}
		rows := view.Rows(q)
		var b bytes.Buffer
		name := "statistics-" + q.From.Format(time.DateOnly) + "-" + q.To.Format(time.DateOnly)
		if public {
			name = "public-" + name
		}
		var ctype string
		switch format {
		case "csv":
			err, ctype = stats.WriteCSV(&b, rows), "text/csv; charset=utf-8"
		default:
			err, ctype = stats.WriteJSON(&b, rows, public, s.now()), echo.MIMEApplicationJSONCharsetUTF8
		}
		if err != nil {
			return err
		}
		h := c.Response().Header()
		h.Set("Content-Disposition", `attachment; filename="`+name+"."+format+`"`)
		if public {
			h.Set("Cache-Control", "public, max-age=300")
		} else {
			h.Set("Cache-Control", "no-store")
		}
		return c.Blob(http.StatusOK, ctype, b.Bytes())
	}
}
