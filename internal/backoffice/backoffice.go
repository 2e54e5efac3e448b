// Package backoffice is the web application clinicians sign in to with
// their card and vouch from: the sign-in with a card's login signature,
// sessions bound to that card (kept in PostgreSQL), the lock when the card
// leaves the reader, the vouch page where the card signs an authorization
// statement that the back end verifies, checks against the register and
// countersigns, and the audit row of every step. It reuses the verifier of
// internal/protocol and the license decisions of internal/license; it
// verifies nothing itself.
//
// Handlers read bind → validate → authorize → act → audit → render. Every
// refusal is an *server.Error with a message of the catalogues, and an
// audit row; it changes nothing else.
package backoffice

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/settings"
	"github.com/vouch-nl/vouch/internal/uzi"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Config of the back office.
type Config struct {
	// Origin is the back office's origin as the clinician's browser sees
	// it (scheme://host[:port]). Login signatures are bound to it; it is
	// never taken from a request.
	Origin string `env:"VOUCH_BACKOFFICE_ORIGIN, default=http://127.0.0.1:8080"`
	// AttestationURI names the back end's attestation key in the HSM
	// (pkcs11: URI); its PIN is VOUCH_HSM_PIN.
	AttestationURI string `env:"VOUCH_ATTESTATION_URI"`
	HSMPIN         string `env:"VOUCH_HSM_PIN"`
	// DailyQuota is how many codes one card holder may vouch for in a day
	// (DayZone's day): a stolen card cannot vouch for thousands.
	DailyQuota int    `env:"VOUCH_VOUCH_DAILY_QUOTA, default=60"`
	DayZone    string `env:"VOUCH_VOUCH_DAY_ZONE, default=Europe/Amsterdam"`
	// Bucket is the public tier's key-value bucket of authorizations.
	Bucket          string        `env:"VOUCH_AUTHORIZATION_BUCKET, default=authorizations"`
	IdleTimeout     time.Duration `env:"VOUCH_SESSION_IDLE, default=15m"`
	AbsoluteTimeout time.Duration `env:"VOUCH_SESSION_MAX, default=12h"`
	// Rates per minute: sign-in attempts per IP address, vouches per card.
	SignInPerMinute float64 `env:"VOUCH_SIGNIN_PER_MINUTE, default=20"`
	VouchPerMinute  float64 `env:"VOUCH_VOUCH_PER_MINUTE, default=20"`
	// MaxChallenges bounds the sign-in and unlock challenges alive at once
	// (all copies together): past it a challenge is refused with 503 until
	// some expire, whatever addresses ask.
	MaxChallenges int `env:"VOUCH_SIGNIN_CHALLENGES_MAX, default=10000"`
	// HeartbeatTimeout: a session whose page has not reported its card
	// for this long is locked by the server (closed tab, extension or
	// agent gone). The page reports every 30 s while its watch sees the
	// card, so at least a minute.
	HeartbeatTimeout time.Duration `env:"VOUCH_SESSION_HEARTBEAT, default=2m"`
	// Contact says whom a card holder refused for their registration
	// (suspended, revoked, expired, not registered…) should contact, after
	// the reason: for instance "Call the service desk: 020 123 45 67."
	// Without it a general text says to contact the organisation's service
	// desk or the register.
	Contact string `env:"VOUCH_BACKOFFICE_CONTACT"`
	// BootstrapAdmins are the UZI numbers made admin when no card holds
	// admin (Service.Bootstrap): the first admins, who grant the rest.
	BootstrapAdmins []string `env:"VOUCH_BOOTSTRAP_ADMINS"`
	// Settings are the hard limits of the admin's settings, and how often
	// a copy reads them again (internal/settings).
	Settings settings.Config
}

