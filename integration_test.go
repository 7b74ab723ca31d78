package oauth2jwt

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard" // respond, handle_errors, ... in the test binary
	jose "github.com/go-jose/go-jose/v4"
)

// Integration tests: a real Caddy runs in this process (started by
// caddytest on first use, admin API on localhost:2999), the module is
// loaded from a Caddyfile or from JSON through the admin API, and real
// HTTP requests go to 127.0.0.1:9080. These tests share that one Caddy, so
// none of them is parallel.

// integrationGlobals are the global options every test Caddyfile starts with.
const integrationGlobals = `{
	skip_install_trust
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	default_bind 127.0.0.1
}
`

// integrationBase is where the test Caddy serves its sites.
const integrationBase = "http://localhost:9080"

// handleErrorsExample is the README's example of shaping rejections with
// handle_errors: every failure answers a JSON body carrying the reason code,
// with the status chosen by the module. The README quotes it verbatim; the
// issuer comes from the environment when the Caddyfile is parsed.
const handleErrorsExample = `http://localhost:9080 {
	oauth2_jwt {
		provider main {
			issuer {$OIDC_ISSUER}
			audience my-api
		}
	}
	respond "Hello, {http.auth.user.id}"

	handle_errors {
		respond ` + "`" + `{"error":"{http.auth.jwt.error}"}` + "`" + ` {err.status_code}
	}
}
`

// echoBody is a respond body echoing the module's placeholders, one per
// line, so a test can compare each.
const echoBody = `user={http.auth.user.id}
provider={http.auth.jwt.provider}
name={http.auth.jwt.claims.name}
exp={http.auth.jwt.claims.exp}
admin={http.auth.jwt.claims.admin}
groups={http.auth.jwt.claims.groups}
roles={http.auth.jwt.claims.realm_access.roles}
realm_access={http.auth.jwt.claims.realm_access}
namespaced={http.auth.jwt.claims.https://example.com/roles}
absent={http.auth.jwt.claims.absent}
error={http.auth.jwt.error}
claims_json={http.auth.jwt.claims_json}`

// newIntegrationTester returns a caddytest tester whose Caddy runs config
// (a Caddyfile, or JSON when configType is "json"); the test fails when the
// config is not loaded.
func newIntegrationTester(t *testing.T, config, configType string) *caddytest.Tester {
	t.Helper()
	// Caddy restarts its admin server after each load; a POST on a kept-alive
	// connection to the previous one would fail with EOF (caddytest's /load
	// client uses the default transport).
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	tc := caddytest.NewTester(t)
	tc.InitServer(config, configType)
	if t.Failed() {
		t.FailNow()
	}
	return tc
}

// response is what one real HTTP request got.
type response struct {
	status int
	header http.Header
	body   string
}

// call sends a GET to path on the test Caddy with a bearer token (none when
// token is empty) and extra "Name: value" headers.
func call(t *testing.T, tc *caddytest.Tester, path, token string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, integrationBase+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Add(name, strings.TrimSpace(value))
	}
	resp, err := tc.Client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// waitForStatus sends the request until it answers want (polling: the first
