package oauth2jwt

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// authzFixture is a provider on a test IdP plus a key to sign with.
type authzFixture struct {
	idp *testIdP
	key *testKey
}

func newAuthzFixture(t *testing.T) *authzFixture {
	t.Helper()
	k := newTestKey(t, "authz", jose.ES256, 0)
	return &authzFixture{idp: newTestIdP(t, k), key: k}
}

func (f *authzFixture) handler(t *testing.T, h *Handler) *Handler {
	t.Helper()
	if h.Providers == nil {
		h.Providers = map[string]*Provider{
			"idp": {Issuer: f.idp.url(), Audiences: []string{"api"}, JWKSURI: f.idp.url() + "/jwks"},
		}
	}
	provisionHandler(t, h)
	waitForKeys(t, h)
	return h
}

func (f *authzFixture) token(t *testing.T, extra map[string]any) string {
	t.Helper()
	c := claimsFor(f.idp.url(), "api")
	for k, v := range extra {
		c[k] = v
	}
	return f.key.sign(t, c, nil)
}

func TestRequireScope(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{Require: []Requirement{{Scopes: []string{"read", "write"}}}, Realm: "api"})
	cases := []struct {
		name   string
		claims map[string]any
		status int
	}{
		{"scope string has both", map[string]any{"scope": "openid read write"}, 200},
		{"scp string has both", map[string]any{"scp": "write read"}, 200},
		{"scp array has both", map[string]any{"scp": []string{"read", "write"}}, 200},
		{"split over scope and scp", map[string]any{"scope": "read", "scp": []string{"write"}}, 200},
		{"one missing", map[string]any{"scope": "read"}, 403},
		{"no scope claim", nil, 403},
		{"scope as an array is not RFC 8693", map[string]any{"scope": []string{"read", "write"}}, 403},
		{"prefix is not a scope", map[string]any{"scope": "reader writer"}, 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := serve(t, h, bearer(f.token(t, tc.claims)))
			if tc.status == 200 {
				expectReason(t, res, 200, "")
				return
			}
			expectReason(t, res, 403, "forbidden")
			want := `Bearer realm="api", error="insufficient_scope", error_description="token lacks the required scope or claims", scope="read write"`
			if got := res.header.Get("WWW-Authenticate"); got != want {
				t.Fatalf("challenge = %s\nwant        %s", got, want)
			}
		})
	}
}

func TestRequireClaimAndAny(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{Require: []Requirement{
		{Claim: "realm_access.roles", Values: []string{"admin", "ops"}},
		{Any: []Requirement{
			{Scopes: []string{"orders:write"}},
			{Claim: "https://example.com/tier", Values: []string{"gold"}},
		}},
	}})
	admin := map[string]any{"realm_access": map[string]any{"roles": []string{"user", "admin"}}}
	with := func(base map[string]any, k string, v any) map[string]any {
		out := map[string]any{k: v}
		for kk, vv := range base {
			out[kk] = vv
		}
		return out
	}
	cases := []struct {
		name   string
		claims map[string]any
		status int
	}{
		{"role and scope", with(admin, "scope", "orders:write"), 200},
		{"role and namespaced tier", with(admin, "https://example.com/tier", "gold"), 200},
		{"role only", admin, 403},
		{"scope only", map[string]any{"scope": "orders:write"}, 403},
		{"role as a string", map[string]any{"realm_access": map[string]any{"roles": "ops"}, "scope": "orders:write"}, 200},
		{"wrong role", map[string]any{"realm_access": map[string]any{"roles": []string{"user"}}, "scope": "orders:write"}, 403},
		{"wrong tier", with(admin, "https://example.com/tier", "silver"), 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := serve(t, h, bearer(f.token(t, tc.claims)))
			code := ""
			if tc.status == 403 {
				code = "forbidden"
			}
			expectReason(t, res, tc.status, code)
		})
	}
}

