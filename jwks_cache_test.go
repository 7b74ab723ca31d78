package oauth2jwt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// cacheOf returns the remote key cache of the provider with this issuer.
func cacheOf(t testing.TB, h *Handler, issuer string) *jwksCache {
	t.Helper()
	var p *provider
	for _, cand := range h.providers {
		if cand.issuer == issuer {
			p = cand
		}
	}
	if p == nil {
		t.Fatalf("no provider for issuer %q", issuer)
	}
	c, ok := p.keys.(*jwksCache)
	if !ok {
		t.Fatalf("provider %q has no remote key cache", p.name)
	}
	return c
}

// refreshNow runs one full refresh (as the periodic refresher does) and
// waits for it.
func refreshNow(c *jwksCache) { <-c.fetchShared(true) }

// advance moves the clock of the cache (and of the handler that made it)
// forward.
func advance(c *jwksCache, d time.Duration) {
	clk, ok := clocks.Load(c)
	if !ok {
		panic("advance: the cache was not made by provisionHandler")
	}
	clk.(*testClock).advance(d)
}

func remoteHandler(t testing.TB, idp *testIdP, mutate func(*Provider)) *Handler {
	t.Helper()
	p := &Provider{Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"}
	if mutate != nil {
		mutate(p)
	}
	return provisionHandler(t, &Handler{Providers: map[string]*Provider{"idp": p}})
}

// observedHandler is remoteHandler whose key cache logs (from its first
// fetch on) at level and above into the returned observer.
func observedHandler(t testing.TB, idp *testIdP, level zapcore.Level) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(level)
	h := &Handler{Providers: map[string]*Provider{"idp": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"}}}
	h.deps.log = zap.New(core)
	return provisionHandler(t, h), logs
}

func TestCacheUnknownKidRotation(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.RS256, 0)
	k2 := newTestKey(t, "k2", jose.RS256, 1)
	idp := newTestIdP(t, k1)
	h := remoteHandler(t, idp, nil)
	waitForKeys(t, h)
	c := cacheOf(t, h, idp.url())

	expectReason(t, serve(t, h, bearer(k1.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")
	before := idp.jwksHits.Load()

	// Rotation without overlap, seen by a token with the new kid.
	idp.setKeys(k2)
	advance(c, 2*time.Minute) // past min_refresh_interval since the first fetch
	expectReason(t, serve(t, h, bearer(k2.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")
	if got := idp.jwksHits.Load() - before; got != 1 {
		t.Fatalf("new kid caused %d JWKS fetches, want 1", got)
	}
	// The refresh removed k1: its tokens are refused now, without a fetch.
	expectReason(t, serve(t, h, bearer(k1.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusUnauthorized, "unknown_key")
	if got := idp.jwksHits.Load() - before; got != 1 {
		t.Fatalf("removed kid caused a fetch: %d fetches, want 1", got)
	}
}

func TestCacheRotationWithOverlap(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	k2 := newTestKey(t, "k2", jose.ES256, 0)
	idp := newTestIdP(t, k1)
	h := remoteHandler(t, idp, nil)
	waitForKeys(t, h)
	c := cacheOf(t, h, idp.url())

	idp.setKeys(k1, k2)
	refreshNow(c)
	for _, k := range []*testKey{k1, k2} {
		expectReason(t, serve(t, h, bearer(k.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")
	}
	// k1 retired: after the periodic refresh that removes it, refused.
	idp.setKeys(k2)
	refreshNow(c)
	expectReason(t, serve(t, h, bearer(k1.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusUnauthorized, "unknown_key")
	expectReason(t, serve(t, h, bearer(k2.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")
	// Every key removed: the set is refused as a whole, the last good keys stay.
	idp.setKeys()
	refreshNow(c)
	expectReason(t, serve(t, h, bearer(k2.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")
}

func TestCacheUnknownKidBurstCausesOneFetch(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k1)
	h := remoteHandler(t, idp, nil)
	waitForKeys(t, h)
	c := cacheOf(t, h, idp.url())
	advance(c, 2*time.Minute)
	before := idp.jwksHits.Load()

	// Keys and tokens are made before the goroutines start: those report
	// with t.Error, never t.Fatal.
	tokens := make([]string, 200)
	for i := range tokens {
		k := newTestKey(t, fmt.Sprintf("random-%d", i), jose.ES256, 0)
		tokens[i] = k.sign(t, claimsFor(idp.url(), "api"), nil)
	}
	var wg sync.WaitGroup
	var unknown atomic.Int64
	for _, tok := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := serveRequest(h, bearer(tok))
			if err != nil {
				t.Error(err)
				return
			}
			if res.status == http.StatusUnauthorized && res.placeholder("http.auth.jwt.error") == "unknown_key" {
				unknown.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := idp.jwksHits.Load() - before; got != 1 {
		t.Fatalf("burst of unknown kids caused %d fetches, want 1", got)
	}
	if unknown.Load() != 200 {
		t.Fatalf("%d of 200 unknown-kid tokens answered unknown_key", unknown.Load())
	}
	// The same kid again within min_refresh_interval: no fetch, no wait.
	advance(c, 30*time.Second)
	k := newTestKey(t, "random-0", jose.ES256, 0)
	serve(t, h, bearer(k.sign(t, claimsFor(idp.url(), "api"), nil)))
	if got := idp.jwksHits.Load() - before; got != 1 {
		t.Fatalf("a kid confirmed unknown caused another fetch (%d fetches)", got)
	}
}

// TestCacheUnknownKidFlood sends 10,000 tokens with random kids over about
// a second, with valid tokens mixed in, and checks the fetch bound
// ceil(duration / min_refresh_interval) + 1.
func TestCacheUnknownKidFlood(t *testing.T) {
	good := newTestKey(t, "good", jose.ES256, 0)
	attacker := newTestKey(t, "", jose.ES256, 0)
	idp := newTestIdP(t, good)
	minRefresh := 250 * time.Millisecond
	h := remoteHandler(t, idp, func(p *Provider) {
		p.MinRefreshInterval = caddy.Duration(minRefresh)
		p.FetchTimeout = caddy.Duration(2 * time.Second)
	})
	waitForKeys(t, h)
	valid := good.sign(t, claimsFor(idp.url(), "api"), nil)
	claims := claimsFor(idp.url(), "api")

	// Pre-sign the flood so the measured window is spent in the handler.
	const total = 10000
	tokens := make([]string, total)
	for i := range tokens {
		tokens[i] = attacker.sign(t, claims, map[jose.HeaderKey]any{"kid": strconv.Itoa(i) + "-" + strconv.Itoa(int(time.Now().UnixNano()%1000))})
	}
	before := idp.jwksHits.Load()
	start := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	var wrongAccept, validRejected atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				res, err := serveRequest(h, bearer(tokens[i]))
				if err != nil {
					t.Error(err)
					return
				}
				if res.status != http.StatusUnauthorized {
					wrongAccept.Add(1)
				}
				if i%100 == 0 {
					res, err := serveRequest(h, bearer(valid))
					if err != nil {
						t.Error(err)
						return
					}
					if res.status != http.StatusOK {
						validRejected.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	fetches := idp.jwksHits.Load() - before
	bound := int64(math.Ceil(float64(elapsed)/float64(minRefresh))) + 1
	t.Logf("%d unknown-kid requests in %s caused %d fetches (bound %d)", total, elapsed, fetches, bound)
	if fetches > bound {
		t.Fatalf("flood caused %d fetches in %s, bound is %d", fetches, elapsed, bound)
	}
	if wrongAccept.Load() != 0 || validRejected.Load() != 0 {
		t.Fatalf("flood: %d forged tokens not refused, %d valid tokens rejected", wrongAccept.Load(), validRejected.Load())
	}
}

func TestCacheNoFetchForCheapRejections(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k1)
	h := remoteHandler(t, idp, nil)
	waitForKeys(t, h)
	advance(cacheOf(t, h, idp.url()), 2*time.Minute)
	before := idp.jwksHits.Load()
	stranger := newTestKey(t, "unknown-kid", jose.ES256, 0)

	expired := claimsFor(idp.url(), "api")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	expectReason(t, serve(t, h, bearer(stranger.sign(t, expired, nil))), http.StatusUnauthorized, "expired")
	expectReason(t, serve(t, h, bearer(stranger.sign(t, claimsFor("https://other.example", "api"), nil))), http.StatusUnauthorized, "unknown_issuer")
	expectReason(t, serve(t, h, bearer(stranger.sign(t, claimsFor(idp.url(), "other-api"), nil))), http.StatusUnauthorized, "bad_audience")
	kidless := newTestKey(t, "", jose.ES256, 0)
	expectReason(t, serve(t, h, bearer(kidless.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusUnauthorized, "bad_signature")
	if got := idp.jwksHits.Load() - before; got != 0 {
		t.Fatalf("cheap rejections caused %d JWKS fetches, want 0", got)
	}
}

func TestCacheIdPDownAtStartThenUp(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k1)
	idp.setStatus(http.StatusInternalServerError)
	h := remoteHandler(t, idp, func(p *Provider) { p.MinRefreshInterval = caddy.Duration(time.Second) })
	tok := k1.sign(t, claimsFor(idp.url(), "api"), nil)

	res := serve(t, h, bearer(tok))
	expectReason(t, res, http.StatusServiceUnavailable, "unavailable")
	if ra, err := strconv.Atoi(res.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After = %q, want seconds >= 1", res.header.Get("Retry-After"))
	}

	idp.setStatus(0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res = serve(t, h, bearer(tok))
		if res.status == http.StatusOK {
			break
		}
		if res.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("after the IdP came up: status %d (%v)", res.status, res.err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCacheStaleKeysThenFailClosed(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k1)
	h, logs := observedHandler(t, idp, zapcore.WarnLevel) // max_stale 24h
	waitForKeys(t, h)
	c := cacheOf(t, h, idp.url())
	tok := k1.sign(t, longLived(claimsFor(idp.url(), "api")), nil)

	idp.setStatus(http.StatusInternalServerError)
	advance(c, time.Hour)
	refreshNow(c)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
	if logs.FilterMessageSnippet("keeping the last good keys").Len() == 0 {
		t.Fatalf("failed refresh not logged as a warning: %v", logs.All())
	}
	entry := logs.FilterMessageSnippet("keeping the last good keys").All()[0]
	if _, ok := entry.ContextMap()["keys_age"]; !ok {
		t.Fatalf("warning lacks keys_age: %v", entry.ContextMap())
	}

	advance(c, 23*time.Hour+time.Minute) // keys now 24h01m old
	expectReason(t, serve(t, h, bearer(tok)), http.StatusServiceUnavailable, "unavailable")

	idp.setStatus(0)
	refreshNow(c)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
}

// TestCacheIdPDownForAnHourAtStart: no keys were ever loaded, so 503 for
// the whole outage however much time passes, then keys as soon as it is
// back.
func TestCacheIdPDownForAnHourAtStart(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k1)
	idp.setStatus(http.StatusBadGateway)
	h := remoteHandler(t, idp, nil)
	c := cacheOf(t, h, idp.url())
	tok := k1.sign(t, claimsFor(idp.url(), "api"), nil)
	for range 6 {
		advance(c, 10*time.Minute)
		refreshNow(c)
		expectReason(t, serve(t, h, bearer(tok)), http.StatusServiceUnavailable, "unavailable")
	}
	idp.setStatus(0)
	refreshNow(c)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
}

func TestCacheDiscoveryIssuerMismatch(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k1)
	idp.mu.Lock()
	idp.issuerDoc = "https://evil.example"
	idp.mu.Unlock()
	core, logs := observer.New(zapcore.WarnLevel)
	h := &Handler{Providers: map[string]*Provider{
		"idp": {Issuer: idp.url(), Audiences: []string{"api"}}, // discovery at the issuer by default
	}}
	h.deps.log = zap.New(core)
	provisionHandler(t, h)
	c := cacheOf(t, h, idp.url())
	refreshNow(c) // lets the first fetch, started at provision, finish
	logs.TakeAll()
	refreshNow(c)
	expectReason(t, serve(t, h, bearer(k1.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusServiceUnavailable, "unavailable")
	if logs.FilterMessageSnippet("discovery document refused").Len() == 0 {
		t.Fatalf("no log line for the refused discovery document: %v", logs.All())
	}
	if idp.jwksHits.Load() != 0 {
		t.Fatalf("JWKS fetched despite the discovery issuer mismatch")
	}
}

func TestCacheDiscovery(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.EdDSA, 0)
	idp := newTestIdP(t, k1)
	h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
		"idp": {Issuer: idp.url(), Audiences: []string{"api"}, DiscoveryURI: idp.url() + "/.well-known/openid-configuration"},
	}})
	waitForKeys(t, h)
	c := cacheOf(t, h, idp.url())
	expectReason(t, serve(t, h, bearer(k1.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")

	// An unknown-kid refresh re-reads only the JWKS.
	k2 := newTestKey(t, "k2", jose.EdDSA, 0)
	idp.setKeys(k1, k2)
	advance(c, 2*time.Minute)
	disc, jwks := idp.discHits.Load(), idp.jwksHits.Load()
	expectReason(t, serve(t, h, bearer(k2.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")
	if idp.discHits.Load() != disc || idp.jwksHits.Load() != jwks+1 {
		t.Fatalf("unknown-kid refresh: %d discovery and %d JWKS requests, want 0 and 1",
			idp.discHits.Load()-disc, idp.jwksHits.Load()-jwks)
	}
	// The periodic refresh re-reads the discovery document.
	refreshNow(c)
	if idp.discHits.Load() != disc+1 {
		t.Fatalf("periodic refresh did not re-read the discovery document")
	}
}

// TestCacheFaults checks every identity-provider fault: the provider
// answers 503 (never accepts), nothing hangs past fetch_timeout, and the
// failure is recorded.
func TestCacheFaults(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	goodJWKS, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k1.public()}})

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	var silentConns sync.WaitGroup
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			silentConns.Add(1)
			go func() { // accept, read, never answer; closed at cleanup
				defer silentConns.Done()
				buf := make([]byte, 4096)
				for {
					if _, err := conn.Read(buf); err != nil {
						return
					}
				}
			}()
			t.Cleanup(func() { conn.Close() })
		}
	}()

	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(goodJWKS) }))
	t.Cleanup(plain.Close)

	cases := []struct {
		name    string
		handler http.HandlerFunc
		url     string // instead of a handler
		wantErr string
	}{
		{"status 500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }, "", "status 500"},
		{"status 404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, "", "status 404"},
		{"html page", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>login</body></html>"))
		}, "", "HTML"},
		{"html without content type", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte("<html><body>login</body></html>"))
		}, "", "decoding JWK set"},
		{"invalid json", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"keys":[`)) }, "", "decoding JWK set"},
		{"empty key list", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"keys":[]}`)) }, "", "no usable signing key"},
		{"no keys member", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"kty":"RSA"}`)) }, "", `no "keys"`},
		{"10 MB body", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"keys":[`))
			chunk := []byte(strings.Repeat(" ", 64<<10))
			for range 160 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, "", "exceeds"},
		{"body that never ends", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"keys":[`))
			for {
				if _, err := w.Write([]byte("                ")); err != nil {
					return
				}
				if f, ok := w.(http.Flusher); ok {
					f.Flush()
				}
				select {
				case <-r.Context().Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}, "", "timed out after fetch_timeout"},
		{"accepts and never answers", nil, "http://" + silent.Addr().String() + "/jwks", "timed out after fetch_timeout"},
		{"redirect loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, r.URL.Path, http.StatusFound) }, "", "redirects"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.url
			if tc.handler != nil {
				srv := httptest.NewServer(tc.handler)
				t.Cleanup(srv.Close)
				u = srv.URL + "/jwks"
			}
			const iss = "https://issuer.example"
			h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
				"idp": {Issuer: iss, Audiences: []string{"api"}, JWKSURI: u,
					FetchTimeout: caddy.Duration(300 * time.Millisecond)},
			}})
			c := cacheOf(t, h, iss)
			start := time.Now()
			refreshNow(c)
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Fatalf("fetch took %s, not bounded by fetch_timeout", elapsed)
			}
			c.mu.Lock()
			lastErr := c.lastErr
			c.mu.Unlock()
			if lastErr == nil {
				t.Fatalf("fetch did not fail")
			}
			if tc.wantErr != "" && !strings.Contains(strings.ToLower(lastErr.Error()), strings.ToLower(tc.wantErr)) {
				t.Fatalf("fetch error %q does not mention %q", lastErr, tc.wantErr)
			}
			expectReason(t, serve(t, h, bearer(k1.sign(t, claimsFor(iss, "api"), nil))), http.StatusServiceUnavailable, "unavailable")
		})
	}
}

// TestCacheRedirectHTTPSToHTTP: a JWKS URL on https that redirects to
// plain http is refused, even to a loopback host.
func TestCacheRedirectHTTPSToHTTP(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	goodJWKS, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k1.public()}})
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(goodJWKS) }))
	t.Cleanup(plain.Close)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/direct" {
			_, _ = w.Write(goodJWKS)
			return
		}
		http.Redirect(w, r, plain.URL+"/jwks", http.StatusFound)
	}))
	t.Cleanup(tlsSrv.Close)
	trust := tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig

	for _, tc := range []struct {
		path    string
		wantErr string
	}{{"/direct", ""}, {"/redirect", "from https to http"}} {
		c := newJWKSCache(fetchConfig{jwksURI: tlsSrv.URL + tc.path, minRefresh: time.Minute, fetchTimeout: time.Second, maxStale: time.Hour}, runtimeDeps{log: zap.NewNop()})
		c.fetch.client.Transport.(*http.Transport).TLSClientConfig = trust
		refreshNow(c)
		c.mu.Lock()
		lastErr := c.lastErr
		c.mu.Unlock()
		switch {
		case tc.wantErr == "" && lastErr != nil:
			t.Fatalf("%s: %v", tc.path, lastErr)
		case tc.wantErr != "" && (lastErr == nil || !strings.Contains(lastErr.Error(), tc.wantErr)):
			t.Fatalf("%s: error %v, want one mentioning %q", tc.path, lastErr, tc.wantErr)
		}
		if _, aerr := c.keys(); (aerr == nil) != (tc.wantErr == "") {
			t.Fatalf("%s: keys usable = %v", tc.path, aerr == nil)
		}
	}
}

// TestCacheOneBadKeyInSet: unusable keys are skipped (and logged once);
// the rest of the set still verifies.
func TestCacheOneBadKeyInSet(t *testing.T) {
	good := newTestKey(t, "good", jose.RS256, 0)
	goodEC := newTestKey(t, "good-ec", jose.ES256, 0)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallJWK, _ := json.Marshal(jose.JSONWebKey{Key: &small.PublicKey, KeyID: "rsa-1024"})
	encJWK, _ := json.Marshal(jose.JSONWebKey{Key: rsaKey(1).Public(), KeyID: "enc", Use: "enc"})
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// The public point with the last bit of y flipped: (x, y^1) is never
	// on the curve (the only other y for this x is p-y).
	point, err := ec.PublicKey.Bytes() // 0x04 || x || y
	if err != nil {
		t.Fatal(err)
	}
	x, y := point[1:33], append([]byte(nil), point[33:]...)
	y[31] ^= 1
	offCurve := fmt.Sprintf(`{"kty":"EC","crv":"P-256","kid":"off-curve","x":%q,"y":%q}`, b64url(x), b64url(y))
	dup, _ := json.Marshal(jose.JSONWebKey{Key: rsaKey(1).Public(), KeyID: "good"})
	goodJWK, _ := json.Marshal(good.public())
	goodECJWK, _ := json.Marshal(goodEC.public())
	set := `{"keys":[` + strings.Join([]string{
		`{"kty":"OKP","crv":"Ed448","kid":"ed448","x":"` + b64url(make([]byte, 57)) + `"}`,
		string(encJWK), string(smallJWK), offCurve, string(goodJWK), string(dup),
		`{"kty":"oct","kid":"hmac","k":"` + b64url(make([]byte, 32)) + `"}`,
		`{"kty":"EC","crv":"P-256","kid":"garbage","x":12}`,
		string(goodECJWK),
	}, ",") + `]}`

	idp := newTestIdP(t)
	idp.setRawJWKS(set)
	h, logs := observedHandler(t, idp, zapcore.WarnLevel)
	waitForKeys(t, h)
	c := cacheOf(t, h, idp.url())
	refreshNow(c) // lets the first fetch, started at provision, finish
	logs.TakeAll()
	refreshNow(c)
	refreshNow(c)

	expectReason(t, serve(t, h, bearer(good.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")
	expectReason(t, serve(t, h, bearer(goodEC.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")

	ks, _ := c.keys()
	if len(ks.all) != 2 {
		var kids []string
		for _, k := range ks.all {
			kids = append(kids, k.kid)
		}
		t.Fatalf("loaded %d keys %v, want the 2 good ones", len(ks.all), kids)
	}
	// Skips were logged on the first fetch (before the observer) and are
	// not logged again by later fetches.
	if n := logs.FilterMessageSnippet("skipping unusable JWKS key").Len(); n != 0 {
		t.Fatalf("skipped keys logged again on refresh: %d lines", n)
	}
}

func TestCacheSkippedKeysLoggedOnce(t *testing.T) {
	good := newTestKey(t, "good", jose.ES256, 0)
	core, logs := observer.New(zapcore.WarnLevel)
	c := newJWKSCache(fetchConfig{minRefresh: time.Minute, fetchTimeout: time.Second, maxStale: time.Hour}, runtimeDeps{log: zap.New(core)})
	goodJWK, _ := json.Marshal(good.public())
	set := `{"keys":[{"kty":"OKP","crv":"Ed448","kid":"ed448","x":"AA"},` + string(goodJWK) + `]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(set)) }))
	t.Cleanup(srv.Close)
	c.cfg.jwksURI, c.jwksURI = srv.URL, srv.URL
	refreshNow(c)
	refreshNow(c)
	entries := logs.FilterMessageSnippet("skipping unusable JWKS key").All()
	if len(entries) != 1 || entries[0].ContextMap()["kid"] != "ed448" {
		t.Fatalf("want one skip line for kid ed448, got %v", entries)
	}
}

func TestCacheSharedAcrossHandlersAndReloads(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k1)
	cfg := func() *Handler {
		return &Handler{Providers: map[string]*Provider{
			"idp": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
		}}
	}
	h1 := provisionHandler(t, cfg())
	waitForKeys(t, h1)
	h2 := provisionHandler(t, cfg()) // a second route, or the next config after a reload
	if cacheOf(t, h1, idp.url()) != cacheOf(t, h2, idp.url()) {
		t.Fatalf("equal providers got different key caches")
	}
	if err := h1.Cleanup(); err != nil { // the old config is unloaded
		t.Fatal(err)
	}
	expectReason(t, serve(t, h2, bearer(k1.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")
	if got := idp.jwksHits.Load(); got != 1 {
		t.Fatalf("two handlers and a cleanup caused %d fetches, want 1", got)
	}
}

func TestCacheMaxAge(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"max-age=300", 300 * time.Second},
		{"public, max-age=86400, must-revalidate", 24 * time.Hour},
		{"max-age=999999999999", 24 * time.Hour},
		{"no-cache", 0},
		{"max-age=-5", 0},
		{"max-age=abc", 0},
		{"", 0},
	} {
		if got := maxAge(tc.header); got != tc.want {
			t.Errorf("maxAge(%q) = %s, want %s", tc.header, got, tc.want)
		}
	}
}

// TestCacheSharedAcrossIssuers: two providers with different issuers and
// one JWKS URL share one cache (one fetch); with discovery they do not,
// since each checks the document's issuer.
func TestCacheSharedAcrossIssuers(t *testing.T) {
	k := newTestKey(t, "shared", jose.ES256, 0)
	idp := newTestIdP(t, k)
	h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
		"v1": {Issuer: "https://sts.example.com/tenant/", Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
		"v2": {Issuer: "https://login.example.com/tenant/v2.0", Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
	}})
	waitForKeys(t, h)
	if cacheOf(t, h, "https://sts.example.com/tenant/") != cacheOf(t, h, "https://login.example.com/tenant/v2.0") {
		t.Fatalf("providers sharing a JWKS URL got two caches")
	}
	expectReason(t, serve(t, h, bearer(k.sign(t, claimsFor("https://sts.example.com/tenant/", "api"), nil))), http.StatusOK, "")
	expectReason(t, serve(t, h, bearer(k.sign(t, claimsFor("https://login.example.com/tenant/v2.0", "api"), nil))), http.StatusOK, "")
	if n := idp.jwksHits.Load(); n != 1 {
		t.Fatalf("%d JWKS fetches, want 1", n)
	}
}
