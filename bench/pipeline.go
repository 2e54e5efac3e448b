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
	"flag"
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
// the same run. Its stages (uploads, readers, export, origin, cluster)
// share one bus and database (pipelineEnv).
type pipelineBench struct {
	vouch, cardsDir string
	rounds          int // runs of the stages that measure their own

	uploads     int     // closed loop
	concurrency int     // closed loop's phones at once
	openRate    float64 // open loop, uploads/s
	openSeconds float64
	storeN      int // readers: uploads of keysPer keys
	exportKeys  int
	cdnKeys     int // keys of the served export file
	cdnSeconds  float64
	cdnConns    int

	clusterUploads int // the cluster's closed loop, and the embedded server's beside it
}

// on makes a pipeline stage's measurement of m: m is given the settings
// with the run's, and the stages' shared bus and database.
func (p *pipelineBench) on(m func(ctx context.Context, b pipelineBench, e *pipelineEnv) ([]Row, error)) measure {
	return func(ctx context.Context, bb *bench) ([]Row, error) {
		e, err := bb.pipeline(ctx)
		if err != nil {
			return nil, err
		}
		b := *p
		b.vouch, b.cardsDir, b.rounds = bb.vouch, bb.cardsDir, bb.runs
		return m(ctx, b, e)
	}
}

// uploadsStage is the stage "uploads", called -runs times: each run its
// own bundles, ingest and store.
func (p *pipelineBench) uploadsStage(fs *flag.FlagSet) measure {
	fs.IntVar(&p.uploads, "uploads", 20_000, "uploads of the closed loop (stage uploads; each needs a bundle: about 1.5 ms on SoftHSM)")
	fs.IntVar(&p.concurrency, "upload-concurrency", 64, "phones uploading at once in the closed loop (stages uploads, cluster)")
	fs.Float64Var(&p.openRate, "open-rate", 1000, "uploads per second of the open loop (stages uploads, cluster)")
	fs.Float64Var(&p.openSeconds, "open-seconds", 10, "seconds of the open loop, 0: none (stages uploads, cluster)")
	return p.on(func(ctx context.Context, b pipelineBench, e *pipelineEnv) ([]Row, error) {
		var r pipelineResult
		if err := b.uploadRun(ctx, &r, e); err != nil {
			return nil, err
		}
		return b.uploadRowsOf(r), nil
	})
}

// readersStage is the stage "readers".
func (p *pipelineBench) readersStage(fs *flag.FlagSet) measure {
	fs.IntVar(&p.storeN, "store-uploads", 20_000, "uploads of 10 keys on the bus (stage readers)")
	return p.on(func(ctx context.Context, b pipelineBench, e *pipelineEnv) ([]Row, error) {
		storeOps := freeAddr()
		store, err := startRole(b.vouch, append(e.env, "VOUCH_OPS_LISTEN="+storeOps), e.dir, "store", "store")
		if err != nil {
			return nil, err
		}
		defer store.stop()
		if err := store.waitHTTP("http://" + storeOps + "/readyz"); err != nil {
			return nil, err
		}
		ours, bare, err := b.storeRows(ctx, e.db, e.bs, store)
		if err != nil {
			return nil, err
		}
		return []Row{{Name: fmt.Sprintf("keys into PostgreSQL by the readers, %dk keys", b.storeN*keysPer/1000), Unit: "keys/s",
			Reference: "pgx CopyFrom of the same rows into an identical empty table", Target: target(1.5), Samples: rateSamples(ours, bare),
			Detail: "one vouch store process (2 readers) let go on keys already on the bus; ratio = time over bare's"}}, nil
	})
}

// exportStage is the stage "export".
func (p *pipelineBench) exportStage(fs *flag.FlagSet) measure {
	fs.IntVar(&p.exportKeys, "export-keys", 1_400_000, "keys over 14 days (stage export)")
	return p.on(func(ctx context.Context, b pipelineBench, e *pipelineEnv) ([]Row, error) {
		ours, bare, rss, err := b.exportRows(ctx, e.db, e.env, e.dir)
		if err != nil {
			return nil, err
		}
		ex := fmt.Sprintf("export of %d keys over 14 days, signed (vouch aggregate -once, a child process)", b.exportKeys)
		return []Row{
			{Name: ex, Unit: "s", Target: target(3), Detail: "wall time of the process, its start included", Samples: valueSamples(ours)},
			{Name: ex + ": against bare", Unit: "s", Reference: "COPY (SELECT key columns ... ORDER BY key_data) TO STDOUT of the same rows",
				Target: target(2.5), Samples: ratioSamples(ours, bare)},
			{Name: ex + ": peak RSS", Unit: "MB", Target: target(100), Worst: true, Detail: "VmHWM of the child, read every 2 ms until it exits", Samples: valueSamples(rss)},
		}, nil
	})
}

