// Package federate imports another site's published exports: it fetches
// the site's index and the files it has not imported yet, verifies each
// under the site's public key with export.Open, and merges the keys into
// the store as a union, so sites that import each other converge.
package federate

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
)

// Site is another site whose exports are imported.
type Site struct {
	Name    string // the origin its keys are stored under
	BaseURL string // where its index.txt is
	Keys    []*ecdsa.PublicKey
}

// Result is what one pull did.
type Result struct {
	Listed   int // files in the site's index
	Imported int // files imported this pull
	Keys     int // keys new to this store
	Revised  int // keys whose report type the site revised
	Refused  int // files that failed to fetch or verify
	Deferred int // files left for the next pull by a limit
}

// Config bounds one pull: a site that lists more is read over several
// pulls, never all at once.
type Config struct {
	MaxFiles int `env:"VOUCH_FEDERATE_MAX_FILES, default=500"`
	MaxKeys  int `env:"VOUCH_FEDERATE_MAX_KEYS, default=2000000"`
	// Sites are pulled every Interval by `vouch federate` and `vouch all`
	// (Run); none configured, nothing is pulled on a schedule.
	Sites    Sites         `env:"VOUCH_FEDERATE_SITES"`
	Interval time.Duration `env:"VOUCH_FEDERATE_INTERVAL, default=5m"`
}

// ErrLimit is a pull that stopped at one of its limits; the files left
// are fetched by the next pull.
var ErrLimit = errors.New("federate: pull limit reached")

// Validate fills the defaults and checks c.
func (c *Config) Validate() error {
	if c.MaxFiles == 0 {
		c.MaxFiles = 500
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = 2000000
	}
	if c.Interval == 0 {
		c.Interval = 5 * time.Minute
	}
	if c.MaxFiles < 1 || c.MaxFiles > 100000 {
		return fmt.Errorf("VOUCH_FEDERATE_MAX_FILES must be 1..100000, got %d", c.MaxFiles)
	}
	if c.MaxKeys < 1 || c.MaxKeys > 100000000 {
		return fmt.Errorf("VOUCH_FEDERATE_MAX_KEYS must be 1..100000000, got %d", c.MaxKeys)
	}
	// A site's index is read at every pull: more often than every second
	// is load on its origin for nothing; less than daily leaves phones
	// without its keys for too long.
	if c.Interval < time.Second || c.Interval > 24*time.Hour {
		return fmt.Errorf("VOUCH_FEDERATE_INTERVAL must be 1s..24h, got %v", c.Interval)
	}
	return nil
}

// Puller imports sites' exports into the store.
type Puller struct {
	db     *database.DB
	client *http.Client
	cfg    Config
	now    func() time.Time
}

// New makes a puller bounded by cfg (validated here); client nil means one
// with a 60-second timeout.
func New(db *database.DB, client *http.Client, cfg Config) (*Puller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil {
		client = &http.Client{Timeout: 60 * time.Second}
	}
	return &Puller{db: db, client: client, cfg: cfg, now: time.Now}, nil
}

// ValidName is a site name: it becomes the keys' origin, so it must not be
// empty or one of this site's own (” and 'padding').
func ValidName(name string) error {
	if name == "" || name == "padding" || len(name) > 64 || strings.ContainsAny(name, " \t\r\n/") {
		return fmt.Errorf("federate: site name %q: 1..64 characters, no spaces or '/', not \"padding\"", name)
	}
	return nil
}

