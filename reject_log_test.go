package oauth2jwt

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestRejectionLogLine: every rejection logs one debug line with a
// non-empty detail and the request's method, host and path (never its
// query), so it can be matched with the access log line; a bad audience
// names the token's aud values and the accepted ones.
func TestRejectionLogLine(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	other := newTestKey(t, "k2", jose.ES256, 0)
	forger := newTestKey(t, "k1", jose.ES256, 0) // the right kid, another key
	idp := newTestIdP(t, k)
	h := provisionHandler(t, &Handler{
		Providers: map[string]*Provider{"idp": {Issuer: idp.url(), Audiences: []string{"orders-api", "api://orders"}, JWKSURI: idp.url() + "/jwks"}},
		Require:   []Requirement{{Scopes: []string{"orders.read"}}},
	})
	waitForKeys(t, h)
	core, logs := observer.New(zapcore.DebugLevel)
	h.obs.logger = zap.New(core)

	good := func(mods map[string]any) string {
		c := claimsFor(idp.url(), "orders-api")
		c["scope"] = "orders.read"
		for name, v := range mods {
			if v == nil {
				delete(c, name)
			} else {
				c[name] = v
			}
		}
		return k.sign(t, c, nil)
	}
	cases := []struct {
		name, token, reason, detail string
	}{
		{"missing", "", "missing_token", "missing bearer token"},
		{"bad audience", good(map[string]any{"aud": []string{"https://other.example/", "userinfo"}}), "bad_audience",
			`aud ["https://other.example/" "userinfo"] holds none of the accepted audiences ["orders-api" "api://orders"]`},
		{"unknown issuer", good(map[string]any{"iss": "https://evil.example/"}), "unknown_issuer", `iss "https://evil.example/" is not the issuer of any provider`},
		{"expired", good(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), "expired", "beyond the leeway of 1m0s"},
		{"unknown kid", other.sign(t, claimsFor(idp.url(), "orders-api"), nil), "unknown_key", `the token's kid is none of the provider's kids ["k1"]`},
		{"bad signature", forger.sign(t, claimsFor(idp.url(), "orders-api"), nil), "bad_signature", "token signature invalid"},
		{"forbidden", good(map[string]any{"scope": "orders.write"}), "forbidden", "a require rule failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs.TakeAll()
			req := httptest.NewRequest(http.MethodPost, "http://api.example.test/orders/7?access_token=secret", nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			res := serve(t, h, req)
			if res.status == http.StatusOK {
				t.Fatalf("accepted")
			}
			entries := logs.FilterMessage("bearer token rejected").All()
			if len(entries) != 1 {
				t.Fatalf("got %d rejection log lines, want 1", len(entries))
			}
			f := entries[0].ContextMap()
			if f["reason"] != tc.reason {
				t.Errorf("reason = %v, want %s", f["reason"], tc.reason)
			}
			detail, _ := f["detail"].(string)
			if detail == "" || !strings.Contains(detail, tc.detail) {
				t.Errorf("detail = %q, want it to contain %q", detail, tc.detail)
			}
			if f["method"] != "POST" || f["host"] != "api.example.test" || f["path"] != "/orders/7" {
				t.Errorf("method/host/path = %v %v %v", f["method"], f["host"], f["path"])
			}
			for _, v := range f {
				if s, ok := v.(string); ok && (strings.Contains(s, "secret") || (tc.token != "" && strings.Contains(s, tc.token[:20]))) {
					t.Errorf("log field carries the query or the token: %q", s)
				}
			}
		})
	}
}

// TestFetchLogNamesProviders: the "JWKS fetched" line names every provider
// that uses the key cache.
func TestFetchLogNamesProviders(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	core, logs := observer.New(zapcore.InfoLevel)
	h := &Handler{Providers: map[string]*Provider{
		"v2": {Issuer: idp.url() + "/v2.0", Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
		"v1": {Issuer: idp.url() + "/", Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
	}}
	h.deps.log = zap.New(core)
	provisionHandler(t, h)
	c := cacheOf(t, h, idp.url()+"/v2.0")
	if err := c.awaitFirstFetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The first fetch starts while the first provider record is being
	// made: it names at least that one, and never nobody.
	entries := logs.FilterMessage("JWKS fetched").All()
	if len(entries) != 1 {
		t.Fatalf("got %d fetch log lines, want 1", len(entries))
	}
	if first, _ := entries[0].ContextMap()["providers"].([]any); len(first) == 0 {
		t.Fatalf("the first fetch's log line names no provider")
	}
	logs.TakeAll()
	refreshNow(c)
	entries = logs.FilterMessage("JWKS fetched").All()
	if len(entries) != 1 {
		t.Fatalf("got %d fetch log lines, want 1", len(entries))
	}
	got, _ := entries[0].ContextMap()["providers"].([]any)
	if len(got) != 2 || got[0] != "v1" || got[1] != "v2" {
		t.Fatalf("providers = %v, want [v1 v2]", entries[0].ContextMap()["providers"])
	}
}
