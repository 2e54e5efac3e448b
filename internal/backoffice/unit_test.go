package backoffice

// The fast layer: the back office's pure decisions — the configuration,
// the limiter, the refusal counts, the cookies and the challenge's binding
// to the browser, the origin check, the onset date and the refusals people
// see — with a Service whose database is never opened. It needs no
// PostgreSQL, slapd, NATS or cards, so a mutation run
// (`gremlins unleash --tags mutation ./internal/backoffice`, which leaves
// out the tests of the real parts) finishes within a session. The tests of
// the real parts stay the judge of the whole.

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/uzi"
)

func unitConfig() Config {
	return Config{Origin: "https://backoffice.example:8443", DailyQuota: 60, DayZone: "Europe/Amsterdam", Bucket: "authorizations",
		IdleTimeout: 15 * time.Minute, AbsoluteTimeout: 12 * time.Hour, SignInPerMinute: 20, VouchPerMinute: 30,
		MaxChallenges: 10000, HeartbeatTimeout: 2 * time.Minute}
}

type unitVerifier struct{}

var errUnit = errors.New("unit: not asked")

func (unitVerifier) VerifyLogin([]byte, string, []byte, []byte, time.Time) (*protocol.LoginResult, error) {
	return nil, errUnit
}
func (unitVerifier) VerifyCard([]byte, uzi.Purpose, time.Time) (uzi.Identity, error) {
	return uzi.Identity{}, errUnit
}
func (unitVerifier) VerifyStatement([]byte, []byte, []byte, time.Time) (*protocol.Result, error) {
	return nil, errUnit
}

type unitLicenses struct{}

func (unitLicenses) Decide(context.Context, uzi.Identity) (license.Decision, error) {
	return license.Decision{}, errUnit
}

type unitPublisher struct{}

func (unitPublisher) PutAll(context.Context, []bus.KeyValue) error { return errUnit }

// unitDeps: a database handle that is never connected (New only checks it
// is there; nothing below reaches it).
func unitDeps(t *testing.T) Deps {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Deps{DB: &database.DB{}, Verifier: unitVerifier{}, Licenses: unitLicenses{}, Attestation: []crypto.Signer{key, key},
		Publisher: unitPublisher{}, Jurisdiction: "NL", Buckets: newMemBuckets()}
}

func unitService(t *testing.T, tune func(*Config)) *Service {
	t.Helper()
	cfg := unitConfig()
	if tune != nil {
		tune(&cfg)
	}
	s, err := New(cfg, unitDeps(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unitContext is an echo context of a request to the service, with its
// recorder.
func unitContext(s *Service, r *http.Request) (echo.Context, *httptest.ResponseRecorder) {
	e := echo.New()
	if s.echo == nil {
		s.echo = e
	}
	w := httptest.NewRecorder()
	return e.NewContext(r, w), w
}

func TestUnitValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		tune func(*Config)
		want string // "" for valid
	}{
		{"https origin", func(c *Config) {}, ""},
		{"http loopback", func(c *Config) { c.Origin = "http://127.0.0.1:8080" }, ""},
		{"http localhost", func(c *Config) { c.Origin = "http://LocalHost:8080" }, ""},
		{"http IPv6 loopback", func(c *Config) { c.Origin = "http://[::1]:8080" }, ""},
		{"http loopback network", func(c *Config) { c.Origin = "http://127.0.0.2" }, ""},
		{"http any address", func(c *Config) { c.Origin = "http://0.0.0.0:8080" }, "must be https"},
		{"http name ending in localhost", func(c *Config) { c.Origin = "http://evil.localhost.example" }, "must be https"},
		{"http other host", func(c *Config) { c.Origin = "http://backoffice.example" }, "must be https"},
		{"http LAN", func(c *Config) { c.Origin = "http://192.168.1.10" }, "must be https"},
		{"slash", func(c *Config) { c.Origin = "https://backoffice.example/" }, ""},
		{"unparsable", func(c *Config) { c.Origin = "https://[::1" }, "VOUCH_BACKOFFICE_ORIGIN:"},
		{"scheme", func(c *Config) { c.Origin = "ftp://backoffice.example" }, "scheme://host"},
		{"no host", func(c *Config) { c.Origin = "https://" }, "scheme://host"},
		{"path", func(c *Config) { c.Origin = "https://backoffice.example/x" }, "scheme://host"},
		{"query", func(c *Config) { c.Origin = "https://backoffice.example?x=1" }, "scheme://host"},
		{"user", func(c *Config) { c.Origin = "https://u@backoffice.example" }, "scheme://host"},
		{"quota 1", func(c *Config) { c.DailyQuota = 1 }, ""},
		{"quota 0", func(c *Config) { c.DailyQuota = 0 }, "VOUCH_VOUCH_DAILY_QUOTA"},
		{"idle 0", func(c *Config) { c.IdleTimeout = 0 }, "VOUCH_SESSION_IDLE"},
		{"idle negative", func(c *Config) { c.IdleTimeout = -time.Minute }, "VOUCH_SESSION_IDLE"},
		{"idle 1ns", func(c *Config) { c.IdleTimeout = 1 }, ""},
		{"idle = max", func(c *Config) { c.IdleTimeout = c.AbsoluteTimeout }, ""},
		{"idle > max", func(c *Config) { c.IdleTimeout = c.AbsoluteTimeout + 1 }, "VOUCH_SESSION_IDLE"},
		{"sign-in rate 0", func(c *Config) { c.SignInPerMinute = 0 }, "VOUCH_SIGNIN_PER_MINUTE"},
		{"sign-in rate negative", func(c *Config) { c.SignInPerMinute = -1 }, "VOUCH_SIGNIN_PER_MINUTE"},
		{"vouch rate 0", func(c *Config) { c.VouchPerMinute = 0 }, "VOUCH_VOUCH_PER_MINUTE"},
		{"small rates", func(c *Config) { c.SignInPerMinute, c.VouchPerMinute = 0.01, 0.01 }, ""},
		{"heartbeat 1m", func(c *Config) { c.HeartbeatTimeout = time.Minute }, ""},
		{"heartbeat < 1m", func(c *Config) { c.HeartbeatTimeout = time.Minute - 1 }, "VOUCH_SESSION_HEARTBEAT"},
		{"challenges 1", func(c *Config) { c.MaxChallenges = 1 }, ""},
		{"challenges 0", func(c *Config) { c.MaxChallenges = 0 }, "VOUCH_SIGNIN_CHALLENGES_MAX"},
		{"zone", func(c *Config) { c.DayZone = "Nowhere/Atlantis" }, "VOUCH_VOUCH_DAY_ZONE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := unitConfig()
			tt.tune(&c)
			u, err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want == "" && (u == nil || u.Scheme+"://"+u.Host != strings.TrimSuffix(c.Origin, "/")):
				t.Fatalf("origin %v, want %s", u, c.Origin)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			case tt.want != "" && u != nil:
				t.Fatalf("an origin with the error: %v", u)
			}
		})
	}
}

