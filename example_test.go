package oauth2jwt

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard" // file_server, rewrite, respond, ...
)

// The sites of Caddyfile.example, as the README's Set-up section calls them.
const (
	exampleAPI = "http://127.0.0.1:9080"
	exampleIdP = "http://127.0.0.1:9081"
)

// exampleAdminLine is the admin line of Caddyfile.example's global options.
var exampleAdminLine = regexp.MustCompile(`(?m)^\tadmin [^\n]*$`)

// exampleForTester returns Caddyfile.example with only its global options
// block changed for caddytest: the admin API on caddytest's
// localhost:2999, and no grace period when the next test loads its config.
// The site blocks are kept byte for byte.
func exampleForTester(t *testing.T, example string) string {
	t.Helper()
	start := strings.Index(example, "\n{\n")
	if start < 0 {
		t.Fatal("Caddyfile.example: no global options block (a line `{`)")
	}
	start++
	end := strings.Index(example[start:], "\n}\n")
	if end < 0 {
		t.Fatal("Caddyfile.example: the global options block is never closed")
	}
	end += start + len("\n}\n")
	globals := example[start:end]
	if n := len(exampleAdminLine.FindAllString(globals, -1)); n != 1 {
		t.Fatalf("Caddyfile.example: want one admin line in the global options, found %d:\n%s", n, globals)
	}
	globals = exampleAdminLine.ReplaceAllLiteralString(globals, "\tadmin localhost:2999\n\tgrace_period 1ns")
	return example[:start] + globals + example[end:]
}

