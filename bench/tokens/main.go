// Command tokens makes the keys and tokens of bench/load.sh: a fresh
// signing key (-genkey), written as a private JWK and as the JWK Set the
// servers read (jwks_file), and N distinct valid tokens signed with it, one
// per line, in a file that wrk's Lua script (bench/tokens.lua) rotates.
//
// Every token carries a realistic access-token payload (about 600 bytes of
// JSON, the shape Auth0, Okta or Keycloak issue, like the Go benchmarks'
// benchClaims) with its own sub and jti, so no two tokens are alike. Tokens
// are signed with crypto/* directly, on every CPU: 50,000 RS256 signatures
// take tens of seconds on two cores, go-jose's signer would add its own
// allocations to that.
package main

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// options are the command-line flags.
type options struct {
	genAlg  string
	keyFile string
	jwks    string
	n       int
	out     string
	iss     string
	aud     string
	ttl     time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.genAlg, "genkey", "", "make a fresh key for this algorithm (RS256, PS256, ES256, EdDSA) and write it to -key and -jwks")
	flag.StringVar(&o.keyFile, "key", "demo/demo-private.jwk", "private JWK to sign with (written with -genkey)")
	flag.StringVar(&o.jwks, "jwks", "", "with -genkey: where to write the public JWK Set")
	flag.IntVar(&o.n, "n", 0, "distinct tokens to mint")
	flag.StringVar(&o.out, "out", "", "file for the tokens, one per line (default standard output)")
	flag.StringVar(&o.iss, "iss", "http://127.0.0.1:9081", "issuer")
	flag.StringVar(&o.aud, "aud", "demo-api", "audience (the first of the token's two)")
	flag.DurationVar(&o.ttl, "ttl", 6*time.Hour, "lifetime of the tokens")
	flag.Parse()
	if flag.NArg() > 0 || o.n < 0 || (o.genAlg == "" && o.n == 0) || (o.genAlg != "" && o.jwks == "") {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "tokens:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.genAlg != "" {
		if err := genKey(o.genAlg, o.keyFile, o.jwks); err != nil {
			return fmt.Errorf("making a %s key: %w", o.genAlg, err)
		}
	}
	if o.n == 0 {
		return nil
	}
	s, err := loadSigner(o.keyFile)
	if err != nil {
		return err
	}
	toks, err := mint(s, o)
	if err != nil {
		return err
	}
	return writeLines(o.out, toks)
}

// genKey writes a new private key of alg to keyFile and its public half,
// as a one-key JWK Set, to jwksFile. The key id is the key's RFC 7638
// thumbprint, so two runs never share a kid.
func genKey(alg, keyFile, jwksFile string) error {
	var priv crypto.Signer
	var err error
	switch alg {
	case "RS256", "PS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return errors.New("unsupported algorithm (RS256, PS256, ES256, EdDSA)")
	}
	if err != nil {
		return err
	}
	jwk := jose.JSONWebKey{Key: priv, Algorithm: alg, Use: "sig"}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return err
	}
	jwk.KeyID = "bench-" + base64.RawURLEncoding.EncodeToString(tp[:12])
	if err := writeJSON(keyFile, jwk, 0o600); err != nil {
		return err
	}
	return writeJSON(jwksFile, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk.Public()}}, 0o644)
}

func writeJSON(path string, v any, perm os.FileMode) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.WriteFile(path, append(data, '\n'), perm); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// signer signs JWS signing inputs with one private key.
type signer struct {
	alg    string
	header string // encoded protected header, the same for every token
	sign   func(digest []byte) ([]byte, error)
}

