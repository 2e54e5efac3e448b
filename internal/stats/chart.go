package stats

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
)

// Charts are drawn on the server as SVG: no script, no library, the same
// bytes for the same figures (golden files), coloured by presentation
// attributes (the pages' policy allows no inline style) with the style
// sheet's ink and accent, whose contrast passes WCAG AA. Each is an image for
// assistive technology (role="img", its <title> and <desc>), and the page
// puts the figures' table under it.

// ChartKind is how a series is drawn.
type ChartKind int

// Kinds of chart.
const (
	Bars ChartKind = iota // a count per period
	Line                  // a level over time (an age)
)

// Chart is one chart's figures and texts, in the page's language.
type Chart struct {
	ID          string // unique in the page: the ids of its title and description
	Title, Desc string
	Unit        string // the y axis's unit, written above it
	Kind        ChartKind
	X           []string  // each period's label, in order
	Values      []float64 // each period's value; NaN: not shown (suppressed, or none)
	// Number writes a value of the y axis in the page's language.
	Number func(float64) string
}

// The chart's geometry, in SVG user units.
const (
	chartW, chartH           = 720, 260
	marginL, marginR         = 64, 16
	marginT, marginB         = 28, 48
	plotW                    = chartW - marginL - marginR
	plotH                    = chartH - marginT - marginB
	maxXLabels               = 8
	yTicks                   = 4
	barGap           float64 = 0.2 // of a bar's slot
)

// niceMax is the y axis's top: the least of 1, 2, 2.5 or 5 times a power
// of ten that is at least m, so that the ticks are round numbers.
func niceMax(m float64) float64 {
	if m <= 0 || math.IsNaN(m) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(m)))
	for _, f := range []float64{1, 2, 2.5, 5, 10} {
		if f*p >= m {
			return f * p
		}
	}
	return 10 * p
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

// SVG draws the chart.
func (c Chart) SVG() string {
	var b strings.Builder
	esc := html.EscapeString
	number := c.Number
	if number == nil {
		number = func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
	}
	top := 0.0
	for _, v := range c.Values {
		if !math.IsNaN(v) {
			top = max(top, v)
		}
	}
	top = niceMax(top)
	if c.Kind == Bars && top < yTicks {
		top = yTicks // counts: whole ticks, never 0.25 of one
	}
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-title %s-desc">`,
		chartW, chartH, esc(c.ID), esc(c.ID))
	fmt.Fprintf(&b, `<title id="%s-title">%s</title><desc id="%s-desc">%s</desc>`, esc(c.ID), esc(c.Title), esc(c.ID), esc(c.Desc))
	// The y axis: its unit, ticks and grid lines.
	fmt.Fprintf(&b, `<text class="unit" x="%d" y="%d" font-size="13" fill="#1b1f24">%s</text>`, marginL, marginT-12, esc(c.Unit))
	for i := 0; i <= yTicks; i++ {
		v := top * float64(i) / yTicks
		y := float64(marginT) + float64(plotH)*(1-float64(i)/yTicks)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%s" y2="%s" stroke="#d4d9e0"/>`, marginL, marginL+plotW, num(y), num(y))
		fmt.Fprintf(&b, `<text class="tick" x="%d" y="%s" text-anchor="end" font-size="12" fill="#1b1f24">%s</text>`, marginL-6, num(y+4), esc(number(v)))
	}
	fmt.Fprintf(&b, `<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d" stroke="#1b1f24"/>`, marginL, marginL, marginT, marginT+plotH)
	fmt.Fprintf(&b, `<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d" stroke="#1b1f24"/>`, marginL, marginL+plotW, marginT+plotH, marginT+plotH)
	n := len(c.Values)
	if n > 0 {
		slot := float64(plotW) / float64(n)
		xOf := func(i int) float64 { return float64(marginL) + slot*(float64(i)+0.5) }
		yOf := func(v float64) float64 { return float64(marginT) + float64(plotH)*(1-v/top) }
		switch c.Kind {
		case Bars:
			w := slot * (1 - barGap)
			for i, v := range c.Values {
				if math.IsNaN(v) || v <= 0 {
					continue
				}
				fmt.Fprintf(&b, `<rect class="bar" x="%s" y="%s" width="%s" height="%s" fill="#0b5cad"/>`,
					num(xOf(i)-w/2), num(yOf(v)), num(w), num(float64(marginT+plotH)-yOf(v)))
			}
		case Line:
			// A hidden value breaks the line.
			var pts []string
			flush := func() {
				if len(pts) > 0 {
					fmt.Fprintf(&b, `<polyline class="line" fill="none" stroke="#0b5cad" stroke-width="2" points="%s"/>`, strings.Join(pts, " "))
				}
				pts = nil
			}
			for i, v := range c.Values {
				if math.IsNaN(v) {
					flush()
					continue
				}
				pts = append(pts, num(xOf(i))+","+num(yOf(v)))
			}
			flush()
			// A point of its own (between two hidden values) has no line:
			// every value gets a dot.
			for i, v := range c.Values {
				if !math.IsNaN(v) {
					fmt.Fprintf(&b, `<circle class="point" cx="%s" cy="%s" r="3" fill="#0b5cad"/>`, num(xOf(i)), num(yOf(v)))
				}
			}
		}
		// The x axis's labels: at most maxXLabels, evenly spaced.
		step := max(1, (n+maxXLabels-1)/maxXLabels)
		for i := 0; i < n && i < len(c.X); i += step {
			fmt.Fprintf(&b, `<text class="tick" x="%s" y="%d" text-anchor="middle" font-size="12" fill="#1b1f24">%s</text>`, num(xOf(i)), marginT+plotH+18, esc(c.X[i]))
		}
	}
	b.WriteString(`</svg>`)
	return b.String()
}
