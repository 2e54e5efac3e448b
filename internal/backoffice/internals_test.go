//go:build !mutation

package backoffice

// Tests of the back office's parts below its HTTP handlers, at exact
// times: the limiter's buckets and sweep, the session and challenge store
// at its boundaries, and Run's marking, sweeping and logging.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// TestLimiterBurst: a burst is half a minute's worth, at least 5; then
// tokens come back at the configured rate and no faster.
func TestLimiterBurst(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		perMinute float64
		burst     int
		refill    time.Duration // one token back
	}{
		{perMinute: 2, burst: 5, refill: 30 * time.Second},
		{perMinute: 20, burst: 10, refill: 3 * time.Second},
		{perMinute: 100, burst: 50, refill: 600 * time.Millisecond},
	}
	for _, tt := range tests {
		l := newLimiter(tt.perMinute)
		got := 0
		for l.allow("ip", t0) {
			got++
			if got > 1000 {
				break
			}
		}
		if got != tt.burst {
			t.Errorf("%v/min: a burst of %d, want %d", tt.perMinute, got, tt.burst)
		}
		if l.allow("ip", t0.Add(tt.refill*9/10)) {
			t.Errorf("%v/min: a token back after %v, before %v", tt.perMinute, tt.refill*9/10, tt.refill)
		}
		if !l.allow("ip", t0.Add(tt.refill*11/10)) {
			t.Errorf("%v/min: no token back after %v", tt.perMinute, tt.refill*11/10)
		}
		// Another key has its own bucket.
		if !l.allow("other", t0) {
			t.Errorf("%v/min: another key is limited by the first", tt.perMinute)
		}
	}
}

