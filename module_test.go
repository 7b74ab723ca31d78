package oauth2jwt

import (
	"net/http"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// TestAlgorithmFamilies checks that a token of every asymmetric algorithm
// family verifies against keys served by a JWKS endpoint, and that the
// placeholders carry its claims.
func TestAlgorithmFamilies(t *testing.T) {
	for i, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA} {
		t.Run(string(alg), func(t *testing.T) {
			k := newTestKey(t, "k-"+string(alg), alg, i%2)
			idp := newTestIdP(t, k)
			h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
				"idp": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
			}})
			waitForKeys(t, h)
			claims := claimsFor(idp.url(), "api")
			claims["exp"] = int64(1767225600) + int64(100*365*24*time.Hour/time.Second)
			res := serve(t, h, bearer(k.sign(t, claims, nil)))
			expectReason(t, res, http.StatusOK, "")
			if got := res.placeholder("http.auth.user.id"); got != "user-42" {
				t.Errorf("user id = %q", got)
			}
			if got := res.placeholder("http.auth.jwt.provider"); got != "idp" {
				t.Errorf("provider = %q", got)
			}
		})
	}
}
