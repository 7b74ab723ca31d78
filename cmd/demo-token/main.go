// Command demo-token mints a token signed with the repository's demo key
// (demo/demo-private.jwk), for trying Caddyfile.example offline. The demo
// key is public: never trust it anywhere but on your own machine.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func main() {
	keyFile := flag.String("key", "demo/demo-private.jwk", "private JWK to sign with")
	iss := flag.String("iss", "http://127.0.0.1:9081", "issuer")
	aud := flag.String("aud", "demo-api", "audience")
	sub := flag.String("sub", "demo-user", "subject")
	ttl := flag.Duration("ttl", time.Hour, "lifetime")
	scope := flag.String("scope", "read:demo", "scope claim")
	flag.Parse()
	if err := run(*keyFile, *iss, *aud, *sub, *scope, *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "demo-token:", err)
		os.Exit(1)
	}
}

func run(keyFile, iss, aud, sub, scope string, ttl time.Duration) error {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	var key jose.JSONWebKey
	if err := json.Unmarshal(data, &key); err != nil {
		return fmt.Errorf("%s: %w", keyFile, err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return err
	}
	now := time.Now()
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: iss, Audience: jwt.Audience{aud}, Subject: sub,
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(ttl)),
	}).Claims(map[string]any{"scope": scope}).Serialize()
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}
