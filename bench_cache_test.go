package oauth2jwt

import (
	"encoding/base64"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	jose "github.com/go-jose/go-jose/v4"
)

// Benchmarks of the verified-token cache, in one package run with those
// of bench_test.go:
//
//	BenchmarkServeHTTPHit:      one token reused through Handler.ServeHTTP
//	BenchmarkTokenCacheChurn:   50,000 distinct tokens drawn at random into
//	                            a 10,000-entry cache, get then put on a miss
//	BenchmarkTokenCache1000:    1,000 cached tokens, every look-up a hit
//	BenchmarkTokenCacheEntry:   live heap bytes per entry of a full cache
//	                            of tokens verified through ServeHTTP
//	BenchmarkServeHTTPChurn:    20,000 distinct tokens in a round-robin
//	                            through ServeHTTP, cache off and cache 4,000
//	                            (every request a miss that stores and evicts):
//	                            the difference is the cache's cost per miss
//
// Run: go test -run '^$' -bench 'ServeHTTPHit|TokenCache' -benchmem

// BenchmarkServeHTTPHit measures the cache-hit path end to end: the token
// is verified once before the timer starts.
func BenchmarkServeHTTPHit(b *testing.B) {
	s := newBenchSetup(b, jose.ES256, defaultCacheSize)
	rb := newRequestBatch(s.token)
	req, _ := rb.take(b)
	if err := s.h.ServeHTTP(rb.w, req, noopNext); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req, _ := rb.take(b)
		if err := s.h.ServeHTTP(rb.w, req, noopNext); err != nil {
			b.Fatal(err)
		}
	}
}

// fakeTokens returns n distinct strings shaped like ES256 access tokens
// (about 400 bytes, a random signature each): the cache only compares and
// hashes them, so they need not verify.
func fakeTokens(n int) []string {
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"bench","typ":"JWT"}`))
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([]string, n)
	var sig [64]byte
	for i := range out {
		payload := `{"iss":"https://issuer.example","aud":"api","sub":"user-` + strconv.Itoa(i) +
			`","jti":"` + strconv.Itoa(i) + `","iat":1767225600,"exp":1767229200,"scope":"read write"}`
		for j := range sig {
			sig[j] = byte(rng.Uint32())
		}
		out[i] = hdr + "." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." +
			base64.RawURLEncoding.EncodeToString(sig[:])
	}
	return out
}

// BenchmarkTokenCacheChurn: 50,000 distinct tokens rotate through a
// 10,000-entry cache from every CPU; each operation looks a random token
// up and stores it on a miss (about one in five look-ups hits). It shows
// the cost of eviction under the shard's write lock.
func BenchmarkTokenCacheChurn(b *testing.B) {
	tokens := fakeTokens(50_000)
	c := newTokenCache(10_000)
	now := time.Now()
	var hits, ops atomic.Int64
	var seed atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 7))
		var h, n int64
		for pb.Next() {
			tok := tokens[rng.IntN(len(tokens))]
			n++
			if c.get(tok, now) != nil {
				h++
				continue
			}
			c.put(tok, nil, 0, claimsUntil(now, now.Add(time.Hour)), now)
		}
		hits.Add(h)
		ops.Add(n)
	})
	b.StopTimer()
	if n := c.len(); n > 10_000+tokenCacheShards {
		b.Fatalf("cache holds %d entries", n)
	}
	if ops.Load() > 0 {
		b.ReportMetric(float64(hits.Load())/float64(ops.Load()), "hits/op")
	}
}

// BenchmarkTokenCache1000: 1,000 cached tokens looked up from every CPU,
// every look-up a hit (the read-lock path).
func BenchmarkTokenCache1000(b *testing.B) {
	tokens := fakeTokens(1000)
	c := newTokenCache(defaultCacheSize)
	now := time.Now()
	for _, tok := range tokens {
		c.put(tok, nil, 0, claimsUntil(now, now.Add(time.Hour)), now)
	}
	var seed atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(1) * 7919)
		for pb.Next() {
			i++
			if c.get(tokens[i%len(tokens)], now) == nil {
				b.Error("a cached token missed")
				return
			}
		}
	})
}

// BenchmarkTokenCacheEntry fills a 10,000-entry cache with tokens verified
// through ServeHTTP (the bench_test.go payload, about 600 bytes of JSON)
// and reports the live heap per entry, after a GC, over the same handler
// with an empty cache. It is the at-rest figure; bench/memory.sh measures
// the process under churn.
func BenchmarkTokenCacheEntry(b *testing.B) {
	const n = 10_000
	s := newBenchSetup(b, jose.ES256, n)
	tokens := make([]string, n)
	for i := range tokens {
		c := benchClaims(s.iss)
		c["jti"] = strconv.Itoa(i)
		tokens[i] = s.key.sign(b, c, nil)
	}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		s.h.cache = newTokenCache(n)
		before := liveHeap()
		b.StartTimer()
		for _, tok := range tokens {
			if res, err := serveRequest(s.h, bearer(tok)); err != nil || res.status != 200 {
				b.Fatalf("status %d, %v", res.status, err)
			}
		}
		b.StopTimer()
		after := liveHeap()
		entries := s.h.cache.len()
		if entries == 0 || entries > n {
			b.Fatalf("cache holds %d entries, bound %d", entries, n)
		}
		b.ReportMetric(float64(after-before)/float64(entries), "B/entry")
		b.ReportMetric(float64(entries), "entries")
		b.StartTimer()
	}
}

// liveHeap returns the heap in use after two collections.
func liveHeap() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// BenchmarkServeHTTPChurn runs 20,000 distinct ES256 tokens in a
// round-robin through ServeHTTP, with the cache off and with a cache of
// 4,000 entries, which the round-robin defeats: every request verifies,
// and with the cache it also stores an entry and evicts one. The
// difference between the two is what the cache costs a miss.
func BenchmarkServeHTTPChurn(b *testing.B) {
	const n = 20_000
	for _, size := range []int{0, 4000} {
		b.Run("cache_size="+strconv.Itoa(size), func(b *testing.B) {
			s := newBenchSetup(b, jose.ES256, size)
			reqs := make([]*http.Request, n)
			for i := range reqs {
				c := benchClaims(s.iss)
				c["jti"] = strconv.Itoa(i)
				reqs[i] = bearer(s.key.sign(b, c, nil))
			}
			if res, err := serveRequest(s.h, reqs[0].Clone(reqs[0].Context())); err != nil || res.status != 200 {
				b.Fatalf("status %d, %v", res.status, err)
			}
			w := httptest.NewRecorder()
			i := 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				r := reqs[i%n].Clone(reqs[i%n].Context())
				r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
				if err := s.h.ServeHTTP(w, r, noopNext); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
