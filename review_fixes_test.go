package oauth2jwt

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unsafe"

	jose "github.com/go-jose/go-jose/v4"
)

// Regression tests for findings of the code review of the first session.

// A token whose iss is the literal issuer template must not bypass the
// tenant allow-list and the tid check.
func TestReviewLiteralTemplateIssuerRefused(t *testing.T) {
	k := newTestKey(t, "mt", jose.RS256, 0)
	idp := newTestIdP(t, k)
	tmpl := "https://login.example.com/{tenant}/v2.0"
	h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
		"entra": {Issuer: tmpl, Tenants: []string{"t1"}, Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
	}})
	waitForKeys(t, h)
	c := claimsFor(tmpl, "api")
	c["tid"] = "evil"
	expectReason(t, serve(t, h, bearer(k.sign(t, c, nil))), http.StatusUnauthorized, "unknown_issuer")
}

// The token cache must not keep the request's header string alive.
func TestReviewCachedTokenIsACopy(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{})
	tok := f.token(t, nil)
	header := "Bearer " + strings.Repeat(" ", 30000) + tok
	req := httptest.NewRequest(http.MethodGet, "http://example.test/api", nil)
	req.Header.Set("Authorization", header)
	expectReason(t, serve(t, h, req), http.StatusOK, "")
	lo, hi := uintptr(unsafe.Pointer(unsafe.StringData(header))), uintptr(unsafe.Pointer(unsafe.StringData(header)))+uintptr(len(header))
	for i := range h.cache.nShards {
		for key := range h.cache.shards[i].m {
			if p := uintptr(unsafe.Pointer(unsafe.StringData(key))); p >= lo && p < hi {
				t.Fatalf("cached key points into the request header")
			}
		}
	}
}

// Underscore spellings of forwarded headers are removed too.
func TestReviewUnderscoreHeaderSpoofing(t *testing.T) {
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

// Query-string tokens never travel on, even on public paths.
func TestReviewQueryTokenStrippedOnPublicPaths(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{TokenSources: []TokenSource{{Query: "access_token"}}, PublicPaths: []string{"/health"}})
	res := serve(t, h, httptest.NewRequest(http.MethodGet, "http://example.test/health?x=1&access_token=abc", nil))
	expectReason(t, res, 200, "")
	if res.nextSeen.URL.RawQuery != "x=1" || strings.Contains(res.nextSeen.RequestURI, "access_token") {
		t.Fatalf("query passed on: %q / %q", res.nextSeen.URL.RawQuery, res.nextSeen.RequestURI)
	}
}

// require claim matches strings, numbers and booleans, and items of a
// top-level array, never inside nested arrays or objects.
func TestReviewRequireClaimNoNestedMatch(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{Require: []Requirement{{Claim: "roles", Values: []string{"admin", "3", "true"}}}})
	for _, tc := range []struct {
		roles  any
		status int
	}{
		{[]string{"user", "admin"}, 200},
		{"admin", 200},
		{3, 200},
		{true, 200},
		{[][]string{{"admin"}}, 403},
		{map[string]any{"admin": true}, 403},
		{[]any{map[string]any{"name": "admin"}}, 403},
	} {
		code := ""
		if tc.status == 403 {
			code = "forbidden"
		}
		expectReason(t, serve(t, h, bearer(f.token(t, map[string]any{"roles": tc.roles}))), tc.status, code)
	}
}

// The resource metadata lists expanded issuers and leaves templates out.
func TestReviewMetadataIssuers(t *testing.T) {
	k := newTestKey(t, "m", jose.ES256, 0)
	idp := newTestIdP(t, k)
	t.Setenv("OAUTH2JWT_REVIEW_ISS", idp.url())
	h := provisionHandler(t, &Handler{
		Providers: map[string]*Provider{
			"a": {Issuer: "{env.OAUTH2JWT_REVIEW_ISS}", Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
			"b": {Issuer: "https://login.example.com/{tenant}/v2.0", Tenants: []string{"*"}, Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
		},
		ResourceMetadata: &ResourceMetadata{Resource: "https://api.example.com"},
	})
	body := string(h.req.meta.body)
	if !strings.Contains(body, `"authorization_servers":["`+idp.url()+`"]`) {
		t.Fatalf("metadata = %s", body)
	}
}

// A cache smaller than the shard count keeps its bound.
func TestReviewSmallCacheBound(t *testing.T) {
	f := newAuthzFixture(t)
	one := 1
	h := f.handler(t, &Handler{CacheSize: &one})
	for i := range 20 {
		expectReason(t, serve(t, h, bearer(f.token(t, map[string]any{"jti": i}))), 200, "")
	}
	if n := h.cache.len(); n != 1 {
		t.Fatalf("cache_size 1 holds %d entries", n)
	}
}
