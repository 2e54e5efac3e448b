package keystore

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