// key fetch runs in the background) and returns that response; it fails the
// test after timeout.
func waitForStatus(t *testing.T, tc *caddytest.Tester, path, token string, want int, timeout time.Duration) response {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		res := call(t, tc, path, token)
		if res.status == want {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: still %d after %s, want %d (WWW-Authenticate %q, body %q)",
				path, res.status, timeout, want, res.header.Get("WWW-Authenticate"), res.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// echoClaims returns the claims of the placeholder test token: one claim of
// each kind the placeholders format.
func echoClaims(iss, aud string) map[string]any {
	c := claimsFor(iss, aud)
	c["name"] = "Alice Example"
	c["admin"] = true
	c["groups"] = []string{"eng", "ops"}
	c["realm_access"] = map[string]any{"roles": []string{"reader", "writer"}}
	c["https://example.com/roles"] = []string{"billing", "support"}
	return c
}

// parseEcho splits an echoBody response into name -> value.
func parseEcho(t *testing.T, body string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for line := range strings.SplitSeq(body, "\n") {
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unexpected line %q in body %q", line, body)
		}
		out[name] = value
	}
	return out
}

// sameJSON reports whether a and b hold the same JSON value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("not JSON: %q: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("not JSON: %q: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

// echoCaddyfile is a Caddyfile protecting everything but /public with one
// provider using idp's JWKS, answering echoBody.
func echoCaddyfile(idp *testIdP, options string) string {
	return integrationGlobals + fmt.Sprintf(`
http://localhost:9080 {
	oauth2_jwt {
		provider test {
			issuer %s
			audience api
			jwks_uri %s/jwks
		}
		public_paths /public /public/*
%s	}
	respond `+"`"+echoBody+"`"+`
}
`, idp.url(), idp.url(), options)
}

// echoJSON is echoCaddyfile's configuration written as JSON, as a user of
// `caddy run --config x.json` or of the admin API writes it.
func echoJSON(t *testing.T, idp *testIdP) string {
	t.Helper()
	cfg := map[string]any{
		"admin": map[string]any{"listen": "localhost:2999"},
		"apps": map[string]any{
			"http": map[string]any{
				"http_port":    9080,
				"https_port":   9443,
				"grace_period": 1,
				"servers": map[string]any{
					"api": map[string]any{
						"listen": []string{"127.0.0.1:9080"},
						"routes": []any{map[string]any{
							"handle": []any{
								map[string]any{
									"handler": "oauth2_jwt",
									"providers": map[string]any{
										"test": map[string]any{
											"issuer":    idp.url(),
											"audiences": []string{"api"},
											"jwks_uri":  idp.url() + "/jwks",
										},
									},
									"public_paths": []string{"/public", "/public/*"},
								},
								map[string]any{"handler": "static_response", "body": echoBody},
							},
						}},
						"automatic_https": map[string]any{"disable": true},
					},
				},
			},
			"pki": map[string]any{"certificate_authorities": map[string]any{
				"local": map[string]any{"install_trust": false},
			}},
		},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestIntegrationModule runs a real Caddy with the module loaded from a
// Caddyfile and, separately, from JSON, and checks what clients see: the
// public path, a missing token, bad tokens, and a valid token whose claims
// later handlers read through placeholders.
func TestIntegrationModule(t *testing.T) {
	configs := []struct {
		name       string
		configType string
		config     func(t *testing.T, idp *testIdP) string
	}{
		{"caddyfile", "caddyfile", func(t *testing.T, idp *testIdP) string { return echoCaddyfile(idp, "") }},
		{"json", "json", echoJSON},
	}
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			key := newTestKey(t, "k1", jose.RS256, 0)
			idp := newTestIdP(t, key)
			tc := newIntegrationTester(t, cfg.config(t, idp), cfg.configType)

			claims := echoClaims(idp.url(), "api")
			valid := key.sign(t, claims, nil)
			// Keys arrive in the background after the config is loaded.
			ok := waitForStatus(t, tc, "/api", valid, http.StatusOK, 10*time.Second)

			t.Run("valid token: placeholders echoed by respond", func(t *testing.T) {
				got := parseEcho(t, ok.body)
				want := map[string]string{
					"user":         "user-42",
					"provider":     "test",
					"name":         "Alice Example",
					"exp":          strconv.FormatInt(claims["exp"].(int64), 10),
					"admin":        "true",
					"groups":       "eng,ops",
					"roles":        "reader,writer",
					"realm_access": `{"roles":["reader","writer"]}`,
					"namespaced":   "billing,support",
					"absent":       "",
					"error":        "",
				}
				for name, w := range want {
					if got[name] != w {
						t.Errorf("%s = %q, want %q", name, got[name], w)
					}
				}
				wantJSON, err := json.Marshal(claims)
				if err != nil {
					t.Fatal(err)
				}
				if !sameJSON(t, []byte(got["claims_json"]), wantJSON) {
					t.Errorf("claims_json = %s, want the token's payload %s", got["claims_json"], wantJSON)
				}
			})

			t.Run("public path: placeholders render empty", func(t *testing.T) {
				for _, path := range []string{"/public", "/public/status"} {
					res := call(t, tc, path, "")
					if res.status != http.StatusOK {
						t.Fatalf("GET %s without token: status %d, want 200", path, res.status)
					}
					if strings.Contains(res.body, "{") {
						t.Errorf("GET %s: a placeholder rendered as its literal text: %q", path, res.body)
					}
					for name, value := range parseEcho(t, res.body) {
						if value != "" {
							t.Errorf("GET %s: %s = %q, want empty", path, name, value)
						}
					}
				}
			})

			t.Run("public path with a valid token: not authenticated", func(t *testing.T) {
				res := call(t, tc, "/public", valid)
				if res.status != http.StatusOK {
					t.Fatalf("status %d, want 200", res.status)
				}
				if got := parseEcho(t, res.body)["user"]; got != "" {
					t.Errorf("user = %q on a public path, want empty", got)
				}
			})

			other := newTestKey(t, "k1", jose.RS256, 1) // same kid, other key
			expired := claimsFor(idp.url(), "api")
			expired["exp"] = time.Now().Add(-time.Hour).Unix()
			expired["iat"] = time.Now().Add(-2 * time.Hour).Unix()
			expired["nbf"] = time.Now().Add(-2 * time.Hour).Unix()
			rejections := []struct {
				name      string
				token     string
				headers   []string
				status    int
				challenge string
			}{
				{
					name:      "no token",
					status:    http.StatusBadRequest,
					challenge: `Bearer error="invalid_request", error_description="missing bearer token"`,
				},
				{
					name:      "another scheme",
					headers:   []string{"Authorization: Basic dXNlcjpwYXNz"},
					status:    http.StatusBadRequest,
					challenge: `Bearer error="invalid_request", error_description="missing bearer token"`,
				},
				{
					name:      "two Authorization headers",
					headers:   []string{"Authorization: Bearer " + valid, "Authorization: Bearer " + valid},
					status:    http.StatusBadRequest,
					challenge: `Bearer error="invalid_request", error_description="malformed authorization header"`,
				},
				{
					name:      "not a JWS",
					token:     "not-a-token",
					status:    http.StatusUnauthorized,
					challenge: `Bearer error="invalid_token", error_description="token is not a well-formed compact JWS"`,
				},
				{
					name:      "signed by another key",
					token:     other.sign(t, claimsFor(idp.url(), "api"), nil),
					status:    http.StatusUnauthorized,
					challenge: `Bearer error="invalid_token", error_description="token signature invalid"`,
				},
				{
					name:      "expired",
					token:     key.sign(t, expired, nil),
					status:    http.StatusUnauthorized,
					challenge: `Bearer error="invalid_token", error_description="token expired"`,
				},
				{
					name:      "wrong audience",
					token:     key.sign(t, claimsFor(idp.url(), "other-api"), nil),
					status:    http.StatusUnauthorized,
					challenge: `Bearer error="invalid_token", error_description="token audience not accepted"`,
				},
			}
			for _, rc := range rejections {
				t.Run(rc.name, func(t *testing.T) {
					res := call(t, tc, "/api", rc.token, rc.headers...)
					if res.status != rc.status {
						t.Fatalf("status %d, want %d (body %q)", res.status, rc.status, res.body)
					}
					if got := res.header.Get("WWW-Authenticate"); got != rc.challenge {
						t.Errorf("WWW-Authenticate = %q, want %q", got, rc.challenge)
					}
					if strings.Contains(res.body, "user-42") {
						t.Errorf("the protected response leaked into a rejection: %q", res.body)
					}
				})
			}
		})
	}
}

