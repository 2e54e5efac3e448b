package stats

import (
	"errors"
	"fmt"
	"time"
)

// Config is `vouch stats`'s configuration.
type Config struct {
	// Interval is how often the job looks for days to count and writes
	// the public files.
	Interval time.Duration `env:"VOUCH_STATS_INTERVAL, default=1h"`
	// DayZone is whose days are counted: the back office's (the daily
	// quota's day), so that both say the same of a day.
	DayZone string `env:"VOUCH_VOUCH_DAY_ZONE, default=Europe/Amsterdam"`
}

// Zone is the zone DayZone names; Validate checks it loads.
func (c Config) Zone() (*time.Location, error) {
	z, err := time.LoadLocation(c.DayZone)
	if err != nil {
		return nil, fmt.Errorf("VOUCH_VOUCH_DAY_ZONE: %w", err)
	}
	return z, nil
}

// Validate says what is wrong with c, all of it.
func (c Config) Validate() error {
	var errs []error
	if c.Interval < time.Minute || c.Interval > 6*time.Hour {
		// Days are counted within the first Interval after they end; the
		// keys they count are deleted soon after.
		errs = append(errs, fmt.Errorf("VOUCH_STATS_INTERVAL must be 1m..6h, got %s", c.Interval))
	}
	if _, err := c.Zone(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
