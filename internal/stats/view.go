package stats

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Querier runs a query: a pool or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Data is the daily rows of a span of days, as stored.
type Data struct {
	From, To Day // inclusive
	// Counted are the days of the span that were counted, in order; a day
	// not counted has no figures (not zeros).
	Counted []Day
	values  map[cellKey]int64
}

type cellKey struct {
	day           Day
	figure, label string
}

// Load reads the rows of the days from..to (inclusive).
func Load(ctx context.Context, q Querier, from, to Day) (*Data, error) {
	d := &Data{From: from, To: to, values: map[cellKey]int64{}}
	rows, err := q.Query(ctx, `select day from stats_days where day between $1 and $2 order by day`, from, to)
	if err != nil {
		return nil, fmt.Errorf("stats: load days: %w", err)
	}
	if d.Counted, err = pgx.CollectRows(rows, pgx.RowTo[time.Time]); err != nil {
		return nil, fmt.Errorf("stats: load days: %w", err)
	}
	rows, err = q.Query(ctx, `select day, figure, label, value from stats_daily where day between $1 and $2`, from, to)
	if err != nil {
		return nil, fmt.Errorf("stats: load: %w", err)
	}
	var k cellKey
	var v int64
	_, err = pgx.ForEachRow(rows, []any{&k.day, &k.figure, &k.label, &v}, func() error {
		d.values[k] = v
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("stats: load: %w", err)
	}
	return d, nil
}

// Cell is one figure of one period as shown.
type Cell struct {
	Value int64
	// Small: a public count under MinPublic, shown as "<10".
	Small bool
	// Withheld: a public total one of whose parts is suppressed, or a week
	// one of whose days is: shown as "x", so that no suppressed count
	// follows from the total minus the other parts.
	Withheld bool
}

// Hidden says the cell's value is not shown.
func (c Cell) Hidden() bool { return c.Small || c.Withheld }

// Period is a day or an ISO week, and its figures: figure → label →
// cell; the label Total is the figure's total (its parts' sum).
type Period struct {
	Start Day
	Week  bool
	Cells map[string]map[string]Cell
}

// Total is the label of a figure's total.
const Total = ""

// Cell is the figure's cell for label (Total: the total); a label the
// period has no row of counts zero.
func (p Period) Cell(figure, label string) Cell { return p.Cells[figure][label] }

// View is what a page, a chart or a file shows.
type View struct {
	Days  []Period
	Weeks []Period // the ISO weeks whose seven days are all in Days
	// Labels are each figure's parts over the whole span, sorted; none
	// for a figure without parts.
	Labels map[string][]string
	Public bool
}

// hasParts: the figure's rows have labels and a total of their own.
func hasParts(figure string) bool {
	return figure == FigureVouches || figure == FigureRefusals || figure == FigureKeys
}

// publicFigures are the figures the public view holds. The export's size
// counts padding and imported keys besides the keys uploaded here, so
// with it the uploaded keys would follow from the other figures.
var publicFigures = []string{FigureVouches, FigureSignIns, FigureRefusals, FigureKeys, FigureFiles, FigureAge}

// Build is the view of every counted day of d, unsuppressed: for the
// auditors.
func Build(d *Data) *View { return build(d, d.Counted, Figures) }

// Public is the view anyone may see at now: the counted days that ended
// PublicDelay before now (days of zone), without the figures that are not
// public, each figure's total only, suppressed (suppress).
func Public(d *Data, now time.Time, zone *time.Location) *View {
	var days []Day
	for _, day := range d.Counted {
		if _, end := bounds(day, zone); !now.Before(end.Add(PublicDelay)) {
			days = append(days, day)
		}
	}
	v := build(d, days, publicFigures)
	// Totals only: which parts a span has (a profession, a reason) would
	// tell that one of them happened at least once, however small, and a
	// total beside its parts is withheld whenever one part is small.
	for _, p := range v.Days {
		for f, cells := range p.Cells {
			if hasParts(f) {
				p.Cells[f] = map[string]Cell{Total: cells[Total]}
			}
		}
	}
	v.Labels = map[string][]string{}
	v.Weeks = weeks(v.Days, publicFigures)
	v.suppress()
	return v
}

func build(d *Data, days []Day, figures []string) *View {
	v := &View{Labels: map[string][]string{}}
	labels := map[string]map[string]bool{}
	shown := map[Day]bool{}
	for _, day := range days {
		shown[day] = true
	}
	for k := range d.values {
		if hasParts(k.figure) && slices.Contains(figures, k.figure) && shown[k.day] {
			if labels[k.figure] == nil {
				labels[k.figure] = map[string]bool{}
			}
			labels[k.figure][k.label] = true
		}
	}
	for f, ls := range labels {
		for l := range ls {
			v.Labels[f] = append(v.Labels[f], l)
		}
		slices.Sort(v.Labels[f])
	}
	for _, day := range days {
		p := Period{Start: day, Cells: map[string]map[string]Cell{}}
		for _, f := range figures {
			p.Cells[f] = map[string]Cell{}
			if !hasParts(f) {
				// A counted day without a row counted none; it has no age.
				if val, ok := d.values[cellKey{day, f, Total}]; ok || f != FigureAge {
					p.Cells[f][Total] = Cell{Value: val}
				}
				continue
			}
			var sum int64
			for _, l := range v.Labels[f] {
				val := d.values[cellKey{day, f, l}]
				p.Cells[f][l] = Cell{Value: val}
				sum += val
			}
			p.Cells[f][Total] = Cell{Value: sum}
		}
		v.Days = append(v.Days, p)
	}
	v.Weeks = weeks(v.Days, figures)
	return v
}

// weekStart is the Monday of d's ISO week.
func weekStart(d Day) Day { return d.AddDate(0, 0, -(int(d.Weekday())+6)%7) }

// weeks adds up the days into the ISO weeks all of whose days are there:
// sums, but the export's age is the week's longest. A week cell is
// withheld when one of its days is hidden (the days are suppressed first).
func weeks(days []Period, figures []string) []Period {
	var out []Period
	for i := 0; i < len(days); {
		w := weekStart(days[i].Start)
		j := i
		for j < len(days) && weekStart(days[j].Start).Equal(w) {
			j++
		}
		if j-i == 7 {
			p := Period{Start: w, Week: true, Cells: map[string]map[string]Cell{}}
			for _, f := range figures {
				p.Cells[f] = map[string]Cell{}
				for _, day := range days[i:j] {
					for l, c := range day.Cells[f] {
						acc, seen := p.Cells[f][l]
						if f == FigureAge {
							if !seen || c.Value > acc.Value {
								acc.Value = c.Value
							}
						} else {
							acc.Value += c.Value
						}
						p.Cells[f][l] = acc
					}
				}
			}
			out = append(out, p)
		}
		i = j
	}
	return out
}

// suppress hides the public view's small counts and what would tell them:
//   - a count under MinPublic is Small;
//   - a total is Withheld when one of its parts is hidden;
//   - a week's cell is Withheld when one of its days' cells is hidden.
//
// So every number shown is a single count of at least MinPublic, or a sum
// of numbers shown: no sum or difference of what is shown involves a
// hidden count. A day's cells depend on that day alone and a week's on its
// days, so a later publication never shows a cell an earlier one hid.
func (v *View) suppress() {
	v.Public = true
	for _, p := range v.Days {
		for f, cells := range p.Cells {
			if !isCount(f) {
				continue
			}
			partHidden := false
			for l, c := range cells {
				if c.Value < MinPublic {
					c.Small = true
					cells[l] = c
					if l != Total {
						partHidden = true
					}
				}
			}
			if t := cells[Total]; partHidden && !t.Small {
				t.Withheld = true
				cells[Total] = t
			}
		}
	}
	byWeek := map[Day][]Period{}
	for _, p := range v.Days {
		byWeek[weekStart(p.Start)] = append(byWeek[weekStart(p.Start)], p)
	}
	for _, w := range v.Weeks {
		for f, cells := range w.Cells {
			if !isCount(f) {
				continue
			}
			for l, c := range cells {
				for _, p := range byWeek[w.Start] {
					if p.Cells[f][l].Hidden() {
						c.Withheld = true
					}
				}
				if c.Value < MinPublic {
					c.Small, c.Withheld = true, false
				}
				cells[l] = c
			}
		}
	}
}

// ClinicianSummary is one card holder's vouching over a span: the stolen
// card signal. Auditors only.
type ClinicianSummary struct {
	UZI        string
	Vouched    int64 // codes vouched for in the span
	MaxPerDay  int64 // the most in one day
	ActiveDays int64
}

// ClinicianSpan is the days a page's per-clinician table covers at most:
// the last four weeks of its span.
const ClinicianSpan = 28

// MaxClinicians bounds the per-clinician table: the most active first.
const MaxClinicians = 100

// LoadClinicians reads the card holders who vouched in from..to, the
// most in one day first.
func LoadClinicians(ctx context.Context, q Querier, from, to Day) ([]ClinicianSummary, error) {
	rows, err := q.Query(ctx, `select uzi_number, sum(vouched)::bigint, max(vouched)::bigint, count(*)
		from stats_clinician_daily where day between $1 and $2
		group by uzi_number order by 3 desc, 2 desc, 1 limit $3`, from, to, MaxClinicians)
	if err != nil {
		return nil, fmt.Errorf("stats: per clinician: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ClinicianSummary])
	if err != nil {
		return nil, fmt.Errorf("stats: per clinician: %w", err)
	}
	return out, nil
}
