package registrysync

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"
	"vouch/internal/revocation"

	"vouch/internal/database"
)

// CRLConfig names where the issuing CAs publish their CRLs, and the CAs
// whose signatures make a CRL believable.
type CRLConfig struct {
	Sources []string // files or http(s) URLs
	CAs     []*x509.Certificate
}

type crlFetcher struct {
	cfg CRLConfig
	db  *database.DB
	log *slog.Logger
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
	return errors.Join(errs...)
}

func (f *crlFetcher) fetch(ctx context.Context, src string, now time.Time) error {
	der, err := read(ctx, src)
	if err != nil {
		return err
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("parse CRL: %w", err)
	}
	var issuer *x509.Certificate
	for _, ca := range f.cfg.CAs {
		if string(ca.RawSubject) == string(crl.RawIssuer) {
			issuer = ca
		}
	}
	if issuer == nil {
		return errors.New("CRL issuer is not a configured CA")
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("CRL signature: %w", err)
	}
	switch {
	case crl.NextUpdate.IsZero():
		return errors.New("CRL without nextUpdate: it could never be known stale")
	case crl.Number == nil:
		return errors.New("CRL without a CRL number: a replay could not be told from an update")
	case now.After(crl.NextUpdate):
		return fmt.Errorf("CRL is stale (next update was %s)", crl.NextUpdate)
	}
	number := crl.Number.String()
	// Only a CRL at least as new as the stored one replaces it: a replayed
	// old CRL would lift revocations.
	tag, err := f.db.Pool().Exec(ctx, `insert into uzi_crls (issuer, issuer_name, number, this_update, next_update, der, fetched_at)
		values ($1, $2, $3::numeric, $4, $5, $6, $7)
		on conflict (issuer) do update set issuer_name = excluded.issuer_name, number = excluded.number,
			this_update = excluded.this_update, next_update = excluded.next_update, der = excluded.der, fetched_at = excluded.fetched_at
		where excluded.number >= coalesce(uzi_crls.number, 0) and excluded.this_update >= uzi_crls.this_update`,
		issuer.RawSubject, issuer.Subject.String(), number, crl.ThisUpdate, nullTime(crl.NextUpdate), der, now)
	if err != nil {
		return fmt.Errorf("store CRL: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("CRL number %s (this update %s) is older than the stored one", crl.Number, crl.ThisUpdate)
	}
	f.log.Info("CRL stored", "issuer", issuer.Subject.String(), "entries", len(crl.RevokedCertificateEntries), "next_update", crl.NextUpdate)
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
