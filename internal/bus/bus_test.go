package bus_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sethvargo/go-envconfig"

	"github.com/vouch-nl/vouch/internal/bus"
)

func start(t *testing.T, cfg bus.Config) *bus.Bus {
	t.Helper()
	b, err := bus.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	var cfg bus.Config
	err := envconfig.ProcessWith(t.Context(), &envconfig.Config{
		Target: &cfg, Lookuper: envconfig.MapLookuper(map[string]string{"VOUCH_BUS_DIR": "/x"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := bus.Config{StoreDir: "/x", Host: "127.0.0.1", Port: -1, Name: "vouch", StartTimeout: 10 * time.Second, Replicas: 1}
	if cfg != want {
		t.Fatalf("cfg = %+v, want %+v", cfg, want)
	}
}

func TestEmbedded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  bus.Config
	}{
		{"in process only (the default)", bus.Config{}},
		{"listening, with a token", bus.Config{Listen: true, Token: token}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.StoreDir = t.TempDir()
			b := start(t, tt.cfg)
			if !b.Embedded() {
				t.Fatal("not embedded")
			}
			if err := b.Healthy(); err != nil {
				t.Fatalf("Healthy: %v", err)
			}
			exercise(t, b.JetStream())
		})
	}
}

// exercise checks the JetStream features Vouch relies on: acknowledged
// publishing with dedupe by message id, and a KV bucket with a TTL.
func exercise(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "KEYS", Subjects: []string{"keys.>"}, Duplicates: time.Minute,
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	ack, err := js.Publish(ctx, "keys.upload", []byte("k1"), jetstream.WithMsgID("auth-1"))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if ack.Duplicate || ack.Sequence != 1 {
		t.Fatalf("first ack = %+v", ack)
	}
	ack, err = js.Publish(ctx, "keys.upload", []byte("k1"), jetstream.WithMsgID("auth-1"))
	if err != nil {
		t.Fatalf("republish: %v", err)
	}
	if !ack.Duplicate {
		t.Fatalf("republish with same id not flagged duplicate: %+v", ack)
	}

	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bundles", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatalf("create kv: %v", err)
	}
	if _, err := kv.Put(ctx, "CODE1", []byte("bundle")); err != nil {
		t.Fatalf("put: %v", err)
	}
	e, err := kv.Get(ctx, "CODE1")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if string(e.Value()) != "bundle" {
		t.Fatalf("get = %q", e.Value())
	}
}

func TestExternalByURL(t *testing.T) {
	t.Parallel()
	server := start(t, bus.Config{StoreDir: t.TempDir(), Listen: true, Token: token})
	// Several servers, the first of which is down: the client takes the
	// one that answers.
	client := start(t, bus.Config{URL: "nats://127.0.0.1:1, " + server.ClientURL(), Token: token})
	if client.Embedded() {
		t.Fatal("client started its own server")
	}
	if client.Conn().ConnectedUrl() != server.ClientURL() {
		t.Fatalf("connected to %s, want %s", client.Conn().ConnectedUrl(), server.ClientURL())
	}
	if err := client.Healthy(); err != nil {
		t.Fatal(err)
	}
	exercise(t, client.JetStream())

	// The server sees what the client wrote: one stream, shared.
	info, err := server.JetStream().AccountInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Streams != 2 { // KEYS and the KV bucket's stream
		t.Fatalf("streams = %d, want 2", info.Streams)
	}
}

