package main

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
)

// testTrust is the trust configuration of the SoftHSM test cards, with
// their CRL files.
func testTrust(t *testing.T) (trust.Config, *testpki.Manifest) {
	t.Helper()
	man := testenv.Cards(t)
	files := man.TrustFiles()
	cfg := trust.Config{Roots: files.Roots, CAs: files.CAs(), CRLs: files.CRLs, Jurisdiction: "NL", Profile: "test",
		CRLRefresh: 20 * time.Millisecond}
	return cfg, man
}

// TestServerRevocation: a server role will not start without a revocation
// source, and it checks cards against the CRLs the sync stores, read again
// while it runs.
func TestServerRevocation(t *testing.T) {
	tcfg, man := testTrust(t)
	db := testenv.Database(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := t.Context()
	load := func(c trust.Config) protocol.Trust {
		tr, err := c.Load(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	noFiles := tcfg
	noFiles.CRLs = nil
	for _, tt := range []struct {
		name     string
		sources  []string
		syncRuns bool
		want     string
	}{
		{"no source", nil, true, "no revocation source"},
		{"sources, but no sync to fetch them", []string{"/some.crl"}, false, "VOUCH_REGISTRY_URL"},
	} {
		tr := load(noFiles)
		_, _, err := serverRevocation(ctx, &tr, noFiles, registrysync.Config{CRLSources: tt.sources}, db, tt.syncRuns, log)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
		if tr.Revocation != nil {
			t.Errorf("%s: a revocation set was installed", tt.name)
		}
	}

	// CRLs from the sync only: none stored yet, so nothing is ready and
	// every card is refused; once the sync stores them they take effect
	// without a restart.
	tr := load(noFiles)
	keep, ready, err := serverRevocation(ctx, &tr, noFiles, registrysync.Config{CRLSources: []string{"fetched-by-the-sync"}}, db, true, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := ready.Check(ctx); err == nil || !strings.Contains(err.Error(), "no current CRL for") {
		t.Errorf("ready with no CRL: %v", err)
	}
	var revoked, good *x509.Certificate
	for _, c := range man.Cards {
		cert := readCert(t, c.SignCert)
		if c.Revoked {
			revoked = cert
		} else if c.CA == testpki.CACareProvider {
			good = cert
		}
	}
	care := tr.IssuingCAs["Z"][0]
	if err := tr.Revocation.Check(good, care, time.Now()); !errors.Is(err, revocation.ErrUnknown) {
		t.Fatalf("before any CRL: %v, want unknown", err)
	}
	kctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- keep(kctx) }()
	defer func() { stop(); <-done }()
	// What the sync does: verify and store.
	for _, f := range man.CRLs {
		der, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		crl, err := revocation.Parse(der, tr.CAs(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		key := crl.IssuerKey()
		if _, err := db.Pool().Exec(ctx, `insert into uzi_crls (issuer_key, issuer_name, number, this_update, next_update, der)
			values ($1, $2, $3, $4, $5, $6)`, key[:], crl.Issuer.Subject.String(), crl.List.Number.String(), crl.List.ThisUpdate, crl.List.NextUpdate, der); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for ready.Check(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("stored CRLs were not taken: %v", ready.Check(ctx))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tr.Revocation.Check(revoked, care, time.Now()); !errors.Is(err, revocation.ErrRevoked) {
		t.Errorf("revoked card: %v", err)
	}
	if err := tr.Revocation.Check(good, care, time.Now()); err != nil {
		t.Errorf("good card: %v", err)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := testpki.ParseCertPEM(b)
	if err != nil {
		c, err = x509.ParseCertificate(b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}
