package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/phoneclient"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
)

// pipelineBench measures the public tier as processes: `vouch ingest` and
// `vouch store` against a bus this process runs (as the end-to-end test
// does) and a fresh database, `vouch aggregate -once` as a child, and
// `vouch cdn` beside nginx. Every row has its bare reference measured in
// the same run.
type pipelineBench struct {
	vouch, dbURL, cardsDir string
	rounds                 int

	uploads     int     // (a) closed loop
	concurrency int     // (a) closed loop's phones at once
	openRate    float64 // (a) open loop, uploads/s
	openSeconds float64
	storeN      int // (b) uploads of keysPer keys
	exportKeys  int // (c)
	cdnKeys     int // (d) keys of the served export file
	cdnSeconds  float64
	cdnConns    int

	clusterUploads int // the cluster's closed loop, and the embedded server's beside it

	only map[string]bool // the stages to measure (uploads, readers, export, origin, cluster); empty: all but cluster
}

// pipelineStages are the -only names of the pipeline's stages.
var pipelineStages = []string{"uploads", "readers", "export", "origin", "cluster"}

// does tells whether stage is measured in this run. The cluster only when
// named: it builds nats-server, starts five servers and issues its own
// bundles, minutes on this machine (cluster.go).
func (b pipelineBench) does(stage string) bool {
	if stage == "cluster" {
		return b.only[stage]
	}
	return len(b.only) == 0 || b.only[stage]
}

// keysPer is the keys of one upload: ten days of a phone, as the
// end-to-end test uploads.
const keysPer = 10

type pipelineResult struct {
	rate, bareRate   float64 // (a) uploads/s
	p50, p99         time.Duration
	openP50, openP99 time.Duration
	openSent         int
	cpu              string // (a) where the closed loop's CPU went, per upload

	storeRate, copyRate float64 // (b) keys/s

	exportSeconds, copyToSeconds, exportMB float64 // (c)

	cdnFileBytes                       int64
	cdn304, nginx304, cdn200, nginx200 float64 // (d) requests/s

	cluster clusterResult
}

// upload is one phone's signed upload, ready to send.
type upload struct {
	priv   ed25519.PrivateKey
	bundle []byte
	keys   []exposure.Key
	body   []byte                 // signed by signUploads
	req    phoneapi.UploadRequest // body decoded again, for the bare reference
}

