// Package settings keeps the settings an admin changes in the back office
// without a deploy — the daily quota per card, the professions allowed to
// vouch, how long an authorization is valid, how stale the register's
// mirror may be, the retention periods and the languages offered — in
// PostgreSQL (table settings, migration 020), within hard limits that the
// configuration sets and that no admin can pass (Config, Rules).
//
// A setting never set is its rule's default, which the configuration
// gives. A change names the version of the setting it was made on
// (optimistic concurrency): two admins editing at once do not silently
// overwrite each other; the second is told (ErrStale). Every copy of every
// role that reads settings keeps them in a Store, which reads them again
// on a NOTIFY sent with each change and on a timer (Config.Refresh, at
// most a minute), so a change is in effect everywhere within a minute.
//
// A value stored that the rules refuse (the configuration's limits were
// narrowed since) is not used: its default is, which the rules accept.
package settings

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vouch-nl/vouch/internal/protocol"
)

// Name names a setting.
type Name string

// The settings.
const (
	DailyQuota            Name = "daily-quota"
	Professions           Name = "professions"
	AuthorizationValidity Name = "authorization-validity"
	RegisterStaleness     Name = "register-staleness"
	AuthorizationsKeep    Name = "retention-authorizations"
	AccessLogsKeep        Name = "retention-access-logs"
	AuditKeep             Name = "retention-audit"
	Languages             Name = "languages"
)

// Unit is what a number setting counts, or List for a choice of several.
type Unit string

// Units.
const (
	Count  Unit = "count"
	Minute Unit = "minute"
	Hour   Unit = "hour"
	Day    Unit = "day"
	Year   Unit = "year"
	List   Unit = "list"
)

// Hard floors that no configuration lowers: below them the system would
// not work or the law would not be met.
const (
	// MinAuthorizationValidity: a phone must have time to pick up.
	MinAuthorizationValidity = time.Hour
	// MinRegisterStaleness: the registry sync runs every few minutes.
	MinRegisterStaleness = 5 * time.Minute
	// MinAuthorizationsKeep: an authorization's row answers a replay
	// while it is valid, and a day after.
	MinAuthorizationsKeep = 2 * 24 * time.Hour
	// LawAccessLogsKeep: no access log line may be 48 hours old.
	LawAccessLogsKeep = 48 * time.Hour
	// LawAuditKeepYears: the audit log is kept six years at least.
	LawAuditKeepYears = 6
	// MaxRefresh: every copy reads the settings again within a minute.
	MaxRefresh = time.Minute
)

// Config holds the hard limits the environment sets, and how often a
// copy reads the settings again. The register's staleness bound is
// VOUCH_LICENSE_MAX_MIRROR_AGE (license.Config), the professions' the card
// profile's, the languages' the catalogues'.
type Config struct {
	// Refresh is how often a copy reads the settings again, besides on a
	// NOTIFY: at most a minute.
	Refresh time.Duration `env:"VOUCH_SETTINGS_REFRESH, default=30s"`
	// MaxDailyQuota bounds the daily quota per card an admin may set.
	MaxDailyQuota int `env:"VOUCH_SETTINGS_DAILY_QUOTA_MAX, default=500"`
	// MaxAuthorizationValidity bounds an authorization's validity; never
	// above the protocol's 24 hours, which phones enforce.
	MaxAuthorizationValidity time.Duration `env:"VOUCH_SETTINGS_AUTHORIZATION_VALIDITY_MAX, default=24h"`
	// MaxAuthorizationsKeep bounds how long authorizations are kept.
	MaxAuthorizationsKeep time.Duration `env:"VOUCH_SETTINGS_AUTHORIZATIONS_KEEP_MAX, default=720h"`
	// MaxAccessLogsKeep bounds how long access logs are kept: 48 hours by
	// law at most.
	MaxAccessLogsKeep time.Duration `env:"VOUCH_SETTINGS_ACCESS_LOGS_KEEP_MAX, default=48h"`
	// MaxAuditKeepYears bounds how many years audit rows are kept: six by
	// law at least.
	MaxAuditKeepYears int `env:"VOUCH_SETTINGS_AUDIT_KEEP_YEARS_MAX, default=10"`
}

