package oauth2jwt

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	jose "github.com/go-jose/go-jose/v4"
)

// MCP servers behind oauth2_jwt: the oauth2_resource_metadata handler, the
// challenges MCP clients read, and the README's MCP recipe run through a
// real Caddy and the MCP TypeScript SDK.

const (
	mcpResource    = "https://mcp.example.com/mcp"
	mcpMetadataURL = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
	mcpRecipe      = "testdata/recipes/mcp.caddyfile"
)

// provisionMetadataHandler provisions m as Caddy would.
func provisionMetadataHandler(t *testing.T, m *MetadataHandler) *MetadataHandler {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := m.Provision(ctx); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return m
}

// mcpHandler provisions h with the fixture's provider, whose audiences
// include the MCP resource.
func mcpHandler(t *testing.T, f *authzFixture, h *Handler) *Handler {
	t.Helper()
	h.Providers = map[string]*Provider{
		"idp": {Issuer: f.idp.url(), Audiences: []string{"api", mcpResource}, JWKSURI: f.idp.url() + "/jwks"},
	}
	return f.handler(t, h)
}

// serveMetadata runs one request through m and reports whether next ran.
func serveMetadata(t *testing.T, m *MetadataHandler, req *http.Request) (*httptest.ResponseRecorder, bool) {
	t.Helper()
	w := httptest.NewRecorder()
	nextRan := false
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		nextRan = true
		return nil
	})
	if err := m.ServeHTTP(w, req, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return w, nextRan
}

func TestMetadataHandlerServesDocument(t *testing.T) {
	m := provisionMetadataHandler(t, &MetadataHandler{
		Resource:             mcpResource,
		AuthorizationServers: []string{"https://auth.example.com", "https://other.example.com/tenant"},
		ScopesSupported:      []string{"mcp:tools", "mcp:resources"},
	})

	w, nextRan := serveMetadata(t, m, httptest.NewRequest(http.MethodGet, mcpMetadataURL, nil))
	if nextRan || w.Code != http.StatusOK {
		t.Fatalf("GET document: status %d, next ran %v", w.Code, nextRan)
	}
	for name, want := range map[string]string{
		"Content-Type":                "application/json",
		"Access-Control-Allow-Origin": "*",
		"Cache-Control":               "max-age=3600",
	} {
		if got := w.Header().Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	want := `{"authorization_servers":["https://auth.example.com","https://other.example.com/tenant"],` +
		`"bearer_methods_supported":["header"],"resource":"https://mcp.example.com/mcp",` +
		`"scopes_supported":["mcp:tools","mcp:resources"]}`
	if !sameJSON(t, w.Body.Bytes(), []byte(want)) {
		t.Errorf("document = %s\nwant %s", w.Body.String(), want)
	}

	head, _ := serveMetadata(t, m, httptest.NewRequest(http.MethodHead, mcpMetadataURL, nil))
	if head.Code != http.StatusOK || head.Body.Len() != 0 || head.Header().Get("Content-Length") != itoa(w.Body.Len()) {
		t.Errorf("HEAD: status %d, body %d bytes, Content-Length %q (GET body is %d bytes)",
			head.Code, head.Body.Len(), head.Header().Get("Content-Length"), w.Body.Len())
	}

	pre := httptest.NewRequest(http.MethodOptions, mcpMetadataURL, nil)
	pre.Header.Set("Origin", "https://inspector.example")
	pre.Header.Set("Access-Control-Request-Method", "GET")
	pre.Header.Set("Access-Control-Request-Headers", "mcp-protocol-version")
	opt, nextRan := serveMetadata(t, m, pre)
	if nextRan || opt.Code != http.StatusNoContent {
		t.Fatalf("preflight: status %d, next ran %v", opt.Code, nextRan)
	}
	for name, want := range map[string]string{
		"Access-Control-Allow-Origin":  "*",
		"Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
		"Access-Control-Allow-Headers": "mcp-protocol-version",
		"Allow":                        "GET, HEAD, OPTIONS",
	} {
		if got := opt.Header().Get(name); got != want {
			t.Errorf("preflight %s = %q, want %q", name, got, want)
		}
	}

	// Everything else goes on untouched.
	for _, req := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "https://mcp.example.com/mcp", nil),
		httptest.NewRequest(http.MethodGet, "https://mcp.example.com/.well-known/oauth-protected-resource", nil),
		httptest.NewRequest(http.MethodGet, mcpMetadataURL+"/more", nil),
		httptest.NewRequest(http.MethodPost, mcpMetadataURL, strings.NewReader("{}")),
	} {
		w, nextRan := serveMetadata(t, m, req)
		if !nextRan || w.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s %s: next ran %v, headers %v; want it passed on untouched", req.Method, req.URL, nextRan, w.Header())
		}
	}
}

