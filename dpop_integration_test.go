package oauth2jwt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/standard" // handle_path, respond, handle_errors, tls
	"github.com/go-jose/go-jose/v4"
)

// dpopIntegrationGlobals are the global options of the DPoP test Caddy
// (the shared caddytest ports; run under the flock of the README).
const dpopIntegrationGlobals = `{
	skip_install_trust
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	default_bind 127.0.0.1
	local_certs
}
`

// dpopCall sends a GET of url with the token as DPoP (with proof, when
// not empty) or as Bearer (proof "-").
func dpopCall(t *testing.T, client *http.Client, url, token, proof string) response {
	t.Helper()
	res, err := dpopTry(client, url, token, proof)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return res
}

// dpopTry is dpopCall returning the transport error.
func dpopTry(client *http.Client, url, token, proof string) (response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return response{}, err
	}
	switch {
	case proof == "-":
		req.Header.Set("Authorization", "Bearer "+token)
	case token != "":
		req.Header.Set("Authorization", "DPoP "+token)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}, err
}

// TestIntegrationDPoP runs DPoP through a real Caddy: handle_path in
// front (htu is the original URI), a replay refused, and the nonce flow
// across two handlers sharing a nonce secret.
func TestIntegrationDPoP(t *testing.T) {
	f := newDPoPFixture(t)
	provider := `provider main {
				issuer ` + f.idp.url() + `
				audience ` + dpopAud + `
				jwks_uri ` + f.idp.url() + `/jwks
			}`
	config := dpopIntegrationGlobals + `
http://localhost:9080 {
	handle_path /api/* {
		oauth2_jwt {
			` + provider + `
			missing_token_status 401
			dpop {
				algorithms ES256 EdDSA
			}
		}
		respond "ok jkt={http.auth.jwt.dpop.jkt} uri={uri}"
	}
	handle /a/* {
		oauth2_jwt {
			` + provider + `
			dpop {
				nonce_secret 0123456789abcdef0123456789abcdef
			}
		}
		respond "a"
	}
	handle /b/* {
		oauth2_jwt {
			` + provider + `
			dpop {
				nonce_secret 0123456789abcdef0123456789abcdef
			}
		}
		respond "b"
	}
	handle_errors {
		respond "{http.auth.jwt.error}" {err.status_code}
	}
}
`
	tc := newIntegrationTester(t, config, "caddyfile")
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	proofFor := func(htu string, nonce string) string {
		c := proofClaims(time.Now(), tok)
		c["htu"] = htu
		if nonce != "" {
			c["nonce"] = nonce
		}
		return signProof(t, f.client, jose.ES256, nil, c, nil)
	}
	const url = "http://localhost:9080/api/items?page=2"

	// The first key fetch runs in the background.
	deadline := time.Now().Add(5 * time.Second)
	var res response
	for {
		res = dpopCall(t, tc.Client, url, tok, proofFor("http://localhost:9080/api/items", ""))
		if res.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if res.status != 200 || res.body != "ok jkt="+f.jkt+" uri=/items?page=2" {
		t.Fatalf("DPoP request: %d %q (WWW-Authenticate %q)", res.status, res.body, res.header.Get("WWW-Authenticate"))
	}

	// htu of the rewritten path (what handle_path leaves) is not the
	// request's URI.
	res = dpopCall(t, tc.Client, url, tok, proofFor("http://localhost:9080/items", ""))
	if res.status != 401 || res.body != "dpop_proof_invalid" || !strings.Contains(res.header.Get("WWW-Authenticate"), `DPoP error="invalid_dpop_proof"`) {
		t.Fatalf("htu of the stripped path: %d %q %q", res.status, res.body, res.header.Get("WWW-Authenticate"))
	}

	// A replayed proof, with the token now cached.
	p := proofFor("http://localhost:9080/api/items", "")
	if res = dpopCall(t, tc.Client, url, tok, p); res.status != 200 {
		t.Fatalf("fresh proof: %d %q", res.status, res.body)
	}
	if res = dpopCall(t, tc.Client, url, tok, p); res.status != 401 || res.body != "dpop_proof_replayed" {
		t.Fatalf("replayed proof: %d %q", res.status, res.body)
	}

	// Downgrade: the bound token as Bearer.
	res = dpopCall(t, tc.Client, url, tok, "-")
	if res.status != 401 || res.body != "key_binding_mismatch" || !strings.HasPrefix(res.header.Get("WWW-Authenticate"), `Bearer error="invalid_token"`) {
		t.Fatalf("bound token as Bearer: %d %q %q", res.status, res.body, res.header.Get("WWW-Authenticate"))
	}

	// No credentials: both challenges, no error.
	res = dpopCall(t, tc.Client, url, "", "")
	if res.status != 401 || res.header.Get("WWW-Authenticate") != `Bearer, DPoP algs="ES256 EdDSA"` {
		t.Fatalf("no credentials: %d %q", res.status, res.header.Get("WWW-Authenticate"))
	}

	// Nonces: /a asks for one; /b, sharing the secret, accepts it.
	res = dpopCall(t, tc.Client, "http://localhost:9080/a/x", tok, proofFor("http://localhost:9080/a/x", ""))
	nonce := res.header.Get("DPoP-Nonce")
	if res.status != 401 || res.body != "dpop_nonce_required" || nonce == "" ||
		res.header.Get("Cache-Control") != "no-store" || !strings.Contains(res.header.Get("WWW-Authenticate"), `DPoP error="use_dpop_nonce"`) {
		t.Fatalf("nonce challenge: %d %q, DPoP-Nonce %q, headers %v", res.status, res.body, nonce, res.header)
	}
	if res = dpopCall(t, tc.Client, "http://localhost:9080/a/x", tok, proofFor("http://localhost:9080/a/x", nonce)); res.status != 200 || res.body != "a" {
		t.Fatalf("/a with its nonce: %d %q", res.status, res.body)
	}
	if res = dpopCall(t, tc.Client, "http://localhost:9080/b/y", tok, proofFor("http://localhost:9080/b/y", nonce)); res.status != 200 || res.body != "b" {
		t.Fatalf("/b with /a's nonce: %d %q", res.status, res.body)
	}
}

// TestIntegrationCertificateBound serves HTTPS with an internal CA and
// client_auth mode request: a token bound to the client certificate
// passes with it, and fails with another certificate or none.
func TestIntegrationCertificateBound(t *testing.T) {
	f := newDPoPFixture(t)
	config := dpopIntegrationGlobals + `
https://localhost:9443 {
	tls internal {
		client_auth {
			mode request
		}
	}
	oauth2_jwt {
		provider main {
			issuer ` + f.idp.url() + `
			audience ` + dpopAud + `
			jwks_uri ` + f.idp.url() + `/jwks
		}
		certificate_binding {
			mode required
		}
	}
	respond "ok x5t={http.auth.jwt.cnf.x5t#S256}"
	handle_errors {
		respond "{http.auth.jwt.error}" {err.status_code}
	}
}
`
	newIntegrationTester(t, config, "caddyfile")
	cert, certKey := clientCertWithKey(t)
	other, otherKey := clientCertWithKey(t)
	tok := f.token(t, map[string]any{"x5t#S256": certThumb(cert)})
	client := func(c *x509.Certificate, k *ecdsa.PrivateKey) *http.Client {
		cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"} // the internal CA is not installed
		if c != nil {
			cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{c.Raw}, PrivateKey: k}}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	}
	const url = "https://localhost:9443/"
	deadline := time.Now().Add(10 * time.Second)
	var res response
	for {
		// The internal CA issues the site certificate in the background.
		var err error
		res, err = dpopTry(client(cert, certKey), url, tok, "-")
		if (err == nil && res.status == 200) || time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("GET %s: %v", url, err)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if res.status != 200 || res.body != "ok x5t="+certThumb(cert) {
		t.Fatalf("bound certificate: %d %q", res.status, res.body)
	}
	if res = dpopCall(t, client(other, otherKey), url, tok, "-"); res.status != 401 || res.body != "cert_binding_mismatch" {
		t.Fatalf("other certificate: %d %q", res.status, res.body)
	}
	if res = dpopCall(t, client(nil, nil), url, tok, "-"); res.status != 401 || res.body != "cert_binding_mismatch" {
		t.Fatalf("no certificate: %d %q", res.status, res.body)
	}
	// mode required: an unbound token is refused even with a certificate.
	if res = dpopCall(t, client(cert, certKey), url, f.token(t, nil), "-"); res.status != 401 || res.body != "cert_binding_mismatch" {
		t.Fatalf("unbound token: %d %q", res.status, res.body)
	}
}

// clientCertWithKey is selfSignedCert keeping the private key.
func clientCertWithKey(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := selfSignedTemplate("client")
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestIntegrationClientCertHeader runs certificate binding behind a
// proxy: when the server's trusted_proxies include the loopback peer, the
// RFC 9440 Client-Cert header is believed; reloaded without them, the same
// header is removed and the bound token refused.
func TestIntegrationClientCertHeader(t *testing.T) {
	f := newDPoPFixture(t)
	config := func(servers string) string {
		return `{
	skip_install_trust
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1ns
	default_bind 127.0.0.1
	` + servers + `
}

http://localhost:9080 {
	oauth2_jwt {
		provider main {
			issuer ` + f.idp.url() + `
			audience ` + dpopAud + `
			jwks_uri ` + f.idp.url() + `/jwks
		}
		certificate_binding {
			header Client-Cert
		}
	}
	respond "ok header={header.Client-Cert}"
	handle_errors {
		respond "{http.auth.jwt.error}" {err.status_code}
	}
}
`
	}
	cert := selfSignedCert(t, "client")
	tok := f.token(t, map[string]any{"x5t#S256": certThumb(cert)})
	hdr := ":" + base64.StdEncoding.EncodeToString(cert.Raw) + ":"
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(certHeader string, token ...string) response {
		req, _ := http.NewRequest(http.MethodGet, "http://localhost:9080/", nil)
		req.Header.Set("Authorization", "Bearer "+append(token, tok)[0])
		if certHeader != "" {
			req.Header.Set("Client-Cert", certHeader)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return response{status: resp.StatusCode, header: resp.Header, body: string(body)}
	}

	newIntegrationTester(t, config("servers {\n\t\ttrusted_proxies static 127.0.0.1/32 ::1/128\n\t}"), "caddyfile")
	deadline := time.Now().Add(5 * time.Second)
	res := get(hdr)
	for res.status == http.StatusServiceUnavailable && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		res = get(hdr)
	}
	if res.status != 200 || res.body != "ok header="+hdr {
		t.Fatalf("trusted proxy: %d %q", res.status, res.body)
	}
	if res = get(":bm90IERFUg==:"); res.status != 401 || res.body != "cert_binding_mismatch" {
		t.Fatalf("trusted proxy, malformed header: %d %q", res.status, res.body)
	}

	client.CloseIdleConnections()
	newIntegrationTester(t, config(""), "caddyfile")
	if res = get(hdr); res.status != 401 || res.body != "cert_binding_mismatch" {
		t.Fatalf("untrusted peer: %d %q", res.status, res.body)
	}
	// The untrusted header never reaches a later handler.
	if res = get(hdr, f.token(t, nil)); res.status != 200 || res.body != "ok header=" {
		t.Fatalf("untrusted peer, unbound token: %d %q", res.status, res.body)
	}
}
