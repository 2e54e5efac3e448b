package main

import (
	"context"
	"errors"
	"log/slog"
)

// STUB: replaced by the role's implementation.
func runCDN(ctx context.Context, log *slog.Logger) error {
	return errors.New("vouch cdn: not built yet")
}
