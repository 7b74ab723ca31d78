package oauth2jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// introEndpoint is an RFC 7662 endpoint on 127.0.0.1 whose answers,
// status and speed tests set.
type introEndpoint struct {
	srv     *httptest.Server
	mu      sync.Mutex
	answers map[string]map[string]any // by token; others are inactive
	status  int                       // when non-zero, answered instead
	rawBody string                    // when set, answered instead of JSON
	ctype   string                    // Content-Type of rawBody; default application/json
	gate    chan struct{}             // when set, calls wait for it to close
	hang    bool                      // calls wait until the client gives up
	calls   atomic.Int64
	lastReq *http.Request
	form    url.Values
}

func newIntroEndpoint(t testing.TB) *introEndpoint {
	t.Helper()
	ep := &introEndpoint{answers: map[string]map[string]any{}}
	ep.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ep.calls.Add(1)
		_ = r.ParseForm()
		ep.mu.Lock()
		ep.lastReq, ep.form = r, r.PostForm
		gate, hang, status, raw, ctype := ep.gate, ep.hang, ep.status, ep.rawBody, ep.ctype
		answer, ok := ep.answers[r.PostForm.Get("token")]
		ep.mu.Unlock()
		if gate != nil {
			<-gate
		}
		if hang {
			<-r.Context().Done()
			return
		}
		if status != 0 {
			http.Error(w, "failing on purpose", status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if raw != "" {
			if ctype != "" {
				w.Header().Set("Content-Type", ctype)
			}
			_, _ = w.Write([]byte(raw))
			return
		}
		if !ok {
			answer = map[string]any{"active": false}
		}
		_ = json.NewEncoder(w).Encode(answer)
	}))
	t.Cleanup(ep.srv.Close)
	return ep
}

func (ep *introEndpoint) set(token string, answer map[string]any) {
	ep.mu.Lock()
	ep.answers[token] = answer
	ep.mu.Unlock()
}

func (ep *introEndpoint) setStatus(s int) {
	ep.mu.Lock()
	ep.status = s
	ep.mu.Unlock()
}

const introIssuer = "https://op.example"

