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
	Refused  int // files that failed to fetch or verify
}

// Puller imports sites' exports into the store.
type Puller struct {
	db     *database.DB
	client *http.Client
	now    func() time.Time
}

// New makes a puller; client nil means one with a 60-second timeout.
func New(db *database.DB, client *http.Client) *Puller {
	if client == nil {
		client = &http.Client{Timeout: 60 * time.Second}
	}
	return &Puller{db: db, client: client, now: time.Now}
}

// ValidName is a site name: it becomes the keys' origin, so it must not be
// empty or one of this site's own (” and 'padding').
func ValidName(name string) error {
	if name == "" || name == "padding" || len(name) > 64 || strings.ContainsAny(name, " \t\r\n/") {
		return fmt.Errorf("federate: site name %q: 1..64 characters, no spaces or '/', not \"padding\"", name)
	}
	return nil
}

// Pull imports every file of s's index not imported before. A file that
// does not verify is refused and stores nothing; the others still import.
// The error joins every refusal.
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
	for _, path := range paths {
		if done[path] {
			continue
		}
		n, err := p.importFile(ctx, s, base, path)
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			res.Refused++
			errs = append(errs, fmt.Errorf("federate: %s %s: %w", s.Name, path, err))
			continue
		}
		res.Imported++
		res.Keys += n
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

// importFile fetches, verifies and merges one file in one transaction: the
// keys and the record that the file was imported commit together.
func (p *Puller) importFile(ctx context.Context, s Site, base *url.URL, path string) (int, error) {
	b, err := p.get(ctx, base.JoinPath(path), export.MaxZipSize)
	if err != nil {
		return 0, err
	}
	f, err := export.Open(b, s.Keys)
	if err != nil {
		return 0, err
	}
	received := exposure.Coarse(p.now())
	var added int
	err = p.db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `create temporary table federate_keys (like exposure_keys) on commit drop`); err != nil {
			return fmt.Errorf("federate: %w", err)
		}
		i := 0
		src := pgx.CopyFromFunc(func() ([]any, error) {
			if i == len(f.Keys) {
				return nil, nil
			}
			k := f.Keys[i]
			i++
			var onset any
			if k.HasOnset {
				onset = int16(k.DaysSinceOnset)
			}
			return []any{k.Data[:], k.RollingStart, k.RollingPeriod, int16(k.TransmissionRisk), onset, received, s.Name}, nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"federate_keys"},
			[]string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "days_since_onset", "received_hour", "origin"}, src); err != nil {
			return fmt.Errorf("federate: copy keys: %w", err)
		}
		tag, err := tx.Exec(ctx, `insert into exposure_keys
			(key_data, rolling_start, rolling_period, transmission_risk, days_since_onset, received_hour, origin)
			select key_data, rolling_start, rolling_period, transmission_risk, days_since_onset, received_hour, origin
			from federate_keys on conflict (key_data) do nothing`)
		if err != nil {
			return fmt.Errorf("federate: merge keys: %w", err)
		}
		added = int(tag.RowsAffected())
		if _, err := tx.Exec(ctx, `insert into federate_imports (site, path, keys) values ($1, $2, $3)`,
			s.Name, path, len(f.Keys)); err != nil {
			return fmt.Errorf("federate: record import: %w", err)
		}
		return nil
	})
	return added, err
}
