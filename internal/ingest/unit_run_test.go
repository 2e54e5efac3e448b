package ingest

// The fast layer, continued: what Run keeps current (the CRLs and the
// license states) and the readiness checks an operator's probe reads.

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/revocation"
)

// fakeCRLs is a revocation source that counts its reads.
type fakeCRLs struct {
	ders  [][]byte
	err   error
	reads atomic.Int32
}

func (f *fakeCRLs) CRLs(context.Context) ([][]byte, error) {
	f.reads.Add(1)
	return f.ders, f.err
}

// currentCRLs are a CRL of every CA of card's trust, current at t0.
func currentCRLs(t *testing.T, card *softCard) [][]byte {
	t.Helper()
	var out [][]byte
	for ca, key := range card.caKeys {
		der, err := x509.CreateRevocationList(nil, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: t0.Add(-time.Hour),
			NextUpdate: t0.Add(24 * time.Hour)}, ca, key)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, der)
	}
	return out
}

func TestCRLsRefresh(t *testing.T) {
	t.Parallel()
	card, _ := fixtures(t)
	var logs bytes.Buffer
	src := &fakeCRLs{err: errors.New("bus down")}
	c := &crls{set: revocation.NewSet(), src: src, cas: card.trust.CAs(), now: func() time.Time { return t0 },
		log: slog.New(slog.NewTextHandler(&logs, nil))}
	c.refresh(context.Background())
	if !strings.Contains(logs.String(), "CRLs: some were not taken") || c.ready(context.Background()) == nil {
		t.Errorf("a failed read: logged %q, ready %v; want a warning and not ready", logs.String(), c.ready(context.Background()))
	}
	src.err, src.ders = nil, currentCRLs(t, card)
	logs.Reset()
	c.refresh(context.Background())
	if err := c.ready(context.Background()); err != nil || logs.Len() != 0 {
		t.Errorf("every CA's CRL: ready %v, logged %q", err, logs.String())
	}
	// A cancelled refresh is the service stopping, not a CRL problem.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src.err = context.Canceled
	logs.Reset()
	c.refresh(ctx)
	if logs.Len() != 0 {
		t.Errorf("a refresh cut short by the end logged %q", logs.String())
	}
}

// Run refreshes the CRLs at its interval, keeps watching the licenses,
// and closes the access log when it ends.
func TestRunRefreshesAndEnds(t *testing.T) {
	t.Parallel()
	card, _ := fixtures(t)
	u := newUnit(t, nil)
	kv := newFakeKV()
	kv.watcher = &fakeWatcher{ch: make(chan jetstream.KeyValueEntry, 1)}
	kv.watcher.ch <- nil
	u.s.licenses = newLicenses(kv, u.s.log)
	src := &fakeCRLs{ders: currentCRLs(t, card)}
	u.s.crls = &crls{set: revocation.NewSet(), src: src, cas: card.trust.CAs(), every: 20 * time.Millisecond, now: u.clock, log: u.s.log}
	var err error
	if u.s.access, err = NewAccessLog(t.TempDir(), u.clock); err != nil {
		t.Fatal(err)
	}
	_ = u.s.access.Log("192.0.2.1", "x")
	checks := u.s.Checks()
	if checks["licenses"].Check(context.Background()) == nil || checks["revocation"].Check(context.Background()) == nil {
		t.Error("ready before the licenses and the CRLs were read")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	var runErr error
	go func() { defer wg.Done(); runErr = u.s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for src.reads.Load() < 3 || checks["licenses"].Check(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("in 10 s: %d CRL reads, licenses %v", src.reads.Load(), checks["licenses"].Check(context.Background()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := checks["revocation"].Check(context.Background()); err != nil {
		t.Errorf("revocation not ready after refreshes: %v", err)
	}
	cancel()
	wg.Wait()
	if runErr != nil || u.s.access.f != nil {
		t.Errorf("Run ended with %v, access log open %v", runErr, u.s.access.f != nil)
	}
}

// Rotation closes the previous hour's file: a server up for weeks must
// not run out of file descriptors, one per hour.
func TestAccessLogRotationClosesTheOldFile(t *testing.T) {
	t.Parallel()
	now := t0
	l, err := NewAccessLog(t.TempDir(), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_ = l.Log("192.0.2.1", "a")
	old := l.f
	now = now.Add(time.Hour)
	_ = l.Log("192.0.2.1", "b")
	if _, err := old.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("the previous hour's file is still open: %v", err)
	}
}

// Within an hour every line goes to the one open file: no reopening, no
// reading of the directory, per request.
func TestAccessLogKeepsTheHoursFile(t *testing.T) {
	t.Parallel()
	now := t0
	l, err := NewAccessLog(t.TempDir(), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_ = l.Log("192.0.2.1", "a")
	f := l.f
	now = now.Add(59 * time.Minute)
	_ = l.Log("192.0.2.1", "b")
	if l.f != f {
		t.Error("a second write within the hour reopened the file")
	}
}

// An old file that cannot be deleted is reported (Run warns the operator)
// and does not stop the others from going.
func TestAccessLogPruneReportsFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stuck := AccessLogName(t0.Add(-72 * time.Hour))
	// A non-empty directory under a log's name: os.Remove fails, even for root.
	if err := os.MkdirAll(dir+"/"+stuck+"/x", 0o700); err != nil {
		t.Fatal(err)
	}
	for _, h := range []time.Duration{-71, -70} {
		if err := os.WriteFile(dir+"/"+AccessLogName(t0.Add(h*time.Hour)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l, err := NewAccessLog(dir, func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	err = l.Prune()
	if err == nil || !strings.Contains(err.Error(), "ingest: access log") {
		t.Errorf("Prune with an undeletable file: %v, want an error", err)
	}
	for _, h := range []time.Duration{-71, -70} {
		if _, err := os.Stat(dir + "/" + AccessLogName(t0.Add(h*time.Hour))); !os.IsNotExist(err) {
			t.Errorf("the file of %v h was kept: %v", h, err)
		}
	}
	// A file gone meanwhile is no failure.
	if err := os.RemoveAll(dir + "/" + stuck); err != nil {
		t.Fatal(err)
	}
	if err := l.Prune(); err != nil {
		t.Errorf("Prune of a clean directory: %v", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := l.Prune(); err == nil {
		t.Error("Prune of a vanished directory: no error")
	}
}

// An upload signed exactly 5 minutes before or after the server's time is
// on time; a second more is time-skew.
func TestUnitUploadClockSkewBounds(t *testing.T) {
	t.Parallel()
	u := newUnit(t, nil)
	for i, d := range []time.Duration{-protocol.PhoneClockSkew, protocol.PhoneClockSkew} {
		p := newPhoneKey(t)
		body := p.uploadBody(u.card.bundle(t, p.pub, aidOf(byte(20+i)), ""), t0.Add(d), goodKeys(1))
		if a := u.upload(body, "0"); a.status != 200 {
			t.Errorf("signed %v from now: %d %s, want 200", d, a.status, a.body)
		}
	}
	for _, d := range []time.Duration{-protocol.PhoneClockSkew - time.Second, protocol.PhoneClockSkew + time.Second} {
		if err := checkTime(t0.Add(d), t0); err != errStale {
			t.Errorf("checkTime %v from now: %v, want time-skew", d, err)
		}
	}
}
