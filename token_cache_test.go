package oauth2jwt

import (
	"bytes"
	"crypto/sha256"
	stdjson "encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
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

	// Into a full cache, a token used once either replaces an entry
	// (counted as an eviction) or is not stored (counted as refused).
	evicted := testutil.ToFloat64(h2.obs.metrics.cacheEvicted)
	refused := testutil.ToFloat64(h2.obs.metrics.cacheRefused)
	for i := range 500 {
		c := claimsFor(idp.url(), "api")
		c["jti"] = fmt.Sprint(i)
		expectReason(t, serve(t, h2, bearer(k.sign(t, c, nil))), http.StatusOK, "")
	}
	if n := h2.cache.len(); n > size {
		t.Fatalf("cache holds %d entries, bound is %d", n, size)
	}
	ev, ref := testutil.ToFloat64(h2.obs.metrics.cacheEvicted)-evicted, testutil.ToFloat64(h2.obs.metrics.cacheRefused)-refused
	if ev+ref < 500-float64(size) || ev+ref > 500 {
		t.Fatalf("%v evictions and %v refusals counted, want %d to 500 in all", ev, ref, 500-size)
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

// TestTokenCacheKeyDoesNotPinTheHeader: an entry keeps the token's
// SHA-256 digest and, once hit promoteHits times, its own copy of the
// token;
// nothing of it points into the request's Authorization header, which
// would keep the whole header alive as long as the entry.
func TestTokenCacheKeyDoesNotPinTheHeader(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{})
	tok := f.token(t, nil)
	header := "Bearer " + strings.Repeat(" ", 30000) + tok
	lo, hi := uintptr(unsafe.Pointer(unsafe.StringData(header))), uintptr(unsafe.Pointer(unsafe.StringData(header)))+uintptr(len(header))
	inHeader := func(p unsafe.Pointer) bool { return uintptr(p) >= lo && uintptr(p) < hi }
	entry := func() *cachedToken {
		t.Helper()
		var found []*cachedToken
		for i := range h.cache.nShards {
			for j := range h.cache.shards[i].ring {
				found = append(found, h.cache.shards[i].ring[j].e)
			}
		}
		if len(found) != 1 {
			t.Fatalf("the cache holds %d entries, want the token's 1", len(found))
		}
		e := found[0]
		if e.digest != sha256.Sum256([]byte(tok)) {
			t.Fatalf("the entry's digest is not the token's SHA-256")
		}
		c := &e.claims
		if inHeader(unsafe.Pointer(unsafe.SliceData(c.raw))) || inHeader(unsafe.Pointer(unsafe.StringData(c.subject))) {
			t.Fatalf("the cached claims point into the request header")
		}
		return e
	}
	for i := range promoteHits + 3 {
		hits := testutil.ToFloat64(h.obs.cacheHit)
		req := httptest.NewRequest(http.MethodGet, "http://example.test/api", nil)
		req.Header.Set("Authorization", header)
		expectReason(t, serve(t, h, req), http.StatusOK, "")
		if got, want := testutil.ToFloat64(h.obs.cacheHit)-hits, float64(min(i, 1)); got != want {
			t.Fatalf("request %d: %v cache hits, want %v", i+1, got, want)
		}
		copied := entry().token.Load()
		switch {
		case i <= promoteHits && copied != nil:
			t.Fatalf("request %d stored the token", i+1)
		case i > promoteHits && (copied == nil || *copied != tok):
			t.Fatalf("request %d: hit %d did not store the token", i+1, i)
		case i > promoteHits && inHeader(unsafe.Pointer(unsafe.StringData(*copied))):
			t.Fatalf("the stored token points into the request header")
		}
	}
}

// TestCachedTokenIdentity: an entry accepts its own token only, before
// and after a hit stored the copy, and a refused token stores nothing.
func TestCachedTokenIdentity(t *testing.T) {
	now := time.Now()
	toks := fakeTokens(2)
	a, b := toks[0], toks[1]
	// Same length, one byte apart, in the payload.
	flip := []byte(a)
	flip[len(a)/2] ^= 1
	c := string(flip)
	others := []string{b, c, "", a[:len(a)-1]}
	e := entryFor(a, now, now.Add(time.Hour))
	for _, keep := range []bool{false, true} {
		for _, other := range others {
			if e.is(other, keep) || e.token.Load() != nil {
				t.Fatalf("a cold entry took another token (%d bytes)", len(other))
			}
		}
	}
	if !e.is(a, false) || e.token.Load() != nil {
		t.Fatalf("a hit without keep did not take the entry's token, or stored it")
	}
	if !e.is(a, true) || e.token.Load() == nil || *e.token.Load() != a {
		t.Fatalf("a hit with keep did not take the entry's token or store it")
	}
	for _, keep := range []bool{false, true} {
		for _, other := range others {
			if e.is(other, keep) {
				t.Fatalf("an entry with a copy took another token (%d bytes)", len(other))
			}
		}
	}
	if !e.is(a, false) {
		t.Fatalf("the entry refused its token after storing the copy")
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

// claimsUntil returns claims valid from an hour before now until until.
func claimsUntil(now, until time.Time) *Claims {
	return &Claims{notBefore: now.Add(-time.Hour), notAfter: until}
}

// store offers tok to c as the handler does, with claims valid from an
// hour before now until until, at the instant at.
func store(c *tokenCache, tok string, now, until, at time.Time) (stored, evicted bool) {
	e, evicted := c.put(tok, nil, 0, claimsUntil(now, until), at)
	return e != nil, evicted
}

// entryFor returns a cache entry for token, valid from an hour before
// now until until.
func entryFor(token string, now, until time.Time) *cachedToken {
	return &cachedToken{digest: tokenDigestOf(token), claims: Claims{notBefore: now.Add(-time.Hour), notAfter: until}}
}

// TestTokenCacheBoundIsExact: whatever the size, the cache never holds
// more than cache_size entries, and under enough distinct tokens it holds
// exactly that many (the shards' shares add up to the size). A token is
// found exactly when put reports it stored; a full cache offered tokens
// used once keeps what it holds (none outweighs an entry), and storing a
// cached token again replaces its entry.
func TestTokenCacheBoundIsExact(t *testing.T) {
	tokens := fakeTokens(20_000)
	now := time.Now()
	for _, size := range []int{1, 7, 63, 64, 65, 100, 1000} {
		c := newTokenCache(size)
		stores, evictions := 0, 0
		for i, tok := range tokens {
			stored, evicted := store(c, tok, now, now.Add(time.Hour), now)
			if stored {
				stores++
			}
			if evicted {
				evictions++
			}
			if (c.get(tok, now) != nil) != stored {
				t.Fatalf("size %d: token %d stored %v, found %v", size, i, stored, !stored)
			}
			if i%997 == 0 && c.len() > size {
				t.Fatalf("size %d: %d entries after %d tokens", size, c.len(), i+1)
			}
		}
		if n := c.len(); n != size {
			t.Fatalf("size %d: %d entries after %d distinct tokens", size, n, len(tokens))
		}
		if stores-evictions != size {
			t.Fatalf("size %d: %d stores and %d evictions for %d entries", size, stores, evictions, size)
		}
		// Storing a cached token again replaces its entry: no eviction, no growth.
		var last string
		for _, tok := range tokens {
			if c.get(tok, now) != nil {
				last = tok
			}
		}
		if stored, evicted := store(c, last, now, now.Add(2*time.Hour), now); !stored || evicted || c.len() != size {
			t.Fatalf("size %d: storing a cached token again: stored %v, evicted %v, %d entries", size, stored, evicted, c.len())
		}
		if e := c.get(last, now); e == nil || !e.claims.notAfter.Equal(now.Add(2*time.Hour)) {
			t.Fatalf("size %d: the new entry of a stored token is not the one found", size)
		}
	}
}

// TestTokenCacheSecondChance: a token in use survives a churn of other
// tokens through a full cache (its hits set its reference bit, so the
// CLOCK hand passes it by); a random or FIFO eviction would drop it.
func TestTokenCacheSecondChance(t *testing.T) {
	tokens := fakeTokens(20_001)
	hot, churn := tokens[0], tokens[1:]
	now := time.Now()
	c := newTokenCache(256)
	store(c, hot, now, now.Add(time.Hour), now)
	for i, tok := range churn {
		if c.get(hot, now) == nil {
			t.Fatalf("the token in use was evicted after %d other tokens", i)
		}
		store(c, tok, now, now.Add(time.Hour), now)
	}
	if c.get(hot, now) == nil {
		t.Fatalf("the token in use was evicted")
	}
}

// TestTokenCacheSecondChanceThroughHandler is the same seen by a user: a
// client reusing its token between many others' first requests keeps
// getting cache hits.
func TestTokenCacheSecondChanceThroughHandler(t *testing.T) {
	f := newAuthzFixture(t)
	size := 128
	h := f.handler(t, &Handler{CacheSize: &size})
	hot := f.token(t, map[string]any{"jti": "hot"})
	expectReason(t, serve(t, h, bearer(hot)), http.StatusOK, "")
	// A shard holds at most its share: count what each one received, so
	// the expected size does not depend on the random shard hash.
	perShard := map[*tokenShard]int{}
	hs := h.cache.shardOf(hot)
	perShard[hs]++
	for i := range 600 {
		tok := f.token(t, map[string]any{"jti": i})
		s := h.cache.shardOf(tok)
		perShard[s]++
		expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
		hits := testutil.ToFloat64(h.obs.cacheHit)
		expectReason(t, serve(t, h, bearer(hot)), http.StatusOK, "")
		if testutil.ToFloat64(h.obs.cacheHit) != hits+1 {
			t.Fatalf("the reused token missed the cache after %d other tokens", i+1)
		}
	}
	want := 0
	for s, n := range perShard {
		want += min(n, s.limit)
	}
	if n := h.cache.len(); n != want || n > size {
		t.Fatalf("cache holds %d entries, want %d (its size is %d)", n, want, size)
	}
}

// sameShard returns n of tokens that fall in one shard of c.
func sameShard(c *tokenCache, tokens []string, n int) []string {
	by := map[*tokenShard][]string{}
	for _, tok := range tokens {
		s := c.shardOf(tok)
		if by[s] = append(by[s], tok); len(by[s]) == n {
			return by[s]
		}
	}
	return nil
}

// TestTokenCacheExpiredGoFirst: the hand takes an expired entry even
// when it was used since it last passed, before a live unreferenced one.
func TestTokenCacheExpiredGoFirst(t *testing.T) {
	now := time.Now()
	c := newTokenCache(2 * tokenCacheShards) // two entries per shard
	toks := sameShard(c, fakeTokens(2000), 3)
	live, dying, fresh := toks[0], toks[1], toks[2]
	store(c, live, now, now.Add(time.Hour), now)
	store(c, dying, now, now.Add(time.Minute), now)
	// Both used: both reference bits set.
	if c.get(live, now) == nil || c.get(dying, now) == nil {
		t.Fatalf("stored tokens not found")
	}
	later := now.Add(2 * time.Minute)
	if c.get(dying, later) != nil {
		t.Fatalf("an expired entry was returned")
	}
	if stored, evicted := store(c, fresh, later, later.Add(time.Hour), later); !stored || !evicted {
		t.Fatalf("a store into a full shard with an expired entry: stored %v, evicted %v", stored, evicted)
	}
	// CLOCK alone would have cleared both bits and then taken live, the
	// first in the ring.
	if c.get(live, later) == nil {
		t.Fatalf("a live entry was evicted while an expired one stayed")
	}
	if c.get(fresh, later) == nil {
		t.Fatalf("the new entry is not found")
	}
}

// TestTokenCacheShardsUniform: shards are chosen by a seeded hash of the
// whole token, so tokens that share their last characters (or any
// suffix) still spread evenly. Under the earlier choice by the last two
// characters, all of these fell in one shard.
func TestTokenCacheShardsUniform(t *testing.T) {
	c := newTokenCache(defaultCacheSize)
	const perShard = 1000
	counts := map[*tokenShard]int{}
	for i := range perShard * tokenCacheShards {
		tok := "eyJhbGciOiJFUzI1NiJ9." + strconv.Itoa(i) + ".sameSignatureTailAAAA"
		s := c.shardOf(tok)
		counts[s]++
	}
	if len(counts) != tokenCacheShards {
		t.Fatalf("%d of %d shards used", len(counts), tokenCacheShards)
	}
	// A binomial count has a standard deviation of about 31 here: the
	// bounds are 6.4 of them away, never crossed by a uniform hash.
	for _, n := range counts {
		if n < perShard-200 || n > perShard+200 {
			t.Fatalf("a shard got %d tokens, want %d ± 200: %v", n, perShard, counts)
		}
	}
}

// TestTokenCacheIndexModel drives small shards (many index collisions,
// removals from the middle of probe runs) with random stores and checks
// after each one that every entry in the rings is found, that nothing
// else is, and that the index has one cell per entry.
func TestTokenCacheIndexModel(t *testing.T) {
	tokens := fakeTokens(3000)
	now := time.Now()
	rng := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{1, 3, 64 * 5, 64 * 9} {
		c := newTokenCache(size)
		for range 20_000 {
			tok := tokens[rng.IntN(len(tokens))]
			if rng.IntN(3) == 0 {
				c.get(tok, now) // sets reference bits
				continue
			}
			store(c, tok, now, now.Add(time.Hour), now)
		}
		stored := map[tokenDigest]bool{}
		for i := range c.nShards {
			s := &c.shards[i]
			cells := 0
			for _, v := range s.index {
				if v != 0 {
					cells++
				}
			}
			if cells != len(s.ring) || len(s.ring) > s.limit || 2*len(s.ring) > len(s.index) {
				t.Fatalf("size %d shard %d: %d cells, %d entries, limit %d, %d cells in all", size, i, cells, len(s.ring), s.limit, len(s.index))
			}
			for j := range s.ring {
				stored[s.ring[j].e.digest] = true
			}
		}
		for _, tok := range tokens {
			e := c.get(tok, now)
			d := tokenDigestOf(tok)
			if stored[d] != (e != nil) || (e != nil && e.digest != d) {
				t.Fatalf("size %d: stored %v, found %v", size, stored[d], e != nil)
			}
		}
	}
}

// TestTokenCacheConcurrent runs stores and look-ups from many goroutines
// (under -race, the reference bits and the locks are checked): a look-up
// only ever returns the entry of the token asked for, and the bound holds.
func TestTokenCacheConcurrent(t *testing.T) {
	tokens := fakeTokens(5000)
	now := time.Now()
	c := newTokenCache(1000)
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for range 20_000 {
				tok := tokens[rng.IntN(len(tokens))]
				if e := c.get(tok, now); e != nil {
					if e.digest != tokenDigestOf(tok) {
						wrong.Add(1)
					}
					continue
				}
				store(c, tok, now, now.Add(time.Hour), now)
			}
		})
	}
	wg.Wait()
	if wrong.Load() != 0 {
		t.Fatalf("%d look-ups returned another token's entry", wrong.Load())
	}
	if n := c.len(); n > 1000 {
		t.Fatalf("%d entries, bound 1000", n)
	}
}

