package directory

import (
	"testing"
	"time"
)

func TestParseGeneralizedTime(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Time{
		"20200101000000Z":       time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		"20401231235959Z":       time.Date(2040, 12, 31, 23, 59, 59, 0, time.UTC),
		"99991231235959Z":       time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		"20200101120000.5+0100": time.Date(2020, 1, 1, 11, 0, 0, 500e6, time.UTC),
		"202001011200Z":         time.Date(2020, 1, 1, 12, 0, 0, 0, time.UTC),
	} {
		got, err := parseGeneralizedTime(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("%s: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"20201301000000Z", "20200230000000Z", "20200101250000Z", "2020010100000aZ", "tomorrow", ""} {
		if _, err := parseGeneralizedTime(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCookieBehind(t *testing.T) {
	t.Parallel()
	const (
		a1 = "20261122041234.000001Z#000000#000#000000"
		a2 = "20261122041234.000002Z#000000#000#000000"
		b1 = "20261122041234.000001Z#000000#001#000000"
	)
	for _, tt := range []struct {
		name, now, before string
		want              bool
	}{
		{"same", "rid=000,csn=" + a1, "rid=000,csn=" + a1, false},
		{"forward", "rid=000,csn=" + a2, "rid=000,csn=" + a1, false},
		{"backwards", "rid=000,csn=" + a1, "rid=000,csn=" + a2, true},
		{"one server of two backwards", "rid=000,csn=" + a1 + ";" + b1, "rid=000,csn=" + a2 + ";" + b1, true},
		{"a server vanished", "rid=000,csn=" + a2, "rid=000,csn=" + a1 + ";" + b1, true},
		{"a server appeared", "rid=000,csn=" + a2 + ";" + b1, "rid=000,csn=" + a1, false},
		{"opaque cookies", "xyz", "abc", false},
		{"no cookie before", "rid=000,csn=" + a1, "", false},
	} {
		if _, got := cookieBehind([]byte(tt.now), []byte(tt.before)); got != tt.want {
			t.Errorf("%s: behind = %v, want %v", tt.name, got, tt.want)
		}
	}
}