// TestLimiterSweep: keys idle longer than it takes to refill (burst/rate,
// plus a minute) are forgotten, at most once a minute; others are kept
// with what they spent.
func TestLimiterSweep(t *testing.T) {
	t.Parallel()
	l := newLimiter(60) // burst 30: refilled after 30 s, forgotten after 90 s idle
	t0 := time.Unix(1_700_000_000, 0)
	keys := func() []string {
		var ks []string
		for k := range l.buckets {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	steps := []struct {
		at   time.Duration
		key  string
		want []string
	}{
		{0, "a", []string{"a"}},                           // sweeps (never swept): swept = 0 s
		{61 * time.Second, "c", []string{"a", "c"}},       // sweeps: a idle 61 s, kept; swept = 61 s
		{121 * time.Second, "d", []string{"a", "c", "d"}}, // 60 s since the sweep: no sweep, a (idle 121 s) stays
		{151 * time.Second, "e", []string{"c", "d", "e"}}, // sweeps: a idle 151 s goes, c idle exactly 90 s stays
		{212 * time.Second, "f", []string{"e", "f"}},      // sweeps: c (151 s) and d (91 s) go, e (61 s) stays
	}
	for _, st := range steps {
		l.allow(st.key, t0.Add(st.at))
		if diff := cmp.Diff(st.want, keys()); diff != "" {
			t.Fatalf("at %v (-want +got):\n%s", st.at, diff)
		}
	}
}

// TestValidate: each setting out of range is refused with its variable's
// name; the edges that are allowed pass.
func TestValidate(t *testing.T) {
	t.Parallel()
	good := Config{Origin: "https://backoffice.example:8443", DailyQuota: 60, DayZone: "Europe/Amsterdam",
		IdleTimeout: 15 * time.Minute, AbsoluteTimeout: 12 * time.Hour, SignInPerMinute: 20, VouchPerMinute: 20, MaxChallenges: 10000, HeartbeatTimeout: 2 * time.Minute}
	tests := []struct {
		name string
		tune func(*Config)
		want string // "" for valid
	}{
		{"https origin", func(c *Config) {}, ""},
		{"http origin", func(c *Config) { c.Origin = "http://127.0.0.1:8080" }, ""},
		{"http origin, localhost", func(c *Config) { c.Origin = "http://localhost:8080" }, ""},
		{"http origin, IPv6 loopback", func(c *Config) { c.Origin = "http://[::1]:8080" }, ""},
		{"http origin, loopback network", func(c *Config) { c.Origin = "http://127.0.0.2" }, ""},
		{"http origin of another host", func(c *Config) { c.Origin = "http://backoffice.example" }, "VOUCH_BACKOFFICE_ORIGIN must be https"},
		{"http origin of a LAN address", func(c *Config) { c.Origin = "http://192.168.1.10:8080" }, "VOUCH_BACKOFFICE_ORIGIN must be https"},
		{"http origin of any address", func(c *Config) { c.Origin = "http://0.0.0.0:8080" }, "VOUCH_BACKOFFICE_ORIGIN must be https"},
		{"http origin, a name ending in localhost", func(c *Config) { c.Origin = "http://evil.localhost.example" }, "VOUCH_BACKOFFICE_ORIGIN must be https"},
		{"origin with a slash", func(c *Config) { c.Origin = "https://backoffice.example/" }, ""},
		{"origin that does not parse", func(c *Config) { c.Origin = "https://[::1" }, "VOUCH_BACKOFFICE_ORIGIN:"},
		{"origin of another scheme", func(c *Config) { c.Origin = "ftp://backoffice.example" }, "VOUCH_BACKOFFICE_ORIGIN must"},
		{"origin without a host", func(c *Config) { c.Origin = "https://" }, "VOUCH_BACKOFFICE_ORIGIN must"},
		{"origin with a path", func(c *Config) { c.Origin = "https://backoffice.example/vouch" }, "VOUCH_BACKOFFICE_ORIGIN must"},
		{"origin with a query", func(c *Config) { c.Origin = "https://backoffice.example?x=1" }, "VOUCH_BACKOFFICE_ORIGIN must"},
		{"origin with a user", func(c *Config) { c.Origin = "https://u@backoffice.example" }, "VOUCH_BACKOFFICE_ORIGIN must"},
		{"quota 1", func(c *Config) { c.DailyQuota = 1 }, ""},
		{"quota 0", func(c *Config) { c.DailyQuota = 0 }, "VOUCH_VOUCH_DAILY_QUOTA"},
		{"idle 0", func(c *Config) { c.IdleTimeout = 0 }, "VOUCH_SESSION_IDLE"},
		{"idle negative", func(c *Config) { c.IdleTimeout = -time.Minute }, "VOUCH_SESSION_IDLE"},
		{"idle 1 ns", func(c *Config) { c.IdleTimeout = 1 }, ""},
		{"idle the maximum", func(c *Config) { c.IdleTimeout = c.AbsoluteTimeout }, ""},
		{"idle over the maximum", func(c *Config) { c.IdleTimeout = c.AbsoluteTimeout + 1 }, "VOUCH_SESSION_IDLE"},
		{"sign-in rate 0", func(c *Config) { c.SignInPerMinute = 0 }, "VOUCH_SIGNIN_PER_MINUTE"},
		{"sign-in rate negative", func(c *Config) { c.SignInPerMinute = -1 }, "VOUCH_SIGNIN_PER_MINUTE"},
		{"vouch rate 0", func(c *Config) { c.VouchPerMinute = 0 }, "VOUCH_VOUCH_PER_MINUTE"},
		{"small rates", func(c *Config) { c.SignInPerMinute, c.VouchPerMinute = 0.01, 0.01 }, ""},
		{"heartbeat 1m", func(c *Config) { c.HeartbeatTimeout = time.Minute }, ""},
		{"heartbeat under 1m", func(c *Config) { c.HeartbeatTimeout = time.Minute - time.Nanosecond }, "VOUCH_SESSION_HEARTBEAT"},
		{"challenges 1", func(c *Config) { c.MaxChallenges = 1 }, ""},
		{"challenges 0", func(c *Config) { c.MaxChallenges = 0 }, "VOUCH_SIGNIN_CHALLENGES_MAX"},
		{"unknown zone", func(c *Config) { c.DayZone = "Nowhere/Atlantis" }, "VOUCH_VOUCH_DAY_ZONE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.tune(&c)
			u, err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want == "" && (u == nil || u.Scheme+"://"+u.Host != strings.TrimSuffix(c.Origin, "/")):
				t.Fatalf("origin %v, want %s", u, c.Origin)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			case tt.want != "" && u != nil:
				t.Fatalf("an origin with the error: %v", u)
			}
		})
	}
}