// originStage is the stage "origin".
func (p *pipelineBench) originStage(fs *flag.FlagSet) measure {
	fs.IntVar(&p.cdnKeys, "cdn-keys", 40_000, "keys of the export file the origin serves (40,000: about 1 MB) (stage origin)")
	fs.Float64Var(&p.cdnSeconds, "cdn-seconds", 3, "seconds of each origin measurement (stage origin)")
	fs.IntVar(&p.cdnConns, "cdn-connections", 32, "keep-alive connections of the origin load (stage origin)")
	return p.on(func(ctx context.Context, b pipelineBench, e *pipelineEnv) ([]Row, error) {
		var r originResult
		if err := b.cdnRows(ctx, &r, e.db, e.env, e.dir); err != nil {
			return nil, err
		}
		file := fmt.Sprintf("a cached export file (%.2f MB, %d keys)", float64(r.fileBytes)/1e6, b.cdnKeys)
		d := fmt.Sprintf("%d keep-alive connections from a Go load generator, a process of its own on the same machine", b.cdnConns)
		return []Row{
			{Name: "origin revalidating " + file + ": If-None-Match → 304", Unit: "req/s",
				Reference: "nginx serving the same directory", Target: target(1.25), Samples: withCPU(rateSamples(r.cdn304, r.nginx304), r.cpu304),
				Detail: d + "; what a CDN asks when its copy's max-age is over; ratio = cost (1/throughput) over nginx's; cpu: µs per request"},
			{Name: "origin filling a cache with " + file + ": full GET → 200", Unit: "req/s",
				Reference: "nginx serving the same directory", Target: target(1.25), Samples: withCPU(rateSamples(r.cdn200, r.nginx200), r.cpu200),
				Detail: d + "; what a CDN asks on a miss; cpu: µs per request"},
			// The same work by CPU time instead of throughput: what each
			// server spent per answer, which a load generator starved of
			// CPU on a busy machine moves less. To be read beside the rows
			// above, not met.
			{Name: "origin revalidating " + file + ": CPU per 304", Unit: "µs", Reference: "nginx's CPU per 304, same run",
				Samples: ratioSamples(side(r.cpu304, "vouch cdn"), side(r.cpu304, "nginx")), Detail: "the server's processes' utime + stime over the answers"},
			{Name: "origin filling a cache with " + file + ": CPU per 200", Unit: "µs", Reference: "nginx's CPU per 200, same run",
				Samples: ratioSamples(side(r.cpu200, "vouch cdn"), side(r.cpu200, "nginx")), Detail: "the server's processes' utime + stime over the answers"},
		}, nil
	})
}

// side is each run's CPU of one side.
func side(runs []map[string]float64, name string) []float64 {
	v := make([]float64, len(runs))
	for i, m := range runs {
		v[i] = m[name]
	}
	return v
}

// clusterStage is the stage "cluster" (cluster.go), measured once.
func (p *pipelineBench) clusterStage(fs *flag.FlagSet) measure {
	fs.IntVar(&p.clusterUploads, "cluster-uploads", 5_000, "uploads of the closed loop on the R3 cluster, and on one embedded server for its ratio (stage cluster)")
	return p.on(func(ctx context.Context, b pipelineBench, e *pipelineEnv) ([]Row, error) {
		var r clusterResult
		if err := b.clusterRows(ctx, &r, e.man, e.db, e.bs, e.env, e.token, e.dir); err != nil {
			return nil, err
		}
		return b.clusterRowsOf(r), nil
	})
}

// pipelineEnv is what the pipeline's stages share: the test cards, a bus
// in this process, a database of the run's own, the roles' environment
// and a directory.
type pipelineEnv struct {
	man        *testpki.Manifest
	bs         *bus.Bus
	db         *database.DB
	env        []string
	dir, token string
}

