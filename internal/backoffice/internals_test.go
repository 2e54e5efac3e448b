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
