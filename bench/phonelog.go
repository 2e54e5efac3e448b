package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/client"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/cdn"
	"github.com/vouch-nl/vouch/internal/transparency"
)

// phonelogStage is the stage "phonelog", called -runs times: what a phone
// does to check its authorization is in the transparency log (issue 23:
// under 5 ms) — fetch the checkpoint and verify it, fetch the tiles of
// the inclusion proof and verify it with transparency-dev/merkle — against
// a log of -phonelog-leaves leaves served over HTTP by the origin's
// handler (vouch cdn's), each proof from a fresh phone (no tile cached).
// Finding the leaf's index in the published entry bundles (once per
// authorization, a binary search by day) is a row to read.
func phonelogStage(fs *flag.FlagSet) measure {
	n := fs.Int("phonelog-leaves", 100_000, "leaves of the log the phone proves its leaf in (stage phonelog)")
	proofs := fs.Int("phonelog-proofs", 200, "inclusion proofs per run (stage phonelog)")
	var lg *phoneBenchLog
	return func(ctx context.Context, b *bench) ([]Row, error) {
		if lg == nil {
			var err error
			if lg, err = newPhoneBenchLog(ctx, *n); err != nil {
				return nil, err
			}
			b.cleanup = append(b.cleanup, lg.close)
		}
		hc := &http.Client{Timeout: 10 * time.Second}
		prove := make([]time.Duration, 0, *proofs)
		locate := make([]time.Duration, 0, 10)
		for i := range *proofs {
			idx, err := rand.Int(rand.Reader, big.NewInt(int64(len(lg.entries))))
			if err != nil {
				return nil, err
			}
			entry := lg.entries[idx.Int64()]
			if i < 10 {
				src, _ := transparency.OpenPhoneSource(lg.url, hc)
				start := time.Now()
				got, ok, err := transparency.LocateLeaf(ctx, src, uint64(len(lg.entries)), entry)
				if err != nil || !ok || got != uint64(idx.Int64()) {
					return nil, fmt.Errorf("phonelog: leaf %d located at %d (%v): %v", idx, got, ok, err)
				}
				locate = append(locate, time.Since(start))
			}
			start := time.Now()
			if err := lg.prove(ctx, hc, uint64(idx.Int64()), entry); err != nil {
				return nil, err
			}
			prove = append(prove, time.Since(start))
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		k := len(lg.entries) / 1000
		return []Row{
			{Name: fmt.Sprintf("phone: inclusion proof fetched and verified, %dk-leaf log (checkpoint and tiles over HTTP from the origin's handler, merkle's verifier, no tile cached): median", k),
				Unit: "ms", Value: ms(percentile(prove, 50)), Target: target(5), Detail: fmt.Sprintf("%d proofs a run", len(prove))},
			// The tail is this machine's load more than the phone's work: a
			// row to read.
			{Name: fmt.Sprintf("phone: inclusion proof fetched and verified, %dk-leaf log: p99", k),
				Unit: "ms", Value: ms(percentile(prove, 99))},
			{Name: fmt.Sprintf("phone: its leaf's index found in the published entry bundles, %dk-leaf log (once per authorization, a binary search by day): median", k),
				Unit: "ms", Value: ms(percentile(locate, 50)), Detail: fmt.Sprintf("%d searches a run", len(locate))},
		}, nil
	}
}

// phoneBenchLog is a log of authorizations over a hundred days, written
// by tessera and served by the origin's handler.
type phoneBenchLog struct {
	dir     string
	url     string
	policy  *transparency.PhonePolicy
	entries [][]byte
	close   func()
}

func newPhoneBenchLog(ctx context.Context, n int) (*phoneBenchLog, error) {
	dir, err := os.MkdirTemp("", "vouch-bench-phonelog-")
	if err != nil {
		return nil, err
	}
	lg := &phoneBenchLog{dir: dir, close: func() { os.RemoveAll(dir) }}
	fail := func(err error) (*phoneBenchLog, error) { lg.close(); return nil, err }
	skey, vkey, err := note.GenerateKey(rand.Reader, transparencyBenchOrigin)
	if err != nil {
		return fail(err)
	}
	if lg.policy, err = transparency.NewPhonePolicy(vkey, nil, 0); err != nil {
		return fail(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return fail(err)
	}
	tctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	driver, err := posix.New(tctx, posix.Config{Path: filepath.Join(dir, "log")})
	if err != nil {
		return fail(err)
	}
	app, shutdown, reader, err := tessera.NewAppender(tctx, driver, tessera.NewAppendOptions().
		WithCheckpointSigner(signer).WithBatching(256, 20*time.Millisecond).WithCheckpointInterval(200*time.Millisecond))
	if err != nil {
		return fail(err)
	}
	day0 := time.Now().AddDate(0, 0, -100)
	futures := make([]tessera.IndexFuture, n)
	for i := range n {
		b := make([]byte, 32)
		rand.Read(b)
		e := transparency.AuthorizationEntry(b, day0.Add(time.Duration(float64(i)/float64(n)*float64(100*24*time.Hour))))
		lg.entries = append(lg.entries, e)
		futures[i] = app.Add(tctx, tessera.NewEntry(e))
	}
	for _, f := range futures {
		if _, err := f(); err != nil {
			return fail(err)
		}
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		raw, err := reader.ReadCheckpoint(tctx)
		if err == nil {
			if cp, _, err := lg.policy.Open(raw); err == nil && cp.Size == uint64(n) {
				break
			}
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("phonelog: no checkpoint of %d leaves", n))
		}
	}
	if err := shutdown(tctx); err != nil {
		return fail(err)
	}
	h, err := cdn.NewHandler(dir, time.Hour, slog.New(slog.DiscardHandler))
	if err != nil {
		return fail(err)
	}
	srv := httptest.NewServer(h)
	lg.url = srv.URL + "/log/"
	lg.close = func() { srv.Close(); h.Close(); os.RemoveAll(dir) }
	return lg, nil
}

// prove is the phone's check of one leaf: the checkpoint fetched and
// verified, the proof's tiles fetched and the proof verified.
func (lg *phoneBenchLog) prove(ctx context.Context, hc *http.Client, idx uint64, entry []byte) error {
	src, err := transparency.OpenPhoneSource(lg.url, hc)
	if err != nil {
		return err
	}
	raw, err := src.ReadCheckpoint(ctx)
	if err != nil {
		return err
	}
	cp, _, err := lg.policy.Open(raw)
	if err != nil {
		return err
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, src.ReadTile)
	if err != nil {
		return err
	}
	return transparency.ProveInclusion(ctx, pb, cp, idx, entry)
}
