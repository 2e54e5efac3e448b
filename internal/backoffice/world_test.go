//go:build !mutation

package backoffice_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
	"github.com/vouch-nl/vouch/registry"
)

// world is a back office on real parts: PostgreSQL, slapd with the test
// register, an embedded JetStream bus, the SoftHSM test cards and the
// back end's attestation key on its token. Requests go over HTTP.
type world struct {
	t        *testing.T
	man      *testpki.Manifest
	mod      *p11.Module
	db       *database.DB
	ldap     *testenv.LDAPServer
	sync     *registrysync.Syncer
	bucket   *bus.Bucket
	pub      *flakyPublisher
	verifier *protocol.Verifier
	clock    *clock
	cfg      backoffice.Config
	svc      *backoffice.Service
	deps     backoffice.Deps
	srv      *httptest.Server
	handler  atomic.Value // http.Handler
	origin   string
	cards    map[string]*card
}

// clock is the back office's time, moved by tests.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// flakyPublisher is the real bucket, failing while down is set: the bus
// unreachable, or the back office stopped between commit and publish.
type flakyPublisher struct {
	real *bus.Bucket
	down atomic.Bool
}

func (p *flakyPublisher) PutAll(ctx context.Context, e []bus.KeyValue) error {
	if p.down.Load() {
		return errors.New("bus down (test)")
	}
	return p.real.PutAll(ctx, e)
}

func newWorld(t *testing.T, tune func(*backoffice.Config)) *world {
	t.Helper()
	w := &world{t: t, man: testenv.Cards(t), clock: &clock{}, cards: map[string]*card{}}
	w.ldap = testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	w.db = testenv.Database(t)
	b := testenv.Bus(t)
	mod, err := p11.Open(w.man.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mod.Close() })
	w.mod = mod

	files := w.man.TrustFiles()
	tcfg := trust.Config{Roots: files.Roots, CAs: files.CAs(), CRLs: files.CRLs, Jurisdiction: "NL", Profile: "test",
		AttestationKeys: []string{w.man.Backend.AttestationPub}}
	tr, err := tcfg.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if w.verifier, err = protocol.NewVerifier(tr); err != nil {
		t.Fatal(err)
	}
	dir, err := directory.New(directory.Config{URL: w.ldap.URL, BindDN: w.ldap.BindDN, BindPassword: w.ldap.BindPassword,
		BaseDN: "ou=people," + w.ldap.BaseDN, Filter: "(objectClass=vouchCareProvider)", Timeout: time.Second, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	licBucket, err := b.Bucket(t.Context(), "licenses", registrysync.BucketDescription)
	if err != nil {
		t.Fatal(err)
	}
	if w.sync, err = registrysync.New(t.Context(), registrysync.Config{Bucket: "licenses", FullInterval: time.Hour},
		dir, w.db, licBucket, nil, log, registrysync.NewMetrics(prometheus.NewRegistry())); err != nil {
		t.Fatal(err)
	}
	if w.bucket, err = b.ExpiringBucket(t.Context(), "authorizations", "test", protocol.MaxValidity); err != nil {
		t.Fatal(err)
	}
	w.pub = &flakyPublisher{real: w.bucket}

	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.handler.Load().(http.Handler).ServeHTTP(rw, r)
	}))
	t.Cleanup(w.srv.Close)
	w.origin = w.srv.URL
	w.cfg = backoffice.Config{Origin: w.origin, DailyQuota: 50, DayZone: "Europe/Amsterdam", Bucket: "authorizations",
		IdleTimeout: 15 * time.Minute, AbsoluteTimeout: 12 * time.Hour, SignInPerMinute: 1000, VouchPerMinute: 1000, MaxChallenges: 10000, HeartbeatTimeout: 2 * time.Minute}
	if tune != nil {
		tune(&w.cfg)
	}
	att := w.signer(w.man.Backend.AttestationURI, w.man.Backend.PIN)
	deps := backoffice.Deps{DB: w.db, Verifier: w.verifier, Licenses: license.New(license.Config{MaxMirrorAge: 24 * time.Hour}, dir, w.db, log),
		Attestation: []crypto.Signer{att, w.signer(w.man.Backend.AttestationURI, w.man.Backend.PIN)}, Publisher: w.pub, Jurisdiction: "NL", Professions: tr.Profile.VouchProfessions(), Log: log, Now: w.clock.Now}
	w.deps = deps
	w.svc = w.start(deps)
	w.run(w.svc)
	return w
}