func TestUnitLoopback(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST": true, "127.0.0.1": true, "127.9.9.9": true, "::1": true,
		"localhost.example": false, "0.0.0.0": false, "10.0.0.1": false, "": false, "example": false,
	} {
		if got := loopback(host); got != want {
			t.Errorf("loopback(%q) = %v, want %v", host, got, want)
		}
	}
}

// TestUnitNew: New needs every part, and sets the cookies' security, the
// rates and the HSM sessions from the configuration.
func TestUnitNew(t *testing.T) {
	t.Parallel()
	deps := unitDeps(t)
	for name, drop := range map[string]func(*Deps){
		"db":          func(d *Deps) { d.DB = nil },
		"verifier":    func(d *Deps) { d.Verifier = nil },
		"licenses":    func(d *Deps) { d.Licenses = nil },
		"attestation": func(d *Deps) { d.Attestation = nil },
		"publisher":   func(d *Deps) { d.Publisher = nil },
	} {
		d := deps
		drop(&d)
		if s, err := New(unitConfig(), d); err == nil || s != nil {
			t.Errorf("without the %s: %v, %v", name, s, err)
		}
	}
	bad := unitConfig()
	bad.MaxChallenges = 0
	if s, err := New(bad, deps); err == nil || s != nil {
		t.Errorf("an invalid configuration: %v, %v", s, err)
	}

	s, err := New(unitConfig(), deps)
	if err != nil {
		t.Fatal(err)
	}
	if !s.secure || s.Origin() != "https://backoffice.example:8443" {
		t.Errorf("secure %v, origin %s", s.secure, s.Origin())
	}
	if s.sessionCookieName() != "__Host-vouch_session" || s.challengeCookieName() != "__Host-vouch_challenge" {
		t.Errorf("cookies %s, %s", s.sessionCookieName(), s.challengeCookieName())
	}
	if s.zone == nil || s.zone.String() != "Europe/Amsterdam" {
		t.Errorf("zone %v", s.zone)
	}
	if s.signins.rate.PerMinute != 20 || s.vouches.rate.PerMinute != 30 || s.signins.name == s.vouches.name {
		t.Errorf("rates %v %s, %v %s", s.signins.rate, s.signins.name, s.vouches.rate, s.vouches.name)
	}
	if s.signins.shared != deps.Buckets || s.vouches.shared != deps.Buckets || s.buckets != deps.Buckets {
		t.Error("the limits do not take from Deps.Buckets")
	}
	if s.signins.shield != nil {
		t.Error("a shield in front of buckets in memory")
	}
	d0 := deps
	d0.Buckets = nil
	if s0, err := New(unitConfig(), d0); err != nil || s0.buckets != (pgBuckets{db: d0.DB}) || s0.signins.shield == nil || s0.vouches.shield == nil {
		t.Errorf("without Deps.Buckets: %v; want PostgreSQL's, each limit shielded", err)
	}
	if len(s.signers) != 2 || cap(s.signers) != 2 {
		t.Errorf("%d of %d HSM sessions free, want 2", len(s.signers), cap(s.signers))
	}
	if s.now == nil || time.Since(s.now()) > time.Minute || s.deps.Log == nil || s.deps.Metrics == nil || s.metrics == nil || len(s.pages) == 0 {
		t.Error("a default is missing")
	}
	fixed := time.Unix(1_700_000_000, 0)
	d := deps
	d.Now = func() time.Time { return fixed }
	plain := unitConfig()
	plain.Origin = "http://127.0.0.1:8080"
	s, err = New(plain, d)
	if err != nil {
		t.Fatal(err)
	}
	if !s.now().Equal(fixed) {
		t.Error("Deps.Now not used")
	}
	if s.secure || s.sessionCookieName() != "vouch_session" || s.challengeCookieName() != "vouch_challenge" {
		t.Errorf("http: secure %v, cookies %s, %s", s.secure, s.sessionCookieName(), s.challengeCookieName())
	}
}

