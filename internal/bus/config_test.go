package bus_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/vouch-nl/vouch/internal/bus"
)

// TestConfigValidate: every mistake is refused before anything connects,
// naming the variable at fault.
func TestConfigValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	seed := nkeySeed(t)
	seedFile := file("user.nk", string(seed))
	creds := file("user.creds", "-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n"+string(seed)+"\n------END USER NKEY SEED------\n")
	junk := file("junk", "not a key")
	missing := filepath.Join(dir, "missing")
	const cluster = "nats://10.0.0.1:4222,nats://10.0.0.2:4222,nats://10.0.0.3:4222"
	for _, tt := range []struct {
		name string
		cfg  bus.Config
		want string // "" valid; else a part of the error
	}{
		{"embedded default", bus.Config{}, ""},
		{"embedded, replicas 1", bus.Config{Replicas: 1}, ""},
		{"cluster of three, R3", bus.Config{URL: cluster, Replicas: 3, Token: "t"}, ""},
		{"cluster, R5", bus.Config{URL: cluster, Replicas: 5}, ""},
		{"cluster with an NKey", bus.Config{URL: cluster, Replicas: 3, NKeyFile: seedFile}, ""},
		{"cluster with creds", bus.Config{URL: cluster, Replicas: 3, CredsFile: creds}, ""},
		{"tls scheme", bus.Config{URL: "tls://a:4222"}, ""},
		{"replicas 2", bus.Config{URL: cluster, Replicas: 2}, "VOUCH_BUS_REPLICAS must be 1, 3 or 5"},
		{"replicas 7", bus.Config{URL: cluster, Replicas: 7}, "VOUCH_BUS_REPLICAS must be 1, 3 or 5"},
		{"replicas -1", bus.Config{URL: cluster, Replicas: -1}, "VOUCH_BUS_REPLICAS must be 1, 3 or 5"},
		{"R3 on the embedded server", bus.Config{Replicas: 3}, "VOUCH_BUS_REPLICAS=3 needs a cluster"},
		{"listening without a token", bus.Config{Listen: true}, "VOUCH_BUS_TOKEN of at least"},
		{"creds without a URL", bus.Config{CredsFile: creds}, "VOUCH_BUS_CREDS_FILE is for an external server"},
		{"CA without a URL", bus.Config{CAFile: junk}, "VOUCH_BUS_CA_FILE is for an external server"},
		{"http URL", bus.Config{URL: "http://a:4222"}, "NATS_URL"},
		{"one bad URL of several", bus.Config{URL: "nats://a:4222,:::"}, "NATS_URL"},
		{"password in the URL", bus.Config{URL: "nats://u:secret@a:4222"}, "carries credentials"},
		{"token and NKey", bus.Config{URL: cluster, Token: "t", NKeyFile: seedFile}, "set one of VOUCH_BUS_TOKEN"},
		{"creds and NKey", bus.Config{URL: cluster, CredsFile: creds, NKeyFile: seedFile}, "set one of VOUCH_BUS_TOKEN"},
		{"missing creds file", bus.Config{URL: cluster, CredsFile: missing}, "VOUCH_BUS_CREDS_FILE"},
		{"not a creds file", bus.Config{URL: cluster, CredsFile: junk}, "VOUCH_BUS_CREDS_FILE"},
		{"missing NKey file", bus.Config{URL: cluster, NKeyFile: missing}, "VOUCH_BUS_NKEY_FILE"},
		{"not an NKey seed", bus.Config{URL: cluster, NKeyFile: junk}, "VOUCH_BUS_NKEY_FILE"},
		{"missing CA", bus.Config{URL: cluster, CAFile: missing}, "VOUCH_BUS_CA_FILE"},
		{"CA without a certificate", bus.Config{URL: cluster, CAFile: junk}, "VOUCH_BUS_CA_FILE"},
		{"cert without key", bus.Config{URL: cluster, CertFile: junk}, "VOUCH_BUS_CERT_FILE and VOUCH_BUS_KEY_FILE go together"},
		{"unreadable cert and key", bus.Config{URL: cluster, CertFile: missing, KeyFile: missing}, "VOUCH_BUS_CERT_FILE and VOUCH_BUS_KEY_FILE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("err %v, want one naming %q", err, tt.want)
			}
		})
	}
	// Start refuses what Validate refuses.
	if b, err := bus.Start(t.Context(), bus.Config{URL: cluster, Replicas: 2}); err == nil {
		b.Close()
		t.Error("Start took replicas 2")
	}
}

