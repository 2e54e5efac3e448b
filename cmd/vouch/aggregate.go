package main

import (
	"context"
	"errors"
	"log/slog"
)

// STUB: replaced by the role's implementation.
func runAggregate(ctx context.Context, log *slog.Logger, args []string) error {
	return errors.New("vouch aggregate: not built yet")
}
