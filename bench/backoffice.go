package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
	"github.com/vouch-nl/vouch/internal/uzi"
	"github.com/vouch-nl/vouch/registry"
)

// backofficeBench measures the server side of sign-in and of vouching:
// the card's signatures are made beforehand (a card takes far longer than
// the server, and is not the server's cost), then clinicians concurrent
// clinicians send them. The reference for a vouch is the bare cryptography
// the server must do for it: verify the card's statement signature and
// have the HSM sign the attestation.
type backofficeBench struct {
	dbURL      string
	cardsDir   string
	clinicians int
	perEach    int // requests per clinician
	// during, when set, starts something beside the back office on its
	// database (the transparency log's writer) until stop.
	during func(ctx context.Context, dbURL string) (stop func(), err error)
	// cardNames are the test cards that sign in, in turn (none: the cards
	// that may vouch).
	cardNames []string
	// pages, when set, is called with the signed-in sessions (each
	// clients[i] signed in with cards[i]) instead of the vouch rows.
	pages func(ctx context.Context, base string, db *database.DB, clients []*benchClient, cards []benchCard) error
}

type backofficeResult struct {
	signinP50, signinP99 time.Duration
	vouchP50, vouchP99   time.Duration
	vouchesPerSecond     float64
	vouchSerial, bare    time.Duration // mean, one at a time
}

