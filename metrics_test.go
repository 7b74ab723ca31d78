package oauth2jwt

import (
	"context"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// keySeries returns the samples of the key metrics for provider, by
// metric name (with the result label for key_fetches_total).
func keySeries(t *testing.T, reg *prometheus.Registry, provider string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			name := f.GetName()
			if labels["provider"] != provider || name == "caddy_oauth2_jwt_requests_total" {
				continue
			}
			if r, ok := labels["result"]; ok {
				name += "/" + r
			}
			out[name] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

// TestKeyMetricsFollowLoadedProviders: the key metrics are read from the
// loaded providers at scrape time, so the first fetch is counted under the
// provider's name (it once started before the name was attached and was
// lost), and a provider no loaded config names any more has no series
// (its gauges were once exported for the rest of the process).
func TestKeyMetricsFollowLoadedProviders(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := getMetrics().register(reg); err != nil {
		t.Fatal(err)
	}
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
		"metrics-first": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
	}})
	if err := cacheOf(t, h, idp.url()).awaitFirstFetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := keySeries(t, reg, "metrics-first")
	if got["caddy_oauth2_jwt_key_fetches_total/success"] != 1 || got["caddy_oauth2_jwt_key_fetches_total/error"] != 0 {
		t.Fatalf("fetch counts after the first fetch: %v", got)
	}
	if got["caddy_oauth2_jwt_keys_loaded"] != 1 || got["caddy_oauth2_jwt_last_successful_fetch_timestamp_seconds"] == 0 {
		t.Fatalf("key gauges after the first fetch: %v", got)
	}

	idp.setStatus(500)
	refreshNow(cacheOf(t, h, idp.url()))
	if got := keySeries(t, reg, "metrics-first"); got["caddy_oauth2_jwt_key_fetches_total/error"] != 1 || got["caddy_oauth2_jwt_keys_loaded"] != 1 {
		t.Fatalf("after a failed refresh: %v", got)
	}

	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if got := keySeries(t, reg, "metrics-first"); len(got) != 0 {
		t.Fatalf("series of a provider no config loads: %v", got)
	}
}