// start makes a back office on deps and routes the test server to it: a
// second start is a restarted (or another) copy on the same database.
func (w *world) start(deps backoffice.Deps) *backoffice.Service {
	w.t.Helper()
	deps.Metrics = prometheus.NewRegistry()
	svc, err := backoffice.New(w.cfg, deps)
	if err != nil {
		w.t.Fatal(err)
	}
	srv := server.New(server.Config{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	svc.Register(srv.Echo())
	w.handler.Store(srv.Echo())
	return svc
}

// run runs svc's sweeps (publish, mark published, expire) until the test
// ends, as every copy of the back office does.
func (w *world) run(svc *backoffice.Service) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx, 200*time.Millisecond); close(done) }()
	w.t.Cleanup(func() { cancel(); <-done })
}

// eventually waits until the count of sql is want.
func (w *world) eventually(want int, sql string, args ...any) {
	w.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := w.count(sql, args...)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: %d, want %d", sql, n, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *world) signer(uri, pin string) *p11.Signer {
	w.t.Helper()
	u, err := p11.ParseURI(uri)
	if err != nil {
		w.t.Fatal(err)
	}
	s, err := w.mod.Signer(u, pin)
	if err != nil {
		w.t.Fatalf("%s: %v", uri, err)
	}
	s.SetPINPrompt(func() ([]byte, error) { return []byte(pin), nil })
	w.t.Cleanup(s.Close)
	return s
}

// card is a test card's two keys, as the card agent would use them.
type card struct {
	name       string
	auth, sign *p11.Signer
}

func (w *world) card(name string) *card {
	w.t.Helper()
	if c, ok := w.cards[name]; ok {
		return c
	}
	for _, mc := range w.man.Cards {
		if mc.Name == name {
			c := &card{name: name, auth: w.signer(mc.AuthURI, mc.PIN), sign: w.signer(mc.SignURI, mc.PIN)}
			w.cards[name] = c
			return c
		}
	}
	w.t.Fatalf("no test card %q", name)
	return nil
}

func (c *card) authDER() []byte { return c.auth.Certificate().Raw }
func (c *card) signDER() []byte { return c.sign.Certificate().Raw }