// pipeline starts the pipeline stages' bus and database on first use;
// b.close stops them.
func (b *bench) pipeline(ctx context.Context) (*pipelineEnv, error) {
	if b.pipe != nil {
		return b.pipe, nil
	}
	e := &pipelineEnv{}
	man, err := testpki.LoadManifest(b.cardsDir)
	if err != nil {
		return nil, fmt.Errorf("test cards (make cards): %w", err)
	}
	e.man = man
	os.Setenv("SOFTHSM2_CONF", man.SoftHSMConf)
	if e.dir, err = os.MkdirTemp("", "vouch-bench-pipeline-"); err != nil {
		return nil, err
	}
	b.cleanup = append(b.cleanup, func() { os.RemoveAll(e.dir) })
	e.token = hex.EncodeToString(randomBytes(24))
	if e.bs, err = bus.Start(ctx, bus.Config{StoreDir: filepath.Join(e.dir, "bus"), Listen: true, Host: "127.0.0.1", Port: -1,
		Token: e.token, Name: "bench", StartTimeout: 10 * time.Second}); err != nil {
		return nil, err
	}
	b.cleanup = append(b.cleanup, e.bs.Close)
	dbURL, drop, err := benchDatabase(ctx, b.dbURL)
	if err != nil {
		return nil, err
	}
	b.cleanup = append(b.cleanup, drop)
	if err := database.Migrate(ctx, dbURL); err != nil {
		return nil, err
	}
	if e.db, err = database.Open(ctx, database.Config{URL: dbURL}); err != nil {
		return nil, err
	}
	b.cleanup = append(b.cleanup, e.db.Close)
	e.env = os.Environ()
	for _, kv := range man.Env() {
		e.env = append(e.env, kv[0]+"="+kv[1])
	}
	e.env = append(e.env, "DATABASE_URL="+dbURL, "NATS_URL="+e.bs.ClientURL(), "VOUCH_BUS_TOKEN="+e.token,
		"VOUCH_HSM_PIN="+man.Backend.PIN, "VOUCH_LOG_LEVEL=warn",
		// Every phone of the load comes from one loopback address.
		"VOUCH_INGEST_RATE=1000000000", "VOUCH_INGEST_RATE_BURST=1000000000")
	b.pipe = e
	return e, nil
}

// keysPer is the keys of one upload: ten days of a phone, as the
// end-to-end test uploads.
const keysPer = 10

// pipelineResult is what a run of the uploads measured (and the cluster's
// runs on each bus).
type pipelineResult struct {
	rate, bareRate   float64 // uploads/s
	p50, p99         time.Duration
	openP50, openP99 time.Duration
	openSent         int
	cpu, openCPU     map[string]float64 // where the closed and open loops' CPU went, µs per upload
}

// originResult is each round of the origin's rows, requests/s, and the
// CPU each side used in it (µs per request).
type originResult struct {
	fileBytes                          int64
	cdn304, nginx304, cdn200, nginx200 []float64
	cpu304, cpu200                     []map[string]float64
}

// upload is one phone's signed upload, ready to send.
type upload struct {
	priv   ed25519.PrivateKey
	bundle []byte
	keys   []exposure.Key
	body   []byte                 // signed by signUploads
	req    phoneapi.UploadRequest // body decoded again, for the bare reference
}

