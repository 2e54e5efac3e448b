package backoffice

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/web"
)

// pageNames are the back office's pages, each templates/<name>.html on
// top of templates/layout.html.
var pageNames = []string{"signin", "vouch", "staff", "locked", "roles", "forbidden", "settings", "quota", "statistics", "statistics-public", "audit", "audit-row", "audit-verify"}

func loadPages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		// stat-*.html: parts the statistics pages share.
		t, err := template.New("layout.html").ParseFS(web.Templates, "templates/layout.html", "templates/"+name+".html", "templates/stat-*.html")
		if err != nil {
			return nil, fmt.Errorf("backoffice: page %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

func languages() []string { return i18n.Default().Languages() }

// tr is the catalogue in one language, for templates: {{.Tr.T "id"}}.
type tr struct{ lang string }

func (t tr) T(id string) string { return i18n.T(t.lang, id) }

// Tf fills in values given as name, value pairs.
func (t tr) Tf(id string, kv ...any) string {
	data := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		data[fmt.Sprint(kv[i])] = kv[i+1]
	}
	return i18n.T(t.lang, id, data)
}

// page is what every template gets.
type page struct {
	Name      string
	Lang      string
	Languages []languageChoice
	Tr        tr
	Session   *session
	Locked    bool
	// Nav are the header's links: the pages the session's roles open.
	Nav []navLink
	// Held are the session's roles, for the header.
	Held []string
	// Messages are the texts the page's script shows (the card agent's
	// answers, progress), in the page's language.
	Messages map[string]string
	// Vouch page.
	Today, OldestOnset string
	TodayShown         string // today as the page's language writes a date (tr.Date, page.vouch.onset-format)
	Quota              int
	// Staff page.
	Activity []activity
	// Roles page.
	Roles *rolesView
	// Statistics pages (*statsView, statistics.go).
	Stats any
	// Settings page, and the per-card quota view.
	Settings  *settingsView
	QuotaView *quotaView
	// The audit trail's pages: an *auditTrailView (audittrail.go).
	AuditTrail any
}

type activity struct {
	At     string
	Action string
	Reason string
}

// scriptMessages are the message ids whose texts the page's script
// shows: the card agent's answers (agent.*, built from its error codes),
// the card types, and its progress and problems.
var (
	scriptMessagePrefixes = []string{"agent.", "page.cards."}
	scriptMessages        = []string{"page.offline", "page.error", "page.signin.asking", "page.signin.pin", "page.signin.checking",
		"page.signin.done", "page.lock.text", "page.lock.card-back", "page.lock.one-card", "vouch.code-check", "vouch.code-character", "vouch.code-length", "page.vouch.no-card", "page.vouch.checking", "page.vouch.pin",
		"page.vouch.storing", "page.vouch.no-camera"}
)

// scriptTexts are the texts of the page's script, in lang.
func scriptTexts(lang string) map[string]string {
	texts := map[string]string{}
	for _, id := range i18n.Default().IDs() {
		for _, prefix := range scriptMessagePrefixes {
			if strings.HasPrefix(id, prefix) {
				texts[id] = i18n.T(lang, id)
			}
		}
	}
	for _, id := range scriptMessages {
		texts[id] = i18n.T(lang, id)
	}
	return texts
}

func (s *Service) render(c echo.Context, name string, p page) error {
	return s.renderStatus(c, http.StatusOK, name, p)
}

// renderStatus renders a page; a locked session's page shows nothing of
// its card holder (no name, no UZI number).
func (s *Service) renderStatus(c echo.Context, status int, name string, p page) error {
	lang := langOf(c)
	p.Name, p.Lang, p.Tr = name, lang, tr{lang}
	for _, l := range languageChoices() { // the languages the admin offers (settings)
		if slices.Contains(s.offered(), l.Tag) {
			p.Languages = append(p.Languages, l)
		}
	}
	p.Session = sessionOf(c)
	if p.Session != nil && p.Session.locked() {
		p.Session, p.Locked = nil, true
	}
	p.Nav = s.navLinks(p.Session)
	if p.Session != nil {
		// staff, which every card holder signed in holds, only alone.
		for _, r := range p.Session.roles() {
			if r != roleStaff {
				p.Held = append(p.Held, r)
			}
		}
		if len(p.Held) == 0 {
			p.Held = []string{roleStaff}
		}
	}
	p.Messages = scriptTexts(lang)
	var buf bytes.Buffer
	if err := s.pages[name].Execute(&buf, p); err != nil {
		return fmt.Errorf("backoffice: render %s: %w", name, err)
	}
	// Pages show who is signed in: never cached.
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.HTMLBlob(status, buf.Bytes())
}

// home sends a person where they belong.
func (s *Service) home(c echo.Context) error {
	switch sess := sessionOf(c); {
	case sess == nil:
		return c.Redirect(http.StatusSeeOther, "/signin")
	case sess.Role == roleClinician:
		return c.Redirect(http.StatusSeeOther, "/vouch")
	}
	return c.Redirect(http.StatusSeeOther, "/staff")
}

func (s *Service) signInPage(c echo.Context) error {
	return s.render(c, "signin", page{})
}

func (s *Service) vouchPage(c echo.Context) error {
	sess := sessionOf(c)
	switch {
	case sess == nil:
		return c.Redirect(http.StatusSeeOther, "/signin")
	case sess.Role != roleClinician:
		return c.Redirect(http.StatusSeeOther, "/staff")
	}
	today := s.dayStart(s.now())
	return s.render(c, "vouch", page{
		Today: today.Format(time.DateOnly), OldestOnset: today.AddDate(0, 0, -MaxOnsetDays).Format(time.DateOnly),
		TodayShown: tr{langOf(c)}.Date(today),
		Quota:      s.quota(),
	})
}

// staffPage shows a card holder their own activity.
func (s *Service) staffPage(c echo.Context) error {
	sess := sessionOf(c)
	if sess == nil {
		return c.Redirect(http.StatusSeeOther, "/signin")
	}
	rows, err := audit.ByActor(c.Request().Context(), s.deps.DB.Pool(), sess.UZI, 50)
	if err != nil {
		return err
	}
	lang := langOf(c)
	p := page{}
	for _, r := range rows {
		a := activity{At: tr{lang}.DateTime(r.At.In(s.zone)), Action: i18n.T(lang, "audit.action."+r.Action)}
		if r.Reason != "" {
			a.Reason = tr{lang}.Reason(r.Reason)
		}
		p.Activity = append(p.Activity, a)
	}
	return s.render(c, "staff", p)
}
