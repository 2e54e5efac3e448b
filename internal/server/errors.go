package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/i18n"
)

// Error is an error with what the user may see: a status, a stable code and
// a message of the catalogues in internal/i18n. The cause is logged, never
// sent.
type Error struct {
	Status  int
	Code    string
	Message string         // message id; "error.<status>" when empty
	Data    map[string]any // values the message names
	Cause   error
}

// LangKey is the echo context key under which a feature keeps the
// request's language (a session's choice); Accept-Language otherwise.
const LangKey = "vouch.lang"

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Code + ": " + e.Cause.Error()
	}
	return e.Code
}

func (e *Error) Unwrap() error { return e.Cause }

// Text is the message for an Accept-Language header.
func (e *Error) Text(acceptLanguage string) string {
	return e.TextIn(i18n.FromAcceptLanguage(acceptLanguage))
}

// TextIn is the message in lang.
func (e *Error) TextIn(lang string) string {
	id := e.Message
	if id == "" {
		id = fmt.Sprintf("error.%d", e.Status)
		if !i18n.Default().Has(i18n.Source, id) {
			id = "error.request"
		}
	}
	return i18n.T(lang, id, e.Data)
}

var internalError = &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "error.internal"}

// handleError is the one place errors become responses.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	reqID := c.Response().Header().Get(echo.HeaderXRequestID)
	var ve *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ve):
	case errors.As(err, &he):
		ve = &Error{Status: he.Code, Code: strings.ToLower(strings.ReplaceAll(http.StatusText(he.Code), " ", "-"))}
	default:
		ve = internalError
	}
	if ve.Status >= 500 {
		s.log.Error("request failed", "request_id", reqID, "route", c.Path(), "err", err)
	} else if ve.Cause != nil {
		s.log.Info("request refused", "request_id", reqID, "route", c.Path(), "code", ve.Code, "err", ve.Cause)
	}
	lang, _ := c.Get(LangKey).(string)
	if lang == "" {
		lang = i18n.FromAcceptLanguage(c.Request().Header.Get("Accept-Language"))
	}
	body := map[string]string{"error": ve.Code, "message": ve.TextIn(lang), "request_id": reqID}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ve.Status)
		return
	}
	_ = c.JSON(ve.Status, body)
}
