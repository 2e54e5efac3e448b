package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/vouch-nl/vouch/internal/cdn"
)

// runCDN is `vouch cdn`: the export directory's static origin.
func runCDN(ctx context.Context, log *slog.Logger) error {
	var cfg cdn.Config
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	s, err := startCDN(cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	err = s.Run(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// startCDN checks cfg and opens the export directory; the caller runs the
// origin (s.Run) and closes it. `vouch all` starts it beside the others.
func startCDN(cfg cdn.Config, log *slog.Logger) (*cdn.Server, error) {
	return cdn.New(cfg, log.With("role", "cdn"))
}
