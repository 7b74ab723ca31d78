package oauth2jwt

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"math/big"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
)

// BenchmarkVerifyUncached compares, per algorithm, for the same ~600-byte
// access token (benchClaims):
//
//	module: verifier.verify without cache (the compact JWS path)
//	gojose: the go-jose floor: jwt.ParseSigned, Claims into a map with the
//	        key, then the module's own provider and claim checks
//	crypto: the bare crypto/* verification of the token's signing input
//	        (hash plus rsa, ecdsa or ed25519 Verify), nothing else
//
// Run: go test -run '^$' -bench BenchmarkVerifyUncached -benchmem -count 5
func BenchmarkVerifyUncached(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(string(alg), func(b *testing.B) {
			s := newBenchSetup(b, alg, 0)
			v := &s.h.verifier
			ctx := context.Background()
			pub := s.key.priv.Public()
			b.Run("module", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, _, _, aerr := v.verify(ctx, s.token, time.Now()); aerr != nil {
						b.Fatal(aerr)
					}
				}
			})
			b.Run("gojose", func(b *testing.B) {
				algs := []jose.SignatureAlgorithm{alg}
				b.ReportAllocs()
				for b.Loop() {
					tok, err := jwt.ParseSigned(s.token, algs)
					if err != nil {
						b.Fatal(err)
					}
					var top map[string]json.RawMessage
					if err := tok.Claims(pub, &top); err != nil {
						b.Fatal(err)
					}
					p, _, aerr := v.selectProvider(top)
					if aerr != nil {
						b.Fatal(aerr)
					}
					if _, aerr := checkClaims(p, top, time.Now()); aerr != nil {
						b.Fatal(aerr)
					}
				}
			})
			b.Run("crypto", func(b *testing.B) {
				dot := strings.LastIndexByte(s.token, '.')
				input := []byte(s.token[:dot])
				sig := unb64url(b, s.token[dot+1:])
				verify := bareVerify(b, alg, pub)
				b.ReportAllocs()
				for b.Loop() {
					if !verify(input, sig) {
						b.Fatal("signature refused")
					}
				}
			})
		})
	}
}

// bareVerify is the standard library's verification for alg, as a caller
// without any JOSE library would write it.
func bareVerify(b *testing.B, alg jose.SignatureAlgorithm, pub crypto.PublicKey) func(input, sig []byte) bool {
	b.Helper()
	switch alg {
	case jose.RS256:
		return func(input, sig []byte) bool {
			return rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA256, digest(crypto.SHA256, input), sig) == nil
		}
	case jose.PS256:
		return func(input, sig []byte) bool {
			return rsa.VerifyPSS(pub.(*rsa.PublicKey), crypto.SHA256, digest(crypto.SHA256, input), sig, nil) == nil
		}
	case jose.ES256:
		return func(input, sig []byte) bool {
			r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
			return ecdsa.Verify(pub.(*ecdsa.PublicKey), digest(crypto.SHA256, input), r, s)
		}
	case jose.EdDSA:
		return func(input, sig []byte) bool { return ed25519.Verify(pub.(ed25519.PublicKey), input, sig) }
	}
	b.Fatalf("no bare verification for %s", alg)
	return nil
}
