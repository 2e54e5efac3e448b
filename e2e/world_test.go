package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
)

// world is one deployment: a bus this test process runs (so that every
// role's process can be killed without losing it), a database, the test
// cards, and the roles as processes.
type world struct {
	t      *testing.T
	man    *testpki.Manifest
	bus    *bus.Bus
	token  string
	dbURL  string
	dir    string
	bin    string
	env    []string
	ingest string // base URL of the phone API
	cdn    string // base URL of the origin
	procs  []*proc
}

// newWorld starts the bus and prepares the environment every role shares;
// dbURL names the database (testenv.DatabaseURL, or an OwnPostgres).
func newWorld(t *testing.T, dbURL string) *world {
	t.Helper()
	w := &world{t: t, man: testenv.Cards(t), dbURL: dbURL, dir: t.TempDir(), bin: testenv.Build(t, "./cmd/vouch")}
	w.token = hex.EncodeToString(random(t, 24))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Start(ctx, bus.Config{StoreDir: filepath.Join(w.dir, "bus"), Listen: true, Host: "127.0.0.1", Port: -1,
		Token: w.token, Name: "e2e"})
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
		"DATABASE_URL="+dbURL, "NATS_URL="+b.ClientURL(), "VOUCH_BUS_TOKEN="+w.token,
		"VOUCH_HSM_PIN="+w.man.Backend.PIN, "VOUCH_LOG_LEVEL=warn",
		"VOUCH_INGEST_ADDR="+strings.TrimPrefix(w.ingest, "http://"),
		// Every phone of a load test comes from one loopback address.
		"VOUCH_INGEST_RATE=1000000", "VOUCH_INGEST_RATE_BURST=1000000",
		"VOUCH_INGEST_ACCESS_LOG_DIR="+filepath.Join(w.dir, "access"),
		"VOUCH_EXPORT_DIR="+exportDir, "VOUCH_EXPORT_PERIOD=1s", "VOUCH_EXPORT_GRACE=1m", "VOUCH_EXPORT_LEASE=5s",
		"VOUCH_EXPORT_KEY_URIS="+w.man.Backend.ExportURI,
		"VOUCH_CDN_ADDR="+strings.TrimPrefix(w.cdn, "http://"), "VOUCH_CDN_DIR="+exportDir,
		"VOUCH_STORE_BATCH_WAIT=50ms",
	)
	return w
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// freeAddr is a loopback address nothing listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is one role's process.
type proc struct {
	w    *world
	name string
	args []string
	env  []string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// role starts `vouch args...` with the world's environment and extra.
func (w *world) role(name string, extra []string, args ...string) *proc {
	w.t.Helper()
	log, err := os.Create(filepath.Join(w.dir, name+".log"))
	if err != nil {
		w.t.Fatal(err)
	}
	p := &proc{w: w, name: name, args: args, env: append(append(os.Environ(), w.env...), extra...), log: log}
	w.procs = append(w.procs, p)
	p.start()
	w.t.Cleanup(func() {
		p.stop()
		if w.t.Failed() {
			b, _ := os.ReadFile(log.Name())
			w.t.Logf("%s's log:\n%s", name, tail(b, 4000))
		}
		log.Close()
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (p *proc) start() {
	p.w.t.Helper()
	p.cmd = exec.Command(p.w.bin, p.args...)
	p.cmd.Env = p.env
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	// Its own process group, and killed with the test binary.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.w.t.Fatalf("%s: %v", p.name, err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(p.cmd, p.done)
}

// kill9 kills the process without a chance to clean up.
func (p *proc) kill9() {
	p.w.t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		p.w.t.Fatalf("kill -9 %s: %v", p.name, err)
	}
	<-p.done
	p.w.t.Logf("kill -9 %s", p.name)
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) stop() {
	if p.cmd == nil || !p.running() {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// waitHTTP waits until url answers 200, or fails the test, naming p.
func (w *world) waitHTTP(p *proc, url string) {
	w.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if !p.running() {
			b, _ := os.ReadFile(p.log.Name())
			w.t.Fatalf("%s stopped:\n%s", p.name, tail(b, 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(p.log.Name())
	w.t.Fatalf("%s did not answer %s:\n%s", p.name, url, tail(b, 4000))
}

// waitPort waits until something listens on addr.
func (w *world) waitPort(p *proc, addr string) {
	w.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		if !p.running() {
			b, _ := os.ReadFile(p.log.Name())
			w.t.Fatalf("%s stopped:\n%s", p.name, tail(b, 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.t.Fatalf("%s does not listen on %s", p.name, addr)
}

// startPipeline starts ingest, two readers, the aggregator and the origin.
func (w *world) startPipeline() (ingest, store1, store2, agg, cdn *proc) {
	// Each role's operations listener (metrics, readiness) on its own port.
	ingestOps := freeAddr(w.t)
	ingest = w.role("ingest", []string{"VOUCH_OPS_LISTEN=" + ingestOps}, "ingest")
	store1 = w.role("store-1", []string{"VOUCH_OPS_LISTEN=" + freeAddr(w.t)}, "store")
	store2 = w.role("store-2", []string{"VOUCH_OPS_LISTEN=" + freeAddr(w.t)}, "store")
	agg = w.role("aggregate", []string{"VOUCH_OPS_LISTEN=" + freeAddr(w.t)}, "aggregate")
	cdn = w.role("cdn", []string{"VOUCH_OPS_LISTEN=" + freeAddr(w.t)}, "cdn")
	w.waitHTTP(ingest, "http://"+ingestOps+"/readyz")
	w.waitPort(cdn, strings.TrimPrefix(w.cdn, "http://"))
	return
}

// phone is one vouched phone: its key, its bundle and the keys it will
// upload (days 2 to 11 before today, so that none is still within the
// export's 2-hour embargo at any time of day).
type phone struct {
	priv   ed25519.PrivateKey
	bundle []byte
	keys   []exposure.Key
}

var bundles struct {
	sync.Mutex
	phones []phone
	gpUZI  string
}

// vouched returns n phones vouched by the GP's card, made once per test
// binary (the card signs on SoftHSM; thousands take a while) and shared:
// each world has its own bus, so a bundle is unused in each.
func vouched(t *testing.T, man *testpki.Manifest, n int) ([]phone, string) {
	t.Helper()
	bundles.Lock()
	defer bundles.Unlock()
	if len(bundles.phones) >= n {
		return bundles.phones[:n], bundles.gpUZI
	}
	iss, err := testpki.OpenIssuer(man, "gp")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if iss != nil {
			iss.Close()
		}
	}()
	bundles.gpUZI = iss.Identity().UZI
	today := time.Now().UTC().Truncate(24 * time.Hour)
	for len(bundles.phones) < n {
		pub, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := iss.Issue(pub)
		for try := 0; err != nil && try < 3; try++ {
			// SoftHSM rewrites a token's file at every login; another
			// process signing with the same token at that moment can
			// make a signature fail. A new session signs again.
			t.Logf("issuing bundles: %v; opening the card again", err)
			iss.Close()
			if iss, err = testpki.OpenIssuer(man, "gp"); err == nil {
				raw, err = iss.Issue(pub)
			}
		}
		if err != nil {
			t.Fatalf("issuing bundles: %v", err)
		}
		keys := make([]exposure.Key, 10)
		for i := range keys {
			keys[i] = exposure.Key{RollingStart: exposure.IntervalNumber(today.AddDate(0, 0, -2-i)), RollingPeriod: exposure.MaxRollingPeriod}
			rand.Read(keys[i].Data[:])
		}
		bundles.phones = append(bundles.phones, phone{priv: priv, bundle: raw, keys: keys})
	}
	return bundles.phones[:n], bundles.gpUZI
}

// vouch puts the phones' bundles where pickup finds them, and the GP's
// license where ingest looks it up, as the back office and the registry
// sync would.
func (w *world) vouch(phones []phone, gpUZI string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lic, err := w.bus.Bucket(ctx, "vouch-licenses", registrysync.BucketDescription)
	if err != nil {
		w.t.Fatal(err)
	}
	rec, _ := json.Marshal(registrysync.LicenseRecord{Status: "active", MayVouch: true, ChangedAt: time.Now().Add(-time.Hour)})
	if err := lic.PutAll(ctx, []bus.KeyValue{{Key: gpUZI, Value: rec}}); err != nil {
		w.t.Fatal(err)
	}
	auth, err := w.bus.ExpiringBucket(ctx, "authorizations", "e2e", protocol.MaxValidity)
	if err != nil {
		w.t.Fatal(err)
	}
	entries := make([]bus.KeyValue, len(phones))
	for i, ph := range phones {
		code := phonecode.FromPublicKey(ph.priv.Public().(ed25519.PublicKey))
		entries[i] = bus.KeyValue{Key: hex.EncodeToString(code[:]), Value: ph.bundle}
	}
	if err := auth.PutAll(ctx, entries); err != nil {
		w.t.Fatal(err)
	}
}

// exportKey is the export's public key, as phones have it built in.
func (w *world) exportKey() *ecdsa.PublicKey {
	w.t.Helper()
	b, err := os.ReadFile(w.man.Backend.ExportPub)
	if err != nil {
		w.t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		w.t.Fatal("export public key: no PEM")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		w.t.Fatal(err)
	}
	return k.(*ecdsa.PublicKey)
}

// published fetches the index from the origin and every file in it,
// verified, and returns the keys by their data, counting each.
func (w *world) published(ctx context.Context) (map[[16]byte]int, error) {
	get := func(path string) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.cdn+"/"+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	idx, err := get("index.txt")
	if err != nil {
		return nil, err
	}
	files, err := export.ReadIndex(bytes.NewReader(idx))
	if err != nil {
		return nil, err
	}
	seen := map[[16]byte]int{}
	trusted := []*ecdsa.PublicKey{w.exportKey()}
	for _, f := range files {
		b, err := get(f)
		if err != nil {
			return nil, err
		}
		ex, err := export.Open(b, trusted)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, k := range ex.Keys {
			seen[k.Data]++
		}
	}
	return seen, nil
}

// waitPublished waits until every key in want is in the export, and
// returns the export's keys.
func (w *world) waitPublished(want map[[16]byte]bool, within time.Duration) map[[16]byte]int {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var last error
	for {
		got, err := w.published(ctx)
		if err == nil {
			missing := 0
			for k := range want {
				if got[k] == 0 {
					missing++
				}
			}
			if missing == 0 {
				return got
			}
			last = fmt.Errorf("%d of %d keys not published yet", missing, len(want))
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			w.t.Fatalf("export: %v", last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// manifestTrust is the trust configuration of a deployment of man's cards,
// as the roles read it from their environment.
func manifestTrust(t *testing.T, man *testpki.Manifest) protocol.Trust {
	t.Helper()
	var tcfg trust.Config
	env := map[string]string{}
	for _, kv := range man.Env() {
		env[kv[0]] = kv[1]
	}
	if err := envconfig.ProcessWith(context.Background(), &envconfig.Config{Target: &tcfg, Lookuper: envconfig.MapLookuper(env)}); err != nil {
		t.Fatal(err)
	}
	tr, err := tcfg.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tr
}