func (b pipelineBench) run(ctx context.Context) (r pipelineResult, err error) {
	man, err := testpki.LoadManifest(b.cardsDir)
	if err != nil {
		return r, fmt.Errorf("test cards (make cards): %w", err)
	}
	os.Setenv("SOFTHSM2_CONF", man.SoftHSMConf)
	dir, err := os.MkdirTemp("", "vouch-bench-pipeline-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	token := hex.EncodeToString(randomBytes(24))
	bs, err := bus.Start(ctx, bus.Config{StoreDir: filepath.Join(dir, "bus"), Listen: true, Host: "127.0.0.1", Port: -1,
		Token: token, Name: "bench", StartTimeout: 10 * time.Second})
	if err != nil {
		return r, err
	}
	defer bs.Close()
	dbURL, drop, err := benchDatabase(ctx, b.dbURL)
	if err != nil {
		return r, err
	}
	defer drop()
	if err := database.Migrate(ctx, dbURL); err != nil {
		return r, err
	}
	db, err := database.Open(ctx, database.Config{URL: dbURL})
	if err != nil {
		return r, err
	}
	defer db.Close()

	env := os.Environ()
	for _, kv := range man.Env() {
		env = append(env, kv[0]+"="+kv[1])
	}
	env = append(env, "DATABASE_URL="+dbURL, "NATS_URL="+bs.ClientURL(), "VOUCH_BUS_TOKEN="+token,
		"VOUCH_HSM_PIN="+man.Backend.PIN, "VOUCH_LOG_LEVEL=warn",
		// Every phone of the load comes from one loopback address.
		"VOUCH_INGEST_RATE=1000000000", "VOUCH_INGEST_RATE_BURST=1000000000")

	if b.does("uploads") || b.does("readers") {
		if err := b.runTier(ctx, &r, man, db, bs, env, dir); err != nil {
			return r, err
		}
	}
	if b.does("cluster") {
		if err := b.clusterRows(ctx, &r.cluster, man, db, bs, env, token, dir); err != nil {
			return r, fmt.Errorf("cluster: %w", err)
		}
	}
	// (c) and (d) on the same database, emptied.
	if b.does("export") {
		if err := b.exportRows(ctx, &r, db, env, dir); err != nil {
			return r, err
		}
	}
	if b.does("origin") {
		if err := b.cdnRows(ctx, &r, db, env, dir); err != nil {
			return r, err
		}
	}
	return r, nil
}

// runTier measures (a) and (b): ingest and store as processes.
func (b pipelineBench) runTier(ctx context.Context, r *pipelineResult, man *testpki.Manifest, db *database.DB, bs *bus.Bus, env []string, dir string) (err error) {
	ingestAddr := freeAddr()
	env = append(env, "VOUCH_INGEST_ADDR="+ingestAddr, "VOUCH_INGEST_ACCESS_LOG_DIR="+filepath.Join(dir, "access"))
	// The bundles: one per upload (an authorization is used once), from
	// two cards at once, each with its one session.
	total := b.uploads + int(b.openRate*b.openSeconds)
	fmt.Fprintf(os.Stderr, "bench: pipeline: issuing %d bundles on SoftHSM\n", total)
	ups, uzis, err := issueUploads(man, total)
	if err != nil {
		return err
	}
	if err := putLicenses(ctx, bs, uzis); err != nil {
		return err
	}

	// Readiness is on each role's operations listener.
	ingestOps := freeAddr()
	ingest, err := startRole(b.vouch, append(env, "VOUCH_OPS_LISTEN="+ingestOps), dir, "ingest", "ingest")
	if err != nil {
		return err
	}
	defer ingest.stop()
	storeOps := freeAddr()
	store, err := startRole(b.vouch, append(env, "VOUCH_OPS_LISTEN="+storeOps), dir, "store", "store")
	if err != nil {
		return err
	}
	defer store.stop()
	if err := ingest.waitHTTP("http://" + ingestOps + "/readyz"); err != nil {
		return err
	}
	if err := store.waitHTTP("http://" + storeOps + "/readyz"); err != nil {
		return err
	}

	// (a) The bare reference first: the same uploads verified in this
	// process, on as many goroutines as cores.
	tr, err := manifestTrust(man)
	if err != nil {
		return err
	}
	if err := signUploads(ups[:b.uploads], time.Now()); err != nil {
		return err
	}
	if r.bareRate, err = bareVerify(tr, ups[:b.uploads]); err != nil {
		return err
	}
	if b.does("uploads") {
		if err := b.uploadRows(ctx, r, db, ingestAddr, ups, ingest, store); err != nil {
			return err
		}
	}
	// (b) The readers alone, on keys already on the bus.
	if b.does("readers") {
		if err := b.storeRows(ctx, r, db, bs, store); err != nil {
			return err
		}
	}
	store.stop()
	ingest.stop()
	return nil
}

// issueUploads vouches n phones and signs their uploads of keysPer keys,
// and returns the UZI numbers of the cards that vouched.
func issueUploads(man *testpki.Manifest, n int) ([]upload, []string, error) {
	cards := []string{"gp", "doctor"}
	ups := make([]upload, n)
	var uzis []string
	var wg sync.WaitGroup
	errs := make(chan error, len(cards))
	now := time.Now()
	today := now.UTC().Truncate(24 * time.Hour)
	for ci, card := range cards {
		iss, err := testpki.OpenIssuer(man, card)
		if err != nil {
			return nil, nil, err
		}
		defer iss.Close()
		uzis = append(uzis, iss.Identity().UZI)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := ci; i < n; i += len(cards) {
				pub, priv, _ := ed25519.GenerateKey(rand.Reader)
				bundle, err := iss.IssueAt(pub, now)
				if err != nil {
					errs <- err
					return
				}
				keys := make([]exposure.Key, keysPer)
				for d := range keys {
					keys[d] = exposure.Key{RollingStart: exposure.IntervalNumber(today.AddDate(0, 0, -1-d)), RollingPeriod: exposure.MaxRollingPeriod}
					rand.Read(keys[d].Data[:])
				}
				ups[i] = upload{priv: priv, bundle: bundle, keys: keys}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, nil, fmt.Errorf("issuing bundles: %w", err)
	}
	return ups, uzis, nil
}

// signUploads signs every upload at now (before the clock starts: the
// phone's work is not the server's).
func signUploads(ups []upload, now time.Time) error {
	for i := range ups {
		u := &ups[i]
		body, err := phoneclient.UploadBody(u.priv, u.bundle, u.keys, now)
		if err != nil {
			return err
		}
		u.body = body
		u.req = phoneapi.UploadRequest{}
		if err := json.Unmarshal(body, &u.req); err != nil {
			return err
		}
	}
	return nil
}

// putLicenses puts an active license for each card where ingest looks it
// up, as the registry sync would.
func putLicenses(ctx context.Context, bs *bus.Bus, uzis []string) error {
	lic, err := bs.Bucket(ctx, "vouch-licenses", registrysync.BucketDescription)
	if err != nil {
		return err
	}
	rec, _ := json.Marshal(registrysync.LicenseRecord{Status: "active", MayVouch: true, ChangedAt: time.Now().Add(-time.Hour)})
	var kvs []bus.KeyValue
	for _, u := range uzis {
		kvs = append(kvs, bus.KeyValue{Key: u, Value: rec})
	}
	return lic.PutAll(ctx, kvs)
}

// manifestTrust is the trust of a deployment of man's cards.
func manifestTrust(man *testpki.Manifest) (protocol.Trust, error) {
	files := man.TrustFiles()
	return trust.Config{Roots: files.Roots, CAs: files.CAs(), CRLs: files.CRLs, Jurisdiction: "NL", Profile: "test",
		AttestationKeys: []string{man.Backend.AttestationPub}}.Load(time.Now())
}

// bareVerify is the reference of (a): what the server cannot skip for an
// upload — the bundle verified for the phone, the phone's signature over
// the upload, the keys checked — on every core, nothing else, on the
// signed uploads the real run then sends.
func bareVerify(tr protocol.Trust, ups []upload) (float64, error) {
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		return 0, err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, runtime.GOMAXPROCS(0))
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ups) {
					return
				}
				u := &ups[i]
				now := time.Now()
				if _, err := v.Verify(u.req.Bundle, u.req.PublicKey, now); err != nil {
					errs <- err
					return
				}
				at := time.Unix(u.req.Time, 0)
				msg := (&protocol.Upload{Bundle: u.req.Bundle, Phone: u.req.PublicKey, At: at, Keys: wireKeys(u.req.Keys)}).Marshal()
				if !protocol.VerifyPhone(u.req.PublicKey, msg, u.req.Signature, at, now) {
					errs <- errors.New("bare: phone signature")
					return
				}
				if err := exposure.Validate(wireKeys(u.req.Keys), now, 14); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, fmt.Errorf("bare verification: %w", err)
	}
	return float64(len(ups)) / took.Seconds(), nil
}

