package ingest

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/revocation"
)

// BucketCRLs are the CRLs the registry sync put on the bus
// (registrysync.CRLBucket). Like files, they are checked by the Set
// before they take effect: the bus is not trusted with revocations.
type BucketCRLs struct{ Bucket *bus.Bucket }

var _ revocation.Source = BucketCRLs{}

// CRLs returns every CRL in the bucket.
func (b BucketCRLs) CRLs(ctx context.Context) ([][]byte, error) {
	var out [][]byte
	err := b.Bucket.Each(ctx, func(_ string, der []byte) error {
		out = append(out, der)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: CRLs from the bus: %w", err)
	}
	return out, nil
}

// crls keeps the verifier's revocation set current.
type crls struct {
	set   *revocation.Set
	src   revocation.Source
	cas   []*x509.Certificate
	every time.Duration
	log   *slog.Logger
	now   func() time.Time
}

func (c *crls) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.set.Refresh(ctx, c.src, c.cas, c.now()); err != nil && ctx.Err() == nil {
		// What is in force stays in force until its own nextUpdate.
		c.log.Warn("CRLs: some were not taken", "err", err)
	}
}

// ready fails while a CA has no current CRL: its cards are refused.
func (c *crls) ready(context.Context) error {
	missing := c.set.Missing(c.cas, c.now())
	if len(missing) == 0 {
		return nil
	}
	names := make([]string, len(missing))
	for i, ca := range missing {
		names[i] = ca.Subject.CommonName
	}
	return fmt.Errorf("no current CRL for %s: their cards are refused", strings.Join(names, ", "))
}
