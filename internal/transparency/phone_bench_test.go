package transparency

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/client"

	"github.com/vouch-nl/vouch/internal/cdn"
)

// BenchmarkPhoneInclusion is what a phone does to check its leaf (issue
// 23: under 5 ms): the checkpoint fetched over HTTP from the origin's
// handler and verified, the inclusion proof's tiles fetched (no tile
// cached: a fresh ProofBuilder each time) and the proof verified by
// merkle's verifier, in a log of 20,000 leaves. bench stage phonelog
// measures the same in a bigger log; run either under flock /tmp/bench.lock.
func BenchmarkPhoneInclusion(b *testing.B) {
	skey, vkey := newKey(b, testOrigin)
	root := b.TempDir()
	entries := someEntries(20_000)
	buildLog(b, filepath.Join(root, "log"), skey, vkey, entries)
	h, err := cdn.NewHandler(root, time.Hour, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	srv := httptest.NewServer(h)
	defer srv.Close()
	p := phonePolicy(b, vkey, nil, 0)
	hc := &http.Client{Timeout: 10 * time.Second}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		idx := rand.N(uint64(len(entries)))
		src, err := OpenPhoneSource(srv.URL+"/log/", hc)
		if err != nil {
			b.Fatal(err)
		}
		raw, err := src.ReadCheckpoint(ctx)
		if err != nil {
			b.Fatal(err)
		}
		cp, _, err := p.Open(raw)
		if err != nil {
			b.Fatal(err)
		}
		pb, err := client.NewProofBuilder(ctx, cp.Size, src.ReadTile)
		if err != nil {
			b.Fatal(err)
		}
		if err := ProveInclusion(ctx, pb, cp, idx, entries[idx]); err != nil {
			b.Fatal(err)
		}
	}
}
