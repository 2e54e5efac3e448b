package backoffice

// Settings (admin): the values an admin changes without a deploy, kept by
// internal/settings within the configuration's hard limits, and used here
// where they are consumed — the quota (limits.go), the professions that
// vouch and an authorization's validity (vouch.go, signin.go), the
// languages offered (the switch and the matching, below). The register's
// staleness bound is the license decider's (cmd/vouch wires it), the
// retention periods the cleanup's (internal/retention).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
	"golang.org/x/text/language"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/settings"
)

// Settings is what the back office needs of the admin's settings
// (settings.Store): the values in effect, the items the page shows, and a
// change in the caller's transaction.
type Settings interface {
	Current() settings.Values
	Rules() settings.Rules
	Items() []settings.Item
	Set(ctx context.Context, tx pgx.Tx, name settings.Name, v settings.Value, version int64, actor string, now time.Time) (settings.Change, error)
	Reload(ctx context.Context) error
}

var _ Settings = (*settings.Store)(nil)

// fixedSettings are the configuration's defaults, when Deps name no
// settings (tools and tests): the register's bound is the license
// package's default, the professions Deps', the languages the catalogues'.
func fixedSettings(cfg Config, deps Deps) (Settings, error) {
	rules, err := settings.NewRules(cfg.Settings, settings.Bounds{DailyQuota: cfg.DailyQuota,
		MaxRegisterStaleness: 24 * time.Hour, Professions: deps.Professions, Languages: languages()})
	if err != nil {
		return nil, fmt.Errorf("backoffice: settings: %w", err)
	}
	return settings.Fixed(rules), nil
}

// Audit actions of settings.
const (
	ActionSettingChanged = "setting-changed"
	ActionSettingRefused = "setting-refused"
)

// offered are the languages the admin offers, the catalogue's order.
func (s *Service) offered() []string {
	return s.settings.Current().Languages
}

// offeredLanguage keeps the request's language among those offered: a
// cookie, a session or a browser asking for another gets the best offered
// match of its Accept-Language, else the first offered.
func (s *Service) offeredLanguage(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		offered := s.offered()
		if lang := langOf(c); !slices.Contains(offered, lang) {
			c.Set(server.LangKey, matchOffered(offered, c.Request().Header.Get("Accept-Language")))
		}
		return next(c)
	}
}

// matchOffered picks among offered for an Accept-Language header, each
// preference in its order; the source language if offered, else the first
// offered, when none matches.
func matchOffered(offered []string, header string) string {
	tags, _, _ := language.ParseAcceptLanguage(header)
	for _, t := range tags {
		if m := i18n.Default().Match(t.String()); slices.Contains(offered, m) && (m != i18n.Source || isSource(t)) {
			return m
		}
	}
	if slices.Contains(offered, i18n.Source) || len(offered) == 0 {
		return i18n.Source
	}
	return offered[0]
}

func isSource(t language.Tag) bool {
	base, _ := t.Base()
	return base.String() == i18n.Source
}

// settingsForm is the form of one setting: its name, the version it was
// read at, and its value (one number, or the items of a list checked).
type settingsForm struct {
	Name    settings.Name
	Version int64
	Inputs  []string
}

// Refusals of a change of settings besides the rules' (settings.Refusal).
var errSettingForm = &server.Error{Status: http.StatusBadRequest, Code: "bad-request", Message: "error.400"}

// changeSetting is the settings page's form: checked against the rules,
// written if the setting is still at the version the admin read, with its
// audit row (old and new value) in the same transaction; in effect here
// at once and in every other copy within Config.Refresh (NOTIFY, timer).
// A refusal is an audit row of its own and the page again with the
// reason at the setting.
func (s *Service) changeSetting(c echo.Context) error {
	sess := sessionOf(c) // the route needs admin: there is an unlocked one
	ctx, now := c.Request().Context(), s.now()
	form, err := c.FormParams()
	if err != nil {
		return errSettingForm
	}
	f := settingsForm{Name: settings.Name(form.Get("name")), Inputs: form["value"]}
	if f.Version, err = strconv.ParseInt(form.Get("version"), 10, 64); err != nil || f.Version < 0 {
		return errSettingForm
	}
	rule, ok := s.settings.Rules().Rule(f.Name)
	if !ok {
		return errSettingForm
	}
	v, err := rule.Parse(f.Inputs)
	var ch settings.Change
	if err == nil {
		err = s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
			var err error
			if ch, err = s.settings.Set(ctx, tx, f.Name, v, f.Version, sess.UZI, now); err != nil {
				return err
			}
			e := entry(c, ActionSettingChanged, "")
			e.Subject = string(f.Name)
			detail, _ := json.Marshal(map[string]any{"old": ch.Old.String(), "old_default": !ch.OldSet, "new": ch.New.String(),
				"version": ch.Version})
			e.Detail = string(detail)
			_, err = audit.Append(ctx, tx, e, now)
			return err
		})
	}
	var refusal *settings.Refusal
	switch {
	case errors.As(err, &refusal) && refusal.Code == settings.RefusedUnchanged:
		return s.renderSettings(c, http.StatusOK, &f, refusal)
	case errors.As(err, &refusal):
		e := entry(c, ActionSettingRefused, refusal.Code)
		e.Subject = string(f.Name)
		detail, _ := json.Marshal(map[string]any{"version": f.Version, "value": truncate(f.Inputs)})
		e.Detail = string(detail)
		s.record(c, e)
		status := http.StatusBadRequest
		if refusal.Code == settings.RefusedStale {
			status = http.StatusConflict
		}
		// The page again, as the settings are now: a stale version shows
		// what the other admin saved.
		if rerr := s.settings.Reload(ctx); rerr != nil {
			s.deps.Log.Warn("settings: reading failed", "err", rerr)
		}
		return s.renderSettings(c, status, &f, refusal)
	case err != nil:
		return err
	}
	// In effect in this copy now; the others read it on the NOTIFY.
	if err := s.settings.Reload(ctx); err != nil {
		s.deps.Log.Warn("settings: reading after a change failed; the refresh reads it", "err", err)
	}
	return c.Redirect(http.StatusSeeOther, "/settings?done="+string(f.Name))
}