// TestIntegrationMissingTokenStatus401 checks missing_token_status 401 and
// realm in a real Caddy: a request without a token gets 401 and a challenge
// with the realm and no error attribute (RFC 6750 section 3.1), while a bad
// token still names the error.
func TestIntegrationMissingTokenStatus401(t *testing.T) {
	key := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, key)
	tc := newIntegrationTester(t, echoCaddyfile(idp, "\t\tmissing_token_status 401\n\t\trealm \"test api\"\n"), "caddyfile")
	waitForStatus(t, tc, "/api", key.sign(t, claimsFor(idp.url(), "api"), nil), http.StatusOK, 10*time.Second)

	tests := []struct {
		name      string
		token     string
		status    int
		challenge string
	}{
		{"no token", "", http.StatusUnauthorized, `Bearer realm="test api"`},
		{"bad token", "a.b.c", http.StatusUnauthorized, `Bearer realm="test api", error="invalid_token", error_description="token is not a well-formed compact JWS"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := call(t, tc, "/api", tt.token)
			if res.status != tt.status {
				t.Fatalf("status %d, want %d", res.status, tt.status)
			}
			if got := res.header.Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.challenge)
			}
		})
	}
}

// TestIntegrationHandleErrorsExample runs the README's handle_errors example
// verbatim and checks that each rejection answers its status with the JSON
// body {"error":"<reason code>"}, and a valid token passes.
func TestIntegrationHandleErrorsExample(t *testing.T) {
	key := newTestKey(t, "k1", jose.RS256, 0)
	idp := newTestIdP(t, key)
	t.Setenv("OIDC_ISSUER", idp.url())
	tc := newIntegrationTester(t, integrationGlobals+handleErrorsExample, "caddyfile")

	valid := key.sign(t, claimsFor(idp.url(), "my-api"), nil)
	waitForStatus(t, tc, "/", valid, http.StatusOK, 10*time.Second)

	expired := claimsFor(idp.url(), "my-api")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	expired["iat"] = time.Now().Add(-2 * time.Hour).Unix()
	expired["nbf"] = time.Now().Add(-2 * time.Hour).Unix()
	noExp := claimsFor(idp.url(), "my-api")
	delete(noExp, "exp")
	unknownKid := newTestKey(t, "k-unknown", jose.RS256, 1)

	tests := []struct {
		name    string
		token   string
		headers []string
		status  int
		body    string
	}{
		{"valid token", valid, nil, http.StatusOK, "Hello, user-42"},
		{"missing token", "", nil, http.StatusBadRequest, `{"error":"missing_token"}`},
		{"two Authorization headers", "", []string{"Authorization: Bearer a.b.c", "Authorization: Bearer a.b.c"}, http.StatusBadRequest, `{"error":"invalid_request"}`},
		{"malformed", "x.y", nil, http.StatusUnauthorized, `{"error":"malformed"}`},
		{"expired", key.sign(t, expired, nil), nil, http.StatusUnauthorized, `{"error":"expired"}`},
		{"wrong audience", key.sign(t, claimsFor(idp.url(), "api"), nil), nil, http.StatusUnauthorized, `{"error":"bad_audience"}`},
		{"unknown issuer", key.sign(t, claimsFor("https://other.example", "my-api"), nil), nil, http.StatusUnauthorized, `{"error":"unknown_issuer"}`},
		{"no exp claim", key.sign(t, noExp, nil), nil, http.StatusUnauthorized, `{"error":"missing_claim"}`},
		{"unknown kid", unknownKid.sign(t, claimsFor(idp.url(), "my-api"), nil), nil, http.StatusUnauthorized, `{"error":"unknown_key"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := call(t, tc, "/", tt.token, tt.headers...)
			if res.status != tt.status || res.body != tt.body {
				t.Fatalf("got %d %q, want %d %q", res.status, res.body, tt.status, tt.body)
			}
			if tt.status == http.StatusOK {
				return
			}
			if ct := res.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if ch := res.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer ") {
				t.Errorf("WWW-Authenticate = %q: the challenge is lost in handle_errors", ch)
			}
		})
	}
}