// activeAnswer is a valid answer for the handlers of introHandler.
func activeAnswer(now time.Time) map[string]any {
	return map[string]any{
		"active": true, "iss": introIssuer, "aud": []string{"orders-api"},
		"sub": "user-7", "client_id": "app-1", "username": "alice",
		"scope": "read write", "token_type": "Bearer",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

// frozenClock is a clock that moves only when the test moves it.
type frozenClock struct{ t atomic.Int64 }

func newFrozenClock() *frozenClock {
	c := &frozenClock{}
	c.t.Store(time.Now().UnixNano())
	return c
}
func (c *frozenClock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *frozenClock) advance(d time.Duration) { c.t.Add(int64(d)) }

// introHandler provisions a handler whose provider "op" introspects at
// ep; mod changes the provider before.
func introHandler(t testing.TB, ep *introEndpoint, clk *frozenClock, mod func(*Provider, *Handler)) *Handler {
	t.Helper()
	idp := newTestIdP(t, fixedKey(t, "k1", jose.RS256))
	p := &Provider{
		Issuer: introIssuer, Audiences: []string{"orders-api"}, JWKSURI: idp.url() + "/jwks",
		PersistKeys: new(bool), FetchTimeout: caddy.Duration(200 * time.Millisecond),
		Introspection: &Introspection{Endpoint: ep.srv.URL + "/introspect", ClientID: "orders api", ClientSecret: "s3cret:+"},
	}
	h := &Handler{Providers: map[string]*Provider{"op": p}}
	if mod != nil {
		mod(p, h)
	}
	h.deps.now = clk.now
	return provisionHandler(t, h)
}

func TestIntrospectionAccepts(t *testing.T) {
	for _, method := range []string{"client_secret_basic", "client_secret_post"} {
		t.Run(method, func(t *testing.T) {
			ep := newIntroEndpoint(t)
			clk := newFrozenClock()
			h := introHandler(t, ep, clk, func(p *Provider, h *Handler) {
				p.Introspection.AuthMethod = method
				h.Require = []Requirement{{Scopes: []string{"write"}}}
				h.ForwardClaims = []ClaimHeader{{Claim: "username", Header: "X-User"}}
			})
			ep.set("ory_at_abc", activeAnswer(clk.now()))
			for i := range 2 {
				res := serve(t, h, bearer("ory_at_abc"))
				expectReason(t, res, http.StatusOK, "")
				for name, want := range map[string]string{
					"http.auth.user.id": "user-7", "http.auth.jwt.provider": "op",
					"http.auth.jwt.claims.scope": "read write", "http.auth.jwt.claims.client_id": "app-1",
				} {
					if got := res.placeholder(name); got != want {
						t.Fatalf("request %d: {%s} = %q, want %q", i, name, got, want)
					}
				}
				if got := res.nextSeen.Header.Get("X-User"); got != "alice" {
					t.Fatalf("X-User = %q, want alice", got)
				}
				c, ok := ClaimsFromRequest(res.nextSeen)
				if !ok || c.Subject() != "user-7" || c.Provider() != "op" || c.String("username") != "alice" {
					t.Fatalf("ClaimsFromRequest = %v %v", c, ok)
				}
			}
			if n := ep.calls.Load(); n != 1 {
				t.Fatalf("endpoint called %d times for one token sent twice, want 1", n)
			}
			req := ep.lastReq
			if req.Method != http.MethodPost || req.URL.RawQuery != "" || strings.Contains(req.URL.String(), "ory_at_abc") {
				t.Fatalf("call = %s %s, want a POST without the token in the URL", req.Method, req.URL)
			}
			if ep.form.Get("token") != "ory_at_abc" || ep.form.Get("token_type_hint") != "access_token" {
				t.Fatalf("form = %v", ep.form)
			}
			id, secret, basic := req.BasicAuth()
			if method == "client_secret_basic" {
				if !basic || id != "orders+api" || secret != "s3cret%3A%2B" || ep.form.Has("client_secret") {
					t.Fatalf("basic auth = %q %q %v, form %v", id, secret, basic, ep.form)
				}
			} else if basic || ep.form.Get("client_id") != "orders api" || ep.form.Get("client_secret") != "s3cret:+" {
				t.Fatalf("post auth: basic %v, form %v", basic, ep.form)
			}
		})
	}
}

// Each refused answer is a 401 with its reason, twice, for one call.
func TestIntrospectionRefusals(t *testing.T) {
	clk := newFrozenClock()
	now := clk.now()
	with := func(changes map[string]any) map[string]any {
		a := activeAnswer(now)
		for k, v := range changes {
			if v == nil {
				delete(a, k)
			} else {
				a[k] = v
			}
		}
		return a
	}
	cases := []struct {
		name   string
		answer map[string]any
		status int
		reason string
	}{
		{"inactive", map[string]any{"active": false}, 401, "inactive"},
		{"other aud", with(map[string]any{"aud": "billing-api"}), 401, "bad_audience"},
		{"no aud", with(map[string]any{"aud": nil}), 401, "missing_claim"},
		{"other iss", with(map[string]any{"iss": "https://evil.example"}), 401, "bad_claim"},
		{"refresh token_type", with(map[string]any{"token_type": "refresh_token"}), 401, "bad_claim"},
		{"refresh token_use", with(map[string]any{"token_use": "refresh_token"}), 401, "bad_claim"},
		{"id token_use", with(map[string]any{"token_use": "id"}), 401, "bad_claim"},
		{"expired", with(map[string]any{"exp": now.Add(-time.Minute).Unix()}), 401, "expired"},
		{"nbf ahead", with(map[string]any{"nbf": now.Add(time.Hour).Unix()}), 401, "not_yet_valid"},
		{"bound to a DPoP key, sent as Bearer", with(map[string]any{"cnf": map[string]any{"jkt": strings.Repeat("A", 43)}}), 401, "key_binding_mismatch"},
		{"bound to a certificate, none sent", with(map[string]any{"cnf": map[string]any{"x5t#S256": strings.Repeat("A", 43)}}), 401, "cert_binding_mismatch"},
		{"access token_use", with(map[string]any{"token_use": "access_token"}), 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := newIntroEndpoint(t)
			h := introHandler(t, ep, clk, nil)
			ep.set("opaque-1", tc.answer)
			for range 2 {
				expectReason(t, serve(t, h, bearer("opaque-1")), tc.status, tc.reason)
			}
			if n := ep.calls.Load(); n != 1 {
				t.Fatalf("endpoint called %d times, want 1 (cached)", n)
			}
		})
	}
	t.Run("allow_missing_audience", func(t *testing.T) {
		ep := newIntroEndpoint(t)
		h := introHandler(t, ep, clk, func(p *Provider, _ *Handler) { p.AllowMissingAudience = true })
		ep.set("opaque-1", with(map[string]any{"aud": nil}))
		// An answer with neither aud nor token_type: oidc-provider's
		// (and so Logto's) answer for a refresh token looks like this.
		ep.set("refresh-like", with(map[string]any{"aud": nil, "token_type": nil}))
		for range 2 {
			expectReason(t, serve(t, h, bearer("opaque-1")), 200, "")
			expectReason(t, serve(t, h, bearer("refresh-like")), 401, "bad_claim")
		}
		if n := ep.calls.Load(); n != 2 {
			t.Fatalf("calls = %d, want 2", n)
		}
	})
}

// Rules are re-run on every request: a cached answer of route A does not
// let route B's stricter rule through.
func TestIntrospectionRulesNotCached(t *testing.T) {
	ep := newIntroEndpoint(t)
	clk := newFrozenClock()
	h := introHandler(t, ep, clk, func(_ *Provider, h *Handler) {
		h.Require = []Requirement{{Scopes: []string{"admin"}}}
	})
	ep.set("opaque-1", activeAnswer(clk.now()))
	for range 2 {
		expectReason(t, serve(t, h, bearer("opaque-1")), http.StatusForbidden, "forbidden")
	}
}

func TestIntrospectionFaults(t *testing.T) {
	cases := []struct {
		name  string
		setup func(ep *introEndpoint)
	}{
		{"down", func(ep *introEndpoint) { ep.srv.Close() }},
		{"slow", func(ep *introEndpoint) { ep.mu.Lock(); ep.hang = true; ep.mu.Unlock() }},
		{"500", func(ep *introEndpoint) { ep.setStatus(500) }},
		{"401", func(ep *introEndpoint) { ep.setStatus(401) }},
		{"403", func(ep *introEndpoint) { ep.setStatus(403) }},
		{"redirect", func(ep *introEndpoint) { ep.setStatus(307) }},
		{"not JSON", func(ep *introEndpoint) { ep.mu.Lock(); ep.rawBody = "<html>"; ep.mu.Unlock() }},
		{"no active member", func(ep *introEndpoint) { ep.mu.Lock(); ep.rawBody = `{"sub":"x"}`; ep.mu.Unlock() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := newIntroEndpoint(t)
			clk := newFrozenClock()
			h := introHandler(t, ep, clk, nil)
			core, logs := observer.New(zapcore.ErrorLevel)
			h.providers[0].intro.log = zap.New(core)
			ep.set("cached", activeAnswer(clk.now()))
			expectReason(t, serve(t, h, bearer("cached")), 200, "")
			tc.setup(ep)
			clk.advance(2 * time.Minute) // past cache_ttl (1m), before exp (1h)
			for range 2 {
				res := serve(t, h, bearer("uncached"))
				expectReason(t, res, http.StatusServiceUnavailable, "unavailable")
				if res.header.Get("Retry-After") == "" {
					t.Fatal("503 without Retry-After")
				}
				// The cached positive answer holds until its own exp.
				expectReason(t, serve(t, h, bearer("cached")), 200, "")
			}
			authLogs := logs.FilterMessageSnippet("refuses the client credentials").All()
			if tc.name == "401" || tc.name == "403" {
				if len(authLogs) != 1 || authLogs[0].ContextMap()["provider"] != "op" {
					t.Fatalf("credential error logs = %v, want one naming the provider", authLogs)
				}
			} else if len(authLogs) != 0 {
				t.Fatalf("unexpected credential error log: %v", authLogs)
			}
			for _, e := range logs.All() {
				if strings.Contains(fmt.Sprint(e.ContextMap()), "uncached") || strings.Contains(e.Message, "uncached") {
					t.Fatal("a log line holds the token")
				}
			}
			clk.advance(time.Hour) // past exp
			expectReason(t, serve(t, h, bearer("cached")), 401, "expired")
		})
	}
}

// An answer without exp is reused for at most cache_ttl, faults or not.
func TestIntrospectionNoExpBoundedByTTL(t *testing.T) {
	ep := newIntroEndpoint(t)
	clk := newFrozenClock()
	h := introHandler(t, ep, clk, nil)
	a := activeAnswer(clk.now())
	delete(a, "exp")
	ep.set("opaque-1", a)
	expectReason(t, serve(t, h, bearer("opaque-1")), 200, "")
	ep.setStatus(500)
	clk.advance(59 * time.Second)
	expectReason(t, serve(t, h, bearer("opaque-1")), 200, "")
	clk.advance(time.Second)
	expectReason(t, serve(t, h, bearer("opaque-1")), 503, "unavailable")
}

func TestIntrospectionSingleflight(t *testing.T) {
	ep := newIntroEndpoint(t)
	clk := newFrozenClock()
	h := introHandler(t, ep, clk, nil)
	ep.set("opaque-1", activeAnswer(clk.now()))
	gate := make(chan struct{})
	ep.mu.Lock()
	ep.gate = gate
	ep.mu.Unlock()
	const n = 50
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() {
			res, err := serveRequest(h, bearer("opaque-1"))
			if err != nil {
				t.Error(err)
			}
			statuses[i] = res.status
		})
	}
	fl := &h.providers[0].intro.flight
	deadline := time.Now().Add(5 * time.Second)
	for fl.joined.Load() < n-1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Fatalf("request %d: status %d", i, s)
		}
	}
	if c := ep.calls.Load(); c != 1 {
		t.Fatalf("%d concurrent first uses made %d calls, want 1", n, c)
	}
}

