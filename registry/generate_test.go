package registry_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/registry"
)

// record is one parsed LDIF record: attribute → values, in file order.
type record struct {
	dn    string
	attrs map[string][]string
	order []string
}

func (r record) get(a string) string {
	if v := r.attrs[a]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseLDIF is a strict reader for the subset the registry writes: no
// continuation lines, "attr: value" or "attr:: base64".
func parseLDIF(t *testing.T, b []byte) []record {
	t.Helper()
	var recs []record
	var cur *record
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			cur = nil
			continue
		}
		attr, val, ok := strings.Cut(line, ":")
		if !ok || attr == "" || strings.HasPrefix(line, " ") {
			t.Fatalf("line %d: malformed %q", n, line)
		}
		if strings.HasPrefix(val, ":") {
			d, err := base64.StdEncoding.DecodeString(strings.TrimSpace(val[1:]))
			if err != nil {
				t.Fatalf("line %d: %v", n, err)
			}
			val = string(d)
		} else {
			val = strings.TrimPrefix(val, " ")
		}
		if cur == nil {
			if attr != "dn" {
				t.Fatalf("line %d: record starts with %q, want dn", n, attr)
			}
			recs = append(recs, record{dn: val, attrs: map[string][]string{}})
			cur = &recs[len(recs)-1]
			continue
		}
		if len(cur.attrs[attr]) == 0 {
			cur.order = append(cur.order, attr)
		}
		cur.attrs[attr] = append(cur.attrs[attr], val)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

func generate(t *testing.T, n int, seed uint64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := registry.Generate(&buf, n, seed, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestGenerateIsDeterministic(t *testing.T) {
	t.Parallel()
	a, b, c := generate(t, 2000, 7), generate(t, 2000, 7), generate(t, 2000, 8)
	if !bytes.Equal(a, b) {
		t.Fatal("same seed, different output")
	}
	if bytes.Equal(a, c) {
		t.Fatal("different seeds, same output")
	}
	// A longer register starts with the shorter one.
	if long := generate(t, 3000, 7); !bytes.HasPrefix(long, a) {
		t.Fatal("3000 entries do not extend the first 2000")
	}
}

func TestGenerateEntries(t *testing.T) {
	t.Parallel()
	const n = 20_000
	recs := parseLDIF(t, generate(t, n, 42))
	if len(recs) != n {
		t.Fatalf("%d records, want %d", len(recs), n)
	}
	// Every entry has the layout of the fixtures, attribute order included.
	layout := parseLDIF(t, registry.FixturesLDIF())[0].order
	seen := map[string]bool{}
	types, statuses := map[string]int{}, map[string]int{}
	expired := 0
	for _, r := range recs {
		uziNo := r.get("vouchUziNumber")
		if r.dn != "vouchUziNumber="+uziNo+","+registry.PeopleDN {
			t.Fatalf("dn %q does not name UZI %q", r.dn, uziNo)
		}
		if v, err := strconv.Atoi(uziNo); len(uziNo) != 9 || err != nil || v < 100_000_000 || v > 899_999_999 {
			t.Fatalf("UZI number %q outside 100000000..899999999", uziNo)
		}
		if seen[uziNo] {
			t.Fatalf("UZI number %s twice", uziNo)
		}
		seen[uziNo] = true
		typ := r.get("vouchCardType")
		types[typ]++
		statuses[r.get("vouchLicenseStatus")]++
		if r.get("vouchLicenseValidUntil") < "20260101000000Z" {
			expired++
		}
		if r.get("vouchLicenseValidFrom") >= r.get("vouchLicenseValidUntil") {
			t.Fatalf("%s: license ends before it starts", uziNo)
		}
		if len(r.get("vouchAgbCode")) != 8 || r.get("cn") == "" || r.get("sn") == "" {
			t.Fatalf("%s: bad AGB or name: %v", uziNo, r.attrs)
		}
		want := layout
		if typ == "Z" {
			big, role := r.get("vouchBigNumber"), r.get("vouchRoleCode")
			if len(big) != 11 || big[:9] != uziNo || big[9:] != role[:2] {
				t.Fatalf("%s: BIG number %q, role %q", uziNo, big, role)
			}
		} else {
			if r.get("vouchRoleCode") != "00.000" || r.get("vouchAgbCode") != "00000000" {
				t.Fatalf("%s: %s card with role %q AGB %q", uziNo, typ, r.get("vouchRoleCode"), r.get("vouchAgbCode"))
			}
			want = without(layout, "vouchBigNumber")
		}
		if fmt.Sprint(r.order) != fmt.Sprint(want) {
			t.Fatalf("%s: attributes %v, want %v", uziNo, r.order, want)
		}
	}

	share := func(count int) float64 { return float64(count) / n }
	mix := []struct {
		name      string
		got, want float64
	}{
		{"Z", share(types["Z"]), 0.70}, {"N", share(types["N"]), 0.15},
		{"M", share(types["M"]), 0.10}, {"S", share(types["S"]), 0.05},
		{"active", share(statuses["active"]), 0.93}, {"suspended", share(statuses["suspended"]), 0.04},
		{"revoked", share(statuses["revoked"]), 0.02}, {"deceased", share(statuses["deceased"]), 0.01},
		{"ended", share(expired), 0.03},
	}
	for _, m := range mix {
		if m.got < m.want*0.85 || m.got > m.want*1.15 {
			t.Errorf("share of %s = %.3f, want about %.2f", m.name, m.got, m.want)
		}
	}
}

func without(s []string, drop string) []string {
	var out []string
	for _, v := range s {
		if v != drop {
			out = append(out, v)
		}
	}
	return out
}

func TestGenerateProgress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int
		want []int
	}{
		{0, nil},
		{5, []int{5}},
		{20_000, []int{10_000, 20_000}},
		{25_000, []int{10_000, 20_000, 25_000}},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			t.Parallel()
			var got []int
			if err := registry.Generate(io.Discard, tt.n, 1, func(done int) { got = append(got, done) }); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("progress %v, want %v", got, tt.want)
			}
		})
	}
}

func TestGenerateRefusesBadCount(t *testing.T) {
	t.Parallel()
	for _, n := range []int{-1, registry.MaxGenerate + 1} {
		if err := registry.Generate(io.Discard, n, 1, nil); err == nil {
			t.Errorf("n = %d accepted", n)
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestGenerateReportsWriteError(t *testing.T) {
	t.Parallel()
	if err := registry.Generate(failWriter{}, 10, 1, nil); err == nil {
		t.Fatal("write error lost")
	}
}

func BenchmarkGenerate(b *testing.B) {
	for b.Loop() {
		if err := registry.Generate(io.Discard, 100_000, 1, nil); err != nil {
			b.Fatal(err)
		}
	}
}
