package registrysync

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/revocation"
)

// CRLBucket is the bus's key-value bucket of the CRLs the sync fetched, DER
// keyed by the hex of the issuer key (revocation.CRL.IssuerKey): how they
// reach ingest, which has no database. Readers check every CRL against
// their CAs, as they would a file.
const CRLBucket = "vouch-crls"

// CRLBucketDescription describes CRLBucket in the bus's monitoring.
const CRLBucketDescription = "UZI CRLs (DER) by issuer key; ingest checks cards against them"

// CRLPublisher puts CRLs in CRLBucket (bus.Bucket).
type CRLPublisher interface {
	PutAll(ctx context.Context, entries []bus.KeyValue) error
}

var _ CRLPublisher = (*bus.Bucket)(nil)

// CRLConfig names where the issuing CAs publish their CRLs, and the CAs
// whose signatures make a CRL believable.
type CRLConfig struct {
	Sources []string // files or http(s) URLs
	CAs     []*x509.Certificate
	// Bucket, when set, receives every CRL stored (CRLBucket): after the
	// database commit, so the bucket never holds a CRL the mirror refused.
	// A failed put fails the fetch; the next fetch puts it again.
	Bucket CRLPublisher
}

type crlFetcher struct {
	cfg     CRLConfig
	db      *database.DB
	log     *slog.Logger
	metrics *Metrics // nil: none kept
}

// fetchAll fetches every source and stores each CRL that checks out. One
// bad source does not stop the others; the errors are joined.
func (f *crlFetcher) fetchAll(ctx context.Context, now time.Time) error {
	var errs []error
	for _, src := range f.cfg.Sources {
		if err := f.fetch(ctx, src, now); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src, err))
		}
	}
	if err := f.observe(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// observe sets vouch_crl_next_update_timestamp_seconds from the stored
// CRLs, the ones verifiers use (during a key rollover two CAs share a
// name: the sooner one counts). A source that keeps failing leaves the
// stored CRL's NextUpdate to come closer, which is what the alert watches.
func (f *crlFetcher) observe(ctx context.Context) error {
	if f.metrics == nil {
		return nil
	}
	rows, err := f.db.Pool().Query(ctx, `select issuer_name, min(next_update) from uzi_crls group by issuer_name`)
	if err != nil {
		return fmt.Errorf("read stored CRLs' next update: %w", err)
	}
	type stored struct {
		Issuer string
		Next   time.Time
	}
	crls, err := pgx.CollectRows(rows, pgx.RowToStructByPos[stored])
	if err != nil {
		return fmt.Errorf("read stored CRLs' next update: %w", err)
	}
	f.metrics.crlNextUpdate.Reset()
	for _, c := range crls {
		f.metrics.crlNextUpdate.WithLabelValues(c.Issuer).Set(float64(c.Next.Unix()))
	}
	return nil
}

func (f *crlFetcher) fetch(ctx context.Context, src string, now time.Time) error {
	der, err := read(ctx, src)
	if err != nil {
		return err
	}
	crl, err := revocation.Parse(der, f.cfg.CAs, now)
	if err != nil {
		return err
	}
	key := crl.IssuerKey()
	err = f.db.InTx(ctx, func(tx pgx.Tx) error {
		// Only a CRL at least as new as the stored one replaces it, by the
		// same rule a verifier applies (CRL.NotOlder).
		// As text: PostgreSQL's binary numeric drops trailing zero groups
		// (10000 arrives as 1e4), and a CRL number is an integer of up to
		// 20 octets.
		var number string
		var thisUpdate time.Time
		err := tx.QueryRow(ctx, `select number::text, this_update from uzi_crls where issuer_key = $1 for update`, key[:]).Scan(&number, &thisUpdate)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("read stored CRL: %w", err)
		default:
			n, ok := new(big.Int).SetString(number, 10)
			if !ok {
				return fmt.Errorf("stored CRL number %q is not an integer", number)
			}
			if err := crl.NotOlder(n, thisUpdate); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `insert into uzi_crls (issuer_key, issuer_name, number, this_update, next_update, der, fetched_at)
			values ($1, $2, $3, $4, $5, $6, $7)
			on conflict (issuer_key) do update set issuer_name = excluded.issuer_name, number = excluded.number,
				this_update = excluded.this_update, next_update = excluded.next_update, der = excluded.der, fetched_at = excluded.fetched_at`,
			key[:], crl.Issuer.Subject.String(), pgtype.Numeric{Int: crl.List.Number, Valid: true}, crl.List.ThisUpdate,
			crl.List.NextUpdate, der, now)
		if err != nil {
			return fmt.Errorf("store CRL: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if f.cfg.Bucket != nil {
		if err := f.cfg.Bucket.PutAll(ctx, []bus.KeyValue{{Key: hex.EncodeToString(key[:]), Value: der}}); err != nil {
			return fmt.Errorf("put CRL on the bus: %w", err)
		}
	}
	f.log.Info("CRL stored", "issuer", crl.Issuer.Subject.String(), "number", crl.List.Number.String(),
		"entries", len(crl.List.RevokedCertificateEntries), "next_update", crl.List.NextUpdate)
	return nil
}

func read(ctx context.Context, src string) ([]byte, error) {
	if !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		// A file may be a mount that a CA or a mirror fills: no more
		// trusted than a download.
		f, err := os.Open(strings.TrimPrefix(src, "file://"))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return revocation.ReadCRL(f)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", res.Status)
	}
	return revocation.ReadCRL(res.Body)
}