// TestMetadataOneDocument: the oauth2_jwt resource_metadata block and the
// oauth2_resource_metadata handler serve the same bytes at the same path
// for the same resource, issuers and scopes.
func TestMetadataOneDocument(t *testing.T) {
	f := newAuthzFixture(t)
	h := mcpHandler(t, f, &Handler{ResourceMetadata: &ResourceMetadata{Resource: mcpResource, ScopesSupported: []string{"mcp:tools"}}})
	m := provisionMetadataHandler(t, &MetadataHandler{
		Resource: mcpResource, AuthorizationServers: []string{f.idp.url()}, ScopesSupported: []string{"mcp:tools"},
	})
	fromJWT := serve(t, h, httptest.NewRequest(http.MethodGet, mcpMetadataURL, nil))
	if fromJWT.nextSeen != nil {
		t.Fatal("oauth2_jwt passed the document request on")
	}
	wj := httptest.NewRecorder()
	h.req.meta.serve(wj, httptest.NewRequest(http.MethodGet, mcpMetadataURL, nil))
	wm, _ := serveMetadata(t, m, httptest.NewRequest(http.MethodGet, mcpMetadataURL, nil))
	if !bytes.Equal(wj.Body.Bytes(), wm.Body.Bytes()) || wj.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("oauth2_jwt serves %s (CORS %q), oauth2_resource_metadata %s",
			wj.Body.String(), wj.Header().Get("Access-Control-Allow-Origin"), wm.Body.String())
	}
}