func TestUnitLimiterBurst(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_700_000_000, 0)
	ctx := context.Background()
	for _, tt := range []struct {
		perMinute float64
		burst     int
		refill    time.Duration
	}{
		{2, 5, 30 * time.Second},
		{10, 5, 6 * time.Second},
		{12, 6, 5 * time.Second},
		{20, 10, 3 * time.Second},
		{100, 50, 600 * time.Millisecond},
	} {
		shared := newMemBuckets()
		l := newLimiter("signin", tt.perMinute, shared)
		if l.rate.Burst != tt.burst {
			t.Errorf("%v/min: burst %d, want %d", tt.perMinute, l.rate.Burst, tt.burst)
		}
		got := 0
		for l.check(ctx, "ip", t0) == nil && got <= 1000 {
			got++
		}
		if got != tt.burst {
			t.Errorf("%v/min: %d allowed at once, want %d", tt.perMinute, got, tt.burst)
		}
		if err := l.check(ctx, "ip", t0.Add(tt.refill*9/10)); err != errRateLimited {
			t.Errorf("%v/min: a token back before %v (%v)", tt.perMinute, tt.refill, err)
		}
		if err := l.check(ctx, "ip", t0.Add(tt.refill*11/10)); err != nil {
			t.Errorf("%v/min: no token back after %v (%v)", tt.perMinute, tt.refill, err)
		}
		if err := l.check(ctx, "other", t0); err != nil {
			t.Errorf("%v/min: another key limited by the first", tt.perMinute)
		}
		// Another limit on the same buckets is counted apart.
		if err := newLimiter("vouch", tt.perMinute, shared).check(ctx, "ip", t0); err != nil {
			t.Errorf("%v/min: another limit's key limited by the first: %v", tt.perMinute, err)
		}
	}
}

// sharedBuckets are buckets every copy takes from, as PostgreSQL keeps
// them: memory behind something that is not a *memBuckets, so that each
// copy's limiter puts its shield in front; fail makes Take fail.
type sharedBuckets struct {
	mem   *memBuckets
	takes int
	fail  error
}

func (b *sharedBuckets) Take(ctx context.Context, key string, r Rate, now time.Time) (bool, error) {
	b.takes++
	if b.fail != nil {
		return false, b.fail
	}
	return b.mem.Take(ctx, key, r, now)
}

func (b *sharedBuckets) Sweep(ctx context.Context, now time.Time) error { return b.mem.Sweep(ctx, now) }

// TestUnitLimiterAcrossCopies: two copies' limiters on shared buckets
// allow the limit once between them, not once each; each copy's shield
// keeps a flood from reaching the shared store; an error of the store
// refuses (never allows) and is not taken for a rate limit.
func TestUnitLimiterAcrossCopies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	shared := &sharedBuckets{mem: newMemBuckets()}
	a, b := newLimiter("signin", 10, shared), newLimiter("signin", 10, shared) // burst 5
	if a.shield == nil || b.shield == nil {
		t.Fatal("no shield in front of shared buckets")
	}
	allowed := 0
	for i := range 400 {
		l := a
		if i%2 == 1 {
			l = b
		}
		if l.check(ctx, "192.0.2.1", t0) == nil {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("%d allowed by two copies, want the burst of 5", allowed)
	}
	// Each copy asks the shared buckets until its own shield is empty:
	// 5 each, then nothing more.
	if shared.takes != 10 {
		t.Errorf("the shared buckets asked %d times for 400 requests, want 10", shared.takes)
	}
	shared.fail = errors.New("database down")
	err := a.check(ctx, "192.0.2.9", t0)
	if err == nil || errors.Is(err, errRateLimited) || !errors.Is(err, shared.fail) {
		t.Errorf("shared buckets failing: %v; want their error", err)
	}
}

