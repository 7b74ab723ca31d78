package oauth2jwt

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/zap"
)

// Benchmarks, all in one package run so their ratios mean something:
//
//	BenchmarkFloor:          go-jose parse + verify + claims decode, called directly
//	BenchmarkVerify:         the module's verification path, uncached
//	BenchmarkServeHTTP:      the handler end to end with a no-op next handler,
//	                         uncached and cached, and cached plus one claim
//	                         placeholder read
//
// Run: go test -run '^$' -bench . -benchmem

var benchAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.EdDSA}

// benchClaims is a realistic access token payload (about 600 bytes of
// JSON), as Auth0, Okta or Keycloak issue them.
func benchClaims(iss string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss":       iss,
		"aud":       []string{"https://api.example.com", "https://example.eu.auth0.com/userinfo"},
		"sub":       "auth0|5f7c8ec7c33c6c004bbafe82",
		"azp":       "8Zb9b2VQs7Tp5kq1k3s2ZxYbq0J1aBcD",
		"client_id": "8Zb9b2VQs7Tp5kq1k3s2ZxYbq0J1aBcD",
		"jti":       "b5d3b8c2-9d6a-4b0e-9d3c-2f6f5b8e2d11",
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"exp":       now.Add(time.Hour).Unix(),
		"scope":     "openid profile email read:orders write:orders read:invoices",
		"gty":       "client-credentials",
		"realm_access": map[string]any{
			"roles": []string{"offline_access", "uma_authorization", "orders-admin"},
		},
		"https://example.com/tenant": "acme-corp",
	}
}

type benchSetup struct {
	h     *Handler
	token string
	key   *testKey
	iss   string
}

func newBenchSetup(b *testing.B, alg jose.SignatureAlgorithm, cacheSize int) *benchSetup {
	b.Helper()
	k := newTestKey(b, "bench-"+string(alg), alg, 0)
	idp := newTestIdP(b, k)
	h := provisionHandler(b, &Handler{
		CacheSize: &cacheSize,
		Providers: map[string]*Provider{
			"idp": {Issuer: idp.url(), Audiences: []string{"https://api.example.com"}, JWKSURI: idp.url() + "/jwks"},
		},
		// The key cache's fetch log would interleave with the results.
		deps: runtimeDeps{log: zap.NewNop()},
	})
	waitForKeys(b, h)
	return &benchSetup{h: h, key: k, iss: idp.url(), token: k.sign(b, benchClaims(idp.url()), nil)}
}

func BenchmarkFloor(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(string(alg), func(b *testing.B) {
			k := newTestKey(b, "floor", alg, 0)
			token := k.sign(b, benchClaims("https://issuer.example"), nil)
			pub := k.priv.Public()
			algs := []jose.SignatureAlgorithm{alg}
			expected := jwt.Expected{Issuer: "https://issuer.example", AnyAudience: jwt.Audience{"https://api.example.com"}}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				tok, err := jwt.ParseSigned(token, algs)
				if err != nil {
					b.Fatal(err)
				}
				var c jwt.Claims
				var all map[string]any
				if err := tok.Claims(pub, &c, &all); err != nil {
					b.Fatal(err)
				}
				if err := c.ValidateWithLeeway(expected, time.Minute); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(string(alg), func(b *testing.B) {
			s := newBenchSetup(b, alg, 0)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, _, _, aerr := s.h.verifier.verify(ctx, s.token, time.Now()); aerr != nil {
					b.Fatal(aerr)
				}
			}
		})
	}
}

// requestBatch prepares requests as Caddy's server does (replacer, vars)
// outside the timer, so the benchmark measures the handler alone.
type requestBatch struct {
	reqs  []*http.Request
	repls []*caddy.Replacer
	w     http.ResponseWriter
	next  int
	token string
}

const batchSize = 4096

func newRequestBatch(token string) *requestBatch {
	rb := &requestBatch{token: token, w: httptest.NewRecorder()}
	rb.refill()
	return rb
}

func (rb *requestBatch) refill() {
	rb.reqs = rb.reqs[:0]
	rb.repls = rb.repls[:0]
	for range batchSize {
		req := httptest.NewRequest(http.MethodGet, "http://api.example.com/orders", nil)
		req.Header.Set("Authorization", "Bearer "+rb.token)
		repl := caddy.NewReplacer()
		req = caddyhttp.PrepareRequest(req, repl, rb.w, nil)
		rb.reqs = append(rb.reqs, req)
		rb.repls = append(rb.repls, repl)
	}
	rb.next = 0
}

// take returns the next prepared request, refilling (with the timer
// stopped) when the batch is used up.
func (rb *requestBatch) take(b *testing.B) (*http.Request, *caddy.Replacer) {
	if rb.next == len(rb.reqs) {
		b.StopTimer()
		rb.refill()
		// Collect the batch's garbage now, so that the timed part pays
		// only for the handler's own allocations.
		runtime.GC()
		b.StartTimer()
	}
	i := rb.next
	rb.next++
	return rb.reqs[i], rb.repls[i]
}

var noopNext = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

func BenchmarkServeHTTP(b *testing.B) {
	for _, alg := range benchAlgs {
		for _, mode := range []string{"uncached", "cached", "cached+placeholder"} {
			b.Run(string(alg)+"/"+mode, func(b *testing.B) {
				size := 0
				if mode != "uncached" {
					size = defaultCacheSize
				}
				s := newBenchSetup(b, alg, size)
				rb := newRequestBatch(s.token)
				// Warm the cache.
				req, _ := rb.take(b)
				if err := s.h.ServeHTTP(rb.w, req, noopNext); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					req, repl := rb.take(b)
					if err := s.h.ServeHTTP(rb.w, req, noopNext); err != nil {
						b.Fatal(err)
					}
					if mode == "cached+placeholder" {
						if v, _ := repl.GetString("http.auth.jwt.claims.scope"); v == "" {
							b.Fatal("empty scope placeholder")
						}
					}
				}
			})
		}
	}
}

// BenchmarkServeHTTPParallel measures the cached path under concurrency
// (the token cache is sharded so readers do not contend).
func BenchmarkServeHTTPParallel(b *testing.B) {
	s := newBenchSetup(b, jose.ES256, defaultCacheSize)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodGet, "http://api.example.com/orders", nil)
			req.Header.Set("Authorization", "Bearer "+s.token)
			req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, nil)
			if err := s.h.ServeHTTP(w, req, noopNext); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRejectOversized shows that a token over max_token_size is
// refused before any decoding, with constant small cost (the allocations
// are Caddy's error value and the challenge header).
func BenchmarkRejectOversized(b *testing.B) {
	s := newBenchSetup(b, jose.ES256, 0)
	big := make([]byte, 60<<10)
	for i := range big {
		big[i] = 'a'
	}
	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "http://api.example.com/orders", nil)
	req.Header.Set("Authorization", "Bearer "+string(big))
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := s.h.ServeHTTP(w, req, noopNext); err == nil {
			b.Fatal("oversized token accepted")
		}
	}
}