// TestTokenCacheGenerationChange: a key set refresh that changes the keys
// but keeps the token's key sends a cached token to verification once
// (a miss, then hits again); one that removes its key refuses it.
func TestTokenCacheGenerationChange(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	k2 := newTestKey(t, "k2", jose.ES256, 0)
	idp := newTestIdP(t, k1)
	h := remoteHandler(t, idp, nil)
	waitForKeys(t, h)
	c := cacheOf(t, h, idp.url())
	tok := k1.sign(t, claimsFor(idp.url(), "api"), nil)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")

	idp.setKeys(k1, k2)
	refreshNow(c)
	hits, misses := testutil.ToFloat64(h.obs.cacheHit), testutil.ToFloat64(h.obs.cacheMiss)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
	if testutil.ToFloat64(h.obs.cacheMiss) != misses+1 || testutil.ToFloat64(h.obs.cacheHit) != hits {
		t.Fatalf("a cached token was used across a key set change")
	}
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
	if testutil.ToFloat64(h.obs.cacheHit) != hits+1 {
		t.Fatalf("the re-verified token was not cached again")
	}
	if n := h.cache.len(); n != 1 {
		t.Fatalf("re-verifying a token left %d entries, want 1", n)
	}

	idp.setKeys(k2)
	refreshNow(c)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusUnauthorized, "unknown_key")
	expectReason(t, serve(t, h, bearer(tok)), http.StatusUnauthorized, "unknown_key")
}

