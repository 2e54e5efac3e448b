// Package i18n holds every text Vouch shows a person, in message catalogues
// (locales/<language>.json, one flat object of message id → text, Go
// template syntax for values), and picks the language for a request or a
// terminal. A language is added by adding its file (and, for the back
// office, its date layout in internal/backoffice/format.go and the
// extension's web/extension/_locales, whose tests say so). English is the
// source language; every other file must hold exactly its ids
// (TestCataloguesComplete, which also names the languages offered: English,
// Dutch, and French, German and Italian for a Swiss deployment).
//
// Catalogues are read with github.com/nicksnyder/go-i18n, which matches
// languages (x/text/language) and knows plural rules.
package i18n

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	goi18n "github.com/nicksnyder/go-i18n/v2/i18n"
	"golang.org/x/text/language"
)

//go:embed locales
var locales embed.FS

// Source is the language every message is written in first, and the one a
// missing translation falls back to.
const Source = "en"

// Catalog is a set of catalogues, one per language.
type Catalog struct {
	bundle  *goi18n.Bundle
	langs   []string // Source first, then by name
	matcher language.Matcher
	ids     map[string]map[string]bool // language → message ids
	// texts are the messages as written (templates not filled in), every
	// plural form: language → id → text, for the completeness check.
	texts map[string]map[string]string
}

// std is the program's catalogue: the embedded files, which are as fixed
// as the code. It is read at start, so a broken file stops every binary and
// every test at once.
var std = must(Load(locales))

func must(c *Catalog, err error) *Catalog {
	if err != nil {
		panic(err)
	}
	return c
}

// Load reads every locales/*.json in fsys, and the catalogues of one part
// of the pages each, locales/<part>/<language>.json (so that the parts
// grow without touching one file): a part's file joins its language's
// catalogue, and a message id is defined once in all.
func Load(fsys fs.FS) (*Catalog, error) {
	files, err := fs.Glob(fsys, "locales/*.json")
	if err != nil {
		return nil, err
	}
	parts, err := fs.Glob(fsys, "locales/*/*.json")
	if err != nil {
		return nil, err
	}
	files = append(files, parts...)
	c := &Catalog{bundle: goi18n.NewBundle(language.English), ids: map[string]map[string]bool{}, texts: map[string]map[string]string{}}
	c.bundle.RegisterUnmarshalFunc("json", json.Unmarshal)
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		mf, err := c.bundle.ParseMessageFileBytes(b, path.Base(f))
		if err != nil {
			return nil, fmt.Errorf("i18n: %s: %w", f, err)
		}
		lang := strings.TrimSuffix(path.Base(f), ".json")
		if mf.Tag.String() != lang {
			return nil, fmt.Errorf("i18n: %s: a catalogue's name is its language tag (%s.json)", f, mf.Tag)
		}
		ids, texts := c.ids[lang], c.texts[lang]
		if ids == nil {
			if path.Dir(f) != "locales" {
				return nil, fmt.Errorf("i18n: %s: no locales/%s.json for this part to join", f, lang)
			}
			ids, texts = map[string]bool{}, map[string]string{}
			c.ids[lang], c.texts[lang] = ids, texts
			c.langs = append(c.langs, lang)
		}
		for _, m := range mf.Messages {
			if ids[m.ID] {
				return nil, fmt.Errorf("i18n: %s: message %q is defined twice", f, m.ID)
			}
			ids[m.ID] = true
			texts[m.ID] = strings.Join([]string{m.Zero, m.One, m.Two, m.Few, m.Many, m.Other}, "\n")
		}
	}
	if c.ids[Source] == nil {
		return nil, fmt.Errorf("i18n: no %s.json catalogue", Source)
	}
	slices.SortFunc(c.langs, func(a, b string) int {
		switch {
		case a == Source:
			return -1
		case b == Source:
			return 1
		}
		return strings.Compare(a, b)
	})
	tags := make([]language.Tag, len(c.langs))
	for i, l := range c.langs {
		tags[i] = language.Make(l)
	}
	c.matcher = language.NewMatcher(tags)
	return c, nil
}

// Default is the embedded catalogue.
func Default() *Catalog { return std }

// Languages lists the languages with a catalogue, the source first.
func (c *Catalog) Languages() []string { return slices.Clone(c.langs) }

// Has reports whether lang's catalogue holds id itself (no fallback).
func (c *Catalog) Has(lang, id string) bool { return c.ids[lang][id] }

// IDs lists the source catalogue's message ids.
func (c *Catalog) IDs() []string {
	out := make([]string, 0, len(c.ids[Source]))
	for id := range c.ids[Source] {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// T returns message id in lang, filled in from data; the source language's
// text when lang has none, and the id itself when no catalogue has it
// (better a code support staff can look up than nothing).
func (c *Catalog) T(lang, id string, data ...map[string]any) string {
	lc := &goi18n.LocalizeConfig{MessageID: id}
	if len(data) > 0 {
		lc.TemplateData = data[0]
	}
	for _, l := range []string{lang, Source} {
		if s, err := goi18n.NewLocalizer(c.bundle, l).Localize(lc); err == nil && s != "" {
			return s
		}
	}
	return id
}

// Match picks the best of the catalogue's languages for preferences given
// as a language ("nl"), a tag ("nl-BE") or an Accept-Language header, the
// first preference first; the source language when none matches.
func (c *Catalog) Match(prefs ...string) string {
	for _, p := range prefs {
		if p == "" {
			continue
		}
		tags, _, err := language.ParseAcceptLanguage(p)
		if err != nil {
			continue
		}
		for _, t := range tags {
			// Each preference on its own: a matcher weighs a whole list
			// and may prefer the source over a later exact match.
			if _, i, conf := c.matcher.Match(t); conf >= language.High {
				return c.langs[i]
			}
		}
	}
	return Source
}

// T returns message id in lang from the embedded catalogue (Catalog.T).
func T(lang, id string, data ...map[string]any) string { return std.T(lang, id, data...) }

// FromAcceptLanguage picks a language for an Accept-Language header.
func FromAcceptLanguage(header string) string { return std.Match(header) }

// FromEnv picks the language of a terminal from LC_ALL, LC_MESSAGES or LANG
// (nl_NL.UTF-8 is Dutch); the source language otherwise.
func FromEnv() string {
	for _, k := range []string{"LC_ALL", "LC_MESSAGES", "LANG"} {
		if v := os.Getenv(k); v != "" {
			v, _, _ = strings.Cut(v, ".")
			v, _, _ = strings.Cut(v, "@")
			return std.Match(strings.ReplaceAll(v, "_", "-"))
		}
	}
	return Source
}
