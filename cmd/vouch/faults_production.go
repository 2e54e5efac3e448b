//go:build production

package main

import (
	"log/slog"

	"github.com/vouch-nl/vouch/internal/export"
)

// exportFaults: a production build injects no faults.
func exportFaults(*export.Aggregator, *slog.Logger) error { return nil }

// faultVars: a production build reads no fault variable (so `vouch config
// check` reports one as unknown).
func faultVars() []string { return nil }