func rsaSign(t *testing.T, k crypto.Signer, msg []byte) []byte {
	t.Helper()
	d := sha256.Sum256(msg)
	sig, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// browser is one browser's cookies and language.
type browser struct {
	w       *world
	client  *http.Client
	lang    string
	headers map[string]string
}

func (w *world) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{w: w, lang: "en", headers: map[string]string{}, client: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// reply is a JSON answer.
type reply map[string]any

func (r reply) str(k string) string { s, _ := r[k].(string); return s }

func (r reply) bytes(t *testing.T, k string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(r.str(k))
	if err != nil {
		t.Fatalf("%s: %v", k, err)
	}
	return b
}

func (b *browser) do(method, path, contentType string, body []byte) (*http.Response, []byte) {
	b.w.t.Helper()
	req, err := http.NewRequest(method, b.w.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		b.w.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept-Language", b.lang)
	req.Header.Set("User-Agent", "backoffice-test")
	for k, v := range b.headers {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.w.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

// post sends v as JSON and decodes the JSON answer.
func (b *browser) post(path string, v any) (int, reply) {
	b.w.t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		b.w.t.Fatal(err)
	}
	resp, out := b.do(http.MethodPost, path, "application/json", body)
	var r reply
	if err := json.Unmarshal(out, &r); err != nil {
		b.w.t.Fatalf("%s: %d %q is not JSON", path, resp.StatusCode, out)
	}
	return resp.StatusCode, r
}

func (b *browser) get(path string) (int, string) {
	b.w.t.Helper()
	resp, out := b.do(http.MethodGet, path, "", nil)
	if loc := resp.Header.Get("Location"); loc != "" {
		return resp.StatusCode, loc
	}
	return resp.StatusCode, string(out)
}

func (b *browser) challenge(purpose string) []byte {
	b.w.t.Helper()
	st, r := b.post("/api/challenge", map[string]string{"purpose": purpose})
	if st != http.StatusOK {
		b.w.t.Fatalf("challenge: %d %v", st, r)
	}
	if r.str("origin") != b.w.origin {
		b.w.t.Fatalf("challenge origin %q, want %q", r.str("origin"), b.w.origin)
	}
	return r.bytes(b.w.t, "challenge")
}

// newMinute moves the back office's clock to just after the start of the
// next minute: the refusals counted in the next seconds of a test are of
// one minute, whenever the test runs.
func (w *world) newMinute() {
	now := w.clock.Now()
	w.clock.advance(now.Truncate(time.Minute).Add(time.Minute + time.Second).Sub(now))
}

// pass lets d go by on a clock (advance), with the page open and its card
// in the reader: a heartbeat every minute, which keeps the session from
// being locked but, sent by the page itself, does not count as activity.
func (b *browser) pass(advance func(time.Duration), d time.Duration) {
	b.w.t.Helper()
	for d > 0 {
		step := min(d, time.Minute)
		advance(step)
		d -= step
		b.post("/api/heartbeat", map[string]any{})
	}
}

// bindChallenge puts ch's hash in the browser's challenge cookie, as if
// this browser had asked for ch.
func (b *browser) bindChallenge(ch []byte) {
	u, _ := url.Parse(b.w.srv.URL)
	h := sha256.Sum256(ch)
	b.client.Jar.SetCookies(u, []*http.Cookie{{Name: "vouch_challenge", Value: base64.RawURLEncoding.EncodeToString(h[:]), Path: "/"}})
}

// signIn signs in with c the way the page does.
func (b *browser) signIn(c *card) (int, reply) {
	b.w.t.Helper()
	ch := b.challenge("sign-in")
	return b.post("/api/signin", map[string]any{"challenge": ch, "authCert": c.authDER(), "signCert": c.signDER(),
		"signature": rsaSign(b.w.t, c.auth, protocol.LoginMessage(b.w.origin, ch))})
}

func (b *browser) mustSignIn(c *card) {
	b.w.t.Helper()
	if st, r := b.signIn(c); st != http.StatusOK {
		b.w.t.Fatalf("sign-in with %s: %d %v", c.name, st, r)
	}
}

// vouch prepares a statement for code and has c's card sign it.
func (b *browser) vouch(c *card, code, onset string) (int, reply) {
	b.w.t.Helper()
	st, r := b.post("/api/vouch/prepare", map[string]any{"code": code, "consent": true, "onset": onset})
	if st != http.StatusOK {
		return st, r
	}
	return b.post("/api/vouch/sign", map[string]any{"signature": rsaSign(b.w.t, c.sign, r.bytes(b.w.t, "statement"))})
}

// auditActions lists the audit log's actions and reasons, in order, but
// the rows of counted refusals (request-refused), which come when their
// minute is over (countedRows lists them).
func (w *world) auditActions() []string {
	w.t.Helper()
	rows, err := w.db.Pool().Query(w.t.Context(), `select action || coalesce(':' || reason, '') from audit_log
		where action <> 'request-refused' order by seq`)
	if err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		w.t.Fatal(err)
	}
	return out
}

func (w *world) count(sql string, args ...any) int {
	w.t.Helper()
	var n int
	if err := w.db.Pool().QueryRow(w.t.Context(), sql, args...).Scan(&n); err != nil {
		w.t.Fatal(err)
	}
	return n
}

func lastOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