func TestMetadataHandlerConfigErrors(t *testing.T) {
	cases := []struct {
		name, body, want string
	}{
		{"no resource", "authorization_servers https://auth.example.com", "resource is required"},
		{"no authorization server", "resource " + mcpResource, "authorization_servers: at least one issuer is required"},
		{"plain http resource", "resource http://mcp.example.com/mcp\nauthorization_servers https://auth.example.com", "must be an https URL"},
		{"resource with query", "resource " + mcpResource + "?x=1\nauthorization_servers https://auth.example.com", "must not have a query or fragment"},
		{"relative issuer", "resource " + mcpResource + "\nauthorization_servers auth.example.com", "must be an https URL"},
		{"bad bearer method", "resource " + mcpResource + "\nauthorization_servers https://auth.example.com\nbearer_methods_supported cookie", `"cookie" is not header, body or query`},
		{"scope with a quote", "resource " + mcpResource + "\nauthorization_servers https://auth.example.com\nscopes_supported a\"b", "is not a valid scope token"},
		{"repeated option", "resource " + mcpResource + "\nresource " + mcpResource + "\nauthorization_servers https://auth.example.com", "resource: specified more than once"},
		{"unknown option", "resource " + mcpResource + "\nauthorization_servers https://auth.example.com\nresource_name x", `unrecognized oauth2_resource_metadata option "resource_name"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := caddyfile.NewTestDispenser("oauth2_resource_metadata {\n" + c.body + "\n}")
			err := new(MetadataHandler).UnmarshalCaddyfile(d)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want one containing %q", err, c.want)
			}
		})
	}

	// JSON configuration is checked at provision.
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err := (&MetadataHandler{Resource: mcpResource}).Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), "authorization_servers") {
		t.Fatalf("provision without authorization_servers: %v", err)
	}
	err = (&MetadataHandler{Resource: "https://mcp.example.com/mcp#x", AuthorizationServers: []string{"https://a.example.com"}}).Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), "query or fragment") {
		t.Fatalf("provision with a fragment: %v", err)
	}
}

// TestMCPChallenges: what an MCP client reads from 401 and 403 answers
// when resource_metadata is set.
func TestMCPChallenges(t *testing.T) {
	f := newAuthzFixture(t)
	rules := []Requirement{{Scopes: []string{"mcp:tools"}}, {Scopes: []string{"mcp:resources", "mcp:tools"}}}
	h := mcpHandler(t, f, &Handler{
		Require:          rules,
		ResourceMetadata: &ResourceMetadata{Resource: mcpResource},
	})
	const meta = `resource_metadata="` + mcpMetadataURL + `"`

	missing := serve(t, h, bearer(""))
	expectReason(t, missing, http.StatusUnauthorized, "missing_token")
	if got, want := missing.header.Get("WWW-Authenticate"), `Bearer scope="mcp:tools mcp:resources", `+meta; got != want {
		t.Errorf("no token: challenge = %s\nwant %s", got, want)
	}

	expired := claimsFor(f.idp.url(), "api")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	bad := serve(t, h, bearer(f.key.sign(t, expired, nil)))
	expectReason(t, bad, http.StatusUnauthorized, "expired")
	if got, want := bad.header.Get("WWW-Authenticate"), `Bearer error="invalid_token", error_description="token expired", scope="mcp:tools mcp:resources", `+meta; got != want {
		t.Errorf("expired: challenge = %s\nwant %s", got, want)
	}

	forbidden := serve(t, h, bearer(f.token(t, map[string]any{"scope": "mcp:tools"})))
	expectReason(t, forbidden, http.StatusForbidden, "forbidden")
	if got, want := forbidden.header.Get("WWW-Authenticate"), `Bearer error="insufficient_scope", error_description="token lacks the required scope or claims", scope="mcp:tools mcp:resources", `+meta; got != want {
		t.Errorf("403: challenge = %s\nwant %s", got, want)
	}
	expectReason(t, serve(t, h, bearer(f.token(t, map[string]any{"scope": "mcp:resources mcp:tools"}))), http.StatusOK, "")

	// An explicit 400 still wins; its challenge is RFC 6750's.
	h400 := mcpHandler(t, f, &Handler{MissingTokenStatus: 400, ResourceMetadata: &ResourceMetadata{Resource: mcpResource}})
	res := serve(t, h400, bearer(""))
	expectReason(t, res, http.StatusBadRequest, "missing_token")
	if got := res.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_request", error_description="missing bearer token"` {
		t.Errorf("missing_token_status 400: challenge = %s", got)
	}

	// Without resource_metadata, nothing changes: 400, no scope on 401.
	plain := f.handler(t, &Handler{Require: rules})
	expectReason(t, serve(t, plain, bearer("")), http.StatusBadRequest, "missing_token")
	res = serve(t, plain, bearer(f.key.sign(t, expired, nil)))
	if got := res.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token", error_description="token expired"` {
		t.Errorf("no resource_metadata: 401 challenge = %s", got)
	}
}

// TestInsufficientScopeListsEveryScope: a 403 names every scope the rules
// require, those of the rule that failed and the others, once each, so
// that the client asks for all of them in one authorization request
// (MCP: no incremental challenges); rules without scopes add none.
func TestInsufficientScopeListsEveryScope(t *testing.T) {
	rules := []Requirement{
		{Scopes: []string{"files:read", "files:write"}},
		{Claim: "tier", Values: []string{"gold"}},
		{Any: []Requirement{{Scopes: []string{"files:admin"}}, {Claim: "role", Values: []string{"owner"}}}},
		{Scopes: []string{"files:read"}},
	}
	if got := strings.Join(scopesOf(rules, nil), " "); got != "files:read files:write files:admin" {
		t.Fatalf("scopesOf = %q", got)
	}
	f := newAuthzFixture(t)
	h := mcpHandler(t, f, &Handler{Require: rules, ResourceMetadata: &ResourceMetadata{Resource: mcpResource}})
	want := `Bearer error="insufficient_scope", error_description="token lacks the required scope or claims", scope="files:read files:write files:admin", resource_metadata="` + mcpMetadataURL + `"`
	for name, claims := range map[string]map[string]any{
		"scope rule fails":   {"scope": "files:read", "tier": "gold", "role": "owner"},
		"claim rule fails":   {"scope": "files:read files:write files:admin", "tier": "silver"},
		"any group fails":    {"scope": "files:read files:write", "tier": "gold"},
		"every rule fails":   nil,
		"only scopes missed": {"scp": []string{"files:read"}, "tier": "gold", "role": "owner"},
	} {
		res := serve(t, h, bearer(f.token(t, claims)))
		expectReason(t, res, http.StatusForbidden, "forbidden")
		if got := res.header.Get("WWW-Authenticate"); got != want {
			t.Errorf("%s: challenge = %s\nwant %s", name, got, want)
		}
	}
	expectReason(t, serve(t, h, bearer(f.token(t, map[string]any{"scope": "files:read files:write", "tier": "gold", "role": "owner"}))), http.StatusOK, "")

	claimsOnly := mcpHandler(t, f, &Handler{Require: rules[1:2], ResourceMetadata: &ResourceMetadata{Resource: mcpResource}})
	res := serve(t, claimsOnly, bearer(f.token(t, nil)))
	if got := res.header.Get("WWW-Authenticate"); strings.Contains(got, "scope=") {
		t.Errorf("claim rules only: challenge %s has a scope attribute", got)
	}
}

// TestMCPRecipeInREADME: the README's MCP recipe is the file the tests
// run, formatted as caddy fmt formats it (TestReadmeCaddyfiles checks the
// README's other blocks).
func TestMCPRecipeInREADME(t *testing.T) {
	recipe, err := os.ReadFile(mcpRecipe)
	if err != nil {
		t.Fatal(err)
	}
	if formatted := caddyfile.Format(recipe); !bytes.Equal(formatted, recipe) {
		t.Errorf("%s is not caddy fmt clean; formatted:\n%s", mcpRecipe, formatted)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, []byte("### MCP server")) || !bytes.Contains(readme, append([]byte("```caddyfile\n"), append(recipe, "```"...)...)) {
		t.Errorf("README's MCP server recipe is not %s verbatim", mcpRecipe)
	}
}

// TestMetadataDirectiveOrder: without an order option, the document is
// served before handle blocks and before oauth2_jwt at the site's top.
func TestMetadataDirectiveOrder(t *testing.T) {
	cfg := `example.com {
	handle /mcp* {
		respond "mcp"
	}
	oauth2_jwt {
		provider idp {
			issuer https://auth.example.com
			audience https://example.com/mcp
		}
	}
	oauth2_resource_metadata {
		resource https://example.com/mcp
		authorization_servers https://auth.example.com
	}
}
`
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("adapt: %v %v", err, warnings)
	}
	at := func(handler string) int {
		i := bytes.Index(adapted, []byte(`"handler":"`+handler+`"`))
		if i < 0 {
			t.Fatalf("no %s handler in %s", handler, adapted)
		}
		return i
	}
	if m := at("oauth2_resource_metadata"); m > at("oauth2_jwt") || m > at("static_response") {
		t.Fatalf("oauth2_resource_metadata does not run first: %s", adapted)
	}
}

