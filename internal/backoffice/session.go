package backoffice

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/server"
)

// Cookies. With an https origin the session cookie is __Host-: Secure,
// Path=/ and no Domain, so no other host or path can set or read it.
const (
	sessionCookie = "vouch_session"
	langCookie    = "vouch_lang"
	// challengeCookie holds the SHA-256 of the sign-in challenge this
	// browser asked for.
	challengeCookie = "vouch_challenge"
	sessionKey      = "vouch.session"
)

func (s *Service) sessionCookieName() string {
	if s.secure {
		return "__Host-" + sessionCookie
	}
	return sessionCookie
}

// language picks the request's language: the session's choice (read
// later, in loadSession), else the language cookie, else Accept-Language.
func (s *Service) language(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		lang := ""
		if ck, err := c.Cookie(langCookie); err == nil {
			lang = i18n.Default().Match(ck.Value)
			if lang == i18n.Source && !strings.HasPrefix(ck.Value, i18n.Source) {
				lang = ""
			}
		}
		if lang == "" {
			lang = i18n.FromAcceptLanguage(c.Request().Header.Get("Accept-Language"))
		}
		c.Set(server.LangKey, lang)
		return next(c)
	}
}

// ReasonHeartbeatMissed is the audit reason of a lock the server made.
const ReasonHeartbeatMissed = "heartbeat-missed"

// loadSession finds the request's session, if its cookie names a live one,
// and marks it seen: idle time starts again (not for a heartbeat, which
// the page sends by itself). A session whose heartbeat stopped is locked
// here, before anything is served to it.
func (s *Service) loadSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ck, err := c.Cookie(s.sessionCookieName())
		if err != nil || len(ck.Value) != 43 { // 32 bytes, base64url without padding
			return next(c)
		}
		token, err := b64url.DecodeString(ck.Value)
		if err != nil {
			return next(c)
		}
		now := s.now()
		sess, err := touchSession(c.Request().Context(), s.deps.DB.Pool(), hashOf(token), now,
			s.cfg.IdleTimeout, s.cfg.AbsoluteTimeout, c.Path() != heartbeatPath)
		switch {
		case errors.Is(err, errNotFound):
			s.clearSessionCookie(c)
		case err != nil:
			return err
		default:
			if !sess.locked() && now.Sub(sess.HeartbeatAt) > s.cfg.HeartbeatTimeout {
				if err := s.lockSilent(c.Request().Context(), sess.Hash, now); err != nil {
					return err
				}
				sess.LockedAt, sess.Pending, sess.PendingAt = &now, nil, nil
			}
			c.Set(sessionKey, sess)
			c.Set(server.LangKey, sess.Lang)
		}
		return next(c)
	}
}

// lockSilent locks the sessions (hash: that one; nil: every one) whose
// heartbeat is older than the configured timeout, each with its audit row.
func (s *Service) lockSilent(ctx context.Context, hash []byte, now time.Time) error {
	return s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
		uzis, err := lockSilent(ctx, tx, hash, now, s.cfg.HeartbeatTimeout)
		if err != nil {
			return err
		}
		for _, u := range uzis {
			if _, err := audit.Append(ctx, tx, audit.Entry{Actor: u, Action: audit.ActionLock, Reason: ReasonHeartbeatMissed}, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// heartbeatPath is the route the page reports its card on.
const heartbeatPath = "/api/heartbeat"

// whileLocked are the routes a locked session may still use: to unlock
// it, to sign in afresh or out, to lock (again), to pick a language.
var whileLocked = map[string]bool{
	"POST /api/challenge": true, "POST /api/unlock": true, "POST /api/signin": true, "POST /api/signout": true,
	"POST /api/lock": true, "POST /lang": true,
}

// lockGate refuses every page and action of a locked session but those of
// whileLocked: a page is the locked page (423), which shows nothing of
// the card holder; an action is refused with 423.
func (s *Service) lockGate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		sess := sessionOf(c)
		if sess == nil || !sess.locked() || whileLocked[c.Request().Method+" "+c.Path()] {
			return next(c)
		}
		if c.Request().Method == http.MethodGet || c.Request().Method == http.MethodHead {
			s.tally(c, entry(c, audit.ActionRequestRefused, errLocked.Code))
			return s.renderStatus(c, http.StatusLocked, "locked", page{})
		}
		return errLocked
	}
}

func sessionOf(c echo.Context) *session {
	sess, _ := c.Get(sessionKey).(*session)
	return sess
}

func langOf(c echo.Context) string {
	lang, _ := c.Get(server.LangKey).(string)
	if lang == "" {
		return i18n.Source
	}
	return lang
}

// Refusals of the session checks.
var (
	errSignedOut = &server.Error{Status: http.StatusUnauthorized, Code: "signed-out", Message: "session.signed-out"}
	errLocked    = &server.Error{Status: http.StatusLocked, Code: "locked", Message: "session.locked"}
)

// needSession returns the request's unlocked session, or the refusal.
func needSession(c echo.Context) (*session, error) {
	sess := sessionOf(c)
	switch {
	case sess == nil:
		return nil, errSignedOut
	case sess.locked():
		return nil, errLocked
	}
	return sess, nil
}

// newToken makes a session token: 32 random bytes, for the cookie.
func newToken() ([]byte, string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, "", err
	}
	return b, b64url.EncodeToString(b), nil
}

func (s *Service) challengeCookieName() string {
	if s.secure {
		return "__Host-" + challengeCookie
	}
	return challengeCookie
}

// setChallengeCookie keeps (or, with maxAge -1, clears) the hash of the
// browser's sign-in challenge.
func (s *Service) setChallengeCookie(c echo.Context, value string, maxAge int) {
	c.SetCookie(&http.Cookie{Name: s.challengeCookieName(), Value: value, Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteStrictMode, MaxAge: maxAge})
}

// challengeFromThisBrowser reports whether the browser's challenge cookie
// holds the hash of challenge, compared in constant time.
func (s *Service) challengeFromThisBrowser(c echo.Context, challenge []byte) bool {
	ck, err := c.Cookie(s.challengeCookieName())
	if err != nil {
		return false
	}
	h, err := b64url.DecodeString(ck.Value)
	if err != nil {
		return false
	}
	return equalHash(h, hashOf(challenge))
}

func (s *Service) setSessionCookie(c echo.Context, value string) {
	c.SetCookie(&http.Cookie{Name: s.sessionCookieName(), Value: value, Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteStrictMode, MaxAge: int(s.cfg.AbsoluteTimeout.Seconds())})
}

func (s *Service) clearSessionCookie(c echo.Context) {
	c.SetCookie(&http.Cookie{Name: s.sessionCookieName(), Value: "", Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
}
