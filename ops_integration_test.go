package oauth2jwt

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Integration tests for authorization rules, forwarding, token sources,
// metrics and the admin API, through the real in-process Caddy that
// integration_test.go sets up (same ports, not parallel).

const adminBase = "http://localhost:2999"

func providerBlock(name string, idp *testIdP, extra string) string {
	return "\t\tprovider " + name + " {\n\t\t\tissuer " + idp.url() + "\n\t\t\taudience api\n\t\t\tjwks_uri " + idp.url() + "/jwks\n" + extra + "\t\t}\n"
}

func TestIntegrationRules(t *testing.T) {
	f := newAuthzFixture(t)
	cfg := integrationGlobals + `http://localhost:9080 {
	oauth2_jwt {
` + providerBlock("idp", f.idp, "") + `		require scope orders:read
		require claim realm_access.roles admin ops
		require any {
			scope orders:admin
			claim tier gold
		}
	}
	respond "ok"
}
`
	tc := newIntegrationTester(t, cfg, "caddyfile")
	roles := map[string]any{"roles": []string{"user", "ops"}}
	// Once one token passes, the keys are loaded: every case below is
	// answered on the first call.
	waitForStatus(t, tc, "/", f.token(t, map[string]any{"scope": "orders:read", "realm_access": roles, "tier": "gold"}), 200, 5*time.Second)
	cases := []struct {
		name   string
		claims map[string]any
		status int
	}{
		{"scope string, nested role, tier", map[string]any{"scope": "orders:read", "realm_access": roles, "tier": "gold"}, 200},
		{"scp string, any via scope", map[string]any{"scp": "orders:read orders:admin", "realm_access": roles}, 200},
		{"scp array", map[string]any{"scp": []string{"orders:read", "orders:admin"}, "realm_access": roles}, 200},
		{"missing scope", map[string]any{"realm_access": roles, "tier": "gold"}, 403},
		{"role not in nested array", map[string]any{"scope": "orders:read", "realm_access": map[string]any{"roles": []string{"user"}}, "tier": "gold"}, 403},
		{"no member of the any group", map[string]any{"scope": "orders:read", "realm_access": roles, "tier": "silver"}, 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := call(t, tc, "/", f.token(t, c.claims))
			if res.status != c.status {
				t.Fatalf("status = %d, want %d (body %q)", res.status, c.status, res.body)
			}
			if c.status == 403 {
				want := `Bearer error="insufficient_scope", error_description="token lacks the required scope or claims", scope="orders:read orders:admin"`
				if got := res.header.Get("WWW-Authenticate"); got != want {
					t.Fatalf("WWW-Authenticate = %s\nwant %s", got, want)
				}
			}
		})
	}
}

func TestIntegrationForwardingAndSources(t *testing.T) {
	f := newAuthzFixture(t)
	cfg := integrationGlobals + `http://localhost:9080 {
	oauth2_jwt {
` + providerBlock("idp", f.idp, "") + `		public_paths /public
		forward_claim sub X-User-Id
		forward_claims_json X-Claims
		strip_authorization
		token_source header Authorization Bearer
		token_source cookie at
		token_source query access_token
	}
	respond "uid={http.request.header.X-User-Id} claims={http.request.header.X-Claims} auth={http.request.header.Authorization} uri={http.request.uri}"
}
`
	tc := newIntegrationTester(t, cfg, "caddyfile")
	tok := f.token(t, nil)
	waitForStatus(t, tc, "/", tok, 200, 5*time.Second)

	res := call(t, tc, "/", tok, "X-User-Id: admin", "X-Claims: e30")
	if !strings.HasPrefix(res.body, "uid=user-42 claims=ey") || !strings.Contains(res.body, "auth= ") {
		t.Errorf("forwarded: %q", res.body)
	}
	res = call(t, tc, "/public", "", "X-User-Id: admin", "X-Claims: e30", "Authorization: Bearer abc")
	if res.status != 200 || res.body != "uid= claims= auth= uri=/public" {
		t.Errorf("public path passed on spoofed headers: %d %q", res.status, res.body)
	}
	res = call(t, tc, "/", "", "Cookie: at="+tok)
	if res.status != 200 || !strings.HasPrefix(res.body, "uid=user-42") {
		t.Errorf("cookie source: %d %q", res.status, res.body)
	}
	res = call(t, tc, "/path?x=1&access_token="+tok+"&y=2", "")
	if res.status != 200 || !strings.HasSuffix(res.body, "uri=/path?x=1&y=2") {
		t.Errorf("query source: %d %q", res.status, res.body)
	}
	res = call(t, tc, "/?access_token="+tok+"&access_token="+tok, "")
	if res.status != 400 {
		t.Errorf("two query tokens: %d, want 400", res.status)
	}
	res = call(t, tc, "/", "", "Cookie: at="+tok+"; at="+tok)
	if res.status != 400 {
		t.Errorf("two cookies: %d, want 400", res.status)
	}
}