// mcpUpstream is a minimal Streamable HTTP MCP server (JSON responses, no
// sessions) with one tool, whoami, answering the X-User-Id header. It
// records whether any request reached it with an Authorization header.
type mcpUpstream struct {
	srv     *httptest.Server
	mu      sync.Mutex
	sawAuth bool
	users   []string
}

func newMCPUpstream(t *testing.T) *mcpUpstream {
	t.Helper()
	u := &mcpUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *mcpUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.sawAuth = u.sawAuth || r.Header.Get("Authorization") != ""
	u.users = append(u.users, r.Header.Get("X-User-Id"))
	u.mu.Unlock()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"params"`
	}
	if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if msg.ID == nil { // a notification
		w.WriteHeader(http.StatusAccepted)
		return
	}
	var result any
	switch msg.Method {
	case "initialize":
		result = map[string]any{
			"protocolVersion": msg.Params.ProtocolVersion,
			"capabilities":    map[string]any{"tools": map[string]any{}},
			"serverInfo":      map[string]any{"name": "stub", "version": "1"},
		}
	case "tools/list":
		result = map[string]any{"tools": []any{map[string]any{
			"name": "whoami", "description": "the caller's sub", "inputSchema": map[string]any{"type": "object"},
		}}}
	case "tools/call":
		result = map[string]any{"content": []any{map[string]any{"type": "text", "text": r.Header.Get("X-User-Id")}}}
	default:
		result = nil
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "result": result})
}

// mcpPost sends an MCP initialize request to url with a bearer token
// (none when token is empty).
func mcpPost(t *testing.T, tc *caddytest.Tester, url, token string) response {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := tc.Client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestIntegrationMCPRecipe runs the README's MCP recipe (the common
// `handle /mcp* { oauth2_jwt ...; reverse_proxy ... }` layout plus
// oauth2_resource_metadata) through a real Caddy, with a local IdP and a
// stub MCP server upstream, then the MCP TypeScript SDK's discovery
// against it.
func TestIntegrationMCPRecipe(t *testing.T) {
	key := newTestKey(t, "mcp", jose.ES256, 0)
	idp := newTestIdP(t, key)
	upstream := newMCPUpstream(t)
	recipe, err := os.ReadFile(mcpRecipe)
	if err != nil {
		t.Fatal(err)
	}
	site := strings.NewReplacer(
		"https://mcp.example.com", integrationBase,
		"mcp.example.com {", integrationBase+" {",
		"https://auth.example.com", idp.url(),
		"127.0.0.1:3000", strings.TrimPrefix(upstream.srv.URL, "http://"),
	).Replace(string(recipe))
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	globals := strings.Replace(integrationGlobals, "default_bind 127.0.0.1\n",
		"default_bind 127.0.0.1\n\tlog {\n\t\toutput file "+logFile+"\n\t\tformat json\n\t\tlevel WARN\n\t}\n", 1)
	// A second site whose resource is not an audience: its load-time
	// warning, and none for the recipe's.
	mismatch := `
http://127.0.0.1:9080 {
	oauth2_jwt {
		provider stray {
			issuer ` + idp.url() + `
			audience api
		}
		resource_metadata {
			resource http://127.0.0.1:9080/api
		}
	}
	respond "ok"
}
`
	tc := newIntegrationTester(t, globals+site+mismatch, "caddyfile")

	resource := integrationBase + "/mcp"
	metaURL := integrationBase + "/.well-known/oauth-protected-resource/mcp"
	mint := func(scope string) string {
		c := claimsFor(idp.url(), resource)
		if scope != "" {
			c["scope"] = scope
		}
		return key.sign(t, c, nil)
	}
	valid, wrongScope := mint("openid mcp:tools"), mint("openid")

	// Keys arrive in the background (discovery at the issuer).
	deadline := time.Now().Add(10 * time.Second)
	ok := mcpPost(t, tc, resource, valid)
	for ok.status == http.StatusServiceUnavailable && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		ok = mcpPost(t, tc, resource, valid)
	}

	t.Run("valid token reaches the MCP server, without the token", func(t *testing.T) {
		if ok.status != http.StatusOK || !strings.Contains(ok.body, `"serverInfo"`) {
			t.Fatalf("status %d, body %q", ok.status, ok.body)
		}
		upstream.mu.Lock()
		defer upstream.mu.Unlock()
		if upstream.sawAuth {
			t.Error("the MCP server received an Authorization header")
		}
		if len(upstream.users) == 0 || upstream.users[len(upstream.users)-1] != "user-42" {
			t.Errorf("X-User-Id seen upstream: %v", upstream.users)
		}
	})

	t.Run("no token: 401 pointing at the metadata", func(t *testing.T) {
		res := mcpPost(t, tc, resource, "")
		want := `Bearer scope="mcp:tools", resource_metadata="` + metaURL + `"`
		if res.status != http.StatusUnauthorized || res.header.Get("WWW-Authenticate") != want {
			t.Fatalf("status %d, WWW-Authenticate %q, want 401 %q", res.status, res.header.Get("WWW-Authenticate"), want)
		}
	})

	t.Run("wrong scope: 403 with scope and resource_metadata", func(t *testing.T) {
		res := mcpPost(t, tc, resource, wrongScope)
		want := `Bearer error="insufficient_scope", error_description="token lacks the required scope or claims", scope="mcp:tools", resource_metadata="` + metaURL + `"`
		if res.status != http.StatusForbidden || res.header.Get("WWW-Authenticate") != want {
			t.Fatalf("status %d, WWW-Authenticate %q, want 403 %q", res.status, res.header.Get("WWW-Authenticate"), want)
		}
	})

	t.Run("wrong audience: 401", func(t *testing.T) {
		res := mcpPost(t, tc, resource, key.sign(t, claimsFor(idp.url(), integrationBase), nil))
		if res.status != http.StatusUnauthorized || !strings.Contains(res.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("status %d, WWW-Authenticate %q", res.status, res.header.Get("WWW-Authenticate"))
		}
	})

	t.Run("metadata document, with CORS", func(t *testing.T) {
		res := call(t, tc, "/.well-known/oauth-protected-resource/mcp", "", "Origin: https://inspector.example")
		if res.status != http.StatusOK {
			t.Fatalf("status %d, body %q", res.status, res.body)
		}
		var doc struct {
			Resource      string   `json:"resource"`
			AuthServers   []string `json:"authorization_servers"`
			Scopes        []string `json:"scopes_supported"`
			BearerMethods []string `json:"bearer_methods_supported"`
		}
		if err := json.Unmarshal([]byte(res.body), &doc); err != nil {
			t.Fatalf("body %q: %v", res.body, err)
		}
		if doc.Resource != resource || !slices.Equal(doc.AuthServers, []string{idp.url()}) ||
			!slices.Equal(doc.Scopes, []string{"mcp:tools"}) || !slices.Equal(doc.BearerMethods, []string{"header"}) {
			t.Errorf("document = %+v", doc)
		}
		if res.header.Get("Access-Control-Allow-Origin") != "*" || res.header.Get("Content-Type") != "application/json" {
			t.Errorf("headers = %v", res.header)
		}

		req, _ := http.NewRequest(http.MethodOptions, metaURL, nil)
		req.Header.Set("Origin", "https://inspector.example")
		req.Header.Set("Access-Control-Request-Method", "GET")
		req.Header.Set("Access-Control-Request-Headers", "mcp-protocol-version")
		resp, err := tc.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Methods") != "GET, HEAD, OPTIONS" ||
			resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Access-Control-Allow-Headers") != "mcp-protocol-version" {
			t.Errorf("preflight: status %d, headers %v", resp.StatusCode, resp.Header)
		}
	})

	t.Run("other paths reach the rest of the site", func(t *testing.T) {
		if res := call(t, tc, "/elsewhere", ""); res.status != http.StatusNotFound {
			t.Errorf("GET /elsewhere: status %d", res.status)
		}
	})

	t.Run("load-time warning when the resource is no audience", func(t *testing.T) {
		logs, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatal(err)
		}
		var warnings []map[string]any
		for line := range bytes.SplitSeq(logs, []byte("\n")) {
			var entry map[string]any
			if json.Unmarshal(line, &entry) == nil && strings.Contains(entry["msg"].(string), "not an audience of any provider") {
				warnings = append(warnings, entry)
			}
		}
		if len(warnings) != 1 {
			t.Fatalf("want one audience warning (for the stray site only), got %v\nlog:\n%s", warnings, logs)
		}
		w := warnings[0]
		if w["level"] != "warn" || w["resource"] != "http://127.0.0.1:9080/api" || !slices.Equal(toStrings(w["providers"]), []string{"stray"}) {
			t.Errorf("warning = %v", w)
		}
	})

	t.Run("MCP TypeScript SDK discovers the authorization server", func(t *testing.T) {
		// CI sets OAUTH2JWT_MCP_CLIENT=required, so that this part cannot
		// be skipped there unnoticed.
		skip := t.Skip
		if os.Getenv("OAUTH2JWT_MCP_CLIENT") == "required" {
			skip = t.Fatal
		}
		dir := filepath.Join("testdata", "mcpclient")
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "sdk")); err != nil {
			skip("testdata/mcpclient/node_modules is missing: run `npm ci` in testdata/mcpclient to run the MCP SDK client")
		}
		node, err := exec.LookPath("node")
		if err != nil {
			skip("node is not installed: the MCP SDK client needs Node.js 20 or later")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "discover.mjs")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "MCP_URL="+resource, "MCP_TOKEN="+valid)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("node discover.mjs: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
		}
		var got struct {
			Status           int      `json:"status"`
			ResourceMetadata string   `json:"resource_metadata"`
			Deprecated       string   `json:"resource_metadata_deprecated"`
			Scope            *string  `json:"scope"`
			Error            *string  `json:"error"`
			AuthServers      []string `json:"authorization_servers"`
			Resource         string   `json:"resource"`
			Selected         string   `json:"selected_resource"`
			Discovered       string   `json:"discovered_resource"`
			Tools            []string `json:"tools"`
			WhoAmI           string   `json:"whoami"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
			t.Fatalf("output %q: %v", stdout.String(), err)
		}
		t.Logf("SDK: %s", strings.TrimSpace(stderr.String()))
		if got.Status != http.StatusUnauthorized || got.ResourceMetadata != metaURL || got.Deprecated != metaURL {
			t.Errorf("challenge as the SDK read it: status %d, resource_metadata %q / %q", got.Status, got.ResourceMetadata, got.Deprecated)
		}
		if got.Scope == nil || *got.Scope != "mcp:tools" || got.Error != nil {
			t.Errorf("challenge scope %v, error %v; want mcp:tools and no error", got.Scope, got.Error)
		}
		if !slices.Equal(got.AuthServers, []string{idp.url()}) {
			t.Errorf("authorization servers = %v, want [%s]", got.AuthServers, idp.url())
		}
		if got.Resource != resource || got.Selected != resource || got.Discovered != resource {
			t.Errorf("resource %q, selected %q, discovered without the hint %q; want %q", got.Resource, got.Selected, got.Discovered, resource)
		}
		if !slices.Equal(got.Tools, []string{"whoami"}) || got.WhoAmI != "user-42" {
			t.Errorf("session with the token: tools %v, whoami %q", got.Tools, got.WhoAmI)
		}
	})
}

func toStrings(v any) []string {
	items, _ := v.([]any)
	out := make([]string, 0, len(items))
	for _, it := range items {
		s, _ := it.(string)
		out = append(out, s)
	}
	return out
}