// 10,000 distinct junk tokens cause at most max_rate calls per second
// and at most cache_size entries, while a cached good token keeps passing.
func TestIntrospectionJunkFlood(t *testing.T) {
	ep := newIntroEndpoint(t)
	clk := newFrozenClock()
	h := introHandler(t, ep, clk, func(p *Provider, _ *Handler) {
		p.Introspection.MaxRate = "20/s"
		p.Introspection.CacheSize = 100
	})
	in := h.providers[0].intro
	in.maxWait = 0 // no waiting for a turn: excess is 503 at once
	ep.set("good", activeAnswer(clk.now()))
	expectReason(t, serve(t, h, bearer("good")), 200, "")
	inactive, unavailable := 0, 0
	for i := range 10000 {
		res := serve(t, h, bearer(fmt.Sprintf("junk-%d", i)))
		switch res.status {
		case 401:
			inactive++
		case 503:
			unavailable++
			if res.header.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		default:
			t.Fatalf("junk token: status %d", res.status)
		}
		if i == 5000 {
			clk.advance(2 * time.Minute) // the good token's entry is now due for a refresh
			expectReason(t, serve(t, h, bearer("good")), 200, "")
		}
	}
	// 20 per second: the burst at the start, 20 (+1 for the good token's
	// first call) after the clock moved.
	if c := ep.calls.Load(); c > 42 {
		t.Fatalf("10000 junk tokens made %d calls, want at most 42", c)
	}
	if inactive < 30 || unavailable < 9900 {
		t.Fatalf("inactive %d, unavailable %d", inactive, unavailable)
	}
	if n := in.cache.len(); n > 100 {
		t.Fatalf("cache holds %d entries, want at most cache_size 100", n)
	}
	expectReason(t, serve(t, h, bearer("good")), 200, "")

	// The limit never turns away a token the cache can answer: with the
	// bucket empty, the good token's answer, due for a refresh, is
	// served until its exp.
	clk.advance(2 * time.Minute)
	for i := range 25 {
		serve(t, h, bearer(fmt.Sprintf("more-junk-%d", i)))
	}
	before := ep.calls.Load()
	expectReason(t, serve(t, h, bearer("good")), 200, "")
	if ep.calls.Load() != before {
		t.Fatal("a call was made over max_rate")
	}
}

func TestIntrospectionRevocationWithinTTL(t *testing.T) {
	ep := newIntroEndpoint(t)
	clk := newFrozenClock()
	h := introHandler(t, ep, clk, func(p *Provider, _ *Handler) { p.Introspection.CacheTTL = caddy.Duration(30 * time.Second) })
	ep.set("opaque-1", activeAnswer(clk.now()))
	expectReason(t, serve(t, h, bearer("opaque-1")), 200, "")
	ep.set("opaque-1", map[string]any{"active": false}) // revoked
	clk.advance(29 * time.Second)
	expectReason(t, serve(t, h, bearer("opaque-1")), 200, "")
	clk.advance(time.Second)
	for range 2 {
		expectReason(t, serve(t, h, bearer("opaque-1")), 401, "inactive")
	}
	if c := ep.calls.Load(); c != 2 {
		t.Fatalf("calls = %d, want 2", c)
	}
}

// An exp two seconds ahead is never served after it, with leeway 0s,
// however long cache_ttl is and whether or not the endpoint answers.
func TestIntrospectionNeverPastExp(t *testing.T) {
	for _, down := range []bool{false, true} {
		t.Run(fmt.Sprintf("endpoint down %v", down), func(t *testing.T) {
			ep := newIntroEndpoint(t)
			clk := newFrozenClock()
			h := introHandler(t, ep, clk, func(p *Provider, _ *Handler) {
				zero := caddy.Duration(0)
				p.Leeway = &zero
				p.Introspection.CacheTTL = caddy.Duration(time.Hour)
			})
			// Whole seconds, as an answer's NumericDate is.
			start := time.Unix(clk.now().Unix()+1, 0)
			clk.advance(start.Sub(clk.now()))
			a := activeAnswer(start)
			a["exp"] = start.Add(2 * time.Second).Unix()
			ep.set("opaque-1", a)
			for range 2 {
				expectReason(t, serve(t, h, bearer("opaque-1")), 200, "")
			}
			if down {
				ep.setStatus(503)
			}
			clk.advance(2*time.Second - time.Nanosecond)
			expectReason(t, serve(t, h, bearer("opaque-1")), 200, "")
			clk.advance(time.Nanosecond)
			for range 2 {
				expectReason(t, serve(t, h, bearer("opaque-1")), 401, "expired")
			}
			if c := ep.calls.Load(); c != 1 {
				t.Fatalf("calls = %d, want 1", c)
			}
		})
	}
}

