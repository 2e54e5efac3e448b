// The tests of the real parts (slapd, PostgreSQL, NATS); a mutation run
// builds with -tags mutation and leaves them out (see unit_test.go).

//go:build !mutation

package registrysync

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
)

// TestCRLNumberRoundTrip: CRL numbers survive the database whole; 10000
// (which PostgreSQL's binary numeric sends as 1e4) does not block the next.
func TestCRLNumberRoundTrip(t *testing.T) {
	t.Parallel()
	now := time.Now().Truncate(time.Second)
	pki, err := testpki.New(now)
	if err != nil {
		t.Fatal(err)
	}
	care := pki.CAs[testpki.CACareProvider].Cert
	db := testenv.Database(t)
	dir := t.TempDir()
	fetch := &crlFetcher{cfg: CRLConfig{CAs: []*x509.Certificate{care}}, db: db, log: slog.New(slog.DiscardHandler)}
	for i, n := range []int64{10000, 10001, 1000000, 1000001} {
		der, err := pki.CRLWith(testpki.CACareProvider, x509.RevocationList{Number: big.NewInt(n),
			ThisUpdate: now.Add(time.Duration(i-10) * time.Second), NextUpdate: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, fmt.Sprintf("%d.crl", n))
		if err := os.WriteFile(path, der, 0o600); err != nil {
			t.Fatal(err)
		}
		fetch.cfg.Sources = []string{path}
		if err := fetch.fetchAll(context.Background(), now); err != nil {
			t.Errorf("CRL number %d after the one before: %v", n, err)
		}
	}
}