func TestIntegrationAllowMissing(t *testing.T) {
	f := newAuthzFixture(t)
	cfg := integrationGlobals + `http://localhost:9080 {
	oauth2_jwt {
` + providerBlock("idp", f.idp, "") + `		allow_missing
	}
	respond "user=[{http.auth.user.id}]"
}
`
	tc := newIntegrationTester(t, cfg, "caddyfile")
	waitForStatus(t, tc, "/", f.token(t, nil), 200, 5*time.Second)
	if res := call(t, tc, "/", ""); res.status != 200 || res.body != "user=[]" {
		t.Errorf("no token: %d %q", res.status, res.body)
	}
	if res := call(t, tc, "/", "not.a.token"); res.status != 401 {
		t.Errorf("bad token: %d, want 401", res.status)
	}
}

// TestIntegrationTwoRoutesShareKeys is the README's example: two routes
// with different rules share one key cache, so one JWKS fetch.
func TestIntegrationTwoRoutesShareKeys(t *testing.T) {
	f := newAuthzFixture(t)
	cfg := integrationGlobals + `http://localhost:9080 {
	@admin path /admin/*
	handle @admin {
		oauth2_jwt {
` + providerBlock("idp", f.idp, "") + `			require claim roles admin
		}
		respond "admin area"
	}
	handle {
		oauth2_jwt {
` + providerBlock("idp", f.idp, "") + `			require scope api:read
		}
		respond "api"
	}
}
`
	tc := newIntegrationTester(t, cfg, "caddyfile")
	admin := f.token(t, map[string]any{"roles": []string{"admin"}})
	reader := f.token(t, map[string]any{"scope": "api:read"})
	waitForStatus(t, tc, "/admin/x", admin, 200, 5*time.Second)
	if res := call(t, tc, "/admin/x", reader); res.status != 403 {
		t.Errorf("reader on /admin: %d, want 403", res.status)
	}
	if res := call(t, tc, "/orders", reader); res.status != 200 || res.body != "api" {
		t.Errorf("reader on /orders: %d %q", res.status, res.body)
	}
	if res := call(t, tc, "/orders", admin); res.status != 403 {
		t.Errorf("admin without api:read on /orders: %d, want 403", res.status)
	}
	if n := f.idp.jwksHits.Load(); n != 1 {
		t.Errorf("two routes caused %d JWKS fetches, want 1", n)
	}
}

// TestIntegrationExpressionMatcher is the README's example of routing on a
// claim with Caddy's expression matcher.
func TestIntegrationExpressionMatcher(t *testing.T) {
	f := newAuthzFixture(t)
	cfg := integrationGlobals + `http://localhost:9080 {
	oauth2_jwt {
` + providerBlock("idp", f.idp, "") + `	}
	@admins expression ` + "`{http.auth.jwt.claims.role} == \"admin\"`" + `
	respond @admins "hello admin"
	respond "hello user"
}
`
	tc := newIntegrationTester(t, cfg, "caddyfile")
	waitForStatus(t, tc, "/", f.token(t, nil), 200, 5*time.Second)
	if res := call(t, tc, "/", f.token(t, map[string]any{"role": "admin"})); res.body != "hello admin" {
		t.Errorf("admin: %q", res.body)
	}
	if res := call(t, tc, "/", f.token(t, map[string]any{"role": "user"})); res.body != "hello user" {
		t.Errorf("user: %q", res.body)
	}
}

// scrape returns the value of one metric sample from the admin endpoint,
// or -1 when it is absent.
func scrape(t *testing.T, metric string) float64 {
	t.Helper()
	resp, err := http.Get(adminBase + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, metric+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, metric)), 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return -1
}

