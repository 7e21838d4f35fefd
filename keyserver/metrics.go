package keyserver

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics, registered on the
// registerer passed to New. Labels never carry account IDs, handles or keys.
type metrics struct {
	requests      *prometheus.CounterVec   // route, code
	duration      *prometheus.HistogramVec // route
	claims        *prometheus.CounterVec   // kind: ec, kem, last_resort
	rateLimited   *prometheus.CounterVec   // limiter
	authFailures  *prometheus.CounterVec   // reason
	purgeFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sotto", Subsystem: "keyserver", Name: "http_requests_total",
			Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "sotto", Subsystem: "keyserver", Name: "http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"route"}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sotto", Subsystem: "keyserver", Name: "prekey_claims_total",
			Help: "Prekeys handed out in bundles: one-time EC, one-time KEM, or the last-resort KEM key.",
		}, []string{"kind"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sotto", Subsystem: "keyserver", Name: "rate_limited_total",
			Help: "Requests refused with 429, by limiter.",
		}, []string{"limiter"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sotto", Subsystem: "keyserver", Name: "auth_failures_total",
			Help: "Refused tokens and logins, by reason.",
		}, []string{"reason"}),
		purgeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sotto", Subsystem: "keyserver", Name: "purge_failures_total",
			Help: "Failed calls to the relay purger after a deletion.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.claims, m.rateLimited, m.authFailures, m.purgeFailures} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
