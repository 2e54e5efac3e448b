package e2e

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// uploads is how many uploads a fault test sends: 10,000, or
// VOUCH_E2E_UPLOADS for a quicker run by hand.
func uploads(t *testing.T) int {
	if s := os.Getenv("VOUCH_E2E_UPLOADS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 3 {
			t.Fatalf("VOUCH_E2E_UPLOADS=%q", s)
		}
		return n
	}
	return 10_000
}

// Each role killed with -9 during a run of uploads, then started again:
// afterwards every upload that got 2xx is stored exactly once and in the
// next export, and nothing else is.
func TestKill9DuringUploads(t *testing.T) {
	for _, role := range []string{"ingest", "store", "aggregate"} {
		t.Run(role, func(t *testing.T) {
			w := newWorld(t, testenv.DatabaseURL(t))
			phones, gp := vouched(t, w.man, uploads(t))
			w.vouch(phones, gp)
			ingest, store1, _, agg, _ := w.startPipeline()
			victim := map[string]*proc{"ingest": ingest, "store": store1, "aggregate": agg}[role]
			acked := load(t, w, phones, 32, func(func() int64) {
				victim.kill9()
				time.Sleep(time.Second)
				victim.start()
			})
			got := w.waitPublished(acked, 3*time.Minute)
			checkOnce(t, got, acked)
			assertStored(t, w.dbURL, acked)
		})
	}
}

// PostgreSQL stopped for 30 seconds during uploads: ingest keeps answering
// 2xx (the bus holds the keys), the readers back off and catch up, nothing
// acknowledged is lost.
func TestPostgresOutageDuringUploads(t *testing.T) {
	pg := testenv.OwnPostgres(t)
	w := newWorld(t, pg.URL())
	phones, gp := vouched(t, w.man, uploads(t))
	w.vouch(phones, gp)
	w.startPipeline()
	// A tenth of the phones upload only while PostgreSQL is down.
	during := phones[len(phones)-len(phones)/10:]
	var duringAcked map[[16]byte]bool
	acked := load(t, w, phones[:len(phones)-len(during)], 32, func(func() int64) {
		pg.Stop(t)
		stopped := time.Now()
		duringAcked = load(t, w, during, 8, nil)
		t.Logf("uploads acknowledged while PostgreSQL was down: %d of %d keys, in %s", len(duringAcked), len(during)*10, time.Since(stopped).Round(time.Millisecond))
		time.Sleep(30*time.Second - time.Since(stopped))
		pg.Start(t)
	})
	if len(duringAcked) != len(during)*10 {
		t.Errorf("%d of %d keys acknowledged while PostgreSQL was down: ingest must not need it", len(duringAcked), len(during)*10)
	}
	for k := range duringAcked {
		acked[k] = true
	}
	got := w.waitPublished(acked, 3*time.Minute)
	checkOnce(t, got, acked)
	assertStored(t, w.dbURL, acked)
}

// checkOnce fails unless every acknowledged key is in the export exactly
// once.
func checkOnce(t *testing.T, got map[[16]byte]int, acked map[[16]byte]bool) {
	t.Helper()
	dup := 0
	for k := range acked {
		if got[k] != 1 {
			dup++
		}
	}
	t.Logf("export: %d keys, %d acknowledged, %d of those not exactly once", len(got), len(acked), dup)
	if dup > 0 {
		t.Errorf("%d acknowledged keys are not in the export exactly once", dup)
	}
}
