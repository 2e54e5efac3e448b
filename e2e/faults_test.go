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
	var duringOutage int64
	acked := load(t, w, phones, 32, func(count func() int64) {
		pg.Stop(t)
		before := count()
		time.Sleep(30 * time.Second)
		duringOutage = count() - before
		pg.Start(t)
	})
	t.Logf("uploads acknowledged while PostgreSQL was down: %d", duringOutage)
	if duringOutage == 0 {
		t.Error("no upload was acknowledged while PostgreSQL was down: ingest must not need it")
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
