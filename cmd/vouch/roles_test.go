package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestBackofficeBootstrapAdmins: vouch backoffice grants admin to the UZI
// numbers of VOUCH_BOOTSTRAP_ADMINS as it starts, and refuses to start with
// one that is not a UZI number (issue 22 §Roles).
func TestBackofficeBootstrapAdmins(t *testing.T) {
	tcfg, man := testTrust(t)
	setTrustEnv(t, tcfg)
	url := testenv.DatabaseURL(t)
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	addr := free()
	t.Setenv("DATABASE_URL", url)
	t.Setenv("VOUCH_BUS_DIR", t.TempDir())
	t.Setenv("VOUCH_HTTP_ADDR", addr)
	t.Setenv("VOUCH_OPS_LISTEN", free())
	t.Setenv("VOUCH_BACKOFFICE_ORIGIN", "http://"+addr)
	t.Setenv("VOUCH_ATTESTATION_URI", man.Backend.AttestationURI)
	t.Setenv("VOUCH_HSM_PIN", man.Backend.PIN)
	t.Setenv("VOUCH_ATTESTATION_KEYS", man.Backend.AttestationPub)

	t.Setenv("VOUCH_BOOTSTRAP_ADMINS", "900000001,12345")
	if err := realMain(t.Context(), []string{"backoffice"}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil ||
		!strings.Contains(err.Error(), "VOUCH_BOOTSTRAP_ADMINS") {
		t.Fatalf("a malformed UZI number: %v", err)
	}

	t.Setenv("VOUCH_BOOTSTRAP_ADMINS", "900000001,900000010")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- realMain(ctx, []string{"backoffice"}, &bytes.Buffer{}, &lockedWriter{w: &bytes.Buffer{}})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("vouch backoffice: %v", err)
		}
	}()
	db, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got string
		err := db.QueryRow(context.Background(), `select coalesce(string_agg(uzi_number || ':' || role || ':' || granted_by, ',' order by uzi_number), '')
			from backoffice_roles`).Scan(&got)
		if err == nil && got == "900000001:admin:VOUCH_BOOTSTRAP_ADMINS,900000010:admin:VOUCH_BOOTSTRAP_ADMINS" {
			break
		}
		select {
		case err := <-done:
			done <- err // for the deferred wait
			t.Fatalf("vouch backoffice stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no bootstrap admins in time: %q %v", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
