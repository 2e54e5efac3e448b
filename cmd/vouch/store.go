package main

import (
	"context"
	"errors"
	"log/slog"
)

// STUB: replaced by the role's implementation.
func runStore(ctx context.Context, log *slog.Logger) error {
	return errors.New("vouch store: not built yet")
}
