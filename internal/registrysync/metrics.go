package registrysync

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the sync job.
type Metrics struct {
	runs        *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	entries     *prometheus.GaugeVec
	skipped     prometheus.Counter
	changes     prometheus.Counter
	lastSuccess prometheus.Gauge
	// crlNextUpdate is when each stored CRL stops being usable: past it
	// every card of that issuer is refused (revocation answers no when it
	// cannot know), so an operator is warned while there is time.
	crlNextUpdate *prometheus.GaugeVec
}

// NewMetrics registers the sync job's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vouch_registry_sync_runs_total",
			Help: "Registry sync runs by kind and result."}, []string{"kind", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vouch_registry_sync_duration_seconds",
			Help: "Duration of registry sync runs.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}, []string{"kind"}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vouch_registry_sync_entries",
			Help: "Entries read by the last successful run of each kind."}, []string{"kind"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "vouch_registry_sync_skipped_total",
			Help: "Malformed register entries left out of the mirror."}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{Name: "vouch_registry_license_changes_total",
			Help: "License state changes published to the public tier."}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vouch_registry_sync_last_success_timestamp_seconds",
			Help: "When the mirror was last brought up to date."}),
		crlNextUpdate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vouch_crl_next_update_timestamp_seconds",
			Help: "NextUpdate of each stored CRL, by issuer: past it the issuer's cards are refused."}, []string{"issuer"}),
	}
	reg.MustRegister(m.runs, m.duration, m.entries, m.skipped, m.changes, m.lastSuccess, m.crlNextUpdate)
	return m
}
