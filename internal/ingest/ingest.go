// Package ingest is the public phone API (`vouch ingest`): a phone picks up
// the bundle its clinician vouched for, and uploads its temporary exposure
// keys with it. Ingest keeps nothing itself and has no database: it reads
// the authorizations, license states and CRLs from the bus, verifies every
// upload again (never trusting the phone), marks its authorization used
// with a compare-and-set, and publishes the keys to the stream the readers
// store, answering 2xx only once the bus acknowledged them. Responses are
// padded, and chaff (X-Chaff: 1) is answered like real traffic, so that
// what is on the wire does not tell who is infected.
package ingest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/server"
)

// Deps are what the API runs on.
type Deps struct {
	// Trust configures the verifier. Its Revocation, when a
	// *revocation.Set (trust.Load makes one of VOUCH_UZI_CRLS), is kept and
	// refreshed; ingest adds the CRLs the registry sync puts on the bus.
	Trust protocol.Trust
	// CRLFiles are read again at every refresh (trust.Config.CRLs).
	CRLFiles []string
	// CRLRefresh is how often the CRLs are read again; default 1 minute.
	CRLRefresh time.Duration
	Bus        *bus.Bus
	Log        *slog.Logger
	Metrics    prometheus.Registerer
	Now        func() time.Time // default time.Now
}

// Service is the phone API.
type Service struct {
	cfg      Config
	nets     nets
	log      *slog.Logger
	now      func() time.Time
	verifier *protocol.Verifier
	js       jetstream.JetStream
	// retry tries an upload's writes again through a leader election of
	// the cluster (each try bounded by BusTimeout), so that losing one
	// server is not a 503.
	retry bus.Retry
	auths jetstream.KeyValue
	used  jetstream.KeyValue
	// chaffMarks and the chaff stream take chaff's writes (chaffWrite).
	chaffMarks jetstream.KeyValue
	licenses   *licenses
	crls       *crls
	access     *AccessLog
	decoy      *decoy
	metrics    *metrics
	// bodies are request bodies' buffers, used again (readBody).
	bodies sync.Pool
}

