package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
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
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/registry"
)

// standbyUploads is how many uploads the standby test sends: 4,000, or
// VOUCH_E2E_UPLOADS.
func standbyUploads(t *testing.T) int {
	if os.Getenv("VOUCH_E2E_UPLOADS") != "" {
		return uploads(t)
	}
	return 4_000
}

// The primary PostgreSQL, with a synchronous standby, is killed with -9
// during uploads and vouches and the standby promoted; no role is
// restarted. Every upload acknowledged is stored and exported once, every
// vouch the clinician saw confirmed is there with its audit row, the audit
// chain verifies, the exports go on from the new primary, and the readers
// and the back office work again within 30 s of the promotion.
func TestPrimaryKilledStandbyPromoted(t *testing.T) {
	pair := testenv.NewPostgresPair(t)
	w := newWorld(t, pair.URL())
	phones, gp := vouched(t, w.man, standbyUploads(t))
	w.vouch(phones, gp)
	w.startPipeline()
	// A second aggregator: the lease, not luck, keeps them apart.
	w.role("aggregate-2", []string{"VOUCH_OPS_LISTEN=" + freeAddr(t)}, "aggregate")
	bo, boProc := standbyBackoffice(t, w)
	clin := newStandbyClinician(t, w, bo, "gp")

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := clin.signIn(ctx); err != nil {
		t.Fatalf("sign-in before the failover: %v", err)
	}
	vctx, stopVouching := context.WithCancel(ctx)
	vouching := make(chan struct{})
	go func() { defer close(vouching); clin.keepVouching(vctx) }()
	defer func() { stopVouching(); <-vouching }()
	if !clin.waitConfirmed(ctx, time.Time{}, 3, time.Minute) {
		t.Fatalf("no vouch confirmed before the failover: %v", clin.lastError())
	}

	var (
		killed, promoted  time.Time
		storedAtPromotion map[[16]byte]bool
		readersAt         time.Time
		leaseAtPromotion  standbyLease
		exportAt          time.Time
	)
	acked := load(t, w, phones, 32, func(func() int64) {
		pair.Primary.Kill(t)
		killed = time.Now()
		pair.Promote(t)
		promoted = time.Now()
		t.Logf("kill -9 of the primary to the standby promoted: %s", promoted.Sub(killed).Round(time.Millisecond))
		// What the new primary holds now; the readers' first commit
		// after shows they found it.
		storedAtPromotion = standbyStoredKeys(t, pair.Standby.URL())
		leaseAtPromotion = standbyExportLease(t, pair.Standby.URL())
		readersAt = standbyWaitStored(t, pair.Standby.URL(), len(storedAtPromotion), 30*time.Second)
		exportAt = standbyWaitIndex(t, pair.Standby.URL(), leaseAtPromotion.generation, 30*time.Second)
	})

	if !clin.waitConfirmed(ctx, promoted, 5, 30*time.Second) {
		t.Fatalf("the back office confirmed no vouch within 30 s of the promotion (%d errors since; last: %v)",
			clin.errorsSince(promoted), clin.lastError())
	}
	stopVouching()
	<-vouching
	firstVouch := clin.firstConfirmedAfter(promoted)
	t.Logf("kill -9 to the first vouch confirmed after the promotion: %s (promotion to it %s); to the readers' first commit on the new primary: %s; to the first index published from it: %s",
		firstVouch.Sub(killed).Round(time.Millisecond), firstVouch.Sub(promoted).Round(time.Millisecond),
		readersAt.Sub(killed).Round(time.Millisecond), exportAt.Sub(killed).Round(time.Millisecond))

	got := w.waitPublished(acked, 3*time.Minute)
	stored := standbyStoredCounts(t, pair.Standby.URL())
	lost, dupStored, dupExported, afterPromotion := 0, 0, 0, 0
	for k := range acked {
		if stored[k] == 0 || got[k] == 0 {
			lost++
		}
		if stored[k] > 1 {
			dupStored++
		}
		if got[k] > 1 {
			dupExported++
		}
		if !storedAtPromotion[k] && got[k] > 0 {
			afterPromotion++
		}
	}
	t.Logf("uploads: %d keys acknowledged; lost %d, stored twice %d, exported twice %d; %d stored and exported only after the promotion",
		len(acked), lost, dupStored, dupExported, afterPromotion)
	if lost+dupStored+dupExported > 0 {
		t.Errorf("acknowledged keys lost %d, duplicated %d in the store, %d in the export", lost, dupStored, dupExported)
	}
	if afterPromotion == 0 {
		t.Error("no key was exported from the new primary: the aggregators did not go on")
	}
	// The publication lease: held and renewed on the new primary (by the
	// same aggregator, or taken over at a higher epoch), and the index
	// published again under it.
	leaseAfter := standbyExportLease(t, pair.Standby.URL())
	t.Logf("export lease at the promotion: %s; after: %s", leaseAtPromotion, leaseAfter)
	if !leaseAfter.expires.After(promoted) || leaseAfter.generation <= leaseAtPromotion.generation ||
		leaseAfter.epoch < leaseAtPromotion.epoch {
		t.Errorf("the export lease did not go on on the new primary: at the promotion %s, after %s", leaseAtPromotion, leaseAfter)
	}
	if d := firstVouch.Sub(promoted); d > 30*time.Second {
		t.Errorf("the back office's first vouch came %s after the promotion, over 30 s", d)
	}

	confirmed := clin.confirmedIDs()
	vLost, aLost := standbyMissingVouches(t, pair.Standby.URL(), confirmed)
	t.Logf("vouches: %d confirmed (%d after the promotion), %d errors seen by the clinician; lost %d, without their audit row %d",
		len(confirmed), clin.confirmedSince(promoted), clin.errorsSince(time.Time{}), vLost, aLost)
	if vLost+aLost > 0 {
		t.Errorf("%d confirmed vouches lost, %d without their audit row", vLost, aLost)
	}
	out := standbyAuditVerify(t, w, pair.URL())
	t.Logf("vouch audit verify on the promoted standby: %s", strings.TrimSpace(out))
	for _, p := range w.procs {
		if !p.running() {
			t.Errorf("%s stopped during the failover", p.name)
		}
	}
	if !boProc.running() {
		t.Error("the back office stopped")
	}
}