// Validate checks the configuration and returns the origin, parsed.
func (c Config) Validate() (*url.URL, error) {
	u, err := url.Parse(c.Origin)
	switch {
	case err != nil:
		return nil, fmt.Errorf("VOUCH_BACKOFFICE_ORIGIN: %w", err)
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "", u.Path != "" && u.Path != "/", u.RawQuery != "", u.User != nil:
		return nil, fmt.Errorf("VOUCH_BACKOFFICE_ORIGIN must be scheme://host[:port], got %q", c.Origin)
	case u.Scheme == "http" && !loopback(u.Hostname()):
		// Cookies, challenges and sessions cross the network in the clear
		// over http: only a browser on the same machine may use it.
		return nil, fmt.Errorf("VOUCH_BACKOFFICE_ORIGIN must be https for any host but loopback, got %q", c.Origin)
	case c.DailyQuota < 1:
		return nil, fmt.Errorf("VOUCH_VOUCH_DAILY_QUOTA must be at least 1, got %d", c.DailyQuota)
	case c.IdleTimeout <= 0 || c.AbsoluteTimeout < c.IdleTimeout:
		return nil, errors.New("VOUCH_SESSION_IDLE must be positive and at most VOUCH_SESSION_MAX")
	case c.SignInPerMinute <= 0 || c.VouchPerMinute <= 0:
		return nil, errors.New("VOUCH_SIGNIN_PER_MINUTE and VOUCH_VOUCH_PER_MINUTE must be positive")
	case c.HeartbeatTimeout < time.Minute:
		return nil, fmt.Errorf("VOUCH_SESSION_HEARTBEAT must be at least 1m (the page reports every 30 s), got %v", c.HeartbeatTimeout)
	case c.MaxChallenges < 1:
		return nil, fmt.Errorf("VOUCH_SIGNIN_CHALLENGES_MAX must be at least 1, got %d", c.MaxChallenges)
	}
	if err := c.Settings.Validate(); err != nil {
		return nil, err
	}
	if _, err := time.LoadLocation(c.DayZone); err != nil {
		return nil, fmt.Errorf("VOUCH_VOUCH_DAY_ZONE: %w", err)
	}
	for i, a := range c.BootstrapAdmins {
		switch {
		case !uzi.ValidUZINumber(a):
			return nil, fmt.Errorf("VOUCH_BOOTSTRAP_ADMINS: %q is not a UZI number (9 digits)", a)
		case slices.Contains(c.BootstrapAdmins[:i], a):
			return nil, fmt.Errorf("VOUCH_BOOTSTRAP_ADMINS: %s twice", a)
		}
	}
	return u, nil
}

// loopback: localhost, or an address of the loopback network.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Verifier is what the back office needs of protocol.Verifier.
type Verifier interface {
	VerifyLogin(cert []byte, origin string, challenge, sig []byte, now time.Time) (*protocol.LoginResult, error)
	VerifyCard(cert []byte, purpose uzi.Purpose, now time.Time) (uzi.Identity, error)
	VerifyStatement(statement, sig, cert []byte, now time.Time) (*protocol.Result, error)
}

var _ Verifier = (*protocol.Verifier)(nil)

// Licenses decides whether a card holder may work now (license.Decider).
type Licenses interface {
	Decide(ctx context.Context, id uzi.Identity) (license.Decision, error)
}

var _ Licenses = (*license.Decider)(nil)

// Publisher puts authorizations in the public tier's bucket (bus.Bucket)
// and returns once the bus acknowledged them.
type Publisher interface {
	PutAll(ctx context.Context, entries []bus.KeyValue) error
}

var _ Publisher = (*bus.Bucket)(nil)

// Deps are what the back office runs on.
type Deps struct {
	DB       *database.DB
	Verifier Verifier
	Licenses Licenses
	// Attestation is the back end's attestation key in the HSM, once per
	// HSM session: each signs one attestation at a time, so several let
	// vouches of several clinicians be countersigned at once.
	Attestation  []crypto.Signer
	Publisher    Publisher
	Jurisdiction string
	Professions  []string // professions that may vouch
	Log          *slog.Logger
	Metrics      prometheus.Registerer
	Now          func() time.Time // time.Now when nil
	// Buckets keep the rate limits' token buckets, shared by every copy;
	// nil means in PostgreSQL (DB).
	Buckets Buckets
	// Settings are the admin's settings (internal/settings, settings.go);
	// nil means the configuration's defaults, fixed.
	Settings Settings
}