// New opens what the API needs on the bus — the stream, the buckets,
// creating those that do not exist yet — and prepares the verifier.
func New(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	n, err := cfg.Validate()
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	if deps.Bus == nil || deps.Log == nil {
		return nil, errors.New("ingest: a bus and a logger are needed")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = deps.Bus.Replicas()
	}
	s := &Service{cfg: cfg, nets: n, log: deps.Log, now: deps.Now, js: deps.Bus.JetStream(),
		retry: bus.Retry{Attempt: cfg.BusTimeout, Within: bus.RetryWithin}}

	// Revocation: the files, and what the registry sync puts on the bus.
	crlBucket, err := deps.Bus.Bucket(ctx, registrysync.CRLBucket, registrysync.CRLBucketDescription)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	tr := deps.Trust
	set, _ := tr.Revocation.(*revocation.Set)
	if set == nil {
		set = revocation.NewSet()
	}
	src := revocation.Sources{BucketCRLs{Bucket: crlBucket}}
	if len(deps.CRLFiles) > 0 {
		src = append(src, revocation.Files(deps.CRLFiles))
	}
	s.crls = &crls{set: set, src: src, cas: tr.CAs(), every: deps.CRLRefresh, log: deps.Log, now: deps.Now}
	if s.crls.every <= 0 {
		s.crls.every = time.Minute
	}
	s.crls.refresh(ctx)
	tr.Revocation = set
	if s.verifier, err = protocol.NewVerifier(tr); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}

	if _, err := deps.Bus.Stream(ctx, bus.StreamConfig{Name: exposure.Stream, Subjects: []string{exposure.Subject},
		MaxAge: cfg.StreamMaxAge, Replicas: cfg.Replicas}); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	// The buckets as their writers open them: whoever starts first
	// creates them.
	if _, err := deps.Bus.ExpiringBucket(ctx, cfg.AuthorizationBucket, "Vouched authorizations by phone code, for pickup", protocol.MaxValidity); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	if _, err := deps.Bus.Bucket(ctx, cfg.LicenseBucket, registrysync.BucketDescription); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	var lic jetstream.KeyValue
	if err := openRetry().Do(ctx, func(ctx context.Context) (err error) {
		if s.auths, err = s.js.KeyValue(ctx, cfg.AuthorizationBucket); err != nil {
			return fmt.Errorf("ingest: bucket %s: %w", cfg.AuthorizationBucket, err)
		}
		if lic, err = s.js.KeyValue(ctx, cfg.LicenseBucket); err != nil {
			return fmt.Errorf("ingest: bucket %s: %w", cfg.LicenseBucket, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	s.licenses = newLicenses(lic, deps.Log)
	if s.used, err = openUsed(ctx, s.js, cfg.Replicas, usedTTL(cfg.MaxAgeDays)); err != nil {
		return nil, err
	}
	if _, err := deps.Bus.Stream(ctx, bus.StreamConfig{Name: ChaffStream, Subjects: []string{ChaffSubject},
		MaxAge: chaffTTL, Replicas: cfg.Replicas}); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	if s.chaffMarks, err = openBucket(ctx, s.js, jetstream.KeyValueConfig{Bucket: ChaffBucket, History: 1, TTL: chaffTTL,
		Replicas: max(cfg.Replicas, 1), Description: "chaff's writes, which cost what a used mark does; read by nobody"}); err != nil {
		return nil, err
	}
	if cfg.AccessLogDir != "" {
		if s.access, err = NewAccessLog(cfg.AccessLogDir, deps.Now); err != nil {
			return nil, err
		}
	}
	if s.decoy, err = newDecoy(tr, deps.Now()); err != nil {
		return nil, err
	}
	s.metrics = newMetrics(deps.Metrics)
	return s, nil
}

// Where chaff's writes go: a stream and a bucket of their own, which no
// reader reads, whose entries expire after chaffTTL.
const (
	ChaffStream  = "VOUCH_CHAFF"
	ChaffSubject = "vouch.chaff"
	ChaffBucket  = "vouch-chaff"
	chaffTTL     = time.Minute
)

// openBucket opens a bucket, creating it when it does not exist. As the
// bus's own buckets: a cluster answers once the bucket's replicas elected
// a leader (a loaded three-server cluster took longer than one request's
// timeout), and a try that timed out may have made it.
func openBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (kv jetstream.KeyValue, err error) {
	err = openRetry().Do(ctx, func(ctx context.Context) error {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(ctx, cfg)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// openRetry is how a bucket is opened at start (bus.Retry: on timeouts and
// no responders only).
func openRetry() bus.Retry { return bus.Retry{Attempt: 10 * time.Second, Within: time.Minute} }

// openUsed opens the bucket that marks authorizations used, creating it,
// and keeps its marks for ttl (an older bucket's shorter TTL is raised).
func openUsed(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration) (jetstream.KeyValue, error) {
	cfg := jetstream.KeyValueConfig{Bucket: exposure.UsedBucket, History: 1, TTL: ttl, Replicas: max(replicas, 1),
		Description: "authorizations uploaded with: SHA-256 of the upload without its time, by authorization id"}
	var kv jetstream.KeyValue
	err := openRetry().Do(ctx, func(ctx context.Context) (err error) {
		kv, err = js.KeyValue(ctx, exposure.UsedBucket)
		switch {
		case errors.Is(err, jetstream.ErrBucketNotFound):
			kv, err = js.CreateKeyValue(ctx, cfg)
		case err == nil:
			var st jetstream.KeyValueStatus
			if st, err = kv.Status(ctx); err == nil && st.TTL() < ttl {
				kv, err = js.UpdateKeyValue(ctx, cfg)
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: bucket %s: %w", exposure.UsedBucket, err)
	}
	return kv, nil
}

// Checks are the API's readiness checks beside the bus's: the license
// states read, and a current CRL for every CA.
func (s *Service) Checks() map[string]server.Checker {
	return map[string]server.Checker{
		"licenses":   server.CheckFunc(s.licenses.ready),
		"revocation": server.CheckFunc(s.crls.ready),
	}
}

// Run keeps the license states and the CRLs current, and deletes old
// access logs, until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.licenses.run(ctx); close(done) }()
	crlTick := time.NewTicker(s.crls.every)
	defer crlTick.Stop()
	pruneTick := time.NewTicker(time.Minute)
	defer pruneTick.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			if s.access != nil {
				s.access.Close()
			}
			return nil
		case <-crlTick.C:
			s.crls.refresh(ctx)
		case <-pruneTick.C:
			if s.access != nil {
				if err := s.access.Prune(); err != nil {
					s.log.Warn("access logs: deleting old files failed", "err", err)
				}
			}
		}
	}
}

// Register adds the API's routes and its edge — IP filter, access log,
// rate limit, padded errors — to e, which must be the API's own listener.
func (s *Service) Register(e *echo.Echo) {
	e.IPExtractor = s.ipExtractor()
	e.Use(s.filterIPs)
	if s.access != nil {
		e.Use(s.access.middleware(func(err error) { s.log.Warn("access log write failed", "err", err) }))
	}
	prev := e.HTTPErrorHandler
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if block := blockOf(c); block > 0 {
			s.refuse(c, err, block)
			return
		}
		prev(err, c)
	}
	limit := middleware.RateLimiterWithConfig(middleware.RateLimiterConfig{
		Store: middleware.NewRateLimiterMemoryStoreWithConfig(middleware.RateLimiterMemoryStoreConfig{
			Rate: rate.Limit(s.cfg.RatePerSecond), Burst: s.cfg.RateBurst, ExpiresIn: 3 * time.Minute}),
		IdentifierExtractor: func(c echo.Context) (string, error) { return c.RealIP(), nil },
		DenyHandler: func(c echo.Context, _ string, _ error) error {
			// When the client's next request is let through at the earliest:
			// a phone waits that long and a jittered while more.
			c.Response().Header().Set("Retry-After", strconv.Itoa(s.retryAfter()))
			return &apiError{status: http.StatusTooManyRequests, code: codeRateLimited, msg: "too many requests; try again later"}
		},
	})
	e.POST(phoneapi.PathPickup, s.pickup, limit)
	e.POST(phoneapi.PathUploads, s.upload, limit)
	e.GET(phoneapi.PathOpenAPI, s.openAPI)
}

// retryAfter is the Retry-After of a rate-limited answer, in whole
// seconds: the time one request's share of the rate takes to come back.
func (s *Service) retryAfter() int {
	return max(1, int(math.Ceil(1/s.cfg.RatePerSecond)))
}

// ipExtractor is the one rule every role follows (server.IPExtractor).
func (s *Service) ipExtractor() echo.IPExtractor {
	return server.IPExtractor(s.nets.proxies)
}

// metrics count requests by outcome, chaff and real alike (countUpload).
type metrics struct {
	pickups *prometheus.CounterVec
	uploads *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pickups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vouch_ingest_pickups_total",
			Help: "Pickups, chaff and real alike, by outcome: accepted, refused or unavailable."}, []string{"result"}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vouch_ingest_uploads_total",
			Help: "Uploads, chaff and real alike, by outcome: accepted, refused or unavailable."}, []string{"result"}),
	}
	reg.MustRegister(m.pickups, m.uploads)
	return m
}

var randRead = rand.Read