func (c Config) withDefaults() Config {
	c.Refresh = or(c.Refresh, 30*time.Second)
	c.MaxDailyQuota = or(c.MaxDailyQuota, 500)
	c.MaxAuthorizationValidity = or(c.MaxAuthorizationValidity, protocol.MaxValidity)
	c.MaxAuthorizationsKeep = or(c.MaxAuthorizationsKeep, 30*24*time.Hour)
	c.MaxAccessLogsKeep = or(c.MaxAccessLogsKeep, LawAccessLogsKeep)
	c.MaxAuditKeepYears = or(c.MaxAuditKeepYears, 10)
	return c
}

// or is v, or d when v is unset (a Config made in code, not read from the
// environment, whose defaults envconfig would have filled in).
func or[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}

// Validate says what is wrong with c, all of it, each naming its variable.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Refresh < 100*time.Millisecond || c.Refresh > MaxRefresh {
		errs = append(errs, fmt.Errorf("VOUCH_SETTINGS_REFRESH must be 100ms..1m (a change is in effect everywhere within a minute), got %s", c.Refresh))
	}
	if c.MaxDailyQuota < 1 {
		errs = append(errs, fmt.Errorf("VOUCH_SETTINGS_DAILY_QUOTA_MAX must be at least 1, got %d", c.MaxDailyQuota))
	}
	if c.MaxAuthorizationValidity < MinAuthorizationValidity || c.MaxAuthorizationValidity > protocol.MaxValidity ||
		c.MaxAuthorizationValidity%time.Hour != 0 {
		errs = append(errs, fmt.Errorf("VOUCH_SETTINGS_AUTHORIZATION_VALIDITY_MAX must be whole hours, 1h..24h (phones refuse longer), got %s", c.MaxAuthorizationValidity))
	}
	if c.MaxAuthorizationsKeep < MinAuthorizationsKeep || c.MaxAuthorizationsKeep%(24*time.Hour) != 0 {
		errs = append(errs, fmt.Errorf("VOUCH_SETTINGS_AUTHORIZATIONS_KEEP_MAX must be whole days, at least 48h, got %s", c.MaxAuthorizationsKeep))
	}
	if c.MaxAccessLogsKeep < time.Hour || c.MaxAccessLogsKeep > LawAccessLogsKeep || c.MaxAccessLogsKeep%time.Hour != 0 {
		errs = append(errs, fmt.Errorf("VOUCH_SETTINGS_ACCESS_LOGS_KEEP_MAX must be whole hours, 1h..48h (the law's bound), got %s", c.MaxAccessLogsKeep))
	}
	if c.MaxAuditKeepYears < LawAuditKeepYears || c.MaxAuditKeepYears > 100 {
		errs = append(errs, fmt.Errorf("VOUCH_SETTINGS_AUDIT_KEEP_YEARS_MAX must be %d..100 (the law keeps six years at least), got %d", LawAuditKeepYears, c.MaxAuditKeepYears))
	}
	return errors.Join(errs...)
}

// Bounds are the limits and defaults that come from elsewhere in the
// configuration than Config.
type Bounds struct {
	// DailyQuota is the quota when none is set (VOUCH_VOUCH_DAILY_QUOTA).
	DailyQuota int
	// MaxRegisterStaleness is VOUCH_LICENSE_MAX_MIRROR_AGE: an admin may
	// only tighten it.
	MaxRegisterStaleness time.Duration
	// Professions are the card profile's professions that may vouch: an
	// admin chooses among them.
	Professions []string
	// Languages are the catalogues' languages: an admin chooses among them.
	Languages []string
}

// Rule is what one setting may be: a whole number of Unit in Min..Max, or
// for List a non-empty choice among Choices.
type Rule struct {
	Name     Name
	Unit     Unit
	Min, Max int
	Choices  []string
	Default  Value
	// Limit names the variable that sets the hard limit an admin cannot
	// pass, for the page and the refusals.
	Limit string
}

// Value is a setting's value: Number, or List for a List rule.
type Value struct {
	Number int      `json:"number,omitempty"`
	List   []string `json:"list,omitempty"`
}