func TestIntegrationMetrics(t *testing.T) {
	f := newAuthzFixture(t)
	// One entry: a second token cannot displace the first one, in use.
	cfg := integrationGlobals + `http://localhost:9080 {
	oauth2_jwt {
` + providerBlock("metricsidp", f.idp, "") + `		cache_size 1
	}
	respond "ok"
}
`
	tc := newIntegrationTester(t, cfg, "caddyfile")
	valid := f.token(t, nil)
	waitForStatus(t, tc, "/", valid, 200, 5*time.Second)
	okBefore := scrape(t, `caddy_oauth2_jwt_requests_total{outcome="ok",provider="metricsidp"}`)
	expiredBefore := scrape(t, `caddy_oauth2_jwt_requests_total{outcome="expired",provider="metricsidp"}`)
	missingBefore := max(scrape(t, `caddy_oauth2_jwt_requests_total{outcome="missing_token",provider=""}`), 0)
	hitsBefore := max(scrape(t, `caddy_oauth2_jwt_token_cache_requests_total{result="hit"}`), 0)
	refusedBefore := scrape(t, `caddy_oauth2_jwt_token_cache_admissions_refused_total`)
	evictedBefore := scrape(t, `caddy_oauth2_jwt_token_cache_evictions_total`)
	if refusedBefore < 0 || evictedBefore < 0 {
		t.Fatalf("token cache counters not exported: refused %v, evicted %v", refusedBefore, evictedBefore)
	}

	expired := f.token(t, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})
	for range 3 {
		call(t, tc, "/", valid)
	}
	call(t, tc, "/", expired)
	call(t, tc, "/", expired)
	call(t, tc, "/", "")
	// Another valid token, used once: accepted, not stored.
	if res := call(t, tc, "/", f.token(t, map[string]any{"jti": "other"})); res.status != 200 {
		t.Fatalf("another valid token: status %d", res.status)
	}

	checks := []struct {
		metric string
		want   float64
	}{
		{`caddy_oauth2_jwt_requests_total{outcome="ok",provider="metricsidp"}`, okBefore + 4},
		{`caddy_oauth2_jwt_requests_total{outcome="expired",provider="metricsidp"}`, max(expiredBefore, 0) + 2},
		{`caddy_oauth2_jwt_requests_total{outcome="missing_token",provider=""}`, missingBefore + 1},
		{`caddy_oauth2_jwt_token_cache_requests_total{result="hit"}`, hitsBefore + 3},
		{`caddy_oauth2_jwt_token_cache_admissions_refused_total`, refusedBefore + 1},
		{`caddy_oauth2_jwt_token_cache_evictions_total`, evictedBefore},
		{`caddy_oauth2_jwt_keys_loaded{provider="metricsidp"}`, 1},
		// Every fetch the IdP saw, the first one included, is counted.
		{`caddy_oauth2_jwt_key_fetches_total{provider="metricsidp",result="success"}`, float64(f.idp.jwksHits.Load())},
	}
	for _, c := range checks {
		if got := scrape(t, c.metric); got != c.want {
			t.Errorf("%s = %v, want %v", c.metric, got, c.want)
		}
	}
	if ts := scrape(t, `caddy_oauth2_jwt_last_successful_fetch_timestamp_seconds{provider="metricsidp"}`); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last fetch timestamp = %v", ts)
	}
}

func adminDo(t *testing.T, method, path string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, adminBase+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", adminBase)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	return resp.StatusCode, resp.Header, m
}

