package server

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"vouch/internal/i18n"
)

// Error is an error with what the user may see: a status, a stable code and
// a message per language. The cause is logged, never sent.
type Error struct {
	Status int
	Code   string
	Text   i18n.Text
	Cause  error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Code + ": " + e.Cause.Error()
	}
	return e.Code
}

func (e *Error) Unwrap() error { return e.Cause }

// Message picks the text for an Accept-Language header.
func (e *Error) Message(acceptLanguage string) string {
	return e.Text.In(i18n.FromAcceptLanguage(acceptLanguage))
}

var internalError = &Error{Status: http.StatusInternalServerError, Code: "internal",
	Text: i18n.Text{EN: "Something went wrong on our side. Please try again.", NL: "Er ging bij ons iets mis. Probeer het opnieuw."}}

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
		ve = &Error{Status: he.Code, Code: strings.ToLower(strings.ReplaceAll(http.StatusText(he.Code), " ", "-")),
			Text: i18n.Text{EN: http.StatusText(he.Code)}}
	default:
		ve = internalError
	}
	if ve.Status >= 500 {
		s.log.Error("request failed", "request_id", reqID, "route", c.Path(), "err", err)
	} else if ve.Cause != nil {
		s.log.Info("request refused", "request_id", reqID, "route", c.Path(), "code", ve.Code, "err", ve.Cause)
	}
	body := map[string]string{"error": ve.Code, "message": ve.Message(c.Request().Header.Get("Accept-Language")), "request_id": reqID}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ve.Status)
		return
	}
	_ = c.JSON(ve.Status, body)
}
