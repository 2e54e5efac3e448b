package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestOpenBucketWaitsForTheBus: a bus that does not answer yet (a
// cluster electing the bucket's leader; here JetStream enabled only after
// the first tries) is asked again, not taken for a failure that stops the
// phone API at start (TestBusClusterLeaderKill's ingest stopped so once).
func TestOpenBucketWaitsForTheBus(t *testing.T) {
	t.Parallel()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type opened struct {
		kv  jetstream.KeyValue
		err error
	}
	done := make(chan opened, 2)
	go func() {
		kv, err := openBucket(ctx, js, jetstream.KeyValueConfig{Bucket: "late", History: 1})
		done <- opened{kv, err}
	}()
	go func() {
		kv, err := openUsed(ctx, js, 1, time.Hour)
		done <- opened{kv, err}
	}()
	time.Sleep(500 * time.Millisecond)
	if err := srv.EnableJetStream(&server.JetStreamConfig{StoreDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if o := <-done; o.err != nil || o.kv == nil {
			t.Errorf("bucket not opened once the bus answered: %v", o.err)
		}
	}
}