// String writes v for the audit log and the logs.
func (v Value) String() string {
	if v.List != nil {
		return strings.Join(v.List, ",")
	}
	return strconv.Itoa(v.Number)
}

// Rules are the rules of every setting, in the page's order.
type Rules []Rule

// NewRules makes the rules from the configuration's limits and bounds and
// checks that every default is within them (a default the rules refuse is
// a configuration error, naming its variable).
func NewRules(cfg Config, b Bounds) (Rules, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	maxStale := int(b.MaxRegisterStaleness / time.Minute)
	rules := Rules{
		{Name: DailyQuota, Unit: Count, Min: 1, Max: cfg.MaxDailyQuota, Default: Value{Number: b.DailyQuota}, Limit: "VOUCH_SETTINGS_DAILY_QUOTA_MAX"},
		{Name: Professions, Unit: List, Choices: slices.Clone(b.Professions), Default: Value{List: slices.Clone(b.Professions)}, Limit: "VOUCH_VOUCH_PROFESSIONS"},
		{Name: AuthorizationValidity, Unit: Hour, Min: int(MinAuthorizationValidity / time.Hour), Max: int(cfg.MaxAuthorizationValidity / time.Hour),
			Default: Value{Number: int(cfg.MaxAuthorizationValidity / time.Hour)}, Limit: "VOUCH_SETTINGS_AUTHORIZATION_VALIDITY_MAX"},
		{Name: RegisterStaleness, Unit: Minute, Min: int(MinRegisterStaleness / time.Minute), Max: maxStale,
			Default: Value{Number: maxStale}, Limit: "VOUCH_LICENSE_MAX_MIRROR_AGE"},
		{Name: AuthorizationsKeep, Unit: Day, Min: int(MinAuthorizationsKeep / (24 * time.Hour)), Max: int(cfg.MaxAuthorizationsKeep / (24 * time.Hour)),
			Default: Value{Number: int(cfg.MaxAuthorizationsKeep / (24 * time.Hour))}, Limit: "VOUCH_SETTINGS_AUTHORIZATIONS_KEEP_MAX"},
		{Name: AccessLogsKeep, Unit: Hour, Min: 1, Max: int(cfg.MaxAccessLogsKeep / time.Hour),
			Default: Value{Number: int(cfg.MaxAccessLogsKeep / time.Hour)}, Limit: "VOUCH_SETTINGS_ACCESS_LOGS_KEEP_MAX"},
		{Name: AuditKeep, Unit: Year, Min: LawAuditKeepYears, Max: cfg.MaxAuditKeepYears, Default: Value{Number: LawAuditKeepYears},
			Limit: "VOUCH_SETTINGS_AUDIT_KEEP_YEARS_MAX"},
		{Name: Languages, Unit: List, Choices: slices.Clone(b.Languages), Default: Value{List: slices.Clone(b.Languages)}},
	}
	var errs []error
	if b.DailyQuota < 1 || b.DailyQuota > cfg.MaxDailyQuota {
		errs = append(errs, fmt.Errorf("VOUCH_VOUCH_DAILY_QUOTA must be 1..VOUCH_SETTINGS_DAILY_QUOTA_MAX (%d), got %d", cfg.MaxDailyQuota, b.DailyQuota))
	}
	if b.MaxRegisterStaleness < MinRegisterStaleness || b.MaxRegisterStaleness%time.Minute != 0 {
		errs = append(errs, fmt.Errorf("VOUCH_LICENSE_MAX_MIRROR_AGE must be whole minutes, at least %s, got %s", MinRegisterStaleness, b.MaxRegisterStaleness))
	}
	if len(b.Languages) == 0 {
		errs = append(errs, errors.New("settings: no languages to choose among"))
	}
	return rules, errors.Join(errs...)
}

// Rule returns the rule of name.
func (rs Rules) Rule(name Name) (Rule, bool) {
	i := slices.IndexFunc(rs, func(r Rule) bool { return r.Name == name })
	if i < 0 {
		return Rule{}, false
	}
	return rs[i], true
}

