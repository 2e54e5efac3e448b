package main

import (
	"context"
	"errors"
	"log/slog"
)

// STUB: replaced by the role's implementation.
func runIngest(ctx context.Context, log *slog.Logger) error {
	return errors.New("vouch ingest: not built yet")
}
