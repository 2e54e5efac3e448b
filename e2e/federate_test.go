package e2e

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestFederateLinkLoss: two sites, each its own database, bus, export
// directory and processes — site A one `vouch all`, site B `vouch
// aggregate`, `vouch cdn` and `vouch federate` — pull each other's exports
// on a schedule through links the test cuts. While the links are down
// the pulls fail (and are counted) and each site goes on alone; once they
// are back, both hold the union of the keys.
func TestFederateLinkLoss(t *testing.T) {
	a := newWorld(t, testenv.DatabaseURL(t))
	b := newWorld(t, testenv.DatabaseURL(t))
	// a's pulls reach b's origin through toB, and b's reach a's through
	// toA. Both sites sign with the test token's one export key.
	toA, toB := federateLinkTo(t, a.cdn), federateLinkTo(t, b.cdn)
	pub := a.man.Backend.ExportPub
	aOps, bOps := freeAddr(t), freeAddr(t)
	backoffice := freeAddr(t)
	all := a.role("site-a-all", []string{"VOUCH_OPS_LISTEN=" + aOps, "VOUCH_HTTP_ADDR=" + backoffice,
		"VOUCH_BACKOFFICE_ORIGIN=http://" + backoffice,
		"VOUCH_FEDERATE_SITES=site-b http://" + toB.addr + " " + pub, "VOUCH_FEDERATE_INTERVAL=1s"}, "all")
	a.waitHTTP(all, "http://"+aOps+"/readyz")
	b.role("site-b-aggregate", []string{"VOUCH_OPS_LISTEN=" + freeAddr(t)}, "aggregate")
	cdn := b.role("site-b-cdn", []string{"VOUCH_OPS_LISTEN=" + freeAddr(t)}, "cdn")
	b.waitPort(cdn, strings.TrimPrefix(b.cdn, "http://"))
	fed := b.role("site-b-federate", []string{"VOUCH_OPS_LISTEN=" + bOps,
		"VOUCH_FEDERATE_SITES=site-a http://" + toA.addr + " " + pub, "VOUCH_FEDERATE_INTERVAL=1s"}, "federate")
	b.waitHTTP(fed, "http://"+bOps+"/readyz")

	want := map[[16]byte]bool{}
	federateKeys(t, a, 40, want)
	federateKeys(t, b, 30, want)
	federateConverged(t, a, b, want, 90*time.Second)
	t.Logf("linked: both sites hold the union, %d keys", len(want))

	toA.cut()
	toB.cut()
	failedA, failedB := federateFailed(t, aOps, "site-b"), federateFailed(t, bOps, "site-a")
	onlyA, onlyB := map[[16]byte]bool{}, map[[16]byte]bool{}
	federateKeys(t, a, 20, onlyA)
	federateKeys(t, b, 10, onlyB)
	// Each site publishes its own new keys meanwhile, and its pulls of
	// the other fail (at least two, so one came after those exports).
	a.waitPublished(onlyA, 60*time.Second)
	b.waitPublished(onlyB, 60*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for federateFailed(t, aOps, "site-b") < failedA+2 || federateFailed(t, bOps, "site-a") < failedB+2 {
		if time.Now().After(deadline) {
			t.Fatalf("no failed pulls counted while the links are down: a %v (was %v), b %v (was %v)",
				federateFailed(t, aOps, "site-b"), failedA, federateFailed(t, bOps, "site-a"), failedB)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := federateHas(t, a, onlyB); n != 0 {
		t.Fatalf("site a has %d of b's keys uploaded while the link was down", n)
	}
	if n := federateHas(t, b, onlyA); n != 0 {
		t.Fatalf("site b has %d of a's keys uploaded while the link was down", n)
	}
	t.Logf("cut: a pulled b and failed %v times, b pulled a and failed %v times; each holds only its own new keys",
		federateFailed(t, aOps, "site-b")-failedA, federateFailed(t, bOps, "site-a")-failedB)

	toA.mend()
	toB.mend()
	start := time.Now()
	for k := range onlyA {
		want[k] = true
	}
	for k := range onlyB {
		want[k] = true
	}
	federateConverged(t, a, b, want, 60*time.Second)
	t.Logf("mended: both sites hold the union, %d keys, %v after the links came back; lost 0, extra 0",
		len(want), time.Since(start).Round(100*time.Millisecond))
}

// federateKeys stores n new keys in w's database, as its readers would,
// and adds them to into.
func federateKeys(t *testing.T, w *world, n int, into map[[16]byte]bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, w.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	today := time.Now().UTC().Truncate(24 * time.Hour)
	rows := make([][]any, n)
	for i := range n {
		var data [16]byte
		rand.Read(data[:])
		into[data] = true
		rows[i] = []any{data[:], exposure.IntervalNumber(today.AddDate(0, 0, -2-i%10)), int32(144), int16(5), exposure.Coarse(time.Now())}
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"exposure_keys"},
		[]string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "received_hour"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
}

// federateStored is the keys in w's database.
func federateStored(t *testing.T, w *world) map[[16]byte]bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, w.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `select key_data from exposure_keys where origin <> 'padding'`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[[16]byte]bool{}
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		got[[16]byte(b)] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func federateHas(t *testing.T, w *world, keys map[[16]byte]bool) int {
	n := 0
	for k := range federateStored(t, w) {
		if keys[k] {
			n++
		}
	}
	return n
}

// federateConverged waits until both sites hold exactly want.
func federateConverged(t *testing.T, a, b *world, want map[[16]byte]bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		missing, extra := 0, 0
		for _, w := range []*world{a, b} {
			got := federateStored(t, w)
			for k := range want {
				if !got[k] {
					missing++
				}
			}
			for k := range got {
				if !want[k] {
					extra++
				}
			}
		}
		if missing == 0 && extra == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged within %v: %d keys missing, %d extra (both sites together), of %d", within, missing, extra, len(want))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// federateFailed reads the failed pulls of site from an ops listener.
func federateFailed(t *testing.T, ops, site string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "vouch_federate_pulls_total{") && strings.Contains(line, `result="failed"`) &&
			strings.Contains(line, `site="`+site+`"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return v
		}
	}
	return 0
}

// federateLink is the network between two sites: a TCP relay to a site's
// origin that the test cuts (every connection closed, nothing listening)
// and mends (listening again on the same address).
type federateLink struct {
	t    *testing.T
	addr string
	to   string
	mu   sync.Mutex
	ln   net.Listener
	open map[net.Conn]bool
}

func federateLinkTo(t *testing.T, origin string) *federateLink {
	l := &federateLink{t: t, addr: freeAddr(t), to: strings.TrimPrefix(origin, "http://"), open: map[net.Conn]bool{}}
	l.mend()
	t.Cleanup(l.cut)
	return l
}

func (l *federateLink) mend() {
	l.t.Helper()
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		l.t.Fatalf("link %s: %v", l.addr, err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go l.relay(c)
		}
	}()
}

func (l *federateLink) relay(c net.Conn) {
	up, err := net.DialTimeout("tcp", l.to, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	l.mu.Lock()
	if l.ln == nil { // cut meanwhile
		l.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	l.open[c], l.open[up] = true, true
	l.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	l.mu.Lock()
	delete(l.open, c)
	delete(l.open, up)
	l.mu.Unlock()
}

func (l *federateLink) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	for c := range l.open {
		c.Close()
	}
}
