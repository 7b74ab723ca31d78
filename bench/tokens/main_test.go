package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestMintedTokensVerify makes a key for every algorithm, mints tokens into
// a file and checks each one with go-jose against the written JWK Set: a
// valid signature, the issuer, audience and lifetime asked for, and a sub
// and jti of its own.
func TestMintedTokensVerify(t *testing.T) {
	for _, alg := range []string{"RS256", "PS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			o := options{
				genAlg: alg, keyFile: filepath.Join(dir, "key.jwk"), jwks: filepath.Join(dir, "jwks.json"),
				n: 5, out: filepath.Join(dir, "tokens.txt"), iss: "https://issuer.test", aud: "api", ttl: time.Hour,
			}
			if err := run(o); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(o.jwks)
			if err != nil {
				t.Fatal(err)
			}
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(data, &set); err != nil {
				t.Fatal(err)
			}
			if len(set.Keys) != 1 || !set.Keys[0].IsPublic() || set.Keys[0].Algorithm != alg {
				t.Fatalf("JWK Set %s: want one public %s key", data, alg)
			}
			lines, err := os.ReadFile(o.out)
			if err != nil {
				t.Fatal(err)
			}
			toks := strings.Split(strings.TrimSuffix(string(lines), "\n"), "\n")
			if len(toks) != o.n {
				t.Fatalf("%d tokens in the file, want %d", len(toks), o.n)
			}
			seen := map[string]bool{}
			for _, raw := range toks {
				tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
				if err != nil {
					t.Fatal(err)
				}
				if kid := tok.Headers[0].KeyID; kid != set.Keys[0].KeyID {
					t.Fatalf("kid %q, want %q", kid, set.Keys[0].KeyID)
				}
				var c jwt.Claims
				if err := tok.Claims(set.Keys[0].Key, &c); err != nil {
					t.Fatal(err)
				}
				if err := c.ValidateWithLeeway(jwt.Expected{Issuer: o.iss, AnyAudience: jwt.Audience{o.aud}}, 0); err != nil {
					t.Fatal(err)
				}
				if life := c.Expiry.Time().Sub(c.IssuedAt.Time()); life != o.ttl {
					t.Fatalf("lifetime %v, want %v", life, o.ttl)
				}
				if seen[c.Subject] || seen[c.ID] {
					t.Fatalf("sub %q or jti %q repeated", c.Subject, c.ID)
				}
				seen[c.Subject], seen[c.ID] = true, true
			}
		})
	}
}

// TestLoadSignerRefusesPublicKey: minting needs the private key.
func TestLoadSignerRefusesPublicKey(t *testing.T) {
	dir := t.TempDir()
	jwks := filepath.Join(dir, "jwks.json")
	if err := genKey("ES256", filepath.Join(dir, "key.jwk"), jwks); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(jwks)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "pub.jwk")
	if err := writeJSON(pub, set.Keys[0], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSigner(pub); err == nil {
		t.Fatal("loadSigner accepted a public key")
	}
}
