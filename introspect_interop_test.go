package oauth2jwt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// The introspection interop harness (testdata/introspectinterop): panva's
// oidc-provider issuing opaque access tokens and answering RFC 7662 and
// RFC 9701 introspection.
const (
	introInteropDir      = "testdata/introspectinterop"
	introInteropResource = "http://localhost:9080/api"
	introInteropApp      = "interop-app"
	introInteropSecret   = "interop-secret-0123456789abcdef"
)

// introInteropNode returns the node binary, or skips when the harness
// cannot run (see nodeHarness).
func introInteropNode(t *testing.T) string {
	t.Helper()
	return nodeHarness(t, introInteropDir, []string{"oidc-provider"}, "oidc-provider introspection interop test")
}

// startIntroInteropAS starts as.mjs (see startNodeAS) with rsJWK the
// public key of the private_key_jwt client, and returns its issuer.
func startIntroInteropAS(t *testing.T, node string, rsJWK []byte) string {
	t.Helper()
	return startNodeAS(t, node, introInteropDir, func(issuer string) []string {
		return append(os.Environ(), "AS_ISSUER="+issuer, "AS_RESOURCE="+introInteropResource,
			"AS_APP_ID="+introInteropApp, "AS_SECRET="+introInteropSecret, "AS_RS_JWK="+string(rsJWK))
	})
}

// introInteropPost POSTs a form to the AS with the app client's Basic
// credentials and decodes the JSON answer (if any).
func introInteropPost(t *testing.T, endpoint string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(introInteropApp, introInteropSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(body, &out)
	return resp.StatusCode, out
}

// TestIntegrationIntrospectionInterop runs introspection end to end with
// an independent authorization server: oidc-provider issues an opaque
// access token (client_credentials, resource indicator), and a real Caddy
// introspects it at oidc-provider's endpoint with each client
// authentication (client_secret_basic with the endpoint from discovery,
// client_secret_post, private_key_jwt) and with a signed answer (RFC
// 9701, jwt_response). Each route accepts the token twice; after it is
// revoked at oidc-provider's revocation endpoint, every route refuses it
// (inactive) once cache_ttl has passed. A refresh token of the same
// client, sent as an access token, is refused, with allow_missing_audience
// too.
func TestIntegrationIntrospectionInterop(t *testing.T) {
	node := introInteropNode(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv := jose.JSONWebKey{Key: key, KeyID: "rs-jwt-1", Algorithm: string(jose.ES256), Use: "sig"}
	privJSON, _ := priv.MarshalJSON()
	pubJSON, _ := priv.Public().MarshalJSON()
	keyFile := filepath.Join(t.TempDir(), "rs.jwk")
	if err := os.WriteFile(keyFile, privJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	issuer := startIntroInteropAS(t, node, pubJSON)

	provider := func(path, intro string) string {
		extra := ""
		if path == "/noaud/" {
			extra = "allow_missing_audience"
		}
		return `provider as {
				issuer ` + issuer + `
				audience ` + introInteropResource + `
				` + extra + `
				introspection {
					` + intro + `
					cache_ttl 1s
					negative_ttl 1s
				}
			}`
	}
	routes := map[string]string{
		"/basic/": `client_id rs-basic
					client_secret ` + introInteropSecret,
		"/post/": `endpoint ` + issuer + `/token/introspection
					client_id rs-post
					client_secret ` + introInteropSecret + `
					auth_method client_secret_post`,
		"/jwt/": `endpoint ` + issuer + `/token/introspection
					client_id rs-jwt
					auth_method private_key_jwt
					private_key ` + keyFile,
		"/signed/": `client_id rs-signed
					client_secret ` + introInteropSecret + `
					jwt_response`,
		// The risky option: answers without aud are taken.
		"/noaud/": `client_id rs-basic
					client_secret ` + introInteropSecret,
	}
	var site strings.Builder
	for path, intro := range routes {
		fmt.Fprintf(&site, `
	handle %s* {
		oauth2_jwt {
			%s
		}
		respond "client={http.auth.jwt.claims.client_id} scope={http.auth.jwt.claims.scope} aud={http.auth.jwt.claims.aud}"
	}`, path, provider(path, intro))
	}
	tc := newIntegrationTester(t, integrationGlobals+`
http://localhost:9080 {`+site.String()+`
	handle_errors {
		respond "{http.auth.jwt.error}" {err.status_code}
	}
}
`, "caddyfile")

	// The routes read the introspection endpoint (and, for signed
	// answers, the keys) from the issuer's discovery in the background:
	// wait until a junk token is judged (inactive) rather than 503.
	for path := range routes {
		deadline := time.Now().Add(10 * time.Second)
		res := call(t, tc, path+"probe", "not-a-token-of-the-as")
		for res.status == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			res = call(t, tc, path+"probe", "not-a-token-of-the-as")
		}
		if res.status != http.StatusUnauthorized || res.body != "inactive" {
			t.Fatalf("%s with a junk opaque token: %d %q, want 401 inactive", path, res.status, res.body)
		}
	}

	status, tok := introInteropPost(t, issuer+"/token", url.Values{
		"grant_type": {"client_credentials"}, "scope": {"api:read"}, "resource": {introInteropResource}})
	access, _ := tok["access_token"].(string)
	if status != http.StatusOK || access == "" || strings.Contains(access, ".") || tok["token_type"] != "Bearer" {
		t.Fatalf("token from oidc-provider: %d %v; want an opaque Bearer token", status, tok)
	}
	want := "client=" + introInteropApp + " scope=api:read aud=" + introInteropResource
	for path := range routes {
		for i := range 2 {
			if res := call(t, tc, path+"items", access); res.status != http.StatusOK || res.body != want {
				t.Fatalf("%s request %d: %d %q, want 200 %q", path, i, res.status, res.body, want)
			}
		}
	}

	// A refresh token is no access token: refused, on every route. Its
	// answer has neither aud nor token_type; with allow_missing_audience
	// the missing token_type is what refuses it.
	status, rt := introInteropPost(t, issuer+"/test/refresh_token", nil)
	refresh, _ := rt["refresh_token"].(string)
	if status != http.StatusOK || refresh == "" {
		t.Fatalf("refresh token from oidc-provider: %d %v", status, rt)
	}
	for path := range routes {
		reason := "missing_claim"
		if path == "/noaud/" {
			reason = "bad_claim"
		}
		for range 2 {
			if res := call(t, tc, path+"items", refresh); res.status != http.StatusUnauthorized || res.body != reason {
				t.Fatalf("%s with a refresh token: %d %q, want 401 %s", path, res.status, res.body, reason)
			}
		}
	}

	// Revocation (RFC 7009) is seen once cache_ttl (1s) has passed.
	if status, _ := introInteropPost(t, issuer+"/token/revocation", url.Values{"token": {access}, "token_type_hint": {"access_token"}}); status != http.StatusOK {
		t.Fatalf("revocation: %d", status)
	}
	for path := range routes {
		deadline := time.Now().Add(15 * time.Second)
		res := call(t, tc, path+"items", access)
		for res.status == http.StatusOK && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			res = call(t, tc, path+"items", access)
		}
		if res.status != http.StatusUnauthorized || res.body != "inactive" {
			t.Fatalf("%s after revocation: %d %q, want 401 inactive", path, res.status, res.body)
		}
		if res := call(t, tc, path+"items", access); res.status != http.StatusUnauthorized || res.body != "inactive" {
			t.Fatalf("%s after revocation, again: %d %q", path, res.status, res.body)
		}
	}
}
