package oauth2jwt

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Prometheus metrics, registered into the Caddy context's registry so they
// appear on the admin API's /metrics and under the `metrics` directive.
// The request and cache counters are created once per process and
// registered on every Provision (each config load has its own registry),
// so values survive reloads. The key metrics are collected at scrape time
// from the loaded providers (liveProviders), so a provider removed by a
// reload disappears from them and no fetch is ever counted under no name.
// Labels are bounded: provider names come from the config, and outcomes
// from the fixed reason codes; never a token, subject or kid.
type metricSet struct {
	requests      *prometheus.CounterVec
	cacheRequests *prometheus.CounterVec
	cacheEvicted  prometheus.Counter
	cacheRefused  prometheus.Counter
	keys          keyCollector

	introCalls       *prometheus.CounterVec // provider, result
	introCache       *prometheus.CounterVec // provider, result
	introRateLimited *prometheus.CounterVec // provider

}

// noProvider labels requests rejected before a provider was selected
// (missing or malformed tokens, unknown issuers).
const noProvider = ""

var (
	metricsOnce sync.Once
	metrics     *metricSet
)

const metricsNS, metricsSub = "caddy", "oauth2_jwt"

func getMetrics() *metricSet {
	metricsOnce.Do(func() {
		metrics = &metricSet{
			requests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: metricsNS, Subsystem: metricsSub, Name: "requests_total",
				Help: `Requests handled, by provider ("" before a provider is selected) and outcome ("ok" or a reason code).`,
			}, []string{"provider", "outcome"}),
			cacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: metricsNS, Subsystem: metricsSub, Name: "token_cache_requests_total",
				Help: "Verified-token cache look-ups, by result (hit or miss).",
			}, []string{"result"}),
			cacheEvicted: prometheus.NewCounter(prometheus.CounterOpts{
				Namespace: metricsNS, Subsystem: metricsSub, Name: "token_cache_evictions_total",
				Help: "Verified-token cache entries evicted to stay within cache_size.",
			}),
			cacheRefused: prometheus.NewCounter(prometheus.CounterOpts{
				Namespace: metricsNS, Subsystem: metricsSub, Name: "token_cache_admissions_refused_total",
				Help: "Verified tokens a full verified-token cache did not store, because every entry it could replace was used more often.",
			}),
			keys: newKeyCollector(),
			introCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: metricsNS, Subsystem: metricsSub, Name: "introspection_calls_total",
				Help: "Token introspection calls, by provider and result (active, inactive or error).",
			}, []string{"provider", "result"}),
			introCache: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: metricsNS, Subsystem: metricsSub, Name: "introspection_cache_requests_total",
				Help: "Introspection cache look-ups, by provider and result (hit or miss).",
			}, []string{"provider", "result"}),
			introRateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: metricsNS, Subsystem: metricsSub, Name: "introspection_rate_limited_total",
				Help: "Introspection calls not made because max_rate was reached, by provider.",
			}, []string{"provider"}),
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
	for _, c := range []prometheus.Collector{m.requests, m.cacheRequests, m.cacheEvicted, m.cacheRefused, m.keys, m.introCalls, m.introCache, m.introRateLimited} {
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

// keyCollector reports the key state of every loaded provider when
// scraped.
type keyCollector struct {
	fetches, keysLoaded, lastFetch, fromStorage, storeWrites *prometheus.Desc
}

func newKeyCollector() keyCollector {
	name := func(n string) string { return prometheus.BuildFQName(metricsNS, metricsSub, n) }
	return keyCollector{
		fetches: prometheus.NewDesc(name("key_fetches_total"),
			"JWKS fetch attempts of the key source a provider uses, by provider and result (success or error).", []string{"provider", "result"}, nil),
		keysLoaded: prometheus.NewDesc(name("keys_loaded"),
			"Usable keys currently loaded, by provider.", []string{"provider"}, nil),
		lastFetch: prometheus.NewDesc(name("last_successful_fetch_timestamp_seconds"),
			"Unix time of the last successful key fetch, by provider (for keys loaded from storage, the time they were fetched).", []string{"provider"}, nil),
		fromStorage: prometheus.NewDesc(name("keys_from_storage"),
			"1 when a provider's current keys were loaded from Caddy's storage (an earlier fetch, before a restart or by another node), 0 when fetched by this Caddy.", []string{"provider"}, nil),
		storeWrites: prometheus.NewDesc(name("key_storage_writes_total"),
			"Writes of a provider's keys to Caddy's storage, by result (success or error).", []string{"provider", "result"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (k keyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- k.fetches
	ch <- k.keysLoaded
	ch <- k.lastFetch
	ch <- k.fromStorage
	ch <- k.storeWrites
}

// Collect implements prometheus.Collector. A name listed twice (during a
// reload that changes a provider's issuer or key source) is reported once,
// from its first record.
func (k keyCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	for _, lp := range loadedProviders() {
		if seen[lp.name] {
			continue
		}
		seen[lp.name] = true
		if lp.cache == nil {
			if sk, ok := lp.keys.(staticKeys); ok {
				ch <- prometheus.MustNewConstMetric(k.keysLoaded, prometheus.GaugeValue, float64(len(sk.set.all)), lp.name)
			}
			continue
		}
		st := lp.cache.status()
		ch <- prometheus.MustNewConstMetric(k.fetches, prometheus.CounterValue, float64(st.successes), lp.name, "success")
		ch <- prometheus.MustNewConstMetric(k.fetches, prometheus.CounterValue, float64(st.errors), lp.name, "error")
		if st.keys != nil {
			ch <- prometheus.MustNewConstMetric(k.keysLoaded, prometheus.GaugeValue, float64(len(st.keys.all)), lp.name)
			ch <- prometheus.MustNewConstMetric(k.lastFetch, prometheus.GaugeValue, float64(st.keys.fetchedAt.Unix()), lp.name)
			fromStorage := 0.0
			if st.origin == originStorage {
				fromStorage = 1
			}
			ch <- prometheus.MustNewConstMetric(k.fromStorage, prometheus.GaugeValue, fromStorage, lp.name)
		}
		if st.stored.enabled {
			ch <- prometheus.MustNewConstMetric(k.storeWrites, prometheus.CounterValue, float64(st.stored.writes), lp.name, "success")
			ch <- prometheus.MustNewConstMetric(k.storeWrites, prometheus.CounterValue, float64(st.stored.errors), lp.name, "error")
		}
	}
}
