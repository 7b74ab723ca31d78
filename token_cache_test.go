package oauth2jwt

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unsafe"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestTokenCacheHitAndBound(t *testing.T) {
	k := newTestKey(t, "tc", jose.ES256, 0)
	idp := newTestIdP(t, k)
	size := 64
	h := remoteHandler(t, idp, nil)
	h2 := provisionHandler(t, &Handler{CacheSize: &size, Providers: map[string]*Provider{
		"idp": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
	}})
	waitForKeys(t, h)

	tok := k.sign(t, claimsFor(idp.url(), "api"), nil)
	hits := testutil.ToFloat64(h.obs.cacheHit)
	for range 3 {
		expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
	}
	if got := testutil.ToFloat64(h.obs.cacheHit) - hits; got != 2 {
		t.Fatalf("3 requests with one token: %v cache hits, want 2", got)
	}
	// Placeholders of a cache hit are those of the token.
	res := serve(t, h, bearer(tok))
	if res.placeholder("http.auth.user.id") != "user-42" || res.placeholder("http.auth.jwt.claims.aud") != "api" {
		t.Fatalf("cache hit lost the claims")
	}

	evicted := testutil.ToFloat64(h2.obs.metrics.cacheEvicted)
	for i := range 500 {
		c := claimsFor(idp.url(), "api")
		c["jti"] = fmt.Sprint(i)
		expectReason(t, serve(t, h2, bearer(k.sign(t, c, nil))), http.StatusOK, "")
	}
	if n := h2.cache.len(); n > size {
		t.Fatalf("cache holds %d entries, bound is %d", n, size)
	}
	if got := testutil.ToFloat64(h2.obs.metrics.cacheEvicted) - evicted; got < 500-float64(size) {
		t.Fatalf("%v evictions counted, want at least %d", got, 500-size)
	}

	off := 0
	h3 := provisionHandler(t, &Handler{CacheSize: &off, Providers: map[string]*Provider{
		"idp": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
	}})
	if h3.cache != nil {
		t.Fatalf("cache_size 0 did not disable the cache")
	}
	expectReason(t, serve(t, h3, bearer(tok)), http.StatusOK, "")
}

// TestTokenCacheExpiry: a cached token is refused once its exp (plus
// leeway) passes; the cache never extends a token's life.
func TestTokenCacheExpiry(t *testing.T) {
	k := newTestKey(t, "tc", jose.ES256, 0)
	idp := newTestIdP(t, k)
	h := remoteHandler(t, idp, nil)
	waitForKeys(t, h)
	now := time.Now()
	h.verifier.now = func() time.Time { return now }
	c := claimsFor(idp.url(), "api")
	c["exp"] = now.Add(10 * time.Second).Unix()
	tok := k.sign(t, c, nil)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "") // from the cache

	now = now.Add(10*time.Second + defaultLeeway + time.Second)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusUnauthorized, "expired")
}

// TestTokenCacheKeyRemoved: the refresh that removes a key also stops the
// cached tokens it signed.
func TestTokenCacheKeyRemoved(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	k2 := newTestKey(t, "k2", jose.ES256, 0)
	idp := newTestIdP(t, k1, k2)
	h := remoteHandler(t, idp, nil)
	waitForKeys(t, h)
	c := cacheOf(t, h, idp.url())
	t1 := k1.sign(t, claimsFor(idp.url(), "api"), nil)
	t2 := k2.sign(t, longLived(claimsFor(idp.url(), "api")), nil)
	expectReason(t, serve(t, h, bearer(t1)), http.StatusOK, "")
	expectReason(t, serve(t, h, bearer(t2)), http.StatusOK, "")

	// A refetch of the same keys keeps the cache valid.
	refreshNow(c)
	hits := testutil.ToFloat64(h.obs.cacheHit)
	expectReason(t, serve(t, h, bearer(t1)), http.StatusOK, "")
	if testutil.ToFloat64(h.obs.cacheHit) != hits+1 {
		t.Fatalf("an unchanged key set invalidated the cache")
	}

	idp.setKeys(k2)
	refreshNow(c)
	expectReason(t, serve(t, h, bearer(t1)), http.StatusUnauthorized, "unknown_key")
	expectReason(t, serve(t, h, bearer(t2)), http.StatusOK, "")

	// Keys past max_stale: even a cached token gets 503.
	idp.setStatus(http.StatusInternalServerError)
	advance(c, 25*time.Hour)
	expectReason(t, serve(t, h, bearer(t2)), http.StatusServiceUnavailable, "unavailable")
}

// TestTokenCacheKeyDoesNotPinTheHeader: the cache keys on a copy of the
// token, not on a slice of the request's Authorization header, which
// would keep the whole header alive as long as the entry.
func TestTokenCacheKeyDoesNotPinTheHeader(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{})
	tok := f.token(t, nil)
	header := "Bearer " + strings.Repeat(" ", 30000) + tok
	req := httptest.NewRequest(http.MethodGet, "http://example.test/api", nil)
	req.Header.Set("Authorization", header)
	expectReason(t, serve(t, h, req), http.StatusOK, "")
	lo, hi := uintptr(unsafe.Pointer(unsafe.StringData(header))), uintptr(unsafe.Pointer(unsafe.StringData(header)))+uintptr(len(header))
	entries := 0
	for i := range h.cache.nShards {
		for key := range h.cache.shards[i].m {
			entries++
			if p := uintptr(unsafe.Pointer(unsafe.StringData(key))); p >= lo && p < hi {
				t.Fatalf("cached key points into the request header")
			}
		}
	}
	if entries != 1 {
		t.Fatalf("the cache holds %d entries, want the token's 1", entries)
	}
}

// TestTokenCacheSmallerThanShardCount: a cache_size below the number of
// shards still bounds the whole cache.
func TestTokenCacheSmallerThanShardCount(t *testing.T) {
	f := newAuthzFixture(t)
	one := 1
	h := f.handler(t, &Handler{CacheSize: &one})
	for i := range 20 {
		expectReason(t, serve(t, h, bearer(f.token(t, map[string]any{"jti": i}))), 200, "")
	}
	if n := h.cache.len(); n != 1 {
		t.Fatalf("cache_size 1 holds %d entries", n)
	}
}
