package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/ingest"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
)

// testIngest is the real phone API on an embedded bus, with the test
// cards' trust and every card's license active.
type testIngest struct {
	man   *testpki.Manifest
	bus   *bus.Bus
	auths *bus.Bucket
	srv   *httptest.Server
}

func startIngest(t *testing.T, cfg ingest.Config) *testIngest {
	t.Helper()
	man := testenv.Cards(t)
	for _, kv := range man.Env() {
		t.Setenv(kv[0], kv[1])
	}
	ctx := t.Context()
	b := testenv.Bus(t)
	files := man.TrustFiles()
	tcfg := trust.Config{Roots: files.Roots, CAs: files.CAs(), CRLs: files.CRLs, Jurisdiction: "NL", Profile: "test",
		AttestationKeys: []string{man.Backend.AttestationPub}}
	tr, err := tcfg.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	licenses, err := b.Bucket(ctx, "vouch-licenses", registrysync.BucketDescription)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range man.Cards {
		v, _ := json.Marshal(registrysync.LicenseRecord{Status: "active", MayVouch: true, ChangedAt: time.Now()})
		if err := licenses.PutAll(ctx, []bus.KeyValue{{Key: c.UZI, Value: v}}); err != nil {
			t.Fatal(err)
		}
	}
	auths, err := b.ExpiringBucket(ctx, "authorizations", "test", protocol.MaxValidity)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ingest.New(ctx, cfg,
		ingest.Deps{Trust: tr, CRLFiles: tcfg.CRLs, Bus: b, Log: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	svc.Register(srv.Echo())
	hs := httptest.NewServer(srv.Echo())
	t.Cleanup(hs.Close)
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ready := true
		for _, c := range svc.Checks() {
			ready = ready && c.Check(ctx) == nil
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ingest not ready")
		}
	}
	return &testIngest{man: man, bus: b, auths: auths, srv: hs}
}

// TestAgainstIngest runs the phone against the real phone API on an
// embedded bus: it polls while nobody vouched, picks up the bundle once
// the authorization is in the bucket, verifies it, uploads, and the same keys
// again are a retry and other keys with the bundle a replay. The keys are on the
// stream once.
func TestAgainstIngest(t *testing.T) {
	ing := startIngest(t, ingest.Config{RatePerSecond: 10000, RateBurst: 10000, BusTimeout: 3 * time.Second})
	man, b, auths, hs, ctx := ing.man, ing.bus, ing.auths, ing.srv, t.Context()
	dir := t.TempDir()
	keyFile, bundleFile, keysFile := filepath.Join(dir, "phone.key"), filepath.Join(dir, "bundle.bin"), filepath.Join(dir, "keys.txt")
	priv, err := createKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	bundle := issueBundle(t, man, "gp", pub)
	// Vouched while the phone polls.
	go func() {
		time.Sleep(300 * time.Millisecond)
		auths.PutAll(context.Background(), []bus.KeyValue{{Key: backoffice.BucketKey(phonecode.FromPublicKey(pub)), Value: bundle}})
	}()
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := realMain(context.Background(), args, &out)
		return out.String(), err
	}
	out, err := run("pickup", "-key", keyFile, "-api", hs.URL, "-out", bundleFile, "-poll", "50ms", "-poll-max", "100ms", "-timeout", "20s")
	if err != nil || !strings.HasPrefix(out, "OK  bundle") {
		t.Fatalf("pickup: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(bundleFile); !bytes.Equal(got, bundle) {
		t.Fatal("pickup saved another bundle")
	}
	out, err = run("upload", "-key", keyFile, "-api", hs.URL, "-bundle", bundleFile, "-keys", keysFile)
	if err != nil || !strings.HasPrefix(out, "OK  14 keys published") {
		t.Fatalf("upload: %v\n%s", err, out)
	}
	time.Sleep(1100 * time.Millisecond) // another second: another signed upload
	// The same keys signed again: a retry of the same upload.
	if out, err = run("upload", "-key", keyFile, "-api", hs.URL, "-bundle", bundleFile, "-keys", keysFile); err != nil {
		t.Errorf("the same keys again: %v\n%s", err, out)
	}
	// Other keys with the same authorization: a replay.
	other := filepath.Join(dir, "other-keys.txt")
	if out, err = run("upload", "-key", keyFile, "-api", hs.URL, "-bundle", bundleFile, "-keys", other); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("second upload of one authorization: %v\n%s", err, out)
	}
	st, err := b.JetStream().Stream(ctx, exposure.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("%d records on the stream, want 1", info.State.Msgs)
	}
}

// TestSimulateRateLimited runs the README's simulation — 20 phones from one
// address — against a per-address limit well below what they ask for (2
// requests a second, burst 10; the default is 5 and 20): the phones are
// answered 429 with Retry-After, wait, and all of them upload.
func TestSimulateRateLimited(t *testing.T) {
	ing := startIngest(t, ingest.Config{RatePerSecond: 2, RateBurst: 10, BusTimeout: 3 * time.Second})
	dir := t.TempDir()
	codesFile := filepath.Join(dir, "codes.txt")
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- realMain(t.Context(), []string{"simulate", "-n", "20", "-api", ing.srv.URL, "-codes", codesFile, "-timeout", "3m"}, &out)
	}()
	// Whoever vouches reads the codes once the file appears.
	var b []byte
	for try := 0; ; try++ {
		var err error
		if b, err = os.ReadFile(codesFile); err == nil {
			break
		}
		if try == 600 {
			t.Fatal("no codes file")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var kvs []bus.KeyValue
	for _, line := range strings.Fields(string(b)) {
		code, err := phonecode.Parse(line)
		if err != nil {
			t.Fatal(err)
		}
		kvs = append(kvs, bus.KeyValue{Key: backoffice.BucketKey(code), Value: issueBundleFor(t, ing.man, "gp", code)})
	}
	if err := ing.auths.PutAll(context.Background(), kvs); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || !strings.Contains(out.String(), "done    20/20 uploaded, 20 vouched, 0 failed") {
		t.Fatalf("simulate: %v\n%s", err, out.String())
	}
	st, err := ing.bus.JetStream().Stream(t.Context(), exposure.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 20 {
		t.Errorf("%d records on the stream, want 20", info.State.Msgs)
	}
}
