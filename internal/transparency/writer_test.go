package transparency

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vouch-nl/vouch/internal/lease"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// The writer logs every stored authorization and the audit chain's head;
// inclusion and consistency proofs built from the published tiles verify
// with golang.org/x/mod/sumdb/tlog, code that shares nothing with tessera
// or transparency-dev/merkle; the monitor counts the day's leaves and the
// auditor finds everything in place.
func TestWriterProofsVerifyIndependently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.Database(t)
	dir := t.TempDir()
	skey, vkey := newKey(t, testOrigin)
	insertAuthorizations(t, db, 150)
	appendAudit(t, db, 3)
	startWriter(t, db, testConfig(dir, skey))
	waitLogged(t, db, dir, vkey, 151)
	v, _ := Verifier(vkey)
	src, err := OpenSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := src.ReadCheckpoint(ctx)
	first, err := OpenCheckpoint(raw, v)
	if err != nil {
		t.Fatal(err)
	}

	insertAuthorizations(t, db, 70)
	appendAudit(t, db, 2)
	waitLogged(t, db, dir, vkey, 222)
	raw, _ = src.ReadCheckpoint(ctx)
	cp, err := OpenCheckpoint(raw, v)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := readEntries(ctx, src.ReadEntryBundle, 0, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, src.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	var root tlog.Hash
	copy(root[:], cp.Root)
	for i, e := range entries {
		p, err := pb.InclusionProof(ctx, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		rp := make(tlog.RecordProof, len(p))
		for j := range p {
			copy(rp[j][:], p[j])
		}
		if err := tlog.CheckRecord(rp, int64(cp.Size), root, int64(i), tlog.RecordHash(e)); err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
		// The proof is of that leaf only.
		if i > 0 {
			if err := tlog.CheckRecord(rp, int64(cp.Size), root, int64(i), tlog.RecordHash(entries[i-1])); err == nil {
				t.Fatalf("leaf %d's proof proves leaf %d's entry", i, i-1)
			}
		}
	}
	p, err := pb.ConsistencyProof(ctx, first.Size, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	tp := make(tlog.TreeProof, len(p))
	for j := range p {
		copy(tp[j][:], p[j])
	}
	var oldRoot tlog.Hash
	copy(oldRoot[:], first.Root)
	if err := tlog.CheckTree(tp, int64(cp.Size), root, int64(first.Size), oldRoot); err != nil {
		t.Fatalf("consistency %d→%d: %v", first.Size, cp.Size, err)
	}
	oldRoot[0] ^= 1
	if err := tlog.CheckTree(tp, int64(cp.Size), root, int64(first.Size), oldRoot); err == nil {
		t.Fatal("the consistency proof holds for another old root")
	}

	// The monitor: two leaves of audit heads, 220 authorizations, today.
	st := &State{Days: map[string]*DayCount{}}
	if _, err := Follow(ctx, src, v, st, false, nil); err != nil {
		t.Fatal(err)
	}
	today := time.Now().UTC().Format("2006-01-02")
	if c := st.Days[today]; c == nil || c.Authorizations != 220 || c.AuditHeads != 2 {
		t.Fatalf("counts %+v, want 220 authorizations and 2 heads today", st.Days)
	}
	// The auditor: everything in place.
	rep, err := Audit(ctx, db, src, v, &State{Days: map[string]*DayCount{}}, time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || rep.Authorizations != 220 || rep.Heads != 2 || rep.Repeats != 0 {
		t.Fatalf("audit %+v", rep)
	}
}

// The origin line never changes: a writer with a key of another name, or
// on a log published under another origin, refuses.
func TestOriginNeverChanges(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	dir := t.TempDir()
	skey, vkey := newKey(t, testOrigin)
	insertAuthorizations(t, db, 3)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := NewWriter(testConfig(dir, skey), db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitLogged(t, db, dir, vkey, 3)
	cancel()
	<-done

	other, _ := newKey(t, "vouch.test/another")
	cfg := testConfig(dir, other)
	if _, err := NewWriter(cfg, db, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("a key named other than the origin was taken")
	}
	cfg.Origin = "vouch.test/another"
	w, err = NewWriter(cfg, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.checkOrigin(); err == nil || !strings.Contains(err.Error(), "never changes") {
		t.Fatalf("another origin on the log: %v", err)
	}
}

// Two writers at once: the lease lets one append; every authorization is
// logged once (without the lease both append the same pending rows).
func TestOneWriterAtATime(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	dir := t.TempDir()
	skey, vkey := newKey(t, testOrigin)
	cfg := testConfig(dir, skey)
	cfg.Batch = 5
	// A slow record after each append: the window in which a second
	// writer, were it running, would append the same rows again.
	slow := func(w *Writer) { w.afterAppend = func() { time.Sleep(30 * time.Millisecond) } }
	startWriter(t, db, cfg, slow)
	startWriter(t, db, cfg, slow)
	for range 10 {
		insertAuthorizations(t, db, 20)
		time.Sleep(10 * time.Millisecond)
	}
	waitLogged(t, db, dir, vkey, 200)
	v, _ := Verifier(vkey)
	src, _ := OpenSource(dir)
	rep, err := Audit(context.Background(), db, src, v, &State{Days: map[string]*DayCount{}}, time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checkpoint.Size != 200 || rep.Repeats != 0 || rep.Authorizations != 200 || len(rep.Problems) != 0 {
		t.Fatalf("two writers: %d leaves, %d repeats, %d proven, %v", rep.Checkpoint.Size, rep.Repeats, rep.Authorizations, rep.Problems)
	}
}

// A log directory that lost leaves the mirror recorded (replaced by an
// older copy, or emptied) stops the writer: appending would give new
// leaves the indices of published ones, a fork.
func TestWriterRefusesALogThatLostLeaves(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.Database(t)
	dir := t.TempDir()
	skey, vkey := newKey(t, testOrigin)
	insertAuthorizations(t, db, 5)
	runUntilLogged(t, db, testConfig(dir, skey), vkey, 5)
	empty := t.TempDir()
	insertAuthorizations(t, db, 1)
	w, err := NewWriter(testConfig(empty, skey), db, testLog())
	if err != nil {
		t.Fatal(err)
	}
	l, err := lease.Acquire(ctx, db.Pool(), LeaseName, "test", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.hold(ctx, l); err == nil || !strings.Contains(err.Error(), "lost leaves") {
		t.Fatalf("a log that lost its leaves: %v", err)
	}
	if n, _ := mirrored(db); n != 5 {
		t.Fatalf("%d leaves recorded, want the 5 of before", n)
	}
}