// uploadRun is a run of the stage uploads: ingest and store as processes,
// fresh bundles, the bare reference, the closed and the open loop.
func (b pipelineBench) uploadRun(ctx context.Context, r *pipelineResult, e *pipelineEnv) (err error) {
	dir, err := os.MkdirTemp(e.dir, "uploads-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if _, err := e.db.Pool().Exec(ctx, `truncate exposure_keys`); err != nil {
		return err
	}
	ingestAddr := freeAddr()
	env := append(e.env[:len(e.env):len(e.env)], "VOUCH_INGEST_ADDR="+ingestAddr, "VOUCH_INGEST_ACCESS_LOG_DIR="+filepath.Join(dir, "access"))
	// The bundles: one per upload (an authorization is used once), from
	// two cards at once, each with its one session.
	total := b.uploads + int(b.openRate*b.openSeconds)
	fmt.Fprintf(os.Stderr, "bench: pipeline: issuing %d bundles on SoftHSM\n", total)
	ups, uzis, err := issueUploads(e.man, total)
	if err != nil {
		return err
	}
	if err := putLicenses(ctx, e.bs, uzis); err != nil {
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

	// The bare reference first: the same uploads verified in this
	// process, on as many goroutines as cores.
	tr, err := manifestTrust(e.man)
	if err != nil {
		return err
	}
	if err := signUploads(ups[:b.uploads], time.Now()); err != nil {
		return err
	}
	if r.bareRate, err = bareVerify(tr, ups[:b.uploads]); err != nil {
		return err
	}
	return b.uploadRows(ctx, r, e.db, dir, ingestAddr, ups, ingest, store)
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

// uploadRows is the closed loop, counted until the store has every key,
// then the open loop at openRate; each from a load generator of its own
// (loadgen.go) in dir.
func (b pipelineBench) uploadRows(ctx context.Context, r *pipelineResult, db *database.DB, dir, addr string, ups []upload, ingest, store *role) error {
	closed, open := ups[:b.uploads], ups[b.uploads:]
	bodies := func(ups []upload) [][]byte {
		out := make([][]byte, len(ups))
		for i := range ups {
			out[i] = ups[i].body
		}
		return out
	}
	fmt.Fprintf(os.Stderr, "bench: pipeline: %d uploads, %d at once\n", len(closed), b.concurrency)
	cpu0 := cpuNow(ingest, store)
	gen, err := runLoadgen(ctx, dir, addr, bodies(closed), b.concurrency, 0)
	if err != nil {
		return err
	}
	if err := waitStored(ctx, db, len(closed)*keysPer, 2*time.Minute); err != nil {
		return err
	}
	r.rate = float64(len(closed)) / time.Since(gen.Start).Seconds()
	r.cpu = cpuNow(ingest, store).per(cpu0, gen.cpuSeconds, len(closed))
	r.p50, r.p99 = percentile(gen.Latencies, 50), percentile(gen.Latencies, 99)
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
	cpu0 = cpuNow(ingest, store)
	gen, err = runLoadgen(ctx, dir, addr, bodies(open), b.concurrency, b.openRate)
	if err != nil {
		return fmt.Errorf("open loop: %w", err)
	}
	if err := waitStored(ctx, db, len(ups)*keysPer, 2*time.Minute); err != nil {
		return err
	}
	r.openCPU = cpuNow(ingest, store).per(cpu0, gen.cpuSeconds, len(open))
	r.openP50, r.openP99 = percentile(gen.Latencies, 50), percentile(gen.Latencies, 99)
	r.openSent = len(open)
	for i := range open {
		open[i] = upload{}
	}
	return nil
}

// cpuTimes are CPU seconds (user + system) used so far by the ingest and
// store processes, this process (the bus) and the PostgreSQL server's
// processes.
type cpuTimes struct{ ingest, store, self, pg float64 }

func cpuNow(ingest, store *role) cpuTimes {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	c := cpuTimes{ingest: procCPU(ingest.cmd.Process.Pid), store: procCPU(store.cmd.Process.Pid), self: rusageSeconds(&ru)}
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

// CPU sides of an upload row, in results.json's "cpu" (µs per upload).
const (
	cpuIngest = "ingest"
	cpuStore  = "store"
	cpuPG     = "postgresql (all its processes)"
	cpuBus    = "bench process (the bus)"
	cpuGen    = "load generator"
)

// per is where the CPU went between c0 and c, µs per upload of n, with
// the load generator's gen seconds.
func (c cpuTimes) per(c0 cpuTimes, gen float64, n int) map[string]float64 {
	us := func(d float64) float64 { return d / float64(n) * 1e6 }
	return map[string]float64{cpuIngest: us(c.ingest - c0.ingest), cpuStore: us(c.store - c0.store), cpuPG: us(c.pg - c0.pg),
		cpuBus: us(c.self - c0.self), cpuGen: us(gen)}
}

// procCPU is a process's CPU seconds from /proc/<pid>/stat (utime + stime).
func procCPU(pid int) float64 {
	st, _ := readProcStat(pid)
	return st.cpu
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

// storeRows measures the readers, b.rounds times: the readers stopped
// (SIGSTOP) while the keys go onto the bus, then let go with the clock;
// against pgx CopyFrom of the same rows into an identical empty table. It
// returns each round's keys/s of both.
func (b pipelineBench) storeRows(ctx context.Context, db *database.DB, bs *bus.Bus, store *role) (ours, bare []float64, err error) {
	pool := db.Pool()
	if _, err := pool.Exec(ctx, `drop table if exists exposure_keys_bare`); err != nil {
		return nil, nil, err
	}
	if _, err := pool.Exec(ctx, `create table exposure_keys_bare (like exposure_keys including all)`); err != nil {
		return nil, nil, err
	}
	for round := range max(1, b.rounds) {
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
			return nil, nil, err
		}
		if _, err := pool.Exec(ctx, `vacuum analyze exposure_keys`); err != nil {
			return nil, nil, err
		}
		if err := store.signal(syscall.SIGSTOP); err != nil {
			return nil, nil, err
		}
		js := bs.JetStream()
		// In windows of acknowledgements: more outstanding than the
		// client allows (4,000) stalls it, which a loaded machine reached.
		const window = 1000
		for i, rec := range recs {
			if _, err := js.PublishAsync(exposure.Subject, rec.Marshal()); err != nil {
				store.signal(syscall.SIGCONT)
				return nil, nil, err
			}
			if (i+1)%window != 0 && i+1 != len(recs) {
				continue
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				store.signal(syscall.SIGCONT)
				return nil, nil, errors.New("bus: publishing the records took over a minute")
			}
		}
		fmt.Fprintf(os.Stderr, "bench: pipeline: readers store %d keys (round %d)\n", len(rows), round+1)
		start := time.Now()
		if err := store.signal(syscall.SIGCONT); err != nil {
			return nil, nil, err
		}
		if err := waitStored(ctx, db, len(rows), 2*time.Minute); err != nil {
			return nil, nil, err
		}
		ours = append(ours, float64(len(rows))/time.Since(start).Seconds())

		start = time.Now()
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{"exposure_keys_bare"},
			[]string{"key_data", "rolling_start", "rolling_period", "transmission_risk", "days_since_onset", "received_hour", "origin"},
			pgx.CopyFromRows(rows)); err != nil {
			return nil, nil, err
		}
		bare = append(bare, float64(len(rows))/time.Since(start).Seconds())
	}
	_, err = pool.Exec(ctx, `drop table exposure_keys_bare`)
	return ours, bare, err
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

// exportRows measures the export of exportKeys keys, a child process each
// of b.rounds rounds, against COPY TO of the same rows in key order; it
// returns each round's seconds of both and the child's peak RSS (MB).
func (b pipelineBench) exportRows(ctx context.Context, db *database.DB, env []string, dir string) (ours, bare, rss []float64, err error) {
	fmt.Fprintf(os.Stderr, "bench: pipeline: seeding %d keys for the export\n", b.exportKeys)
	if err := seedKeys(ctx, db, b.exportKeys); err != nil {
		return nil, nil, nil, err
	}
	for round := range max(1, b.rounds) {
		conn, err := db.Pool().Acquire(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		start := time.Now()
		_, err = conn.Conn().PgConn().CopyTo(ctx, io.Discard, `copy (select key_data, rolling_start, rolling_period,
			transmission_risk, days_since_onset from exposure_keys order by key_data) to stdout`)
		conn.Release()
		if err != nil {
			return nil, nil, nil, err
		}
		bare = append(bare, time.Since(start).Seconds())
		out := filepath.Join(dir, fmt.Sprintf("export-%d", round))
		s, mb, err := aggregateOnce(ctx, b.vouch, env, out, b.exportKeys)
		if err != nil {
			return nil, nil, nil, err
		}
		os.RemoveAll(out)
		ours, rss = append(ours, s), append(rss, mb)
	}
	return ours, bare, rss, nil
}

// cdnRows measures the origin, b.rounds times: a real export file of cdnKeys keys served by `vouch cdn`
// and by nginx from the same directory, the same load on each.
func (b pipelineBench) cdnRows(ctx context.Context, r *originResult, db *database.DB, env []string, dir string) error {
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
	r.fileBytes = fi.Size()
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
		proc       *role
		side       string // its name in the rows' cpu
	}
	ts := []*target{{base: "http://" + cdnAddr, proc: cdn, side: "vouch cdn"}, {base: "http://" + ngAddr, proc: ng, side: "nginx"}}
	for _, t := range ts {
		if t.etag, err = etag(t.base); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "bench: pipeline: origin load, %d connections, %.0f s a measurement\n", b.cdnConns, b.cdnSeconds)
	dur := time.Duration(b.cdnSeconds * float64(time.Second))
	for range max(1, b.rounds) {
		cpu304, cpu200 := map[string]float64{}, map[string]float64{}
		for i, t := range ts {
			g, err := runLoadGET(ctx, t.base+path, t.etag, http.StatusNotModified, 0, b.cdnConns, dur, t.proc, t.side, cpu304)
			if err != nil {
				return err
			}
			if i == 0 {
				r.cdn304 = append(r.cdn304, g)
			} else {
				r.nginx304 = append(r.nginx304, g)
			}
			if g, err = runLoadGET(ctx, t.base+path, "", http.StatusOK, fi.Size(), b.cdnConns, dur, t.proc, t.side, cpu200); err != nil {
				return err
			}
			if i == 0 {
				r.cdn200 = append(r.cdn200, g)
			} else {
				r.nginx200 = append(r.nginx200, g)
			}
		}
		r.cpu304, r.cpu200 = append(r.cpu304, cpu304), append(r.cpu200, cpu200)
	}
	return nil
}

// runLoadGET runs loadGET in a load generator of its own (bench loadgen
// -get) against server, and returns requests per second; into cpu it puts
// the µs per request the server's processes and the generator used,
// named after side.
func runLoadGET(ctx context.Context, url, etag string, want int, size int64, conns int, d time.Duration, server *role, side string, cpu map[string]float64) (float64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, self, loadgenCommand, "-get", url, "-etag", etag, "-want", fmt.Sprint(want),
		"-size", fmt.Sprint(size), "-concurrency", fmt.Sprint(conns), "-seconds", fmt.Sprint(d.Seconds()))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s0 := groupCPU(server.cmd.Process.Pid)
	err = cmd.Run()
	s1 := groupCPU(server.cmd.Process.Pid)
	if err != nil {
		return 0, fmt.Errorf("load generator: %w\n%s", err, tail(stderr.Bytes(), 2000))
	}
	var res getResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return 0, fmt.Errorf("load generator's result: %w", err)
	}
	if res.Error != "" {
		return 0, fmt.Errorf("load generator: %s", res.Error)
	}
	if res.Requests == 0 || res.Seconds <= 0 {
		return 0, fmt.Errorf("load generator: %d requests in %.2f s", res.Requests, res.Seconds)
	}
	per := func(sec float64) float64 { return sec / float64(res.Requests) * 1e6 }
	cpu[side] = per(s1 - s0)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu["load generator against "+side] = per(rusageSeconds(ru))
	}
	return float64(res.Requests) / res.Seconds, nil
}