// Service is the back office.
type Service struct {
	cfg     Config
	origin  *url.URL
	secure  bool // the origin is https: cookies are Secure and __Host-
	zone    *time.Location
	deps    Deps
	now     func() time.Time
	pages   map[string]*template.Template
	buckets Buckets
	signins *limiter
	vouches *limiter
	metrics *metrics
	signers chan crypto.Signer // the HSM sessions not in use
	acked   chan [16]byte      // authorizations the bus acknowledged, to mark published
	refused refusals           // refusals counted for their minute's audit row
	echo    *echo.Echo
	trail   auditTrail // the audit trail's verification in this copy (audittrail_verify.go)
	// statsViews are the statistics pages' charts and tables as last laid
	// out, by language, query and the days counted (statistics.go).
	statsViews *lru.Cache[string, *statsView]

	// settings are Deps.Settings, or the configuration's defaults.
	settings Settings
}

// New prepares the back office.
func New(cfg Config, deps Deps) (*Service, error) {
	origin, err := cfg.Validate()
	if err != nil {
		return nil, err
	}
	if deps.DB == nil || deps.Verifier == nil || deps.Licenses == nil || len(deps.Attestation) == 0 || deps.Publisher == nil {
		return nil, errors.New("backoffice: a dependency is missing")
	}
	zone, _ := time.LoadLocation(cfg.DayZone) // checked by Validate
	buckets := deps.Buckets
	if buckets == nil {
		buckets = pgBuckets{db: deps.DB}
	}
	s := &Service{
		cfg: cfg, origin: origin, secure: origin.Scheme == "https", zone: zone, deps: deps, now: deps.Now,
		buckets: buckets,
		signins: newLimiter("signin", cfg.SignInPerMinute, buckets),
		vouches: newLimiter("vouch", cfg.VouchPerMinute, buckets),
		signers: make(chan crypto.Signer, len(deps.Attestation)),
		acked:   make(chan [16]byte, 4096),
	}
	for _, a := range deps.Attestation {
		s.signers <- a
	}
	if s.settings = deps.Settings; s.settings == nil {
		if s.settings, err = fixedSettings(cfg, deps); err != nil {
			return nil, err
		}
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.deps.Log == nil {
		s.deps.Log = slog.New(slog.DiscardHandler)
	}
	if s.deps.Metrics == nil {
		s.deps.Metrics = prometheus.NewRegistry()
	}
	s.metrics = newMetrics(s.deps.Metrics)
	if s.pages, err = loadPages(); err != nil {
		return nil, err
	}
	if s.statsViews, err = lru.New[string, *statsView](statsViewsKept); err != nil {
		return nil, err
	}
	return s, nil
}

// Origin is the configured origin, as login signatures are bound to it.
func (s *Service) Origin() string { return s.origin.Scheme + "://" + s.origin.Host }

// Register adds the back office's routes to e: the one route table
// (routes), each behind the role it needs.
func (s *Service) Register(e *echo.Echo) {
	s.echo = e
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(s.crossOrigin))
	// The configured origin may differ from the Host a proxy passes on.
	_ = cop.AddTrustedOrigin(s.Origin())
	// 16,384 bytes ("16K" would be 16,000 to echo).
	g := e.Group("", echo.WrapMiddleware(cop.Handler), middleware.BodyLimit("16KiB"), s.language, s.loadSession, s.offeredLanguage, s.auditRefusals, s.lockGate)

	s.register(g) // the one route table: routes.go
}