// TestRequireClaimMatchesTopLevelValues: require claim matches strings,
// numbers and booleans, and items of a top-level array, never values
// inside nested arrays or objects.
func TestRequireClaimMatchesTopLevelValues(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{Require: []Requirement{{Claim: "roles", Values: []string{"admin", "3", "true"}}}})
	for _, tc := range []struct {
		name   string
		roles  any
		status int
	}{
		{"array holding the value", []string{"user", "admin"}, 200},
		{"string", "admin", 200},
		{"number", 3, 200},
		{"boolean", true, 200},
		{"value in a nested array", [][]string{{"admin"}}, 403},
		{"value as an object key", map[string]any{"admin": true}, 403},
		{"value inside an object in the array", []any{map[string]any{"name": "admin"}}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := ""
			if tc.status == 403 {
				code = "forbidden"
			}
			expectReason(t, serve(t, h, bearer(f.token(t, map[string]any{"roles": tc.roles}))), tc.status, code)
		})
	}
}

func TestForwardClaimsAndAntiSpoofing(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{
		ForwardClaims:      []ClaimHeader{{Claim: "sub", Header: "X-User-Id"}, {Claim: "realm_access.roles", Header: "x-roles"}, {Claim: "evil", Header: "X-Evil"}},
		ForwardClaimsJSON:  "X-Claims",
		StripAuthorization: true,
		PublicPaths:        []string{"/public"},
	})
	spoof := func(req *http.Request) *http.Request {
		req.Header.Set("X-User-Id", "admin")
		req.Header.Add("X-User-Id", "root")
		req.Header.Set("X-Roles", "admin")
		req.Header.Set("X-Claims", "e30")
		req.Header.Set("X-Evil", "spoofed")
		return req
	}

	t.Run("verified request", func(t *testing.T) {
		tok := f.token(t, map[string]any{"realm_access": map[string]any{"roles": []string{"a", "b"}}, "evil": "line\r\nX-Injected: 1"})
		res := serve(t, h, spoof(bearer(tok)))
		expectReason(t, res, 200, "")
		got := res.nextSeen.Header
		if v := got.Values("X-User-Id"); len(v) != 1 || v[0] != "user-42" {
			t.Errorf("X-User-Id = %q", v)
		}
		if v := got.Get("X-Roles"); v != "a,b" {
			t.Errorf("X-Roles = %q", v)
		}
		if v := got.Values("X-Evil"); len(v) != 0 {
			t.Errorf("a claim with CR/LF was forwarded, or the spoofed header kept: %q", v)
		}
		payload, err := base64.RawURLEncoding.DecodeString(got.Get("X-Claims"))
		if err != nil {
			t.Fatalf("X-Claims is not base64url: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(payload, &m); err != nil || m["sub"] != "user-42" {
			t.Errorf("X-Claims payload = %s (%v)", payload, err)
		}
		if got.Get("Authorization") != "" {
			t.Errorf("Authorization not stripped")
		}
		if v := res.repl.ReplaceKnown("{http.request.header.X-User-Id}", ""); v != "user-42" {
			t.Errorf("{http.request.header.X-User-Id} = %q", v)
		}
	})
	t.Run("public request", func(t *testing.T) {
		req := spoof(httptest.NewRequest(http.MethodGet, "http://example.test/public", nil))
		req.Header.Set("Authorization", "Bearer whatever")
		res := serve(t, h, req)
		expectReason(t, res, 200, "")
		for _, name := range []string{"X-User-Id", "X-Roles", "X-Claims", "X-Evil", "Authorization"} {
			if v := res.nextSeen.Header.Values(name); len(v) != 0 {
				t.Errorf("public path passed on client header %s = %q", name, v)
			}
		}
	})
}

// TestForwardRemovesUnderscoreSpellings: client headers whose names differ
// from a forwarded header only by underscores for dashes (which some
// backends treat as the same name) are removed too.
func TestForwardRemovesUnderscoreSpellings(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{ForwardClaims: []ClaimHeader{{Claim: "sub", Header: "X-User-Id"}}, PublicPaths: []string{"/public"}})
	req := httptest.NewRequest(http.MethodGet, "http://example.test/public", nil)
	req.Header.Set("X_User_Id", "admin") // arrives as X_user_id
	req.Header.Set("x_user-id", "admin") // arrives as X_user-Id
	req.Header.Set("X-Other_Header", "kept")
	res := serve(t, h, req)
	expectReason(t, res, 200, "")
	if v := res.nextSeen.Header.Values("X_User_Id"); len(v) != 0 {
		t.Fatalf("underscore spelling passed on")
	}
	if v := res.nextSeen.Header.Values("x_user-id"); len(v) != 0 {
		t.Fatalf("mixed spelling passed on")
	}
	if len(res.nextSeen.Header) != 1 {
		t.Fatalf("headers passed on: %v", res.nextSeen.Header)
	}
	if res.nextSeen.Header.Get("X-Other_Header") != "kept" {
		t.Fatalf("an unrelated header was removed")
	}
}