// TestTokenCacheStaleEntryMakesRoom: after a key set change, an entry of
// the old set cannot be used without verifying its token again, so a full
// cache replaces it with any new token, however much it was used before.
func TestTokenCacheStaleEntryMakesRoom(t *testing.T) {
	k1 := newTestKey(t, "k1", jose.ES256, 0)
	k2 := newTestKey(t, "k2", jose.ES256, 0)
	idp := newTestIdP(t, k1)
	one := 1
	h := provisionHandler(t, &Handler{CacheSize: &one, Providers: map[string]*Provider{
		"idp": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
	}})
	waitForKeys(t, h)
	c := cacheOf(t, h, idp.url())
	sign := func(jti string) string {
		cl := claimsFor(idp.url(), "api")
		cl["jti"] = jti
		return k1.sign(t, cl, nil)
	}
	hot, other, fresh := sign("hot"), sign("other"), sign("fresh")
	for range 10 {
		expectReason(t, serve(t, h, bearer(hot)), http.StatusOK, "")
	}
	// While the hot token's entry is usable, a token used once stays out.
	refused := testutil.ToFloat64(h.obs.metrics.cacheRefused)
	expectReason(t, serve(t, h, bearer(other)), http.StatusOK, "")
	if got := testutil.ToFloat64(h.obs.metrics.cacheRefused) - refused; got != 1 {
		t.Fatalf("a token used once against an entry in use: %v refusals, want 1", got)
	}

	idp.setKeys(k1, k2)
	refreshNow(c)
	evicted := testutil.ToFloat64(h.obs.metrics.cacheEvicted)
	expectReason(t, serve(t, h, bearer(fresh)), http.StatusOK, "")
	if got := testutil.ToFloat64(h.obs.metrics.cacheEvicted) - evicted; got != 1 {
		t.Fatalf("a new token after a key set change: %v evictions, want 1 (the stale entry)", got)
	}
	hits := testutil.ToFloat64(h.obs.cacheHit)
	expectReason(t, serve(t, h, bearer(fresh)), http.StatusOK, "")
	if testutil.ToFloat64(h.obs.cacheHit) != hits+1 {
		t.Fatalf("the new token was not cached in place of the stale entry")
	}
}

