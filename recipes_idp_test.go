package oauth2jwt

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	jose "github.com/go-jose/go-jose/v4"
)

// The recipes of the README (testdata/recipes/*.caddyfile), each run with
// tokens and key sets shaped as that identity provider issues them, as
// documented publicly by the provider. Only the key source of each provider
// is changed (to a JWKS on 127.0.0.1); issuers, audiences, algorithms,
// tenants, rules and forwarding are the recipe's. Every accepted token is
// sent twice: the second request is served from the verified-token cache
// and must look exactly like the first to the next handler and upstream.

// recipeFixture is a recipe's oauth2_jwt handler, provisioned, with what
// the recipe hands on after it.
type recipeFixture struct {
	h *Handler
	// headerUp holds the reverse_proxy header_up lines of the recipe:
	// header name -> the placeholder text the recipe writes.
	headerUp map[string]string
	// body is the recipe's respond body, when it answers itself.
	body string
}

// loadRecipe adapts testdata/recipes/<name>.caddyfile, takes its one
// oauth2_jwt handler, lets keySource replace each provider's key source,
// and provisions the handler with its keys loaded.
func loadRecipe(t *testing.T, name string, keySource func(name string, p *Provider)) *recipeFixture {
	t.Helper()
	file := filepath.Join("testdata", "recipes", name+".caddyfile")
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, map[string]any{"filename": file})
	if err != nil || len(warnings) > 0 {
		t.Fatalf("adapting %s: %v %v", file, err, warnings)
	}
	var root any
	if err := json.Unmarshal(adapted, &root); err != nil {
		t.Fatal(err)
	}
	var raws []json.RawMessage
	recipeHandlers(root, &raws)
	if len(raws) != 1 {
		t.Fatalf("%s: %d oauth2_jwt handlers, want 1", file, len(raws))
	}
	h := new(Handler)
	if err := json.Unmarshal(raws[0], h); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for pname, p := range h.Providers {
		keySource(pname, p)
	}
	fx := &recipeFixture{h: h, headerUp: map[string]string{}}
	collectDownstream(root, fx)
	provisionHandler(t, h)
	waitForKeys(t, h)
	return fx
}

// expectKeys checks that every provider loaded n keys of the published set:
// a key skipped by mistake (an x5c or x5t refused, say) would go unnoticed
// by tokens signed with the other keys.
func (fx *recipeFixture) expectKeys(t *testing.T, n int) {
	t.Helper()
	for _, p := range fx.h.providers {
		ks, aerr := p.keys.keysAt(time.Now())
		if aerr != nil {
			t.Fatalf("provider %q: no keys: %v", p.name, aerr)
		}
		if len(ks.all) != n {
			t.Errorf("provider %q: %d keys loaded, want %d", p.name, len(ks.all), n)
		}
	}
}

// collectDownstream records the reverse_proxy header_up values and the
// static_response body of an adapted config.
func collectDownstream(v any, fx *recipeFixture) {
	switch t := v.(type) {
	case map[string]any:
		switch t["handler"] {
		case "reverse_proxy":
			hdrs, _ := t["headers"].(map[string]any)
			req, _ := hdrs["request"].(map[string]any)
			set, _ := req["set"].(map[string]any)
			for name, vals := range set {
				list, _ := vals.([]any)
				if len(list) == 1 {
					fx.headerUp[name], _ = list[0].(string)
				}
			}
		case "static_response":
			fx.body, _ = t["body"].(string)
		}
		for _, e := range t {
			collectDownstream(e, fx)
		}
	case []any:
		for _, e := range t {
			collectDownstream(e, fx)
		}
	}
}

