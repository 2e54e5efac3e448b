package server

import (
	"context"
	"log/slog"
	"net/http"
	"sort"
	"time"

	"github.com/labstack/echo/v4"
)

type health struct {
	checks map[string]Checker
	log    *slog.Logger
}

// live answers as long as the process serves HTTP.
func (h *health) live(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz runs every check with a short deadline. The body names failing
// checks but not their errors, which go to the log.
func (h *health) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	names := make([]string, 0, len(h.checks))
	for n := range h.checks {
		names = append(names, n)
	}
	sort.Strings(names)
	status, code := map[string]string{}, http.StatusOK
	for _, n := range names {
		if err := h.checks[n].Check(ctx); err != nil {
			h.log.Warn("readiness check failed", "check", n, "err", err)
			status[n], code = "fail", http.StatusServiceUnavailable
			continue
		}
		status[n] = "ok"
	}
	return c.JSON(code, map[string]any{"ready": code == http.StatusOK, "checks": status})
}