// TestTokenCacheNeverPastExpiry moves the handler's clock over a cached
// token's last valid instant: accepted up to exp + leeway (exclusive),
// refused from then on, from the cache or not.
func TestTokenCacheNeverPastExpiry(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{})
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	tok := f.token(t, map[string]any{"exp": exp.Unix()})
	var now time.Time
	h.verifier.now = func() time.Time { return now }
	now = exp.Add(-time.Minute)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
	now = exp.Add(defaultLeeway - time.Nanosecond)
	hits := testutil.ToFloat64(h.obs.cacheHit)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
	if testutil.ToFloat64(h.obs.cacheHit) != hits+1 {
		t.Fatalf("the last valid instant was not served from the cache")
	}
	now = exp.Add(defaultLeeway)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusUnauthorized, "expired")
	expectReason(t, serve(t, h, bearer(tok)), http.StatusUnauthorized, "expired")
}

// TestCachedClaimsMatchUncached: the cache keeps a compacted form of the
// claims (values aliasing the payload, names shared or packed); every
// reader sees exactly what an uncached handler's request sees, on the
// first request and on the cached one, whatever the payload's spelling.
func TestCachedClaimsMatchUncached(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	exp := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	std := `"iss":"` + idp.url() + `","aud":"api","exp":` + exp
	many := ""
	for i := range maxCompactMembers + 5 {
		many += `,"m` + strconv.Itoa(i) + `":` + strconv.Itoa(i)
	}
	payloads := map[string]string{
		"plain":       `{` + std + `,"sub":"user-1","scope":"read write","realm_access":{"roles":["a","b"]}}`,
		"spaces":      "{ \n\t" + std + " ,\r\n \"sub\" : \"user-2\" ,\"n\" :\t1.5e3 , \"list\": [ 1 , \"x\" ] }\n",
		"escapedName": `{` + std + `,"sc\u006fpe":"read","na\"me":"q","\u00fcn\u00efcode":"v","sub":"u"}`,
		"escapedSub":  `{` + std + `,"sub":"us\u0065r\"3","x":"\\\"}{]["}`,
		"nested":      `{` + std + `,"sub":"u4","o":{"a":{"b":"c}","d":["]",{"e":"\""}]}},"arr":[[],{},"",0,true,null]}`,
		"noSub":       `{` + std + `,"https://example.com/tenant":"acme","cnf_like":{"jkt":"x"}}`,
		"manyMembers": `{` + std + `,"sub":"u5"` + many + `}`,
	}
	plainH := provisionHandler(t, &Handler{CacheSize: new(int), Providers: map[string]*Provider{
		"idp": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"},
	}})
	cachedH := remoteHandler(t, idp, nil)
	waitForKeys(t, plainH)
	waitForKeys(t, cachedH)
	for name, payload := range payloads {
		t.Run(name, func(t *testing.T) {
			var members map[string]stdjson.RawMessage
			if err := stdjson.Unmarshal([]byte(payload), &members); err != nil {
				t.Fatalf("test payload: %v", err)
			}
			tok := signPayload(t, k, []byte(payload))
			want := serve(t, plainH, bearer(tok))
			expectReason(t, want, http.StatusOK, "")
			for round := range 2 {
				got := serve(t, cachedH, bearer(tok))
				expectReason(t, got, http.StatusOK, "")
				wc, _ := ClaimsFromRequest(want.nextSeen)
				gc, _ := ClaimsFromRequest(got.nextSeen)
				if !bytes.Equal(wc.JSON(), gc.JSON()) || wc.Subject() != gc.Subject() {
					t.Fatalf("round %d: payload or subject differ", round)
				}
				for _, ph := range []string{"http.auth.user.id", "http.auth.jwt.claims_json"} {
					if w, g := want.placeholder(ph), got.placeholder(ph); w != g {
						t.Fatalf("round %d: {%s} = %q, uncached %q", round, ph, g, w)
					}
				}
				for m := range members {
					ph := "http.auth.jwt.claims." + m
					if w, g := want.placeholder(ph), got.placeholder(ph); w != g {
						t.Fatalf("round %d: {%s} = %q, uncached %q", round, ph, g, w)
					}
					wr, wok := wc.Raw(m)
					gr, gok := gc.Raw(m)
					if wok != gok || !bytes.Equal(wr, gr) || strings.Join(wc.Strings(m), "\x00") != strings.Join(gc.Strings(m), "\x00") {
						t.Fatalf("round %d: claim %q reads %q, uncached %q", round, m, gr, wr)
					}
				}
			}
		})
	}
}