// exampleGet sends a GET to url with a bearer token (none when empty).
func exampleGet(t *testing.T, tc *caddytest.Tester, url, token string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := tc.Client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// TestExampleCaddyfileListensOnLoopback adapts Caddyfile.example as it is
// and checks that every HTTP server and the admin API listen on loopback
// only: a site address such as http://127.0.0.1:9080 alone would listen on
// every interface.
func TestExampleCaddyfileListensOnLoopback(t *testing.T) {
	data, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(data, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatalf("adapt Caddyfile.example: %v", err)
	}
	var cfg struct {
		Admin struct {
			Listen string `json:"listen"`
		} `json:"admin"`
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Apps.HTTP.Servers) == 0 {
		t.Fatalf("adapted Caddyfile.example has no HTTP server:\n%s", out)
	}
	listeners := map[string]bool{}
	for name, srv := range cfg.Apps.HTTP.Servers {
		if len(srv.Listen) == 0 {
			t.Errorf("server %s: no listen address", name)
		}
		for _, addr := range srv.Listen {
			listeners[addr] = true
			host, _, err := net.SplitHostPort(addr)
			if err != nil || host != "127.0.0.1" {
				t.Errorf("server %s listens on %q, want 127.0.0.1:<port>", name, addr)
			}
		}
	}
	for _, want := range []string{"127.0.0.1:9080", "127.0.0.1:9081"} {
		if !listeners[want] {
			t.Errorf("no server listens on %s (listeners %v)", want, listeners)
		}
	}
	if host, _, err := net.SplitHostPort(cfg.Admin.Listen); err != nil || (host != "localhost" && host != "127.0.0.1") {
		t.Errorf("admin listens on %q, want loopback", cfg.Admin.Listen)
	}
}

// TestIntegrationExampleCaddyfile runs Caddyfile.example (site blocks
// unchanged) in a real Caddy and checks what the README's Set-up section
// promises: a public /health, 400 without a token, 200 with demo/token.jwt;
// and that the demo identity provider serves the discovery document and the
// JWKS and nothing else, the demo's private key and token included.
func TestIntegrationExampleCaddyfile(t *testing.T) {
	data, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile("demo/token.jwt")
	if err != nil {
		t.Fatal(err)
	}
	tc := newIntegrationTester(t, exampleForTester(t, string(data)), "caddyfile")

	t.Run("identity provider", func(t *testing.T) {
		discovery := exampleGet(t, tc, exampleIdP+"/.well-known/openid-configuration", "")
		if discovery.status != http.StatusOK {
			t.Fatalf("discovery: status %d, want 200", discovery.status)
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal([]byte(discovery.body), &doc); err != nil {
			t.Fatalf("discovery: %v in %q", err, discovery.body)
		}
		if doc.Issuer != exampleIdP || doc.JWKSURI != exampleIdP+"/jwks.json" {
			t.Errorf("discovery: issuer %q, jwks_uri %q", doc.Issuer, doc.JWKSURI)
		}

		jwks := exampleGet(t, tc, doc.JWKSURI, "")
		if jwks.status != http.StatusOK {
			t.Fatalf("JWKS: status %d, want 200", jwks.status)
		}
		var set struct {
			Keys []map[string]any `json:"keys"`
		}
		if err := json.Unmarshal([]byte(jwks.body), &set); err != nil || len(set.Keys) == 0 {
			t.Fatalf("JWKS: no keys (%v) in %q", err, jwks.body)
		}
		for _, k := range set.Keys {
			if _, private := k["d"]; private {
				t.Errorf("JWKS key %v carries private key material", k["kid"])
			}
		}

		for _, res := range []response{discovery, jwks} {
			if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if cc := res.header.Get("Cache-Control"); cc != "max-age=300" {
				t.Errorf("Cache-Control %q, want max-age=300", cc)
			}
		}

		for _, path := range []string{
			"/demo-private.jwk", "/token.jwt", "/openid-configuration.json",
			"/demo/demo-private.jwk", "/", "/.well-known/", "/jwks.json/",
		} {
			res := exampleGet(t, tc, exampleIdP+path, "")
			// The body is not printed: it could be the demo's private key.
			if res.status != http.StatusNotFound || res.body != "" {
				t.Errorf("GET %s on the identity provider: status %d, %d-byte body; want 404, empty", path, res.status, len(res.body))
			}
		}
	})

	t.Run("api", func(t *testing.T) {
		if res := exampleGet(t, tc, exampleAPI+"/health", ""); res.status != http.StatusOK || res.body != "ok" {
			t.Errorf("/health: status %d, body %q; want 200 ok", res.status, res.body)
		}
		if res := exampleGet(t, tc, exampleAPI+"/api", ""); res.status != http.StatusBadRequest {
			t.Errorf("/api without a token: status %d, want 400", res.status)
		}
		// The keys are fetched from the identity provider site of the same
		// Caddy, which may not listen yet when the handler is provisioned: a
		// 503 until the fetch is retried.
		var res response
		waitUntil(t, 10*time.Second, "/api with demo/token.jwt to stop answering 503", func() bool {
			res = exampleGet(t, tc, exampleAPI+"/api", strings.TrimSpace(string(token)))
			return res.status != http.StatusServiceUnavailable
		})
		if res.status != http.StatusOK || !strings.HasPrefix(res.body, "hello demo-user from demo;") {
			t.Errorf("/api with demo/token.jwt: status %d, body %q; want 200 hello demo-user from demo", res.status, res.body)
		}
	})

	t.Run("loopback only", func(t *testing.T) {
		addr := nonLoopbackIPv4(t)
		if addr == "" {
			t.Skip("no non-loopback IPv4 address on this machine")
		}
		for _, port := range []string{"9080", "9081"} {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(addr, port), 2*time.Second)
			if err == nil {
				conn.Close()
				t.Errorf("%s:%s accepts connections; want Caddyfile.example to listen on 127.0.0.1 only", addr, port)
			}
		}
	})
}

// nonLoopbackIPv4 returns an IPv4 address of this machine that is not on a
// loopback interface, or "" when there is none.
func nonLoopbackIPv4(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipnet, ok := a.(*net.IPNet); ok && !ipnet.IP.IsLoopback() && ipnet.IP.To4() != nil {
			return ipnet.IP.String()
		}
	}
	return ""
}