func TestUnitLimiterSweep(t *testing.T) {
	t.Parallel()
	m := newMemBuckets()
	l := newLimiter("signin", 60, m) // burst 30: refilled after 30 s, forgotten after 90 s idle
	t0 := time.Unix(1_700_000_000, 0)
	keys := func() []string {
		var ks []string
		for k := range m.buckets {
			ks = append(ks, strings.TrimPrefix(k, "signin/"))
		}
		slices.Sort(ks)
		return ks
	}
	for _, st := range []struct {
		at   time.Duration
		key  string
		want []string
	}{
		{0, "a", []string{"a"}},
		{60 * time.Second, "b", []string{"a", "b"}},      // exactly a minute since the sweep: none
		{61 * time.Second, "c", []string{"a", "b", "c"}}, // sweeps: a idle 61 s, kept
		{121 * time.Second, "d", []string{"a", "b", "c", "d"}},
		{151 * time.Second, "e", []string{"c", "d", "e"}}, // sweeps: a (151 s), b (91 s) go; c (90 s) stays
		{212 * time.Second, "f", []string{"e", "f"}},
	} {
		l.check(context.Background(), st.key, t0.Add(st.at))
		if got := keys(); !slices.Equal(got, st.want) {
			t.Fatalf("at %v: %v, want %v", st.at, got, st.want)
		}
	}
	// Sweep forgets at once what is idle past its keep, whenever the last
	// sweep was.
	if err := m.Sweep(context.Background(), t0.Add(212*time.Second+90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := keys(); !slices.Equal(got, []string{"f"}) {
		t.Fatalf("after Sweep: %v, want [f]", got)
	}
}

// TestUnitRefusalMinutes: refusals are counted per actor, address, action
// and reason; each minute is a set of rows in the order they came, taken
// once the minute ended, exactly at its end.
func TestUnitRefusalMinutes(t *testing.T) {
	t.Parallel()
	var r refusals
	t0 := time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)
	e := func(actor, ip, action, reason, ua string) audit.Entry {
		return audit.Entry{Actor: actor, IP: ip, Action: action, Reason: reason, UserAgent: ua}
	}
	if got := r.take(t0, true); len(got) != 0 {
		t.Fatalf("nothing counted, %d taken", len(got))
	}
	r.add(e("", "192.0.2.1", "refused", "locked", "first"), t0.Add(time.Second))
	r.add(e("", "192.0.2.1", "refused", "locked", "second"), t0.Add(2*time.Second))
	r.add(e("", "192.0.2.2", "refused", "locked", ""), t0.Add(3*time.Second))
	r.add(e("", "192.0.2.1", "refused", "signed-out", ""), t0.Add(4*time.Second))
	r.add(e("900000001", "192.0.2.1", "refused", "locked", ""), t0.Add(5*time.Second))
	r.add(e("", "192.0.2.1", "other", "locked", ""), t0.Add(6*time.Second))
	r.add(e("", "192.0.2.1", "refused", "locked", "third"), t0.Add(59*time.Second+999*time.Millisecond))
	if got := r.take(t0.Add(time.Minute-1), false); len(got) != 0 {
		t.Fatalf("taken before the minute ended: %d", len(got))
	}
	got := r.take(t0.Add(time.Minute), false)
	if len(got) != 1 {
		t.Fatalf("%d minutes taken at the minute's end, want 1", len(got))
	}
	m := got[0]
	want := []refusalKey{
		{"", "192.0.2.1", "refused", "locked"}, {"", "192.0.2.2", "refused", "locked"},
		{"", "192.0.2.1", "refused", "signed-out"}, {"900000001", "192.0.2.1", "refused", "locked"},
		{"", "192.0.2.1", "other", "locked"},
	}
	if !slices.Equal(m.order, want) || len(m.counts) != len(want) {
		t.Fatalf("rows %v, want %v", m.order, want)
	}
	c := m.counts[want[0]]
	if c.n != 3 || c.first.UserAgent != "first" || !c.firstAt.Equal(t0.Add(time.Second)) || !c.last.Equal(t0.Add(59*time.Second+999*time.Millisecond)) {
		t.Errorf("first row: %+v", c)
	}
	for _, k := range want[1:] {
		if m.counts[k].n != 1 {
			t.Errorf("%v counted %d", k, m.counts[k].n)
		}
	}
	if again := r.take(t0.Add(2*time.Minute), true); len(again) != 0 {
		t.Errorf("taken twice: %d", len(again))
	}
	// Minutes that pass without a take are kept apart, in order.
	r.add(e("", "a", "x", "y", ""), t0.Add(2*time.Minute))
	r.add(e("", "a", "x", "y", ""), t0.Add(3*time.Minute))
	r.add(e("", "a", "x", "y", ""), t0.Add(3*time.Minute+time.Second))
	got = r.take(t0.Add(3*time.Minute+2*time.Second), false)
	if len(got) != 1 || got[0].counts[refusalKey{"", "a", "x", "y"}].n != 1 {
		t.Fatalf("closed minutes: %+v", got)
	}
	got = r.take(t0.Add(3*time.Minute+2*time.Second), true)
	if len(got) != 1 || got[0].counts[refusalKey{"", "a", "x", "y"}].n != 2 {
		t.Fatalf("everything: %+v", got)
	}
}

// TestUnitRefusalCap: past MaxRefusalSources keys in a minute, new ones
// are counted under "*" without an actor; known keys keep their own row;
// a new minute has room again.
func TestUnitRefusalCap(t *testing.T) {
	t.Parallel()
	var r refusals
	t0 := time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)
	for i := range MaxRefusalSources - 1 {
		r.add(audit.Entry{IP: string(rune('a'+i%26)) + strings.Repeat("x", i/26), Action: "refused", Reason: "r"}, t0)
	}
	r.add(audit.Entry{Actor: "last", IP: "last", Action: "refused", Reason: "r"}, t0) // the 1000th: its own row
	r.add(audit.Entry{Actor: "over", IP: "over", Action: "refused", Reason: "r"}, t0)
	r.add(audit.Entry{Actor: "last", IP: "last", Action: "refused", Reason: "r"}, t0)
	m := r.take(t0, true)[0]
	if len(m.order) != MaxRefusalSources+1 {
		t.Fatalf("%d rows, want %d", len(m.order), MaxRefusalSources+1)
	}
	if c := m.counts[refusalKey{"last", "last", "refused", "r"}]; c == nil || c.n != 2 {
		t.Errorf("the last source apart: %+v", c)
	}
	over := m.counts[refusalKey{"", "*", "refused", "r"}]
	if over == nil || over.n != 1 || over.first.Actor != "" || over.first.IP != "*" {
		t.Errorf("overflow: %+v", over)
	}
	r.add(audit.Entry{Actor: "over", IP: "over", Action: "refused", Reason: "r"}, t0.Add(time.Minute))
	m = r.take(t0.Add(time.Minute), true)[0]
	if c := m.counts[refusalKey{"over", "over", "refused", "r"}]; c == nil || c.n != 1 {
		t.Errorf("a new minute: %+v", m.order)
	}
}