// Run publishes what was stored but not acknowledged by the bus, deletes
// expired challenges and sessions and locks silent ones, and forgets the
// rate limits' buckets that are full again, every interval
// until ctx ends; in between it records which authorizations the bus
// acknowledged, in batches, off the clinicians' requests, and writes the
// audit rows of the refusals counted in each minute that ended. Every copy of the back office
// runs it; a bundle put twice is the same bundle.
func (s *Service) Run(ctx context.Context, interval time.Duration) error {
	sweepT := time.NewTicker(interval)
	defer sweepT.Stop()
	markT := time.NewTicker(markEvery)
	defer markT.Stop()
	for {
		if err := s.publishPending(ctx); err != nil && ctx.Err() == nil {
			s.deps.Log.Warn("authorizations: publishing failed; retrying", "err", err)
		}
		if err := s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
			return sweep(ctx, tx, s.now(), s.cfg.IdleTimeout, s.cfg.AbsoluteTimeout)
		}); err != nil && ctx.Err() == nil {
			s.deps.Log.Warn("sessions: sweep failed", "err", err)
		}
		if err := s.buckets.Sweep(ctx, s.now()); err != nil && ctx.Err() == nil {
			s.deps.Log.Warn("rate limits: sweep failed", "err", err)
		}
		// Lock the sessions whose page went silent, with their audit rows,
		// even if no request of theirs comes.
		if err := s.lockSilent(ctx, nil, s.now()); err != nil && ctx.Err() == nil {
			s.deps.Log.Warn("sessions: locking silent sessions failed", "err", err)
		}
	marks:
		for {
			select {
			case <-ctx.Done():
				// The minute under way is written now, not lost.
				fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				s.flushRefusals(fctx, true)
				cancel()
				return ctx.Err()
			case <-sweepT.C:
				break marks
			case <-markT.C:
				s.markAcknowledged(ctx)
				s.flushRefusals(ctx, false)
			}
		}
	}
}

// markEvery is how often acknowledged authorizations are marked published.
const markEvery = 200 * time.Millisecond

// markAcknowledged marks published what the bus acknowledged since the
// last time. A mark lost (the back office stopped first) only means the
// sweep puts the same bundle again.
func (s *Service) markAcknowledged(ctx context.Context) {
	var ids [][16]byte
	for {
		select {
		case id := <-s.acked:
			ids = append(ids, id)
			continue
		default:
		}
		break
	}
	if len(ids) == 0 {
		return
	}
	if err := markPublished(ctx, s.deps.DB.Pool(), ids, s.now()); err != nil && ctx.Err() == nil {
		s.deps.Log.Warn("authorizations: marking published failed; the sweep publishes them again", "count", len(ids), "err", err)
	}
}

// echoContext wraps a plain handler's request for echo's error handler.
func (s *Service) echoContext(w http.ResponseWriter, r *http.Request) echo.Context {
	return s.echo.NewContext(r, w)
}

// record writes one audit row in its own transaction: for refusals, which
// change nothing else.
func (s *Service) record(c echo.Context, e audit.Entry) {
	e.IP, e.UserAgent = c.RealIP(), c.Request().UserAgent()
	err := s.deps.DB.InTx(c.Request().Context(), func(tx pgx.Tx) error {
		_, err := audit.Append(c.Request().Context(), tx, e, s.now())
		return err
	})
	if err != nil {
		// The refusal stands; the missing row is an operator's alarm.
		s.deps.Log.Error("audit row not written", "action", e.Action, "reason", e.Reason, "err", err,
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
	}
}

// entry is an audit entry of the request's card holder.
func entry(c echo.Context, action, reason string) audit.Entry {
	e := audit.Entry{Action: action, Reason: reason, IP: c.RealIP(), UserAgent: c.Request().UserAgent()}
	if sess := sessionOf(c); sess != nil {
		e.Actor = sess.UZI
	}
	return e
}

type metrics struct {
	signins *prometheus.CounterVec
	vouches *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		signins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vouch_backoffice_signins_total",
			Help: "Sign-ins to the back office, by result (ok or a reason code)."}, []string{"result"}),
		vouches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vouch_backoffice_vouches_total",
			Help: "Vouches, by result (ok or a reason code)."}, []string{"result"}),
	}
	reg.MustRegister(m.signins, m.vouches)
	return m
}
