package revocation_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
)

func TestSet(t *testing.T) {
	t.Parallel()
	now := time.Now()
	pki, err := testpki.New(now)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	issue := func(name string) *x509.Certificate {
		cert, err := pki.IssueNamed(name, testpki.UsageSign, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	revoked, kept := issue("revoked"), issue("gp")
	crl, err := pki.CRL(testpki.CACareProvider, []*big.Int{revoked.SerialNumber}, now)
	if err != nil {
		t.Fatal(err)
	}
	care := pki.CAs[testpki.CACareProvider].Cert
	s := revocation.NewSet()
	revokedNow := func(c *x509.Certificate) bool { return errors.Is(s.Check(c, care, now), revocation.ErrRevoked) }
	if err := s.Check(kept, care, now); !errors.Is(err, revocation.ErrUnknown) {
		t.Fatalf("status before any CRL: %v, want unknown", err)
	}
	delta, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(now.Unix() + 1), ThisUpdate: now,
		NextUpdate: now.Add(time.Hour), ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: []byte{2, 1, 1}}}},
		care, pki.CAs[testpki.CACareProvider].Key)
	if err != nil {
		t.Fatal(err)
	}
	idp, _ := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(now.Unix() + 1), ThisUpdate: now,
		NextUpdate: now.Add(time.Hour), ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: []byte{0x30, 0}}}},
		care, pki.CAs[testpki.CACareProvider].Key)
	future, _ := pki.CRL(testpki.CACareProvider, nil, now.Add(time.Hour))
	// Refusals change nothing.
	for name, add := range map[string]func() error{
		"delta CRL":           func() error { return s.AddCRL(delta, care, now) },
		"partitioned CRL":     func() error { return s.AddCRL(idp, care, now) },
		"dated in the future": func() error { return s.AddCRL(future, care, now) },
		"wrong issuer":        func() error { return s.AddCRL(crl, pki.CAs[testpki.CANamedEmployee].Cert, now) },
		"stale":               func() error { return s.AddCRL(crl, care, now.Add(30*24*time.Hour)) },
		"garbage":             func() error { return s.AddCRL([]byte("not a CRL"), care, now) },
	} {
		if err := add(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if revokedNow(revoked) {
			t.Errorf("%s: a refused CRL took effect", name)
		}
	}
	if err := s.AddCRL(crl, care, now); err != nil {
		t.Fatal(err)
	}
	if !revokedNow(revoked) || revokedNow(kept) {
		t.Errorf("revoked=%v kept=%v", revokedNow(revoked), revokedNow(kept))
	}
	// Same serial from another issuer is another certificate.
	other := *revoked
	other.RawIssuer = []byte(strings.Repeat("x", 8))
	if err := s.Check(&other, care, now); !errors.Is(err, revocation.ErrUnknown) {
		t.Errorf("a certificate that does not name the issuer: %v, want unknown", err)
	}
	// A CA with the same name but another key (a rollover, or an
	// impostor) has no CRL of its own: its certificates are unknown, and
	// the care-provider CA's CRL does not answer for them.
	rekeyed := *care
	rekeyed.RawSubjectPublicKeyInfo = append([]byte{}, care.RawSubjectPublicKeyInfo...)
	rekeyed.RawSubjectPublicKeyInfo[len(rekeyed.RawSubjectPublicKeyInfo)-1] ^= 1
	if err := s.Check(kept, &rekeyed, now); !errors.Is(err, revocation.ErrUnknown) {
		t.Errorf("same issuer name, other key: %v, want unknown", err)
	}
	if err := s.Check(kept, care, now); err != nil {
		t.Errorf("good certificate: %v", err)
	}
	// Past the CRL's next update nobody can know: fail closed.
	if err := s.Check(kept, care, now.Add(8*24*time.Hour)); !errors.Is(err, revocation.ErrUnknown) {
		t.Errorf("stale CRL: %v, want unknown", err)
	}
	// An older CRL replayed is refused: it would lift the revocation.
	old, _ := pki.CRL(testpki.CACareProvider, nil, now.Add(-time.Hour))
	if err := s.AddCRL(old, care, now); err == nil || !revokedNow(revoked) {
		t.Errorf("an older CRL was accepted: %v", err)
	}
	// A newer CRL replaces the old one: unrevocation (a lifted hold) takes effect.
	empty, _ := pki.CRL(testpki.CACareProvider, nil, now.Add(time.Second))
	if err := s.AddCRL(empty, care, now); err != nil {
		t.Fatal(err)
	}
	if revokedNow(revoked) {
		t.Error("old CRL entry survived a newer CRL")
	}
}