// A base backup and the WAL archived after it, restored into a fresh
// cluster, hold everything committed up to the last archived segment: the
// audit chain verifies there with the same head, and an export made there
// holds every key stored.
func TestBackupRestoredIntoFreshCluster(t *testing.T) {
	pair := testenv.NewPostgresPair(t)
	w := newWorld(t, pair.URL())
	phones, gp := vouched(t, w.man, 400)
	w.vouch(phones, gp)
	_, _, _, agg, _ := w.startPipeline()
	// Only the restored cluster exports: its export then names every key.
	agg.stop()
	bo, boProc := standbyBackoffice(t, w)
	clin := newStandbyClinician(t, w, bo, "gp")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := clin.signIn(ctx); err != nil {
		t.Fatal(err)
	}

	// Before the base backup, and after it: the restore needs the archive
	// for the second half.
	round := func(phones []phone) map[[16]byte]bool {
		t.Helper()
		for range 3 {
			if _, err := clin.vouchOnce(ctx); err != nil {
				t.Fatalf("vouch: %v", err)
			}
		}
		acked := load(t, w, phones, 16, nil)
		standbyWaitKeys(t, pair.Primary.URL(), acked, time.Minute)
		return acked
	}
	before := round(phones[:200])
	backup := pair.BaseBackup(t)
	after := round(phones[200:])
	// Nothing writes the audit log after the head is noted.
	boProc.stop()
	head := standbyAuditVerify(t, w, pair.Primary.URL())
	pair.SwitchWAL(t)
	// The primary is lost; only the backup and the archive are left.
	pair.Primary.Kill(t)
	pair.Standby.Kill(t)

	restored := testenv.RestorePostgres(t, backup, pair.Archive)
	got := standbyAuditVerify(t, w, restored.URL())
	t.Logf("vouch audit verify on the restored cluster: %s", strings.TrimSpace(got))
	if headOf(got) == "" || headOf(got) != headOf(head) {
		t.Errorf("restored audit head %q, the primary's was %q", headOf(got), headOf(head))
	}

	dir := filepath.Join(w.dir, "restored-exports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, w.bin, "aggregate", "-once")
	cmd.Env = append(append(os.Environ(), w.env...), "DATABASE_URL="+restored.URL(), "VOUCH_EXPORT_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vouch aggregate -once on the restored cluster: %v\n%s", err, tail(out, 4000))
	}
	exported := standbyExportedKeys(t, dir, w.exportKey())
	missing := 0
	for _, set := range []map[[16]byte]bool{before, after} {
		for k := range set {
			if exported[k] != 1 {
				missing++
			}
		}
	}
	t.Logf("restored: %d keys before the base backup, %d after it (from the archive), %d exported, %d not exactly once",
		len(before), len(after), len(exported), missing)
	if missing > 0 {
		t.Errorf("%d keys stored before the backup's last archived WAL are not in the restored export exactly once", missing)
	}
}