func TestUnhealthyAfterServerStops(t *testing.T) {
	t.Parallel()
	server, err := bus.Start(t.Context(), bus.Config{StoreDir: t.TempDir(), Listen: true, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	client := start(t, bus.Config{URL: server.ClientURL(), Token: token})
	server.Close()
	deadline := time.Now().Add(5 * time.Second)
	for client.Healthy() == nil {
		if time.Now().After(deadline) {
			t.Fatal("client still healthy after its server stopped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if client.Conn().Status() == nats.CLOSED {
		t.Fatal("client gave up instead of reconnecting")
	}
}

func TestStartFailsOnUnreachableURL(t *testing.T) {
	t.Parallel()
	if b, err := bus.Start(t.Context(), bus.Config{URL: "nats://127.0.0.1:1"}); err == nil {
		b.Close()
		t.Fatal("Start succeeded")
	}
}

const token = "0123456789abcdef0123456789abcdef"

// TestEmbeddedIsNotOpen: the embedded bus holds the license states, so no
// other local process may write them. By default it does not listen at
// all; it listens only with a token, and refuses clients without it; its
// store may not be open to other users.
func TestEmbeddedIsNotOpen(t *testing.T) {
	t.Parallel()
	quiet := start(t, bus.Config{StoreDir: t.TempDir(), Port: 0})
	if nc, err := nats.Connect(quiet.ClientURL(), nats.Timeout(time.Second)); err == nil {
		nc.Close()
		t.Errorf("a client reached the default embedded bus at %s", quiet.ClientURL())
	}

	if b, err := bus.Start(t.Context(), bus.Config{StoreDir: t.TempDir(), Listen: true}); err == nil {
		b.Close()
		t.Error("a listening bus started without a token")
	}
	if b, err := bus.Start(t.Context(), bus.Config{StoreDir: t.TempDir(), Listen: true, Token: "short"}); err == nil {
		b.Close()
		t.Error("a listening bus started with a short token")
	}
	loud := start(t, bus.Config{StoreDir: t.TempDir(), Listen: true, Token: token})
	for name, opts := range map[string][]nats.Option{"no token": nil, "wrong token": {nats.Token(token[1:] + "x")}} {
		if nc, err := nats.Connect(loud.ClientURL(), append(opts, nats.Timeout(time.Second))...); err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
		}
	}
	nc, err := nats.Connect(loud.ClientURL(), nats.Token(token))
	if err != nil {
		t.Fatalf("with the token: %v", err)
	}
	nc.Close()

	open := filepath.Join(t.TempDir(), "bus")
	if err := os.MkdirAll(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if b, err := bus.Start(t.Context(), bus.Config{StoreDir: open}); err == nil || !strings.Contains(err.Error(), "writable by other users") {
		if b != nil {
			b.Close()
		}
		t.Errorf("a store open to all: %v", err)
	}
}

// TestDefaultStoreDir: without VOUCH_BUS_DIR the store is the user's own,
// under XDG_STATE_HOME, never a shared temporary directory.
func TestDefaultStoreDir(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	b := start(t, bus.Config{})
	b.Close()
	st, err := os.Stat(filepath.Join(state, "vouch", "bus"))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("store: %v, %v", st, err)
	}
}

// TestBucketPutAllWaitsForAcks: PutAll returns nil only once the bus has
// acknowledged every put; when the bucket's stream is gone the puts are not
// acknowledged and PutAll says so, so the caller keeps them to publish again.
func TestBucketPutAllWaitsForAcks(t *testing.T) {
	t.Parallel()
	b := start(t, bus.Config{StoreDir: t.TempDir()})
	ctx := t.Context()
	k, err := b.Bucket(ctx, "licenses", "test")
	if err != nil {
		t.Fatal(err)
	}
	entries := make([]bus.KeyValue, 3000) // more than one batch of pending acks
	for i := range entries {
		entries[i] = bus.KeyValue{Key: fmt.Sprintf("9%08d", i), Value: []byte(fmt.Sprint(i))}
	}
	entries = append(entries, bus.KeyValue{Key: "900000000", Value: []byte("last")})
	if err := k.PutAll(ctx, entries); err != nil {
		t.Fatal(err)
	}
	all, err := k.All(ctx)
	if err != nil || len(all) != 3000 || string(all["900000000"]) != "last" || string(all["900002999"]) != "2999" {
		t.Fatalf("after PutAll: %d keys, %v", len(all), err)
	}
	if v, err := k.Get(ctx, "900000000"); err != nil || string(v) != "last" {
		t.Errorf("Get: %q %v", v, err)
	}
	if v, err := k.Get(ctx, "nobody"); err != nil || v != nil {
		t.Errorf("Get of a missing key: %q %v", v, err)
	}
	if err := b.JetStream().DeleteKeyValue(ctx, "licenses"); err != nil {
		t.Fatal(err)
	}
	if err := k.PutAll(ctx, entries[:10]); err == nil {
		t.Error("PutAll into a deleted bucket returned nil")
	}
	if created, err := k.Ensure(ctx); err != nil || !created {
		t.Errorf("Ensure after the loss: created %v, %v", created, err)
	}
	if created, err := k.Ensure(ctx); err != nil || created {
		t.Errorf("Ensure again: created %v, %v", created, err)
	}
}

// TestBucketEach: Each hands over the current value of every key, more
// than one batch of them, once each, and leaves deleted and purged keys
// out; an empty bucket gives nothing, at once; fn's error ends it.
func TestBucketEach(t *testing.T) {
	t.Parallel()
	b := start(t, bus.Config{StoreDir: t.TempDir()})
	ctx := t.Context()
	k, err := b.Bucket(ctx, "each", "test")
	if err != nil {
		t.Fatal(err)
	}
	count := func() (map[string]string, error) {
		got := map[string]string{}
		err := k.Each(ctx, func(key string, value []byte) error {
			if _, dup := got[key]; dup {
				t.Errorf("key %s given twice", key)
			}
			got[key] = string(value)
			return nil
		})
		return got, err
	}
	if got, err := count(); err != nil || len(got) != 0 {
		t.Fatalf("empty bucket: %v, %v", got, err)
	}
	if empty, err := k.Empty(ctx); err != nil || !empty {
		t.Errorf("Empty of a new bucket: %v, %v", empty, err)
	}
	entries := make([]bus.KeyValue, 2500)
	for i := range entries {
		entries[i] = bus.KeyValue{Key: fmt.Sprintf("9%08d", i), Value: []byte("old")}
	}
	if err := k.PutAll(ctx, entries); err != nil {
		t.Fatal(err)
	}
	for i := range entries {
		entries[i].Value = []byte(fmt.Sprint(i))
	}
	if err := k.PutAll(ctx, entries); err != nil {
		t.Fatal(err)
	}
	kv, err := b.JetStream().KeyValue(ctx, "each")
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "900000007"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "900000008"); err != nil {
		t.Fatal(err)
	}
	got, err := count()
	if err != nil {
		t.Fatal(err)
	}
	if empty, err := k.Empty(ctx); err != nil || empty {
		t.Errorf("Empty of a filled bucket: %v, %v", empty, err)
	}
	if len(got) != 2498 || got["900000000"] != "0" || got["900002499"] != "2499" {
		t.Errorf("Each gave %d keys (want 2498), first %q, last %q", len(got), got["900000000"], got["900002499"])
	}
	if _, ok := got["900000007"]; ok {
		t.Error("a deleted key was given")
	}
	if _, ok := got["900000008"]; ok {
		t.Error("a purged key was given")
	}
	stop := errors.New("stop")
	n := 0
	if err := k.Each(ctx, func(string, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("fn's error: %v after %d calls", err, n)
	}
}
