package stats

import (
	"flag"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func day(s string) Day {
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return d
}

// data is a span of counted days with the given values.
func data(from string, n int, values map[cellKey]int64) *Data {
	d := &Data{From: day(from), To: day(from).AddDate(0, 0, n-1), values: values}
	for i := range n {
		d.Counted = append(d.Counted, d.From.AddDate(0, 0, i))
	}
	return d
}

var ams, _ = time.LoadLocation("Europe/Amsterdam")

// TestSuppress: each rule, and a check that fails without it.
func TestSuppress(t *testing.T) {
	t.Parallel()
	mon := day("2026-11-02")
	vals := map[cellKey]int64{}
	for i := range 7 {
		d := mon.AddDate(0, 0, i)
		vals[cellKey{d, FigureVouches, "01"}] = 50
		vals[cellKey{d, FigureSignIns, ""}] = 30
		vals[cellKey{d, FigureAge, ""}] = 3
		vals[cellKey{d, FigureVouches, "03"}] = 10
	}
	vals[cellKey{mon, FigureVouches, "03"}] = 4   // small: the day's total and the week's "03" go
	vals[cellKey{mon, FigureSignIns, ""}] = 9     // small: the week's sign-ins go
	vals[cellKey{mon, FigureRefusals, "x"}] = 100 // a reason only on Monday: 0 on the other days
	v := Public(data("2026-11-02", 7, vals), time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC), ams)
	w := v.Weeks[0]
	tests := []struct {
		name string
		got  Cell
		want Cell
	}{
		{"a day's total with a small part", v.Days[0].Cell(FigureVouches, Total), Cell{Value: 54}},
		{"a day's count under 10", v.Days[0].Cell(FigureSignIns, Total), Cell{Value: 9, Small: true}},
		{"a day's count of 0", v.Days[1].Cell(FigureRefusals, Total), Cell{Value: 0, Small: true}},
		{"a week of a small day", w.Cell(FigureSignIns, Total), Cell{Value: 189, Withheld: true}},
		{"a week of a day of 0", w.Cell(FigureRefusals, Total), Cell{Value: 100, Withheld: true}},
		{"a week of no small day", w.Cell(FigureVouches, Total), Cell{Value: 414}},
		{"not a count", v.Days[0].Cell(FigureAge, Total), Cell{Value: 3}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
	for _, p := range append(v.Days, v.Weeks...) {
		for f, cells := range p.Cells {
			if len(cells) != 1 || len(v.Labels[f]) > 0 {
				t.Errorf("%s %s: public parts %v: which ones a span has tells that one happened", p.Name(), f, cells)
			}
		}
	}
	if _, ok := v.Days[0].Cells[FigureSize]; ok {
		t.Error("the export's size is public: with it, the keys uploaded follow from the other figures")
	}
}

// TestSuppressedNotDerivable: on random figures, no hidden count follows
// from what is shown: every shown total's parts are all shown, every
// shown week's days are, and no shown count is under MinPublic.
func TestSuppressedNotDerivable(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		vals := map[cellKey]int64{}
		n := 7 + r.IntN(21)
		from := day("2026-01-05") // a Monday
		for i := range n {
			d := from.AddDate(0, 0, i)
			for _, f := range Figures {
				labels := []string{""}
				if hasParts(f) {
					labels = []string{"a", "b", "c"}
				}
				for _, l := range labels {
					if r.IntN(4) > 0 {
						vals[cellKey{d, f, l}] = int64(r.IntN(40))
					}
				}
			}
		}
		v := Public(data("2026-01-05", n, vals), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), ams)
		check := func(what string, p Period) {
			for f, cells := range p.Cells {
				for l, c := range cells {
					if isCount(f) && !c.Hidden() && c.Value < MinPublic {
						t.Fatalf("round %d: %s %s %s %q: %d shown", round, what, p.Name(), f, l, c.Value)
					}
					if l == Total && !c.Hidden() {
						for pl, pc := range cells {
							if pc.Hidden() {
								t.Fatalf("round %d: %s %s %s: total shown, part %q hidden: total minus the others tells it", round, what, p.Name(), f, pl)
							}
						}
					}
				}
			}
		}
		for _, p := range v.Days {
			check("day", p)
		}
		for _, w := range v.Weeks {
			check("week", w)
			for f, cells := range w.Cells {
				for l, c := range cells {
					if c.Hidden() {
						continue
					}
					for _, p := range v.Days {
						if weekStart(p.Start).Equal(w.Start) && p.Cell(f, l).Hidden() {
							t.Fatalf("round %d: week %s %s %q shown, day %s hidden: the week minus the other days tells it", round, w.Name(), f, l, p.Name())
						}
					}
				}
			}
		}
	}
}