// standbyBackoffice starts `vouch backoffice` on the world's database, with
// the test register for licenses, and returns its base URL.
func standbyBackoffice(t *testing.T, w *world) (string, *proc) {
	t.Helper()
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	addr, ops := freeAddr(t), freeAddr(t)
	base := "http://" + addr
	p := w.role("backoffice", []string{
		"VOUCH_HTTP_ADDR=" + addr, "VOUCH_OPS_LISTEN=" + ops, "VOUCH_BACKOFFICE_ORIGIN=" + base,
		"VOUCH_REGISTRY_URL=" + l.URL, "VOUCH_REGISTRY_BIND_DN=" + l.BindDN, "VOUCH_REGISTRY_BIND_PASSWORD=" + l.BindPassword,
		"VOUCH_REGISTRY_BASE_DN=ou=people," + l.BaseDN,
		"VOUCH_VOUCH_DAILY_QUOTA=100000", "VOUCH_SETTINGS_DAILY_QUOTA_MAX=100000", "VOUCH_SIGNIN_PER_MINUTE=100000", "VOUCH_VOUCH_PER_MINUTE=100000",
		"VOUCH_SESSION_HEARTBEAT=1h",
	}, "backoffice")
	w.waitHTTP(p, "http://"+ops+"/healthz")
	w.waitPort(p, addr)
	return base, p
}

// standbyClinician is a browser with a test card in the reader, driving
// the back office's API as the page and the card agent do.
type standbyClinician struct {
	t          *testing.T
	base       string
	client     *http.Client
	auth, sign *p11.Signer

	mu        sync.Mutex
	confirmed map[string]time.Time // authorization id → when the clinician saw it confirmed
	errs      []time.Time
	lastErr   error
}

