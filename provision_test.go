package oauth2jwt

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	jose "github.com/go-jose/go-jose/v4"
)

// TestRefusedConfigAcquiresNothing: Provision checks the whole
// configuration before it takes any key cache or makes any request, so a
// config refused for any reason (here each time for one field, the valid
// provider sorted first) has started no fetch. It once fetched the JWKS of
// the providers checked before the faulty field.
func TestRefusedConfigAcquiresNothing(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	good := func() map[string]*Provider {
		return map[string]*Provider{"a": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"}}
	}
	cases := []struct {
		name, wantErr string
		h             *Handler
	}{
		{"bad require rule", "require[0]: exactly one of scopes, claim or any", &Handler{Providers: good(), Require: []Requirement{{}}}},
		{"bad token source", "token_sources[0]", &Handler{Providers: good(), TokenSources: []TokenSource{{}}}},
		{"bad forwarded header", `forward_claims[0]: header: "X User" is not a valid header name`, &Handler{Providers: good(), ForwardClaims: []ClaimHeader{{Claim: "sub", Header: "X User"}}}},
		{"bad resource", "resource_metadata: resource", &Handler{Providers: good(), ResourceMetadata: &ResourceMetadata{Resource: "ftp://x"}}},
		{"bad second provider", `provider "b": audience: at least one is required`, &Handler{Providers: func() map[string]*Provider {
			m := good()
			m["b"] = &Provider{Issuer: idp.url() + "/b", JWKSURI: idp.url() + "/jwks"}
			return m
		}()}},
		{"duplicate issuer", `issuer "` + idp.url() + `" is already the issuer of provider "a"`, &Handler{Providers: func() map[string]*Provider {
			m := good()
			m["b"] = &Provider{Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"}
			return m
		}()}},
		{"bad error_format", "error_format", &Handler{Providers: good(), ErrorFormat: "xml"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := tc.h.Provision(ctx)
			if err == nil {
				_ = tc.h.Cleanup()
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
			if len(tc.h.leases) != 0 {
				t.Fatalf("a refused config holds %d provider records", len(tc.h.leases))
			}
			cachePool.Range(func(key, _ any) bool {
				if strings.Contains(key.(string), idp.url()) {
					t.Errorf("a refused config started a key cache: %s", key)
				}
				return true
			})
			if n := idp.jwksHits.Load() + idp.discHits.Load(); n != 0 {
				t.Fatalf("a refused config made %d requests to the IdP", n)
			}
		})
	}
}