// Pull imports the files of s's index not imported before, at most
// MaxFiles files and MaxKeys keys; past a limit it stops and returns
// ErrLimit with what is left, for the next pull. A file that does not
// verify is refused and stores nothing; the others still import. The
// error joins every refusal.
func (p *Puller) Pull(ctx context.Context, s Site) (Result, error) {
	var res Result
	if err := ValidName(s.Name); err != nil {
		return res, err
	}
	if len(s.Keys) == 0 {
		return res, errors.New("federate: no public key for the site")
	}
	base, err := url.Parse(strings.TrimSuffix(s.BaseURL, "/") + "/")
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return res, fmt.Errorf("federate: base URL %q is not an http(s) URL", s.BaseURL)
	}
	body, err := p.get(ctx, base.JoinPath(export.IndexName), export.MaxIndexSize)
	if err != nil {
		return res, fmt.Errorf("federate: %s index: %w", s.Name, err)
	}
	paths, err := export.ReadIndex(strings.NewReader(string(body)))
	if err != nil {
		return res, fmt.Errorf("federate: %s index: %w", s.Name, err)
	}
	res.Listed = len(paths)
	done, err := p.imported(ctx, s.Name, paths)
	if err != nil {
		return res, err
	}
	var errs []error
	var todo []string
	for _, path := range paths {
		if !done[path] {
			todo = append(todo, path)
		}
	}
	keys := 0
	for i, path := range todo {
		if i == p.cfg.MaxFiles {
			res.Deferred = len(todo) - i
			errs = append(errs, fmt.Errorf("%w: site %s lists %d new files, more than VOUCH_FEDERATE_MAX_FILES (%d) a pull; %d wait for the next pull",
				ErrLimit, s.Name, len(todo), p.cfg.MaxFiles, res.Deferred))
			break
		}
		n, err := p.importFile(ctx, s, base, path, p.cfg.MaxKeys-keys)
		if errors.Is(err, errImportedElsewhere) {
			continue
		}
		if errors.Is(err, ErrLimit) {
			res.Deferred = len(todo) - i
			errs = append(errs, fmt.Errorf("federate: %s %s: %w; %d files wait for the next pull", s.Name, path, err, res.Deferred))
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			res.Refused++
			errs = append(errs, fmt.Errorf("federate: %s %s: %w", s.Name, path, err))
			continue
		}
		res.Imported++
		res.Keys += n.added
		res.Revised += n.revised
		keys += n.read
	}
	return res, errors.Join(errs...)
}

func (p *Puller) imported(ctx context.Context, site string, paths []string) (map[string]bool, error) {
	rows, err := p.db.Pool().Query(ctx, `select path from federate_imports where site = $1 and path = any($2)`, site, paths)
	if err != nil {
		return nil, fmt.Errorf("federate: imported files: %w", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("federate: imported files: %w", err)
	}
	done := map[string]bool{}
	for _, path := range got {
		done[path] = true
	}
	return done, nil
}

func (p *Puller) get(ctx context.Context, u *url.URL, max int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u.Redacted(), resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", u.Redacted(), max)
	}
	return b, nil
}

// errImportedElsewhere is a file another puller on the same store
// recorded first: this import rolls back and counts for nothing.
var errImportedElsewhere = errors.New("federate: imported by another puller meanwhile")

// imported is what one file brought.
type imported struct{ read, added, revised int }

// ErrFuture is a site's key that starts after now: no honest export holds
// one.
var ErrFuture = errors.New("federate: key starts in the future")

// revisable is when a site's revision of a key's report type is taken
// (as Google's key server allows): a clinical diagnosis may be confirmed
// or revoked, a self-report confirmed, diagnosed or revoked; nothing else
// changes, and a key is revised once.
const revisable = `((k.report_type = 2 and r.report_type in (1, 5)) or (k.report_type = 3 and r.report_type in (1, 2, 5)))`