// TestIntegrationReloadKeepsKeys loads a config, lets the keys arrive
// (through OpenID discovery at the issuer), then reloads a changed config
// through the admin API: the reload must neither refetch the discovery
// document nor the JWKS, and valid tokens pass at once.
func TestIntegrationReloadKeepsKeys(t *testing.T) {
	key := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, key)
	config := func(greeting string) string {
		// No key source: discovery at <issuer>/.well-known/openid-configuration.
		return integrationGlobals + fmt.Sprintf(`
http://localhost:9080 {
	oauth2_jwt {
		provider test {
			issuer %s
			audience api
		}
	}
	respond "%s {http.auth.user.id}"
}
`, idp.url(), greeting)
	}
	tc := newIntegrationTester(t, config("v1"), "caddyfile")
	valid := key.sign(t, claimsFor(idp.url(), "api"), nil)
	if res := waitForStatus(t, tc, "/", valid, http.StatusOK, 10*time.Second); res.body != "v1 user-42" {
		t.Fatalf("body %q, want %q", res.body, "v1 user-42")
	}
	jwksBefore, discBefore := idp.jwksHits.Load(), idp.discHits.Load()
	if jwksBefore < 1 || discBefore < 1 {
		t.Fatalf("keys passed without fetches: jwks %d, discovery %d", jwksBefore, discBefore)
	}

	for i, greeting := range []string{"v2", "v3"} {
		tc = newIntegrationTester(t, config(greeting), "caddyfile")
		res := call(t, tc, "/", valid)
		if res.status != http.StatusOK || res.body != greeting+" user-42" {
			t.Fatalf("reload %d: got %d %q, want 200 %q", i+1, res.status, res.body, greeting+" user-42")
		}
		if got := idp.jwksHits.Load(); got != jwksBefore {
			t.Errorf("reload %d: JWKS fetched %d times, was %d before: a reload refetched the keys", i+1, got, jwksBefore)
		}
		if got := idp.discHits.Load(); got != discBefore {
			t.Errorf("reload %d: discovery fetched %d times, was %d before: a reload refetched it", i+1, got, discBefore)
		}
	}
}