func wireKeys(ks []phoneapi.Key) []exposure.Key {
	out := make([]exposure.Key, len(ks))
	for i, k := range ks {
		copy(out[i].Data[:], k.Key)
		out[i].RollingStart, out[i].RollingPeriod, out[i].TransmissionRisk = k.RollingStartIntervalNumber, k.RollingPeriod, k.TransmissionRisk
	}
	return out
}

// uploadRows is (a): the closed loop, counted until the store has every
// key, then the open loop at openRate.
func (b pipelineBench) uploadRows(ctx context.Context, r *pipelineResult, db *database.DB, addr string, ups []upload, ingest, store *role) error {
	base := "http://" + addr
	hc := phoneclient.DefaultHTTPClient(max(b.concurrency, 256))
	send := func(body []byte) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+phoneapi.PathUploads, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(phoneapi.HeaderChaff, phoneapi.ChaffReal)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("upload: HTTP %d %s", resp.StatusCode, b)
		}
		return nil
	}
	closed, open := ups[:b.uploads], ups[b.uploads:]
	fmt.Fprintf(os.Stderr, "bench: pipeline: %d uploads, %d at once\n", len(closed), b.concurrency)
	cpu0 := cpuNow(ingest, store)
	start := time.Now()
	lat, _, err := concurrently(b.concurrency, len(closed), 0, func(i int) error { return send(closed[i].body) })
	if err != nil {
		return err
	}
	if err := waitStored(ctx, db, len(closed)*keysPer, 2*time.Minute); err != nil {
		return err
	}
	r.rate = float64(len(closed)) / time.Since(start).Seconds()
	r.cpu = cpuNow(ingest, store).per(cpu0, len(closed))
	r.p50, r.p99 = percentile(lat, 50), percentile(lat, 99)
	for i := range closed {
		closed[i] = upload{}
	}

	if len(open) == 0 {
		return nil
	}
	if err := signUploads(open, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: pipeline: %d uploads at %.0f/s, open loop\n", len(open), b.openRate)
	olat := make([]time.Duration, len(open))
	var wg sync.WaitGroup
	var failed atomic.Value
	ostart := time.Now()
	for i := range open {
		// Latency counts from when the upload was due, not sent: a
		// server that falls behind pays for the queue it makes.
		due := ostart.Add(time.Duration(float64(i) / b.openRate * float64(time.Second)))
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := send(open[i].body); err != nil {
				failed.Store(err)
			}
			olat[i] = time.Since(due)
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return fmt.Errorf("open loop: %w", err)
	}
	if err := waitStored(ctx, db, len(ups)*keysPer, 2*time.Minute); err != nil {
		return err
	}
	r.openP50, r.openP99 = percentile(olat, 50), percentile(olat, 99)
	r.openSent = len(open)
	for i := range open {
		open[i] = upload{}
	}
	return nil
}

