package e2e

// The bus on a NATS JetStream cluster (issue 20 §1): three nats-server
// processes built from the module version in go.mod, so that kill -9 is a
// real crash of a real server; every role a process connected to all three.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneclient"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// Three JetStream servers with R3 streams and buckets, two ingests, two
// readers and an aggregator as processes. During the uploads the stream's
// leader is killed with -9 and restarted, then the authorizations bucket's
// leader: every upload answered 2xx is stored exactly once and exported
// exactly once (lost and duplicated counted and printed: zero), and every
// pickup, asked all along, is answered ready with its bundle or pending,
// never wrong.
//
// It sends uploads(t) uploads: 10,000 (VOUCH_E2E_UPLOADS for a quicker run
// by hand), like the other fault tests, whose bundles it shares.
func TestBusClusterLeaderKill(t *testing.T) {
	n := uploads(t)
	began := time.Now()
	w, nodes := busClusterWorld(t)
	t.Logf("vouch built, a database, the cards and three servers healthy in %s", time.Since(began).Round(time.Millisecond))
	began = time.Now()
	// The last few are vouched for only while the authorizations bucket
	// has no leader: the back office's write must survive the election.
	const late = 50
	all, gp := vouched(t, w.man, n+late)
	phones, latePhones := all[:n], all[n:]
	t.Logf("%d bundles (shared with the other fault tests) in %s", n+late, time.Since(began).Round(time.Millisecond))
	began = time.Now()
	w.vouch(phones, gp)
	auths, err := w.bus.ExpiringBucket(context.Background(), "authorizations", "e2e", protocol.MaxValidity)
	if err != nil {
		t.Fatal(err)
	}

	ingestAddr2 := freeAddr(t)
	ops1, ops2 := freeAddr(t), freeAddr(t)
	ingest1 := w.role("ingest-1", []string{"VOUCH_OPS_LISTEN=" + ops1}, "ingest")
	ingest2 := w.role("ingest-2", []string{"VOUCH_OPS_LISTEN=" + ops2, "VOUCH_INGEST_ADDR=" + ingestAddr2,
		"VOUCH_INGEST_ACCESS_LOG_DIR=" + filepath.Join(w.dir, "access-2")}, "ingest")
	w.role("store-1", []string{"VOUCH_OPS_LISTEN=" + freeAddr(t)}, "store")
	w.role("store-2", []string{"VOUCH_OPS_LISTEN=" + freeAddr(t)}, "store")
	w.role("aggregate", []string{"VOUCH_OPS_LISTEN=" + freeAddr(t)}, "aggregate")
	cdn := w.role("cdn", []string{"VOUCH_OPS_LISTEN=" + freeAddr(t)}, "cdn")
	w.waitHTTP(ingest1, "http://"+ops1+"/readyz")
	w.waitHTTP(ingest2, "http://"+ops2+"/readyz")
	w.waitPort(cdn, strings.TrimPrefix(w.cdn, "http://"))
	t.Logf("vouched and the roles ready in %s", time.Since(began).Round(time.Millisecond))

	authStream := "KV_authorizations"
	for _, s := range []string{exposure.Stream, authStream, "KV_" + exposure.UsedBucket, "KV_vouch-licenses"} {
		info := busClusterInfo(t, w.bus, s)
		if info.Config.Replicas != 3 || info.Config.Storage != jetstream.FileStorage {
			t.Fatalf("%s: %d replicas on %v, want 3 on file", s, info.Config.Replicas, info.Config.Storage)
		}
		if s == exposure.Stream && info.Config.Duplicates <= bus.RetryWithin {
			t.Fatalf("%s: dedupe window %s, not longer than the publish retries (%s)", s, info.Config.Duplicates, bus.RetryWithin)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const conc = 32
	backoff := phoneclient.WithBackoff(phoneclient.Backoff{Initial: 50 * time.Millisecond, Max: time.Second, Attempts: 200})
	clients := []*phoneclient.Client{
		phoneclient.New(w.ingest, phoneclient.WithHTTPClient(phoneclient.DefaultHTTPClient(conc)), backoff),
		phoneclient.New("http://"+ingestAddr2, phoneclient.WithHTTPClient(phoneclient.DefaultHTTPClient(conc)), backoff),
	}

	// Pickups all along, on both ingests: a vouched phone must get its
	// bundle, a phone nobody vouched for must be pending.
	var pick busClusterPickups
	pickCtx, stopPickups := context.WithCancel(ctx)
	var pickWG sync.WaitGroup
	for g := range 2 {
		pickWG.Add(1)
		go func() {
			defer pickWG.Done()
			pick.run(pickCtx, clients[g%2], phones)
		}()
	}

	var (
		mu       sync.Mutex
		acked    = map[[16]byte]bool{}
		sentAck  [][2]time.Time // each acknowledged upload: sent, answered
		nAcked   atomic.Int64
		failed   atomic.Int64
		next     atomic.Int64
		firstErr busClusterFirst
		kills    []busClusterKill
		wg       sync.WaitGroup
	)
	// The faults, in order, each once the uploads reached a share. Uploads
	// past the next share wait for the fault before it (gates), so that
	// however fast the machine, uploads are sent during each election.
	faults := make(chan struct{})
	gates := []chan struct{}{make(chan struct{}), make(chan struct{})}
	go func() {
		defer close(faults)
		opened := 0
		defer func() {
			for ; opened < len(gates); opened++ {
				close(gates[opened])
			}
		}()
		for i, victim := range []string{exposure.Stream, authStream} {
			// A tenth, then three tenths: each kill with most uploads still
			// to come, on a slow machine too.
			if !busClusterWaitFor(ctx, func() bool { return nAcked.Load() >= int64(n*(2*i+1)/10) }) {
				return
			}
			var during func() error
			if victim == authStream {
				during = func() error {
					entries := make([]bus.KeyValue, len(latePhones))
					for i, ph := range latePhones {
						code := phonecode.FromPublicKey(ph.priv.Public().(ed25519.PublicKey))
						entries[i] = bus.KeyValue{Key: hex.EncodeToString(code[:]), Value: ph.bundle}
					}
					began := time.Now()
					if err := auths.PutAll(ctx, entries); err != nil {
						return fmt.Errorf("vouching during the election: %w", err)
					}
					t.Logf("%d authorizations put while %s had no leader: acknowledged in %s", len(entries), authStream, time.Since(began).Round(time.Millisecond))
					return nil
				}
			}
			k, err := busClusterKillLeader(t, w.bus, nodes, victim, during)
			if err != nil {
				t.Error(err)
				return
			}
			kills = append(kills, k)
			if i == 1 {
				close(gates[1])
				opened++
			}
			// Every raft group whole again before the next fault: a second
			// kill while a replica is still catching up would take the
			// majority.
			if err := busClusterWaitCurrent(w.bus, exposure.Stream, authStream, "KV_"+exposure.UsedBucket); err != nil {
				t.Error(err)
				return
			}
			if i == 0 {
				close(gates[0])
				opened++
			}
		}
	}()
	start := time.Now()
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(phones) {
					return
				}
				for j, gate := range gates {
					if i >= n*(2*j+2)/10 {
						select {
						case <-gate:
						case <-ctx.Done():
						}
					}
				}
				ph := phones[i]
				sent := time.Now()
				if _, err := clients[(g+i)%2].Upload(ctx, ph.priv, ph.bundle, ph.keys); err != nil {
					failed.Add(1)
					firstErr.set(err)
					continue
				}
				mu.Lock()
				for _, k := range ph.keys {
					acked[k.Data] = true
				}
				sentAck = append(sentAck, [2]time.Time{sent, time.Now()})
				mu.Unlock()
				nAcked.Add(1)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	<-faults
	stopPickups()
	pickWG.Wait()
	t.Logf("uploads: %d sent, %d acknowledged (2xx), %d without 2xx (first: %v), in %s (%.0f/s)",
		n, nAcked.Load(), failed.Load(), firstErr.get(), took.Round(time.Millisecond), float64(nAcked.Load())/took.Seconds())
	for _, o := range []string{ops1, ops2} {
		t.Logf("ingest %s: %s", o, busClusterUploadCounts(t, o))
	}
	if len(kills) != 2 {
		t.Fatalf("%d of 2 leaders killed: the uploads ended first", len(kills))
	}
	for _, k := range kills {
		first := time.Duration(-1)
		for _, sa := range sentAck {
			if sa[0].After(k.at) && (first < 0 || sa[1].Sub(k.at) < first) {
				first = sa[1].Sub(k.at)
			}
		}
		if first < 0 {
			t.Errorf("%s: no upload was sent after its leader was killed: the uploads ended first", k.stream)
			continue
		}
		t.Logf("%s: leader %s killed -9; a new leader after %s; the next upload sent after the kill acknowledged %s after it",
			k.stream, k.leader, k.elected.Round(time.Millisecond), first.Round(time.Millisecond))
	}
	t.Logf("pickups: %d ready, %d pending, %d wrong, %d without an answer (first: %v)",
		pick.ready.Load(), pick.pending.Load(), pick.wrong.Load(), pick.failed.Load(), pick.firstErr.get())
	if pick.wrong.Load() > 0 || pick.failed.Load() > 0 {
		t.Errorf("%d pickups answered wrong, %d not answered", pick.wrong.Load(), pick.failed.Load())
	}
	if pick.ready.Load() == 0 || pick.pending.Load() == 0 {
		t.Errorf("pickups: %d ready and %d pending, want some of each", pick.ready.Load(), pick.pending.Load())
	}
	if failed.Load() > 0 {
		t.Errorf("%d uploads got no 2xx through the phone's retries", failed.Load())
	}
	// The authorizations written during the election are there to pick up.
	wrongLate := 0
	for _, ph := range latePhones {
		if b, err := clients[0].Pickup(ctx, ph.priv); err != nil || !bytes.Equal(b, ph.bundle) {
			wrongLate++
		}
	}
	t.Logf("pickups of the %d phones vouched for during the election: %d not ready", len(latePhones), wrongLate)
	if wrongLate > 0 {
		t.Errorf("%d of %d authorizations acknowledged during the election cannot be picked up", wrongLate, len(latePhones))
	}

	began = time.Now()
	got := w.waitPublished(acked, 3*time.Minute)
	t.Logf("every acknowledged key exported %s after the last upload", time.Since(began).Round(time.Millisecond))
	lost, dup := busClusterCount(acked, got)
	t.Logf("export: %d keys acknowledged, %d lost, %d duplicated", len(acked), lost, dup)
	if lost+dup > 0 {
		t.Errorf("export: %d acknowledged keys lost, %d duplicated", lost, dup)
	}
	lost, dup = busClusterCount(acked, storedCounts(t, w.dbURL))
	t.Logf("store: %d keys acknowledged, %d lost, %d duplicated", len(acked), lost, dup)
	if lost+dup > 0 {
		t.Errorf("store: %d acknowledged keys lost, %d duplicated", lost, dup)
	}
}

// busClusterWorld is a world (world_test.go) whose bus is a cluster of three
// nats-server processes, which every role and the test reach by NATS_URL,
// with R3 streams and buckets.
func busClusterWorld(t *testing.T) (*world, []*testenv.NATSNode) {
	t.Helper()
	w := &world{t: t, man: testenv.Cards(t), dbURL: testenv.DatabaseURL(t), dir: t.TempDir(), bin: testenv.Build(t, "./cmd/vouch")}
	w.token = hex.EncodeToString(random(t, 24))
	cluster := testenv.NewNATSCluster(t, w.dir, w.token)
	nodes := cluster.Nodes
	url := cluster.URL()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Start(ctx, bus.Config{URL: url, Token: w.token, Replicas: 3, Name: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	w.bus = b
	exportDir := filepath.Join(w.dir, "exports")
	if err := os.MkdirAll(exportDir, 0o755); err != nil {
		t.Fatal(err)
	}
	w.ingest = "http://" + freeAddr(t)
	w.cdn = "http://" + freeAddr(t)
	for _, kv := range w.man.Env() {
		w.env = append(w.env, kv[0]+"="+kv[1])
	}
	w.env = append(w.env,
		"DATABASE_URL="+w.dbURL, "NATS_URL="+url, "VOUCH_BUS_TOKEN="+w.token, "VOUCH_BUS_REPLICAS=3",
		"VOUCH_HSM_PIN="+w.man.Backend.PIN, "VOUCH_LOG_LEVEL=warn",
		"VOUCH_INGEST_ADDR="+strings.TrimPrefix(w.ingest, "http://"),
		"VOUCH_INGEST_RATE=1000000", "VOUCH_INGEST_RATE_BURST=1000000",
		"VOUCH_INGEST_ACCESS_LOG_DIR="+filepath.Join(w.dir, "access"),
		"VOUCH_EXPORT_DIR="+exportDir, "VOUCH_EXPORT_PERIOD=1s", "VOUCH_EXPORT_GRACE=1m", "VOUCH_EXPORT_LEASE=5s",
		"VOUCH_EXPORT_KEY_URIS="+w.man.Backend.ExportURI,
		"VOUCH_CDN_ADDR="+strings.TrimPrefix(w.cdn, "http://"), "VOUCH_CDN_DIR="+exportDir,
		"VOUCH_STORE_BATCH_WAIT=50ms",
	)
	return w, nodes
}

// busClusterInfo is the stream's info, asked of the cluster.
func busClusterInfo(t *testing.T, b *bus.Bus, stream string) *jetstream.StreamInfo {
	t.Helper()
	info, err := busClusterStreamInfo(b, stream)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// busClusterKill is one leader killed: which, when, and how long until the
// stream had another.
type busClusterKill struct {
	stream, leader string
	at             time.Time
	elected        time.Duration
}

// busClusterKillLeader kills the server leading stream with -9, waits for
// the cluster to elect another, and starts the killed one again on its
// store. It runs beside the uploads, so it returns its failure.
// during, when not nil, runs at once after the kill.
func busClusterKillLeader(t *testing.T, b *bus.Bus, nodes []*testenv.NATSNode, stream string, during func() error) (busClusterKill, error) {
	info, err := busClusterStreamInfo(b, stream)
	if err != nil {
		return busClusterKill{}, err
	}
	leader := info.Cluster.Leader
	i := slices.IndexFunc(nodes, func(n *testenv.NATSNode) bool { return n.Name == leader })
	if i < 0 {
		return busClusterKill{}, fmt.Errorf("stream %s: leader %q is none of the servers", stream, leader)
	}
	k := busClusterKill{stream: stream, leader: leader, at: time.Now()}
	if err := nodes[i].Kill9(); err != nil {
		return k, err
	}
	t.Logf("kill -9 %s, leader of %s", leader, stream)
	if during != nil {
		if err := during(); err != nil {
			return k, err
		}
	}
	deadline := k.at.Add(60 * time.Second)
	for {
		in, err := busClusterStreamInfo(b, stream)
		if err == nil && in.Cluster != nil && in.Cluster.Leader != "" && in.Cluster.Leader != leader {
			k.elected = time.Since(k.at)
			break
		}
		if time.Now().After(deadline) {
			return k, fmt.Errorf("stream %s: no new leader 60 s after %s was killed (%v)", stream, leader, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := nodes[i].Start(); err != nil {
		return k, err
	}
	return k, nodes[i].WaitHealthy(60 * time.Second)
}

func busClusterStreamInfo(b *bus.Bus, stream string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := b.JetStream().Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	in, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	return in, nil
}

// busClusterWaitCurrent waits until every stream has a leader and both its
// other replicas are online and current.
func busClusterWaitCurrent(b *bus.Bus, streams ...string) error {
	deadline := time.Now().Add(90 * time.Second)
	for _, name := range streams {
		for {
			in, err := busClusterStreamInfo(b, name)
			if err == nil && in.Cluster != nil && in.Cluster.Leader != "" && len(in.Cluster.Replicas) == 2 &&
				!slices.ContainsFunc(in.Cluster.Replicas, func(p *jetstream.PeerInfo) bool { return !p.Current || p.Offline }) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("stream %s: replicas not current after 90 s (%v)", name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// busClusterWaitFor polls cond until it holds or ctx ends.
func busClusterWaitFor(ctx context.Context, cond func() bool) bool {
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

// busClusterPickups asks for pickups until its context ends and counts the
// answers.
type busClusterPickups struct {
	ready, pending, wrong, failed atomic.Int64
	firstErr                      busClusterFirst
}

func (p *busClusterPickups) run(ctx context.Context, c *phoneclient.Client, phones []phone) {
	for ctx.Err() == nil {
		// Every other one a phone nobody vouched for.
		vouched := rand.IntN(2) == 0
		var priv ed25519.PrivateKey
		var want []byte
		if vouched {
			ph := phones[rand.IntN(len(phones))]
			priv, want = ph.priv, ph.bundle
		} else {
			_, priv, _ = ed25519.GenerateKey(nil)
		}
		got, err := c.Pickup(ctx, priv)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			p.failed.Add(1)
			p.firstErr.set(err)
		case !bytes.Equal(got, want):
			p.wrong.Add(1)
		case got == nil:
			p.pending.Add(1)
		default:
			p.ready.Add(1)
		}
	}
}

// busClusterFirst keeps the first error set (an atomic.Value would panic
// on a second error of another type).
type busClusterFirst struct {
	mu  sync.Mutex
	err error
}

func (f *busClusterFirst) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *busClusterFirst) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// busClusterUploadCounts are an ingest's upload outcomes, from its metrics.
func busClusterUploadCounts(t *testing.T, ops string) string {
	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "vouch_ingest_uploads_total{") {
			out = append(out, strings.TrimPrefix(l, "vouch_ingest_uploads_total"))
		}
	}
	return strings.Join(out, ", ")
}

// busClusterCount counts the acknowledged keys missing from got, and those
// in it more than once.
func busClusterCount(acked map[[16]byte]bool, got map[[16]byte]int) (lost, dup int) {
	for k := range acked {
		switch {
		case got[k] == 0:
			lost++
		case got[k] > 1:
			dup++
		}
	}
	return lost, dup
}