// loadSigner reads a private JWK and picks the signature for its alg.
func loadSigner(keyFile string) (*signer, error) {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	var key jose.JSONWebKey
	if err := json.Unmarshal(data, &key); err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	s := &signer{alg: key.Algorithm}
	switch priv := key.Key.(type) {
	case *rsa.PrivateKey:
		switch key.Algorithm {
		case "RS256":
			s.sign = func(d []byte) ([]byte, error) { return rsa.SignPKCS1v15(nil, priv, crypto.SHA256, d) }
		case "PS256":
			opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
			s.sign = func(d []byte) ([]byte, error) { return rsa.SignPSS(rand.Reader, priv, crypto.SHA256, d, opts) }
		}
	case *ecdsa.PrivateKey:
		if key.Algorithm == "ES256" && priv.Curve == elliptic.P256() {
			s.sign = func(d []byte) ([]byte, error) {
				r, ss, err := ecdsa.Sign(rand.Reader, priv, d)
				if err != nil {
					return nil, err
				}
				sig := make([]byte, 64)
				r.FillBytes(sig[:32])
				ss.FillBytes(sig[32:])
				return sig, nil
			}
		}
	case ed25519.PrivateKey:
		if key.Algorithm == "EdDSA" {
			s.sign = func(msg []byte) ([]byte, error) { return ed25519.Sign(priv, msg), nil }
		}
	}
	if s.sign == nil {
		return nil, fmt.Errorf("%s: not a private key for RS256, PS256, ES256 or EdDSA (alg %q)", keyFile, key.Algorithm)
	}
	hdr, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid,omitempty"`
		Typ string `json:"typ"`
	}{key.Algorithm, key.KeyID, "JWT"})
	if err != nil {
		return nil, err
	}
	s.header = base64.RawURLEncoding.EncodeToString(hdr)
	return s, nil
}

// payload is a realistic access-token payload; Sub and Jti differ per token.
type payload struct {
	Iss         string   `json:"iss"`
	Sub         string   `json:"sub"`
	Aud         []string `json:"aud"`
	Azp         string   `json:"azp"`
	ClientID    string   `json:"client_id"`
	Jti         string   `json:"jti"`
	Iat         int64    `json:"iat"`
	Nbf         int64    `json:"nbf"`
	Exp         int64    `json:"exp"`
	Scope       string   `json:"scope"`
	Gty         string   `json:"gty"`
	RealmAccess struct {
		Roles []string `json:"roles"`
	} `json:"realm_access"`
	Tenant string `json:"https://example.com/tenant"`
}

// compact returns the compact JWS of p.
func (s *signer) compact(p *payload) (string, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	input := s.header + "." + base64.RawURLEncoding.EncodeToString(body)
	msg := []byte(input)
	if s.alg != "EdDSA" {
		d := sha256.Sum256(msg)
		msg = d[:]
	}
	sig, err := s.sign(msg)
	if err != nil {
		return "", err
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// mint signs o.n tokens on every CPU; token i has sub user-i.
func mint(s *signer, o options) ([]string, error) {
	now := time.Now()
	run := strconv.FormatInt(now.UnixNano(), 36)
	base := payload{
		Iss: o.iss, Aud: []string{o.aud, "https://example.eu.auth0.com/userinfo"},
		Azp: "8Zb9b2VQs7Tp5kq1k3s2ZxYbq0J1aBcD", ClientID: "8Zb9b2VQs7Tp5kq1k3s2ZxYbq0J1aBcD",
		Iat: now.Unix(), Nbf: now.Unix(), Exp: now.Add(o.ttl).Unix(),
		Scope:  "openid profile email read:orders write:orders read:invoices",
		Gty:    "client-credentials",
		Tenant: "acme-corp",
	}
	base.RealmAccess.Roles = []string{"offline_access", "uma_authorization", "orders-admin"}

	toks := make([]string, o.n)
	workers := min(runtime.GOMAXPROCS(0), o.n)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			p := base
			for i := w; i < o.n; i += workers {
				id := strconv.Itoa(i)
				p.Sub = "auth0|bench-user-" + id
				p.Jti = run + "-" + id
				tok, err := s.compact(&p)
				if err != nil {
					errs[w] = fmt.Errorf("signing token %d: %w", i, err)
					return
				}
				toks[i] = tok
			}
		})
	}
	wg.Wait()
	return toks, errors.Join(errs...)
}

// writeLines writes lines to path, or to standard output when path is "".
func writeLines(path string, lines []string) (err error) {
	f := os.Stdout
	if path != "" {
		if f, err = os.Create(path); err != nil {
			return err
		}
		defer func() {
			if cerr := f.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("writing %s: %w", path, cerr)
			}
		}()
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, l := range lines {
		if _, err := w.WriteString(l + "\n"); err != nil {
			return fmt.Errorf("writing tokens: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing tokens: %w", err)
	}
	return nil
}