// cpuTimes are CPU seconds (user + system) used so far by the ingest and
// store processes, this process (the bus, the load generator) and the
// PostgreSQL server's processes.
type cpuTimes struct{ ingest, store, self, pg float64 }

func cpuNow(ingest, store *role) cpuTimes {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	c := cpuTimes{ingest: procCPU(ingest.cmd.Process.Pid), store: procCPU(store.cmd.Process.Pid),
		self: float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9}
	if ents, err := os.ReadDir("/proc"); err == nil {
		for _, e := range ents {
			if comm, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "postgres" {
				var pid int
				fmt.Sscan(e.Name(), &pid)
				c.pg += procCPU(pid)
			}
		}
	}
	return c
}

// per says where the CPU went between c0 and c, per upload of n.
func (c cpuTimes) per(c0 cpuTimes, n int) string {
	us := func(a, b float64) float64 { return (a - b) / float64(n) * 1e6 }
	return fmt.Sprintf("CPU per upload: ingest %.0f µs, store %.0f µs, PostgreSQL (all its processes) %.0f µs, bus + load generator %.0f µs",
		us(c.ingest, c0.ingest), us(c.store, c0.store), us(c.pg, c0.pg), us(c.self, c0.self))
}

// procCPU is a process's CPU seconds from /proc/<pid>/stat (utime + stime).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	var ut, st float64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return (ut + st) / 100 // USER_HZ
}