// TestIntegrationProviderDownAtStart starts Caddy while the identity
// provider's JWKS answers 500: Caddy starts anyway, tokens get 503 with
// Retry-After; once the provider recovers, a token passes without any
// reload (the retry backoff starts at 1s).
func TestIntegrationProviderDownAtStart(t *testing.T) {
	key := newTestKey(t, "k1", jose.EdDSA, 0)
	idp := newTestIdP(t, key)
	idp.setStatus(http.StatusInternalServerError)
	config := integrationGlobals + fmt.Sprintf(`
http://localhost:9080 {
	oauth2_jwt {
		provider test {
			issuer %s
			audience api
			jwks_uri %s/jwks
			min_refresh_interval 2s
		}
	}
	respond "hello {http.auth.user.id}"
}
`, idp.url(), idp.url())
	tc := newIntegrationTester(t, config, "caddyfile")
	valid := key.sign(t, claimsFor(idp.url(), "api"), nil)

	waitUntil(t, 10*time.Second, "a first (failing) JWKS fetch", func() bool { return idp.jwksHits.Load() >= 1 })
	res := call(t, tc, "/", valid)
	if res.status != http.StatusServiceUnavailable {
		t.Fatalf("provider down: status %d, want 503 (body %q)", res.status, res.body)
	}
	ra, err := strconv.Atoi(res.header.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Errorf("Retry-After = %q, want a number of seconds >= 1", res.header.Get("Retry-After"))
	}
	if res.body == "hello user-42" {
		t.Fatalf("the protected response was served while keys are unavailable")
	}

	idp.setStatus(0)
	// Backoff 1s, 2s, then capped at min_refresh_interval (2s).
	res = waitForStatus(t, tc, "/", valid, http.StatusOK, 15*time.Second)
	if res.body != "hello user-42" {
		t.Errorf("body %q, want %q", res.body, "hello user-42")
	}
}