// TestParseRules: every reader of CRLs — a verifier's files, the sync's
// downloads, the stored copies — goes through Parse, so one table holds the
// rules.
func TestParseRules(t *testing.T) {
	t.Parallel()
	now, pki := newPKI(t)
	cas := []*x509.Certificate{pki.Root.Cert, pki.CAs[testpki.CACareProvider].Cert, pki.CAs[testpki.CANamedEmployee].Cert}
	ext := func(id asn1.ObjectIdentifier, critical bool) []pkix.Extension {
		return []pkix.Extension{{Id: id, Critical: critical, Value: []byte{0x30, 0}}}
	}
	good := x509.RevocationList{Number: big.NewInt(7), ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)}
	with := func(f func(*x509.RevocationList)) x509.RevocationList { l := good; f(&l); return l }
	tests := []struct {
		name    string
		ca      string
		tmpl    x509.RevocationList
		wantErr string // "" accepted
	}{
		{"issuing CA", testpki.CACareProvider, good, ""},
		{"root", "root", good, ""},
		{"no CRL number", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.Number = nil }), "no CRL number"},
		{"no nextUpdate", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.Number = nil; l.NextUpdate = time.Time{} }), "no CRL number"},
		{"dated 6 minutes ahead", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.ThisUpdate = now.Add(6 * time.Minute) }), "in the future"},
		{"dated 4 minutes ahead", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.ThisUpdate = now.Add(4 * time.Minute) }), ""},
		{"next update now", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.NextUpdate = now }), ""},
		{"next update a second ago", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.NextUpdate = now.Add(-time.Second) }), "stale"},
		{"delta", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.ExtraExtensions = ext(asn1.ObjectIdentifier{2, 5, 29, 27}, true) }), "not a complete list"},
		{"partitioned, not critical", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.ExtraExtensions = ext(asn1.ObjectIdentifier{2, 5, 29, 28}, false) }), "not a complete list"},
		{"unknown critical extension", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.ExtraExtensions = ext(asn1.ObjectIdentifier{1, 2, 3}, true) }), "not a complete list"},
		{"unknown extension, not critical", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.ExtraExtensions = ext(asn1.ObjectIdentifier{1, 2, 3}, false) }), ""},
		{"issuer not configured", testpki.CAServer, good, "not a configured CA"},
		{"SHA-1", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.SignatureAlgorithm = x509.SHA1WithRSA }), "SHA1-RSA"},
		{"SHA-512", testpki.CACareProvider, with(func(l *x509.RevocationList) { l.SignatureAlgorithm = x509.SHA512WithRSA }), ""},
		{"signed by another key under a configured name", testpki.CAUnknown, good, "verification"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			der, err := pki.CRLWith(tt.ca, tt.tmpl)
			if err != nil {
				t.Fatal(err)
			}
			if tt.ca == testpki.CAUnknown {
				// The rogue CA re-signs a CRL under the care-provider CA's name.
				der = resign(t, pki, tt.tmpl)
			}
			c, err := revocation.Parse(der, cas, now)
			want := pki.Root.Cert
			if tt.ca != "root" {
				want = pki.CAs[tt.ca].Cert
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr == "" && !c.Issuer.Equal(want):
				t.Errorf("filed under %s", c.Issuer.Subject)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	t.Run("no nextUpdate, numbered", func(t *testing.T) {
		t.Parallel()
		// x509.CreateRevocationList always writes a nextUpdate; only the
		// hand-made path leaves it out, so give it a number by extension.
		num, _ := asn1.Marshal(big.NewInt(7))
		der, err := pki.CRLWith(testpki.CACareProvider, x509.RevocationList{ThisUpdate: now.Add(-time.Minute),
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 20}, Value: num}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := revocation.Parse(der, cas, now); err == nil || !strings.Contains(err.Error(), "no nextUpdate") {
			t.Errorf("err = %v, want no nextUpdate", err)
		}
	})
}

// resign makes a CRL named as the care-provider CA's but signed by the
// rogue CA's key.
func resign(t *testing.T, pki *testpki.PKI, tmpl x509.RevocationList) []byte {
	t.Helper()
	impostor := *pki.CAs[testpki.CAUnknown].Cert
	impostor.RawSubject = pki.CAs[testpki.CACareProvider].Cert.RawSubject
	impostor.Subject = pki.CAs[testpki.CACareProvider].Cert.Subject
	der, err := x509.CreateRevocationList(rand.Reader, &tmpl, &impostor, pki.CAs[testpki.CAUnknown].Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestReplay: a CRL replaces the one in force only when neither its number
// nor its thisUpdate is older; each condition refuses on its own, and the
// same CRL again is no change (a refresh re-reads it every minute).
func TestReplay(t *testing.T) {
	t.Parallel()
	now, pki := newPKI(t)
	care := pki.CAs[testpki.CACareProvider].Cert
	card := gpCard(t, pki)
	crl := func(number int64, thisUpdate time.Time, revoked ...*big.Int) []byte {
		entries := make([]x509.RevocationListEntry, len(revoked))
		for i, s := range revoked {
			entries[i] = x509.RevocationListEntry{SerialNumber: s, RevocationTime: thisUpdate}
		}
		der, err := pki.CRLWith(testpki.CACareProvider, x509.RevocationList{Number: big.NewInt(number), ThisUpdate: thisUpdate,
			NextUpdate: now.Add(time.Hour), RevokedCertificateEntries: entries})
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	inForce := crl(10, now.Add(-time.Minute), card.SerialNumber)
	tests := []struct {
		name   string
		der    []byte
		wantOK bool
	}{
		{"the same CRL again", inForce, true},
		{"same number and date, other content", crl(10, now.Add(-time.Minute)), true},
		{"lower number", crl(9, now.Add(-time.Minute)), false},
		{"older date", crl(10, now.Add(-time.Minute-time.Second)), false},
		{"higher number, older date", crl(11, now.Add(-2*time.Minute)), false},
		{"newer date, lower number", crl(9, now), false},
		{"newer", crl(11, now), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := revocation.NewSet()
			if err := s.AddCRL(inForce, care, now); err != nil {
				t.Fatal(err)
			}
			err := s.AddCRL(tt.der, care, now)
			if ok := err == nil; ok != tt.wantOK {
				t.Fatalf("err = %v, want accepted=%v", err, tt.wantOK)
			}
			if !tt.wantOK && (!errors.Is(err, revocation.ErrOlder) || !errors.Is(s.Check(card, care, now), revocation.ErrRevoked)) {
				t.Errorf("a refused replay changed the set or said %v", err)
			}
		})
	}
}

// TestRefreshFiles: files are read again at each refresh, so a replaced
// file takes effect; an unreadable or refused one does not stop the others.
func TestRefreshFiles(t *testing.T) {
	t.Parallel()
	now, pki := newPKI(t)
	care, named := pki.CAs[testpki.CACareProvider].Cert, pki.CAs[testpki.CANamedEmployee].Cert
	cas := []*x509.Certificate{care, named}
	card := gpCard(t, pki)
	dir := t.TempDir()
	write := func(name string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, der, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	first, _ := pki.CRL(testpki.CACareProvider, nil, now)
	rogue, _ := pki.CRL(testpki.CAUnknown, nil, now)
	src := revocation.Files{write("care.crl", first), write("rogue.crl", rogue), filepath.Join(dir, "missing.crl")}
	s := revocation.NewSet()
	err := s.Refresh(t.Context(), src, cas, now)
	if err == nil || !strings.Contains(err.Error(), "missing.crl") || !strings.Contains(err.Error(), "not a configured CA") {
		t.Errorf("refresh: %v, want the missing and the rogue file named", err)
	}
	if err := s.Check(card, care, now); err != nil {
		t.Fatalf("the good file was not taken: %v", err)
	}
	// The same file again is not parsed and verified again (with no CA to
	// verify against, a parse would fail): the CRL in force is that one.
	if err := s.Refresh(t.Context(), src[:1], nil, now); err != nil {
		t.Errorf("refreshing an unchanged file: %v", err)
	}
	second, _ := pki.CRL(testpki.CACareProvider, []*big.Int{card.SerialNumber}, now.Add(time.Second))
	write("care.crl", second)
	_ = s.Refresh(t.Context(), src, cas, now)
	if err := s.Check(card, care, now); !errors.Is(err, revocation.ErrRevoked) {
		t.Errorf("the replaced file was not taken: %v", err)
	}
	// Past the first CRL's next update, a refresh that finds a newer file
	// keeps cards usable.
	later := now.Add(8 * 24 * time.Hour)
	third, _ := pki.CRL(testpki.CACareProvider, nil, later)
	write("care.crl", third)
	if err := s.Check(card, care, later); !errors.Is(err, revocation.ErrUnknown) {
		t.Fatalf("stale: %v", err)
	}
	_ = s.Refresh(t.Context(), src, cas, later)
	if err := s.Check(card, care, later); err != nil {
		t.Errorf("after refresh: %v", err)
	}
}

// TestReadCRLBounds: a CRL is read up to MaxCRLSize bytes; one more is
// refused, and nothing past it is read.
func TestReadCRLBounds(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		size   int64
		wantOK bool
	}{{revocation.MaxCRLSize - 1, true}, {revocation.MaxCRLSize, true}, {revocation.MaxCRLSize + 1, false}} {
		r := &countingReader{r: io.LimitReader(zeros{}, tt.size)}
		b, err := revocation.ReadCRL(r)
		if (err == nil) != tt.wantOK || tt.wantOK && int64(len(b)) != tt.size {
			t.Errorf("%d bytes: read %d, %v", tt.size, len(b), err)
		}
		if r.n > revocation.MaxCRLSize+1 {
			t.Errorf("%d bytes: %d read", tt.size, r.n)
		}
	}
	if _, err := revocation.ReadCRL(io.MultiReader(zeros{})); err == nil {
		t.Error("an endless CRL was read")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestStoredKeepMissing: the CRLs the sync stores are read back, Keep
// refreshes while it runs, and Missing names the CAs without a current CRL.
func TestStoredKeepMissing(t *testing.T) {
	t.Parallel()
	now, pki := newPKI(t)
	care, named := pki.CAs[testpki.CACareProvider].Cert, pki.CAs[testpki.CANamedEmployee].Cert
	cas := []*x509.Certificate{care, named}
	db := testenv.Database(t)
	s := revocation.NewSet()
	if d := cmp.Diff(cas, s.Missing(cas, now)); d != "" {
		t.Errorf("missing before any CRL (-want +got):\n%s", d)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		s.Keep(ctx, revocation.Stored{DB: db.Pool()}, cas, 10*time.Millisecond, slog.New(slog.DiscardHandler))
		close(done)
	}()
	der, _ := pki.CRL(testpki.CACareProvider, nil, now)
	c, err := revocation.Parse(der, cas, now)
	if err != nil {
		t.Fatal(err)
	}
	key := c.IssuerKey()
	if _, err := db.Pool().Exec(ctx, `insert into uzi_crls (issuer_key, issuer_name, number, this_update, next_update, der)
		values ($1, 'care', $2, $3, $4, $5)`, key[:], c.List.Number.String(), c.List.ThisUpdate, c.List.NextUpdate, der); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(s.Missing(cas, now)) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("Keep did not read the stored CRL")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := cmp.Diff([]*x509.Certificate{named}, s.Missing(cas, now)); d != "" {
		t.Errorf("missing (-want +got):\n%s", d)
	}
	if m := s.Missing(cas, c.List.NextUpdate.Add(time.Second)); len(m) != 2 {
		t.Errorf("past nextUpdate, %d CAs have a current CRL", 2-len(m))
	}
	if m := s.Missing(cas, c.List.NextUpdate); len(m) != 1 {
		t.Errorf("at nextUpdate, %d CAs miss a CRL, want 1", len(m))
	}
	stop()
	<-done
}

// TestKeepLogsFailures: a refresh that fails is logged for the operator; one
// that succeeds is not.
func TestKeepLogsFailures(t *testing.T) {
	t.Parallel()
	now, pki := newPKI(t)
	care := pki.CAs[testpki.CACareProvider].Cert
	der, _ := pki.CRL(testpki.CACareProvider, nil, now)
	dir := t.TempDir()
	good := filepath.Join(dir, "care.crl")
	if err := os.WriteFile(good, der, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		src     revocation.Files
		wantLog bool
	}{
		{"good file", revocation.Files{good}, false},
		{"missing file", revocation.Files{good, filepath.Join(dir, "missing.crl")}, true},
	} {
		var logs syncBuffer
		s := revocation.NewSet()
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			s.Keep(ctx, tt.src, []*x509.Certificate{care}, time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
			close(done)
		}()
		deadline := time.Now().Add(5 * time.Second)
		for len(s.Missing([]*x509.Certificate{care}, now)) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: nothing taken", tt.name)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // several refreshes
		stop()
		<-done
		if got := strings.Contains(logs.String(), "CRL refresh"); got != tt.wantLog {
			t.Errorf("%s: logged %v, want %v:\n%s", tt.name, got, tt.wantLog, logs.String())
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
func (w *syncBuffer) String() string { w.mu.Lock(); defer w.mu.Unlock(); return w.b.String() }

// newPKI is a fresh test PKI made now (to the second).
func newPKI(t *testing.T) (time.Time, *testpki.PKI) {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	pki, err := testpki.New(now)
	if err != nil {
		t.Fatal(err)
	}
	return now, pki
}

// gpCard is a GP's signature certificate from the care-provider CA.
func gpCard(t *testing.T, pki *testpki.PKI) *x509.Certificate {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	card, err := pki.IssueNamed("gp", testpki.UsageSign, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return card
}
