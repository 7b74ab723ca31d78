package oauth2jwt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The DPoP interop harness (testdata/dpopinterop): panva's oidc-provider
// as the authorization server, panva's dpop package as the client.
const (
	dpopInteropDir      = "testdata/dpopinterop"
	dpopInteropResource = "http://localhost:9080/api"
	dpopInteropClientID = "interop-client"
	dpopInteropSecret   = "interop-secret-0123456789abcdef"
	dpopInteropSigKid   = "as-es256" // the kid of as.mjs's signing key
)

// dpopInteropNode returns the node binary, or skips when the harness
// cannot run (see nodeHarness).
func dpopInteropNode(t *testing.T) string {
	t.Helper()
	return nodeHarness(t, dpopInteropDir, []string{"oidc-provider", "dpop"}, "oidc-provider/dpop interop test")
}

// dpopInteropEnv is the environment both node scripts share.
func dpopInteropEnv(issuer string, extra ...string) []string {
	return append(append(os.Environ(),
		"AS_ISSUER="+issuer,
		"AS_RESOURCE="+dpopInteropResource,
		"AS_CLIENT_ID="+dpopInteropClientID,
		"AS_CLIENT_SECRET="+dpopInteropSecret,
	), extra...)
}

// startDPoPInteropAS starts as.mjs (see startNodeAS) and checks that its
// discovery document names the issuer Caddy will expect.
func startDPoPInteropAS(t *testing.T, node string) string {
	t.Helper()
	issuer := startNodeAS(t, node, dpopInteropDir, func(issuer string) []string { return dpopInteropEnv(issuer) })

	// The discovery document Caddy will read names this issuer.
	resp, err := http.Get(issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	defer resp.Body.Close()
	var doc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		DPoPAlg []string `json:"dpop_signing_alg_values_supported"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("discovery: %d %v", resp.StatusCode, err)
	}
	if doc.Issuer != issuer || doc.JWKSURI == "" || len(doc.DPoPAlg) == 0 {
		t.Fatalf("discovery document: %+v, want issuer %s with jwks_uri and DPoP algorithms", doc, issuer)
	}
	return issuer
}

// dpopInteropResult is one JSON line of client.mjs.
type dpopInteropResult struct {
	Case         string `json:"case"`
	Status       int    `json:"status"`
	Body         string `json:"body"`
	WWWAuth      string `json:"www_authenticate"`
	DPoPNonce    string `json:"dpop_nonce"`
	CacheControl string `json:"cache_control"`
	JKT          string `json:"jkt"`
	TokenType    string `json:"token_type"`
	CnfJKT       string `json:"cnf_jkt"`
}

// TestIntegrationDPoPInterop runs DPoP end to end with independent
// implementations: oidc-provider issues a DPoP-bound JWT access token
// (to a client_credentials client, with a proof for the token endpoint),
// the dpop package makes the proofs, and a real Caddy, with handle_path
// in front and keys from the issuer's discovery, checks them.
func TestIntegrationDPoPInterop(t *testing.T) {
	node := dpopInteropNode(t)
	issuer := startDPoPInteropAS(t, node)

	provider := `provider as {
				issuer ` + issuer + `
				audience ` + dpopInteropResource + `
				require_typ at+jwt
			}`
	config := dpopIntegrationGlobals + `
http://localhost:9080 {
	handle_path /api/* {
		oauth2_jwt {
			` + provider + `
			dpop {
				algorithms ES256
			}
		}
		respond "jkt={http.auth.jwt.dpop.jkt} sub={http.auth.user.id} uri={uri}"
	}
	handle_path /nonce/* {
		oauth2_jwt {
			` + provider + `
			dpop {
				mode required
				nonce_secret 0123456789abcdef0123456789abcdef
			}
		}
		respond "nonce jkt={http.auth.jwt.dpop.jkt}"
	}
	handle_errors {
		respond "{http.auth.jwt.error}" {err.status_code}
	}
}
`
	tc := newIntegrationTester(t, config, "caddyfile")

	// Both handlers fetch the issuer's keys (discovery, then jwks_uri) in
	// the background: wait until a token with the issuer's kid is judged
	// (a bad signature) rather than waiting for keys (503).
	probe := dpopInteropProbeToken(issuer)
	for _, url := range []string{"http://localhost:9080/api/probe", "http://localhost:9080/nonce/probe"} {
		deadline := time.Now().Add(10 * time.Second)
		res := dpopCall(t, tc.Client, url, probe, "-")
		for res.status == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			res = dpopCall(t, tc.Client, url, probe, "-")
		}
		if res.status != http.StatusUnauthorized {
			t.Fatalf("%s with a forged token, once the keys are there: %d %q", url, res.status, res.body)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs")
	cmd.Dir = dpopInteropDir
	cmd.Env = dpopInteropEnv(issuer,
		"API_URL=http://localhost:9080/api/items?page=2",
		"NONCE_URL=http://localhost:9080/nonce/x",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node client.mjs: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	got := map[string]dpopInteropResult{}
	for line := range strings.SplitSeq(strings.TrimSpace(stdout.String()), "\n") {
		var r dpopInteropResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("client line %q: %v", line, err)
		}
		got[r.Case] = r
		t.Logf("client: %s", line)
	}

	tok := got["token"]
	if tok.TokenType != "DPoP" || tok.JKT == "" || tok.CnfJKT != tok.JKT {
		t.Fatalf("token from oidc-provider: token_type %q, cnf.jkt %q, client key thumbprint %q; want a DPoP token bound to the client's key",
			tok.TokenType, tok.CnfJKT, tok.JKT)
	}

	want := []struct {
		name, body, challenge string
		status                int
	}{
		// The proof names the original URI (/api/items), Caddy's handler
		// runs on the stripped one; the thumbprint is the client's.
		{"good", "jkt=" + tok.JKT + " sub=" + dpopInteropClientID + " uri=/items?page=2", "", 200},
		{"replayed", "dpop_proof_replayed", `DPoP error="invalid_dpop_proof"`, 401},
		{"bearer", "key_binding_mismatch", `Bearer error="invalid_token"`, 401},
		{"no_proof", "dpop_proof_missing", `DPoP error="invalid_dpop_proof"`, 401},
		{"other_url", "dpop_proof_invalid", `DPoP error="invalid_dpop_proof"`, 401},
		{"other_method", "dpop_proof_invalid", `DPoP error="invalid_dpop_proof"`, 401},
		{"no_ath", "dpop_proof_invalid", `DPoP error="invalid_dpop_proof"`, 401},
		{"nonce_challenge", "dpop_nonce_required", `DPoP error="use_dpop_nonce"`, 401},
		{"nonce_retry", "nonce jkt=" + tok.JKT, "", 200},
	}
	for _, w := range want {
		r, ok := got[w.name]
		switch {
		case !ok:
			t.Errorf("%s: the client did not report it", w.name)
		case r.Status != w.status || r.Body != w.body:
			t.Errorf("%s: %d %q, want %d %q (WWW-Authenticate %q)", w.name, r.Status, r.Body, w.status, w.body, r.WWWAuth)
		case w.challenge != "" && !strings.HasPrefix(r.WWWAuth, w.challenge) && !strings.Contains(r.WWWAuth, ", "+w.challenge):
			t.Errorf("%s: WWW-Authenticate %q, want the challenge %s", w.name, r.WWWAuth, w.challenge)
		}
	}
	if c := got["nonce_challenge"]; c.DPoPNonce == "" || c.CacheControl != "no-store" {
		t.Errorf("nonce challenge: DPoP-Nonce %q, Cache-Control %q; want a nonce, no-store", c.DPoPNonce, c.CacheControl)
	}
}

// dpopInteropProbeToken is a JWT in the shape of the AS's tokens, with the
// AS's kid and a signature that cannot verify.
func dpopInteropProbeToken(issuer string) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	now := time.Now().Unix()
	return enc(map[string]string{"alg": "ES256", "typ": "at+jwt", "kid": dpopInteropSigKid}) + "." +
		enc(map[string]any{"iss": issuer, "aud": dpopInteropResource, "sub": "probe", "client_id": "probe",
			"iat": now, "exp": now + 60, "jti": "probe"}) + "." +
		base64.RawURLEncoding.EncodeToString(make([]byte, 64))
}