func TestIntrospectionRouting(t *testing.T) {
	clk := newFrozenClock()
	epA, epB := newIntroEndpoint(t), newIntroEndpoint(t)
	idp := newTestIdP(t, fixedKey(t, "k1", jose.RS256))
	mk := func(iss string, ep *introEndpoint, prefix string) *Provider {
		return &Provider{Issuer: iss, Audiences: []string{"orders-api"}, JWKSURI: idp.url() + "/jwks", PersistKeys: new(bool),
			Introspection: &Introspection{Endpoint: ep.srv.URL, ClientID: "c", ClientSecret: "s", TokenPrefix: prefix}}
	}
	h := &Handler{Providers: map[string]*Provider{"hydra": mk(introIssuer, epA, "ory_at_"), "zitadel": mk("https://z.example", epB, "")}}
	h.deps.now = clk.now
	provisionHandler(t, h)
	a := activeAnswer(clk.now())
	epA.set("ory_at_1", a)
	b := activeAnswer(clk.now())
	b["iss"] = "https://z.example"
	epB.set("zz", b)
	epB.set("ory_at_1", b) // never asked: the prefix routes to hydra
	res := serve(t, h, bearer("ory_at_1"))
	expectReason(t, res, 200, "")
	if res.placeholder("http.auth.jwt.provider") != "hydra" || epB.calls.Load() != 0 {
		t.Fatalf("ory_at_ token went to %q (zitadel calls %d)", res.placeholder("http.auth.jwt.provider"), epB.calls.Load())
	}
	res = serve(t, h, bearer("zz"))
	expectReason(t, res, 200, "")
	if res.placeholder("http.auth.jwt.provider") != "zitadel" || epA.calls.Load() != 1 {
		t.Fatal("unprefixed token did not go to the one provider without token_prefix")
	}

	// Only a prefixed provider: other opaque tokens go nowhere.
	h2 := &Handler{Providers: map[string]*Provider{"hydra": mk(introIssuer, epA, "ory_at_")}}
	h2.deps.now = clk.now
	provisionHandler(t, h2)
	before := epA.calls.Load()
	expectReason(t, serve(t, h2, bearer("zz")), 401, "unknown_issuer")
	if epA.calls.Load() != before {
		t.Fatal("a token without the prefix was sent to the prefixed provider")
	}

	// Without introspection an opaque token is malformed, as before.
	h3 := &Handler{Providers: map[string]*Provider{"plain": {Issuer: introIssuer, Audiences: []string{"a"}, JWKSURI: idp.url() + "/jwks", PersistKeys: new(bool)}}}
	provisionHandler(t, h3)
	expectReason(t, serve(t, h3, bearer("zz")), 401, "malformed")
}

func TestIntrospectionConfigErrors(t *testing.T) {
	ok := func() *Introspection {
		return &Introspection{Endpoint: "https://op.example/introspect", ClientID: "c", ClientSecret: "s"}
	}
	mk := func(iss string, in *Introspection) *Provider {
		return &Provider{Issuer: iss, Audiences: []string{"a"}, JWKSURI: "https://op.example/jwks", Introspection: in}
	}
	cases := []struct {
		name string
		ps   map[string]*Provider
		want string
	}{
		{"no endpoint, discovery refused", map[string]*Provider{"a": {Issuer: "http://op.example", Audiences: []string{"a"}, JWKSURI: "https://op.example/jwks",
			Introspection: &Introspection{ClientID: "c", ClientSecret: "s"}}}, "introspection: endpoint: not set, and the discovery document it is read from is refused"},
		{"endpoint with credentials", map[string]*Provider{"a": mk("https://a", func() *Introspection { i := ok(); i.Endpoint = "https://u:p@op.example/i"; return i }())}, "introspection: endpoint: must not hold credentials"},
		{"plain http", map[string]*Provider{"a": mk("https://a", func() *Introspection { i := ok(); i.Endpoint = "http://op.example/i"; return i }())}, "introspection: endpoint:"},
		{"no client_id", map[string]*Provider{"a": mk("https://a", func() *Introspection { i := ok(); i.ClientID = ""; return i }())}, "introspection: client_id: required"},
		{"no secret", map[string]*Provider{"a": mk("https://a", func() *Introspection { i := ok(); i.ClientSecret = ""; return i }())}, "introspection: client_secret: required"},
		{"auth method", map[string]*Provider{"a": mk("https://a", func() *Introspection { i := ok(); i.AuthMethod = "tls_client_auth"; return i }())}, "introspection: auth_method"},
		{"private_key_jwt without key", map[string]*Provider{"a": mk("https://a", func() *Introspection { i := ok(); i.AuthMethod = "private_key_jwt"; i.ClientSecret = ""; return i }())}, "introspection: private_key: required"},
		{"private_key_jwt with secret", map[string]*Provider{"a": mk("https://a", func() *Introspection { i := ok(); i.AuthMethod = "private_key_jwt"; i.PrivateKey = "/k.jwk"; return i }())}, "introspection: client_secret: not used"},
		{"private_key without private_key_jwt", map[string]*Provider{"a": mk("https://a", func() *Introspection { i := ok(); i.PrivateKey = "/k.jwk"; return i }())}, "introspection: private_key: only with auth_method private_key_jwt"},
		{"max_rate", map[string]*Provider{"a": mk("https://a", func() *Introspection { i := ok(); i.MaxRate = "0/s"; return i }())}, "introspection: max_rate"},
		{"negative ttl", map[string]*Provider{"a": mk("https://a", func() *Introspection { i := ok(); i.CacheTTL = -1; return i }())}, "introspection: cache_ttl: must not be negative"},
		{"two without prefix", map[string]*Provider{"a": mk("https://a", ok()), "b": mk("https://b", ok())}, `providers "a" and "b" both have no token_prefix`},
		{"overlapping prefixes", map[string]*Provider{
			"a": mk("https://a", func() *Introspection { i := ok(); i.TokenPrefix = "ory_"; return i }()),
			"b": mk("https://b", func() *Introspection { i := ok(); i.TokenPrefix = "ory_at_"; return i }())}, `token_prefix "ory_at_" overlaps token_prefix "ory_"`},
		{"allow_missing_audience without introspection", map[string]*Provider{"a": {Issuer: "https://a", Audiences: []string{"a"}, JWKSURI: "https://a/jwks", AllowMissingAudience: true}}, "allow_missing_audience: only valid with introspection"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{Providers: tc.ps}
			_, err := h.compile(caddy.NewReplacer())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("compile error = %v, want one containing %q", err, tc.want)
			}
		})
	}
	// Prefixes that do not overlap, and one provider without, load.
	h := &Handler{Providers: map[string]*Provider{
		"a": mk("https://a", func() *Introspection { i := ok(); i.TokenPrefix = "ory_at_"; return i }()),
		"b": mk("https://b", func() *Introspection { i := ok(); i.TokenPrefix = "zit_"; return i }()),
		"c": mk("https://c", ok()),
	}}
	if _, err := h.compile(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
}

