package export

import (
	"context"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/lease"
)

// SetBeforeIndex makes a run call f under the lease just before it writes
// the index, for tests.
func SetBeforeIndex(a *Aggregator, f func()) { a.beforeIndex = f }

// FuzzParse feeds export.bin and export.sig contents to the parsers
// directly: a fuzzer mutating a zip mostly breaks its checksums first.
func FuzzParse(f *testing.F) {
	f.Add([]byte(Header+"\x09\x00\x00\x00\x00\x00\x00\x00\x00\x11\x00\x00\x00\x00\x00\x00\x00\x00\x1a\x02NL\x20\x01\x28\x01"+
		"\x3a\x20\x0a\x10AAAAAAAAAAAAAAAA\x10\x01\x18\x80\x80\x80\x01\x20\x90\x01\x28\x01\x30\x03"), []byte("\x0a\x06\x10\x01\x18\x01\x22\x00"))
	f.Fuzz(func(t *testing.T, bin, sig []byte) {
		if file, err := parseBin(bin); err == nil {
			if len(file.Keys) > MaxKeysPerFile || file.BatchNum < 1 || file.BatchNum > file.BatchSize {
				t.Fatalf("accepted out of bounds: %+v", file)
			}
			for _, k := range file.Keys {
				if k.RollingPeriod < 1 || k.RollingPeriod > 144 || k.RollingStart < 0 {
					t.Fatalf("accepted key %+v", k)
				}
			}
		}
		if sigs, err := parseSigList(sig); err == nil && (len(sigs) == 0 || len(sigs) > maxSignatures) {
			t.Fatalf("%d signatures accepted", len(sigs))
		}
	})
}

// SetNow makes a run read the time from now, for tests.
func SetNow(a *Aggregator, now func() time.Time) { a.now = now }

// RunUnder runs once under l without a heartbeat: a holder frozen (its
// heartbeat too) is one whose lease runs out.
func RunUnder(ctx context.Context, a *Aggregator, l *lease.Lease) (Result, error) {
	return a.run(ctx, l)
}

// Holder is a's name in the lease.
func Holder(a *Aggregator) string { return a.holder }
