package keystore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// benchRecords × benchKeys keys per iteration: the benchmark (b),
// readers against a bare COPY of the same rows.
const benchRecords, benchKeys = 2000, 10

func BenchmarkReaders(b *testing.B) {
	var keys int
	for range b.N {
		b.StopTimer()
		db, bs := testenv.Database(b), testenv.Bus(b)
		openStream(b, bs)
		js := bs.JetStream()
		for range benchRecords {
			r := record(b, benchKeys)
			if _, err := js.PublishAsync(exposure.Subject, r.Marshal()); err != nil {
				b.Fatal(err)
			}
		}
		<-js.PublishAsyncComplete()
		cfg := testConfig()
		cfg.Batch, cfg.Readers = 500, 2
		s := newStore(b, cfg, db.Pool(), bs)
		b.StartTimer()
		stop := run(b, s)
		waitKeys(b, db.Pool(), benchRecords*benchKeys, time.Minute)
		b.StopTimer()
		stop()
		keys += benchRecords * benchKeys
	}
	b.ReportMetric(float64(keys)/b.Elapsed().Seconds(), "keys/s")
}

func BenchmarkBareCopy(b *testing.B) {
	var keys int
	for range b.N {
		b.StopTimer()
		db := testenv.Database(b)
		var rows [][]any
		for range benchRecords {
			rows = appendRows(rows, record(b, benchKeys))
		}
		b.StartTimer()
		_, err := db.Pool().CopyFrom(context.Background(), pgx.Identifier{"exposure_keys"}, copyColumns, pgx.CopyFromRows(rows))
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		keys += len(rows)
	}
	b.ReportMetric(float64(keys)/b.Elapsed().Seconds(), "keys/s")
}

// benchStore stores benchRecords × benchKeys new keys an iteration with
// write, as one reader's batch: the direct COPY (storeNew), the merging
// write (storeMerging, every batch's write before) or the bare COPY, on
// the database alone, through one connection, whose server process's CPU
// time per batch is reported as pg-cpu-ns/op (a loaded machine stretches
// wall-clock time, not that).
func benchStore(b *testing.B, write func(s *Store, ctx context.Context, rows [][]any) (int64, error)) {
	db := testenv.Database(b)
	ctx := context.Background()
	conn, err := db.Pool().Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	pid := conn.Conn().PgConn().PID()
	s := &Store{db: conn, m: newMetrics(nil)}
	var keys int
	var cpu int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		var rows [][]any
		for range benchRecords {
			rows = appendRows(rows, record(b, benchKeys))
		}
		c0 := procCPU(b, pid)
		b.StartTimer()
		n, err := write(s, ctx, rows)
		b.StopTimer()
		cpu += procCPU(b, pid) - c0
		b.StartTimer()
		if err != nil {
			b.Fatal(err)
		}
		if n != int64(len(rows)) {
			b.Fatalf("stored %d of %d keys", n, len(rows))
		}
		keys += len(rows)
	}
	b.ReportMetric(float64(keys)/b.Elapsed().Seconds(), "keys/s")
	b.ReportMetric(float64(cpu)/float64(b.N), "pg-cpu-ns/op")
}

// procCPU is a process's CPU time in nanoseconds (utime + stime of
// /proc/<pid>/stat, in USER_HZ ticks of 10 ms).
func procCPU(b *testing.B, pid uint32) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return (ut + st) * int64(10*time.Millisecond)
}

func BenchmarkStoreNew(b *testing.B) {
	benchStore(b, func(s *Store, ctx context.Context, rows [][]any) (int64, error) { return s.storeNew(ctx, rows) })
}

func BenchmarkStoreMerging(b *testing.B) {
	benchStore(b, func(s *Store, ctx context.Context, rows [][]any) (int64, error) { return s.storeMerging(ctx, rows) })
}

func BenchmarkStoreBareCopy(b *testing.B) {
	benchStore(b, func(s *Store, ctx context.Context, rows [][]any) (int64, error) {
		return s.db.(*pgxpool.Conn).CopyFrom(ctx, pgx.Identifier{"exposure_keys"}, copyColumns, pgx.CopyFromRows(rows))
	})
}
