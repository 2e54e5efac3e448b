// The tests of the real parts (slapd, PostgreSQL, NATS); a mutation run
// builds with -tags mutation and leaves them out (see unit_test.go).

//go:build !mutation

package registrysync

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
)

// TestCRLReachesTheBus: a fetched CRL is put in CRLBucket under the hex of
// its issuer key, byte for byte, for ingest (which has no database).
func TestCRLReachesTheBus(t *testing.T) {
	t.Parallel()
	now := time.Now().Truncate(time.Second)
	pki, err := testpki.New(now)
	if err != nil {
		t.Fatal(err)
	}
	care := pki.CAs[testpki.CACareProvider].Cert
	der, err := pki.CRL(testpki.CACareProvider, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "care.crl")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
	b := testenv.Bus(t)
	bucket, err := b.Bucket(t.Context(), CRLBucket, CRLBucketDescription)
	if err != nil {
		t.Fatal(err)
	}
	fetch := &crlFetcher{cfg: CRLConfig{Sources: []string{path}, CAs: []*x509.Certificate{care}, Bucket: bucket},
		db: testenv.Database(t), log: slog.New(slog.DiscardHandler)}
	if err := fetch.fetchAll(context.Background(), now); err != nil {
		t.Fatal(err)
	}
	crl, err := revocation.Parse(der, []*x509.Certificate{care}, now)
	if err != nil {
		t.Fatal(err)
	}
	key := crl.IssuerKey()
	got, err := bucket.Get(t.Context(), hex.EncodeToString(key[:]))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(der) {
		t.Fatalf("bucket holds %d bytes, want the %d of the CRL", len(got), len(der))
	}
}
