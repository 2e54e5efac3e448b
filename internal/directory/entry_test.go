package directory

import (
	"bytes"
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

// TestSeenCookie: the CSN a full sync already holds travels with the
// register's cookie while the register's own state is behind it, is never
// sent to the register, and is dropped once the register's state passes it.
func TestSeenCookie(t *testing.T) {
	t.Parallel()
	const (
		a1   = "20261122041234.000001Z#000000#000#000000"
		a2   = "20261122041234.000002Z#000000#000#000000"
		a3   = "20261122041234.000003Z#000000#000#000000"
		reg1 = "rid=000,csn=" + a1
	)
	for _, tt := range []struct {
		name, register, seen string
		wrapped              bool
	}{
		{"no seen", reg1, "", false},
		{"seen is the register's state", reg1, a1, false},
		{"seen older than the register's state", "rid=000,csn=" + a2, a1, false},
		{"seen newer than the register's state", reg1, a3, true},
		{"seen newer than one server of two", "rid=000,csn=" + a1 + ";" + "20261122041234.000001Z#000000#001#000000", a2, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := withSeen([]byte(tt.register), tt.seen)
			if got := !bytes.Equal(c, []byte(tt.register)); got != tt.wrapped {
				t.Fatalf("withSeen(%q, %q) = %q; wrapped %v, want %v", tt.register, tt.seen, c, got, tt.wrapped)
			}
			reg, seen := splitCookie(c)
			if string(reg) != tt.register {
				t.Errorf("register's part %q, want %q", reg, tt.register)
			}
			if want := map[bool]string{true: tt.seen}[tt.wrapped]; seen != want {
				t.Errorf("seen %q, want %q", seen, want)
			}
		})
	}
	// What is not ours is the register's, whole.
	for _, c := range []string{"", reg1, seenPrefix + "garbage\n" + reg1, seenPrefix + a3, "x" + seenPrefix + a3 + "\n" + reg1} {
		if reg, seen := splitCookie([]byte(c)); string(reg) != c || seen != "" {
			t.Errorf("splitCookie(%q) = %q, %q", c, reg, seen)
		}
	}
	for _, tt := range []struct {
		cookie, want string
	}{
		{"", ""},
		{"opaque", ""},
		{reg1, a1},
		{"rid=000,csn=" + a1 + ";20261122041234.000003Z#000000#001#000000;20261122041234.000002Z#000000#002#000000",
			"20261122041234.000003Z#000000#001#000000"},
	} {
		if got := newestCSN([]byte(tt.cookie)); got != tt.want {
			t.Errorf("newestCSN(%q) = %q, want %q", tt.cookie, got, tt.want)
		}
	}
}