// TestNewNeedsEveryDependency: New refuses a back office missing any part.
func TestNewNeedsEveryDependency(t *testing.T) {
	t.Parallel()
	cfg, deps := fakeConfig(), fakeDeps(t, nil)
	if _, err := New(cfg, deps); err != nil {
		t.Fatalf("complete: %v", err)
	}
	for name, drop := range map[string]func(*Deps){
		"db":          func(d *Deps) { d.DB = nil },
		"verifier":    func(d *Deps) { d.Verifier = nil },
		"licenses":    func(d *Deps) { d.Licenses = nil },
		"attestation": func(d *Deps) { d.Attestation = nil },
		"publisher":   func(d *Deps) { d.Publisher = nil },
	} {
		d := deps
		drop(&d)
		if _, err := New(cfg, d); err == nil {
			t.Errorf("without the %s: no error", name)
		}
	}
	bad := cfg
	bad.DailyQuota = 0
	if _, err := New(bad, deps); err == nil {
		t.Error("an invalid configuration: no error")
	}
}

// TestRefusals: what a verifier's or the register's refusal, or a mistyped
// code, becomes for the person.
func TestRefusals(t *testing.T) {
	t.Parallel()
	status := func(err error) (int, string, string) {
		var se *server.Error
		if !errors.As(err, &se) {
			t.Fatalf("%v is not a server.Error", err)
		}
		return se.Status, se.Code, se.Message
	}
	for r, want := range map[protocol.Reason]int{
		protocol.ReasonMalformed: http.StatusBadRequest, protocol.ReasonTruncated: http.StatusBadRequest,
		protocol.ReasonTooLarge: http.StatusBadRequest, protocol.ReasonSignature: http.StatusForbidden,
		protocol.ReasonCertRevoked: http.StatusForbidden, protocol.ReasonSignerMismatch: http.StatusForbidden,
	} {
		if st, code, _ := status(reasonRefusal(&protocol.Refusal{Reason: r})); st != want || code != string(r) {
			t.Errorf("%s: %d %s, want %d", r, st, code, want)
		}
	}
	for r, want := range map[license.Reason]int{
		license.ReasonUnavailable: http.StatusServiceUnavailable, license.ReasonSuspended: http.StatusForbidden,
	} {
		if st, code, _ := status(licenseRefusal(license.Decision{Reason: r}, nil)); st != want || code != string(r) {
			t.Errorf("%s: %d %s, want %d", r, st, code, want)
		}
	}
}

