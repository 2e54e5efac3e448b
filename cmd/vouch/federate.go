package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
)

// STUB: replaced by the role's implementation.
func runFederate(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	return errors.New("vouch federate: not built yet")
}