// backofficeStage is the stage "backoffice", called -runs times.
func backofficeStage(fs *flag.FlagSet) measure {
	clinicians := fs.Int("clinicians", 50, "concurrent clinicians (stage backoffice)")
	return func(ctx context.Context, b *bench) ([]Row, error) {
		r, err := backofficeBench{dbURL: b.dbURL, cardsDir: b.cardsDir, clinicians: *clinicians, perEach: 4}.run(ctx)
		if err != nil {
			return nil, err
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		c := fmt.Sprintf("%d clinicians at once, a request each every 0-2 s", *clinicians)
		return []Row{
			{Name: "back-office sign-in, server side, " + c + ": p50", Value: ms(r.signinP50), Unit: "ms"},
			{Name: "back-office sign-in, server side, " + c + ": p99", Value: ms(r.signinP99), Unit: "ms", Target: target(20)},
			{Name: "vouch, server side, " + c + ": p50", Value: ms(r.vouchP50), Unit: "ms"},
			{Name: "vouch, server side, " + c + ": p99", Value: ms(r.vouchP99), Unit: "ms", Target: target(20)},
			{Name: fmt.Sprintf("vouches per second, %d clinicians without a pause", *clinicians), Value: r.vouchesPerSecond, Unit: "vouches/s"},
			{Name: "vouch, server side, one at a time", Value: ms(r.vouchSerial), Unit: "ms",
				Reference: "statement verify + attestation sign on the HSM (SoftHSM), bare", ReferenceValue: ms(r.bare),
				Ratio: float64(r.vouchSerial) / float64(r.bare), Target: target(3)},
		}, nil
	}
}

// benchCard is a test card's two keys.
type benchCard struct{ auth, sign *p11.Signer }

func (b backofficeBench) run(ctx context.Context) (backofficeResult, error) {
	var r backofficeResult
	man, err := testpki.LoadManifest(b.cardsDir)
	if err != nil {
		return r, fmt.Errorf("test cards (make cards): %w", err)
	}
	os.Setenv("SOFTHSM2_CONF", man.SoftHSMConf)
	mod, err := p11.Open(man.Module)
	if err != nil {
		return r, err
	}
	defer mod.Close()
	signer := func(uri, pin string) (*p11.Signer, error) {
		u, err := p11.ParseURI(uri)
		if err != nil {
			return nil, err
		}
		s, err := mod.Signer(u, pin)
		if err != nil {
			return nil, err
		}
		s.SetPINPrompt(func() ([]byte, error) { return []byte(pin), nil })
		return s, nil
	}
	// Fifty clinicians are several people: the cards that may vouch,
	// in turn (one card's vouches wait for each other at its quota).
	names := b.cardNames
	if len(names) == 0 {
		names = []string{"gp", "doctor", "nurse", "dentist", "midwife"}
	}
	var cards []benchCard
	for _, c := range man.Cards {
		if !slices.Contains(names, c.Name) {
			continue
		}
		var bc benchCard
		if bc.auth, err = signer(c.AuthURI, c.PIN); err != nil {
			return r, err
		}
		if bc.sign, err = signer(c.SignURI, c.PIN); err != nil {
			return r, err
		}
		cards = append(cards, bc)
	}
	if len(cards) == 0 {
		return r, fmt.Errorf("no clinicians' cards in %s", b.cardsDir)
	}
	gp := cards[0]
	var atts []crypto.Signer
	for range 4 {
		a, err := signer(man.Backend.AttestationURI, man.Backend.PIN)
		if err != nil {
			return r, err
		}
		defer a.Close()
		atts = append(atts, a)
	}

	files := man.TrustFiles()
	tr, err := trust.Config{Roots: files.Roots, CAs: files.CAs(), CRLs: files.CRLs, Jurisdiction: "NL", Profile: "test",
		AttestationKeys: []string{man.Backend.AttestationPub}}.Load(time.Now())
	if err != nil {
		return r, err
	}
	verifier, err := protocol.NewVerifier(tr)
	if err != nil {
		return r, err
	}

	dir, err := os.MkdirTemp("", "vouch-bench-backoffice-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	srv, err := registry.NewServer(filepath.Join(dir, "slapd"), registry.ServerOptions{Fixtures: true})
	if err != nil {
		return r, err
	}
	if err := srv.Start(ctx); err != nil {
		return r, err
	}
	defer srv.Stop()
	dirClient, err := directory.New(directory.Config{URL: srv.URL, BindDN: srv.BindDN, BindPassword: srv.BindPassword,
		BaseDN: "ou=people," + srv.BaseDN, Filter: "(objectClass=vouchCareProvider)", Timeout: 2 * time.Second, PageSize: 100})
	if err != nil {
		return r, err
	}
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
	if b.during != nil {
		stop, err := b.during(ctx, dbURL)
		if err != nil {
			return r, err
		}
		defer stop()
	}
	bs, err := bus.Start(ctx, bus.Config{StoreDir: filepath.Join(dir, "bus"), Name: "bench", StartTimeout: 10 * time.Second})
	if err != nil {
		return r, err
	}
	defer bs.Close()
	bucket, err := bs.ExpiringBucket(ctx, "authorizations", "bench", protocol.MaxValidity)
	if err != nil {
		return r, err
	}

	log := slog.New(slog.DiscardHandler)
	var handler atomic.Value
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, rq *http.Request) { handler.Load().(http.Handler).ServeHTTP(w, rq) }))
	defer hs.Close()
	n := b.clinicians * b.perEach
	// The quota is per card: the most the settings allow (500) is more
	// than the bench's passes give one card.
	svc, err := backoffice.New(backoffice.Config{Origin: hs.URL, DailyQuota: 500, DayZone: "Europe/Amsterdam", Bucket: "authorizations",
		IdleTimeout: 15 * time.Minute, AbsoluteTimeout: 12 * time.Hour, SignInPerMinute: 1e9, VouchPerMinute: 1e9,
		MaxChallenges: n + 10, HeartbeatTimeout: 12 * time.Hour}, // no page sends heartbeats here
		backoffice.Deps{DB: db, Verifier: verifier, Licenses: license.New(license.Config{MaxMirrorAge: 24 * time.Hour}, dirClient, db, log),
			Attestation: atts, Publisher: bucket, Jurisdiction: "NL", Professions: tr.Profile.VouchProfessions(), Log: log})
	if err != nil {
		return r, err
	}
	edge := server.New(server.Config{}, log, prometheus.NewRegistry(), nil)
	svc.Register(edge.Echo())
	handler.Store(edge.Echo())

	// Sign-in: challenges fetched and signed by the card beforehand; then
	// the clinicians send their sign-ins at once.
	type signIn struct {
		c    *benchClient
		card benchCard
		body []byte
	}
	fmt.Fprintf(os.Stderr, "bench: back office: %d sign-ins and vouches signed beforehand on SoftHSM\n", n)
	signIns := make([]signIn, n)
	for i := range signIns {
		c := newBenchClient(hs.URL)
		var ch struct{ Challenge []byte }
		if err := c.post("/api/challenge", map[string]string{"purpose": "sign-in"}, &ch); err != nil {
			return r, err
		}
		card := cards[i%len(cards)]
		sig, err := cardSign(card.auth, protocol.LoginMessage(hs.URL, ch.Challenge))
		if err != nil {
			return r, err
		}
		body, _ := json.Marshal(map[string]any{"challenge": ch.Challenge, "authCert": card.auth.Certificate().Raw,
			"signCert": card.sign.Certificate().Raw, "signature": sig})
		signIns[i] = signIn{c, card, body}
	}
	lat, _, err := concurrently(b.clinicians, n, thinkTime, func(i int) error { return signIns[i].c.postRaw("/api/signin", signIns[i].body, nil) })
	if err != nil {
		return r, fmt.Errorf("sign-in: %w", err)
	}
	r.signinP50, r.signinP99 = percentile(lat, 50), percentile(lat, 99)
	if b.pages != nil {
		clients, signed := make([]*benchClient, n), make([]benchCard, n)
		for i, s := range signIns {
			clients[i], signed[i] = s.c, s.card
		}
		return r, b.pages(ctx, hs.URL, db, clients, signed)
	}

	// Vouch: every session prepares a statement and the card signs it
	// beforehand; then the signatures are sent, concurrently and (for the
	// ratio) one at a time.
	prepared := func(from, to int) ([][]byte, error) {
		bodies := make([][]byte, n)
		for i := from; i < to; i++ {
			pub, _, _ := ed25519.GenerateKey(rand.Reader)
			var p struct{ Statement []byte }
			if err := signIns[i].c.post("/api/vouch/prepare", map[string]any{"code": phonecode.FromPublicKey(pub).String(), "consent": true}, &p); err != nil {
				return nil, err
			}
			sig, err := cardSign(signIns[i].card.sign, p.Statement)
			if err != nil {
				return nil, err
			}
			bodies[i], _ = json.Marshal(map[string]any{"signature": sig})
		}
		return bodies, nil
	}
	bodies, err := prepared(0, n)
	if err != nil {
		return r, err
	}
	lat, _, err = concurrently(b.clinicians, n, thinkTime, func(i int) error { return signIns[i].c.postRaw("/api/vouch/sign", bodies[i], nil) })
	if err != nil {
		return r, fmt.Errorf("vouch: %w", err)
	}
	r.vouchP50, r.vouchP99 = percentile(lat, 50), percentile(lat, 99)
	// Saturation: the same clinicians without a pause, for the most
	// vouches a second this machine makes.
	if bodies, err = prepared(0, n); err != nil {
		return r, err
	}
	_, wall, err := concurrently(b.clinicians, n, 0, func(i int) error { return signIns[i].c.postRaw("/api/vouch/sign", bodies[i], nil) })
	if err != nil {
		return r, fmt.Errorf("vouch: %w", err)
	}
	r.vouchesPerSecond = float64(n) / wall.Seconds()

	serial := min(n, 50)
	if bodies, err = prepared(0, serial); err != nil {
		return r, err
	}
	lat, _, err = concurrently(1, serial, 0, func(i int) error { return signIns[i].c.postRaw("/api/vouch/sign", bodies[i], nil) })
	if err != nil {
		return r, fmt.Errorf("vouch, one at a time: %w", err)
	}
	r.vouchSerial = mean(lat)

	// The bare cryptography of one vouch, on the same card's statement.
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	var aid [protocol.AuthorizationIDLen]byte
	st, err := protocol.NewStatement("NL", aid, phonecode.FromPublicKey(pub), time.Now(), "", gp.sign.Certificate().Raw)
	if err != nil {
		return r, err
	}
	enc, sig, err := protocol.SignStatement(gp.sign, st)
	if err != nil {
		return r, err
	}
	id, err := uzi.FromCertificate(gp.sign.Certificate())
	if err != nil {
		return r, err
	}
	var bare []time.Duration
	for range serial {
		start := time.Now()
		if _, err := verifier.VerifyStatement(enc, sig, gp.sign.Certificate().Raw, time.Now()); err != nil {
			return r, err
		}
		if _, _, err := protocol.Attest(atts[0], enc, id, protocol.LicenseActive, st.ExpiresAt, time.Now()); err != nil {
			return r, err
		}
		bare = append(bare, time.Since(start))
	}
	r.bare = mean(bare)
	return r, nil
}