// jwksServer serves one JWK Set, written member by member as the identity
// provider writes it, at every path.
type jwksServer struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func serveJWKS(t *testing.T, keys ...map[string]any) *jwksServer {
	t.Helper()
	doc, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	s := &jwksServer{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// keySource points a provider at this server, keeping the path of its
// jwks_uri (so providers sharing one jwks_uri still share one URL, and
// providers with distinct ones do not); discovery and the default
// discovery at the issuer become /keys.
func (s *jwksServer) keySource(_ string, p *Provider) {
	path := "/keys"
	if p.JWKSURI != "" {
		if u, err := url.Parse(p.JWKSURI); err == nil {
			path = u.Path
		}
	}
	p.JWKSURI, p.DiscoveryURI, p.JWKSFile = s.srv.URL+path, "", ""
}

// b64u is unpadded base64url, as JOSE writes binary values.
func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// rsaJWK returns the public members of an RSA JWK plus extra members.
func rsaJWK(key *rsa.PrivateKey, extra map[string]any) map[string]any {
	m := map[string]any{
		"kty": "RSA",
		"n":   b64u(key.N.Bytes()),
		"e":   b64u(big.NewInt(int64(key.E)).Bytes()),
	}
	maps.Copy(m, extra)
	return m
}

// selfSigned returns the DER of a self-signed certificate of key, as
// identity providers publish in x5c.
func selfSigned(t *testing.T, key *rsa.PrivateKey, cn string) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// x5t is a certificate's SHA-1 thumbprint, base64url (RFC 7517 4.8).
func x5t(der []byte) string {
	sum := sha1.Sum(der)
	return b64u(sum[:])
}

func x5tS256(der []byte) string {
	sum := sha256.Sum256(der)
	return b64u(sum[:])
}

// x5c is a certificate chain member: standard base64 DER (RFC 7517 4.7).
func x5c(der []byte) []string { return []string{base64.StdEncoding.EncodeToString(der)} }

// signRS256 writes a compact JWS with exactly the given header and claims,
// so that tokens carry the header members each IdP writes (or omits).
func signRS256(t *testing.T, key *rsa.PrivateKey, header, claims map[string]any) string {
	t.Helper()
	hb, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := b64u(hb) + "." + b64u(cb)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64u(sig)
}

// times returns iat (also used as nbf and auth_time) and exp for a token
// issued a minute ago.
func times() (iat, exp int64) {
	now := time.Now()
	return now.Add(-time.Minute).Unix(), now.Add(59 * time.Minute).Unix()
}

// idpCase is one request with an IdP-shaped token through a recipe.
type idpCase struct {
	name       string
	token      string // "" sends no token
	path       string // default /api
	reqHeaders map[string]string
	status     int
	reason     string // {http.auth.jwt.error}; "" when accepted
	// forwarded: every forward_claim header of the recipe, as the next
	// handler must see it ("" = absent). Required for accepted requests.
	forwarded map[string]string
	// upstream: every header_up line of the recipe, resolved. Required
	// for accepted requests; always "" on rejected ones.
	upstream     map[string]string
	placeholders map[string]string
	body         string // the recipe's respond body, resolved
}

// view is everything a request shows to what comes after the handler.
type view struct {
	status       int
	challenge    string
	respHeaders  http.Header
	nextHeaders  http.Header
	placeholders map[string]string
}

func (fx *recipeFixture) serveCase(t *testing.T, c idpCase) (view, result) {
	t.Helper()
	path := c.path
	if path == "" {
		path = "/api"
	}
	req := httptest.NewRequest(http.MethodGet, "https://api.example.com"+path, nil)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range c.reqHeaders {
		req.Header.Set(k, v)
	}
	res := serve(t, fx.h, req)
	v := view{
		status:       res.status,
		challenge:    res.header.Get("WWW-Authenticate"),
		respHeaders:  res.header.Clone(),
		placeholders: map[string]string{},
	}
	if res.nextSeen != nil {
		v.nextHeaders = res.nextSeen.Header.Clone()
	}
	names := []string{"http.auth.user.id", "http.auth.jwt.provider", "http.auth.jwt.tenant",
		"http.auth.jwt.error", "http.auth.jwt.claims_json"}
	for name := range c.placeholders {
		names = append(names, name)
	}
	for _, name := range names {
		v.placeholders["{"+name+"}"] = res.placeholder(name)
	}
	for hdr, text := range fx.headerUp {
		v.placeholders["header_up "+hdr] = res.repl.ReplaceKnown(text, "")
	}
	if fx.body != "" {
		v.placeholders["body"] = res.repl.ReplaceKnown(fx.body, "")
	}
	return v, res
}

// check compares one request's view with what the case expects.
func (fx *recipeFixture) check(t *testing.T, which string, c idpCase, v view, res result) {
	t.Helper()
	if v.status != c.status {
		t.Errorf("%s request: status %d, want %d (err %v)", which, v.status, c.status, res.err)
	}
	if got := v.placeholders["{http.auth.jwt.error}"]; got != c.reason {
		t.Errorf("%s request: {http.auth.jwt.error} = %q, want %q", which, got, c.reason)
	}
	accepted := c.status == http.StatusOK
	if accepted != (res.nextSeen != nil) {
		t.Errorf("%s request: next handler called = %v, want %v", which, res.nextSeen != nil, accepted)
	}
	if !accepted {
		if !strings.HasPrefix(v.challenge, "Bearer") {
			t.Errorf("%s request: WWW-Authenticate = %q, want a Bearer challenge", which, v.challenge)
		}
		if c.status == http.StatusForbidden && !strings.Contains(v.challenge, `error="insufficient_scope"`) {
			t.Errorf("%s request: WWW-Authenticate = %q, want insufficient_scope", which, v.challenge)
		}
		// An unverified token shows nothing to what follows (handle_errors,
		// logs). A 403 token is verified: its claims stay readable there.
		for hdr := range fx.headerUp {
			if got := v.placeholders["header_up "+hdr]; got != "" && c.status != http.StatusForbidden {
				t.Errorf("%s request: rejected, yet header_up %s resolves to %q", which, hdr, got)
			}
		}
	} else {
		for _, fc := range fx.h.ForwardClaims {
			if _, ok := c.forwarded[fc.Header]; !ok {
				t.Fatalf("case does not say what forward_claim %s %s must forward", fc.Claim, fc.Header)
			}
		}
		for hdr := range fx.headerUp {
			if _, ok := c.upstream[hdr]; !ok {
				t.Fatalf("case does not say what header_up %s %s must send", hdr, fx.headerUp[hdr])
			}
		}
		for hdr, want := range c.forwarded {
			if got := strings.Join(v.nextHeaders.Values(hdr), "|"); got != want {
				t.Errorf("%s request: forwarded %s = %q, want %q", which, hdr, got, want)
			}
		}
		if fx.body != "" && v.placeholders["body"] != c.body {
			t.Errorf("%s request: body %q, want %q", which, v.placeholders["body"], c.body)
		}
	}
	for hdr, want := range c.upstream {
		text, ok := fx.headerUp[hdr]
		if !ok {
			t.Fatalf("the recipe has no header_up %s", hdr)
		}
		if got := v.placeholders["header_up "+hdr]; got != want {
			t.Errorf("%s request: header_up %s %s = %q, want %q", which, hdr, text, got, want)
		}
	}
	for name, want := range c.placeholders {
		if got := v.placeholders["{"+name+"}"]; got != want {
			t.Errorf("%s request: {%s} = %q, want %q", which, name, got, want)
		}
	}
	if accepted && c.token != "" {
		// The placeholder of the whole payload is the payload as signed.
		payload, err := base64.RawURLEncoding.DecodeString(strings.Split(c.token, ".")[1])
		if err != nil {
			t.Fatal(err)
		}
		if got := v.placeholders["{http.auth.jwt.claims_json}"]; got != string(payload) {
			t.Errorf("%s request: {http.auth.jwt.claims_json} = %s, want the signed payload %s", which, got, payload)
		}
	}
}

// run sends the case, and an accepted token a second time, from the
// verified-token cache, which must answer identically.
func (fx *recipeFixture) run(t *testing.T, cases []idpCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			first, res := fx.serveCase(t, c)
			fx.check(t, "first", c, first, res)
			if c.status != http.StatusOK || c.token == "" {
				return
			}
			if fx.h.cache.get(c.token, time.Now()) == nil {
				t.Fatalf("accepted token is not in the verified-token cache")
			}
			second, res := fx.serveCase(t, c)
			fx.check(t, "cached", c, second, res)
			if second.status != first.status || second.challenge != first.challenge {
				t.Errorf("cached request: status %d %q, first %d %q", second.status, second.challenge, first.status, first.challenge)
			}
			if d := differing(first.nextHeaders, second.nextHeaders); d != nil {
				t.Errorf("cached request: headers passed on differ from the first request's: %v", d)
			}
			if d := differing(first.respHeaders, second.respHeaders); d != nil {
				t.Errorf("cached request: response headers differ from the first request's: %v", d)
			}
			for name, v := range first.placeholders {
				if second.placeholders[name] != v {
					t.Errorf("cached request: %s = %q, first request %q", name, second.placeholders[name], v)
				}
			}
		})
	}
}