// importFile fetches, verifies and merges one file in one transaction: the
// keys, their revisions and the record that the file was imported commit
// together. A file of more than maxKeys keys is left with ErrLimit.
func (p *Puller) importFile(ctx context.Context, s Site, base *url.URL, path string, maxKeys int) (imported, error) {
	var got imported
	b, err := p.get(ctx, base.JoinPath(path), export.MaxZipSize)
	if err != nil {
		return got, err
	}
	// export.Open checks the signature before it parses export.bin.
	f, err := export.Open(b, s.Keys)
	if err != nil {
		return got, err
	}
	got.read = len(f.Keys) + len(f.Revised)
	if got.read > maxKeys {
		return got, fmt.Errorf("%w: %d keys would pass VOUCH_FEDERATE_MAX_KEYS a pull", ErrLimit, got.read)
	}
	now := p.now()
	latest := exposure.IntervalNumber(now)
	for _, l := range [][]export.Key{f.Keys, f.Revised} {
		for _, k := range l {
			if k.RollingStart > latest {
				return got, fmt.Errorf("%w: a key starts %s, after %s", ErrFuture, k.Start().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
			}
		}
	}
	received := exposure.Coarse(now)
	err = p.db.InTx(ctx, func(tx pgx.Tx) error {
		// Copies importing the same file wait for each other here rather
		// than deadlock on its keys; the later one finds it recorded.
		var done bool
		if err := tx.QueryRow(ctx, `select pg_advisory_xact_lock(hashtextextended('federate/' || $1 || '/' || $2, 0)),
			exists (select from federate_imports where site = $1 and path = $2)`, s.Name, path).Scan(nil, &done); err != nil {
			return fmt.Errorf("federate: %w", err)
		}
		if done {
			return errImportedElsewhere
		}
		if _, err := tx.Exec(ctx, `create temporary table federate_keys (like exposure_keys) on commit drop`); err != nil {
			return fmt.Errorf("federate: %w", err)
		}
		copyKeys := func(table string, keys []export.Key) error {
			i := 0
			src := pgx.CopyFromFunc(func() ([]any, error) {
				if i == len(keys) {
					return nil, nil
				}
				k := keys[i]
				i++
				var onset any
				if k.HasOnset {
					onset = int16(k.DaysSinceOnset)
				}
				return []any{k.Data[:], k.RollingStart, k.RollingPeriod, int16(k.TransmissionRisk), onset, int16(k.ReportType), received, s.Name}, nil
			})
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{table},
				[]string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "days_since_onset", "report_type", "received_hour", "origin"}, src); err != nil {
				return fmt.Errorf("federate: copy keys: %w", err)
			}
			return nil
		}
		if err := copyKeys("federate_keys", f.Keys); err != nil {
			return err
		}
		// The report type as the site gave it: a REVOKED or SELF_REPORT key
		// stays one.
		tag, err := tx.Exec(ctx, `insert into exposure_keys
			(key_data, rolling_start, rolling_period, transmission_risk, days_since_onset, report_type, received_hour, origin)
			select key_data, rolling_start, rolling_period, transmission_risk, days_since_onset, report_type, received_hour, origin
			from federate_keys on conflict (key_data) do nothing`)
		if err != nil {
			return fmt.Errorf("federate: merge keys: %w", err)
		}
		got.added = int(tag.RowsAffected())
		if len(f.Revised) > 0 {
			if _, err := tx.Exec(ctx, `create temporary table federate_revised (like exposure_keys) on commit drop`); err != nil {
				return fmt.Errorf("federate: %w", err)
			}
			if err := copyKeys("federate_revised", f.Revised); err != nil {
				return err
			}
			// Only the site the key came from revises it. Not published
			// yet: the key is published with its new type. Published: the
			// revision goes out in a later file's revised_keys.
			unpublished, err := tx.Exec(ctx, `update exposure_keys k set report_type = r.report_type
				from federate_revised r where k.key_data = r.key_data and k.origin = $1
				and k.batch_id is null and k.revised_report_type is null and `+revisable, s.Name)
			if err != nil {
				return fmt.Errorf("federate: revise keys: %w", err)
			}
			published, err := tx.Exec(ctx, `update exposure_keys k set revised_report_type = r.report_type
				from federate_revised r where k.key_data = r.key_data and k.origin = $1
				and k.batch_id is not null and k.revised_report_type is null and `+revisable, s.Name)
			if err != nil {
				return fmt.Errorf("federate: revise keys: %w", err)
			}
			got.revised = int(unpublished.RowsAffected() + published.RowsAffected())
		}
		// Another copy of the role (a second machine, `vouch all` beside
		// `vouch federate`) may import the same file at the same moment:
		// the second to record it rolls back, neither fails.
		tag, err = tx.Exec(ctx, `insert into federate_imports (site, path, keys) values ($1, $2, $3)
			on conflict (site, path) do nothing`, s.Name, path, got.read)
		if err != nil {
			return fmt.Errorf("federate: record import: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return errImportedElsewhere
		}
		return nil
	})
	return got, err
}
