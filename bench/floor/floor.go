package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func init() {
	caddy.RegisterModule(Floor{})
}

// floorLeeway is the clock skew allowed on exp, nbf and iat: oauth2_jwt's
// default leeway, so both servers accept the same tokens.
const floorLeeway = time.Minute

// Floor is the least a Caddy handler must do to accept a JWT access token
// with go-jose, and nothing more: take the Bearer token, jwt.ParseSigned
// it with the allowed algorithms, pick the key by kid, verify the signature
// and decode the payload (tok.Claims into the registered claims and into a
// map of all claims, as a handler that exposes claims must), check iss,
// aud, exp, nbf and iat with a leeway (ValidateWithLeeway), then call the
// next handler. It has no cache, so every request pays one verification:
// it is the "go-jose floor handler" of bench/load.sh's uncached workload,
// the same work as BenchmarkFloor in bench_test.go but behind a real Caddy
// server. Any failure is a bare 401. It is a benchmark baseline, not an
// authentication module: it skips checks oauth2_jwt makes (token shape and
// size, typ, duplicate members, key use, scrubbing, rules).
type Floor struct {
	// JWKSFile is the JWK Set (public keys) to verify with.
	JWKSFile string `json:"jwks_file"`
	// Issuer is the required iss.
	Issuer string `json:"issuer"`
	// Audience is a required member of aud.
	Audience string `json:"audience"`
	// Algorithms are the accepted alg values.
	Algorithms []string `json:"algorithms"`

	keys     map[string]any
	onlyKey  any
	algs     []jose.SignatureAlgorithm
	expected jwt.Expected
}

// CaddyModule returns the Caddy module information.
func (Floor) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.gojose_floor",
		New: func() caddy.Module { return new(Floor) },
	}
}

// Provision reads the keys once, as oauth2_jwt's jwks_file does, so that a
// request costs only the verification.
func (f *Floor) Provision(caddy.Context) error {
	if f.JWKSFile == "" || f.Issuer == "" || f.Audience == "" || len(f.Algorithms) == 0 {
		return errors.New("gojose_floor: jwks_file, issuer, audience and algorithms are required")
	}
	data, err := os.ReadFile(f.JWKSFile)
	if err != nil {
		return fmt.Errorf("gojose_floor: %w", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return fmt.Errorf("gojose_floor: %s: %w", f.JWKSFile, err)
	}
	if len(set.Keys) == 0 {
		return fmt.Errorf("gojose_floor: %s: no keys", f.JWKSFile)
	}
	f.keys = make(map[string]any, len(set.Keys))
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return fmt.Errorf("gojose_floor: %s: key %q is not a public key", f.JWKSFile, k.KeyID)
		}
		f.keys[k.KeyID] = k.Key
	}
	if len(set.Keys) == 1 {
		f.onlyKey = set.Keys[0].Key
	}
	f.algs = make([]jose.SignatureAlgorithm, len(f.Algorithms))
	for i, a := range f.Algorithms {
		f.algs[i] = jose.SignatureAlgorithm(a)
	}
	f.expected = jwt.Expected{Issuer: f.Issuer, AnyAudience: jwt.Audience{f.Audience}}
	return nil
}

// errNoBearer is the refusal of a request without a Bearer token.
var errNoBearer = errors.New("no Bearer token")

// ServeHTTP verifies the request's token and calls next, or answers 401.
func (f *Floor) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if err := f.verify(r.Header.Get("Authorization")); err != nil {
		return caddyhttp.Error(http.StatusUnauthorized, err)
	}
	return next.ServeHTTP(w, r)
}

// verify is the go-jose floor proper: parse, key by kid, signature and
// payload, registered-claim checks.
func (f *Floor) verify(authz string) error {
	raw, ok := strings.CutPrefix(authz, "Bearer ")
	if !ok || raw == "" {
		return errNoBearer
	}
	tok, err := jwt.ParseSigned(raw, f.algs)
	if err != nil {
		return fmt.Errorf("parsing token: %w", err)
	}
	key, ok := f.keys[tok.Headers[0].KeyID]
	if !ok {
		if tok.Headers[0].KeyID != "" || f.onlyKey == nil {
			return fmt.Errorf("unknown kid %q", tok.Headers[0].KeyID)
		}
		key = f.onlyKey
	}
	var registered jwt.Claims
	var all map[string]any
	if err := tok.Claims(key, &registered, &all); err != nil {
		return fmt.Errorf("verifying token: %w", err)
	}
	if err := registered.ValidateWithLeeway(f.expected, floorLeeway); err != nil {
		return fmt.Errorf("checking claims: %w", err)
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Floor)(nil)
	_ caddyhttp.MiddlewareHandler = (*Floor)(nil)
)
