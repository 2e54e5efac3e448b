package backoffice

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/server"
)

var b64url = base64.RawURLEncoding

var (
	errBadRequest  = &server.Error{Status: http.StatusBadRequest, Code: "bad-request", Message: "error.400"}
	errUnsupported = &server.Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported-media-type", Message: "error.415"}
	errRateLimited = &server.Error{Status: http.StatusTooManyRequests, Code: "rate-limited", Message: "error.429"}
	errForbidden   = &server.Error{Status: http.StatusForbidden, Code: "cross-origin", Message: "error.cross-origin"}
)

// requireJSON refuses API requests that are not JSON: a form on another
// site can post urlencoded bodies without asking, but not JSON.
func requireJSON(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		mt, _, err := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType))
		if err != nil || mt != echo.MIMEApplicationJSON {
			return errUnsupported
		}
		return next(c)
	}
}

// bind decodes the JSON body strictly into v: unknown fields, trailing
// data and wrong types are a bad request. []byte fields are base64.
func bind(c echo.Context, v any) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &server.Error{Status: http.StatusBadRequest, Code: "bad-request", Message: "error.400", Cause: err}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &server.Error{Status: http.StatusBadRequest, Code: "bad-request", Message: "error.400", Cause: errors.New("data after the JSON value")}
	}
	return nil
}

// crossOrigin answers a state-changing request another site's page made
// (http.CrossOriginProtection found it): refused, counted for its
// minute's audit row, nothing done.
func (s *Service) crossOrigin(w http.ResponseWriter, r *http.Request) {
	c := s.echoContext(w, r)
	s.tally(c, audit.Entry{Action: audit.ActionRequestRefused, Reason: errForbidden.Code, Subject: r.Method + " " + r.URL.Path})
	c.Error(errForbidden)
}