func cardSign(k crypto.Signer, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	return k.Sign(rand.Reader, d[:], crypto.SHA256)
}

// thinkTime is the mean pause of a clinician between two requests in the
// latency rows: far busier than any desk (a clinician vouches every few
// minutes), but not a queue of fifty requests sent at the same instant,
// which measures the machine's throughput instead (the vouches/s row).
const thinkTime = time.Second

// concurrently runs do(0..n-1) on workers goroutines, each pausing a
// random 0 to 2×think before each call, and returns each call's latency
// and the wall time of all.
func concurrently(workers, n int, think time.Duration, do func(i int) error) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if think > 0 {
					time.Sleep(mrand.N(2 * think))
				}
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t := time.Now()
				if err := do(i); err != nil {
					errs <- err
					return
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	select {
	case err := <-errs:
		return nil, 0, err
	default:
	}
	return lat, wall, nil
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

func mean(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	return sum / time.Duration(len(d))
}

// benchClient is one clinician's browser: its cookies.
type benchClient struct {
	base string
	c    *http.Client
}

func newBenchClient(base string) *benchClient {
	jar, _ := cookiejar.New(nil)
	return &benchClient{base: base, c: &http.Client{Jar: jar, Timeout: time.Minute,
		Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
}

func (c *benchClient) post(path string, v, out any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.postRaw(path, body, out)
}

func (c *benchClient) postRaw(path string, body []byte, out any) error {
	resp, err := c.c.Post(c.base+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
