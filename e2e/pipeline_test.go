package e2e

import (
	"context"
	"crypto/ed25519"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneclient"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// A phone is vouched, picks up its bundle and verifies it offline, uploads
// its keys; they cross the bus into PostgreSQL, are exported, signed and
// served; a second phone syncs, verifies the file and finds the match. The
// same upload sent again is answered as before and published once.
func TestPhoneToPhone(t *testing.T) {
	w := newWorld(t, testenv.DatabaseURL(t))
	phones, gp := vouched(t, w.man, 2)
	w.vouch(phones, gp)
	w.startPipeline()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := phoneclient.New(w.ingest)
	infected := phones[0]
	bundle, err := client.Pickup(ctx, infected.priv)
	if err != nil {
		t.Fatalf("pickup: %v", err)
	}
	// The phone checks what it got against its built-in roots and the
	// attestation key, offline.
	if _, err := offlineVerifier(t, w).Verify(bundle, infected.priv.Public().(ed25519.PublicKey), time.Now()); err != nil {
		t.Fatalf("the picked-up bundle does not verify offline: %v", err)
	}
	if _, err := client.Upload(ctx, infected.priv, bundle, infected.keys); err != nil {
		t.Fatalf("upload: %v", err)
	}
	// The second phone is not vouched: pickup says not yet.
	if b, err := client.Pickup(ctx, otherPhone(t)); b != nil || err != nil {
		t.Fatalf("pickup of an unvouched phone = %d bytes, %v; want pending", len(b), err)
	}

	want := map[[16]byte]bool{}
	for _, k := range infected.keys {
		want[k.Data] = true
	}
	got := w.waitPublished(want, time.Minute)
	// The second phone saw one of the infected phone's keys, and another.
	saw := []exposure.Key{infected.keys[3], {Data: [16]byte{1, 2, 3}}}
	matches := 0
	for _, k := range saw {
		if got[k.Data] > 0 {
			matches++
		}
	}
	if matches != 1 {
		t.Fatalf("the second phone found %d matches, want 1", matches)
	}
	for k, n := range got {
		if want[k] && n != 1 {
			t.Errorf("key %x published %d times", k, n)
		}
	}
	assertStored(t, w.dbURL, want)
}

func otherPhone(t *testing.T) ed25519.PrivateKey {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// assertStored checks that each key of want is stored exactly once.
func assertStored(t *testing.T, dbURL string, want map[[16]byte]bool) {
	t.Helper()
	stored := storedCounts(t, dbURL)
	missing, extra := 0, 0
	for k := range want {
		if stored[k] != 1 {
			missing++
		}
	}
	for k := range stored {
		if !want[k] {
			extra++
		}
	}
	t.Logf("store: %d keys acknowledged, %d stored, %d missing, %d not acknowledged", len(want), len(stored), missing, extra)
	if missing > 0 {
		t.Errorf("%d acknowledged keys are not stored exactly once", missing)
	}
}

// storedCounts counts each key stored from uploads, by its data.
func storedCounts(t *testing.T, dbURL string) map[[16]byte]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	return storedCountsOn(ctx, t, conn)
}

// storedCountsOn is storedCounts on an open connection.
func storedCountsOn(ctx context.Context, t *testing.T, conn *pgx.Conn) map[[16]byte]int {
	t.Helper()
	rows, err := conn.Query(ctx, `select key_data from exposure_keys where origin = ''`)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[[16]byte]int{}
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		stored[[16]byte(b)]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return stored
}

// load uploads phones' keys with conc phones at a time, each retrying its
// identical upload across outages (as the reference phone does) until it
// gets an answer or the context ends, and returns the keys of every upload
// that got 2xx. during runs once a third of the uploads were acknowledged;
// acked counts the uploads acknowledged so far.
func load(t *testing.T, w *world, phones []phone, conc int, during func(acked func() int64)) map[[16]byte]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	client := phoneclient.New(w.ingest, phoneclient.WithHTTPClient(phoneclient.DefaultHTTPClient(conc)),
		phoneclient.WithBackoff(phoneclient.Backoff{Initial: 50 * time.Millisecond, Max: time.Second, Attempts: 200}))
	var (
		mu         sync.Mutex
		acked      = map[[16]byte]bool{}
		nAcked     atomic.Int64
		refused    atomic.Int64
		next       atomic.Int64
		fired      sync.Once
		wg         sync.WaitGroup
		firstFail  error
		duringDone sync.WaitGroup
	)
	if during != nil {
		duringDone.Add(1)
		inner := during
		during = func(acked func() int64) { defer duringDone.Done(); inner(acked) }
	}
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(phones) {
					return
				}
				ph := phones[i]
				_, err := client.Upload(ctx, ph.priv, ph.bundle, ph.keys)
				if err != nil {
					refused.Add(1)
					mu.Lock()
					if firstFail == nil {
						firstFail = err
					}
					mu.Unlock()
					continue
				}
				mu.Lock()
				for _, k := range ph.keys {
					acked[k.Data] = true
				}
				mu.Unlock()
				if nAcked.Add(1) == int64(len(phones)/3) && during != nil {
					fired.Do(func() { go during(nAcked.Load) })
				}
			}
		}()
	}
	wg.Wait()
	duringDone.Wait()
	t.Logf("uploads: %d sent, %d acknowledged (2xx), %d without 2xx (first: %v)", len(phones), nAcked.Load(), refused.Load(), firstFail)
	if nAcked.Load() == 0 {
		t.Fatal("no upload was acknowledged")
	}
	return acked
}

// offlineVerifier is a phone's verifier: the built-in roots and
// attestation keys, no revocation lists.
func offlineVerifier(t *testing.T, w *world) *protocol.Verifier {
	t.Helper()
	tr := manifestTrust(t, w.man)
	tr.Revocation = nil
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