func nkeySeed(t *testing.T) []byte {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return seed
}

// TestNKeyAuth: a client with VOUCH_BUS_NKEY_FILE reaches a server that
// lists its public key, and one with another key does not.
func TestNKeyAuth(t *testing.T) {
	t.Parallel()
	seed := nkeySeed(t)
	kp, _ := nkeys.FromSeed(seed)
	pub, _ := kp.PublicKey()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		Nkeys: []*server.NkeyUser{{Nkey: pub}}, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	dir := t.TempDir()
	good, other := filepath.Join(dir, "good.nk"), filepath.Join(dir, "other.nk")
	os.WriteFile(good, seed, 0o600)
	os.WriteFile(other, nkeySeed(t), 0o600)

	b := start(t, bus.Config{URL: srv.ClientURL(), NKeyFile: good})
	if err := b.Healthy(); err != nil {
		t.Fatal(err)
	}
	s, err := b.Stream(t.Context(), bus.StreamConfig{Name: "K", Subjects: []string{"k"}, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Replicas != 1 || cfg.Storage != jetstream.FileStorage || cfg.Duplicates <= bus.RetryWithin {
		t.Errorf("stream: replicas %d, storage %v, duplicates %s", cfg.Replicas, cfg.Storage, cfg.Duplicates)
	}
	if b, err := bus.Start(t.Context(), bus.Config{URL: srv.ClientURL(), NKeyFile: other}); err == nil {
		b.Close()
		t.Error("a key the server does not list connected")
	}
}

// A dedupe window no longer than the publish retries is refused: a retry of
// a publish that landed would be stored twice.
func TestStreamDuplicatesLongerThanRetries(t *testing.T) {
	t.Parallel()
	b := start(t, bus.Config{StoreDir: t.TempDir()})
	_, err := b.Stream(t.Context(), bus.StreamConfig{Name: "D", Subjects: []string{"d"}, MaxAge: time.Hour, Duplicates: bus.RetryWithin})
	if err == nil || !strings.Contains(err.Error(), "dedupe window") {
		t.Errorf("err %v", err)
	}
}

// busTLS writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, PEM, into dir.
func busTLS(t *testing.T, dir string) (ca, srvCert, srvKey, cliCert, cliKey string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bus test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(k)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	ca = write("ca.pem", "CERTIFICATE", caDER)
	srvCert, srvKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return
}

// TestTLS: with VOUCH_BUS_CA_FILE the client verifies the server and the
// connection is TLS; with the client certificate it reaches a server that
// asks for one, and without it does not; without the CA it does not trust
// the server.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, srvCert, srvKey, cliCert, cliKey := busTLS(t, dir)
	for _, tt := range []struct {
		name   string
		verify bool // the server asks for a client certificate
		cfg    bus.Config
		ok     bool
	}{
		{"CA", false, bus.Config{CAFile: ca}, true},
		{"no CA", false, bus.Config{}, false},
		{"client certificate asked and shown", true, bus.Config{CAFile: ca, CertFile: cliCert, KeyFile: cliKey}, true},
		{"client certificate asked, none shown", true, bus.Config{CAFile: ca}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: srvCert, KeyFile: srvKey, CaFile: ca, Verify: tt.verify})
			if err != nil {
				t.Fatal(err)
			}
			srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
				TLS: true, TLSVerify: tt.verify, TLSConfig: tc, TLSTimeout: 2, NoSigs: true, NoLog: true})
			if err != nil {
				t.Fatal(err)
			}
			srv.Start()
			t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
			if !srv.ReadyForConnections(10 * time.Second) {
				t.Fatal("server not ready")
			}
			tt.cfg.URL = srv.ClientURL()
			b, err := bus.Start(t.Context(), tt.cfg)
			if !tt.ok {
				if err == nil {
					b.Close()
					t.Fatal("connected")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if _, err := b.Conn().TLSConnectionState(); err != nil {
				t.Errorf("not TLS: %v", err)
			}
			if err := b.Healthy(); err != nil {
				t.Error(err)
			}
		})
	}
}
