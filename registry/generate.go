package registry

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// Generated UZI numbers fill 100000000..899999999; the fixtures live at
// 9000000xx, so the two never collide.
const (
	genUZIBase  = 100_000_000
	genUZIRange = 800_000_000
	// MaxGenerate is the largest register Generate can write.
	MaxGenerate = genUZIRange
)

// ProgressEvery is how many entries Generate writes between progress calls.
const ProgressEvery = 10_000

// Generate writes n synthetic registry entries as LDIF to w, in the layout of
// the fixtures. The same seed gives the same bytes. progress, if not nil, is
// called with the number of entries written every ProgressEvery entries and
// once at the end.
//
// The mix resembles a national register: about 70% Z cards (doctors with
// their specialisms, nurses, pharmacists, physiotherapists, dentists,
// midwives, psychologists), 15% N, 10% M and 5% S cards; licenses 93%
// active, 4% suspended, 2% revoked, 1% deceased; about 3% of licenses ended
// in the past.
func Generate(w io.Writer, n int, seed uint64, progress func(done int)) error {
	if n < 0 || n > MaxGenerate {
		return fmt.Errorf("registry: generate: n = %d, want 0..%d", n, MaxGenerate)
	}
	g := newGenerator(seed)
	bw := bufio.NewWriterSize(w, 256<<10)
	var buf []byte
	var e entry
	for i := range n {
		g.fill(&e, uint64(i))
		buf = appendEntry(buf[:0], &e)
		if _, err := bw.Write(buf); err != nil {
			return fmt.Errorf("registry: generate: %w", err)
		}
		if progress != nil && (i+1)%ProgressEvery == 0 {
			progress(i + 1)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("registry: generate: %w", err)
	}
	if progress != nil && n%ProgressEvery != 0 {
		progress(n)
	}
	return nil
}

type generator struct {
	rng  *rand.Rand
	keys [4]uint64 // Feistel round keys of the UZI permutation
	cns  []string  // "J. de Vries" for every initial × surname, made once
	sns  []string
	ms   []string // "Balie 3": nameless cards
	ss   []string // "srv07.zorg.test": server certificates
}

func newGenerator(seed uint64) *generator {
	g := &generator{rng: rand.New(rand.NewPCG(seed, 0x766f756368726567))} // "vouchreg"
	for i := range g.keys {
		g.keys[i] = g.rng.Uint64()
	}
	// Precomputed names keep the hot loop free of string building.
	for _, sn := range surnames {
		for _, in := range initials {
			g.cns = append(g.cns, in+" "+sn)
			g.sns = append(g.sns, sn)
		}
	}
	for _, c := range counters {
		for k := range 9 {
			g.ms = append(g.ms, fmt.Sprintf("%s %d", c, k+1))
		}
	}
	for k := range 20 {
		g.ss = append(g.ss, fmt.Sprintf("srv%02d.zorg.test", k+1))
	}
	return g
}

// weighted picks from a table whose weights sum to 1000.
type weighted[T any] struct {
	w int
	v T
}

func pick[T any](r *rand.Rand, table []weighted[T]) T {
	x := r.IntN(1000)
	for _, t := range table {
		if x < t.w {
			return t.v
		}
		x -= t.w
	}
	return table[len(table)-1].v
}

var cardTypes = []weighted[string]{{700, "Z"}, {150, "N"}, {100, "M"}, {50, "S"}}

var statuses = []weighted[string]{{930, "active"}, {40, "suspended"}, {20, "revoked"}, {10, "deceased"}}

// Z roles: profession (BIG group) and specialism, by share of the register.
var roles = []weighted[string]{
	{90, "01.000"}, {110, "01.015"}, {30, "01.010"}, {20, "01.011"}, {20, "01.012"},
	{20, "01.014"}, {20, "01.016"}, {15, "01.018"}, {15, "01.019"}, {15, "01.020"},
	{15, "01.024"}, {10, "01.026"}, {10, "01.030"}, {10, "01.045"}, {10, "01.055"},
	{300, "30.000"}, {40, "02.000"}, {30, "03.000"}, {70, "04.000"}, {60, "17.000"},
	{40, "25.000"}, {20, "16.000"}, {30, "88.000"},
}

var initials = []string{"A.", "B.", "C.", "D.", "E.", "F.", "G.", "H.", "I.", "J.", "K.", "L.", "M.",
	"N.", "P.", "R.", "S.", "T.", "W.", "Y.", "J.P.", "M.A.", "A.M.", "H.J.", "C.W."}

var surnames = []string{"de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen",
	"Visser", "Smit", "Meijer", "de Boer", "Mulder", "de Groot", "Bos", "Vos", "Peters", "Hendriks",
	"van Leeuwen", "Dekker", "Brouwer", "de Wit", "Dijkstra", "Smits", "de Graaf", "van der Meer",
	"van der Linden", "Kok", "Jacobs", "de Haan", "Vermeulen", "van den Heuvel", "van der Veen",
	"van den Broek", "de Bruijn", "de Bruin", "van der Heijden", "Schouten", "van Beek", "Willems",
	"van Vliet", "van de Ven", "Hoekstra", "Maas", "Verhoeven", "Koster", "van Dam", "van der Wal",
	"Prins", "Blom", "Huisman", "Peeters", "de Lange", "Kuipers", "van Wijk", "Postma", "Kuiper",
	"Veenstra", "Kramer", "van den Brink", "Scholten", "van Wijngaarden", "Boersma", "Hermans",
	"ter Horst", "van 't Hof", "Zwart", "Wouters", "Evers", "Claassen", "Bosman", "Timmermans"}

var counters = []string{"Balie", "Receptie", "Polikliniek", "Apotheek", "Spoedpost", "Laboratorium"}

var (
	epoch      = time.Date(1985, 1, 1, 0, 0, 0, 0, time.UTC)
	futureBase = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	pastBase   = time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
)

const day = 24 * time.Hour

// fill sets e to entry i. Every field comes from g.rng in a fixed order,
// which is what makes the output a function of the seed.
func (g *generator) fill(e *entry, i uint64) {
	r := g.rng
	e.UZI = genUZIBase + g.permute(i)
	e.Type = pick(r, cardTypes)
	e.Status = pick(r, statuses)
	k := r.IntN(len(g.cns))
	e.CN, e.SN = g.cns[k], g.sns[k]
	e.From = epoch.Add(time.Duration(r.IntN(40*365)) * day)
	if r.IntN(100) < 3 {
		e.Until = pastBase.Add(time.Duration(r.IntN(11*365)) * day) // 2015..2025
	} else {
		e.Until = futureBase.Add(time.Duration(r.IntN(20*365)) * day)
	}
	if e.Until.Before(e.From) {
		e.From = e.Until.Add(-5 * 365 * day)
	}
	switch e.Type {
	case "Z":
		e.Role = pick(r, roles)
		e.AGB = uint64(r.IntN(100_000_000))
		prof := uint64(e.Role[0]-'0')*10 + uint64(e.Role[1]-'0')
		e.BIG = e.UZI*100 + prof
	default:
		e.Role, e.AGB, e.BIG = "00.000", 0, 0
		switch e.Type {
		case "M":
			e.CN = g.ms[r.IntN(len(g.ms))]
			e.SN = e.CN
		case "S":
			e.CN = g.ss[r.IntN(len(g.ss))]
			e.SN = e.CN
		}
	}
}

// permute maps 0..genUZIRange-1 onto itself one to one: a four-round Feistel
// network on 30 bits, walking the cycle until it lands inside the range.
// Unique numbers without a set of the ones already used.
func (g *generator) permute(i uint64) uint64 {
	x := i
	for {
		l, r := x>>15, x&0x7fff
		for _, k := range g.keys {
			f := (r*0x9e3779b97f4a7c15 ^ k) >> 49 // 15 bits
			l, r = r, l^f
		}
		x = l<<15 | r
		if x < genUZIRange {
			return x
		}
	}
}
