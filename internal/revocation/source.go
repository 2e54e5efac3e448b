package revocation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

// Source yields the DER CRLs a Set should hold. Every CRL it yields is
// checked by Parse before it takes effect: a source is never trusted.
type Source interface {
	CRLs(ctx context.Context) ([][]byte, error)
}

// Files are CRL files, read again at every refresh so that an operator (or
// a job) replacing a file is picked up without a restart.
type Files []string

var _ Source = Files(nil)

// CRLs reads every file, each bounded by MaxCRLSize; the files that can be
// read are returned with the errors of the others.
func (f Files) CRLs(context.Context) ([][]byte, error) {
	var out [][]byte
	var errs []error
	for _, name := range f {
		der, err := readFile(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, der)
	}
	return out, errors.Join(errs...)
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	}
	defer f.Close()
	der, err := ReadCRL(f)
	if err != nil {
		return nil, fmt.Errorf("revocation: %s: %w", name, err)
	}
	return der, nil
}

// Querier runs a query: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Stored are the CRLs the registry sync fetched and stored in uzi_crls.
type Stored struct{ DB Querier }

var _ Source = Stored{}

// CRLs returns every stored CRL.
func (s Stored) CRLs(ctx context.Context) ([][]byte, error) {
	rows, err := s.DB.Query(ctx, `select der from uzi_crls order by issuer_key`)
	if err != nil {
		return nil, fmt.Errorf("revocation: read stored CRLs: %w", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var der []byte
		if err := rows.Scan(&der); err != nil {
			return nil, fmt.Errorf("revocation: read stored CRLs: %w", err)
		}
		out = append(out, der)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("revocation: read stored CRLs: %w", err)
	}
	return out, nil
}

// Sources yields the CRLs of several sources; one failing does not hide the
// others.
type Sources []Source

var _ Source = Sources(nil)

// CRLs concatenates the CRLs of every source and joins their errors.
func (ss Sources) CRLs(ctx context.Context) ([][]byte, error) {
	var out [][]byte
	var errs []error
	for _, s := range ss {
		ders, err := s.CRLs(ctx)
		out = append(out, ders...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// Keep refreshes s from src every interval until ctx ends, so a new CRL —
// from the sync or a replaced file — takes effect within an interval and
// a CRL past its nextUpdate is replaced before every card is refused for
// want of one. A failed refresh is logged; what is in force stays in force
// until its own nextUpdate (after which Check answers ErrUnknown).
func (s *Set) Keep(ctx context.Context, src Source, cas []*x509.Certificate, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.Refresh(ctx, src, cas, time.Now()); err != nil && ctx.Err() == nil {
			log.Warn("CRL refresh: some CRLs were not taken", "err", err)
		}
	}
}