// TestUnitTallied: the refusals counted rather than written one by one.
func TestUnitTallied(t *testing.T) {
	t.Parallel()
	for _, e := range []*server.Error{errLocked, errRateLimited, errNoPending, errSignedOut} {
		if !tallied[e.Code] {
			t.Errorf("%s not tallied", e.Code)
		}
	}
	for _, e := range []*server.Error{errForbidden, errBadRequest, errChallenge, errOtherBrowser, errStaff, errQuota, errBusy} {
		if tallied[e.Code] {
			t.Errorf("%s tallied", e.Code)
		}
	}
}

// TestUnitChallengeBinding: a sign-in is bound to the browser whose cookie
// holds the SHA-256 of its challenge, under the origin's cookie name.
func TestUnitChallengeBinding(t *testing.T) {
	t.Parallel()
	ch := []byte("a challenge of thirty-two bytes!")
	other := []byte("another challenge of 32 bytes...")
	for _, secure := range []bool{true, false} {
		s := unitService(t, func(c *Config) {
			if !secure {
				c.Origin = "http://127.0.0.1:8080"
			}
		})
		name := s.challengeCookieName()
		wrongName := "__Host-vouch_challenge"
		if secure {
			wrongName = "vouch_challenge"
		}
		for _, tt := range []struct {
			name, cookie, value string
			want                bool
		}{
			{"its hash", name, b64url.EncodeToString(hashOf(ch)), true},
			{"another challenge's hash", name, b64url.EncodeToString(hashOf(other)), false},
			{"the challenge itself", name, b64url.EncodeToString(ch), false},
			{"a shorter hash", name, b64url.EncodeToString(hashOf(ch)[:31]), false},
			{"not base64url", name, "!!" + b64url.EncodeToString(hashOf(ch)), false},
			{"the other cookie name", wrongName, b64url.EncodeToString(hashOf(ch)), false},
			{"no cookie", "", "", false},
		} {
			r := httptest.NewRequest(http.MethodPost, "/api/signin", nil)
			if tt.cookie != "" {
				r.AddCookie(&http.Cookie{Name: tt.cookie, Value: tt.value})
			}
			c, _ := unitContext(s, r)
			if got := s.challengeFromThisBrowser(c, ch); got != tt.want {
				t.Errorf("secure %v, %s: %v, want %v", secure, tt.name, got, tt.want)
			}
		}
	}
	if !equalHash(hashOf(ch), hashOf(ch)) || equalHash(hashOf(ch), hashOf(other)) || equalHash(nil, []byte{0}) || !equalHash(nil, nil) {
		t.Error("equalHash")
	}
	if h := hashOf(nil); len(h) != 32 || b64url.EncodeToString(h) != "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU" {
		t.Errorf("hashOf(nil) = %x", h)
	}
}

// TestUnitCookies: session and challenge cookies are HttpOnly, SameSite
// Strict, Path /, Secure with https; the session lives as long as the
// absolute timeout; clearing expires it.
func TestUnitCookies(t *testing.T) {
	t.Parallel()
	for _, secure := range []bool{true, false} {
		s := unitService(t, func(c *Config) {
			c.AbsoluteTimeout = 3 * time.Hour
			if !secure {
				c.Origin = "http://localhost:8080"
			}
		})
		c, w := unitContext(s, httptest.NewRequest(http.MethodGet, "/", nil))
		s.setSessionCookie(c, "token")
		s.setChallengeCookie(c, "hash", 300)
		s.clearSessionCookie(c)
		s.setChallengeCookie(c, "", -1)
		got := (&http.Response{Header: w.Header()}).Cookies()
		if len(got) != 4 {
			t.Fatalf("%d cookies", len(got))
		}
		want := []struct {
			name, value string
			maxAge      int
		}{
			{s.sessionCookieName(), "token", 3 * 3600}, {s.challengeCookieName(), "hash", 300},
			{s.sessionCookieName(), "", -1}, {s.challengeCookieName(), "", -1},
		}
		for i, ck := range got {
			if ck.Name != want[i].name || ck.Value != want[i].value || ck.MaxAge != want[i].maxAge {
				t.Errorf("secure %v, cookie %d: %s=%q max-age %d, want %+v", secure, i, ck.Name, ck.Value, ck.MaxAge, want[i])
			}
			if ck.Path != "/" || !ck.HttpOnly || ck.Secure != secure || ck.SameSite != http.SameSiteStrictMode || ck.Domain != "" {
				t.Errorf("secure %v, cookie %d: %+v", secure, i, ck)
			}
		}
	}
}

