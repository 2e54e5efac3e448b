package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/phoneclient"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/registry"
)

// The stage "cluster" (issue 20): Vouch past one machine, on the engines
// the tests start as processes (internal/testenv): three nats-server with
// R3 streams and sync_interval: always, and a PostgreSQL primary with a
// synchronous standby. It is not in the default run (-only cluster): it
// builds nats-server, issues its own bundles and kills servers.

// clusterResult is what the stage measured.
type clusterResult struct {
	embeddedRate, clusterRate float64 // closed loop, uploads/s
	openP50, openP99          time.Duration
	openSent                  int
	embeddedP50, embeddedP99  time.Duration // the open loop on the embedded server

	leader                string         // the stream leader killed
	elected, firstUpload  time.Duration  // kill -9 to a new leader, to the first upload acknowledged
	failedDuringElection  int            // uploads sent after the kill that got no 2xx
	failures              map[string]int // their answers
	promotion, firstVouch time.Duration  // the primary gone to the standby promoted, to the first vouch confirmed
	vouchErrors           int            // vouches tried after the kill that failed
}

// clusterRate is the uploads per second sent during the leader's kill.
const clusterKillRate = 200

// clusterRows measures the stage: the closed loop on the embedded bus (bs,
// this run's) and on the cluster, the open loop and the leader's kill on
// the cluster, then the primary's kill under the back office.
func (b pipelineBench) clusterRows(ctx context.Context, r *clusterResult, man *testpki.Manifest, db *database.DB, bs *bus.Bus, env []string, token, dir string) error {
	n := b.clusterUploads
	open := int(b.openRate * b.openSeconds)
	kill := 20 * clusterKillRate
	fmt.Fprintf(os.Stderr, "bench: cluster: issuing %d bundles on SoftHSM\n", 2*(n+open)+kill)
	ups, uzis, err := issueUploads(man, 2*(n+open)+kill)
	if err != nil {
		return err
	}
	embedded, clustered, killUps := ups[:n+open], ups[n+open:2*(n+open)], ups[2*(n+open):]

	// One embedded server: the reference, with the same processes.
	var ref pipelineResult
	if err := b.clusterUploadRun(ctx, &ref, db, env, filepath.Join(dir, "embedded"), embedded, nil); err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	r.embeddedRate, r.embeddedP50, r.embeddedP99 = ref.rate, ref.openP50, ref.openP99

	cdir := filepath.Join(dir, "cluster")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "bench: cluster: starting three nats-server (built from go.mod's version)")
	nc, err := testenv.StartNATSCluster(cdir, token)
	if nc != nil {
		defer nc.Stop()
	}
	if err != nil {
		return err
	}
	bc, err := bus.Start(ctx, bus.Config{URL: nc.URL(), Token: token, Replicas: 3, Name: "bench"})
	if err != nil {
		return err
	}
	defer bc.Close()
	if err := putLicenses(ctx, bc, uzis); err != nil {
		return err
	}
	cenv := append(env[:len(env):len(env)], "NATS_URL="+nc.URL(), "VOUCH_BUS_REPLICAS=3")
	var got pipelineResult
	err = b.clusterUploadRun(ctx, &got, db, cenv, cdir, clustered, func(addr string, ingest *role) error {
		err := b.leaderKill(ctx, r, nc, bc, addr, killUps)
		if err == nil && r.failedDuringElection > 0 {
			// What the ingest said about the uploads it did not take.
			log, _ := os.ReadFile(ingest.log)
			fmt.Fprintf(os.Stderr, "bench: cluster: the ingest's log after the leader's kill:\n%s\n", tail(log, 3000))
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	r.clusterRate, r.openP50, r.openP99, r.openSent = got.rate, got.openP50, got.openP99, got.openSent
	return b.primaryKill(ctx, r, man, env, filepath.Join(dir, "standby"))
}

// clusterUploadRun starts an ingest and a store on env's bus and database,
// sends the closed loop of b.clusterUploads and the open loop of the rest
// of ups (uploadRows), then runs after with the ingest's address and
// process.
func (b pipelineBench) clusterUploadRun(ctx context.Context, r *pipelineResult, db *database.DB, env []string, dir string, ups []upload, after func(addr string, ingest *role) error) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := db.Pool().Exec(ctx, `truncate exposure_keys`); err != nil {
		return err
	}
	addr, ingestOps, storeOps := freeAddr(), freeAddr(), freeAddr()
	env = append(env[:len(env):len(env)], "VOUCH_INGEST_ADDR="+addr, "VOUCH_INGEST_ACCESS_LOG_DIR="+filepath.Join(dir, "access"))
	ingest, err := startRole(b.vouch, append(env, "VOUCH_OPS_LISTEN="+ingestOps), dir, "ingest", "ingest")
	if err != nil {
		return err
	}
	defer ingest.stop()
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
	if err := signUploads(ups[:b.clusterUploads], time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: cluster: %s\n", dir)
	run := b
	run.uploads = b.clusterUploads
	if err := run.uploadRows(ctx, r, db, dir, addr, ups, ingest, store); err != nil {
		return err
	}
	if after != nil {
		return after(addr, ingest)
	}
	return nil
}

// leaderKill sends fresh uploads at clusterKillRate, kills the leader of
// the exposure stream with -9 a second in, and measures the time from the
// kill to the first upload sent after it that was acknowledged (2xx),
// each upload sent once (the phone's retries are not counted: a new
// upload goes every 5 ms). The killed server is started again after.
func (b pipelineBench) leaderKill(ctx context.Context, r *clusterResult, nc *testenv.NATSCluster, bc *bus.Bus, addr string, ups []upload) error {
	if err := signUploads(ups, time.Now()); err != nil {
		return err
	}
	info, err := streamInfo(ctx, bc, exposure.Stream)
	if err != nil {
		return err
	}
	victim := nc.Node(info.leader)
	if victim == nil {
		return fmt.Errorf("stream %s: leader %q is none of the servers", exposure.Stream, info.leader)
	}
	r.leader = victim.Name
	hc := phoneclient.DefaultHTTPClient(256)
	var (
		mu      sync.Mutex
		killAt  time.Time
		first   time.Duration = -1
		failed                = map[string]int{}
		wg      sync.WaitGroup
		started = time.Now()
	)
	fmt.Fprintf(os.Stderr, "bench: cluster: uploads at %d/s, kill -9 of %s (leader of %s) after 1 s\n", clusterKillRate, victim.Name, exposure.Stream)
	killed := make(chan error, 1)
	for i := range ups {
		due := started.Add(time.Duration(i) * time.Second / clusterKillRate)
		time.Sleep(time.Until(due))
		if i == clusterKillRate {
			// From when the server is gone: uploads sent after it were
			// all sent to a cluster without it.
			mu.Lock()
			err := victim.Kill9()
			killAt = time.Now()
			mu.Unlock()
			if err != nil {
				return err
			}
			go func() {
				// How long the cluster took to elect another leader.
				for time.Since(killAt) < time.Minute {
					if in, err := streamInfo(ctx, bc, exposure.Stream); err == nil && in.leader != "" && in.leader != victim.Name {
						r.elected = time.Since(killAt)
						killed <- nil
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				killed <- errors.New("no new leader a minute after the kill")
			}()
		}
		mu.Lock()
		done := first >= 0 && time.Since(killAt) > first+time.Second
		mu.Unlock()
		if done {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := time.Now()
			err := postUpload(ctx, hc, addr, ups[i].body)
			answered := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if killAt.IsZero() || sent.Before(killAt) {
				return
			}
			if err != nil {
				failed[err.Error()]++
				return
			}
			if d := answered.Sub(killAt); first < 0 || d < first {
				first = d
			}
		}()
	}
	wg.Wait()
	if err := <-killed; err != nil {
		return err
	}
	if first < 0 {
		return fmt.Errorf("none of %d uploads sent after the kill was acknowledged (%v)", len(ups)-clusterKillRate, failed)
	}
	r.firstUpload, r.failures = first, failed
	for _, n := range failed {
		r.failedDuringElection += n
	}
	if err := victim.Start(); err != nil {
		return err
	}
	return victim.WaitHealthy(time.Minute)
}

type streamState struct{ leader string }

func streamInfo(ctx context.Context, b *bus.Bus, stream string) (streamState, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := b.JetStream().Stream(ctx, stream)
	if err != nil {
		return streamState{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	in, err := s.Info(ctx)
	if err != nil {
		return streamState{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	if in.Cluster == nil {
		return streamState{}, fmt.Errorf("stream %s: no cluster", stream)
	}
	return streamState{leader: in.Cluster.Leader}, nil
}

// postUpload sends one signed upload and wants a 2xx.
func postUpload(ctx context.Context, hc *http.Client, addr string, body []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+phoneapi.PathUploads, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(phoneapi.HeaderChaff, phoneapi.ChaffReal)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// primaryKill runs `vouch backoffice` on a primary with a synchronous
// standby (testenv.StartPostgresPair) and a clinician vouching one phone
// after another with a test card; kills the primary with -9, promotes the
// standby at once, and measures the time from the kill to the first vouch
// the back office confirms after it, with no role restarted.
func (b pipelineBench) primaryKill(ctx context.Context, r *clusterResult, man *testpki.Manifest, env []string, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "bench: cluster: a PostgreSQL primary with a synchronous standby")
	pair, err := testenv.StartPostgresPair()
	if pair != nil {
		defer pair.Close()
	}
	if err != nil {
		return err
	}
	srv, err := registry.NewServer(filepath.Join(dir, "slapd"), registry.ServerOptions{Fixtures: true})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	defer srv.Stop()
	addr, ops := freeAddr(), freeAddr()
	base := "http://" + addr
	bo, err := startRole(b.vouch, append(env, "DATABASE_URL="+pair.URL(),
		"VOUCH_HTTP_ADDR="+addr, "VOUCH_OPS_LISTEN="+ops, "VOUCH_BACKOFFICE_ORIGIN="+base,
		"VOUCH_REGISTRY_URL="+srv.URL, "VOUCH_REGISTRY_BIND_DN="+srv.BindDN, "VOUCH_REGISTRY_BIND_PASSWORD="+srv.BindPassword,
		"VOUCH_REGISTRY_BASE_DN=ou=people,"+srv.BaseDN,
		"VOUCH_VOUCH_DAILY_QUOTA=100000", "VOUCH_SETTINGS_DAILY_QUOTA_MAX=100000", "VOUCH_SIGNIN_PER_MINUTE=100000", "VOUCH_VOUCH_PER_MINUTE=100000",
		"VOUCH_SESSION_HEARTBEAT=1h"), dir, "backoffice", "backoffice")
	if err != nil {
		return err
	}
	defer bo.stop()
	if err := bo.waitHTTP("http://" + ops + "/healthz"); err != nil {
		return err
	}
	c, closeCard, err := newClusterClinician(man, base, "gp")
	if err != nil {
		return err
	}
	defer closeCard()
	// The back office answers once its listener is up: sign in and vouch
	// until it does, a minute at most.
	deadline := time.Now().Add(time.Minute)
	for {
		err := c.signIn(ctx)
		if err == nil {
			_, err = c.vouchOnce(ctx)
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) || !bo.running() {
			b, _ := os.ReadFile(bo.log)
			return fmt.Errorf("the back office does not vouch: %w\n%s", err, tail(b, 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}

	var (
		mu        sync.Mutex
		killAt    time.Time
		confirmed time.Time
		firstID   string
		errs      int
	)
	vctx, stop := context.WithCancel(ctx)
	defer stop()
	var vouching sync.WaitGroup
	var count atomic.Int64
	vouching.Add(1)
	go func() {
		defer vouching.Done()
		for vctx.Err() == nil {
			began := time.Now()
			id, err := c.vouchOnce(vctx)
			mu.Lock()
			after := !killAt.IsZero() && began.After(killAt)
			switch {
			case err == nil && after && confirmed.IsZero():
				confirmed, firstID = time.Now(), id
			case err != nil && after && vctx.Err() == nil:
				errs++
			}
			mu.Unlock()
			if err == nil {
				count.Add(1)
				continue
			}
			var st *clusterStatus
			if errors.As(err, &st) && (st.code == http.StatusUnauthorized || st.code == http.StatusForbidden) {
				_ = c.signIn(vctx)
			}
			// A clinician tries again at once, nearly.
			select {
			case <-vctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	for deadline := time.Now().Add(time.Minute); count.Load() < 3; {
		if time.Now().After(deadline) {
			stop()
			vouching.Wait()
			return fmt.Errorf("the back office confirmed %d vouches in a minute before the kill (last error: %v)", count.Load(), c.lastErr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "bench: cluster: kill -9 of the primary, the standby promoted at once")
	// From when every server process is gone (KillPrimary waits for them):
	// a vouch begun after it had no primary to commit to.
	mu.Lock()
	err = pair.KillPrimary()
	killAt = time.Now()
	mu.Unlock()
	if err != nil {
		return err
	}
	if err := pair.PromoteStandby(); err != nil {
		return err
	}
	r.promotion = time.Since(killAt)
	deadline = time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		done := !confirmed.IsZero()
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			stop()
			vouching.Wait()
			return fmt.Errorf("no vouch confirmed two minutes after the promotion (%d errors; last: %v)", errs, c.lastErr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	vouching.Wait()
	r.firstVouch, r.vouchErrors = confirmed.Sub(killAt), errs
	// The vouch confirmed is on the new primary, with its audit row.
	conn, err := pgx.Connect(ctx, pair.Standby.URL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var rows, audited int
	if err := conn.QueryRow(ctx, `select (select count(*) from authorizations where encode(uuid_send(id), 'hex') = $1),
		(select count(*) from audit_log where action = 'vouch' and subject = $1)`, firstID).Scan(&rows, &audited); err != nil {
		return err
	}
	if rows != 1 || audited != 1 {
		return fmt.Errorf("the first vouch confirmed after the kill (%s): %d rows, %d audit rows on the promoted standby", firstID, rows, audited)
	}
	return nil
}

// clusterClinician is a browser with a test card in the reader, driving
// the back office's API as the page and the card agent do.
type clusterClinician struct {
	base       string
	client     *http.Client
	auth, sign *p11.Signer
	lastErr    error
}

func newClusterClinician(man *testpki.Manifest, base, card string) (*clusterClinician, func(), error) {
	mod, err := p11.Open(man.Module)
	if err != nil {
		return nil, nil, err
	}
	signer := func(uri, pin string) (*p11.Signer, error) {
		u, err := p11.ParseURI(uri)
		if err != nil {
			return nil, err
		}
		s, err := mod.Signer(u, pin)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", uri, err)
		}
		s.SetPINPrompt(func() ([]byte, error) { return []byte(pin), nil })
		return s, nil
	}
	jar, _ := cookiejar.New(nil)
	c := &clusterClinician{base: base, client: &http.Client{Jar: jar, Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	for _, mc := range man.Cards {
		if mc.Name != card {
			continue
		}
		if c.auth, err = signer(mc.AuthURI, mc.PIN); err == nil {
			c.sign, err = signer(mc.SignURI, mc.PIN)
		}
		if err != nil {
			mod.Close()
			return nil, nil, err
		}
		return c, func() { c.auth.Close(); c.sign.Close(); mod.Close() }, nil
	}
	mod.Close()
	return nil, nil, fmt.Errorf("no test card %q", card)
}

// clusterStatus is an answer other than 200.
type clusterStatus struct {
	path string
	code int
}

func (e *clusterStatus) Error() string { return fmt.Sprintf("%s: HTTP %d", e.path, e.code) }

func (c *clusterClinician) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return &clusterStatus{path: path, code: resp.StatusCode}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func (c *clusterClinician) rsa(k crypto.Signer, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	return k.Sign(rand.Reader, d[:], crypto.SHA256)
}

func (c *clusterClinician) signIn(ctx context.Context) error {
	var ch struct{ Challenge []byte }
	if err := c.post(ctx, "/api/challenge", map[string]string{"purpose": "sign-in"}, &ch); err != nil {
		return err
	}
	sig, err := c.rsa(c.auth, protocol.LoginMessage(c.base, ch.Challenge))
	if err != nil {
		return err
	}
	return c.post(ctx, "/api/signin", map[string]any{"challenge": ch.Challenge, "authCert": c.auth.Certificate().Raw,
		"signCert": c.sign.Certificate().Raw, "signature": sig}, nil)
}

// vouchOnce vouches for a new phone (prepare, the card's signature, sign)
// and returns the authorization's id once the back office confirmed it.
func (c *clusterClinician) vouchOnce(ctx context.Context) (string, error) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		return "", err
	}
	var prep struct{ Statement []byte }
	if err := c.post(ctx, "/api/vouch/prepare", map[string]any{"code": phonecode.FromPublicKey(pub).String(), "consent": true, "onset": ""}, &prep); err != nil {
		c.lastErr = err
		return "", err
	}
	sig, err := c.rsa(c.sign, prep.Statement)
	if err != nil {
		return "", err
	}
	var res struct{ ID string }
	if err := c.post(ctx, "/api/vouch/sign", map[string]any{"signature": sig}, &res); err != nil {
		c.lastErr = err
		return "", err
	}
	if res.ID == "" {
		return "", errors.New("sign: confirmed without an id")
	}
	return res.ID, nil
}

// clusterRowsOf are the stage's rows.
func (b pipelineBench) clusterRowsOf(r clusterResult) []Row {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	how := fmt.Sprintf("vouch ingest + vouch store into PostgreSQL as processes; %d uploads of %d keys, %d at once, counted when the store has every key",
		b.clusterUploads, keysPer, b.concurrency)
	open := fmt.Sprintf("uploads end to end on the R3 cluster at %.0f/s, open loop", b.openRate)
	d := fmt.Sprintf("%d uploads over %.0f s, latency from when each was due; all stored after", r.openSent, b.openSeconds)
	eopen := fmt.Sprintf("uploads end to end on one embedded server at %.0f/s, open loop, same run", b.openRate)
	return []Row{
		{Name: "uploads end to end on the R3 cluster (3 nats-server, sync_interval: always), closed loop", Value: r.clusterRate, Unit: "uploads/s",
			Reference: "the same on one embedded server (file store), same run", ReferenceValue: r.embeddedRate,
			Ratio: r.embeddedRate / r.clusterRate, Target: target(1.5), Detail: how + "; ratio = time over the embedded server's"},
		{Name: open + ": p50", Value: ms(r.openP50), Unit: "ms", Detail: d},
		{Name: open + ": p99", Value: ms(r.openP99), Unit: "ms", Target: target(50), Detail: d},
		{Name: eopen + ": p50", Value: ms(r.embeddedP50), Unit: "ms", Detail: d + "; beside the cluster's: what this machine's load costs without it"},
		{Name: eopen + ": p99", Value: ms(r.embeddedP99), Unit: "ms", Detail: d + "; beside the cluster's: what this machine's load costs without it"},
		{Name: "R3 cluster: kill -9 of the stream's leader to the first upload acknowledged", Value: r.firstUpload.Seconds(), Unit: "s", Target: target(10),
			Detail: fmt.Sprintf("leader %s of %s killed, counted from when it was gone; uploads at %d/s, each sent once, the first of those sent after the kill answered 2xx; the bench's own client (itself reconnecting) saw a new leader after %.2f s; %d sent after the kill got no 2xx (%v)",
				r.leader, exposure.Stream, clusterKillRate, r.elected.Seconds(), r.failedDuringElection, r.failures)},
		{Name: "PostgreSQL primary kill -9 to the first vouch confirmed by the back office, standby promoted", Value: r.firstVouch.Seconds(), Unit: "s", Target: target(30),
			Detail: fmt.Sprintf("counted from when every server process of the primary was gone; synchronous standby promoted at once (pg_ctl promote -w returned %.2f s after the kill; it polls every 100 ms, so the standby may take writes before); the vouch checked on the new primary with its audit row; one vouch backoffice process on DATABASE_URL naming both with target_session_attrs=primary, not restarted; a clinician vouching one phone after another (prepare, SoftHSM card signature, sign), trying again 50 ms after an error; the first vouch begun after the kill and confirmed; %d vouches failed after the kill",
				r.promotion.Seconds(), r.vouchErrors)},
	}
}