// differing names the headers whose values differ between a and b (the
// values are not printed: they hold tokens).
func differing(a, b http.Header) []string {
	var out []string
	for k := range a {
		if !slices.Equal(a[k], b[k]) {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// --- Microsoft Entra ID ------------------------------------------------

const (
	entraTenant  = "00000000-1111-2222-3333-444444444444"
	entraTenant2 = "99999999-8888-7777-6666-555555555555"
	entraAPI     = "6e8a5a3c-0b1d-4c5e-9f00-123456789abc" // the API's application (client) id
	entraClient  = "2d4f6a8c-1e3b-4d5f-8a7c-9e0b1c2d3e4f" // a SPA calling it for a user
	entraDaemon  = "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e" // a daemon calling it as itself
	entraUserOID = "7f3c9b1e-5a2d-4e8f-b6c4-0d1e2f3a4b5c"
	entraAppOID  = "3a4b5c6d-7e8f-4901-a2b3-c4d5e6f7a8b9" // the daemon's service principal
)

// entraKeys publishes keys as Entra ID's discovery/keys endpoints do:
// no alg, kid = x5t, the certificate in x5c, and an issuer member.
type entraKeys struct {
	keys []*rsa.PrivateKey
	kids []string
	jwks *jwksServer
}

func newEntraKeys(t *testing.T) *entraKeys {
	t.Helper()
	e := &entraKeys{}
	var set []map[string]any
	for i := range 3 {
		key := rsaKey(i)
		der := selfSigned(t, key, "accounts.accesscontrol.windows.net")
		kid := x5t(der)
		e.keys = append(e.keys, key)
		e.kids = append(e.kids, kid)
		set = append(set, rsaJWK(key, map[string]any{
			"use":    "sig",
			"kid":    kid,
			"x5t":    kid,
			"x5c":    x5c(der),
			"issuer": "https://login.microsoftonline.com/{tenantid}/v2.0",
		}))
	}
	e.jwks = serveJWKS(t, set...)
	return e
}

// v1 signs an Entra v1.0 access token: header typ, alg, x5t and kid.
func (e *entraKeys) v1(t *testing.T, claims map[string]any) string {
	return signRS256(t, e.keys[1], map[string]any{"typ": "JWT", "alg": "RS256", "x5t": e.kids[1], "kid": e.kids[1]}, claims)
}

// v2 signs an Entra v2.0 access token: header typ, alg and kid.
func (e *entraKeys) v2(t *testing.T, claims map[string]any) string {
	return signRS256(t, e.keys[2], map[string]any{"typ": "JWT", "alg": "RS256", "kid": e.kids[2]}, claims)
}

func entraV1Claims(tid string) map[string]any {
	iat, exp := times()
	return map[string]any{
		"aud": "api://" + entraAPI, "iss": "https://sts.windows.net/" + tid + "/",
		"iat": iat, "nbf": iat, "exp": exp,
		"acr": "1", "aio": "AVQAq/8TAAAAx9mK1Xo2yJ3bH0c4pQ==", "amr": []string{"pwd", "mfa"},
		"appid": entraClient, "appidacr": "0", "family_name": "Doe", "given_name": "Jane",
		"ipaddr": "203.0.113.7", "name": "Jane Doe", "oid": entraUserOID, "rh": "0.AXkAAAAAABERIiIzM0REREREA.",
		"roles": []string{"Orders.Read", "Orders.Write"}, "scp": "access_as_user User.Read",
		"sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA", "tid": tid,
		"unique_name": "jane@contoso.com", "upn": "jane@contoso.com", "uti": "fqiBqXLPj0eQa82S-IYFAA", "ver": "1.0",
	}
}

func entraV2Claims(tid string) map[string]any {
	iat, exp := times()
	return map[string]any{
		"aud": entraAPI, "iss": "https://login.microsoftonline.com/" + tid + "/v2.0",
		"iat": iat, "nbf": iat, "exp": exp,
		"aio": "AWQAm/8TAAAAx9mK1Xo2yJ3bH0c4pQ==", "azp": entraClient, "azpacr": "0",
		"name": "Jane Doe", "oid": entraUserOID, "preferred_username": "jane@contoso.com",
		"rh": "0.AXkAAAAAABERIiIzM0REREREA.", "scp": "access_as_user", "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
		"tid": tid, "uti": "gqiBqXLPj0eQa82S-IYFAB", "ver": "2.0",
	}
}

// entraAppClaims are a client-credentials (app-only) token's claims:
// application permissions in roles, no scp, idtyp app.
func entraAppClaims(version string, roles ...string) map[string]any {
	iat, exp := times()
	c := map[string]any{
		"iat": iat, "nbf": iat, "exp": exp,
		"aio": "E2ZgYJjN/L3y2fQ9c8Xb1gA=", "idtyp": "app", "oid": entraAppOID, "rh": "0.AXkAAAAAABERIiIzM0REREREA.",
		"roles": roles, "sub": entraAppOID, "tid": entraTenant, "uti": "hqiBqXLPj0eQa82S-IYFAC", "ver": version,
	}
	if version == "1.0" {
		c["aud"], c["iss"] = "api://"+entraAPI, "https://sts.windows.net/"+entraTenant+"/"
		c["appid"], c["appidacr"], c["idp"] = entraDaemon, "1", "https://sts.windows.net/"+entraTenant+"/"
	} else {
		c["aud"], c["iss"] = entraAPI, "https://login.microsoftonline.com/"+entraTenant+"/v2.0"
		c["azp"], c["azpacr"] = entraDaemon, "1"
	}
	return c
}

func TestRecipeIdPEntra(t *testing.T) {
	e := newEntraKeys(t)
	fx := loadRecipe(t, "entra", e.jwks.keySource)
	fx.expectKeys(t, 3)
	spoof := map[string]string{"X-User-Oid": "spoofed-by-client"}

	wrongAud := entraV2Claims(entraTenant)
	wrongAud["aud"] = "api://" + entraAPI // a v1-style audience on a v2 token
	noScope := entraV2Claims(entraTenant)
	noScope["scp"] = "User.Read"

	fx.run(t, []idpCase{
		{
			name: "v1 delegated", token: e.v1(t, entraV1Claims(entraTenant)), reqHeaders: spoof, status: 200,
			forwarded: map[string]string{"X-User-Oid": entraUserOID},
			placeholders: map[string]string{
				"http.auth.jwt.provider":     "entra_v1",
				"http.auth.jwt.claims.roles": "Orders.Read,Orders.Write",
				"http.auth.jwt.claims.scp":   "access_as_user User.Read",
				"http.auth.jwt.claims.appid": entraClient,
				"http.auth.jwt.claims.amr":   "pwd,mfa",
				"http.auth.jwt.claims.tid":   entraTenant,
			},
		},
		{
			name: "v2 delegated", token: e.v2(t, entraV2Claims(entraTenant)), reqHeaders: spoof, status: 200,
			forwarded: map[string]string{"X-User-Oid": entraUserOID},
			placeholders: map[string]string{
				"http.auth.jwt.provider":     "entra_v2",
				"http.auth.user.id":          "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
				"http.auth.jwt.claims.azp":   entraClient,
				"http.auth.jwt.claims.roles": "",
				"http.auth.jwt.claims.ver":   "2.0",
			},
		},
		{
			name: "v2 app-only", token: e.v2(t, entraAppClaims("2.0", "Orders.ReadWrite.All")), status: 200,
			forwarded: map[string]string{"X-User-Oid": entraAppOID},
			placeholders: map[string]string{
				"http.auth.jwt.provider":     "entra_v2",
				"http.auth.jwt.claims.roles": "Orders.ReadWrite.All",
				"http.auth.jwt.claims.idtyp": "app",
				"http.auth.jwt.claims.scp":   "",
			},
		},
		{
			name: "v1 app-only, two roles", token: e.v1(t, entraAppClaims("1.0", "Orders.Read.All", "Orders.ReadWrite.All")), status: 200,
			forwarded: map[string]string{"X-User-Oid": entraAppOID},
			placeholders: map[string]string{
				"http.auth.jwt.provider":     "entra_v1",
				"http.auth.jwt.claims.roles": "Orders.Read.All,Orders.ReadWrite.All",
				"http.auth.jwt.claims.appid": entraDaemon,
			},
		},
		{name: "app-only without the role", token: e.v2(t, entraAppClaims("2.0", "Orders.Read.All")), status: 403, reason: "forbidden"},
		{name: "delegated without the scope", token: e.v2(t, noScope), status: 403, reason: "forbidden"},
		{name: "v2 token with a v1 audience", token: e.v2(t, wrongAud), status: 401, reason: "bad_audience"},
		{name: "another tenant", token: e.v2(t, entraV2Claims(entraTenant2)), status: 401, reason: "unknown_issuer"},
	})
}

func TestRecipeIdPEntraMultiTenant(t *testing.T) {
	e := newEntraKeys(t)
	fx := loadRecipe(t, "entra_multitenant", e.jwks.keySource)
	fx.expectKeys(t, 3)

	unlisted := entraV2Claims("12345678-aaaa-bbbb-cccc-1234567890ab")
	tidMismatch := entraV2Claims(entraTenant)
	tidMismatch["tid"] = entraTenant2
	wrongAud := entraV2Claims(entraTenant)
	wrongAud["aud"] = "api://" + entraAPI

	fx.run(t, []idpCase{
		{
			name: "first tenant", token: e.v2(t, entraV2Claims(entraTenant)), status: 200,
			upstream: map[string]string{"X-Tenant": entraTenant},
			placeholders: map[string]string{
				"http.auth.jwt.provider": "entra",
				"http.auth.jwt.tenant":   entraTenant,
			},
		},
		{
			name: "second tenant, app-only", token: e.v2(t, func() map[string]any {
				c := entraAppClaims("2.0", "Orders.ReadWrite.All")
				c["iss"], c["tid"] = "https://login.microsoftonline.com/"+entraTenant2+"/v2.0", entraTenant2
				return c
			}()), status: 200,
			upstream: map[string]string{"X-Tenant": entraTenant2},
			placeholders: map[string]string{
				"http.auth.jwt.tenant":       entraTenant2,
				"http.auth.jwt.claims.roles": "Orders.ReadWrite.All",
			},
		},
		{name: "unlisted tenant", token: e.v2(t, unlisted), status: 401, reason: "unknown_issuer", upstream: map[string]string{"X-Tenant": ""}},
		{name: "tid not the issuer's tenant", token: e.v2(t, tidMismatch), status: 401, reason: "bad_claim"},
		{name: "wrong audience", token: e.v2(t, wrongAud), status: 401, reason: "bad_audience"},
	})
}

// --- Keycloak -----------------------------------------------------------

func TestRecipeIdPKeycloak(t *testing.T) {
	sigKey, encKey := rsaKey(0), rsaKey(1)
	sigDER, encDER := selfSigned(t, sigKey, "acme"), selfSigned(t, encKey, "acme")
	const sigKid, encKid = "kR3x9VZ0d1lq2mYh5b8nQeWcTfUoJgLsAiPv7yD4xE6", "uT0pXk4bQ9sLm2Jd8fRc1vYw5nHe3aZg6oKi7tBqW0M"
	// Keycloak lists the realm's encryption key (RSA-OAEP, use enc)
	// before its signing key.
	jwks := serveJWKS(t,
		rsaJWK(encKey, map[string]any{"kid": encKid, "use": "enc", "alg": "RSA-OAEP",
			"x5c": x5c(encDER), "x5t": x5t(encDER), "x5t#S256": x5tS256(encDER)}),
		rsaJWK(sigKey, map[string]any{"kid": sigKid, "use": "sig", "alg": "RS256",
			"x5c": x5c(sigDER), "x5t": x5t(sigDER), "x5t#S256": x5tS256(sigDER)}),
	)
	fx := loadRecipe(t, "keycloak", jwks.keySource)
	fx.expectKeys(t, 1) // the signing key; the encryption key is skipped

	claims := func(realmRoles ...string) map[string]any {
		iat, exp := times()
		return map[string]any{
			"exp": exp, "iat": iat, "auth_time": iat, "jti": "onrtac:6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e6f",
			"iss": "https://sso.example.com/realms/acme", "aud": []string{"orders-api", "account"},
			"sub": "f47ac10b-58cc-4372-a567-0e02b2c3d479", "typ": "Bearer", "azp": "orders-frontend",
			"sid": "2b7e1516-28ae-4d2a-a6ab-f7158809cf4f", "acr": "1",
			"allowed-origins": []string{"https://app.example.com"},
			"realm_access":    map[string]any{"roles": realmRoles},
			"resource_access": map[string]any{
				"orders-api": map[string]any{"roles": []string{"orders-admin"}},
				"account":    map[string]any{"roles": []string{"manage-account", "view-profile"}},
			},
			"scope": "openid profile email", "email_verified": true, "name": "Alice Liddell",
			"preferred_username": "alice", "given_name": "Alice", "family_name": "Liddell", "email": "alice@example.com",
		}
	}
	sign := func(key *rsa.PrivateKey, kid string, c map[string]any) string {
		return signRS256(t, key, map[string]any{"alg": "RS256", "typ": "JWT", "kid": kid}, c)
	}
	noMapper := claims("orders-user")
	noMapper["aud"] = "account" // the client has no audience mapper

	spoof := map[string]string{"X-User-Name": "admin", "X-User-Roles": "orders-admin"}
	fx.run(t, []idpCase{
		{
			name: "realm role", token: sign(sigKey, sigKid, claims("default-roles-acme", "offline_access", "uma_authorization", "orders-user")),
			reqHeaders: spoof, status: 200,
			forwarded: map[string]string{
				"X-User-Name":  "alice",
				"X-User-Roles": "default-roles-acme,offline_access,uma_authorization,orders-user",
			},
			placeholders: map[string]string{
				"http.auth.jwt.provider":                                "keycloak",
				"http.auth.user.id":                                     "f47ac10b-58cc-4372-a567-0e02b2c3d479",
				"http.auth.jwt.claims.realm_access.roles":               "default-roles-acme,offline_access,uma_authorization,orders-user",
				"http.auth.jwt.claims.resource_access.orders-api.roles": "orders-admin",
				"http.auth.jwt.claims.aud":                              "orders-api,account",
				"http.auth.jwt.claims.scope":                            "openid profile email",
				"http.auth.jwt.claims.azp":                              "orders-frontend",
			},
		},
		{
			// orders-admin as a client role (resource_access) is not a
			// realm role: the rule reads realm_access.roles only.
			name: "client role only", token: sign(sigKey, sigKid, claims("default-roles-acme", "offline_access")),
			status: 403, reason: "forbidden",
		},
		{name: "no audience mapper", token: sign(sigKey, sigKid, noMapper), status: 401, reason: "bad_audience"},
		{
			// The encryption key is never a verification key.
			name: "signed with the encryption key", token: sign(encKey, encKid, claims("orders-user")),
			status: 401, reason: "unknown_key",
		},
	})
}

// --- AWS Cognito --------------------------------------------------------

func TestRecipeIdPCognito(t *testing.T) {
	// Cognito kids are standard base64, with + / and = padding.
	const kid1, kid2 = "abcdEFGH1234+/xyz=", "1234ABCDefgh/+XYZ5678ijklMNOPqrst90uvwxYZ0="
	k1, k2 := rsaKey(0), rsaKey(2)
	jwks := serveJWKS(t,
		rsaJWK(k1, map[string]any{"alg": "RS256", "kid": kid1, "use": "sig"}),
		rsaJWK(k2, map[string]any{"alg": "RS256", "kid": kid2, "use": "sig"}),
	)
	fx := loadRecipe(t, "cognito", jwks.keySource)
	fx.expectKeys(t, 2)

	const iss = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEfGhI"
	idToken := func(groups ...string) map[string]any {
		iat, exp := times()
		c := map[string]any{
			"sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "email_verified": true, "iss": iss,
			"cognito:username": "alice", "origin_jti": "bbbbbbbb-cccc-dddd-eeee-ffffffffffff",
			"aud": "1example23456789", "event_id": "cccccccc-dddd-eeee-ffff-000000000000",
			"token_use": "id", "auth_time": iat, "exp": exp, "iat": iat,
			"jti": "dddddddd-eeee-ffff-0000-111111111111", "email": "alice@example.com",
		}
		if groups != nil {
			c["cognito:groups"] = groups
		}
		return c
	}
	// Cognito's header has kid and alg only.
	sign := func(c map[string]any) string {
		return signRS256(t, k2, map[string]any{"kid": kid2, "alg": "RS256"}, c)
	}
	iat, exp := times()
	access := map[string]any{
		"sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "cognito:groups": []string{"admins"}, "iss": iss,
		"version": 2, "client_id": "1example23456789", "origin_jti": "bbbbbbbb-cccc-dddd-eeee-ffffffffffff",
		"event_id": "cccccccc-dddd-eeee-ffff-000000000000", "token_use": "access",
		"scope": "aws.cognito.signin.user.admin", "auth_time": iat, "exp": exp, "iat": iat,
		"jti": "eeeeeeee-ffff-0000-1111-222222222222", "username": "alice",
	}
	wrongAud := idToken("admins")
	wrongAud["aud"] = "2other98765432"

	fx.run(t, []idpCase{
		{
			name: "ID token of an admin", token: sign(idToken("admins", "developers")), status: 200,
			placeholders: map[string]string{
				"http.auth.jwt.provider":                "cognito",
				"http.auth.user.id":                     "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
				"http.auth.jwt.claims.cognito:groups":   "admins,developers",
				"http.auth.jwt.claims.cognito:username": "alice",
				"http.auth.jwt.claims.email_verified":   "true",
				"http.auth.jwt.claims.token_use":        "id",
			},
		},
		{
			name: "signed by the first key", token: signRS256(t, k1, map[string]any{"kid": kid1, "alg": "RS256"}, idToken("admins")),
			status: 200, placeholders: map[string]string{"http.auth.jwt.claims.cognito:groups": "admins"},
		},
		{name: "not in the group", token: sign(idToken("developers")), status: 403, reason: "forbidden"},
		{name: "in no group", token: sign(idToken()), status: 403, reason: "forbidden"},
		{name: "access token (no aud)", token: sign(access), status: 401, reason: "missing_claim"},
		{name: "another app client", token: sign(wrongAud), status: 401, reason: "bad_audience"},
	})
}

// --- Auth0 --------------------------------------------------------------

func TestRecipeIdPAuth0(t *testing.T) {
	cur, next := rsaKey(0), rsaKey(3)
	curDER, nextDER := selfSigned(t, cur, "example.eu.auth0.com"), selfSigned(t, next, "example.eu.auth0.com")
	const curKid, nextKid = "Xb9qL2mN4pR6sT8vW0yZ1", "Ac3eG5iK7mO9qS1uW3yB5"
	jwks := serveJWKS(t,
		rsaJWK(cur, map[string]any{"use": "sig", "kid": curKid, "x5t": x5t(curDER), "x5c": x5c(curDER), "alg": "RS256"}),
		rsaJWK(next, map[string]any{"use": "sig", "kid": nextKid, "x5t": x5t(nextDER), "x5c": x5c(nextDER), "alg": "RS256"}),
	)
	fx := loadRecipe(t, "auth0", jwks.keySource)
	fx.expectKeys(t, 2)

	const iss = "https://example.eu.auth0.com/"
	userToken := func(scope string) map[string]any {
		iat, exp := times()
		return map[string]any{
			"iss": iss, "sub": "auth0|64b7f3c2a1e5d4c3b2a19876",
			"aud": []string{"https://api.example.com", "https://example.eu.auth0.com/userinfo"},
			"iat": iat, "exp": exp, "azp": "kT3mZ8qV1xR5nW7yB2cD4fG6hJ9lP0sA", "scope": scope,
			"permissions": []string{"read:orders", "write:orders"},
		}
	}
	sign := func(c map[string]any) string {
		return signRS256(t, cur, map[string]any{"alg": "RS256", "typ": "JWT", "kid": curKid}, c)
	}
	iat, exp := times()
	m2m := map[string]any{
		"iss": iss, "sub": "kT3mZ8qV1xR5nW7yB2cD4fG6hJ9lP0sA@clients", "aud": "https://api.example.com",
		"iat": iat, "exp": exp, "scope": "read:orders", "gty": "client-credentials",
		"azp": "kT3mZ8qV1xR5nW7yB2cD4fG6hJ9lP0sA", "permissions": []string{"read:orders"},
	}
	otherAPI := userToken("openid read:orders")
	otherAPI["aud"] = []string{"https://other.example.com", "https://example.eu.auth0.com/userinfo"}
	noSlash := userToken("read:orders")
	noSlash["iss"] = "https://example.eu.auth0.com"

	fx.run(t, []idpCase{
		{
			name: "user token, audience array", token: sign(userToken("openid profile email read:orders")), status: 200,
			upstream: map[string]string{"X-User-Id": "auth0|64b7f3c2a1e5d4c3b2a19876"},
			placeholders: map[string]string{
				"http.auth.jwt.provider":           "auth0",
				"http.auth.jwt.claims.aud":         "https://api.example.com,https://example.eu.auth0.com/userinfo",
				"http.auth.jwt.claims.permissions": "read:orders,write:orders",
				"http.auth.jwt.claims.scope":       "openid profile email read:orders",
			},
		},
		{
			name: "machine-to-machine token, next key", status: 200,
			token:    signRS256(t, next, map[string]any{"alg": "RS256", "typ": "JWT", "kid": nextKid}, m2m),
			upstream: map[string]string{"X-User-Id": "kT3mZ8qV1xR5nW7yB2cD4fG6hJ9lP0sA@clients"},
			placeholders: map[string]string{
				"http.auth.jwt.claims.gty":         "client-credentials",
				"http.auth.jwt.claims.permissions": "read:orders",
			},
		},
		{
			name: "public path without a token", path: "/health", status: 200,
			upstream:     map[string]string{"X-User-Id": ""},
			placeholders: map[string]string{"http.auth.jwt.provider": ""},
		},
		{name: "scope missing", token: sign(userToken("openid profile email")), status: 403, reason: "forbidden"},
		{name: "token for another API", token: sign(otherAPI), status: 401, reason: "bad_audience"},
		{name: "issuer without the trailing slash", token: sign(noSlash), status: 401, reason: "unknown_issuer"},
		{name: "no token", status: 400, reason: "missing_token"},
	})
}

// --- Google -------------------------------------------------------------

func TestRecipeIdPGoogle(t *testing.T) {
	k1, k2 := rsaKey(0), rsaKey(1)
	const kid1, kid2 = "a3b8c1d4e5f60718293a4b5c6d7e8f9012345678", "0f1e2d3c4b5a69788796a5b4c3d2e1f0abcdef12"
	jwks := serveJWKS(t,
		rsaJWK(k1, map[string]any{"e": "AQAB", "alg": "RS256", "use": "sig", "kid": kid1}),
		rsaJWK(k2, map[string]any{"e": "AQAB", "alg": "RS256", "use": "sig", "kid": kid2}),
	)
	fx := loadRecipe(t, "google", jwks.keySource)
	fx.expectKeys(t, 2)
	if len(fx.h.providers) != 2 {
		t.Fatalf("%d providers, want one per issuer spelling", len(fx.h.providers))
	}
	if fx.h.providers[0].keys != fx.h.providers[1].keys {
		t.Errorf("the two Google providers do not share one key cache")
	}

	const client = "123456789012-abcdefghijklmnopqrstuvwxyz012345.apps.googleusercontent.com"
	idToken := func(iss string, hd any, verified bool) map[string]any {
		iat, exp := times()
		c := map[string]any{
			"iss": iss, "azp": client, "aud": client, "sub": "110169484474386276334",
			"email": "alice@example.com", "email_verified": verified, "at_hash": "HK6E_P6Dh8Y93mRNtsDB1Q",
			"name": "Alice Liddell", "picture": "https://lh3.googleusercontent.com/a/ACg8ocK",
			"given_name": "Alice", "family_name": "Liddell", "iat": iat, "exp": exp,
		}
		if hd != nil {
			c["hd"] = hd
		}
		return c
	}
	sign := func(c map[string]any) string {
		return signRS256(t, k2, map[string]any{"alg": "RS256", "kid": kid2, "typ": "JWT"}, c)
	}
	gmail := idToken("https://accounts.google.com", nil, true)
	gmail["email"] = "alice@gmail.com"
	otherClient := idToken("https://accounts.google.com", "example.com", true)
	otherClient["aud"] = "987654321098-zyxwvutsrqponmlkjihgfedcba543210.apps.googleusercontent.com"

	accepted := func(provider string) map[string]string {
		return map[string]string{
			"http.auth.jwt.provider":              provider,
			"http.auth.user.id":                   "110169484474386276334",
			"http.auth.jwt.claims.email_verified": "true",
			"http.auth.jwt.claims.hd":             "example.com",
		}
	}
	fx.run(t, []idpCase{
		{
			name: "iss with scheme", token: sign(idToken("https://accounts.google.com", "example.com", true)), status: 200,
			upstream: map[string]string{"X-User-Email": "alice@example.com"}, placeholders: accepted("google"),
		},
		{
			name: "iss without scheme", token: sign(idToken("accounts.google.com", "example.com", true)), status: 200,
			upstream: map[string]string{"X-User-Email": "alice@example.com"}, placeholders: accepted("google_no_scheme"),
		},
		{name: "email not verified", token: sign(idToken("accounts.google.com", "example.com", false)), status: 403, reason: "forbidden"},
		{name: "another hosted domain", token: sign(idToken("https://accounts.google.com", "example.org", true)), status: 403, reason: "forbidden"},
		{name: "consumer account (no hd)", token: sign(gmail), status: 403, reason: "forbidden"},
		{name: "another OAuth client", token: sign(otherClient), status: 401, reason: "bad_audience"},
		{name: "iss http scheme", token: sign(idToken("http://accounts.google.com", "example.com", true)), status: 401, reason: "unknown_issuer"},
	})
}

// --- Okta ---------------------------------------------------------------

func TestRecipeIdPOkta(t *testing.T) {
	key := rsaKey(2)
	const kid = "Vs9kW2pLx7QmT4nR1bYc8dFh3jKz6uAe0gIo5sNq2Xw"
	jwks := serveJWKS(t, rsaJWK(key, map[string]any{"alg": "RS256", "kid": kid, "use": "sig"}))
	fx := loadRecipe(t, "okta", jwks.keySource)
	fx.expectKeys(t, 1)

	claims := func(scp ...string) map[string]any {
		iat, exp := times()
		return map[string]any{
			"ver": 1, "jti": "AT.Zx8bXkLm3pQr7sT1uV5wY9zA2cE4gI6kM0oR_3h", "iss": "https://example.okta.com/oauth2/default",
			"aud": "api://default", "iat": iat, "exp": exp, "cid": "0oa1b2c3d4e5f6g7h8i9", "uid": "00u1a2b3c4d5e6f7g8h9",
			"scp": scp, "auth_time": iat, "sub": "alice@example.com",
		}
	}
	// Okta's header: kid and alg, no typ.
	sign := func(c map[string]any) string {
		return signRS256(t, key, map[string]any{"kid": kid, "alg": "RS256"}, c)
	}
	wrongAud := claims("orders.read")
	wrongAud["aud"] = "api://orders"

	fx.run(t, []idpCase{
		{
			name: "access token", token: sign(claims("openid", "orders.read")), status: 200,
			upstream: map[string]string{"X-User-Id": "00u1a2b3c4d5e6f7g8h9"},
			placeholders: map[string]string{
				"http.auth.jwt.provider":   "okta",
				"http.auth.user.id":        "alice@example.com",
				"http.auth.jwt.claims.scp": "openid,orders.read",
				"http.auth.jwt.claims.cid": "0oa1b2c3d4e5f6g7h8i9",
				"http.auth.jwt.claims.ver": "1",
			},
		},
		{name: "scope missing", token: sign(claims("openid", "profile")), status: 403, reason: "forbidden"},
		{name: "another authorization server's audience", token: sign(wrongAud), status: 401, reason: "bad_audience"},
	})
}

// --- A local JWKS file --------------------------------------------------

func TestRecipeIdPLocalJWKS(t *testing.T) {
	dir := t.TempDir()
	// As `caddy oauth2-jwt keygen` writes them.
	priv, pub, err := generateKey(jose.ES256, "")
	if err != nil {
		t.Fatal(err)
	}
	otherPriv, _, err := generateKey(jose.ES256, "")
	if err != nil {
		t.Fatal(err)
	}
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	// The key source stays a jwks_file, at a path of this test.
	fx := loadRecipe(t, "local_jwks", func(_ string, p *Provider) { p.JWKSFile = jwksFile })
	fx.expectKeys(t, 1)

	// As `caddy oauth2-jwt token` mints them.
	mint := func(key []byte, aud string) string {
		tok, err := mintToken(key, mintOptions{iss: "https://issuer.internal", aud: []string{aud}, sub: "alice",
			ttl: time.Hour, claims: []string{"scope=read write", `roles=["a","b"]`}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	fx.run(t, []idpCase{
		{
			name: "keygen and token", token: mint(priv, "internal-api"), status: 200, body: "hello alice",
			placeholders: map[string]string{
				"http.auth.jwt.provider":     "local",
				"http.auth.jwt.claims.scope": "read write",
				"http.auth.jwt.claims.roles": "a,b",
			},
		},
		{name: "no token", status: 401, reason: "missing_token"},
		{name: "another audience", token: mint(priv, "other-api"), status: 401, reason: "bad_audience"},
		{name: "another key", token: mint(otherPriv, "internal-api"), status: 401, reason: "unknown_key"},
	})

	// The recipe's realm is in every challenge; a missing token gets 401.
	res := serve(t, fx.h, bearer(""))
	if got := res.header.Get("WWW-Authenticate"); res.status != 401 || !strings.HasPrefix(got, `Bearer realm="internal"`) {
		t.Errorf("no token: %d %q, want 401 with realm=\"internal\"", res.status, got)
	}
	res = serve(t, fx.h, bearer(mint(priv, "other-api")))
	if got := res.header.Get("WWW-Authenticate"); !strings.Contains(got, `realm="internal"`) {
		t.Errorf("wrong audience: challenge %q, want realm=\"internal\"", got)
	}
}

// TestRecipeIdPCoverage makes sure every recipe has a test above.
func TestRecipeIdPCoverage(t *testing.T) {
	// mcp.caddyfile names no identity provider; mcp_test.go runs it end
	// to end with an MCP client.
	tested := map[string]bool{"mcp": true, "auth0": true, "cognito": true, "entra": true, "entra_multitenant": true,
		"google": true, "keycloak": true, "local_jwks": true, "okta": true}
	files, err := filepath.Glob("testdata/recipes/*.caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recipes: %v", err)
	}
	for _, f := range files {
		if name := strings.TrimSuffix(filepath.Base(f), ".caddyfile"); !tested[name] {
			t.Errorf("recipe %s has no test with its identity provider's tokens", name)
		}
	}
}