// TestIntegrationAdminAPI: the providers list, forced refreshes (rate
// limited by min_refresh_interval: adminidp's is an hour, so a refresh is
// refused; fastidp's is a nanosecond, so one is always past it), and
// readiness.
func TestIntegrationAdminAPI(t *testing.T) {
	f := newAuthzFixture(t)
	up := f.idp
	fast := newTestIdP(t, f.key)
	down := newTestIdP(t, f.key)
	down.setStatus(http.StatusInternalServerError)
	cfg := integrationGlobals + `http://localhost:9080 {
	oauth2_jwt {
` + providerBlock("adminidp", up, "\t\t\tmin_refresh_interval 1h\n") + providerBlock("fastidp", fast, "\t\t\tmin_refresh_interval 1ns\n") + `	}
	respond "ok"
}
`
	tc := newIntegrationTester(t, cfg, "caddyfile")
	waitForStatus(t, tc, "/", f.token(t, nil), 200, 5*time.Second)
	fastTok := f.key.sign(t, claimsFor(fast.url(), "api"), nil)
	waitForStatus(t, tc, "/", fastTok, 200, 5*time.Second)

	status, _, body := adminDo(t, http.MethodGet, "/oauth2_jwt/providers")
	if status != 200 {
		t.Fatalf("GET providers: %d", status)
	}
	provs, _ := body["providers"].([]any)
	var found map[string]any
	for _, p := range provs {
		if m, _ := p.(map[string]any); m["name"] == "adminidp" {
			found = m
		}
	}
	if found == nil {
		t.Fatalf("provider not listed: %v", body)
	}
	keys, _ := found["keys"].([]any)
	if found["issuer"] != up.url() || found["ready"] != true || len(keys) != 1 || found["last_result"] != "success" {
		t.Fatalf("provider status = %v", found)
	}
	if kid := keys[0].(map[string]any)["kid"]; kid != f.key.kid {
		t.Fatalf("kid = %v", kid)
	}

	// A forced refresh within min_refresh_interval of the last fetch is
	// rate limited, and fetches nothing.
	before := up.jwksHits.Load()
	status, hdr, _ := adminDo(t, http.MethodPost, "/oauth2_jwt/providers/adminidp/refresh")
	if ra, err := strconv.Atoi(hdr.Get("Retry-After")); status != http.StatusTooManyRequests || err != nil || ra < 1 || ra > 3600 {
		t.Fatalf("refresh under the rate limit: %d (Retry-After %q), want 429 with 1 to 3600 seconds", status, hdr.Get("Retry-After"))
	}
	if n := up.jwksHits.Load() - before; n != 0 {
		t.Fatalf("a rate-limited refresh fetched the JWKS %d times", n)
	}
	// Past min_refresh_interval, a forced refresh fetches once.
	before = fast.jwksHits.Load()
	status, _, _ = adminDo(t, http.MethodPost, "/oauth2_jwt/providers/fastidp/refresh")
	if status != 200 || fast.jwksHits.Load() != before+1 {
		t.Fatalf("forced refresh: %d, %d fetches", status, fast.jwksHits.Load()-before)
	}
	if status, _, _ := adminDo(t, http.MethodPost, "/oauth2_jwt/providers/nosuch/refresh"); status != 404 {
		t.Errorf("unknown provider refresh: %d, want 404", status)
	}

	status, _, body = adminDo(t, http.MethodGet, "/oauth2_jwt/ready")
	if status != 200 || body["ready"] != true {
		t.Fatalf("ready: %d %v", status, body)
	}

	// A provider without keys makes readiness fail and names it.
	cfg2 := integrationGlobals + `http://localhost:9080 {
	oauth2_jwt {
` + providerBlock("adminidp", up, "") + providerBlock("downidp", down, "") + `	}
	respond "ok"
}
`
	newIntegrationTester(t, cfg2, "caddyfile")
	status, _, body = adminDo(t, http.MethodGet, "/oauth2_jwt/ready")
	notReady, _ := body["not_ready"].([]any)
	if status != http.StatusServiceUnavailable || len(notReady) != 1 || notReady[0] != "downidp" {
		t.Fatalf("ready with a down provider: %d %v", status, body)
	}
}

// TestIntegrationAccessLogUserID: Caddy's access log shows the token's
// subject as user_id.
func TestIntegrationAccessLogUserID(t *testing.T) {
	f := newAuthzFixture(t)
	logFile := t.TempDir() + "/access.log"
	cfg := integrationGlobals + `http://localhost:9080 {
	log {
		output file ` + logFile + `
		format json
	}
	oauth2_jwt {
` + providerBlock("idp", f.idp, "") + `	}
	respond "ok"
}
`
	tc := newIntegrationTester(t, cfg, "caddyfile")
	waitForStatus(t, tc, "/", f.token(t, map[string]any{"sub": "alice@example"}), 200, 5*time.Second)
	var found bool
	waitUntil(t, 5*time.Second, "access log line with user_id", func() bool {
		data, err := os.ReadFile(logFile)
		if err != nil {
			return false
		}
		for _, line := range strings.Split(string(data), "\n") {
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) == nil && entry["user_id"] == "alice@example" && entry["status"] == float64(200) {
				found = true
			}
		}
		return found
	})
}
