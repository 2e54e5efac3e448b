package testpki_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/uzi"
)

func TestProvisionedCards(t *testing.T) {
	man := testenv.Cards(t)
	dir := filepath.Dir(man.SoftHSMConf)
	root := readCert(t, man.RootCA)
	roots := x509.NewCertPool()
	roots.AddCert(root)
	crls := revocation.NewSet()
	for ca, file := range man.CRLs {
		der, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		issuer := man.RootCA
		if ca != "root" {
			issuer = man.CAs[ca]
		}
		if err := crls.AddCRL(der, readCert(t, issuer), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if len(man.Cards) != len(testpki.Cards()) {
		t.Fatalf("%d cards provisioned, want %d", len(man.Cards), len(testpki.Cards()))
	}
	for _, c := range man.Cards {
		for _, file := range []string{c.AuthCert, c.SignCert} {
			cert := readCert(t, file)
			id, err := uzi.FromCertificate(cert)
			if err != nil || id.String() != c.UZIName {
				t.Errorf("%s: UZI name %v, %v", file, id, err)
			}
			inter := x509.NewCertPool()
			inter.AddCert(readCert(t, man.CAs[c.CA]))
			_, err = cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
				CurrentTime: cert.NotBefore.Add(time.Minute)})
			if (err == nil) != (c.CA != testpki.CAUnknown) {
				t.Errorf("%s: chain to the test root: %v", file, err)
			}
			if c.CA != testpki.CAUnknown {
				if revoked := errors.Is(crls.Check(cert, readCert(t, man.CAs[c.CA]), time.Now()), revocation.ErrRevoked); revoked != c.Revoked {
					t.Errorf("%s: revoked = %v, want %v", file, revoked, c.Revoked)
				}
			}
			now := time.Now()
			valid := now.After(cert.NotBefore) && now.Before(cert.NotAfter)
			if valid != (c.Validity == testpki.Valid) {
				t.Errorf("%s: valid now = %v for %s", file, valid, c.Validity)
			}
		}
	}

	// Running again changes nothing.
	before := snapshot(t, man)
	// Under the cache's lock, as testenv.Cards provisions: other test
	// processes may be provisioning the same cache now.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	again, err := testpki.Provision(dir, man.Module, testpki.Cards())
	syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, again); before != after {
		t.Error("re-running Provision changed the cards")
	}

	// pkcs11-tool sees every token.
	cmd := exec.Command("pkcs11-tool", "--module", man.Module, "-L")
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+man.SoftHSMConf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool (make deps installs opensc): %v\n%s", err, out)
	}
	for _, c := range man.Cards {
		if !strings.Contains(string(out), c.Token) {
			t.Errorf("pkcs11-tool -L lacks %s", c.Token)
		}
	}
	if !strings.Contains(string(out), testpki.BackendToken) {
		t.Errorf("pkcs11-tool -L lacks %s", testpki.BackendToken)
	}
}

func snapshot(t *testing.T, man *testpki.Manifest) string {
	var b bytes.Buffer
	for _, c := range man.Cards {
		for _, f := range []string{c.AuthCert, c.SignCert} {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(data)
		}
	}
	for _, f := range []string{man.Backend.ExportPub, man.Backend.AttestationPub, man.RootCA} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	c, err := testpki.ParseCertPEM(b)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return c
}

func TestTrustFiles(t *testing.T) {
	t.Parallel()
	man := &testpki.Manifest{RootCA: "/p/root.crt",
		CAs: map[string]string{
			testpki.CAServices: "/p/services.crt", testpki.CACareProvider: "/p/care-provider.crt", testpki.CAServer: "/p/server.crt",
			testpki.CANamedEmployee: "/p/named-employee.crt", testpki.CAUnknown: "/p/unknown.crt",
		},
		CRLs: map[string]string{
			testpki.CAServices: "/c/services.crl", "root": "/c/root.crl", testpki.CACareProvider: "/c/care-provider.crl",
			testpki.CAServer: "/c/server.crl", testpki.CANamedEmployee: "/c/named-employee.crl",
		},
	}
	// The CA nobody trusts stays out; the rest are in CA name order.
	want := testpki.TrustFiles{
		Roots: []string{"/p/root.crt"},
		IssuingCAs: []testpki.IssuingCAFile{
			{Type: uzi.CardCareProvider, File: "/p/care-provider.crt"},
			{Type: uzi.CardNamedEmployee, File: "/p/named-employee.crt"},
			{Type: uzi.CardServer, File: "/p/server.crt"},
			{Type: uzi.CardNameless, File: "/p/services.crt"},
		},
		CRLs: []string{"/c/care-provider.crl", "/c/named-employee.crl", "/c/root.crl", "/c/server.crl", "/c/services.crl"},
	}
	got := man.TrustFiles()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("TrustFiles (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"Z": "/p/care-provider.crt", "N": "/p/named-employee.crt", "S": "/p/server.crt", "M": "/p/services.crt"}, got.CAs()); diff != "" {
		t.Errorf("CAs (-want +got):\n%s", diff)
	}
	if want, got := "Z:/p/care-provider.crt,N:/p/named-employee.crt,S:/p/server.crt,M:/p/services.crt", got.CAsEnv(); got != want {
		t.Errorf("CAsEnv = %q, want %q", got, want)
	}
}
