package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/bus"
)

// Bus starts an embedded JetStream server with its store in a temporary
// directory, reachable on a loopback port, stopped when the test ends.
func Bus(t testing.TB) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Start(ctx, bus.Config{StoreDir: t.TempDir(), Host: "127.0.0.1", Name: "vouch-test"})
	if err != nil {
		t.Fatalf("testenv: bus: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}