// FuzzClaimsCompact: for any payload a decoder accepts, compact either
// leaves the claims alone or yields the same members with the same bytes
// (each a capped subslice of the payload) and the same subject; it never
// panics.
func FuzzClaimsCompact(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, ` { "a" : [1,{"b":"}"}] , "sub":"x" } `, `{"s\u0075b":"y","sub2":"\"}"}`,
		`{"a":"\\","b":{"c":[[]]},"sub":"us\"er"}`, `{"a":1e5,"b":-0.5,"c":true,"d":null}`,
		`{"a":1,"a.b":2,"c":{"d":{"e":3}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var top map[string]json.RawMessage
		if err := json.Unmarshal(raw, &top); err != nil || top == nil {
			return
		}
		c := &Claims{raw: raw, top: top}
		if v, ok := top["sub"]; ok {
			c.subject, _ = jsonString(v)
		}
		before := *c
		c.compact()
		if c.subject != before.subject {
			t.Fatalf("compact changed the subject")
		}
		if c.top == nil && len(c.spans) != len(before.top) {
			t.Fatalf("compact kept %d of %d members", len(c.spans), len(before.top))
		}
		for name, v := range before.top {
			got, ok := c.member(name)
			if !ok || !bytes.Equal(got, v) || (c.top == nil && cap(got) != len(got)) {
				t.Fatalf("member %q: %q after compact, %q before", name, got, v)
			}
			if got, want := c.String(name+".x"), before.String(name+".x"); got != want {
				t.Fatalf("path %q.x: %q after compact, %q before", name, got, want)
			}
		}
		if _, ok := c.member("\x00absent"); ok {
			t.Fatalf("compact invented a member")
		}
	})
}

// TestClaimsCompactShares: compact does take effect on an ordinary
// payload: the map is gone, every member is found by its name as a
// capped subslice of the payload, dotted paths still reach into nested
// objects, and absent names stay absent. A name spelled with escapes
// keeps the decoder's map.
func TestClaimsCompactShares(t *testing.T) {
	raw := []byte(`{"iss":"https://issuer.example","sub":"user-7","aud":["api"],"name":"Ann","https://x.example/t":"acme","obj":{"k":[1,2],"a.b":"dot"}}`)
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	c := &Claims{raw: raw, top: top, subject: "user-7"}
	c.compact()
	if c.top != nil || len(c.spans) != 6 {
		t.Fatalf("compact kept the map (%d spans)", len(c.spans))
	}
	lo, hi := uintptr(unsafe.Pointer(&raw[0])), uintptr(unsafe.Pointer(&raw[0]))+uintptr(len(raw))
	for name, want := range top {
		v, ok := c.member(name)
		if !ok || string(v) != string(want) {
			t.Fatalf("member %q: %s, want %s", name, v, want)
		}
		if p := uintptr(unsafe.Pointer(&v[0])); p < lo || p >= hi || cap(v) != len(v) {
			t.Fatalf("member %q is not a capped subslice of the payload", name)
		}
	}
	for name, want := range map[string]string{"sub": "user-7", "obj.k": "1,2", "obj.a.b": "dot", "https://x.example/t": "acme", "nam": "", "obj.z": ""} {
		if got := c.String(name); got != want {
			t.Fatalf("String(%q) = %q, want %q", name, got, want)
		}
	}

	esc := []byte(`{"n\u0061me":"Ann","sub":"x"}`)
	top = nil
	if err := json.Unmarshal(esc, &top); err != nil {
		t.Fatal(err)
	}
	c = &Claims{raw: esc, top: top, subject: "x"}
	c.compact()
	if c.top == nil || c.String("name") != "Ann" {
		t.Fatalf("a name with escapes: top %v, name %q", c.top, c.String("name"))
	}
}

// shardOf returns the shard that holds tok's entry, if any.
func (c *tokenCache) shardOf(tok string) *tokenShard {
	_, s := c.locate(tok)
	return s
}

// rotate sends rounds of tokens, in order, through c as the handler does
// (a look-up, and on a miss a store) and returns the hit share of the
// last half of the rounds.
func rotate(c *tokenCache, tokens []string, rounds int, now time.Time) float64 {
	hits, looks := 0, 0
	for r := range rounds {
		for _, tok := range tokens {
			hit := c.get(tok, now) != nil
			if !hit {
				store(c, tok, now, now.Add(time.Hour), now)
			}
			if r >= rounds/2 {
				looks++
				if hit {
					hits++
				}
			}
		}
	}
	return float64(hits) / float64(looks)
}

// TestTokenCacheRotationKeepsAPart: more distinct tokens in rotation than
// the cache holds replace every entry before its next use under CLOCK or
// LRU alone (no hits at all); the frequency admission keeps a stable part
// of them, close to the share the cache can hold.
func TestTokenCacheRotationKeepsAPart(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		size, tokens int
		atLeast      float64
	}{
		{1000, 5000, 0.15},   // can hold 20%
		{1000, 2000, 0.40},   // 50%
		{1000, 1250, 0.65},   // 80%
		{10000, 50000, 0.15}, // the load test's shape
	} {
		got := rotate(newTokenCache(tc.size), fakeTokens(tc.tokens), 8, now)
		if got < tc.atLeast {
			t.Errorf("cache_size %d, %d tokens in rotation: hit share %.3f, want at least %.2f (ideal %.2f)",
				tc.size, tc.tokens, got, tc.atLeast, float64(tc.size)/float64(tc.tokens))
		}
	}
}

// TestTokenCacheAdmission: a full shard admits a new token once it is
// used more often than the entry the hand settles on, and at once when it
// is in heavy use; entries in use are not displaced by tokens used once;
// an expired entry is replaced by any token.
func TestTokenCacheAdmission(t *testing.T) {
	now := time.Now()
	c := newTokenCache(4 * tokenCacheShards) // four entries per shard
	toks := sameShard(c, fakeTokens(20_000), 40)
	for _, tok := range toks[:4] {
		if stored, _ := store(c, tok, now, now.Add(time.Hour), now); !stored {
			t.Fatalf("a shard that is not full refused a token")
		}
	}
	// Entries stored and never used since: a new token gets in on its
	// second use. The count-min sketch may overcount a token whose
	// counters all collide with stored ones: take one that it counts
	// exactly (at least one of its counters is still 0), so that the
	// test does not depend on the random seed.
	for j := 4; j < len(toks); j++ {
		h, s := c.locate(toks[j])
		if s.count(h, false) == 0 {
			toks[4], toks[j] = toks[j], toks[4]
			break
		}
	}
	fresh := toks[4]
	if stored, _ := store(c, fresh, now, now.Add(time.Hour), now); stored {
		t.Fatalf("a token used once replaced an entry of the same use")
	}
	if stored, evicted := store(c, fresh, now, now.Add(time.Hour), now); !stored || !evicted {
		t.Fatalf("a token used twice did not replace an unused entry: stored %v, evicted %v", stored, evicted)
	}

	// Entries in use (hit several times each): tokens used once stay out.
	var inUse []string
	for _, tok := range toks[:5] {
		if c.get(tok, now) != nil {
			inUse = append(inUse, tok)
		}
	}
	if len(inUse) != 4 {
		t.Fatalf("%d tokens cached, want 4", len(inUse))
	}
	for range 5 {
		for _, tok := range inUse {
			c.get(tok, now)
		}
	}
	for _, tok := range toks[5:20] {
		if stored, _ := store(c, tok, now, now.Add(time.Hour), now); stored {
			t.Fatalf("a token used once displaced an entry in use")
		}
	}
	for _, tok := range inUse {
		if c.get(tok, now) == nil {
			t.Fatalf("an entry in use was displaced")
		}
	}

	// A token in heavy use gets in once its count saturates.
	heavy := toks[20]
	stored := false
	for i := range sketchMax {
		if stored, _ = store(c, heavy, now, now.Add(time.Hour), now); stored {
			break
		}
		if i == sketchMax-1 {
			t.Fatalf("a token offered %d times was never stored", sketchMax)
		}
	}

	// An expired entry is replaced by a token used once.
	later := now.Add(2 * time.Hour)
	once := toks[21]
	if stored, evicted := store(c, once, later, later.Add(time.Hour), later); !stored || !evicted {
		t.Fatalf("a token used once did not replace an expired entry: stored %v, evicted %v", stored, evicted)
	}
}