// getResult is what `bench loadgen -get` prints.
type getResult struct {
	Requests int64
	Seconds  float64
	Error    string `json:",omitempty"`
}

// loadGET is the origin's load (run by bench loadgen -get): conns
// keep-alive connections asking for url for d (with If-None-Match: etag
// when set), each answer checked; it returns the requests answered and
// the time they took.
func loadGET(ctx context.Context, url, etag string, want int, size int64, conns int, d time.Duration) (int64, time.Duration, error) {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var n atomic.Int64
	var failed firstError
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
					failed.set(err)
					return
				}
				got, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want || got != size {
					failed.set(fmt.Errorf("GET %s: HTTP %d, %d bytes; want %d, %d bytes", url, resp.StatusCode, got, want, size))
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if failed.err != nil { // read after wg.Wait
		return 0, 0, failed.err
	}
	return n.Load(), took, nil
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

// uploadRowsOf are the stage uploads' rows of a run.
func (b pipelineBench) uploadRowsOf(r pipelineResult) []Row {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	closed := fmt.Sprintf("uploads end to end over loopback, %d at once, closed loop", b.concurrency)
	how := fmt.Sprintf("vouch ingest + vouch store into PostgreSQL as processes, the load from a process of its own; %d uploads of %d keys, counted when the store has every key", b.uploads, keysPer)
	rows := []Row{
		{Name: closed + ", sustained", Value: r.rate, Unit: "uploads/s", Target: target(3000), AtLeast: true,
			Reference:      "bare in-process verification of the same uploads (bundle verify + phone Ed25519 + key checks, every core)",
			ReferenceValue: r.bareRate, Ratio: r.bareRate / r.rate, Detail: how + "; cpu: µs per upload", CPU: r.cpu},
		{Name: closed + ": p50", Value: ms(r.p50), Unit: "ms"},
		{Name: closed + ": p99", Value: ms(r.p99), Unit: "ms"},
	}
	if r.openSent > 0 {
		open := fmt.Sprintf("uploads end to end over loopback at %.0f/s, open loop", b.openRate)
		d := fmt.Sprintf("%d uploads over %.0f s, latency from when each was due; all stored after", r.openSent, b.openSeconds)
		rows = append(rows,
			Row{Name: open + ": p50", Value: ms(r.openP50), Unit: "ms", Detail: d},
			Row{Name: open + ": p99", Value: ms(r.openP99), Unit: "ms", Target: target(50), Detail: d + "; cpu: µs per upload", CPU: r.openCPU})
	}
	return rows
}
