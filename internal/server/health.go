package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sort"
	"time"
)

type health struct {
	checks map[string]Checker
	log    *slog.Logger
}

// live answers as long as the process serves HTTP.
func (h *health) live(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz runs every check with a short deadline. The body names failing
// checks but not their errors, which go to the log.
func (h *health) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
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
	writeJSON(w, code, map[string]any{"ready": code == http.StatusOK, "checks": status})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