// TestTouchSession: a session is read while seen within the idle time and
// opened within the absolute time; its last-seen time is written once it
// is touchEvery old, not before.
func TestTouchSession(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ctx := t.Context()
	t0 := time.Now().Truncate(time.Second)
	sess := testSession(t0)
	if err := createSession(ctx, db.Pool(), sess); err != nil {
		t.Fatal(err)
	}
	seen := func() time.Time {
		var at time.Time
		if err := db.Pool().QueryRow(ctx, `select seen_at from backoffice_sessions where hash = $1`, sess.Hash).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	idle, abs := 15*time.Minute, time.Hour
	steps := []struct {
		at       time.Duration
		wantSeen time.Duration
		gone     bool
	}{
		{touchEvery - time.Microsecond, 0, false},
		{touchEvery, touchEvery, false},
		{touchEvery + idle - time.Microsecond, touchEvery + idle - time.Microsecond, false},
		{2*touchEvery + 2*idle, 0, true}, // idle too long
	}
	for _, st := range steps {
		s, err := touchSession(ctx, db.Pool(), sess.Hash, t0.Add(st.at), idle, abs, true)
		if st.gone {
			if !errors.Is(err, errNotFound) {
				t.Fatalf("at %v: %v, want errNotFound", st.at, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("at %v: %v", st.at, err)
		}
		if !s.SeenAt.Equal(t0.Add(st.wantSeen)) || !seen().Equal(t0.Add(st.wantSeen)) {
			t.Errorf("at %v: seen %v (stored %v), want %v", st.at, s.SeenAt.Sub(t0), seen().Sub(t0), st.wantSeen)
		}
		if s.UZI != sess.UZI || s.Holder != sess.Holder || s.Role != sess.Role || !s.CreatedAt.Equal(t0) {
			t.Errorf("at %v: read %+v", st.at, s)
		}
	}

	// Open longer than the absolute time, however active: gone.
	sess2 := testSession(t0)
	if err := createSession(ctx, db.Pool(), sess2); err != nil {
		t.Fatal(err)
	}
	for at := time.Duration(0); at < abs; at += 10 * time.Minute {
		if _, err := touchSession(ctx, db.Pool(), sess2.Hash, t0.Add(at), idle, abs, true); err != nil {
			t.Fatalf("at %v: %v", at, err)
		}
	}
	if _, err := touchSession(ctx, db.Pool(), sess2.Hash, t0.Add(abs), idle, abs, true); !errors.Is(err, errNotFound) {
		t.Errorf("open %v: %v, want errNotFound", abs, err)
	}
}

// TestSweep deletes expired challenges and sessions, and only those.
func TestSweep(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ctx := t.Context()
	now := time.Now().Truncate(time.Second)
	idle, abs := 15*time.Minute, 12*time.Hour
	challenges := map[string]time.Time{"expired": now.Add(-time.Second), "expires now": now, "live": now.Add(time.Second)}
	hashes := map[string][]byte{}
	for name, exp := range challenges {
		ch := make([]byte, ChallengeSize)
		rand.Read(ch)
		hashes[name] = hashOf(ch)
		if err := saveChallenge(ctx, db.Pool(), ch, purposeSignIn, nil, exp, time.Time{}, 1000); err != nil {
			t.Fatal(err)
		}
	}
	sessions := map[string]*session{}
	for name, at := range map[string][2]time.Time{ // created, seen
		"active":         {now.Add(-time.Hour), now.Add(-time.Minute)},
		"idle":           {now.Add(-time.Hour), now.Add(-idle)},
		"nearly idle":    {now.Add(-time.Hour), now.Add(-idle + time.Second)},
		"too old":        {now.Add(-abs), now},
		"nearly too old": {now.Add(-abs + time.Second), now},
	} {
		s := testSession(at[0])
		sessions[name] = s
		if err := createSession(ctx, db.Pool(), s); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Pool().Exec(ctx, `update backoffice_sessions set seen_at = $2 where hash = $1`, s.Hash, at[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.InTx(ctx, func(tx pgx.Tx) error { return sweep(ctx, tx, now, idle, abs) }); err != nil {
		t.Fatal(err)
	}
	var left []string
	for name, h := range hashes {
		if n := count(t, db, `select count(*) from login_challenges where hash = $1`, h); n == 1 {
			left = append(left, "challenge "+name)
		}
	}
	for name, s := range sessions {
		if n := count(t, db, `select count(*) from backoffice_sessions where hash = $1`, s.Hash); n == 1 {
			left = append(left, "session "+name)
		}
	}
	slices.Sort(left)
	if diff := cmp.Diff([]string{"challenge live", "session active", "session nearly idle", "session nearly too old"}, left); diff != "" {
		t.Errorf("left after the sweep (-want +got):\n%s", diff)
	}
}

// TestUseChallenge: once, before it expires, for its purpose and session.
func TestUseChallenge(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ctx := t.Context()
	now := time.Now().Truncate(time.Second)
	sessA, sessB := hashOf([]byte("a")), hashOf([]byte("b"))
	tests := []struct {
		name     string
		purpose  string
		bound    []byte
		usedFor  string
		usedWith []byte
		at       time.Duration // since issued; expires after ChallengeLifetime
		ok       bool
	}{
		{"sign-in", purposeSignIn, nil, purposeSignIn, nil, 0, true},
		{"sign-in, just before it expires", purposeSignIn, nil, purposeSignIn, nil, ChallengeLifetime - time.Microsecond, true},
		{"sign-in, as it expires", purposeSignIn, nil, purposeSignIn, nil, ChallengeLifetime, false},
		{"sign-in challenge to unlock", purposeSignIn, nil, purposeUnlock, sessA, 0, false},
		{"unlock", purposeUnlock, sessA, purposeUnlock, sessA, 0, true},
		{"unlock of another session", purposeUnlock, sessA, purposeUnlock, sessB, 0, false},
		{"unlock challenge to sign in", purposeUnlock, sessA, purposeSignIn, nil, 0, false},
	}
	for _, tt := range tests {
		ch := make([]byte, ChallengeSize)
		rand.Read(ch)
		if err := saveChallenge(ctx, db.Pool(), ch, tt.purpose, tt.bound, now.Add(ChallengeLifetime), now, 1000); err != nil {
			t.Fatal(err)
		}
		err := useChallenge(ctx, db.Pool(), ch, tt.usedFor, tt.usedWith, now.Add(tt.at))
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, errNotFound)) {
			t.Errorf("%s: %v, want ok %v", tt.name, err, tt.ok)
		}
		// Consumed either way.
		if err := useChallenge(ctx, db.Pool(), ch, tt.usedFor, tt.usedWith, now.Add(tt.at)); !errors.Is(err, errNotFound) {
			t.Errorf("%s, a second time: %v", tt.name, err)
		}
	}
}

// TestLockedOnce: setLocked reports a change only when there was one.
func TestLockedOnce(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ctx := t.Context()
	now := time.Now().Truncate(time.Second)
	s := testSession(now)
	if err := createSession(ctx, db.Pool(), s); err != nil {
		t.Fatal(err)
	}
	var got []bool
	for _, at := range []*time.Time{&now, &now, nil, nil, &now} {
		changed, err := setLocked(ctx, db.Pool(), s.Hash, at, now)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, changed)
	}
	if diff := cmp.Diff([]bool{true, false, true, false, true}, got); diff != "" {
		t.Errorf("changed (-want +got):\n%s", diff)
	}
	if !equalHash(s.Hash, slices.Clone(s.Hash)) || equalHash(s.Hash, s.Hash[:31]) || equalHash(s.Hash, hashOf(nil)) {
		t.Error("equalHash")
	}
}

// TestMarkedBetweenSweeps: what the bus acknowledged is marked published
// by Run every markEvery, without waiting for the next sweep; nothing is
// logged as failed when nothing failed.
func TestMarkedBetweenSweeps(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	pub := &fakePublisher{}
	pub.fail.Store(true) // the sweep at start publishes nothing
	deps := fakeDeps(t, pub)
	deps.Log = slog.New(slog.NewTextHandler(logs, nil))
	s, err := New(fakeConfig(), deps)
	if err != nil {
		t.Fatal(err)
	}
	a := testAuthorization(t, s.now())
	if err := insertAuthorization(t.Context(), deps.DB.Pool(), a); err != nil {
		t.Fatal(err)
	}
	s.acked <- a.ID
	stop := runService(t, s, time.Hour)
	waitFor(t, func() bool {
		return count(t, deps.DB, `select count(*) from authorizations where published_at is not null`) == 1
	}, "the acknowledged authorization marked published")
	stop()
	out := logs.String()
	if !strings.Contains(out, "publishing failed; retrying") {
		t.Errorf("the failed publishing at start is not logged:\n%s", out)
	}
	for _, never := range []string{"marking published failed", "sweep failed", "audit row not written"} {
		if strings.Contains(out, never) {
			t.Errorf("logged %q though nothing failed:\n%s", never, out)
		}
	}
}

// TestRunLogsFailures: a failed sweep, or a failed mark, is logged for the
// operator, and Run goes on; a publish that worked is not logged as failed.
func TestRunLogsFailures(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	deps := fakeDeps(t, &fakePublisher{})
	deps.Log = slog.New(slog.NewTextHandler(logs, nil))
	s, err := New(fakeConfig(), deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, sql := range []string{
		`create function refuse() returns trigger language plpgsql as $$ begin raise exception 'refused (test)'; end $$`,
		`create trigger refuse_sweep before delete on login_challenges for each statement execute function refuse()`,
		`create trigger refuse_mark before update on authorizations for each row execute function refuse()`,
	} {
		if _, err := deps.DB.Pool().Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	a := testAuthorization(t, s.now())
	a.SignerCert = nil // not for the sweep to publish
	if err := insertAuthorization(ctx, deps.DB.Pool(), a); err != nil {
		t.Fatal(err)
	}
	s.acked <- a.ID
	stop := runService(t, s, time.Hour)
	waitFor(t, func() bool {
		out := logs.String()
		return strings.Contains(out, "sessions: sweep failed") && strings.Contains(out, "marking published failed")
	}, "the failed sweep and mark logged")
	stop()
	if out := logs.String(); strings.Contains(out, "publishing failed") {
		t.Errorf("publishing (of nothing) logged as failed:\n%s", out)
	}
}

// runService runs s.Run until the returned stop (or the test's end).
func runService(t *testing.T, s *Service, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, interval); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond, generously: a busy machine is slow, not wrong.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func count(t *testing.T, db *database.DB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Pool().QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testSession(created time.Time) *session {
	tok := make([]byte, 32)
	rand.Read(tok)
	return &session{Hash: hashOf(tok), UZI: "900000001", Holder: "A. Huisarts", Role: roleClinician, CardType: "Z",
		RoleCode: "01.015", AuthCertHash: hashOf([]byte("cert")), Lang: "en", CreatedAt: created}
}

func testAuthorization(t *testing.T, now time.Time) *authorization {
	a := &authorization{PhoneCode: make([]byte, 10), Statement: []byte("statement"), StatementSig: []byte("sig"),
		Attestation: []byte("att"), AttestationSig: []byte("attsig"), SignerCert: []byte("cert"), UZI: "900000001",
		RoleCode: "01.015", CreatedAt: now, ExpiresAt: now.Add(protocol.MaxValidity)}
	rand.Read(a.ID[:])
	rand.Read(a.PhoneCode)
	return a
}

func fakeConfig() Config {
	return Config{Origin: "http://127.0.0.1:8080", DailyQuota: 5, DayZone: "Europe/Amsterdam", Bucket: "authorizations",
		IdleTimeout: 15 * time.Minute, AbsoluteTimeout: 12 * time.Hour, SignInPerMinute: 20, VouchPerMinute: 20, MaxChallenges: 100, HeartbeatTimeout: 2 * time.Minute}
}

// fakeDeps: a real database; a verifier, register and bus that are not
// asked (Run needs only the database and the bus).
func fakeDeps(t *testing.T, pub Publisher) Deps {
	if pub == nil {
		pub = &fakePublisher{}
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Deps{DB: testenv.Database(t), Verifier: fakeVerifier{}, Licenses: fakeLicenses{}, Attestation: []crypto.Signer{key},
		Publisher: pub, Jurisdiction: "NL"}
}

type fakePublisher struct {
	fail atomic.Bool
}

func (p *fakePublisher) PutAll(context.Context, []bus.KeyValue) error {
	if p.fail.Load() {
		return errors.New("bus down (test)")
	}
	return nil
}

var errFake = errors.New("not asked in this test")

type fakeVerifier struct{}

func (fakeVerifier) VerifyLogin([]byte, string, []byte, []byte, time.Time) (*protocol.LoginResult, error) {
	return nil, errFake
}
func (fakeVerifier) VerifyCard([]byte, uzi.Purpose, time.Time) (uzi.Identity, error) {
	return uzi.Identity{}, errFake
}
func (fakeVerifier) VerifyStatement([]byte, []byte, []byte, time.Time) (*protocol.Result, error) {
	return nil, errFake
}

type fakeLicenses struct{}

func (fakeLicenses) Decide(context.Context, uzi.Identity) (license.Decision, error) {
	return license.Decision{}, errFake
}

// TestTf fills in name, value pairs; a name without a value is ignored.
func TestTf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kv   []any
		want string
	}{
		{[]any{"Days", 28}, "at most 28 days ago"},
		{[]any{"Days", 14, "Lonely"}, "at most 14 days ago"},
	}
	for _, tt := range tests {
		if got := (tr{"en"}).Tf("page.vouch.onset-hint", tt.kv...); !strings.Contains(got, tt.want) {
			t.Errorf("Tf(%v) = %q, want %q in it", tt.kv, got, tt.want)
		}
	}
}

// TestPublishPendingInBatches: more unpublished authorizations than one
// batch are all published by one sweep.
func TestPublishPendingInBatches(t *testing.T) {
	t.Parallel()
	pub := &countingPublisher{}
	deps := fakeDeps(t, pub)
	s, err := New(fakeConfig(), deps)
	if err != nil {
		t.Fatal(err)
	}
	now := s.now()
	if _, err := deps.DB.Pool().Exec(t.Context(), `insert into authorizations
		(id, phone_code, statement, statement_sig, attestation, attestation_sig, signer_cert, uzi_number, created_at, expires_at)
		select gen_random_uuid(), substring(sha256(i::text::bytea) from 1 for 10), 's', 'ss', 'a', 'as', 'c', '900000001',
			$1::timestamptz - (i || ' ms')::interval, $1::timestamptz + interval '1 hour'
		from generate_series(1, 501) i`, now); err != nil {
		t.Fatal(err)
	}
	stop := runService(t, s, time.Hour)
	waitFor(t, func() bool {
		return count(t, deps.DB, `select count(*) from authorizations where published_at is not null`) == 501
	}, "all 501 published by the first sweep")
	stop()
	if got := pub.sizes(); !slices.Equal(got, []int{500, 1}) {
		t.Errorf("put in batches of %v, want [500 1]", got)
	}
}

type countingPublisher struct {
	mu    sync.Mutex
	batch []int
}

func (p *countingPublisher) PutAll(_ context.Context, e []bus.KeyValue) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.batch = append(p.batch, len(e))
	return nil
}

func (p *countingPublisher) sizes() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.batch)
}
