package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/stats"
)

// statsConfig is the configuration of `vouch stats`: the database, its
// own settings, and where the aggregator writes (the public files go
// beside the exports: VOUCH_EXPORT_DIR, and VOUCH_EXPORT_TARGET's bucket).
type statsConfig struct {
	Database database.Config
	Stats    stats.Config
	Export   export.Config
}

const statsUsage = "usage: vouch stats [-once]"

// runStats is `vouch stats`: count the days that ended and are not counted
// yet, then write stats.json and stats.csv to the origin; once (-once, for
// cron) or every VOUCH_STATS_INTERVAL. Copies may run side by side: a day
// is counted in one transaction under a lock, the same rows each time.
func runStats(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	fs.Usage = func() { _, _ = fs.Output().Write([]byte(statsUsage + "\n")); fs.PrintDefaults() }
	once := fs.Bool("once", false, "count and publish once and exit (status 1 when it failed)")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitError(2)
	}
	var cfg statsConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	if err := cfg.Stats.Validate(); err != nil {
		return err
	}
	if err := migrate(ctx, cfg.Database); err != nil {
		return err
	}
	db, err := database.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer db.Close()
	job, err := startStats(cfg.Stats, cfg.Export, db, log)
	if err != nil {
		return err
	}
	if *once {
		return job.run(ctx, time.Now())
	}
	err = job.loop(ctx, cfg.Stats.Interval)
	log.Info("stopped")
	return err
}

// startStats makes the statistics job of `vouch stats` and `vouch all`
// (cfg validated): it counts in db and publishes beside the exports.
func startStats(cfg stats.Config, exp export.Config, db *database.DB, log *slog.Logger) (statsJob, error) {
	zone, err := cfg.Zone()
	if err != nil {
		return statsJob{}, err
	}
	var target export.Target
	if exp.Target != "" {
		t, err := export.OpenTarget(exp)
		if err != nil {
			return statsJob{}, err
		}
		target = t
	}
	return statsJob{counter: stats.NewCounter(db.Pool(), zone), db: db, zone: zone, dir: exp.Dir, target: target,
		log: log.With("role", "stats")}, nil
}

type statsJob struct {
	counter *stats.Counter
	db      *database.DB
	zone    *time.Location
	dir     string        // "": no directory origin
	target  export.Target // nil: no bucket
	log     *slog.Logger
}

// loop runs the job every interval until ctx ends (then nil); a failed run
// is logged and tried again at the next.
func (j statsJob) loop(ctx context.Context, interval time.Duration) error {
	for {
		if err := j.run(ctx, time.Now()); err != nil && ctx.Err() == nil {
			j.log.Error("statistics not counted or published", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// run counts the days due, then writes the public files.
func (j statsJob) run(ctx context.Context, now time.Time) error {
	days, err := j.counter.Compute(ctx, now)
	if len(days) > 0 {
		j.log.Info("days counted", "days", len(days), "last", days[len(days)-1].Format(time.DateOnly))
	}
	if err != nil {
		return err
	}
	if j.dir == "" && j.target == nil {
		return nil
	}
	jsonFile, csvFile, err := stats.PublicFiles(ctx, j.db.Pool(), now, j.zone)
	if err != nil {
		return err
	}
	files := []struct {
		name, contentType string
		body              []byte
	}{{stats.FileJSON, "application/json", jsonFile}, {stats.FileCSV, "text/csv; charset=utf-8", csvFile}}
	for _, f := range files {
		if j.dir != "" {
			if err := writeFileAtomic(j.dir, f.name, f.body); err != nil {
				return err
			}
		}
		if j.target != nil {
			if err := export.PutPublicFile(ctx, j.target, f.name, f.body, f.contentType); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeFileAtomic replaces dir/name whole: the origin serves the old file
// or the new one, never a part.
func writeFileAtomic(dir, name string, body []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return fmt.Errorf("stats: write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // gone after the rename; removed after a failure
	if _, err := tmp.Write(body); err != nil {
		tmp.Close()
		return fmt.Errorf("stats: write %s: %w", name, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("stats: write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("stats: write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("stats: write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("stats: write %s: %w", name, err)
	}
	return nil
}

// checkStats is `vouch config check stats`: what runStats checks before it
// starts anything.
func checkStats(_ context.Context, load func(any) error) []error {
	var cfg statsConfig
	if err := load(&cfg); err != nil {
		return []error{err}
	}
	errs := []error{checkDatabase(cfg.Database), cfg.Stats.Validate()}
	if cfg.Export.Target != "" {
		if _, err := export.OpenTarget(cfg.Export); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
