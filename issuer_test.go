package oauth2jwt

import (
	"net/http"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// Issuer templates ({tenant}): which issuers a templated provider accepts.

func TestMultiTenantIssuer(t *testing.T) {
	k := newTestKey(t, "mt", jose.RS256, 0)
	idp := newTestIdP(t, k)
	tmpl := "https://login.example.com/{tenant}/v2.0"
	mk := func(tenants ...string) *Handler {
		h := &Handler{Providers: map[string]*Provider{
			"entra": {Issuer: tmpl, Tenants: tenants, Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
		}}
		provisionHandler(t, h)
		waitForKeys(t, h)
		return h
	}
	h := mk("t1", "t2")
	tok := func(iss string, extra map[string]any) string {
		c := claimsFor(iss, "api")
		for kk, v := range extra {
			c[kk] = v
		}
		return k.sign(t, c, nil)
	}
	res := serve(t, h, bearer(tok("https://login.example.com/t1/v2.0", map[string]any{"tid": "t1"})))
	expectReason(t, res, 200, "")
	if got := res.placeholder("http.auth.jwt.tenant"); got != "t1" {
		t.Errorf("tenant = %q", got)
	}
	expectReason(t, serve(t, h, bearer(tok("https://login.example.com/t2/v2.0", nil))), 200, "")
	expectReason(t, serve(t, h, bearer(tok("https://login.example.com/t3/v2.0", nil))), 401, "unknown_issuer")
	expectReason(t, serve(t, h, bearer(tok("https://login.example.com/t1/v2.0", map[string]any{"tid": "t2"}))), 401, "bad_claim")
	expectReason(t, serve(t, h, bearer(tok("https://login.example.com/t1/extra/v2.0", nil))), 401, "unknown_issuer")
	expectReason(t, serve(t, h, bearer(tok("https://login.example.com//v2.0", nil))), 401, "unknown_issuer")

	anyTenant := mk("*")
	expectReason(t, serve(t, anyTenant, bearer(tok("https://login.example.com/whoever/v2.0", nil))), 200, "")
	expectReason(t, serve(t, anyTenant, bearer(tok("https://login.example.com/a/b/v2.0", nil))), 401, "unknown_issuer")
}

// TestIssuerTemplateLiteralRefused: a token whose iss is the template
// itself, {tenant} included, is not an issuer of the provider: it must not
// bypass the tenant allow-list and the tid check.
func TestIssuerTemplateLiteralRefused(t *testing.T) {
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