func TestUnitNewToken(t *testing.T) {
	t.Parallel()
	b, s, err := newToken()
	if err != nil || len(b) != 32 || len(s) != 43 || s != b64url.EncodeToString(b) {
		t.Fatalf("%x %q %v", b, s, err)
	}
	b2, _, _ := newToken()
	if string(b) == string(b2) {
		t.Error("the same token twice")
	}
}

// TestUnitOrigin: a state-changing request of another site is refused with
// 403 and counted, before any handler; the configured origin is trusted
// even when the Host differs (a proxy); a tallied refusal of a handler is
// counted with the request's address and route.
func TestUnitOrigin(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 13, 0, 30, 0, time.UTC)
	d := unitDeps(t)
	d.Now = func() time.Time { return now }
	s, err := New(unitConfig(), d)
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		var se *server.Error
		var he *echo.HTTPError
		switch {
		case errors.As(err, &se):
			_ = c.String(se.Status, se.Code)
		case errors.As(err, &he):
			_ = c.String(he.Code, "echo")
		default:
			_ = c.String(http.StatusInternalServerError, err.Error())
		}
	}
	s.Register(e)
	do := func(method, path, origin, site, ctype string) (int, string) {
		r := httptest.NewRequest(method, path, strings.NewReader("{}"))
		r.Host = "internal:8080"
		r.RemoteAddr = "192.0.2.7:5555"
		r.Header.Set("User-Agent", "unit")
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		w := httptest.NewRecorder()
		e.ServeHTTP(w, r)
		return w.Code, strings.TrimSpace(w.Body.String())
	}
	if code, body := do(http.MethodPost, "/api/lock", "https://evil.example", "cross-site", "application/json"); code != http.StatusForbidden || body != "cross-origin" {
		t.Errorf("another site: %d %s", code, body)
	}
	if code, body := do(http.MethodPost, "/api/lock", "https://evil.example", "", "application/json"); code != http.StatusForbidden || body != "cross-origin" {
		t.Errorf("another origin: %d %s", code, body)
	}
	// Trusted: reaches the handler, which refuses for want of a session.
	if code, body := do(http.MethodPost, "/api/lock", "https://backoffice.example:8443", "same-origin", "application/json"); code != http.StatusUnauthorized || body != "signed-out" {
		t.Errorf("the configured origin: %d %s", code, body)
	}
	if code, body := do(http.MethodPost, "/api/lock", "https://backoffice.example:8443", "same-origin", "text/plain"); code != http.StatusUnsupportedMediaType || body != "unsupported-media-type" {
		t.Errorf("not JSON: %d %s", code, body)
	}
	if code, body := do(http.MethodPost, "/api/lock", "https://backoffice.example:8443", "same-origin", "application/json; charset=utf-8"); code != http.StatusUnauthorized {
		t.Errorf("JSON with a charset: %d %s", code, body)
	}
	if code, _ := do(http.MethodPost, "/api/lock", "https://backoffice.example:8443", "same-origin", "application/json;;"); code != http.StatusUnsupportedMediaType {
		t.Errorf("a bad media type: %d", code)
	}
	m := s.refused.take(now, true)
	if len(m) != 1 {
		t.Fatalf("%d minutes", len(m))
	}
	co := m[0].counts[refusalKey{"", "192.0.2.7", audit.ActionRequestRefused, "cross-origin"}]
	if co == nil || co.n != 2 || co.first.Subject != "POST /api/lock" || co.first.UserAgent != "unit" || !co.firstAt.Equal(now) {
		t.Errorf("cross-origin counted: %+v (rows %v)", co, m[0].order)
	}
	so := m[0].counts[refusalKey{"", "192.0.2.7", audit.ActionRequestRefused, "signed-out"}]
	if so == nil || so.n != 2 || so.first.Subject != "POST /api/lock" || so.first.UserAgent != "unit" {
		t.Errorf("signed-out counted: %+v (rows %v)", so, m[0].order)
	}
	if len(m[0].order) != 2 {
		t.Errorf("rows %v: a refusal not tallied was counted", m[0].order)
	}
}

