package stats

import (
	"fmt"
	"io"
	"testing"
	"time"
)

// yearData is a year of a busy site's rows.
func yearData() *Data {
	vals := map[cellKey]int64{}
	from := day("2025-12-01")
	for i := range 365 {
		d := from.AddDate(0, 0, i)
		for j, p := range []string{"01", "02", "03", "04", "17", "30"} {
			vals[cellKey{d, FigureVouches, p}] = int64((i*7 + j*13) % (400 >> j))
		}
		for j := range 12 {
			vals[cellKey{d, FigureRefusals, fmt.Sprint("r", j)}] = int64((i + j) % 60)
		}
		vals[cellKey{d, FigureSignIns, ""}] = 300
		vals[cellKey{d, FigureKeys, LabelUploaded}] = 2000
		vals[cellKey{d, FigureAge, ""}] = 70
	}
	return data("2025-12-01", 365, vals)
}

// BenchmarkPublicYear: the public view of a year and its CSV.
func BenchmarkPublicYear(b *testing.B) {
	d := yearData()
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	for b.Loop() {
		v := Public(d, now, ams)
		if err := WriteCSV(io.Discard, v.Rows(Query{From: d.From, To: d.To})); err != nil {
			b.Fatal(err)
		}
	}
}
