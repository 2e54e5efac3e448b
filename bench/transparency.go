package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/transparency"
)

// transparencyStage is the stage "transparency", called -runs times: the
// log writer's append throughput against the peak vouch rate the back
// office reaches in the same run (the issue asks for at least ten times),
// and the vouch's p99 with the writer running on the back office's
// database against without (the log is fed asynchronously, from the
// stored authorizations: a vouch should not wait for it).
func transparencyStage(fs *flag.FlagSet) measure {
	n := fs.Int("transparency-leaves", 30_000, "stored authorizations the log writer appends (stage transparency)")
	return func(ctx context.Context, b *bench) ([]Row, error) {
		bo := backofficeBench{dbURL: b.dbURL, cardsDir: b.cardsDir, clinicians: 50, perEach: 4}
		without, err := bo.run(ctx)
		if err != nil {
			return nil, fmt.Errorf("back office without the log: %w", err)
		}
		tb := transparencyBench{cardsDir: b.cardsDir}
		bo.during = tb.writer
		with, err := bo.run(ctx)
		if err != nil {
			return nil, fmt.Errorf("back office with the log: %w", err)
		}
		perSecond, err := tb.appendRate(ctx, b.dbURL, *n)
		if err != nil {
			return nil, err
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		return []Row{
			{Name: fmt.Sprintf("transparency log append throughput, %dk stored authorizations (vouch transparency log's writer, checkpoints signed by its key and the HSM)", *n/1000),
				Unit: "leaves/s", Value: perSecond,
				Reference: "peak vouch rate of the same run (vouches/s, 50 clinicians without a pause)", ReferenceValue: without.vouchesPerSecond,
				// The floor is ten times the peak vouch rate measured now,
				// on the same machine under the same load.
				Ratio: perSecond / without.vouchesPerSecond, Target: target(10 * without.vouchesPerSecond), AtLeast: true},
			{Name: "vouch, server side, 50 clinicians at once, a request each every 0-2 s: p99 with the transparency log's writer running",
				Unit: "ms", Value: ms(with.vouchP99),
				Reference: "the same without the writer, same run", ReferenceValue: ms(without.vouchP99),
				Ratio: float64(with.vouchP99) / float64(without.vouchP99), Target: target(1.5)},
		}, nil
	}
}

// transparencyBench runs the log writer as `vouch transparency log` does:
// an Ed25519 key, the back end's P-256 key on the SoftHSM test token
// signing each checkpoint a second time, the default batch and intervals.
type transparencyBench struct {
	cardsDir string
}

const transparencyBenchOrigin = "bench.vouch.test/log"

// start runs a writer on dbURL's database into a temporary directory until
// stop.
func (tb transparencyBench) start(ctx context.Context, dbURL string) (db *database.DB, stop func(), err error) {
	man, err := testpki.LoadManifest(tb.cardsDir)
	if err != nil {
		return nil, nil, fmt.Errorf("test cards (make cards): %w", err)
	}
	os.Setenv("SOFTHSM2_CONF", man.SoftHSMConf)
	mod, err := p11.Open(man.Module)
	if err != nil {
		return nil, nil, err
	}
	u, err := p11.ParseURI(man.Backend.ExportURI)
	if err != nil {
		mod.Close()
		return nil, nil, err
	}
	hsm, err := mod.Signer(u, man.Backend.PIN)
	if err != nil {
		mod.Close()
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "vouch-bench-log-")
	if err != nil {
		hsm.Close()
		mod.Close()
		return nil, nil, err
	}
	closeAll := func() { hsm.Close(); mod.Close(); os.RemoveAll(dir) }
	skey, _, err := note.GenerateKey(rand.Reader, transparencyBenchOrigin)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	if db, err = database.Open(ctx, database.Config{URL: dbURL}); err != nil {
		closeAll()
		return nil, nil, err
	}
	cfg := transparency.Config{Dir: dir, Origin: transparencyBenchOrigin, Key: skey, Interval: time.Second,
		AuditInterval: 5 * time.Minute, CheckpointInterval: time.Second, Batch: 256, Lease: 15 * time.Second}
	w, err := transparency.NewWriter(cfg, db, slog.New(slog.DiscardHandler), transparency.WithHSMKey(hsm))
	if err != nil {
		db.Close()
		closeAll()
		return nil, nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	return db, func() {
		cancel()
		<-done
		db.Close()
		closeAll()
	}, nil
}

// writer is backofficeBench's during: the writer beside the back office.
func (tb transparencyBench) writer(ctx context.Context, dbURL string) (func(), error) {
	_, stop, err := tb.start(ctx, dbURL)
	return stop, err
}

// appendRate stores n authorizations, starts a writer and returns the
// leaves it appended (and recorded) per second until the last.
func (tb transparencyBench) appendRate(ctx context.Context, serverURL string, n int) (float64, error) {
	dbURL, drop, err := benchDatabase(ctx, serverURL)
	if err != nil {
		return 0, err
	}
	defer drop()
	if err := database.Migrate(ctx, dbURL); err != nil {
		return 0, err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	rows := make([][]any, n)
	now := time.Now()
	for i := range rows {
		var id [16]byte
		st, code := make([]byte, 300), make([]byte, 10)
		rand.Read(id[:])
		rand.Read(st)
		rand.Read(code)
		rows[i] = []any{id, code, st, "900000024", now.Add(time.Duration(i) * time.Microsecond), now.Add(24 * time.Hour)}
	}
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"authorizations"},
		[]string{"id", "phone_code", "statement", "uzi_number", "created_at", "expires_at"}, pgx.CopyFromRows(rows))
	conn.Close(ctx)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(os.Stderr, "bench: transparency: the writer appends %d stored authorizations\n", n)
	start := time.Now()
	db, stop, err := tb.start(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer stop()
	for {
		var logged int
		if err := db.Pool().QueryRow(ctx, `select count(*) from transparency_leaves`).Scan(&logged); err != nil {
			return 0, err
		}
		if logged >= n {
			return float64(n) / time.Since(start).Seconds(), nil
		}
		if time.Since(start) > 10*time.Minute {
			return 0, fmt.Errorf("transparency: %d of %d leaves after 10 minutes", logged, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
