package oauth2jwt

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// introspectConfigFile writes a JSON config whose one oauth2_jwt handler
// has provider "op" (issuer introIssuer, audience orders-api, keys from
// idp) introspecting at endpoint; extra is added to the introspection
// block.
func introspectConfigFile(t *testing.T, idp *testIdP, endpoint, extra string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "caddy.json")
	cfg := `{"apps":{"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[
		{"handler":"oauth2_jwt","providers":{"op":{"issuer":"` + introIssuer + `","audiences":["orders-api"],"jwks_uri":"` + idp.url() + `/jwks",
			"introspection":{"endpoint":"` + endpoint + `","client_id":"orders-api","client_secret":"s3cret"` + extra + `}}}},
		{"handler":"static_response","body":"ok"}]}]}}}}}`
	if err := os.WriteFile(f, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestCLIInspectIntrospect: inspect --introspect asks the provider's
// endpoint with its client credentials and judges the answer by the
// module's rules: accepted (exit 0), refused with the handler's reason
// (exit 1), or undecided when the endpoint cannot answer (exit 2). The
// token never appears in the output.
func TestCLIInspectIntrospect(t *testing.T) {
	k := fixedKey(t, "k1", jose.RS256)
	idp := newTestIdP(t, k)
	ep := newIntroEndpoint(t)
	now := time.Now()
	with := func(changes map[string]any) map[string]any {
		a := activeAnswer(now)
		for name, v := range changes {
			a[name] = v
		}
		return a
	}
	ep.set("opaque-good", activeAnswer(now))
	ep.set("opaque-billing", with(map[string]any{"aud": "billing"}))
	ep.set("opaque-expired", with(map[string]any{"exp": now.Add(-time.Hour).Unix()}))
	ep.set("opaque-refresh", with(map[string]any{"token_type": "refresh_token"}))
	cfg := introspectConfigFile(t, idp, ep.srv.URL+"/introspect", "")

	refusing := newIntroEndpoint(t)
	refusing.setStatus(http.StatusUnauthorized)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens there any more

	for _, tc := range []struct {
		name, token, config string
		args                []string
		code                int
		want                []string
		stderr              string
	}{
		{"active", "opaque-good", cfg, nil, 0, []string{
			"opaque token (not a compact JWS)", `selects provider "op" (issuer https://op.example) by the introspection provider without token_prefix`,
			"asked " + ep.srv.URL + `/introspect as client "orders-api" (client_secret_basic)`,
			"introspection answer:", `"username": "alice"`, "exp = ", "[ok]   introspection (active)", "[ok]   audience",
			`result: ACCEPTED (sub "user-7")`}, ""},
		{"inactive", "opaque-revoked", cfg, nil, 1, []string{
			`"active": false`, "[FAIL] introspection: inactive (the introspection endpoint says the token is not active)", "result: REJECTED, 401 inactive"}, ""},
		{"another audience", "opaque-billing", cfg, nil, 1, []string{
			"[ok]   introspection (active)", "[FAIL] audience: bad_audience", `token aud: "billing"`,
			`accepted:  "orders-api" (provider op)`, "result: REJECTED, 401 bad_audience"}, ""},
		{"expired", "opaque-expired", cfg, nil, 1, []string{"[FAIL] time: expired", "401 expired"}, ""},
		{"a refresh token", "opaque-refresh", cfg, nil, 1, []string{
			"[FAIL] claims: bad_claim (the introspection answer names a token that is not an access token)", "401 bad_claim"}, ""},
		{"endpoint refuses our credentials", "opaque-good", introspectConfigFile(t, idp, refusing.srv.URL+"/introspect", ""), nil, 2, []string{
			"[FAIL] introspection: unavailable", "refused our client credentials (HTTP 401)",
			"result: UNDECIDED, the module answers 503 unavailable with Retry-After: 60"}, `provider "op": the introspection endpoint could not answer`},
		{"endpoint down", "opaque-good", introspectConfigFile(t, idp, down.URL+"/introspect", ""), nil, 2, []string{
			"[FAIL] introspection: unavailable", "request failed", "result: UNDECIDED"}, "could not answer"},
		{"no prefix matches", "opaque-good", introspectConfigFile(t, idp, ep.srv.URL+"/introspect", `,"token_prefix":"ory_at_"`), nil, 1, []string{
			"[FAIL] issuer: unknown_issuer", `accepted:  tokens starting with "ory_at_" (provider op)`, "401 unknown_issuer"}, ""},
		{"client_secret_post", "opaque-good", introspectConfigFile(t, idp, ep.srv.URL+"/introspect", `,"auth_method":"client_secret_post"`), nil, 0, []string{
			`as client "orders-api" (client_secret_post)`, "result: ACCEPTED"}, ""},
		{"without --introspect", "opaque-good", cfg, []string{}, 2, []string{
			"[--]   introspection (give --introspect to ask " + ep.srv.URL + "/introspect)"}, "give --introspect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"--config", tc.config, "--introspect"}
			if tc.args != nil {
				args = append([]string{"--config", tc.config}, tc.args...)
			}
			calls := ep.calls.Load()
			out, errOut, code := runInspect(t, tc.token+"\n", args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q\n%s", code, tc.code, errOut, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(errOut, tc.stderr) || (tc.stderr == "") != (errOut == "") {
				t.Errorf("stderr %q, want one mentioning %q", errOut, tc.stderr)
			}
			if strings.Contains(out+errOut, tc.token) {
				t.Errorf("the output holds the token:\n%s%s", out, errOut)
			}
			if tc.args != nil && ep.calls.Load() != calls {
				t.Errorf("the endpoint was asked without --introspect")
			}
		})
	}
	// The call was the module's: a POST with the token in the form, the
	// hint, and the client's Basic credentials.
	if _, _, code := runInspect(t, "opaque-good", "--config", cfg, "--introspect"); code != 0 {
		t.Fatalf("exit %d", code)
	}
	id, secret, ok := ep.lastReq.BasicAuth()
	if ep.lastReq.Method != http.MethodPost || ep.form.Get("token") != "opaque-good" || ep.form.Get("token_type_hint") != "access_token" ||
		!ok || id != "orders-api" || secret != "s3cret" {
		t.Fatalf("call: %s, form %v, basic %q %q %v", ep.lastReq.Method, ep.form, id, secret, ok)
	}

	t.Run("introspect_jwts", func(t *testing.T) {
		// A JWT of a provider with introspect_jwts: the local checks
		// pass, then the endpoint's answer decides.
		jwtCfg := introspectConfigFile(t, idp, ep.srv.URL+"/introspect", `,"introspect_jwts":true`)
		claims := claimsFor(introIssuer, "orders-api")
		live, revoked := k.sign(t, claims, nil), k.sign(t, longLived(claims), nil)
		ep.set(live, activeAnswer(now))
		out, _, code := runInspect(t, live, "--config", jwtCfg, "--introspect")
		if code != 0 || !strings.Contains(out, "[ok]   signature") || !strings.Contains(out, "[ok]   introspection (active)") {
			t.Fatalf("live JWT: exit %d\n%s", code, out)
		}
		out, _, code = runInspect(t, revoked, "--config", jwtCfg, "--introspect")
		if code != 1 || !strings.Contains(out, "[FAIL] introspection: inactive") {
			t.Fatalf("revoked JWT: exit %d\n%s", code, out)
		}
		out, errOut, code := runInspect(t, live, "--config", jwtCfg)
		if code != 2 || !strings.Contains(out, "[--]   introspection (introspect_jwts") || !strings.Contains(errOut, "give --introspect") {
			t.Fatalf("without --introspect: exit %d, stderr %q\n%s", code, errOut, out)
		}
	})

	if _, errOut, code := runInspect(t, "opaque-good", "--introspect"); code != 2 || !strings.Contains(errOut, "--introspect needs --config") {
		t.Fatalf("--introspect without --config: exit %d, stderr %q", code, errOut)
	}
}
