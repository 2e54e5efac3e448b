package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/retention"
	"github.com/vouch-nl/vouch/internal/settings"
)

// settingsRules are the rules of the admin's settings from a role's
// configuration: the hard limits (VOUCH_SETTINGS_*), the daily quota's
// default, the register's bound (VOUCH_LICENSE_MAX_MIRROR_AGE), the card
// profile's professions and the catalogues' languages.
func settingsRules(cfg settings.Config, quota int, lcfg license.Config, professions []string) (settings.Rules, error) {
	return settings.NewRules(cfg, settings.Bounds{DailyQuota: quota, MaxRegisterStaleness: lcfg.MaxMirrorAge,
		Professions: professions, Languages: i18n.Default().Languages()})
}

// openSettings reads the settings once; the store's Run keeps them current.
func openSettings(ctx context.Context, cfg settings.Config, rules settings.Rules, db *database.DB, log *slog.Logger) (*settings.Store, error) {
	refresh := cfg.Refresh
	if refresh == 0 {
		refresh = 30 * time.Second
	}
	return settings.Open(ctx, db.Pool(), rules, refresh, log.With("part", "settings"))
}

// cleanupSettings has the cleaner read the admin's retention periods,
// afresh at every rule it runs (hourly: no store loop is needed). Only the
// retention rules matter to the cleanup; the others get neutral bounds.
func cleanupSettings(c *retention.Cleaner, cfg settings.Config, db *database.DB, log *slog.Logger) error {
	rules, err := settingsRules(cfg, 1, license.Config{MaxMirrorAge: 24 * time.Hour}, nil)
	if err != nil {
		return err
	}
	store, err := openSettings(context.Background(), cfg, rules, db, log)
	if err != nil {
		return err
	}
	c.SetPeriods(func() retention.Periods {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := store.Reload(ctx); err != nil {
			log.Warn("cleanup: reading the settings failed; the last read stay in effect", "err", err)
		}
		v := store.Current()
		return retention.Periods{Authorizations: v.AuthorizationsKeep, AccessLogs: v.AccessLogsKeep, AuditYears: v.AuditKeepYears}
	})
	return nil
}

// checkSettings is startBackoffice's check of the settings' hard limits
// and defaults (VOUCH_SETTINGS_*, VOUCH_VOUCH_DAILY_QUOTA,
// VOUCH_LICENSE_MAX_MIRROR_AGE), for vouch config check.
func checkSettings(cfg backoffice.Config, lcfg license.Config, tr protocol.Trust) error {
	_, err := settingsRules(cfg.Settings, cfg.DailyQuota, lcfg, tr.Profile.VouchProfessions())
	return err
}