// TestUnitLockGate: a locked session sees the locked page (423) for any
// page and 423 for any action but those it may still use; an unlocked or
// absent session passes.
func TestUnitLockGate(t *testing.T) {
	t.Parallel()
	s := unitService(t, nil)
	now := time.Now()
	next := func(c echo.Context) error { return c.String(http.StatusTeapot, "next") }
	run := func(method, path string, sess *session) (int, error) {
		c, w := unitContext(s, httptest.NewRequest(method, path, nil))
		c.SetPath(path)
		if sess != nil {
			c.Set(sessionKey, sess)
		}
		err := s.lockGate(next)(c)
		return w.Code, err
	}
	locked := &session{UZI: "900000001", LockedAt: &now, Lang: "en"}
	open := &session{UZI: "900000001"}
	for route := range whileLocked {
		method, path, _ := strings.Cut(route, " ")
		if code, err := run(method, path, locked); code != http.StatusTeapot || err != nil {
			t.Errorf("%s while locked: %d %v", route, code, err)
		}
	}
	for _, path := range []string{"/api/vouch/prepare", "/api/heartbeat", "/api/vouch/sign"} {
		if _, err := run(http.MethodPost, path, locked); err != errLocked {
			t.Errorf("POST %s while locked: %v", path, err)
		}
		if code, err := run(http.MethodPost, path, open); code != http.StatusTeapot || err != nil {
			t.Errorf("POST %s unlocked: %d %v", path, code, err)
		}
		if code, err := run(http.MethodPost, path, nil); code != http.StatusTeapot || err != nil {
			t.Errorf("POST %s signed out: %d %v", path, code, err)
		}
	}
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		if code, err := run(m, "/vouch", locked); code != http.StatusLocked || err != nil {
			t.Errorf("%s /vouch while locked: %d %v", m, code, err)
		}
	}
	if got := s.refused.take(now, true); len(got) != 1 || got[0].counts[refusalKey{"900000001", "192.0.2.1", audit.ActionRequestRefused, "locked"}] == nil {
		t.Errorf("locked pages not counted: %+v", got)
	}
	if !locked.locked() || open.locked() {
		t.Error("locked()")
	}
}

func TestUnitNeedSession(t *testing.T) {
	t.Parallel()
	s := unitService(t, nil)
	now := time.Now()
	for _, tt := range []struct {
		sess *session
		want error
	}{
		{nil, errSignedOut}, {&session{LockedAt: &now}, errLocked}, {&session{UZI: "1"}, nil},
	} {
		c, _ := unitContext(s, httptest.NewRequest(http.MethodGet, "/", nil))
		if tt.sess != nil {
			c.Set(sessionKey, tt.sess)
		}
		got, err := needSession(c)
		if err != tt.want || (err == nil && got != tt.sess) || (err != nil && got != nil) {
			t.Errorf("%+v: %v, %v", tt.sess, got, err)
		}
	}
}

// TestUnitLanguage: the language cookie if it names a language, else
// Accept-Language.
func TestUnitLanguage(t *testing.T) {
	t.Parallel()
	s := unitService(t, nil)
	langs := i18n.Default().Languages()
	var other string
	for _, l := range langs {
		if l != i18n.Source {
			other = l
			break
		}
	}
	if other == "" {
		t.Fatalf("one language only: %v", langs)
	}
	for _, tt := range []struct {
		cookie, accept, want string
	}{
		{other, "", other},
		{i18n.Source, other, i18n.Source},
		{"xx-unknown", other, other},
		{"", other, other},
		{other, i18n.Source, other},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if tt.cookie != "" {
			r.AddCookie(&http.Cookie{Name: langCookie, Value: tt.cookie})
		}
		if tt.accept != "" {
			r.Header.Set("Accept-Language", tt.accept)
		}
		c, _ := unitContext(s, r)
		var got string
		_ = s.language(func(c echo.Context) error { got = langOf(c); return nil })(c)
		if got != tt.want {
			t.Errorf("cookie %q, accept %q: %q, want %q", tt.cookie, tt.accept, got, tt.want)
		}
	}
	c, _ := unitContext(s, httptest.NewRequest(http.MethodGet, "/", nil))
	if langOf(c) != i18n.Source {
		t.Errorf("no language: %q", langOf(c))
	}
}

// TestUnitOnset: an onset date is today at the latest and MaxOnsetDays
// back at the earliest, in the back office's zone.
func TestUnitOnset(t *testing.T) {
	t.Parallel()
	s := unitService(t, nil)
	// 23:30 UTC on 7 December is 00:30 on 8 December in Amsterdam.
	now := time.Date(2026, 12, 7, 23, 30, 0, 0, time.UTC)
	if got := s.dayStart(now); !got.Equal(time.Date(2026, 12, 8, 0, 0, 0, 0, s.zone)) {
		t.Errorf("dayStart %v", got)
	}
	if got := s.dayStart(time.Date(2026, 12, 7, 22, 59, 59, 0, time.UTC)); !got.Equal(time.Date(2026, 12, 7, 0, 0, 0, 0, s.zone)) {
		t.Errorf("dayStart before midnight %v", got)
	}
	for onset, want := range map[string]error{
		"": nil, "2026-12-08": nil, "2026-12-09": errOnsetLater, "2026-11-10": nil, "2026-11-09": errOnsetOld,
		"2026-12-07": nil, "08-12-2026": errOnsetForm, "2026-12-8": errOnsetForm,
	} {
		if got := s.checkOnset(onset, now); got != want {
			t.Errorf("onset %q: %v, want %v", onset, got, want)
		}
	}
}