// loadConfig posts config to the running test Caddy's admin /load endpoint
// and returns the status and body of the answer.
func loadConfig(t *testing.T, config, contentType string) (int, string) {
	t.Helper()
	// No kept-alive connections: Caddy restarts its admin server after a
	// load (and after a rolled-back one), and a POST on a connection to the
	// previous one fails with EOF; a connection refused or reset while it
	// restarts is retried (bounded), an HTTP answer never is.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var resp *http.Response
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequest(http.MethodPost, "http://localhost:2999/load", strings.NewReader(config))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		resp, err = client.Do(req)
		if err == nil {
			break
		}
		if attempt >= 40 {
			t.Fatalf("POST /load: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	// The admin API answers errors as {"error": "..."}.
	var msg struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &msg) == nil && msg.Error != "" {
		return resp.StatusCode, msg.Error
	}
	return resp.StatusCode, string(body)
}

// TestIntegrationConfigErrors loads broken configurations, as a Caddyfile
// and as JSON, through the admin API: each load fails with a message naming
// the provider and the field (and, for the Caddyfile, the line), and the
// running config keeps serving.
func TestIntegrationConfigErrors(t *testing.T) {
	tc := newIntegrationTester(t, integrationGlobals+"\nhttp://localhost:9080 {\n\trespond \"still serving\"\n}\n", "caddyfile")

	unreadable := filepath.Join(t.TempDir(), "missing-jwks.json")
	const loopbackJWKS = "http://127.0.0.1:1/jwks"
	tests := []struct {
		name string
		// caddyfile is the body of `provider bad { ... }`.
		caddyfile string
		// json is the provider's JSON object.
		json map[string]any
		// want are substrings of the error, beyond the provider's name.
		want []string
		// line is the Caddyfile line the error must name; 0 when the
		// error is only found at provision (no line is known then).
		line int
	}{
		{
			name:      "missing issuer",
			caddyfile: "audience api\njwks_uri " + loopbackJWKS,
			json:      map[string]any{"audiences": []string{"api"}, "jwks_uri": loopbackJWKS},
			want:      []string{"issuer"},
			line:      12,
		},
		{
			name:      "missing audience",
			caddyfile: "issuer https://idp.example\njwks_uri " + loopbackJWKS,
			json:      map[string]any{"issuer": "https://idp.example", "jwks_uri": loopbackJWKS},
			want:      []string{"audience"},
			line:      12,
		},
		{
			name:      "two key sources",
			caddyfile: "issuer https://idp.example\naudience api\njwks_uri " + loopbackJWKS + "\njwks_file " + unreadable,
			json:      map[string]any{"issuer": "https://idp.example", "audiences": []string{"api"}, "jwks_uri": loopbackJWKS, "jwks_file": unreadable},
			want:      []string{"jwks_uri", "jwks_file"},
			line:      12,
		},
		{
			name:      "none algorithm",
			caddyfile: "issuer https://idp.example\naudience api\njwks_uri " + loopbackJWKS + "\nalgorithms RS256 none",
			json:      map[string]any{"issuer": "https://idp.example", "audiences": []string{"api"}, "jwks_uri": loopbackJWKS, "algorithms": []string{"RS256", "none"}},
			want:      []string{"algorithms", `"none"`},
			line:      16,
		},
		{
			name:      "HS256 with keys fetched over the network",
			caddyfile: "issuer https://idp.example\naudience api\njwks_uri " + loopbackJWKS + "\nalgorithms HS256",
			json:      map[string]any{"issuer": "https://idp.example", "audiences": []string{"api"}, "jwks_uri": loopbackJWKS, "algorithms": []string{"HS256"}},
			want:      []string{"algorithms", "HS256", "jwks_file"},
			line:      12,
		},
		{
			name:      "refresh_interval not shorter than max_stale",
			caddyfile: "issuer https://idp.example\naudience api\njwks_uri " + loopbackJWKS + "\nrefresh_interval 2h\nmax_stale 1h",
			json:      map[string]any{"issuer": "https://idp.example", "audiences": []string{"api"}, "jwks_uri": loopbackJWKS, "refresh_interval": "2h", "max_stale": "1h"},
			want:      []string{"refresh_interval", "max_stale"},
			line:      12,
		},
		{
			name:      "unreadable jwks_file",
			caddyfile: "issuer https://idp.example\naudience api\njwks_file " + unreadable,
			json:      map[string]any{"issuer": "https://idp.example", "audiences": []string{"api"}, "jwks_file": unreadable},
			want:      []string{"jwks_file", "missing-jwks.json"},
		},
		{
			name:      "plain http on a non-loopback host",
			caddyfile: "issuer https://idp.example\naudience api\njwks_uri http://idp.example/jwks",
			json:      map[string]any{"issuer": "https://idp.example", "audiences": []string{"api"}, "jwks_uri": "http://idp.example/jwks"},
			want:      []string{"jwks_uri", "http://idp.example/jwks", "insecure_http"},
			line:      12,
		},
		{
			name:      "plain http issuer used for discovery",
			caddyfile: "issuer http://idp.example\naudience api",
			json:      map[string]any{"issuer": "http://idp.example", "audiences": []string{"api"}},
			want:      []string{"issuer", "plain http"},
			line:      12,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Run("caddyfile", func(t *testing.T) {
				// Line 12 is `provider bad {` (globals: lines 1-8, blank line,
				// site, oauth2_jwt); line 16 is the fourth option in it.
				config := integrationGlobals + "\nhttp://localhost:9080 {\n\toauth2_jwt {\n\t\tprovider bad {\n\t\t\t" +
					strings.ReplaceAll(tt.caddyfile, "\n", "\n\t\t\t") + "\n\t\t}\n\t}\n\trespond \"broken\"\n}\n"
				status, body := loadConfig(t, config, "text/caddyfile")
				if status == http.StatusOK {
					t.Fatalf("config loaded, want an error:\n%s", config)
				}
				for _, w := range append([]string{`provider "bad"`}, tt.want...) {
					if !strings.Contains(body, w) {
						t.Errorf("error does not contain %q: %s", w, body)
					}
				}
				if tt.line != 0 {
					if !regexp.MustCompile(`Caddyfile:` + strconv.Itoa(tt.line) + `\b`).MatchString(body) {
						t.Errorf("error does not name Caddyfile line %d: %s", tt.line, body)
					}
				}
			})
			t.Run("json", func(t *testing.T) {
				cfg := map[string]any{
					"admin": map[string]any{"listen": "localhost:2999"},
					"apps": map[string]any{"http": map[string]any{
						"http_port": 9080, "https_port": 9443, "grace_period": 1,
						"servers": map[string]any{"api": map[string]any{
							"listen":          []string{"127.0.0.1:9080"},
							"automatic_https": map[string]any{"disable": true},
							"routes": []any{map[string]any{"handle": []any{
								map[string]any{"handler": "oauth2_jwt", "providers": map[string]any{"bad": tt.json}},
								map[string]any{"handler": "static_response", "body": "broken"},
							}}},
						}},
					}},
				}
				raw, err := json.Marshal(cfg)
				if err != nil {
					t.Fatal(err)
				}
				status, body := loadConfig(t, string(raw), "application/json")
				if status == http.StatusOK {
					t.Fatalf("config loaded, want an error:\n%s", raw)
				}
				for _, w := range append([]string{`provider "bad"`}, tt.want...) {
					if !strings.Contains(body, w) {
						t.Errorf("error does not contain %q: %s", w, body)
					}
				}
			})
		})
	}

	if _, err := os.Stat(unreadable); err == nil {
		t.Fatalf("%s exists; the unreadable-file case is void", unreadable)
	}
	if res := call(t, tc, "/", ""); res.status != http.StatusOK || res.body != "still serving" {
		t.Errorf("after the failed loads: got %d %q, want the previous config's 200 %q", res.status, res.body, "still serving")
	}
}