func TestTokenSources(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{TokenSources: []TokenSource{
		{Header: "X-Api-Token", Scheme: "Token"},
		{Cookie: "access_token"},
		{Query: "access_token"},
	}})
	tok := f.token(t, nil)
	get := func(target string) *http.Request { return httptest.NewRequest(http.MethodGet, target, nil) }

	t.Run("header with scheme", func(t *testing.T) {
		req := get("http://example.test/api")
		req.Header.Set("X-Api-Token", "token "+tok)
		expectReason(t, serve(t, h, req), 200, "")
	})
	t.Run("cookie", func(t *testing.T) {
		req := get("http://example.test/api")
		req.AddCookie(&http.Cookie{Name: "access_token", Value: tok})
		expectReason(t, serve(t, h, req), 200, "")
	})
	t.Run("query parameter removed from the URL passed on", func(t *testing.T) {
		res := serve(t, h, get("http://example.test/api?a=1&access_token="+tok+"&b=%2F"))
		expectReason(t, res, 200, "")
		if q := res.nextSeen.URL.RawQuery; q != "a=1&b=%2F" {
			t.Errorf("query passed on = %q", q)
		}
		if u := res.nextSeen.RequestURI; strings.Contains(u, "access_token") {
			t.Errorf("RequestURI still has the token: %q", u)
		}
	})
	t.Run("Authorization Bearer is not a source when sources are set", func(t *testing.T) {
		expectReason(t, serve(t, h, bearer(tok)), 400, "missing_token")
	})
	t.Run("first source wins", func(t *testing.T) {
		req := get("http://example.test/api?access_token=garbage")
		req.Header.Set("X-Api-Token", "Token "+tok)
		expectReason(t, serve(t, h, req), 200, "")
	})
	t.Run("two cookies", func(t *testing.T) {
		req := get("http://example.test/api")
		req.AddCookie(&http.Cookie{Name: "access_token", Value: tok})
		req.AddCookie(&http.Cookie{Name: "access_token", Value: tok})
		expectReason(t, serve(t, h, req), 400, "invalid_request")
	})
	t.Run("two query parameters", func(t *testing.T) {
		expectReason(t, serve(t, h, get("http://example.test/api?access_token="+tok+"&access_token="+tok)), 400, "invalid_request")
	})
	t.Run("two headers", func(t *testing.T) {
		req := get("http://example.test/api")
		req.Header.Add("X-Api-Token", "Token "+tok)
		req.Header.Add("X-Api-Token", "Token "+tok)
		expectReason(t, serve(t, h, req), 400, "invalid_request")
	})
	t.Run("garbage cookie", func(t *testing.T) {
		req := get("http://example.test/api")
		req.AddCookie(&http.Cookie{Name: "access_token", Value: "not-a-jwt"})
		expectReason(t, serve(t, h, req), 401, "malformed")
	})
}

// TestQueryTokenStrippedOnPublicPaths: a query-string token never travels
// on to the backend, even on a public path where it is not checked.
func TestQueryTokenStrippedOnPublicPaths(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{TokenSources: []TokenSource{{Query: "access_token"}}, PublicPaths: []string{"/health"}})
	res := serve(t, h, httptest.NewRequest(http.MethodGet, "http://example.test/health?x=1&access_token=abc", nil))
	expectReason(t, res, 200, "")
	if res.nextSeen.URL.RawQuery != "x=1" || strings.Contains(res.nextSeen.RequestURI, "access_token") {
		t.Fatalf("query passed on: %q / %q", res.nextSeen.URL.RawQuery, res.nextSeen.RequestURI)
	}
}

