package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/internal/testpki"
)

func TestMissingModule(t *testing.T) {
	t.Parallel()
	err := realMain(context.Background(), []string{"-dir", t.TempDir(), "-module", "/nonexistent/libsofthsm2.so"})
	if err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("got %v, want a hint to run make deps", err)
	}
}

func TestPrintEnv(t *testing.T) {
	t.Parallel()
	man := &testpki.Manifest{SoftHSMConf: "/s/softhsm2.conf", RootCA: "/s/root.crt",
		CAs:     map[string]string{"named-employee": "/s/b.crt", "care-provider": "/s/a.crt", "unknown": "/s/u.crt"},
		CRLs:    map[string]string{"a": "/s/a.crl"},
		Backend: testpki.Backend{AttestationPub: "/s/att.pem", AttestationURI: "pkcs11:token=vouch-backend;object=attestation"},
		Cards:   []testpki.ManifestCard{{Card: testpki.Card{Name: "gp-prodlike"}, SignURI: "pkcs11:token=it's"}},
	}
	var out bytes.Buffer
	if err := printEnv(&out, man); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"export VOUCH_UZI_CAS='Z:/s/a.crt,N:/s/b.crt'\n",
		"export VOUCH_CARD_PROFILE='test'\n",
		`export VOUCH_TEST_CARD_GP_PRODLIKE='pkcs11:token=it'\''s'` + "\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
