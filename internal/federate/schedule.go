package federate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SiteConfig is one site of VOUCH_FEDERATE_SITES as configured: its name,
// its export base URL and the PEM files of its export public keys (two
// during its rotation). The caller reads the keys.
type SiteConfig struct {
	Name     string
	URL      string
	KeyFiles []string
}

// Sites is VOUCH_FEDERATE_SITES: sites separated by ';' or newlines, each
// "NAME URL KEYFILE[,KEYFILE]", for instance
//
//	be https://exports.be.example/v1 /etc/vouch/be.pem; de https://exports.de.example /etc/vouch/de.pem
type Sites []SiteConfig

// EnvDecode parses VOUCH_FEDERATE_SITES (envconfig.Decoder).
func (s *Sites) EnvDecode(v string) error {
	out, err := ParseSites(v)
	if err != nil {
		return err
	}
	*s = out
	return nil
}

// ParseSites parses the value of VOUCH_FEDERATE_SITES: every site named
// once, with an http(s) URL and at least one key file.
func ParseSites(v string) (Sites, error) {
	var out Sites
	seen := map[string]bool{}
	for _, entry := range strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == '\n' }) {
		f := strings.Fields(entry)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("VOUCH_FEDERATE_SITES: %q is not \"NAME URL KEYFILE[,KEYFILE]\"", strings.TrimSpace(entry))
		}
		if err := ValidName(f[0]); err != nil {
			return nil, fmt.Errorf("VOUCH_FEDERATE_SITES: %w", err)
		}
		if seen[f[0]] {
			return nil, fmt.Errorf("VOUCH_FEDERATE_SITES: site %q named twice", f[0])
		}
		seen[f[0]] = true
		if err := checkBaseURL(f[1]); err != nil {
			return nil, fmt.Errorf("VOUCH_FEDERATE_SITES: site %s: %w", f[0], err)
		}
		var keys []string
		for _, k := range strings.Split(f[2], ",") {
			if k != "" {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			return nil, fmt.Errorf("VOUCH_FEDERATE_SITES: site %s has no key file", f[0])
		}
		out = append(out, SiteConfig{Name: f[0], URL: f[1], KeyFiles: keys})
	}
	return out, nil
}

// checkBaseURL: an http(s) URL with a host, no user or query.
func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return fmt.Errorf("base URL %q is not an http(s) URL", s)
	}
	return nil
}

// Metrics of the scheduled pulls: an operator alerts on the age of a
// site's last good pull (a link lost), not on one failure.
type Metrics struct {
	pulls    *prometheus.CounterVec
	keys     *prometheus.CounterVec
	lastGood *prometheus.GaugeVec
}

// NewMetrics registers the pulls' metrics on reg (nil: none kept).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vouch_federate_pulls_total",
			Help: "Scheduled pulls of another site's exports, by site and result (ok, limit, failed)."}, []string{"site", "result"}),
		keys: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vouch_federate_keys_imported_total",
			Help: "Keys new to this store imported from another site."}, []string{"site"}),
		lastGood: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vouch_federate_last_success_timestamp_seconds",
			Help: "When a pull of the site last read its whole index (Unix time)."}, []string{"site"}),
	}
	if reg != nil {
		reg.MustRegister(m.pulls, m.keys, m.lastGood)
	}
	return m
}

// Run pulls every site now and then every interval, each site on its own
// so that one slow or unreachable site delays no other, until ctx ends. A
// pull that stopped at a limit goes on at once; a failed one (the link
// down, the site's origin away) is tried again at the next interval, and
// the files it missed are fetched then: the sites converge once the link
// is back. Every copy of the role may run it: a file two copies import at
// once is imported once (importFile).
func (p *Puller) Run(ctx context.Context, sites []Site, interval time.Duration, m *Metrics, log *slog.Logger) error {
	if len(sites) == 0 {
		return errors.New("federate: no site to pull (VOUCH_FEDERATE_SITES)")
	}
	if interval <= 0 {
		return fmt.Errorf("federate: interval %v is not positive", interval)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	done := make(chan struct{}, len(sites))
	for _, s := range sites {
		go func() {
			defer func() { done <- struct{}{} }()
			p.every(ctx, s, interval, m, log.With("site", s.Name))
		}()
	}
	for range sites {
		<-done
	}
	return ctx.Err()
}

// every pulls s every interval until ctx ends.
func (p *Puller) every(ctx context.Context, s Site, interval time.Duration, m *Metrics, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		for {
			res, err := p.Pull(ctx, s)
			// Keys committed are counted even when the pull was cut short
			// after them (the count and the store must agree).
			m.keys.WithLabelValues(s.Name).Add(float64(res.Keys))
			if ctx.Err() != nil {
				return
			}
			switch {
			case errors.Is(err, ErrLimit):
				m.pulls.WithLabelValues(s.Name, "limit").Inc()
				m.lastGood.WithLabelValues(s.Name).Set(float64(p.now().Unix()))
				log.Info("federate: pull stopped at a limit", "imported", res.Imported, "keys", res.Keys, "left", res.Deferred)
				if res.Imported > 0 {
					continue // the rest now, not an interval later
				}
				// A file larger than a whole pull's limit: pulling again
				// at once would only spin.
			case err != nil:
				m.pulls.WithLabelValues(s.Name, "failed").Inc()
				// One warning when the link goes, not one an interval.
				if !failing || res.Refused > 0 {
					log.Warn("federate: pull failed; trying again every interval", "imported", res.Imported, "refused", res.Refused, "err", err)
				}
				failing = res.Listed == 0
			default:
				m.pulls.WithLabelValues(s.Name, "ok").Inc()
				m.lastGood.WithLabelValues(s.Name).Set(float64(p.now().Unix()))
				if failing || res.Imported > 0 {
					log.Info("federate: pulled", "imported", res.Imported, "keys", res.Keys, "revised", res.Revised)
				}
				failing = false
			}
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
