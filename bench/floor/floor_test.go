package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	testIss = "http://127.0.0.1:9081"
	testAud = "demo-api"
)

// floorFixture is a provisioned Floor with its RS256 signing key.
type floorFixture struct {
	f    *Floor
	sign func(t *testing.T, kid string, c jwt.Claims) string
}

func newFloorFixture(t *testing.T) *floorFixture {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &priv.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}}
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f := &Floor{JWKSFile: file, Issuer: testIss, Audience: testAud, Algorithms: []string{"RS256"}}
	if err := f.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	sign := func(t *testing.T, kid string, c jwt.Claims) string {
		t.Helper()
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: priv, KeyID: kid}},
			(&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	return &floorFixture{f: f, sign: sign}
}

func validClaims() jwt.Claims {
	now := time.Now()
	return jwt.Claims{
		Issuer: testIss, Audience: jwt.Audience{testAud, "other"}, Subject: "u1",
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour)),
	}
}

// serve runs the floor in front of a handler answering 200 "ok" and
// returns the status a client would see (a handler error's status, as
// Caddy's server would write it).
func serve(t *testing.T, f *Floor, authz string) int {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/", nil)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	rec := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		_, err := w.Write([]byte("ok"))
		return err
	})
	if err := f.ServeHTTP(rec, req, next); err != nil {
		var he caddyhttp.HandlerError
		if !errors.As(err, &he) {
			t.Fatalf("ServeHTTP returned %v, not a caddyhttp.HandlerError", err)
		}
		return he.StatusCode
	}
	if rec.Body.String() != "ok" {
		t.Fatalf("next handler not reached: body %q", rec.Body.String())
	}
	return rec.Code
}

func TestFloorAcceptsValidToken(t *testing.T) {
	fx := newFloorFixture(t)
	tok := fx.sign(t, "k1", validClaims())
	// Twice: the floor keeps no state, the second answer must be the same.
	for range 2 {
		if got := serve(t, fx.f, "Bearer "+tok); got != http.StatusOK {
			t.Fatalf("valid token: status %d, want 200", got)
		}
	}
}

func TestFloorRefuses(t *testing.T) {
	fx := newFloorFixture(t)
	valid := fx.sign(t, "k1", validClaims())
	expired := validClaims()
	expired.Expiry = jwt.NewNumericDate(time.Now().Add(-2 * time.Minute))
	future := validClaims()
	future.NotBefore = jwt.NewNumericDate(time.Now().Add(5 * time.Minute))
	wrongAud := validClaims()
	wrongAud.Audience = jwt.Audience{"someone-else"}
	wrongIss := validClaims()
	wrongIss.Issuer = "https://evil.example"
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))

	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	es, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: ecPriv, KeyID: "k1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wrongAlg, err := jwt.Signed(es).Claims(validClaims()).Serialize()
	if err != nil {
		t.Fatal(err)
	}

	cases := map[string]string{
		"no header":        "",
		"not Bearer":       "Basic " + valid,
		"empty Bearer":     "Bearer ",
		"garbage":          "Bearer not.a.jwt",
		"bad signature":    "Bearer " + tampered,
		"expired":          "Bearer " + fx.sign(t, "k1", expired),
		"not yet valid":    "Bearer " + fx.sign(t, "k1", future),
		"wrong audience":   "Bearer " + fx.sign(t, "k1", wrongAud),
		"wrong issuer":     "Bearer " + fx.sign(t, "k1", wrongIss),
		"unknown kid":      "Bearer " + fx.sign(t, "k2", validClaims()),
		"alg not accepted": "Bearer " + wrongAlg,
	}
	for name, authz := range cases {
		t.Run(name, func(t *testing.T) {
			for range 2 {
				if got := serve(t, fx.f, authz); got != http.StatusUnauthorized {
					t.Fatalf("status %d, want 401", got)
				}
			}
		})
	}
}

func TestFloorCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`gojose_floor {
		jwks_file /tmp/jwks.json
		issuer http://127.0.0.1:9081
		audience demo-api
		algorithms RS256 ES256
	}`)
	var f Floor
	if err := f.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if f.JWKSFile != "/tmp/jwks.json" || f.Issuer != testIss || f.Audience != testAud ||
		strings.Join(f.Algorithms, " ") != "RS256 ES256" {
		t.Fatalf("parsed %+v", f)
	}
	for _, bad := range []string{
		"gojose_floor extra",
		"gojose_floor {\n\tissuer\n}",
		"gojose_floor {\n\tissuer a b\n}",
		"gojose_floor {\n\talgorithms\n}",
		"gojose_floor {\n\tleeway 1m\n}",
	} {
		var f Floor
		if err := f.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestFloorProvisionRefusesIncompleteConfig(t *testing.T) {
	fx := newFloorFixture(t)
	for name, f := range map[string]*Floor{
		"no algorithms": {JWKSFile: fx.f.JWKSFile, Issuer: testIss, Audience: testAud},
		"missing file":  {JWKSFile: filepath.Join(t.TempDir(), "nope.json"), Issuer: testIss, Audience: testAud, Algorithms: []string{"RS256"}},
	} {
		if err := f.Provision(caddy.Context{}); err == nil {
			t.Errorf("%s: Provision succeeded", name)
		}
	}
}