// waitStored waits until the store holds n keys.
func waitStored(ctx context.Context, db *database.DB, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		var got int
		if err := db.Pool().QueryRow(ctx, `select count(*) from exposure_keys`).Scan(&got); err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the store has %d of %d keys after %s", got, n, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storeRows is (b): the readers stopped (SIGSTOP) while the keys go onto
// the bus, then let go with the clock; against pgx CopyFrom of the same
// rows into an identical empty table.
func (b pipelineBench) storeRows(ctx context.Context, r *pipelineResult, db *database.DB, bs *bus.Bus, store *role) error {
	pool := db.Pool()
	if _, err := pool.Exec(ctx, `create table exposure_keys_bare (like exposure_keys including all)`); err != nil {
		return err
	}
	var ours, bare []float64
	for round := range max(1, min(b.rounds, 3)) {
		recs := make([]*exposure.Record, b.storeN)
		var rows [][]any
		received := exposure.Coarse(time.Now())
		today := time.Now().UTC().Truncate(24 * time.Hour)
		for i := range recs {
			rec := &exposure.Record{Received: received, Keys: make([]exposure.Key, keysPer)}
			rand.Read(rec.AuthorizationID[:])
			for d := range rec.Keys {
				rec.Keys[d] = exposure.Key{RollingStart: exposure.IntervalNumber(today.AddDate(0, 0, -1-d)), RollingPeriod: exposure.MaxRollingPeriod}
				rand.Read(rec.Keys[d].Data[:])
				k := rec.Keys[d]
				rows = append(rows, []any{k.Data[:], k.RollingStart, k.RollingPeriod, int16(k.TransmissionRisk), nil, received, ""})
			}
			recs[i] = rec
		}
		if _, err := pool.Exec(ctx, `truncate exposure_keys, exposure_keys_bare`); err != nil {
			return err
		}
		if _, err := pool.Exec(ctx, `vacuum analyze exposure_keys`); err != nil {
			return err
		}
		if err := store.signal(syscall.SIGSTOP); err != nil {
			return err
		}
		js := bs.JetStream()
		for _, rec := range recs {
			if _, err := js.PublishAsync(exposure.Subject, rec.Marshal()); err != nil {
				store.signal(syscall.SIGCONT)
				return err
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			store.signal(syscall.SIGCONT)
			return errors.New("bus: publishing the records took over a minute")
		}
		fmt.Fprintf(os.Stderr, "bench: pipeline: readers store %d keys (round %d)\n", len(rows), round+1)
		start := time.Now()
		if err := store.signal(syscall.SIGCONT); err != nil {
			return err
		}
		if err := waitStored(ctx, db, len(rows), 2*time.Minute); err != nil {
			return err
		}
		ours = append(ours, float64(len(rows))/time.Since(start).Seconds())

		start = time.Now()
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{"exposure_keys_bare"},
			[]string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "days_since_onset", "received_hour", "origin"},
			pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		bare = append(bare, float64(len(rows))/time.Since(start).Seconds())
	}
	r.storeRate, r.copyRate = mid(ours), mid(bare)
	_, err := pool.Exec(ctx, `drop table exposure_keys_bare`)
	return err
}

// seedKeys empties the store and fills it with n random keys spread over
// the last 14 days (as internal/export's memory test does).
func seedKeys(ctx context.Context, db *database.DB, n int) error {
	pool := db.Pool()
	// The export's batches go with the keys they hold: a new store, a new
	// series of files.
	if _, err := pool.Exec(ctx, `truncate exposure_keys, export_batches, export_files`); err != nil {
		return err
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	received := exposure.Coarse(time.Now())
	i := 0
	var buf [20]byte
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		i++
		rand.Read(buf[:])
		day := 1 + int(binary.BigEndian.Uint32(buf[16:]))%14
		start := exposure.IntervalNumber(today.AddDate(0, 0, -day))
		return []any{buf[:16], start, int32(144), int16(day % 9), int16(2 - day), received, ""}, nil
	})
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"exposure_keys"},
		[]string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "days_since_onset", "received_hour", "origin"}, src); err != nil {
		return err
	}
	_, err := pool.Exec(ctx, `vacuum analyze exposure_keys`)
	return err
}

// aggregateOnce runs `vouch aggregate -once` into dir and returns its wall
// time and peak RSS (MB), checking that it exported want keys.
func aggregateOnce(ctx context.Context, bin string, env []string, dir string, want int) (float64, float64, error) {
	cmd := exec.CommandContext(ctx, bin, "aggregate", "-once")
	cmd.Env = append(env, "VOUCH_EXPORT_DIR="+dir, "VOUCH_LOG_LEVEL=info")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	took, mb, err := runPeak(cmd)
	if err != nil {
		return 0, 0, fmt.Errorf("vouch aggregate -once: %w\n%s", err, tail(out.Bytes(), 2000))
	}
	if !strings.Contains(out.String(), fmt.Sprintf(`"keys":%d,`, want)) {
		return 0, 0, fmt.Errorf("vouch aggregate -once did not export %d keys:\n%s", want, tail(out.Bytes(), 2000))
	}
	return took, mb, nil
}

