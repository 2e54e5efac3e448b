package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vouch-nl/vouch/internal/database"
)

type migrateConfig struct {
	Database database.Config
}

// runMigrate creates the database when missing and applies the migrations.
// It is safe to run from several machines at once: the migrator holds a
// PostgreSQL advisory lock.
func runMigrate(ctx context.Context, log *slog.Logger) error {
	var cfg migrateConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if err := migrate(ctx, cfg.Database); err != nil {
		return err
	}
	log.Info("migrations applied")
	return nil
}

// migrate creates the database only when it is missing: asking the
// maintenance database first would cost every start a connection.
func migrate(ctx context.Context, cfg database.Config) error {
	err := database.Migrate(ctx, cfg.URL)
	if database.IsMissingDatabase(err) {
		if err := database.EnsureDatabase(ctx, cfg.URL); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		err = database.Migrate(ctx, cfg.URL)
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}