func TestIntrospectionCaddyfileAndJSON(t *testing.T) {
	h, err := parseTestCaddyfile(`oauth2_jwt {
		provider hydra {
			issuer   https://auth.example.com/
			audience orders-api
			allow_missing_audience
			introspection {
				endpoint      https://auth.example.com/oauth2/introspect
				client_id     orders-api
				client_secret {env.INTROSPECTION_SECRET}
				auth_method   client_secret_post
				token_prefix  ory_at_
				cache_ttl     5m
				negative_ttl  10s
				max_rate      50/s
				cache_size    500
				jwt_response
				introspect_jwts
			}
		}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(h.Providers["hydra"])
	got := string(raw)
	var back Provider
	if err := json.Unmarshal([]byte(got), &back); err != nil {
		t.Fatal(err)
	}
	want := `{"issuer":"https://auth.example.com/","audiences":["orders-api"],"introspection":{"endpoint":"https://auth.example.com/oauth2/introspect","client_id":"orders-api","client_secret":"{env.INTROSPECTION_SECRET}","auth_method":"client_secret_post","token_prefix":"ory_at_","cache_ttl":300000000000,"negative_ttl":10000000000,"max_rate":"50/s","cache_size":500,"jwt_response":true,"introspect_jwts":true},"allow_missing_audience":true}`
	if got != want {
		t.Fatalf("JSON =\n%s\nwant\n%s", got, want)
	}
	if again, _ := json.Marshal(&back); string(again) != want {
		t.Fatal("JSON does not round-trip")
	}
	for input, want := range map[string]string{
		"introspection {\n bogus 1\n}":       `unrecognized option "bogus"`,
		"introspection {\n max_rate fast\n}": `max_rate`,
		"introspection {\n endpoint https://a/i\n client_id c\n auth_method private_key_jwt\n private_key /etc/caddy/client.jwk\n}": "",
		"introspection {\n jwt_response on\n}":                                              "wrong argument count",
		"introspection {\n auth_method bogus\n}":                                            `auth_method`,
		"introspection {\n endpoint https://a/i\n client_id c\n client_secret s\n}":         "",
		"introspection {\n client_id c\n client_secret s\n}":                                "",
		"introspection {\n endpoint http://op.example/i\n client_id c\n client_secret s\n}": "plain http on a non-loopback host",
		"introspection {\n endpoint https://a/i\n client_secret s\n}":                       "client_id: required",
	} {
		_, err := parseTestCaddyfile("oauth2_jwt {\nprovider p {\nissuer https://a\naudience a\n" + input + "\n}\n}")
		if want == "" {
			if err != nil {
				t.Fatalf("%q: %v", input, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: error %v, want one containing %q", input, err, want)
		}
	}
}

// The admin API shows the endpoint, the last call's result and the cache
// size; the metrics count calls by result, cache hits and misses, and
// rate-limited calls, never with a token in a label.
func TestIntrospectionAdminAndMetrics(t *testing.T) {
	ep := newIntroEndpoint(t)
	clk := newFrozenClock()
	const name = "intro-admin"
	m := getMetrics()
	count := func(c prometheus.Counter) float64 { return testutil.ToFloat64(c) }
	active0, inactive0, error0 := count(m.introCalls.WithLabelValues(name, "active")), count(m.introCalls.WithLabelValues(name, "inactive")), count(m.introCalls.WithLabelValues(name, "error"))
	hit0, miss0, limited0 := count(m.introCache.WithLabelValues(name, "hit")), count(m.introCache.WithLabelValues(name, "miss")), count(m.introRateLimited.WithLabelValues(name))
	h := introHandler(t, ep, clk, func(p *Provider, h *Handler) {
		h.Providers = map[string]*Provider{name: p}
		p.Introspection.MaxRate = "3/s"
	})
	h.providers[0].intro.maxWait = 0
	ep.set("good", activeAnswer(clk.now()))
	expectReason(t, serve(t, h, bearer("good")), 200, "")
	expectReason(t, serve(t, h, bearer("good")), 200, "")
	expectReason(t, serve(t, h, bearer("junk-1")), 401, "inactive")
	ep.setStatus(500)
	expectReason(t, serve(t, h, bearer("junk-2")), 503, "unavailable")
	expectReason(t, serve(t, h, bearer("junk-3")), 503, "unavailable") // over 3/s

	st := adminProvider(t, name, introIssuer)
	in, ok := st["introspection"].(map[string]any)
	if !ok {
		t.Fatalf("admin answer has no introspection: %v", st)
	}
	if in["endpoint"] != ep.srv.URL+"/introspect" || in["cache_entries"] != float64(2) ||
		!strings.HasPrefix(fmt.Sprint(in["last_result"]), "error: unexpected HTTP status 500") || in["last_call"] == nil {
		t.Fatalf("admin introspection = %v", in)
	}
	for _, c := range []struct {
		what string
		got  float64
		want float64
	}{
		{"active calls", count(m.introCalls.WithLabelValues(name, "active")) - active0, 1},
		{"inactive calls", count(m.introCalls.WithLabelValues(name, "inactive")) - inactive0, 1},
		{"error calls", count(m.introCalls.WithLabelValues(name, "error")) - error0, 1},
		{"cache hits", count(m.introCache.WithLabelValues(name, "hit")) - hit0, 1},
		{"cache misses", count(m.introCache.WithLabelValues(name, "miss")) - miss0, 4},
		{"rate limited", count(m.introRateLimited.WithLabelValues(name)) - limited0, 1},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	h.Cleanup()
	if _, ok := adminProviderIfAny(name); ok {
		t.Fatal("a cleaned-up handler's provider is still listed")
	}
}

// adminProviderIfAny is adminProvider without failing when absent.
func adminProviderIfAny(name string) (map[string]any, bool) {
	w := httptest.NewRecorder()
	_ = serveProviders(w, httptest.NewRequest(http.MethodGet, "/oauth2_jwt/providers", nil))
	var body struct {
		Providers []map[string]any `json:"providers"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	for _, p := range body.Providers {
		if p["name"] == name {
			return p, true
		}
	}
	return nil, false
}

// BenchmarkIntrospectionCached is a cached opaque token's request, to
// compare with BenchmarkServeHTTP's cached JWTs.
func BenchmarkIntrospectionCached(b *testing.B) {
	ep := newIntroEndpoint(b)
	clk := newFrozenClock()
	h := introHandler(b, ep, clk, nil)
	const token = "ory_at_0123456789abcdefghijklmnopqrstuvwxyzABCDEF.0123456789abcdef"
	ep.set(token, activeAnswer(clk.now()))
	rb := newRequestBatch(token)
	req, _ := rb.take(b)
	if err := h.ServeHTTP(rb.w, req, noopNext); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req, _ := rb.take(b)
		if err := h.ServeHTTP(rb.w, req, noopNext); err != nil {
			b.Fatal(err)
		}
	}
	if ep.calls.Load() != 1 {
		b.Fatalf("%d calls, want 1", ep.calls.Load())
	}
}