func TestUnitRefusalsPeopleSee(t *testing.T) {
	t.Parallel()
	as := func(err error) *server.Error {
		var se *server.Error
		if !errors.As(err, &se) {
			t.Fatalf("%v is not a server.Error", err)
		}
		return se
	}
	for r, want := range map[protocol.Reason]int{
		protocol.ReasonMalformed: 400, protocol.ReasonTruncated: 400, protocol.ReasonTooLarge: 400,
		protocol.ReasonSignature: 403, protocol.ReasonCertRevoked: 403, protocol.ReasonSignerMismatch: 403,
	} {
		cause := &protocol.Refusal{Reason: r}
		se := as(reasonRefusal(cause))
		if se.Status != want || se.Code != string(r) || se.Message != r.MessageID() || !errors.Is(se, cause) {
			t.Errorf("%s: %+v", r, se)
		}
	}
	for r, want := range map[license.Reason]int{
		license.ReasonUnavailable: 503, license.ReasonSuspended: 403, license.ReasonExpired: 403,
	} {
		se := as(licenseRefusal(license.Decision{Reason: r}, errUnit))
		if se.Status != want || se.Code != string(r) || se.Message != r.MessageID() || !errors.Is(se, errUnit) {
			t.Errorf("%s: %+v", r, se)
		}
	}
	s := unitService(t, func(c *Config) { c.DailyQuota = 7 })
	q := as(s.quotaRefusal())
	if q.Status != 429 || q.Code != "quota-reached" || q.Data["Quota"] != 7 || errQuota.Data != nil {
		t.Errorf("quota: %+v (shared %+v)", q, errQuota)
	}
	for typed, want := range map[string]string{"": "code-length", "abc": "code-length"} {
		if se := as(codeRefusal(typed, errors.New("length"))); se.Code != want || se.Status != 400 {
			t.Errorf("%q: %+v", typed, se)
		}
	}
	if se := as(codeRefusal("x", phonecode.ErrCharacter)); se.Code != "code-character" || se.Message != "vouch.code-character" {
		t.Errorf("character: %+v", se)
	}
	if se := as(codeRefusal("", phonecode.ErrCheck)); se.Code != "code-check" || se.Message != "vouch.code-check" || se.Data != nil {
		t.Errorf("check, no group: %+v", se)
	}
}

// TestUnitNextStep: a refusal for the registration says whom to contact
// (the configured contact, else a general text); others are unchanged.
func TestUnitNextStep(t *testing.T) {
	t.Parallel()
	for _, contact := range []string{"Call 020 123 45 67.", ""} {
		s := unitService(t, func(c *Config) { c.Contact = contact })
		c, _ := unitContext(s, httptest.NewRequest(http.MethodPost, "/", nil))
		c.Set(server.LangKey, "en")
		for code := range registration {
			se := &server.Error{Status: 403, Code: code, Message: license.Reason(code).MessageID()}
			var got *server.Error
			if !errors.As(s.withNextStep(c, se), &got) || got == se {
				t.Fatalf("%s: not a new error", code)
			}
			next := contact
			if next == "" {
				next = i18n.T("en", "signin.contact-default")
			}
			if got.Message != "signin.refused-next" || got.Data["Next"] != next || got.Data["Reason"] != i18n.T("en", se.Message, nil) ||
				got.Status != 403 || got.Code != code || se.Message == "signin.refused-next" {
				t.Errorf("%s: %+v", code, got)
			}
		}
		if got := s.withNextStep(c, errChallenge); got != errChallenge {
			t.Errorf("another refusal changed: %v", got)
		}
	}
}

func TestUnitBind(t *testing.T) {
	t.Parallel()
	s := unitService(t, nil)
	for body, ok := range map[string]bool{
		`{"purpose":"sign-in"}`: true, `{"purpose":"sign-in"} `: true, `{"purpose":"sign-in"}{}`: false,
		`{"purpose":1}`: false, `{"other":"x"}`: false, ``: false, `{`: false,
	} {
		c, _ := unitContext(s, httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body)))
		var req challengeRequest
		err := bind(c, &req)
		if (err == nil) != ok {
			t.Errorf("%q: %v", body, err)
		}
		var se *server.Error
		if err != nil && (!errors.As(err, &se) || se.Status != 400 || se.Code != "bad-request" || se.Cause == nil) {
			t.Errorf("%q: %+v", body, err)
		}
		if ok && req.Purpose != "sign-in" {
			t.Errorf("%q: %+v", body, req)
		}
	}
}

func TestUnitSmallParts(t *testing.T) {
	t.Parallel()
	if got := dateLayout("DD-MM-JJJJ"); got != "02-01-2006" {
		t.Errorf("dateLayout %q", got)
	}
	if got := dateLayout("YYYY-MM-DD"); got != "2006-01-02" {
		t.Errorf("dateLayout %q", got)
	}
	if got := dateLayout("AAAA/MM/DD"); got != "2006/01/02" {
		t.Errorf("dateLayout %q", got)
	}
	var code phonecode.Code
	for i := range code {
		code[i] = byte(i + 0xa0)
	}
	if got := BucketKey(code); got != strings.ToLower(got) || len(got) != 2*len(code) || !strings.HasPrefix(got, "a0a1") {
		t.Errorf("BucketKey %q", got)
	}
	if _, err := parseCert(nil); err == nil {
		t.Error("parseCert(nil)")
	}
	if _, err := parseCert(make([]byte, protocol.MaxCertSize+1)); err == nil || !strings.Contains(err.Error(), "size") {
		t.Errorf("parseCert too large: %v", err)
	}
	if _, err := parseCert(make([]byte, protocol.MaxCertSize)); err == nil || strings.Contains(err.Error(), "size") {
		t.Errorf("parseCert at the limit is parsed: %v", err)
	}
}