// truncate keeps what an admin typed short enough for the audit row.
func truncate(inputs []string) []string {
	out := make([]string, 0, min(len(inputs), 16))
	for _, in := range inputs[:min(len(inputs), 16)] {
		if len(in) > 32 {
			in = in[:32]
		}
		out = append(out, in)
	}
	return out
}

// settingsPage shows every setting, its value in effect, its limits and
// who changed it last, each with its form.
func (s *Service) settingsPage(c echo.Context) error {
	return s.renderSettings(c, http.StatusOK, nil, nil)
}

// settingsView is the settings page's data.
type settingsView struct {
	Items []settingView
	Done  string // the setting just changed, in words
}

// settingView is one setting's form.
type settingView struct {
	Name      string
	Label     string
	Help      string
	Limits    string // the bounds in words
	List      bool
	Number    string // the value in the input
	Min, Max  int
	Unit      string
	Choices   []settingChoice
	Version   int64
	InEffect  string // the value in effect, in words
	Default   bool   // never set: the configuration's default
	Ignored   string // a stored value outside the limits now, in words
	ChangedBy string
	ChangedAt string
	Problem   string // why the last change was refused
	Note      string // the last change changed nothing
}

type settingChoice struct {
	Value, Label, Lang string
	Checked            bool
}

// renderSettings renders the settings page with status; f and refusal are
// a refused change, shown at its setting with what was typed.
func (s *Service) renderSettings(c echo.Context, status int, f *settingsForm, refusal *settings.Refusal) error {
	t := tr{langOf(c)}
	p := page{Settings: &settingsView{}}
	if done := settings.Name(c.QueryParam("done")); f == nil {
		if r, ok := s.settings.Rules().Rule(done); ok {
			p.Settings.Done = t.Tf("settings.done", "Setting", t.T("settings."+string(r.Name)+".label"))
		}
	}
	for _, it := range s.settings.Items() {
		v := settingView{Name: string(it.Rule.Name), Label: t.T("settings." + string(it.Rule.Name) + ".label"),
			Help: t.T("settings." + string(it.Rule.Name) + ".help"), List: it.Rule.Unit == settings.List,
			Min: it.Rule.Min, Max: it.Rule.Max, Version: it.Version,
			InEffect: t.settingValue(it.Rule, it.Value), Default: !it.Set, ChangedBy: it.ChangedBy}
		if !v.List {
			v.Unit = t.T("settings.unit." + string(it.Rule.Unit))
			v.Number = strconv.Itoa(it.Value.Number)
			v.Limits = t.Tf("settings.limits", "Min", t.Number(it.Rule.Min), "Max", t.Number(it.Rule.Max), "Unit", v.Unit)
		}
		if it.Version > 0 {
			v.ChangedAt = t.DateTime(it.ChangedAt.In(s.zone))
		}
		if it.Ignored {
			v.Ignored = t.Tf("settings.ignored", "Value", t.settingValue(it.Rule, it.Stored))
		}
		for _, ch := range it.Rule.Choices {
			sc := settingChoice{Value: ch, Label: t.choiceLabel(it.Rule.Name, ch), Checked: slices.Contains(it.Value.List, ch)}
			if it.Rule.Name == settings.Languages {
				sc.Lang = ch
			}
			v.Choices = append(v.Choices, sc)
		}
		if f != nil && f.Name == it.Rule.Name && refusal != nil {
			if refusal.Code == settings.RefusedUnchanged {
				v.Note = t.T("settings.refused." + refusal.Code)
			} else {
				v.Problem = t.Tf("settings.refused."+refusal.Code, "Min", t.Number(it.Rule.Min), "Max", t.Number(it.Rule.Max),
					"Unit", v.Unit, "Value", v.InEffect)
				// What was typed stays in the form, but a stale change,
				// which shows the value saved meanwhile.
				if refusal.Code != settings.RefusedStale {
					if v.List {
						for i := range v.Choices {
							v.Choices[i].Checked = slices.Contains(f.Inputs, v.Choices[i].Value)
						}
					} else if len(f.Inputs) > 0 {
						v.Number = truncate(f.Inputs)[0]
					}
				}
			}
		}
		p.Settings.Items = append(p.Settings.Items, v)
	}
	return s.renderStatus(c, status, "settings", p)
}

// settingValue writes a value in words: a number with its unit, or the
// list's items.
func (t tr) settingValue(r settings.Rule, v settings.Value) string {
	if r.Unit != settings.List {
		return t.Number(v.Number) + " " + t.T("settings.unit."+string(r.Unit))
	}
	out := ""
	for i, ch := range v.List {
		if i > 0 {
			out += ", "
		}
		out += t.choiceLabel(r.Name, ch)
	}
	return out
}

// choiceLabel is a list item in words: a language by its own name, a
// profession by its name in the page's language when the catalogue has one.
func (t tr) choiceLabel(name settings.Name, ch string) string {
	switch name {
	case settings.Languages:
		return i18n.T(ch, "lang.name")
	case settings.Professions:
		if i18n.Default().Has(i18n.Source, "settings.profession."+ch) {
			return ch + " · " + t.T("settings.profession."+ch)
		}
	}
	return ch
}