// Without endpoint, introspection_endpoint is read from the discovery
// document once; a document without it is 503, retried after a pause.
func TestIntrospectionEndpointFromDiscovery(t *testing.T) {
	ep := newIntroEndpoint(t)
	var discHits atomic.Int64
	var withEndpoint atomic.Bool
	key := fixedKey(t, "k1", jose.RS256).public()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			discHits.Add(1)
			doc := map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/jwks"}
			if withEndpoint.Load() {
				doc["introspection_endpoint"] = ep.srv.URL + "/introspect"
			}
			_ = json.NewEncoder(w).Encode(doc)
		case "/jwks":
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{key}})
		}
	}))
	t.Cleanup(srv.Close)
	clk := newFrozenClock()
	const name = "intro-discovery"
	h := &Handler{Providers: map[string]*Provider{name: {
		Issuer: srv.URL, Audiences: []string{"orders-api"}, PersistKeys: new(bool),
		Introspection: &Introspection{ClientID: "c", ClientSecret: "s"},
	}}}
	h.deps.now = clk.now
	provisionHandler(t, h)
	waitForKeys(t, h) // the key cache's own discovery read is done
	a := activeAnswer(clk.now())
	a["iss"] = srv.URL
	ep.set("opaque-1", a)
	discovered := discHits.Load()
	expectReason(t, serve(t, h, bearer("opaque-1")), 503, "unavailable")
	withEndpoint.Store(true)
	expectReason(t, serve(t, h, bearer("opaque-1")), 503, "unavailable") // within the pause
	if n := discHits.Load() - discovered; n != 1 {
		t.Fatalf("discovery read %d times within the pause, want 1", n)
	}
	clk.advance(introDiscoveryRetry)
	for range 2 {
		expectReason(t, serve(t, h, bearer("opaque-1")), 200, "")
	}
	if n := discHits.Load() - discovered; n != 2 || ep.calls.Load() != 1 {
		t.Fatalf("discovery reads %d, introspection calls %d; want 2 and 1", n, ep.calls.Load())
	}
	if st := adminProvider(t, name, srv.URL); st["introspection"].(map[string]any)["endpoint"] != ep.srv.URL+"/introspect" {
		t.Fatalf("admin introspection = %v", st["introspection"])
	}
}

// private_key_jwt sends an RFC 7523 client assertion signed with the
// key file, read at provision; a bad file fails the provision.
func TestIntrospectionPrivateKeyJWT(t *testing.T) {
	k := newTestKey(t, "client-key", jose.ES256, 0)
	raw, err := jose.JSONWebKey{Key: k.priv, KeyID: "client-key"}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "client.jwk")
	if err := os.WriteFile(keyFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	ep := newIntroEndpoint(t)
	clk := newFrozenClock()
	h := introHandler(t, ep, clk, func(p *Provider, _ *Handler) {
		p.Introspection.AuthMethod, p.Introspection.PrivateKey, p.Introspection.ClientSecret = "private_key_jwt", keyFile, ""
	})
	ep.set("opaque-1", activeAnswer(clk.now()))
	expectReason(t, serve(t, h, bearer("opaque-1")), 200, "")
	if _, _, basic := ep.lastReq.BasicAuth(); basic || ep.form.Has("client_secret") {
		t.Fatal("a secret was sent with private_key_jwt")
	}
	if ep.form.Get("client_id") != "orders api" || ep.form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		t.Fatalf("form = %v", ep.form)
	}
	tok, err := jwt.ParseSigned(ep.form.Get("client_assertion"), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var c jwt.Claims
	if err := tok.Claims(k.priv.Public(), &c); err != nil {
		t.Fatalf("assertion does not verify with the client's key: %v", err)
	}
	if c.Issuer != "orders api" || c.Subject != "orders api" || len(c.Audience) != 1 || c.Audience[0] != introIssuer ||
		c.ID == "" || c.Expiry.Time().Sub(c.IssuedAt.Time()) != time.Minute || tok.Headers[0].KeyID != "client-key" {
		t.Fatalf("assertion claims = %+v, kid %q", c, tok.Headers[0].KeyID)
	}

	for name, content := range map[string]string{"public key": mustJSON(t, k.public()), "not a JWK": "{"} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		h := &Handler{Providers: map[string]*Provider{"op": {Issuer: introIssuer, Audiences: []string{"a"}, JWKSFile: keyFile,
			Introspection: &Introspection{Endpoint: ep.srv.URL, ClientID: "c", AuthMethod: "private_key_jwt", PrivateKey: path}}}}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		err := h.Provision(ctx)
		_ = h.Cleanup()
		cancel()
		if err == nil || !strings.Contains(err.Error(), "introspection: private_key:") {
			t.Fatalf("%s: provision error = %v", name, err)
		}
	}
}