func TestAllowMissingAndCORSPreflight(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{AllowMissing: true, AllowCORSPreflight: true})

	res := serve(t, h, bearer(""))
	expectReason(t, res, 200, "")
	for _, p := range []string{"http.auth.user.id", "http.auth.jwt.provider", "http.auth.jwt.claims.sub", "http.auth.jwt.claims_json"} {
		if v := res.placeholder(p); v != "" {
			t.Errorf("anonymous request: {%s} = %q, want empty", p, v)
		}
	}
	expectReason(t, serve(t, h, bearer("a.b.c")), 401, "malformed")
	expectReason(t, serve(t, h, bearer(f.token(t, nil))), 200, "")

	pre := httptest.NewRequest(http.MethodOptions, "http://example.test/api", nil)
	pre.Header.Set("Origin", "https://app.example")
	pre.Header.Set("Access-Control-Request-Method", "POST")
	expectReason(t, serve(t, h, pre), 200, "")

	strict := f.handler(t, &Handler{})
	expectReason(t, serve(t, strict, pre), 400, "missing_token")
	notPreflight := httptest.NewRequest(http.MethodOptions, "http://example.test/api", nil)
	notPreflight.Header.Set("Origin", "https://app.example")
	h2 := f.handler(t, &Handler{AllowCORSPreflight: true})
	expectReason(t, serve(t, h2, notPreflight), 400, "missing_token")
}

func TestResourceMetadata(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{
		MissingTokenStatus: 401,
		ResourceMetadata:   &ResourceMetadata{Resource: "https://api.example.com/mcp", ScopesSupported: []string{"mcp:tools"}},
	})
	res := serve(t, h, httptest.NewRequest(http.MethodGet, "http://api.example.com/.well-known/oauth-protected-resource/mcp", nil))
	if res.status != 200 || res.nextSeen != nil {
		t.Fatalf("metadata request: status %d, next called %v", res.status, res.nextSeen != nil)
	}
	missing := serve(t, h, bearer(""))
	want := `Bearer resource_metadata="https://api.example.com/.well-known/oauth-protected-resource/mcp"`
	if got := missing.header.Get("WWW-Authenticate"); got != want {
		t.Errorf("challenge = %s, want %s", got, want)
	}
	bad := serve(t, h, bearer("a.b.c"))
	if got := bad.header.Get("WWW-Authenticate"); !strings.Contains(got, `error="invalid_token"`) || !strings.Contains(got, `resource_metadata="https://api.example.com/.well-known/oauth-protected-resource/mcp"`) {
		t.Errorf("401 challenge = %s", got)
	}

	// The document itself.
	w := httptest.NewRecorder()
	h.req.meta.serve(w, httptest.NewRequest(http.MethodGet, "http://api.example.com/.well-known/oauth-protected-resource/mcp", nil))
	var doc map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc["resource"] != "https://api.example.com/mcp" || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("document = %s", w.Body.String())
	}
	if as, _ := doc["authorization_servers"].([]any); len(as) != 1 || as[0] != f.idp.url() {
		t.Errorf("authorization_servers = %v", doc["authorization_servers"])
	}
	if bm, _ := doc["bearer_methods_supported"].([]any); len(bm) != 1 || bm[0] != "header" {
		t.Errorf("bearer_methods_supported = %v", doc["bearer_methods_supported"])
	}
}

