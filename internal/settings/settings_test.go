package settings

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testBounds are a deployment's other bounds: quota 60 by default, the
// register's mirror at most 24 hours old, four professions, two languages.
var testBounds = Bounds{DailyQuota: 60, MaxRegisterStaleness: 24 * time.Hour, Professions: []string{"01", "02", "03", "30"},
	Languages: []string{"en", "nl"}}

func testRules(t *testing.T, cfg Config) Rules {
	t.Helper()
	rules, err := NewRules(cfg, testBounds)
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

func codeOf(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Code
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return ""
}

// TestRulesAtTheirLimits: every number setting takes its hard limit and
// its minimum, and refuses one past either; the limits are the
// configuration's (or the law's, or the protocol's).
func TestRulesAtTheirLimits(t *testing.T) {
	t.Parallel()
	rules := testRules(t, Config{MaxDailyQuota: 100, MaxAuthorizationValidity: 12 * time.Hour,
		MaxAuthorizationsKeep: 10 * 24 * time.Hour, MaxAccessLogsKeep: 24 * time.Hour, MaxAuditKeepYears: 8})
	tests := []struct {
		name     Name
		min, max int
	}{
		{DailyQuota, 1, 100},
		{AuthorizationValidity, 1, 12},
		{RegisterStaleness, 5, 24 * 60},
		{AuthorizationsKeep, 2, 10},
		{AccessLogsKeep, 1, 24},
		{AuditKeep, 6, 8},
	}
	for _, tt := range tests {
		t.Run(string(tt.name), func(t *testing.T) {
			t.Parallel()
			r, ok := rules.Rule(tt.name)
			if !ok {
				t.Fatal("no rule")
			}
			got := map[string]string{}
			for _, in := range []int{tt.min - 1, tt.min, tt.max, tt.max + 1} {
				_, err := r.Parse([]string{strconv.Itoa(in)})
				got[strconv.Itoa(in)] = codeOf(err)
			}
			want := map[string]string{strconv.Itoa(tt.min - 1): RefusedBelow, strconv.Itoa(tt.min): "", strconv.Itoa(tt.max): "",
				strconv.Itoa(tt.max + 1): RefusedAbove}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("refusals (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRulesOfLists: a list takes any non-empty choice among its choices,
// in any order, and nothing else.
func TestRulesOfLists(t *testing.T) {
	t.Parallel()
	rules := testRules(t, Config{})
	tests := []struct {
		name   Name
		inputs []string
		want   string
		value  []string // canonical, when accepted
	}{
		{Professions, []string{"30", "01"}, "", []string{"01", "30"}},
		{Professions, []string{"01", "02", "03", "30"}, "", []string{"01", "02", "03", "30"}},
		{Professions, []string{"01", "01"}, "", []string{"01"}},
		{Professions, []string{"17"}, RefusedChoice, nil},
		{Professions, nil, RefusedEmpty, nil},
		{Professions, []string{" "}, RefusedEmpty, nil},
		{Languages, []string{"nl"}, "", []string{"nl"}},
		{Languages, []string{"fr"}, RefusedChoice, nil},
		{DailyQuota, []string{"ten"}, RefusedNumber, nil},
		{DailyQuota, []string{"1", "2"}, RefusedNumber, nil},
		{DailyQuota, nil, RefusedNumber, nil},
		{DailyQuota, []string{"99999999999999999999"}, RefusedNumber, nil},
	}
	for _, tt := range tests {
		t.Run(string(tt.name)+" "+strings.Join(tt.inputs, ","), func(t *testing.T) {
			t.Parallel()
			r, _ := rules.Rule(tt.name)
			v, err := r.Parse(tt.inputs)
			if got := codeOf(err); got != tt.want {
				t.Fatalf("refusal %q, want %q", got, tt.want)
			}
			if tt.want == "" {
				if diff := cmp.Diff(tt.value, r.canonical(v).List); diff != "" {
					t.Errorf("value (-want +got):\n%s", diff)
				}
			}
		})
	}
	// A number given to a list, or a list to a number, is refused.
	p, _ := rules.Rule(Professions)
	q, _ := rules.Rule(DailyQuota)
	if codeOf(p.Check(Value{Number: 1, List: []string{"01"}})) == "" || codeOf(q.Check(Value{Number: 5, List: []string{}})) == "" {
		t.Error("a value of the wrong kind is accepted")
	}
}

// TestNewRulesRefusesDefaultsPastLimits: the configuration's defaults and
// limits are checked, each naming its variable.
func TestNewRulesRefusesDefaultsPastLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		b    func(*Bounds)
		want string // "" for valid
	}{
		{"defaults", Config{}, func(*Bounds) {}, ""},
		{"quota at its limit", Config{MaxDailyQuota: 60}, func(*Bounds) {}, ""},
		{"quota past its limit", Config{MaxDailyQuota: 59}, func(*Bounds) {}, "VOUCH_VOUCH_DAILY_QUOTA"},
		{"refresh a minute", Config{Refresh: time.Minute}, func(*Bounds) {}, ""},
		{"refresh over a minute", Config{Refresh: time.Minute + 1}, func(*Bounds) {}, "VOUCH_SETTINGS_REFRESH"},
		{"validity 24h", Config{MaxAuthorizationValidity: 24 * time.Hour}, func(*Bounds) {}, ""},
		{"validity over 24h", Config{MaxAuthorizationValidity: 25 * time.Hour}, func(*Bounds) {}, "VOUCH_SETTINGS_AUTHORIZATION_VALIDITY_MAX"},
		{"validity not whole hours", Config{MaxAuthorizationValidity: 90 * time.Minute}, func(*Bounds) {}, "VOUCH_SETTINGS_AUTHORIZATION_VALIDITY_MAX"},
		{"access logs 48h", Config{MaxAccessLogsKeep: 48 * time.Hour}, func(*Bounds) {}, ""},
		{"access logs past the law", Config{MaxAccessLogsKeep: 49 * time.Hour}, func(*Bounds) {}, "VOUCH_SETTINGS_ACCESS_LOGS_KEEP_MAX"},
		{"audit six years", Config{MaxAuditKeepYears: 6}, func(*Bounds) {}, ""},
		{"audit under the law", Config{MaxAuditKeepYears: 5}, func(*Bounds) {}, "VOUCH_SETTINGS_AUDIT_KEEP_YEARS_MAX"},
		{"authorizations a day", Config{MaxAuthorizationsKeep: 24 * time.Hour}, func(*Bounds) {}, "VOUCH_SETTINGS_AUTHORIZATIONS_KEEP_MAX"},
		{"staleness in seconds", Config{}, func(b *Bounds) { b.MaxRegisterStaleness = 90 * time.Second }, "VOUCH_LICENSE_MAX_MIRROR_AGE"},
		{"no languages", Config{}, func(b *Bounds) { b.Languages = nil }, "no languages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := testBounds
			tt.b(&b)
			_, err := NewRules(tt.cfg, b)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
}

// TestDefaultsInEffect: a setting never set is its default, which the
// configuration gives; a stored value the rules refuse now (limits
// narrowed since) is not used.
func TestDefaultsInEffect(t *testing.T) {
	t.Parallel()
	rules := testRules(t, Config{MaxDailyQuota: 100})
	st := build(rules, map[Name]stored{
		DailyQuota:  {Value: Value{Number: 400}, Version: 3}, // past the limit of 100 now
		Professions: {Value: Value{List: []string{"30", "01"}}, Version: 1},
		Languages:   {bad: true, Version: 1},
	})
	want := Values{DailyQuota: 60, Professions: []string{"01", "30"}, AuthorizationValidity: 24 * time.Hour,
		RegisterStaleness: 24 * time.Hour, AuthorizationsKeep: 30 * 24 * time.Hour, AccessLogsKeep: 48 * time.Hour,
		AuditKeepYears: 6, Languages: []string{"en", "nl"}}
	if diff := cmp.Diff(want, st.values); diff != "" {
		t.Errorf("in effect (-want +got):\n%s", diff)
	}
	if !st.items[0].Ignored || st.items[0].Set || st.items[0].Stored.Number != 400 {
		t.Errorf("the quota past its limit: %+v", st.items[0])
	}
	if diff := cmp.Diff(want, Fixed(rules).Current(), cmp.FilterPath(func(p cmp.Path) bool {
		return p.String() == "DailyQuota" || p.String() == "Professions"
	}, cmp.Ignore())); diff != "" {
		t.Errorf("fixed (-want +got):\n%s", diff)
	}
}