// runPeak runs cmd to completion and returns its wall time and peak RSS
// in MB: its VmHWM, read until it exits. Its ru_maxrss would not do:
// Linux carries the high-water mark of the address space exec replaced —
// this process's, hundreds of MB after the upload rows — into the child's.
func runPeak(cmd *exec.Cmd) (float64, float64, error) {
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	var hwm atomic.Int64
	done := make(chan struct{})
	go func() {
		status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
		for {
			if kb := vmHWM(status); kb > hwm.Load() {
				hwm.Store(kb)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	err := cmd.Wait()
	took := time.Since(start).Seconds()
	close(done)
	return took, float64(hwm.Load()) / 1024, err
}

// vmHWM is the VmHWM line of a /proc/<pid>/status file, in kB (0 when
// unreadable: the process is gone or has not exec'd yet).
func vmHWM(status string) int64 {
	b, err := os.ReadFile(status)
	if err != nil {
		return 0
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb
		}
	}
	return 0
}

// exportRows is (c): the export of exportKeys keys, a child process each
// round, against COPY TO of the same rows in key order.
func (b pipelineBench) exportRows(ctx context.Context, r *pipelineResult, db *database.DB, env []string, dir string) error {
	fmt.Fprintf(os.Stderr, "bench: pipeline: seeding %d keys for the export\n", b.exportKeys)
	if err := seedKeys(ctx, db, b.exportKeys); err != nil {
		return err
	}
	var ours, bare, rss []float64
	for round := range max(1, min(b.rounds, 3)) {
		conn, err := db.Pool().Acquire(ctx)
		if err != nil {
			return err
		}
		start := time.Now()
		_, err = conn.Conn().PgConn().CopyTo(ctx, io.Discard, `copy (select key_data, rolling_start, rolling_period,
			transmission_risk, days_since_onset from exposure_keys order by key_data) to stdout`)
		conn.Release()
		if err != nil {
			return err
		}
		bare = append(bare, time.Since(start).Seconds())
		out := filepath.Join(dir, fmt.Sprintf("export-%d", round))
		s, mb, err := aggregateOnce(ctx, b.vouch, env, out, b.exportKeys)
		if err != nil {
			return err
		}
		os.RemoveAll(out)
		ours, rss = append(ours, s), append(rss, mb)
	}
	r.exportSeconds, r.copyToSeconds = mid(ours), mid(bare)
	r.exportMB = rss[0]
	for _, v := range rss {
		r.exportMB = max(r.exportMB, v)
	}
	return nil
}

// cdnRows is (d): a real export file of cdnKeys keys served by `vouch cdn`
// and by nginx from the same directory, the same load on each.
func (b pipelineBench) cdnRows(ctx context.Context, r *pipelineResult, db *database.DB, env []string, dir string) error {
	if err := seedKeys(ctx, db, b.cdnKeys); err != nil {
		return err
	}
	root := filepath.Join(dir, "origin")
	if _, _, err := aggregateOnce(ctx, b.vouch, env, root, b.cdnKeys); err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(root, "exports", "*.zip"))
	if err != nil || len(files) != 1 {
		return fmt.Errorf("origin: want one export file, found %d (%v)", len(files), err)
	}
	fi, err := os.Stat(files[0])
	if err != nil {
		return err
	}
	r.cdnFileBytes = fi.Size()
	path := "/exports/" + filepath.Base(files[0])
	// nginx's workers may run as another user: the tree must be readable.
	for _, d := range []string{dir, root, filepath.Join(root, "exports")} {
		os.Chmod(d, 0o755)
	}
	os.Chmod(files[0], 0o644)

	cdnAddr := freeAddr()
	cdn, err := startRole(b.vouch, append(env, "VOUCH_CDN_ADDR="+cdnAddr, "VOUCH_CDN_DIR="+root, "VOUCH_OPS_LISTEN="+freeAddr()), dir, "cdn", "cdn")
	if err != nil {
		return err
	}
	defer cdn.stop()
	ngAddr := freeAddr()
	ng, err := startNginx(filepath.Join(dir, "nginx"), ngAddr, root)
	if err != nil {
		return err
	}
	defer ng.stop()
	if err := cdn.waitHTTP("http://" + cdnAddr + path); err != nil {
		return err
	}
	if err := ng.waitHTTP("http://" + ngAddr + path); err != nil {
		return err
	}
	etag := func(base string) (string, error) {
		resp, err := http.Get(base + path)
		if err != nil {
			return "", err
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n != fi.Size() || resp.Header.Get("ETag") == "" {
			return "", fmt.Errorf("%s: HTTP %d, %d bytes, ETag %q", base, resp.StatusCode, n, resp.Header.Get("ETag"))
		}
		return resp.Header.Get("ETag"), nil
	}
	type target struct {
		base, etag string
		got304     []float64
		got200     []float64
	}
	ts := []*target{{base: "http://" + cdnAddr}, {base: "http://" + ngAddr}}
	for _, t := range ts {
		if t.etag, err = etag(t.base); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "bench: pipeline: origin load, %d connections, %.0f s a measurement\n", b.cdnConns, b.cdnSeconds)
	dur := time.Duration(b.cdnSeconds * float64(time.Second))
	for range max(1, min(b.rounds, 3)) {
		for _, t := range ts {
			v, err := loadGET(ctx, t.base+path, t.etag, http.StatusNotModified, 0, b.cdnConns, dur)
			if err != nil {
				return err
			}
			t.got304 = append(t.got304, v)
			if v, err = loadGET(ctx, t.base+path, "", http.StatusOK, fi.Size(), b.cdnConns, dur); err != nil {
				return err
			}
			t.got200 = append(t.got200, v)
		}
	}
	r.cdn304, r.nginx304 = mid(ts[0].got304), mid(ts[1].got304)
	r.cdn200, r.nginx200 = mid(ts[0].got200), mid(ts[1].got200)
	return nil
}

// loadGET is the load generator of (d): conns keep-alive connections
// asking for url for d (with If-None-Match: etag when set), each answer
// checked; it returns requests per second.
func loadGET(ctx context.Context, url, etag string, want int, size int64, conns int, d time.Duration) (float64, error) {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var n atomic.Int64
	var failed atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if etag != "" {
					req.Header.Set("If-None-Match", etag)
				}
				resp, err := c.Do(req)
				if err != nil {
					failed.Store(err)
					return
				}
				got, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want || got != size {
					failed.Store(fmt.Errorf("GET %s: HTTP %d, %d bytes; want %d, %d bytes", url, resp.StatusCode, got, want, size))
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		return 0, err
	}
	return float64(n.Load()) / took.Seconds(), nil
}

// role is a child process: a role of vouch, or nginx.
type role struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startRole(bin string, env []string, dir, name string, args ...string) (*role, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return startProc(cmd, dir, name)
}

func startProc(cmd *exec.Cmd, dir, name string) (*role, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, killed with this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &role{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

func (p *role) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *role) signal(s syscall.Signal) error {
	if err := syscall.Kill(-p.cmd.Process.Pid, s); err != nil {
		return fmt.Errorf("%s: %v: %w", p.name, s, err)
	}
	return nil
}

func (p *role) stop() {
	if !p.running() {
		return
	}
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.signal(syscall.SIGKILL)
		<-p.done
	}
}

// waitHTTP waits until url answers 200.
func (p *role) waitHTTP(url string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !p.running() {
			b, _ := os.ReadFile(p.log)
			return fmt.Errorf("%s stopped:\n%s", p.name, tail(b, 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(p.log)
	return fmt.Errorf("%s did not answer %s:\n%s", p.name, url, tail(b, 3000))
}

// startNginx runs nginx in the foreground on addr, serving root, with its
// pid, logs and temporary files in dir: a static origin as it is usually
// configured (sendfile, ETags, keep-alive), no access log (vouch cdn
// writes none either).
func startNginx(dir, addr, root string) (*role, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			return nil, fmt.Errorf("nginx (Debian package nginx; make deps): %w", err)
		}
		bin = "/usr/sbin/nginx"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`%s
daemon off;
worker_processes auto;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_timeout 120s;
	keepalive_requests 1000000;
	client_body_temp_path %[2]s/body;
	proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
	types { application/zip zip; text/plain txt; }
	default_type application/octet-stream;
	server {
		listen %[3]s;
		root %[4]s;
		etag on;
		location /exports/ { add_header Cache-Control "public, max-age=31536000, immutable"; }
		location / { add_header Cache-Control "no-cache"; }
	}
}
`, user, dir, addr, root)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return startProc(exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path), dir, "nginx")
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// rows are the public tier's rows of r.
func (b pipelineBench) rows(r pipelineResult) []Row {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	closed := fmt.Sprintf("uploads end to end over loopback, %d at once, closed loop", b.concurrency)
	how := fmt.Sprintf("vouch ingest + vouch store into PostgreSQL as processes; %d uploads of %d keys, counted when the store has every key", b.uploads, keysPer)
	var rows []Row
	if b.does("uploads") {
		rows = append(rows, []Row{
			{Name: closed + ", sustained", Value: r.rate, Unit: "uploads/s", Target: target(3000), AtLeast: true,
				Reference:      "bare in-process verification of the same uploads (bundle verify + phone Ed25519 + key checks, every core)",
				ReferenceValue: r.bareRate, Ratio: r.bareRate / r.rate, Detail: how + "; " + r.cpu},
			{Name: closed + ": p50", Value: ms(r.p50), Unit: "ms"},
			{Name: closed + ": p99", Value: ms(r.p99), Unit: "ms"},
		}...)
	}
	if b.does("uploads") && r.openSent > 0 {
		open := fmt.Sprintf("uploads end to end over loopback at %.0f/s, open loop", b.openRate)
		d := fmt.Sprintf("%d uploads over %.0f s, latency from when each was due; all stored after", r.openSent, b.openSeconds)
		rows = append(rows,
			Row{Name: open + ": p50", Value: ms(r.openP50), Unit: "ms", Detail: d},
			Row{Name: open + ": p99", Value: ms(r.openP99), Unit: "ms", Target: target(50), Detail: d})
	}
	if b.does("readers") {
		rows = append(rows,
			Row{Name: fmt.Sprintf("keys into PostgreSQL by the readers, %dk keys", b.storeN*keysPer/1000), Value: r.storeRate, Unit: "keys/s",
				Reference: "pgx CopyFrom of the same rows into an identical empty table", ReferenceValue: r.copyRate, Ratio: r.copyRate / r.storeRate,
				Target: target(1.5), Detail: "one vouch store process (2 readers) let go on keys already on the bus; ratio = time over bare's"})
	}
	if b.does("export") {
		ex := fmt.Sprintf("export of %d keys over 14 days, signed (vouch aggregate -once, a child process)", b.exportKeys)
		rows = append(rows,
			Row{Name: ex, Value: r.exportSeconds, Unit: "s", Target: target(3), Detail: "wall time of the process, its start included"},
			Row{Name: ex + ": against bare", Value: r.exportSeconds, Unit: "s",
				Reference: "COPY (SELECT key columns ... ORDER BY key_data) TO STDOUT of the same rows", ReferenceValue: r.copyToSeconds,
				Ratio: r.exportSeconds / r.copyToSeconds, Target: target(2.5)},
			Row{Name: ex + ": peak RSS", Value: r.exportMB, Unit: "MB", Target: target(100), Detail: "VmHWM of the child, read every 2 ms until it exits"})
	}
	if b.does("origin") {
		file := fmt.Sprintf("a cached export file (%.2f MB, %d keys)", float64(r.cdnFileBytes)/1e6, b.cdnKeys)
		d := fmt.Sprintf("%d keep-alive connections from one Go load generator on the same machine", b.cdnConns)
		rows = append(rows,
			Row{Name: "origin revalidating " + file + ": If-None-Match → 304", Value: r.cdn304, Unit: "req/s",
				Reference: "nginx serving the same directory", ReferenceValue: r.nginx304, Ratio: r.nginx304 / r.cdn304, Target: target(1.25),
				Detail: d + "; what a CDN asks when its copy's max-age is over; ratio = cost (1/throughput) over nginx's"},
			Row{Name: "origin filling a cache with " + file + ": full GET → 200", Value: r.cdn200, Unit: "req/s",
				Reference: "nginx serving the same directory", ReferenceValue: r.nginx200, Ratio: r.nginx200 / r.cdn200, Target: target(1.25),
				Detail: d + "; what a CDN asks on a miss"})
	}
	if b.does("cluster") {
		rows = append(rows, b.clusterRowsOf(r.cluster)...)
	}
	return rows
}
