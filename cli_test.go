package oauth2jwt

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// TestCLIKeygenTokenRoundTrip: keygen writes a key pair, token mints with
// the private key, and the module (jwks_file provider) accepts the token.
func TestCLIKeygenTokenRoundTrip(t *testing.T) {
	for _, alg := range []string{"ES256", "RS256", "EdDSA", "PS256", "ES384"} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			priv := filepath.Join(dir, "private.jwk")
			jwks := filepath.Join(dir, "jwks.json")
			cmd := keygenCommand()
			cmd.SetArgs([]string{"--alg", alg, "--private", priv, "--jwks", jwks})
			cmd.SetOut(&bytes.Buffer{})
			if err := cmd.Execute(); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(priv); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("private key file: %v, mode %v", err, fi.Mode())
			}

			var out bytes.Buffer
			tc := tokenCommand()
			tc.SetArgs([]string{"--key", priv, "--iss", "https://issuer.test", "--aud", "api", "--sub", "alice",
				"--ttl", "10m", "--claim", "scope=read write", "--claim", `roles=["a","b"]`, "--claim", "level=3"})
			tc.SetOut(&out)
			if err := tc.Execute(); err != nil {
				t.Fatal(err)
			}
			token := strings.TrimSpace(out.String())

			h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
				"local": {Issuer: "https://issuer.test", Audiences: []string{"api"}, JWKSFile: jwks},
			}})
			res := serve(t, h, bearer(token))
			expectReason(t, res, http.StatusOK, "")
			for name, want := range map[string]string{
				"http.auth.user.id":              "alice",
				"http.auth.jwt.claims.scope":     "read write",
				"http.auth.jwt.claims.roles":     "a,b",
				"http.auth.jwt.claims.level":     "3",
				"http.auth.jwt.claims.aud":       "api",
				"http.auth.jwt.claims_json":      "",
				"http.auth.jwt.claims.not_there": "",
			} {
				got := res.placeholder(name)
				if name == "http.auth.jwt.claims_json" {
					if !json.Valid([]byte(got)) {
						t.Errorf("claims_json is not JSON: %q", got)
					}
					continue
				}
				if got != want {
					t.Errorf("{%s} = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestCLITokenFromPEM(t *testing.T) {
	dir := t.TempDir()
	k := newTestKey(t, "", jose.RS256, 0)
	pemFile := filepath.Join(dir, "key.pem")
	writePEM(t, pemFile, k)
	tok, err := mintToken(mustRead(t, pemFile), mintOptions{iss: "https://issuer.test", aud: []string{"api"}, sub: "bob", ttl: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// The kid defaults to the key's thumbprint; publish the key under it.
	_, _, kid, err := parsePrivateKey(mustRead(t, pemFile))
	if err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dir, "jwks.json")
	pub := k.public()
	pub.KeyID = kid
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err := os.WriteFile(jwks, b, 0o644); err != nil {
		t.Fatal(err)
	}
	h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
		"local": {Issuer: "https://issuer.test", Audiences: []string{"api"}, JWKSFile: jwks},
	}})
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
}

func TestCLITokenErrors(t *testing.T) {
	dir := t.TempDir()
	priv, pub, err := generateKey(jose.ES256, "k")
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		key  []byte
		opts mintOptions
		want string
	}{
		"public key":    {pub, mintOptions{}, "JWK"},
		"not a key":     {[]byte("hello"), mintOptions{}, "neither a JWK nor PEM"},
		"bad claim":     {priv, mintOptions{claims: []string{"novalue"}}, "want name=value"},
		"bad algorithm": {priv, mintOptions{alg: "none"}, "unsupported algorithm"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := mintToken(tc.key, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, _, err := generateKey("HS256", ""); err == nil {
		t.Fatalf("keygen accepted HS256")
	}
	_ = dir
}

// TestCLIInspect runs inspect against a JSON config whose provider's keys
// come from a test IdP, for a valid, an expired, a wrong-audience and an
// unknown-kid token.
func TestCLIInspect(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	stranger := newTestKey(t, "k-unknown", jose.ES256, 0)
	idp := newTestIdP(t, k)
	cfg := []byte(`{"apps":{"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[
		{"handler":"oauth2_jwt","providers":{"idp":{"issuer":"` + idp.url() + `","audiences":["api"],"jwks_uri":"` + idp.url() + `/jwks"}}},
		{"handler":"static_response","body":"ok"}]}]}}}}}`)

	expired := claimsFor(idp.url(), "api")
	expired["exp"] = time.Now().Add(-2 * time.Hour).Unix()
	cases := []struct {
		name     string
		token    string
		accepted bool
		want     []string
	}{
		{"valid", k.sign(t, claimsFor(idp.url(), "api"), nil), true,
			[]string{`selects provider "idp"`, "[ok]   signature", "result: ACCEPTED", `"sub": "user-42"`}},
		{"expired", k.sign(t, expired, nil), false,
			[]string{"[ok]   issuer", "[FAIL] time: expired", "result: REJECTED, 401 expired", "ago)"}},
		{"wrong audience", k.sign(t, claimsFor(idp.url(), "other"), nil), false,
			[]string{"[ok]   time", "[FAIL] audience: bad_audience", "401 bad_audience"}},
		{"unknown kid", stranger.sign(t, claimsFor(idp.url(), "api"), nil), false,
			[]string{"[ok]   keys", "[FAIL] key: unknown_key", "401 unknown_key"}},
		{"not a token", "hello", false,
			[]string{"1 segments", "[FAIL] shape: malformed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			ok, err := inspect(context.Background(), &out, tc.token, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.accepted {
				t.Errorf("accepted = %v, want %v", ok, tc.accepted)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String(), "[FAIL]") == tc.accepted {
				t.Errorf("FAIL marker presence wrong:\n%s", out.String())
			}
		})
	}

	t.Run("Caddyfile config", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "Caddyfile")
		body := ":0 {\n\toauth2_jwt {\n\t\tprovider idp {\n\t\t\tissuer " + idp.url() + "\n\t\t\taudience api\n\t\t\tjwks_uri " + idp.url() + "/jwks\n\t\t}\n\t}\n\trespond ok\n}\n"
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		cfgJSON, err := loadConfigJSON(file, "")
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		ok, err := inspect(context.Background(), &out, k.sign(t, claimsFor(idp.url(), "api"), nil), cfgJSON)
		if err != nil || !ok {
			t.Fatalf("inspect via Caddyfile: ok=%v err=%v\n%s", ok, err, out.String())
		}
	})
}

func writePEM(t *testing.T, file string, k *testKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
