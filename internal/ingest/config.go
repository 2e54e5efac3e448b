package ingest

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
)

// Config of the public phone API. It is read from the environment and
// never logged.
type Config struct {
	// Addr is where the API listens; it faces the public behind the IP
	// filter, on its own listener apart from the back office.
	Addr string `env:"VOUCH_INGEST_ADDR, default=127.0.0.1:8081"`
	// AllowCIDRs, when set, are the only networks answered; DenyCIDRs are
	// refused even when allowed.
	AllowCIDRs []string `env:"VOUCH_INGEST_ALLOW_CIDRS"`
	DenyCIDRs  []string `env:"VOUCH_INGEST_DENY_CIDRS"`
	// TrustedProxies are the networks of load balancers whose
	// X-Forwarded-For names the client; without them the peer address is
	// the client (a forged header must not dodge the rate limit).
	TrustedProxies []string `env:"VOUCH_INGEST_TRUSTED_PROXIES"`
	// RatePerSecond and RateBurst bound requests per client IP.
	RatePerSecond float64 `env:"VOUCH_INGEST_RATE, default=5"`
	RateBurst     int     `env:"VOUCH_INGEST_RATE_BURST, default=20"`
	// MaxAgeDays is how many days of keys are published.
	MaxAgeDays int `env:"VOUCH_KEYS_MAX_AGE_DAYS, default=14"`
	// AuthorizationBucket is where the back office puts vouched bundles,
	// keyed by phone code (backoffice.Config.Bucket).
	AuthorizationBucket string `env:"VOUCH_AUTHORIZATION_BUCKET, default=authorizations"`
	// LicenseBucket is where the registry sync puts license states
	// (registrysync.Config.Bucket).
	LicenseBucket string `env:"VOUCH_LICENSE_BUCKET, default=vouch-licenses"`
	// AccessLogDir receives the hourly access logs (IP and user agent);
	// empty writes none.
	AccessLogDir string `env:"VOUCH_INGEST_ACCESS_LOG_DIR"`
	// StreamMaxAge is how long the bus keeps uploads the readers have not
	// stored: long enough to ride out a database outage.
	StreamMaxAge time.Duration `env:"VOUCH_KEYS_STREAM_MAX_AGE, default=72h"`
	// BusTimeout bounds each wait for the bus; past it the phone gets 503
	// and tries again.
	BusTimeout time.Duration `env:"VOUCH_INGEST_BUS_TIMEOUT, default=5s"`
	// Replicas of the stream and the used bucket: 1 on one machine, 3 in a
	// cluster. Unset (0) takes the bus's VOUCH_BUS_REPLICAS, which every
	// role shares: a role that opened the stream with other replicas would
	// change it for all.
	Replicas int `env:"VOUCH_KEYS_STREAM_REPLICAS"`
}

// usedTTL is how long an authorization stays marked used: a day longer
// than keys are published, so that a phone's retry of an upload is
// recognised as long as any of its keys could still be published (and
// longer than an authorization's validity, 24 h, so a replay finds the
// mark).
func usedTTL(maxAgeDays int) time.Duration { return time.Duration(maxAgeDays+1) * 24 * time.Hour }

// nets are the parsed CIDR lists.
type nets struct {
	allow, deny, proxies []netip.Prefix
}

// Validate checks cfg and fills what a Config made in code leaves empty.
func (cfg *Config) Validate() (nets, error) {
	var n nets
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8081"
	}
	if cfg.MaxAgeDays == 0 {
		cfg.MaxAgeDays = exposure.DefaultMaxAgeDays
	}
	if cfg.AuthorizationBucket == "" {
		cfg.AuthorizationBucket = "authorizations"
	}
	if cfg.LicenseBucket == "" {
		cfg.LicenseBucket = "vouch-licenses"
	}
	if cfg.StreamMaxAge == 0 {
		cfg.StreamMaxAge = 72 * time.Hour
	}
	if cfg.BusTimeout == 0 {
		cfg.BusTimeout = 5 * time.Second
	}
	if cfg.RatePerSecond == 0 {
		cfg.RatePerSecond = 5
	}
	if cfg.RateBurst == 0 {
		cfg.RateBurst = 20
	}
	var errs []error
	switch {
	case cfg.MaxAgeDays < exposure.FloorMaxAgeDays:
		errs = append(errs, fmt.Errorf("VOUCH_KEYS_MAX_AGE_DAYS must be at least %d, got %d", exposure.FloorMaxAgeDays, cfg.MaxAgeDays))
	case cfg.MaxAgeDays > 30:
		errs = append(errs, fmt.Errorf("VOUCH_KEYS_MAX_AGE_DAYS must be at most 30, got %d", cfg.MaxAgeDays))
	}
	// Written as !(r > 0): NaN and +Inf compare false to everything, and
	// either would make the limiter let everything through or nothing.
	if !(cfg.RatePerSecond > 0) || math.IsInf(cfg.RatePerSecond, 1) || cfg.RateBurst < 1 {
		errs = append(errs, errors.New("VOUCH_INGEST_RATE must be positive and VOUCH_INGEST_RATE_BURST at least 1"))
	}
	if cfg.StreamMaxAge < time.Hour {
		errs = append(errs, fmt.Errorf("VOUCH_KEYS_STREAM_MAX_AGE must be at least 1h, got %s", cfg.StreamMaxAge))
	}
	if cfg.BusTimeout < 0 {
		errs = append(errs, errors.New("VOUCH_INGEST_BUS_TIMEOUT must be positive"))
	}
	parse := func(name string, in []string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range in {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a CIDR", name, s))
				continue
			}
			out = append(out, p.Masked())
		}
		return out
	}
	n.allow = parse("VOUCH_INGEST_ALLOW_CIDRS", cfg.AllowCIDRs)
	n.deny = parse("VOUCH_INGEST_DENY_CIDRS", cfg.DenyCIDRs)
	n.proxies = parse("VOUCH_INGEST_TRUSTED_PROXIES", cfg.TrustedProxies)
	return n, errors.Join(errs...)
}

// admits reports whether the client at ip may be answered.
func (n nets) admits(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range n.deny {
		if p.Contains(ip) {
			return false
		}
	}
	if len(n.allow) == 0 {
		return true
	}
	for _, p := range n.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