// TestPublicDelay: a day is public 48 hours after it ends (in its zone),
// not 47.
func TestPublicDelay(t *testing.T) {
	t.Parallel()
	d := data("2026-11-02", 1, map[cellKey]int64{{day("2026-11-02"), FigureSignIns, ""}: 20})
	end := time.Date(2026, 11, 3, 0, 0, 0, 0, ams)
	for _, tt := range []struct {
		after time.Duration
		want  int
	}{{47 * time.Hour, 0}, {48*time.Hour - time.Second, 0}, {48 * time.Hour, 1}} {
		if got := len(Public(d, end.Add(tt.after), ams).Days); got != tt.want {
			t.Errorf("%v after the day ended: %d days public, want %d", tt.after, got, tt.want)
		}
	}
	if got := len(Build(d).Days); got != 1 {
		t.Errorf("auditors' view: %d days, want 1 (no delay)", got)
	}
}

func TestParseQuery(t *testing.T) {
	t.Parallel()
	last := day("2026-11-09")
	tests := []struct {
		query string
		want  Query
		err   error
	}{
		{"", Query{From: day("2026-08-11"), To: last}, nil},
		{"from=2026-11-01&to=2026-11-02&figure=vouches&kind=week", Query{From: day("2026-11-01"), To: day("2026-11-02"), Figure: FigureVouches, Kind: "week"}, nil},
		{"from=2025-11-09", Query{From: day("2025-11-09"), To: last}, nil},
		{"from=2025-11-08", Query{}, ErrSpan},
		{"to=2026-11-10", Query{}, ErrSpan},
		{"from=2026-11-03&to=2026-11-02", Query{}, ErrSpan},
		{"from=2026-02-30", Query{}, ErrBadDate},
		{"from=2026-1-01", Query{}, ErrBadDate},
		{"from=+2026-01-01", Query{}, ErrBadDate},
		{"to=2026-11-01&to=2026-11-02", Query{}, ErrBadDate},
		{"figure=uzi_number", Query{}, ErrFigure},
		{"kind=month", Query{}, ErrKind},
	}
	for _, tt := range tests {
		v, _ := url.ParseQuery(tt.query)
		got, err := ParseQuery(v, last)
		if err != tt.err {
			t.Errorf("%q: err = %v, want %v", tt.query, err, tt.err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tt.query, diff)
		}
	}
}

// FuzzParseQuery: whatever the query, a query accepted is a span of at
// most MaxSpan days ending by last, and reads back the same.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "from=2026-01-01&to=2026-02-01", "figure=vouches&kind=day", "to=9999-12-31", "from=0001-01-01"} {
		f.Add(s)
	}
	last := day("2026-11-09")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := url.ParseQuery(s)
		if err != nil {
			return
		}
		q, err := ParseQuery(v, last)
		if err != nil {
			return
		}
		if q.To.After(last) || q.From.After(q.To) || q.To.Sub(q.From) >= MaxSpan*24*time.Hour {
			t.Fatalf("%q: accepted %+v", s, q)
		}
		back, _ := url.ParseQuery(q.Encode())
		if q2, err := ParseQuery(back, last); err != nil || q2 != q {
			t.Fatalf("%q: %+v reads back as %+v, %v", s, q, q2, err)
		}
	})
}

// TestChartGolden: the SVG of a bar chart and of a line chart, byte for
// byte (go test -run TestChartGolden -update rewrites them).
func TestChartGolden(t *testing.T) {
	t.Parallel()
	charts := map[string]Chart{
		"bars": {ID: "vouches", Title: "Vouches per day", Desc: "Codes vouched for each day, 2 to 11 November 2026.",
			Unit: "codes", Kind: Bars, X: []string{"02", "03", "04", "05", "06", "07", "08", "09", "10", "11"},
			Values: []float64{12, 40, math.NaN(), 0, 33, 27, 81, 64, 15, 9}},
		"line": {ID: "age", Title: "Export age", Desc: "The longest the newest file was old, in hours.",
			Unit: "hours <&>", Kind: Line, X: []string{"W45", "W46", "W47", "W48"}, Values: []float64{1.5, 2, math.NaN(), 1}},
		"empty": {ID: "none", Title: "Nothing", Desc: "No day counted.", Unit: "codes", Kind: Bars},
	}
	for name, c := range charts {
		got := []byte(c.SVG())
		path := filepath.Join("testdata", name+".svg")
		if *update {
			if err := os.MkdirAll("testdata", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test -update writes it)", err)
		}
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("%s (-golden +got):\n%s", name, diff)
		}
		for _, must := range []string{`role="img"`, `<title id="` + c.ID + `-title">`, `<desc id="` + c.ID + `-desc">`} {
			if !strings.Contains(string(got), must) {
				t.Errorf("%s lacks %s", name, must)
			}
		}
	}
	if s := charts["line"].SVG(); strings.Contains(s, "<&>") {
		t.Error("the unit is not escaped")
	}
}

// TestNiceMax: the y axis ends at a round number at least the top value.
func TestNiceMax(t *testing.T) {
	t.Parallel()
	for in, want := range map[float64]float64{0: 1, 0.3: 0.5, 1: 1, 7: 10, 11: 20, 24: 25, 26: 50, 81: 100, 1234: 2000} {
		if got := niceMax(in); math.Abs(got-want) > 1e-9 {
			t.Errorf("niceMax(%v) = %v, want %v", in, got, want)
		}
	}
}
