package oauth2jwt

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Prometheus metrics, registered into the Caddy context's registry so they
// appear on the admin API's /metrics and under the `metrics` directive.
// The collectors are created once per process and registered on every
// Provision (each config load has its own registry), so values survive
// reloads. Labels are bounded: provider names come from the config, and
// outcomes from the fixed reason codes; never a token, subject or kid.
type metricSet struct {
	requests      *prometheus.CounterVec
	fetches       *prometheus.CounterVec
	keysLoaded    *prometheus.GaugeVec
	lastFetch     *prometheus.GaugeVec
	cacheRequests *prometheus.CounterVec
	cacheEvicted  prometheus.Counter
}

// noProvider labels requests rejected before a provider was selected
// (missing or malformed tokens, unknown issuers).
const noProvider = ""

var (
	metricsOnce sync.Once
	metrics     *metricSet
)

func getMetrics() *metricSet {
	metricsOnce.Do(func() {
		const ns, sub = "caddy", "oauth2_jwt"
		metrics = &metricSet{
			requests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: ns, Subsystem: sub, Name: "requests_total",
				Help: `Requests handled, by provider ("" before a provider is selected) and outcome ("ok" or a reason code).`,
			}, []string{"provider", "outcome"}),
			fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: ns, Subsystem: sub, Name: "key_fetches_total",
				Help: "JWKS fetch attempts, by provider and result (success or error).",
			}, []string{"provider", "result"}),
			keysLoaded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Namespace: ns, Subsystem: sub, Name: "keys_loaded",
				Help: "Usable keys currently loaded, by provider.",
			}, []string{"provider"}),
			lastFetch: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Namespace: ns, Subsystem: sub, Name: "last_successful_fetch_timestamp_seconds",
				Help: "Unix time of the last successful key fetch, by provider.",
			}, []string{"provider"}),
			cacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: ns, Subsystem: sub, Name: "token_cache_requests_total",
				Help: "Verified-token cache look-ups, by result (hit or miss).",
			}, []string{"result"}),
			cacheEvicted: prometheus.NewCounter(prometheus.CounterOpts{
				Namespace: ns, Subsystem: sub, Name: "token_cache_evictions_total",
				Help: "Verified-token cache entries evicted to stay within cache_size.",
			}),
		}
	})
	return metrics
}

// register adds the collectors to a registry, tolerating earlier
// registration of the same collectors.
func (m *metricSet) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.fetches, m.keysLoaded, m.lastFetch, m.cacheRequests, m.cacheEvicted} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// outcomeCounters are the request counters of one provider, resolved once
// so that counting a request is one atomic add.
type outcomeCounters [reasonCount]prometheus.Counter

func (m *metricSet) outcomes(provider string) *outcomeCounters {
	var oc outcomeCounters
	for r := reason(0); r < reasonCount; r++ {
		oc[r] = m.requests.WithLabelValues(provider, reasons[r].code)
	}
	return &oc
}