// jwt_response asks for a signed answer (RFC 9701) and accepts only a
// JWS of typ token-introspection+jwt by a provider key, with iss the
// issuer and aud our client_id; anything else is 503.
func TestIntrospectionJWTResponse(t *testing.T) {
	key := fixedKey(t, "k1", jose.RS256)
	other := newTestKey(t, "k1", jose.RS256, 1)
	clk := newFrozenClock()
	inner := activeAnswer(clk.now())
	signed := func(k *testKey, typ string, mod func(map[string]any)) string {
		c := map[string]any{"iss": introIssuer, "aud": "orders api", "iat": clk.now().Unix(), "token_introspection": inner}
		if mod != nil {
			mod(c)
		}
		return k.sign(t, c, map[jose.HeaderKey]any{jose.HeaderType: typ})
	}
	const jwtType = "application/token-introspection+jwt"
	cases := []struct {
		name, body, ctype string
		status            int
	}{
		{"signed", signed(key, "token-introspection+jwt", nil), jwtType, 200},
		{"plain JSON", mustJSON(t, inner), "application/json", 503},
		{"JSON media type", signed(key, "token-introspection+jwt", nil), "application/json", 503},
		{"typ JWT", signed(key, "JWT", nil), jwtType, 503},
		{"another key", signed(other, "token-introspection+jwt", nil), jwtType, 503},
		{"another iss", signed(key, "token-introspection+jwt", func(c map[string]any) { c["iss"] = "https://evil.example" }), jwtType, 503},
		{"another aud", signed(key, "token-introspection+jwt", func(c map[string]any) { c["aud"] = "someone-else" }), jwtType, 503},
		{"no token_introspection", signed(key, "token-introspection+jwt", func(c map[string]any) { delete(c, "token_introspection") }), jwtType, 503},
		{"inactive inside", signed(key, "token-introspection+jwt", func(c map[string]any) { c["token_introspection"] = map[string]any{"active": false} }), jwtType, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := newIntroEndpoint(t)
			h := introHandler(t, ep, clk, func(p *Provider, _ *Handler) { p.Introspection.JWTResponse = true })
			waitForKeys(t, h)
			ep.mu.Lock()
			ep.rawBody, ep.ctype = tc.body, tc.ctype
			ep.mu.Unlock()
			res := serve(t, h, bearer("opaque-1"))
			if res.status != tc.status {
				t.Fatalf("status %d, want %d (%v)", res.status, tc.status, res.err)
			}
			if got := ep.lastReq.Header.Get("Accept"); got != jwtType {
				t.Fatalf("Accept = %q", got)
			}
			if tc.status == 200 && res.placeholder("http.auth.jwt.claims.username") != "alice" {
				t.Fatal("claims not taken from token_introspection")
			}
		})
	}
}

// introspect_jwts asks about a JWT after local verification, cached or
// not: a revoked JWT is refused within cache_ttl; the claims stay the
// JWT's. Without it, JWTs are never sent to the endpoint.
func TestIntrospectionOfJWTs(t *testing.T) {
	key := fixedKey(t, "k1", jose.RS256)
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("introspect_jwts %v", on), func(t *testing.T) {
			ep := newIntroEndpoint(t)
			clk := newFrozenClock()
			h := introHandler(t, ep, clk, func(p *Provider, _ *Handler) { p.Introspection.IntrospectJWTs = on })
			waitForKeys(t, h)
			c := claimsFor(introIssuer, "orders-api")
			c["username"] = "from-the-jwt"
			tok := key.sign(t, c, nil)
			ep.set(tok, activeAnswer(clk.now()))
			for range 2 {
				res := serve(t, h, bearer(tok))
				expectReason(t, res, 200, "")
				if res.placeholder("http.auth.jwt.claims.username") != "from-the-jwt" {
					t.Fatal("claims are not the JWT's")
				}
			}
			ep.set(tok, map[string]any{"active": false})
			clk.advance(2 * time.Minute)
			if !on {
				expectReason(t, serve(t, h, bearer(tok)), 200, "")
				if ep.calls.Load() != 0 {
					t.Fatal("a JWT was introspected without introspect_jwts")
				}
				return
			}
			expectReason(t, serve(t, h, bearer(tok)), 401, "inactive")
			if ep.calls.Load() != 2 {
				t.Fatalf("calls = %d, want 2", ep.calls.Load())
			}
		})
	}
}

// TestIntegrationIntrospection runs a Caddyfile with an introspection
// block through a real Caddy: an opaque token passes with its answer's
// claims as placeholders, twice for one call; an inactive one is 401
// with the challenge; a JWT-shaped garbage token is still malformed.
func TestIntegrationIntrospection(t *testing.T) {
	idp := newTestIdP(t, fixedKey(t, "k1", jose.RS256))
	ep := newIntroEndpoint(t)
	a := activeAnswer(time.Now())
	a["iss"] = idp.url()
	ep.set("ory_at_good", a)
	tc := newIntegrationTester(t, integrationGlobals+fmt.Sprintf(`
http://localhost:9080 {
	oauth2_jwt {
		provider hydra {
			issuer %s
			audience orders-api
			jwks_uri %s/jwks
			introspection {
				endpoint %s/introspect
				client_id orders-api
				client_secret s3cret
				token_prefix ory_at_
			}
		}
	}
	respond "user={http.auth.user.id} scope={http.auth.jwt.claims.scope} provider={http.auth.jwt.provider}"
}
`, idp.url(), idp.url(), ep.srv.URL), "caddyfile")
	for range 2 {
		res := call(t, tc, "/", "ory_at_good")
		if res.status != 200 || res.body != "user=user-7 scope=read write provider=hydra" {
			t.Fatalf("opaque token: %d %q", res.status, res.body)
		}
	}
	if ep.calls.Load() != 1 {
		t.Fatalf("calls = %d, want 1", ep.calls.Load())
	}
	res := call(t, tc, "/", "ory_at_revoked")
	if res.status != 401 || !strings.Contains(res.header.Get("WWW-Authenticate"), `error_description="token is not active"`) {
		t.Fatalf("inactive token: %d %q", res.status, res.header.Get("WWW-Authenticate"))
	}
	if res := call(t, tc, "/", "other-opaque"); res.status != 401 || !strings.Contains(res.header.Get("WWW-Authenticate"), "issuer not accepted") {
		t.Fatalf("token without the prefix: %d %q", res.status, res.header.Get("WWW-Authenticate"))
	}
}