// Refusal codes: why a value was refused. Each has the message
// "settings.refused.<code>" in the back office's catalogues.
const (
	RefusedUnknown = "setting-unknown"
	RefusedNumber  = "setting-not-a-number"
	RefusedBelow   = "setting-below-minimum"
	RefusedAbove   = "setting-above-limit"
	RefusedChoice  = "setting-choice-unknown"
	RefusedEmpty   = "setting-empty"
	// RefusedStale: the setting changed since the version the change was
	// made on (another admin saved first); nothing was written.
	RefusedStale = "setting-stale-version"
	// RefusedUnchanged: the value is the one in effect; nothing written.
	RefusedUnchanged = "setting-unchanged"
)

// Refusal is a value the rules refuse, and why.
type Refusal struct {
	Code string
	Rule Rule
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("settings: %s: %s (%d..%d %s)", r.Rule.Name, r.Code, r.Rule.Min, r.Rule.Max, r.Rule.Unit)
}

// Parse reads a setting's value as a form gives it: one number, or the
// chosen items of a list, and checks it (Check).
func (r Rule) Parse(inputs []string) (Value, error) {
	if r.Unit == List {
		v := Value{List: []string{}}
		for _, in := range inputs {
			if in = strings.TrimSpace(in); in != "" && !slices.Contains(v.List, in) {
				v.List = append(v.List, in)
			}
		}
		return v, r.Check(v)
	}
	if len(inputs) != 1 {
		return Value{}, &Refusal{Code: RefusedNumber, Rule: r}
	}
	n, err := strconv.Atoi(strings.TrimSpace(inputs[0]))
	if err != nil {
		return Value{}, &Refusal{Code: RefusedNumber, Rule: r}
	}
	v := Value{Number: n}
	return v, r.Check(v)
}

// Check says whether the rule allows v.
func (r Rule) Check(v Value) error {
	if r.Unit == List {
		switch {
		case v.Number != 0:
			return &Refusal{Code: RefusedChoice, Rule: r}
		case len(v.List) == 0:
			return &Refusal{Code: RefusedEmpty, Rule: r}
		}
		for i, c := range v.List {
			if !slices.Contains(r.Choices, c) || slices.Contains(v.List[:i], c) {
				return &Refusal{Code: RefusedChoice, Rule: r}
			}
		}
		return nil
	}
	switch {
	case v.List != nil:
		return &Refusal{Code: RefusedNumber, Rule: r}
	case v.Number < r.Min:
		return &Refusal{Code: RefusedBelow, Rule: r}
	case v.Number > r.Max:
		return &Refusal{Code: RefusedAbove, Rule: r}
	}
	return nil
}

// canonical orders a list as the rule's choices are: the same choice is
// the same value, whatever order a form sent.
func (r Rule) canonical(v Value) Value {
	if r.Unit != List {
		return v
	}
	out := Value{List: []string{}}
	for _, c := range r.Choices {
		if slices.Contains(v.List, c) {
			out.List = append(out.List, c)
		}
	}
	return out
}

// Values are the settings in effect, typed for their consumers.
type Values struct {
	DailyQuota            int
	Professions           []string
	AuthorizationValidity time.Duration
	RegisterStaleness     time.Duration
	AuthorizationsKeep    time.Duration
	AccessLogsKeep        time.Duration
	AuditKeepYears        int
	Languages             []string
}

// values types the items in effect.
func values(items map[Name]Value) Values {
	return Values{
		DailyQuota:            items[DailyQuota].Number,
		Professions:           slices.Clone(items[Professions].List),
		AuthorizationValidity: time.Duration(items[AuthorizationValidity].Number) * time.Hour,
		RegisterStaleness:     time.Duration(items[RegisterStaleness].Number) * time.Minute,
		AuthorizationsKeep:    time.Duration(items[AuthorizationsKeep].Number) * 24 * time.Hour,
		AccessLogsKeep:        time.Duration(items[AccessLogsKeep].Number) * time.Hour,
		AuditKeepYears:        items[AuditKeep].Number,
		Languages:             slices.Clone(items[Languages].List),
	}
}
