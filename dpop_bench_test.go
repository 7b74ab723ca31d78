package oauth2jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"
)

// dpopBatch prepares requests outside the timer, as Caddy's server does,
// each DPoP one with its own fresh proof (a jti is single-use).
type dpopBatch struct {
	make func() *http.Request
	reqs []*http.Request
	w    http.ResponseWriter
	next int
}

const dpopBatchSize = 1024

func (rb *dpopBatch) take(b *testing.B) *http.Request {
	if rb.next == len(rb.reqs) {
		b.StopTimer()
		rb.reqs = rb.reqs[:0]
		for range dpopBatchSize {
			rb.reqs = append(rb.reqs, caddyhttp.PrepareRequest(rb.make(), caddy.NewReplacer(), rb.w, nil))
		}
		rb.next = 0
		runtime.GC()
		b.StartTimer()
	}
	rb.next++
	return rb.reqs[rb.next-1]
}

// BenchmarkDPoP compares a DPoP request (cached token, fresh proof) with a
// cached Bearer request and with a bare go-jose verification of the proof
// against its embedded key: the proof check's added cost should be within
// 1.2x of that floor.
func BenchmarkDPoP(b *testing.B) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		alg jose.SignatureAlgorithm
		key crypto.Signer
	}{{jose.ES256, ecKey}, {jose.PS256, rsaKey(0)}} {
		f := newDPoPFixture(b)
		h := f.handler(b, &Handler{DPoP: &DPoP{ReplayCacheSize: 1 << 20}}, nil)
		bound := f.token(b, map[string]any{"jkt": thumbprint(b, c.key.Public())})
		plain := f.token(b, nil)
		noop := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
		proof := func() string {
			return signProof(b, c.key, c.alg, nil, proofClaims(h.verifier.now(), bound), nil)
		}
		run := func(b *testing.B, mk func() *http.Request) {
			rb := &dpopBatch{make: mk, w: httptest.NewRecorder()}
			if err := h.ServeHTTP(rb.w, rb.take(b), noop); err != nil { // warm the token cache
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := h.ServeHTTP(rb.w, rb.take(b), noop); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.Run(string(c.alg)+"/bearer-cached", func(b *testing.B) {
			run(b, func() *http.Request { return bearer(plain) })
		})
		b.Run(string(c.alg)+"/dpop-cached-token", func(b *testing.B) {
			run(b, func() *http.Request { return dpopRequest(bound, proof()) })
		})
		b.Run(string(c.alg)+"/checkProof", func(b *testing.B) {
			// The proof checks alone, on one prepared request (checkProof
			// stores nothing, so the same proof may be checked again).
			req := caddyhttp.PrepareRequest(dpopRequest(bound, proof()), caddy.NewReplacer(), httptest.NewRecorder(), nil)
			leeway := h.providers[0].leeway
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, aerr := h.bind.dpop.checkProof(req, bound, h.verifier.now(), leeway); aerr != nil {
					b.Fatal(aerr)
				}
			}
		})
		b.Run(string(c.alg)+"/go-jose-proof-verify", func(b *testing.B) {
			p := proof()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				jws, err := jose.ParseSignedCompact(p, []jose.SignatureAlgorithm{c.alg})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := jws.Verify(jws.Signatures[0].Protected.JSONWebKey.Key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