// TestIntrospectionMaxRateWait: a call over max_rate waits for its turn
// when one frees up within the brief wait, and is then served; when the
// next turn is further off, the request is 503 with the Retry-After the
// bucket implies. The wait is the test's, observed through a channel; the
// bucket reads the frozen clock.
func TestIntrospectionMaxRateWait(t *testing.T) {
	ep := newIntroEndpoint(t)
	clk := newFrozenClock()
	h := introHandler(t, ep, clk, func(p *Provider, _ *Handler) { p.Introspection.MaxRate = "1/s" })
	in := h.providers[0].intro
	waited := make(chan time.Duration)
	release := make(chan struct{})
	in.wait = func(_ context.Context, d time.Duration) error {
		waited <- d
		<-release
		return nil
	}
	for _, tok := range []string{"first", "second", "third"} {
		ep.set(tok, activeAnswer(clk.now()))
	}
	limited0 := testutil.ToFloat64(in.rateLimited)         // the counter is the process's
	expectReason(t, serve(t, h, bearer("first")), 200, "") // the bucket's one call

	// The next turn is a second away, beyond the 250 ms wait: 503.
	res := serve(t, h, bearer("second"))
	expectReason(t, res, http.StatusServiceUnavailable, "unavailable")
	if got := res.header.Get("Retry-After"); got != "1" {
		t.Fatalf("Retry-After = %q, want 1", got)
	}
	if ep.calls.Load() != 1 {
		t.Fatalf("calls = %d, want 1: a call over max_rate was made", ep.calls.Load())
	}

	// 900 ms later the turn is 100 ms away: the request waits for it
	// (the call is not made meanwhile), then is served.
	clk.advance(900 * time.Millisecond)
	done := make(chan result, 1)
	go func() {
		res, err := serveRequest(h, bearer("second"))
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	if d := <-waited; d <= 0 || d > defaultIntroMaxWait {
		t.Fatalf("waited %v for a turn, want within (0, %v]", d, defaultIntroMaxWait)
	}
	if ep.calls.Load() != 1 {
		t.Fatal("the call was made before its turn")
	}
	close(release)
	expectReason(t, <-done, 200, "")
	if ep.calls.Load() != 2 {
		t.Fatalf("calls = %d, want 2", ep.calls.Load())
	}
	expectReason(t, serve(t, h, bearer("second")), 200, "") // cached: no turn needed

	// The waiting call took the turn: the next is 1.1 s away.
	res = serve(t, h, bearer("third"))
	expectReason(t, res, http.StatusServiceUnavailable, "unavailable")
	if got := res.header.Get("Retry-After"); got != "2" {
		t.Fatalf("Retry-After = %q, want 2", got)
	}
	if n := testutil.ToFloat64(in.rateLimited) - limited0; n != 2 {
		t.Fatalf("rate-limited calls counted %v, want 2", n)
	}
}

// TestIntrospectionDPoPBound: an answer with cnf.jkt binds the opaque
// token to a DPoP key exactly as for a JWT: with a valid proof of that key
// it is accepted (twice, the second from the cache, with a new proof),
// without a proof or with another key's it is refused.
func TestIntrospectionDPoPBound(t *testing.T) {
	ep := newIntroEndpoint(t)
	clk := newFrozenClock()
	h := introHandler(t, ep, clk, func(_ *Provider, h *Handler) { h.DPoP = &DPoP{} })
	client, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jkt := thumbprint(t, client.Public())
	const tok = "opaque-dpop-bound"
	a := activeAnswer(clk.now())
	a["token_type"] = "DPoP"
	a["cnf"] = map[string]any{"jkt": jkt}
	ep.set(tok, a)
	for i := range 2 {
		proof := signProof(t, client, jose.ES256, nil, proofClaims(clk.now(), tok), nil)
		res := serve(t, h, dpopRequest(tok, proof))
		expectReason(t, res, http.StatusOK, "")
		if got := res.placeholder("http.auth.jwt.dpop.jkt"); got != jkt {
			t.Fatalf("request %d: {http.auth.jwt.dpop.jkt} = %q, want %q", i, got, jkt)
		}
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  *http.Request
		code string
	}{
		{"as Bearer", bearer(tok), "key_binding_mismatch"},
		{"DPoP scheme without a proof", dpopRequest(tok, ""), "dpop_proof_missing"},
		{"another key's proof", dpopRequest(tok, signProof(t, other, jose.ES256, nil, proofClaims(clk.now(), tok), nil)), "key_binding_mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := serve(t, h, tc.req)
			if res.status != http.StatusUnauthorized || res.placeholder("http.auth.jwt.error") != tc.code || res.nextSeen != nil {
				t.Fatalf("status %d, reason %q, want 401 %s", res.status, res.placeholder("http.auth.jwt.error"), tc.code)
			}
		})
	}
	if n := ep.calls.Load(); n != 1 {
		t.Fatalf("endpoint called %d times, want 1 (the answer is cached, the binding checked per request)", n)
	}
}

// TestIntrospectionCacheSurvivesReload: a reloaded config whose provider
// has the same identity, endpoint, client and policy keeps the cached
// answers (no call after the reload); one with another policy (here
// another audience) starts afresh.
func TestIntrospectionCacheSurvivesReload(t *testing.T) {
	ep := newIntroEndpoint(t)
	clk := newFrozenClock()
	ep.set("opaque-1", activeAnswer(clk.now()))
	old := introHandler(t, ep, clk, nil)
	expectReason(t, serve(t, old, bearer("opaque-1")), 200, "")
	expectReason(t, serve(t, old, bearer("opaque-2")), 401, "inactive")

	// caddy reload: the new config is provisioned, then the old one
	// cleaned up. The route's rules changed; the provider did not.
	reloaded := introHandler(t, ep, clk, func(_ *Provider, h *Handler) {
		h.Require = []Requirement{{Scopes: []string{"read"}}}
	})
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		expectReason(t, serve(t, reloaded, bearer("opaque-1")), 200, "")
		expectReason(t, serve(t, reloaded, bearer("opaque-2")), 401, "inactive")
	}
	if n := ep.calls.Load(); n != 2 {
		t.Fatalf("endpoint called %d times across the reload, want 2 (the answers were kept)", n)
	}
	if st := introspectionOf("op", introIssuer); st == nil || st.CacheEntries != 2 {
		t.Fatalf("admin introspection status = %+v, want 2 cache entries", st)
	}

	changed := introHandler(t, ep, clk, func(p *Provider, _ *Handler) { p.Audiences = []string{"orders-api", "billing"} })
	expectReason(t, serve(t, changed, bearer("opaque-1")), 200, "")
	if n := ep.calls.Load(); n != 3 {
		t.Fatalf("endpoint called %d times, want 3: another policy must not reuse the answers", n)
	}
	if err := reloaded.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := changed.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if n, _ := introPool.References(introPoolKey(old.providers[0])); n != 0 {
		t.Fatalf("the pooled state is still held %d times after every handler was cleaned up", n)
	}
}