func newStandbyClinician(t *testing.T, w *world, base, card string) *standbyClinician {
	t.Helper()
	mod, err := p11.Open(w.man.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mod.Close() })
	signer := func(uri, pin string) *p11.Signer {
		u, err := p11.ParseURI(uri)
		if err != nil {
			t.Fatal(err)
		}
		s, err := mod.Signer(u, pin)
		if err != nil {
			t.Fatalf("%s: %v", uri, err)
		}
		s.SetPINPrompt(func() ([]byte, error) { return []byte(pin), nil })
		t.Cleanup(s.Close)
		return s
	}
	jar, _ := cookiejar.New(nil)
	c := &standbyClinician{t: t, base: base, confirmed: map[string]time.Time{},
		client: &http.Client{Jar: jar, Timeout: 15 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	for _, mc := range w.man.Cards {
		if mc.Name == card {
			c.auth, c.sign = signer(mc.AuthURI, mc.PIN), signer(mc.SignURI, mc.PIN)
			return c
		}
	}
	t.Fatalf("no test card %q", card)
	return nil
}

// errStatus is an answer other than 200.
type errStatus struct {
	path string
	code int
	body string
}

func (e *errStatus) Error() string { return fmt.Sprintf("%s: %d %.200s", e.path, e.code, e.body) }

func (c *standbyClinician) post(ctx context.Context, path string, in, out any) error {
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
		return &errStatus{path: path, code: resp.StatusCode, body: string(b)}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func (c *standbyClinician) rsa(k crypto.Signer, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	return k.Sign(rand.Reader, d[:], crypto.SHA256)
}

func (c *standbyClinician) signIn(ctx context.Context) error {
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

// vouchOnce vouches for a new phone and returns the authorization's id
// once the back office confirmed it.
func (c *standbyClinician) vouchOnce(ctx context.Context) (string, error) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		return "", err
	}
	code := phonecode.FromPublicKey(pub)
	var prep struct{ Statement []byte }
	if err := c.post(ctx, "/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true, "onset": ""}, &prep); err != nil {
		return "", err
	}
	sig, err := c.rsa(c.sign, prep.Statement)
	if err != nil {
		return "", err
	}
	var res struct{ ID string }
	if err := c.post(ctx, "/api/vouch/sign", map[string]any{"signature": sig}, &res); err != nil {
		return "", err
	}
	if res.ID == "" {
		return "", errors.New("sign: confirmed without an id")
	}
	c.mu.Lock()
	c.confirmed[res.ID] = time.Now()
	c.mu.Unlock()
	return res.ID, nil
}

// keepVouching vouches one phone after another until ctx ends, signing
// in again when the session is refused, pausing a moment after an error
// as a clinician would before trying again.
func (c *standbyClinician) keepVouching(ctx context.Context) {
	for ctx.Err() == nil {
		_, err := c.vouchOnce(ctx)
		if err == nil || ctx.Err() != nil {
			continue
		}
		c.mu.Lock()
		c.errs = append(c.errs, time.Now())
		c.lastErr = err
		c.mu.Unlock()
		var st *errStatus
		if errors.As(err, &st) && (st.code == http.StatusUnauthorized || st.code == http.StatusForbidden) {
			_ = c.signIn(ctx)
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// waitConfirmed waits until n vouches were confirmed after since.
func (c *standbyClinician) waitConfirmed(ctx context.Context, since time.Time, n int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if c.confirmedSince(since) >= n {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (c *standbyClinician) confirmedSince(since time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, at := range c.confirmed {
		if at.After(since) {
			n++
		}
	}
	return n
}

func (c *standbyClinician) firstConfirmedAfter(since time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first time.Time
	for _, at := range c.confirmed {
		if at.After(since) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

func (c *standbyClinician) errorsSince(since time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, at := range c.errs {
		if at.After(since) {
			n++
		}
	}
	return n
}

func (c *standbyClinician) lastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

func (c *standbyClinician) confirmedIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]string, 0, len(c.confirmed))
	for id := range c.confirmed {
		ids = append(ids, id)
	}
	return ids
}

func standbyConnect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	return conn
}

// standbyStoredCounts counts each stored key by its data, on the
// standby's connection.
func standbyStoredCounts(t *testing.T, url string) map[[16]byte]int {
	t.Helper()
	conn := standbyConnect(t, url)
	defer conn.Close(context.Background())
	return storedCountsOn(context.Background(), t, conn)
}

func standbyStoredKeys(t *testing.T, url string) map[[16]byte]bool {
	t.Helper()
	out := map[[16]byte]bool{}
	for k := range standbyStoredCounts(t, url) {
		out[k] = true
	}
	return out
}

// standbyWaitStored waits until more than n keys are stored, and returns
// when that was seen.
func standbyWaitStored(t *testing.T, url string, n int, within time.Duration) time.Time {
	t.Helper()
	conn := standbyConnect(t, url)
	defer conn.Close(context.Background())
	deadline := time.Now().Add(within)
	for {
		var got int
		if err := conn.QueryRow(context.Background(), `select count(*) from exposure_keys where origin = ''`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got > n {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the readers stored nothing on the new primary within %s of the promotion (%d keys)", within, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// standbyWaitIndex waits until an index of a generation after gen is
// recorded, and returns when that was seen.
func standbyWaitIndex(t *testing.T, url string, gen int64, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		l := standbyExportLease(t, url)
		if l.generation > gen {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no index published on the new primary within %s of the promotion: %s", within, l)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// standbyWaitKeys waits until every key of want is stored.
func standbyWaitKeys(t *testing.T, url string, want map[[16]byte]bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := standbyStoredCounts(t, url)
		missing := 0
		for k := range want {
			if got[k] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged keys not stored within %s", missing, len(want), within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// standbyMissingVouches counts the confirmed authorizations not stored, and
// those without their audit row.
func standbyMissingVouches(t *testing.T, url string, ids []string) (noRow, noAudit int) {
	t.Helper()
	conn := standbyConnect(t, url)
	defer conn.Close(context.Background())
	ctx := context.Background()
	var rows, audited int
	if err := conn.QueryRow(ctx, `select count(*) from authorizations where encode(uuid_send(id), 'hex') = any($1)`, ids).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `select count(distinct subject) from audit_log where action = 'vouch' and subject = any($1)`, ids).Scan(&audited); err != nil {
		t.Fatal(err)
	}
	return len(ids) - rows, len(ids) - audited
}

// standbyAuditVerify runs `vouch audit verify` on url and returns what it
// printed; it fails the test unless the chain is intact.
func standbyAuditVerify(t *testing.T, w *world, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, "audit", "verify")
	cmd.Env = append(append(os.Environ(), w.env...), "DATABASE_URL="+url)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("intact")) {
		t.Fatalf("vouch audit verify: %v\n%s", err, out)
	}
	return string(out)
}

var headLine = regexp.MustCompile(`head:\s+([0-9a-f]{64})`)

func headOf(out string) string {
	m := headLine.FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

// standbyExportedKeys reads an export directory's index and every file it
// names, verified, and counts each key.
func standbyExportedKeys(t *testing.T, dir string, key *ecdsa.PublicKey) map[[16]byte]int {
	t.Helper()
	idx, err := os.ReadFile(filepath.Join(dir, "index.txt"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := export.ReadIndex(bytes.NewReader(idx))
	if err != nil {
		t.Fatal(err)
	}
	out := map[[16]byte]int{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			t.Fatal(err)
		}
		ex, err := export.Open(b, []*ecdsa.PublicKey{key})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, k := range ex.Keys {
			out[k.Data]++
		}
	}
	return out
}

// standbyLease is the export's publication lease and the index's
// generation, as one database holds them.
type standbyLease struct {
	holder     string
	epoch      int64
	expires    time.Time
	generation int64
}

func (l standbyLease) String() string {
	return fmt.Sprintf("holder %s epoch %d expiring %s, index generation %d", l.holder, l.epoch, l.expires.Format("15:04:05.000"), l.generation)
}

func standbyExportLease(t *testing.T, url string) standbyLease {
	t.Helper()
	conn := standbyConnect(t, url)
	defer conn.Close(context.Background())
	var l standbyLease
	// A released lease keeps its row with expires_at -infinity (its
	// epoch stays): shown as the zero time.
	err := conn.QueryRow(context.Background(), `select l.holder, l.epoch,
		case when l.expires_at = '-infinity' then 'epoch'::timestamptz else l.expires_at end,
		coalesce((select generation from export_index), 0) from leases l where l.name = $1`, export.LeaseName).
		Scan(&l.holder, &l.epoch, &l.expires, &l.generation)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("export lease: %v", err)
	}
	return l
}