// TestResourceMetadataListsExpandedIssuers: authorization_servers lists
// issuers with their placeholders expanded and leaves issuer templates
// out.
func TestResourceMetadataListsExpandedIssuers(t *testing.T) {
	k := newTestKey(t, "m", jose.ES256, 0)
	idp := newTestIdP(t, k)
	t.Setenv("OAUTH2JWT_METADATA_ISS", idp.url())
	h := provisionHandler(t, &Handler{
		Providers: map[string]*Provider{
			"a": {Issuer: "{env.OAUTH2JWT_METADATA_ISS}", Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
			"b": {Issuer: "https://login.example.com/{tenant}/v2.0", Tenants: []string{"*"}, Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
		},
		ResourceMetadata: &ResourceMetadata{Resource: "https://api.example.com"},
	})
	body := string(h.req.meta.body)
	if !strings.Contains(body, `"authorization_servers":["`+idp.url()+`"]`) {
		t.Fatalf("metadata = %s", body)
	}
}

func TestErrorFormatJSON(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{ErrorFormat: "json", Require: []Requirement{{Scopes: []string{"admin"}}}})
	cases := []struct {
		name   string
		req    *http.Request
		status int
		code   string
	}{
		{"missing", bearer(""), 400, "missing_token"},
		{"malformed", bearer("a.b.c"), 401, "malformed"},
		{"forbidden", bearer(f.token(t, nil)), 403, "forbidden"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			res := serveTo(t, h, tc.req, w)
			if res.err != nil {
				t.Fatalf("error_format json returned a Caddy error: %v", res.err)
			}
			if w.Code != tc.status || w.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("status %d, content type %q", w.Code, w.Header().Get("Content-Type"))
			}
			var p struct {
				Status int    `json:"status"`
				Code   string `json:"code"`
				Title  string `json:"title"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != tc.status || p.Code != tc.code || p.Title == "" {
				t.Fatalf("body = %s (%v)", w.Body.String(), err)
			}
			if w.Header().Get("WWW-Authenticate") == "" {
				t.Fatalf("no challenge")
			}
		})
	}
}

// serveTo runs one request through h, writing to w.
func serveTo(t *testing.T, h *Handler, req *http.Request, w *httptest.ResponseRecorder) result {
	t.Helper()
	repl := caddy.NewReplacer()
	req = caddyhttp.PrepareRequest(req, repl, w, nil)
	res := result{repl: repl, status: http.StatusOK}
	res.err = h.ServeHTTP(w, req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		res.nextSeen = r
		return nil
	}))
	return res
}

// TestRejectionLoggedOnceAtDebug: each rejection is one debug entry with
// the provider and the reason code, and never the token.
func TestRejectionLoggedOnceAtDebug(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{})
	core, logs := observer.New(zapcore.DebugLevel)
	h.obs.logger = zap.New(core)
	c := claimsFor(f.idp.url(), "api")
	c["exp"] = time.Now().Add(-time.Hour).Unix()
	tok := f.key.sign(t, c, nil)
	serve(t, h, bearer(tok))
	entries := logs.All()
	if len(entries) != 1 || entries[0].Level != zapcore.DebugLevel {
		t.Fatalf("want one debug entry, got %v", entries)
	}
	m := entries[0].ContextMap()
	if m["provider"] != "idp" || m["reason"] != "expired" {
		t.Fatalf("fields = %v", m)
	}
	for _, e := range entries {
		for _, v := range e.ContextMap() {
			if s, ok := v.(string); ok && strings.Contains(s, tok[:20]) {
				t.Fatalf("token logged: %v", m)
			}
		}
	}
	serve(t, h, bearer(""))
	if m := logs.All()[1].ContextMap(); m["provider"] != "" || m["reason"] != "missing_token" {
		t.Fatalf("missing token entry = %v", m)
	}
}

// TestClaimsFromRequest: later Go modules get the verified claims; a
// public request has none.
func TestClaimsFromRequest(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{PublicPaths: []string{"/public"}})
	res := serve(t, h, bearer(f.token(t, map[string]any{"realm_access": map[string]any{"roles": []string{"a", "b"}}})))
	c, ok := ClaimsFromRequest(res.nextSeen)
	if !ok || c.Subject() != "user-42" || c.Provider() != "idp" || strings.Join(c.Strings("realm_access.roles"), "+") != "a+b" {
		t.Fatalf("ClaimsFromRequest = %v, %v", c, ok)
	}
	if raw, ok := c.Raw("aud"); !ok || string(raw) != `"api"` || !json.Valid(c.JSON()) || c.Expiry().IsZero() {
		t.Fatalf("claims accessors wrong")
	}
	pub := serve(t, h, httptest.NewRequest(http.MethodGet, "http://example.test/public", nil))
	if c, ok := ClaimsFromRequest(pub.nextSeen); ok || c != nil {
		t.Fatalf("public request has claims")
	}
}
