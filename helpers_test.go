package oauth2jwt

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// Shared test helpers: an identity provider on 127.0.0.1 (discovery and
// JWKS from httptest), standard claims, a clock tests move by hand, and a
// way to run the handler on a request as Caddy would. Keys and token
// building live in jws_test.go.

// claimsFor returns standard valid claims for issuer and audience.
func claimsFor(iss, aud string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": iss,
		"aud": aud,
		"sub": "user-42",
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

// longLived returns claims valid for three days, for tests that move the
// clock past a day (max_stale) and need the token itself to stay valid.
func longLived(c map[string]any) map[string]any {
	c["exp"] = time.Now().Add(72 * time.Hour).Unix()
	return c
}

// testIdP is an identity provider on 127.0.0.1 serving a discovery
// document and a JWKS that tests can change.
type testIdP struct {
	srv       *httptest.Server
	mu        sync.Mutex
	keys      []jose.JSONWebKey
	rawJWKS   []byte // when set, served instead of keys
	status    int    // when non-zero, the JWKS answers this status
	issuerDoc string // issuer written in the discovery document; default: the server URL
	jwksHits  atomic.Int64
	discHits  atomic.Int64
	maxAge    int
}

func newTestIdP(t testing.TB, keys ...*testKey) *testIdP {
	t.Helper()
	idp := &testIdP{}
	for _, k := range keys {
		idp.keys = append(idp.keys, k.public())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		idp.discHits.Add(1)
		idp.mu.Lock()
		iss := idp.issuerDoc
		idp.mu.Unlock()
		if iss == "" {
			iss = idp.srv.URL
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "jwks_uri": idp.srv.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		idp.jwksHits.Add(1)
		idp.mu.Lock()
		status, raw, maxAge := idp.status, idp.rawJWKS, idp.maxAge
		set := jose.JSONWebKeySet{Keys: append([]jose.JSONWebKey(nil), idp.keys...)}
		idp.mu.Unlock()
		if status != 0 {
			http.Error(w, "failing on purpose", status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if maxAge > 0 {
			w.Header().Set("Cache-Control", "public, max-age="+itoa(maxAge))
		}
		if raw != nil {
			_, _ = w.Write(raw)
			return
		}
		_ = json.NewEncoder(w).Encode(set)
	})
	idp.srv = httptest.NewServer(mux)
	t.Cleanup(idp.srv.Close)
	return idp
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func (idp *testIdP) url() string { return idp.srv.URL }

// setKeys replaces the published keys.
func (idp *testIdP) setKeys(keys ...*testKey) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.keys = nil
	for _, k := range keys {
		idp.keys = append(idp.keys, k.public())
	}
}

func (idp *testIdP) setStatus(status int) {
	idp.mu.Lock()
	idp.status = status
	idp.mu.Unlock()
}

func (idp *testIdP) setRawJWKS(raw string) {
	idp.mu.Lock()
	idp.rawJWKS = []byte(raw)
	idp.mu.Unlock()
}

// testClock is the clock of a test's handler and of the key caches it
// creates: the wall clock plus an offset the test moves by hand, so no
// test waits for time to pass.
type testClock struct{ off atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) advance(d time.Duration) { c.off.Add(int64(d)) }

// clocks maps each key cache a test created to the clock it was given.
var clocks sync.Map // *jwksCache -> *testClock

// provisionHandler provisions h in a fresh Caddy context and cleans it up
// at the end of the test. Unless the test set one, h gets its own
// testClock, which the key caches it creates share.
func provisionHandler(t testing.TB, h *Handler) *Handler {
	t.Helper()
	clk := &testClock{}
	if h.deps.now == nil {
		h.deps.now = clk.now
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := h.Provision(ctx); err != nil {
		cancel()
		t.Fatalf("provision: %v", err)
	}
	for _, p := range h.providers {
		if c, ok := p.keys.(*jwksCache); ok {
			clocks.LoadOrStore(c, clk)
		}
	}
	// Rejections log at debug level; keep test and benchmark output quiet
	// (tests that check logs install an observer afterwards).
	h.obs.logger = zap.NewNop()
	t.Cleanup(func() {
		_ = h.Cleanup()
		cancel()
	})
	return h
}

// waitForKeys waits until every remote provider of h has keys (the first
// fetch runs in the background).
func waitForKeys(t testing.TB, h *Handler) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range h.providers {
		for {
			if _, aerr := p.keys.keysAt(h.verifier.now()); aerr == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("provider %q: keys not loaded in time", p.name)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// result is what one request through the handler produced.
type result struct {
	status   int // 200 when next was called, else the caddyhttp.HandlerError status
	err      error
	header   http.Header
	repl     *caddy.Replacer
	nextSeen *http.Request
}

// placeholder returns a placeholder's value as Caddy would render it.
func (r result) placeholder(name string) string {
	return r.repl.ReplaceKnown("{"+name+"}", "")
}

// serve runs one request through h as Caddy's server would.
func serve(t testing.TB, h *Handler, req *http.Request) result {
	t.Helper()
	res, err := serveRequest(h, req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// serveRequest is serve without a testing.TB, for goroutines and fuzz
// targets: it returns an error when the handler's error is not a
// caddyhttp.HandlerError.
// Each setup function runs on the prepared request before the handler
// (to set the variables Caddy's server sets, for example).
func serveRequest(h *Handler, req *http.Request, setup ...func(*http.Request)) (result, error) {
	repl := caddy.NewReplacer()
	w := httptest.NewRecorder()
	req = caddyhttp.PrepareRequest(req, repl, w, nil)
	for _, f := range setup {
		f(req)
	}
	res := result{repl: repl, status: http.StatusOK}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		res.nextSeen = r
		return nil
	})
	res.err = h.ServeHTTP(w, req, next)
	res.header = w.Header()
	if res.err != nil {
		var he caddyhttp.HandlerError
		if !asHandlerError(res.err, &he) {
			res.status = -1
			return res, fmt.Errorf("error is not a caddyhttp.HandlerError: %w", res.err)
		}
		res.status = he.StatusCode
	}
	return res, nil
}

func asHandlerError(err error, he *caddyhttp.HandlerError) bool {
	e, ok := err.(caddyhttp.HandlerError)
	if ok {
		*he = e
	}
	return ok
}

// bearer builds a GET request with an Authorization: Bearer header.
func bearer(token string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, "http://example.test/api", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req
}

// expectReason asserts the status, the reason placeholder and the
// challenge of a rejected request.
func expectReason(t testing.TB, res result, status int, code string) {
	t.Helper()
	if res.status != status {
		t.Fatalf("status = %d, want %d (err %v)", res.status, status, res.err)
	}
	if got := res.placeholder("http.auth.jwt.error"); got != code {
		t.Fatalf("{http.auth.jwt.error} = %q, want %q (err %v)", got, code, res.err)
	}
	if status != http.StatusOK && !strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("WWW-Authenticate = %q, want a Bearer challenge", res.header.Get("WWW-Authenticate"))
	}
	if status == http.StatusOK && res.nextSeen == nil {
		t.Fatalf("next handler not called")
	}
	if status != http.StatusOK && res.nextSeen != nil {
		t.Fatalf("next handler called on a rejected request")
	}
}
