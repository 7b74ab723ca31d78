package oauth2jwt

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	stdjson "encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
	"go.uber.org/zap"
)

// Native fuzz targets for the hostile-input surfaces: the token path
// (FuzzVerify), JWK Set parsing (FuzzParseJWKS) and OpenID discovery
// parsing (FuzzParseDiscovery). Short runs: .ci/fuzz. Longer runs, e.g.
//
//	go test -run '^$' -fuzz '^FuzzVerify$' -fuzztime 30m .
//
// Regression inputs live in testdata/fuzz/<FuzzName>/. Their tokens are
// signed with the fixed keys of testdata/keys (fixedKey), so they stay
// valid from one run to the next.

// The fuzzed handler's fixed world: providers read from jwks_files, a
// fixed clock, and the fixed keys. Beside asym and hmac, the providers
// rs-only, at and mixed mirror those of the attack fixture, so that every
// attack table built for this world aims at the set-up it was written for.
const (
	fuzzAsymIssuer   = "https://idp.example/asym"
	fuzzHMACIssuer   = "https://idp.example/hmac"
	fuzzRSOnlyIssuer = "https://idp.example/rs-only"
	fuzzATIssuer     = "https://idp.example/at"
	fuzzMixedIssuer  = "https://idp.example/mixed"
	fuzzAudience     = "api://fuzz"
	fuzzLeeway       = 60 * time.Second
	// fuzzVerifyTimeout bounds one ServeHTTP call. Verification with local
	// keys takes microseconds to milliseconds; this only catches hangs.
	fuzzVerifyTimeout = 5 * time.Second
)

// fuzzNow is the fuzzed handler's clock: 2026-01-01T00:00:00Z.
var fuzzNow = time.Unix(1767225600, 0)

// fuzzKeys are the fixed test keys the fuzzed handler trusts.
type fuzzKeys struct {
	rsa, ec, ed, hmac *testKey
}

func loadFuzzKeys(tb testing.TB) *fuzzKeys {
	tb.Helper()
	return &fuzzKeys{
		rsa:  fixedKey(tb, "rsa-1", jose.RS256),
		ec:   fixedKey(tb, "ec-1", jose.ES256),
		ed:   fixedKey(tb, "ed-1", jose.EdDSA),
		hmac: fixedKey(tb, "hmac-1", jose.HS256),
	}
}

// fuzzProvider is what the oracle knows about one configured provider.
type fuzzProvider struct {
	issuer     string
	algs       []jose.SignatureAlgorithm
	keys       []any // verification keys
	requireTyp bool  // require_typ at+jwt (RFC 9068)
}

type fuzzEnv struct {
	h         *Handler
	keys      *fuzzKeys
	providers map[string]fuzzProvider // by provider name
	world     *attackFixture          // the attack tables' view of this world
}

// newFuzzEnv writes the JWK Sets to a temporary directory and provisions a
// handler on them with the fixed clock.
func newFuzzEnv(tb testing.TB) *fuzzEnv {
	tb.Helper()
	k := loadFuzzKeys(tb)
	dir := tb.TempDir()
	ecPub := k.ec.public()
	ecPub.Algorithm = "" // bound to ES256 by its curve alone
	edPub := k.ed.public()
	edPub.Use = ""
	asymFile := writeJWKSFile(tb, dir, "asym.json", k.rsa.public(), ecPub, edPub)
	hmacFile := writeJWKSFile(tb, dir, "hmac.json", k.hmac.public())
	mixedFile := writeJWKSFile(tb, dir, "mixed.json",
		jose.JSONWebKey{Key: k.rsa.priv.Public(), KeyID: k.rsa.kid, Use: "sig"}, k.hmac.public())

	leeway := caddy.Duration(fuzzLeeway)
	asymAlgs := []string{"RS256", "ES256", "EdDSA"}
	h := provisionHandler(tb, &Handler{Providers: map[string]*Provider{
		"asym": {Issuer: fuzzAsymIssuer, Audiences: []string{fuzzAudience}, JWKSFile: asymFile,
			Algorithms: asymAlgs, Leeway: &leeway},
		"rs-only": {Issuer: fuzzRSOnlyIssuer, Audiences: []string{fuzzAudience}, JWKSFile: asymFile,
			Algorithms: []string{"RS256"}, Leeway: &leeway},
		"at": {Issuer: fuzzATIssuer, Audiences: []string{fuzzAudience}, JWKSFile: asymFile,
			Algorithms: asymAlgs, Leeway: &leeway, RequireTyp: "at+jwt"},
		"hmac": {Issuer: fuzzHMACIssuer, Audiences: []string{fuzzAudience}, JWKSFile: hmacFile,
			Algorithms: []string{"HS256"}, Leeway: &leeway},
		"mixed": {Issuer: fuzzMixedIssuer, Audiences: []string{fuzzAudience}, JWKSFile: mixedFile,
			Algorithms: []string{"HS256", "RS256"}, Leeway: &leeway},
	}})
	h.verifier.now = func() time.Time { return fuzzNow }
	h.obs.logger = zap.NewNop() // a debug line per rejected input would dominate the run
	return &fuzzEnv{h: h, keys: k, world: fuzzWorld(k, h, dir, "file://"+asymFile), providers: fuzzProviders(k)}
}

// fuzzProviders is the oracle's copy of newFuzzEnv's configuration.
func fuzzProviders(k *fuzzKeys) map[string]fuzzProvider {
	asymAlgs := []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}
	asymKeys := []any{k.rsa.priv.Public(), k.ec.priv.Public(), k.ed.priv.Public()}
	return map[string]fuzzProvider{
		"asym":    {issuer: fuzzAsymIssuer, algs: asymAlgs, keys: asymKeys},
		"rs-only": {issuer: fuzzRSOnlyIssuer, algs: []jose.SignatureAlgorithm{jose.RS256}, keys: asymKeys},
		"at":      {issuer: fuzzATIssuer, algs: asymAlgs, keys: asymKeys, requireTyp: true},
		"hmac":    {issuer: fuzzHMACIssuer, algs: []jose.SignatureAlgorithm{jose.HS256}, keys: []any{k.hmac.hmac}},
		"mixed": {issuer: fuzzMixedIssuer, algs: []jose.SignatureAlgorithm{jose.HS256, jose.RS256},
			keys: []any{k.rsa.priv.Public(), k.hmac.hmac}},
	}
}

// fuzzWorld is the fuzzed handler h seen as an attack fixture, so that
// the attack tables build their tokens with its keys, issuers, audience
// and clock (asym stands for the fixture's main provider).
func fuzzWorld(k *fuzzKeys, h *Handler, dir, jwksURL string) *attackFixture {
	return &attackFixture{
		h: h, dir: dir,
		rsa: k.rsa, ec: k.ec, ed: k.ed, hs: k.hmac,
		iss: fuzzAsymIssuer, rsOnlyIss: fuzzRSOnlyIssuer, atIss: fuzzATIssuer,
		hmacIss: fuzzHMACIssuer, mixedIss: fuzzMixedIssuer,
		aud: fuzzAudience, jwksURL: jwksURL, now: fuzzNow,
		leeway: caddy.Duration(fuzzLeeway),
	}
}

// fuzzHeaderForms turn the fuzzed token into the request's Authorization
// header values (nil: no header; the token then goes in the query string,
// where it must never be read).
var fuzzHeaderForms = []func(tok string) []string{
	func(tok string) []string { return []string{"Bearer " + tok} },
	func(tok string) []string { return []string{"bearer " + tok} },
	func(tok string) []string { return []string{"BEARER   " + tok} },
	func(tok string) []string { return []string{"Bearer\t" + tok} },
	func(tok string) []string { return []string{"Bearer " + tok, "Bearer " + tok} },
	func(tok string) []string { return []string{tok} }, // the whole header value
	func(tok string) []string { return []string{"Bearer " + tok + " " + tok} },
	func(tok string) []string { return nil },
	func(tok string) []string { return []string{"Bearer " + tok + "\r\n"} },
	func(tok string) []string { return []string{"Basic " + tok} },
}

// fuzzRequest is the request FuzzVerify sends: the token in the query
// string (where it must be ignored) and the Authorization header authz.
func fuzzRequest(token string, authz []string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, "http://example.test/api?access_token="+url.QueryEscape(token), nil)
	if authz != nil {
		req.Header["Authorization"] = authz
	}
	return req
}

// fuzzBearerRE is the RFC 6750 section 2.1 credentials syntax (the
// scheme is case-insensitive; one or more spaces are tolerated).
var fuzzBearerRE = regexp.MustCompile(`^[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/-]+=*)$`)

// fuzzCompactRE is a compact JWS of three non-empty unpadded base64url
// segments.
var fuzzCompactRE = regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`)

// checkAccepted is the oracle for an accepted request: it re-derives,
// without the module's code, that the token was one the module may accept.
// It returns why not, or "".
func (e *fuzzEnv) checkAccepted(authz []string, out result) string {
	if len(authz) != 1 {
		return fmt.Sprintf("accepted with %d Authorization headers", len(authz))
	}
	m := fuzzBearerRE.FindStringSubmatch(authz[0])
	if m == nil {
		return fmt.Sprintf("accepted an Authorization header that is not `Bearer <b64token>`: %q", authz[0])
	}
	tok := m[1]
	if !fuzzCompactRE.MatchString(tok) {
		return fmt.Sprintf("accepted a token that is not three unpadded base64url segments: %q", tok)
	}
	claims, ok := ClaimsFromRequest(out.nextSeen)
	if !ok {
		return "accepted, but next saw no verified claims"
	}
	p, ok := e.providers[claims.Provider()]
	if !ok {
		return fmt.Sprintf("accepted for unknown provider %q", claims.Provider())
	}
	segs := strings.Split(tok, ".")
	// Each segment is canonical base64url: a token has one spelling.
	for i, seg := range segs {
		if _, err := base64.RawURLEncoding.Strict().DecodeString(seg); err != nil {
			return fmt.Sprintf("accepted a token whose segment %d is not canonical base64url: %v", i, err)
		}
	}

	// Header: strict JSON object, an allowed alg, no forbidden members.
	hdrJSON, _ := base64.RawURLEncoding.DecodeString(segs[0])
	var hdr map[string]any
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil || hdr == nil {
		return fmt.Sprintf("accepted a token whose header is not a strict JSON object (%v): %s", err, hdrJSON)
	}
	alg, _ := hdr["alg"].(string)
	allowed := false
	for _, a := range p.algs {
		if string(a) == alg {
			allowed = true
		}
	}
	if !allowed {
		return fmt.Sprintf("accepted alg %q outside provider %q's allow-list %v", alg, claims.Provider(), p.algs)
	}
	for _, name := range []string{"crit", "b64", "zip"} {
		if _, ok := hdr[name]; ok {
			return fmt.Sprintf("accepted a token with a %q header: %s", name, hdrJSON)
		}
	}
	if cty, ok := hdr["cty"]; ok {
		s, _ := cty.(string)
		if s == "" || strings.EqualFold(s, "JWT") || strings.EqualFold(s, "application/jwt") {
			return fmt.Sprintf("accepted a nested or odd cty: %s", hdrJSON)
		}
	}

	// Signature: some test key of that provider verifies it.
	jws, err := jose.ParseSignedCompact(tok, p.algs)
	if err != nil {
		return "accepted a token go-jose cannot parse: " + err.Error()
	}
	verified := false
	for _, k := range p.keys {
		if _, err := jws.Verify(k); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return fmt.Sprintf("accepted a token no test key of provider %q verifies", claims.Provider())
	}

	// Claims: strict JSON object; iss, exp, nbf, aud as configured.
	payload, _ := base64.RawURLEncoding.DecodeString(segs[1])
	var top map[string]json.RawMessage
	if err := json.Unmarshal(payload, &top); err != nil || top == nil {
		return fmt.Sprintf("accepted a payload that is not a strict JSON object (%v): %s", err, payload)
	}
	var iss string
	if err := json.Unmarshal(top["iss"], &iss); err != nil || iss != p.issuer {
		return fmt.Sprintf("accepted iss %s for provider %q (issuer %q)", top["iss"], claims.Provider(), p.issuer)
	}
	now := float64(fuzzNow.Unix())
	slack := fuzzLeeway.Seconds() + 1 // one second for float rounding
	exp, err := strconv.ParseFloat(string(top["exp"]), 64)
	if err != nil {
		return fmt.Sprintf("accepted exp %s", top["exp"])
	}
	if exp+slack <= now {
		return fmt.Sprintf("accepted an expired token: exp %s", top["exp"])
	}
	if raw, ok := top["nbf"]; ok {
		nbf, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || nbf-slack > now {
			return fmt.Sprintf("accepted nbf %s", raw)
		}
	}
	var aud any
	if err := json.Unmarshal(top["aud"], &aud); err != nil {
		return fmt.Sprintf("accepted aud %s", top["aud"])
	}
	audOK := aud == fuzzAudience
	if list, ok := aud.([]any); ok {
		for _, a := range list {
			if _, isString := a.(string); !isString {
				return fmt.Sprintf("accepted aud %s with a non-string member", top["aud"])
			}
			audOK = audOK || a == fuzzAudience
		}
	}
	if !audOK {
		return fmt.Sprintf("accepted aud %s", top["aud"])
	}
	if p.requireTyp {
		return checkAccessToken(hdr, top)
	}
	return ""
}

// checkAccessToken is the oracle's RFC 9068 check for a provider with
// require_typ at+jwt: typ at+jwt or application/at+jwt in any case, and
// sub, client_id and jti strings and iat a number.
func checkAccessToken(hdr map[string]any, top map[string]json.RawMessage) string {
	typ, _ := hdr["typ"].(string)
	if !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
		return fmt.Sprintf("accepted typ %q where at+jwt is required", hdr["typ"])
	}
	for _, name := range []string{"sub", "client_id", "jti"} {
		var s string
		if err := json.Unmarshal(top[name], &s); err != nil {
			return fmt.Sprintf("accepted an access token whose %s is %s", name, top[name])
		}
	}
	if _, err := strconv.ParseFloat(string(top["iat"]), 64); err != nil {
		return fmt.Sprintf("accepted an access token whose iat is %s", top["iat"])
	}
	return ""
}

// FuzzVerify feeds tokens (and Authorization header forms) to a handler
// provisioned from jwks_files with a fixed clock. Properties: no panic; the
// call returns within fuzzVerifyTimeout; the answer is 200, 400 or 401 with
// a Bearer challenge; and a token is accepted only when checkAccepted, which
// re-verifies the signature with go-jose against the test keys, agrees.
//
// The seeds are the tokens of every attack table (allAttackCases), built
// for this handler's world, and a valid token in every header form. A
// token refused for its algorithm or its kid is refused before its
// signature is read, so of those one seed per header and payload is kept
// (the HMAC confusion table alone has a hundred that differ only in the
// signature): each seed costs time at the start of every fuzzing run.
func FuzzVerify(f *testing.F) {
	e := newFuzzEnv(f)
	seen := map[string]bool{}
	for _, tc := range allAttackCases(f, e.world) {
		if tc.auth != nil {
			continue
		}
		key := tc.token
		if i := strings.LastIndexByte(key, '.'); i >= 0 && (tc.code == "bad_algorithm" || tc.code == "unknown_key") {
			key = key[:i]
		}
		if !seen[key] {
			seen[key] = true
			f.Add(tc.token, uint8(0))
		}
	}
	for _, tok := range fuzzVerifyExtraSeeds(f, e.world) {
		f.Add(tok, uint8(0))
	}
	valid := e.keys.rsa.sign(f, e.world.claims(fuzzAsymIssuer), nil)
	for form := range fuzzHeaderForms {
		f.Add(valid, uint8(form))
	}
	f.Fuzz(func(t *testing.T, token string, form uint8) {
		authz := fuzzHeaderForms[int(form)%len(fuzzHeaderForms)](token)
		req := fuzzRequest(token, authz)
		done := make(chan result, 1)
		go func() {
			out, _ := serveRequest(e.h, req) // an error leaves status -1, refused below
			done <- out
		}()
		var out result
		select {
		case out = <-done:
		case <-time.After(fuzzVerifyTimeout):
			t.Fatalf("ServeHTTP did not return within %s; token %q", fuzzVerifyTimeout, token)
		}
		switch out.status {
		case http.StatusOK:
			if out.nextSeen == nil {
				t.Fatal("status 200 but next was not called")
			}
			if why := e.checkAccepted(authz, out); why != "" {
				t.Fatalf("token wrongly accepted: %s\nAuthorization: %q", why, authz)
			}
		case http.StatusBadRequest, http.StatusUnauthorized:
			if out.nextSeen != nil {
				t.Fatalf("status %d but next was called", out.status)
			}
			if !strings.HasPrefix(out.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("status %d without a Bearer challenge: %q", out.status, out.header.Get("WWW-Authenticate"))
			}
		default:
			t.Fatalf("status %d (err %v), want 200, 400 or 401", out.status, out.err)
		}
	})
}

// fuzzVerifyExtraSeeds are shapes no attack table holds: empty and
// trivial tokens, and JSON with white space around the objects.
func fuzzVerifyExtraSeeds(tb testing.TB, w *attackFixture) []string {
	tb.Helper()
	rs := w.rsa.signer(tb)
	h0 := hdr(tb, "RS256", w.rsa.kid, nil)
	claims := w.payload(tb, w.iss, nil)
	return []string{
		"",
		"a.b.c",
		"e30.e30.e30",
		compact(" "+h0, claims, rs),
		compact(h0+"\n", claims, rs),
		compact(h0, " "+claims, rs),
		compact(h0, claims+" ", rs),
	}
}

// fuzzEmbeddedKeyToken is signed by a fresh key whose public JWK it embeds
// (CVE-2018-0114 class), with the provider's kid.
func fuzzEmbeddedKeyToken(tb testing.TB, claims string) string {
	tb.Helper()
	attacker := newTestKey(tb, "ec-1", jose.ES256, 0)
	jwk, err := (&jose.JSONWebKey{Key: attacker.priv.Public()}).MarshalJSON()
	if err != nil {
		tb.Fatal(err)
	}
	return compact(`{"alg":"ES256","kid":"ec-1","jwk":`+string(jwk)+`}`, claims, attacker.signer(tb))
}

// fuzzNonCanonical sets a stray low bit in the token's last character: the
// same signature bytes, spelled differently (an RS256 signature has four
// unused bits there).
func fuzzNonCanonical(tok string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, tok[len(tok)-1])
	return tok[:len(tok)-1] + string(alphabet[i^1])
}

// FuzzParseJWKS checks parseJWKS on arbitrary documents. Properties: no
// panic; an error comes with no key set and a key set with no error; every
// key returned is a public key of a supported class (RSA of at least 2048
// bits, EC on its curve, Ed25519, HMAC of at least 256 bits and only when
// allowOct), its JWK alg fits it, kids are unique, and it comes from an
// entry of the document whose use is absent or "sig" (so a `use: enc` key
// is never returned).
func FuzzParseJWKS(f *testing.F) {
	for _, seed := range fuzzJWKSSeeds(f) {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, allowOct bool) {
		ks, _, err := parseJWKS(data, allowOct)
		if err != nil {
			if ks != nil {
				t.Fatalf("error %v with a key set", err)
			}
			return
		}
		if ks == nil {
			t.Fatal("no error and no key set")
		}
		if why := fuzzCheckKeySet(data, allowOct, ks); why != "" {
			t.Fatalf("%s\nallowOct %v, JWKS: %s", why, allowOct, data)
		}
	})
}

// fuzzJWKSEntry is the oracle's independent reading of one JWK of a set.
type fuzzJWKSEntry struct {
	kid, alg string
	key      any // public key material
}

// fuzzUsableEntries decodes the set's entries with go-jose's strict JSON and
// keeps those whose use is absent or "sig" (and oct only with allowOct).
func fuzzUsableEntries(data []byte, allowOct bool) []fuzzJWKSEntry {
	var doc map[string]json.RawMessage
	if json.Unmarshal(data, &doc) != nil {
		return nil
	}
	var raws []json.RawMessage
	if json.Unmarshal(doc["keys"], &raws) != nil {
		return nil
	}
	var out []fuzzJWKSEntry
	for _, raw := range raws {
		var members map[string]any
		if json.Unmarshal(raw, &members) != nil {
			continue
		}
		if use, ok := members["use"]; ok && use != "sig" {
			continue
		}
		if members["kty"] == "oct" && !allowOct {
			continue
		}
		var jwk jose.JSONWebKey
		if jwk.UnmarshalJSON(raw) != nil {
			continue
		}
		key := jwk.Key
		if !jwk.IsPublic() && members["kty"] != "oct" {
			key = jwk.Public().Key
		}
		kid, _ := members["kid"].(string)
		alg, _ := members["alg"].(string)
		out = append(out, fuzzJWKSEntry{kid: kid, alg: alg, key: key})
	}
	return out
}

// fuzzSameMaterial reports whether two public keys (or HMAC secrets) are equal.
func fuzzSameMaterial(a, b any) bool {
	switch ka := a.(type) {
	case *rsa.PublicKey:
		return ka.Equal(b)
	case *ecdsa.PublicKey:
		return ka.Equal(b)
	case ed25519.PublicKey:
		return ka.Equal(b)
	case []byte:
		kb, ok := b.([]byte)
		return ok && bytes.Equal(ka, kb)
	}
	return false
}

// fuzzAlgFitsKey is the oracle's table of which key an algorithm needs.
func fuzzAlgFitsKey(alg string, key any) bool {
	curve := func(c elliptic.Curve) bool {
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve == c
	}
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		_, ok := key.(*rsa.PublicKey)
		return ok
	case "ES256":
		return curve(elliptic.P256())
	case "ES384":
		return curve(elliptic.P384())
	case "ES512":
		return curve(elliptic.P521())
	case "EdDSA":
		_, ok := key.(ed25519.PublicKey)
		return ok
	case "HS256", "HS384", "HS512":
		_, ok := key.([]byte)
		return ok
	}
	return false
}

// fuzzCheckKeySet is the oracle for a parsed key set; it returns a violation
// or "".
func fuzzCheckKeySet(data []byte, allowOct bool, ks *keySet) string {
	if len(ks.all) == 0 || len(ks.all) > maxKeysPerSet {
		return fmt.Sprintf("%d keys returned, want 1 to %d", len(ks.all), maxKeysPerSet)
	}
	entries := fuzzUsableEntries(data, allowOct)
	kids := map[string]bool{}
	for i, k := range ks.all {
		switch key := k.key.(type) {
		case *rsa.PublicKey:
			if k.class != classRSA || key.N == nil || key.N.BitLen() < 2048 {
				return fmt.Sprintf("key %d: RSA key of class %d, %d bits", i, k.class, key.N.BitLen())
			}
		case *ecdsa.PublicKey:
			want := map[elliptic.Curve]keyClass{elliptic.P256(): classP256, elliptic.P384(): classP384, elliptic.P521(): classP521}[key.Curve]
			if want == 0 || k.class != want {
				return fmt.Sprintf("key %d: EC key of class %d on curve %v", i, k.class, key.Curve)
			}
			if _, err := key.ECDH(); err != nil {
				return fmt.Sprintf("key %d: EC point not on its curve: %v", i, err)
			}
		case ed25519.PublicKey:
			if k.class != classEd25519 || len(key) != ed25519.PublicKeySize {
				return fmt.Sprintf("key %d: Ed25519 key of class %d, %d bytes", i, k.class, len(key))
			}
		case []byte:
			if !allowOct || k.class != classOct || len(key) < 32 {
				return fmt.Sprintf("key %d: HMAC key of class %d, %d bytes, allowOct %v", i, k.class, len(key), allowOct)
			}
		default:
			return fmt.Sprintf("key %d: key of type %T returned", i, k.key)
		}
		if k.alg != "" && !fuzzAlgFitsKey(string(k.alg), k.key) {
			return fmt.Sprintf("key %d: JWK alg %q does not fit a %T", i, k.alg, k.key)
		}
		if k.kid != "" {
			if kids[k.kid] {
				return fmt.Sprintf("key %d: kid %q returned twice", i, k.kid)
			}
			kids[k.kid] = true
			if list := ks.byKid[k.kid]; len(list) != 1 || list[0] != k {
				return fmt.Sprintf("key %d: byKid[%q] does not hold it", i, k.kid)
			}
		}
		found := false
		for _, e := range entries {
			if e.kid == k.kid && e.alg == string(k.alg) && fuzzSameMaterial(e.key, k.key) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Sprintf("key %d (kid %q) matches no entry of the set whose use is absent or sig", i, k.kid)
		}
	}
	for kid, list := range ks.byKid {
		if !kids[kid] || len(list) != 1 {
			return fmt.Sprintf("byKid[%q] has %d keys not in the set", kid, len(list))
		}
	}
	return ""
}

// fuzzJWKSSeeds are JWK Set shapes seen in the wild and the broken ones of
// issue 3.
func fuzzJWKSSeeds(tb testing.TB) []string {
	tb.Helper()
	k := loadFuzzKeys(tb)
	jwk := func(key any, changes map[string]any) string {
		b, err := (&jose.JSONWebKey{Key: key}).MarshalJSON()
		if err != nil {
			tb.Fatal(err)
		}
		var m map[string]any
		if err := stdjson.Unmarshal(b, &m); err != nil {
			tb.Fatal(err)
		}
		for name, v := range changes {
			if v == nil {
				delete(m, name)
				continue
			}
			m[name] = v
		}
		b, err = stdjson.Marshal(m)
		if err != nil {
			tb.Fatal(err)
		}
		return string(b)
	}
	set := func(keys ...string) string { return `{"keys":[` + strings.Join(keys, ",") + `]}` }
	rsaPub := k.rsa.priv.Public().(*rsa.PublicKey)
	ecPub := k.ec.priv.Public().(*ecdsa.PublicKey)
	rsaJWK := jwk(rsaPub, map[string]any{"kid": "rsa-1", "alg": "RS256", "use": "sig"})
	ecJWK := jwk(ecPub, map[string]any{"kid": "ec-1", "use": "sig"})
	edJWK := jwk(k.ed.priv.Public(), map[string]any{"kid": "ed-1", "alg": "EdDSA"})
	octJWK := jwk(k.hmac.hmac, map[string]any{"kid": "hmac-1", "alg": "HS256"})

	// A 1024-bit modulus (not a real key: parsing does not factor it).
	n1024 := append([]byte{0xc5}, rsaPub.N.Bytes()[1:128]...)
	rsa1024 := fmt.Sprintf(`{"kty":"RSA","kid":"rsa-1024","n":%q,"e":"AQAB"}`, b64url(n1024))
	// The EC key with y changed: a point not on P-256.
	var ecm map[string]string
	_ = stdjson.Unmarshal([]byte(ecJWK), &ecm)
	y := unb64url(tb, ecm["y"])
	y[len(y)-1] ^= 1
	offCurve := fmt.Sprintf(`{"kty":"EC","crv":"P-256","kid":"ec-bad","x":%q,"y":%q}`, ecm["x"], b64url(y))
	ed448 := `{"kty":"OKP","crv":"Ed448","kid":"ed448","x":"` + b64url(bytes.Repeat([]byte{7}, 57)) + `"}`
	x25519 := `{"kty":"OKP","crv":"X25519","kid":"x25519","use":"enc","x":"` + b64url(bytes.Repeat([]byte{9}, 32)) + `"}`

	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	many := make([]string, 0, maxKeysPerSet+2)
	for i := 0; i < maxKeysPerSet+2; i++ {
		many = append(many, jwk(ecPub, map[string]any{"kid": fmt.Sprintf("k%d", i)}))
	}

	return []string{
		set(rsaJWK, ecJWK, edJWK),
		set(rsaJWK, ecJWK, edJWK, octJWK),
		set(octJWK),
		set(jwk(p384.Public(), map[string]any{"kid": "p384", "alg": "ES384"}), jwk(p521.Public(), map[string]any{"kid": "p521", "alg": "ES512"})),
		set(ed448, rsaJWK),
		set(x25519, edJWK),
		set(jwk(rsaPub, map[string]any{"kid": "rsa-enc", "use": "enc"}), ecJWK),
		set(jwk(rsaPub, map[string]any{"kid": "rsa-enc", "use": "ENC"})),
		set(jwk(rsaPub, map[string]any{"kid": "rsa-enc", "use": "enc", "use ": "sig"})),
		set(jwk(rsaPub, map[string]any{"kid": "rsa-ops", "key_ops": []string{"encrypt"}})),
		set(rsa1024, ecJWK),
		set(offCurve, edJWK),
		set(jwk(rsaPub, map[string]any{"kid": "dup"}), jwk(ecPub, map[string]any{"kid": "dup"})),
		set(rsaJWK, rsaJWK),
		set(jwk(rsaPub, map[string]any{"kid": "k", "alg": "ES256"}), jwk(ecPub, map[string]any{"kid": "e", "alg": "RS256"})),
		set(jwk(ecPub, map[string]any{"alg": "ES384"}), jwk(k.ed.priv.Public(), map[string]any{"alg": "none"})),
		set(jwk(k.hmac.hmac[:16], map[string]any{"kid": "short"}), jwk(k.hmac.hmac, map[string]any{"alg": "RS256"})),
		set(jwk(k.rsa.priv, map[string]any{"kid": "private-rsa"}), jwk(k.ec.priv, map[string]any{"kid": "private-ec"})),
		set(many...),
		`{"keys":[]}`,
		`{"keys":null}`,
		`{"keys":[null,1,"x",[],{}]}`,
		`{"keys":[` + rsaJWK + `],"keys":[]}`,
		`{"keys":[{"kty":"RSA","kty":"EC","n":"AQAB","e":"AQAB"}]}`,
		`{"Keys":[` + rsaJWK + `]}`,
		`{}`,
		`[]`,
		`null`,
		``,
		`<!DOCTYPE html><html><body>Not Found</body></html>`,
		set(rsaJWK) + `garbage`,
	}
}

// FuzzParseDiscovery checks parseDiscovery. Properties: no panic; success
// means the document is a strict JSON object whose issuer equals the
// configured one and whose jwks_uri is the URL returned, an absolute https
// URL with a host, or http on a loopback host (any host with insecure).
func FuzzParseDiscovery(f *testing.F) {
	for _, s := range fuzzDiscoverySeeds() {
		f.Add([]byte(s.doc), s.issuer, s.insecure)
	}
	f.Fuzz(func(t *testing.T, data []byte, issuer string, insecure bool) {
		got, err := parseDiscovery(data, issuer, insecure)
		if err != nil {
			if got != "" {
				t.Fatalf("error %v with jwks_uri %q", err, got)
			}
			return
		}
		if issuer == "" {
			return // not a valid configuration (Provider.check refuses it)
		}
		if why := fuzzCheckDiscovery(data, issuer, insecure, got); why != "" {
			t.Fatalf("%s\nissuer %q, insecure %v, document: %s", why, issuer, insecure, data)
		}
	})
}

// fuzzCheckDiscovery is the oracle for an accepted discovery document.
func fuzzCheckDiscovery(data []byte, issuer string, insecure bool, got string) string {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil || doc == nil {
		return fmt.Sprintf("accepted a document that is not a strict JSON object (%v)", err)
	}
	var docIssuer, jwksURI string
	if err := json.Unmarshal(doc["issuer"], &docIssuer); err != nil || docIssuer != issuer {
		return fmt.Sprintf("accepted issuer %s, configured %q", doc["issuer"], issuer)
	}
	if err := json.Unmarshal(doc["jwks_uri"], &jwksURI); err != nil || jwksURI != got {
		return fmt.Sprintf("returned %q, the document's jwks_uri is %s", got, doc["jwks_uri"])
	}
	u, err := url.Parse(got)
	if err != nil {
		return fmt.Sprintf("returned an unparsable jwks_uri %q: %v", got, err)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Sprintf("returned jwks_uri %q without a host", got)
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	loopback := strings.EqualFold(host, "localhost") || ip != nil && ip.IsLoopback()
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && (loopback || insecure):
	default:
		return fmt.Sprintf("returned jwks_uri %q (scheme %q, loopback %v, insecure %v)", got, u.Scheme, loopback, insecure)
	}
	return ""
}

type fuzzDiscoverySeed struct {
	doc      string
	issuer   string
	insecure bool
}

func fuzzDiscoverySeeds() []fuzzDiscoverySeed {
	const google = `{"issuer":"https://accounts.google.com","authorization_endpoint":"https://accounts.google.com/o/oauth2/v2/auth","token_endpoint":"https://oauth2.googleapis.com/token","jwks_uri":"https://www.googleapis.com/oauth2/v3/certs","response_types_supported":["code","token","id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}`
	kc := "https://sso.example.com/realms/main"
	return []fuzzDiscoverySeed{
		{google, "https://accounts.google.com", false},
		{google, "https://accounts.google.com/", false},
		{`{"issuer":"` + kc + `","jwks_uri":"` + kc + `/protocol/openid-connect/certs"}`, kc, false},
		{`{"issuer":"https:\/\/sso.example.com\/realms\/main","jwks_uri":"https:\/\/sso.example.com\/certs"}`, kc, false},
		{`{"issuer":"http://127.0.0.1:8080","jwks_uri":"http://127.0.0.1:8080/jwks"}`, "http://127.0.0.1:8080", false},
		{`{"issuer":"http://localhost","jwks_uri":"http://LOCALHOST/jwks"}`, "http://localhost", false},
		{`{"issuer":"http://[::1]:9","jwks_uri":"http://[::1]:9/jwks"}`, "http://[::1]:9", false},
		{`{"issuer":"https://idp","jwks_uri":"http://idp.example/jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","jwks_uri":"http://idp.example/jwks"}`, "https://idp", true},
		{`{"issuer":"https://idp","jwks_uri":"http://localhost.evil.example/jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","jwks_uri":"http://127.0.0.1.nip.io/jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","jwks_uri":"http://2130706433/jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","jwks_uri":"http://localhost:80@evil.example/jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","jwks_uri":"HTTPS://IDP/jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","jwks_uri":"/jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","jwks_uri":"//evil.example/jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","jwks_uri":"https:///jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","jwks_uri":"https:idp/jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","jwks_uri":"file:///etc/passwd"}`, "https://idp", true},
		{`{"issuer":"https://idp","jwks_uri":"javascript:alert(1)"}`, "https://idp", true},
		{`{"issuer":"https://idp","jwks_uri":""}`, "https://idp", false},
		{`{"issuer":"https://idp"}`, "https://idp", false},
		{`{"issuer":"https://evil","issuer":"https://idp","jwks_uri":"https://idp/jwks"}`, "https://idp", false},
		{`{"Issuer":"https://idp","jwks_uri":"https://idp/jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","JWKS_URI":"https://evil/jwks","jwks_uri":"https://idp/jwks"}`, "https://idp", false},
		{`{"issuer":"https://idp","jwks_uri":"https://idp/jwks"} trailing`, "https://idp", false},
		{`{"issuer":1,"jwks_uri":["https://idp/jwks"]}`, "https://idp", false},
		{`{"issuer":null,"jwks_uri":"https://idp/jwks"}`, "https://idp", false},
		{`null`, "https://idp", false},
		{`[]`, "https://idp", false},
		{``, "https://idp", false},
		{`<html><body>Sign in</body></html>`, "https://idp", false},
	}
}

// TestFuzzEnvAcceptsValidTokens makes sure the fuzzed handler's world is
// sound: valid tokens of every algorithm are accepted at the fixed clock,
// so that FuzzVerify's acceptance oracle is actually exercised.
func TestFuzzEnvAcceptsValidTokens(t *testing.T) {
	e := newFuzzEnv(t)
	k, w := e.keys, e.world
	asym := w.claims(fuzzAsymIssuer)
	rsaNoKid := &testKey{alg: jose.RS256, priv: k.rsa.priv}
	tests := []struct {
		name   string
		token  string
		form   int
		status int
	}{
		{name: "RS256 with kid", token: k.rsa.sign(t, asym, nil), status: http.StatusOK},
		{name: "RS256 without kid", token: rsaNoKid.sign(t, asym, nil), status: http.StatusOK},
		{name: "ES256, JWK without alg", token: k.ec.sign(t, asym, nil), status: http.StatusOK},
		{name: "EdDSA", token: k.ed.sign(t, asym, nil), status: http.StatusOK},
		{name: "HS256 from the oct jwks_file", token: k.hmac.sign(t, w.claims(fuzzHMACIssuer), nil), status: http.StatusOK},
		{name: "lower-case scheme", token: k.rsa.sign(t, asym, nil), form: 1, status: http.StatusOK},
		{name: "tab after Bearer", token: k.rsa.sign(t, asym, nil), form: 3, status: http.StatusBadRequest},
		{name: "two Authorization headers", token: k.rsa.sign(t, asym, nil), form: 4, status: http.StatusBadRequest},
		{name: "token only in the query", token: k.rsa.sign(t, asym, nil), form: 7, status: http.StatusBadRequest},
		{name: "alg none", token: compact(`{"alg":"none"}`, w.payload(t, fuzzAsymIssuer, nil), nil) + "AAAA", status: http.StatusUnauthorized},
		{name: "HS256 keyed with the RSA public key PEM", token: compact(`{"alg":"HS256","kid":"rsa-1"}`, w.payload(t, fuzzAsymIssuer, nil), signHS(pkixPEM(t, k.rsa.priv.Public()), crypto.SHA256)), status: http.StatusUnauthorized},
		{name: "expired beyond the leeway", token: k.rsa.sign(t, w.claimsWith(fuzzAsymIssuer, map[string]any{"exp": fuzzNow.Add(-fuzzLeeway - time.Second).Unix()}), nil), status: http.StatusUnauthorized},
		{name: "signature spelled non-canonically", token: fuzzNonCanonical(k.rsa.sign(t, asym, nil)), status: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			authz := fuzzHeaderForms[tt.form](tt.token)
			out := serve(t, e.h, fuzzRequest(tt.token, authz))
			if out.status != tt.status {
				t.Fatalf("status = %d, want %d (err %v)", out.status, tt.status, out.err)
			}
			if out.status == http.StatusOK {
				if why := e.checkAccepted(authz, out); why != "" {
					t.Fatalf("the oracle refuses a valid token: %s", why)
				}
			}
		})
	}
}

// TestFuzzEnvAnswersEveryAttack runs every attack table, built for the
// fuzzed handler's world, on that handler: each case must get the answer
// it gets from the attack fixture. So FuzzVerify's seeds are the attacks
// they are named for, and the catalogue also holds on a second set-up
// (jwks_file keys, a fixed clock, all providers in one handler).
func TestFuzzEnvAnswersEveryAttack(t *testing.T) {
	e := newFuzzEnv(t)
	runAttackCases(t, e.h, allAttackCases(t, e.world))
}

// TestFuzzCorpusTokensStayValid: the valid-* inputs of
// testdata/fuzz/FuzzVerify are signed with the fixed keys; sent as
// FuzzVerify sends them, each is still accepted, so the corpus keeps
// reaching the acceptance oracle.
func TestFuzzCorpusTokensStayValid(t *testing.T) {
	e := newFuzzEnv(t)
	files, err := filepath.Glob("testdata/fuzz/FuzzVerify/valid-*")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no valid-* inputs in testdata/fuzz/FuzzVerify")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(string(data), "\n")
			var form uint8
			if len(lines) < 3 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "string(") || !strings.HasSuffix(lines[1], ")") {
				t.Fatalf("not a FuzzVerify input: %q", data)
			}
			if _, err := fmt.Sscanf(lines[2], "uint8(%d)", &form); err != nil {
				t.Fatalf("form %q: %v", lines[2], err)
			}
			token, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
			if err != nil {
				t.Fatal(err)
			}
			authz := fuzzHeaderForms[int(form)%len(fuzzHeaderForms)](token)
			out := serve(t, e.h, fuzzRequest(token, authz))
			if out.status != http.StatusOK {
				t.Fatalf("status = %d (%s), want 200", out.status, out.placeholder("http.auth.jwt.error"))
			}
			if why := e.checkAccepted(authz, out); why != "" {
				t.Fatalf("the oracle refuses it: %s", why)
			}
		})
	}
}

// TestFuzzOracleRefusesForgeries makes sure FuzzVerify's oracle is not
// vacuous: had the handler accepted these, the fuzz run would fail.
func TestFuzzOracleRefusesForgeries(t *testing.T) {
	k := loadFuzzKeys(t)
	e := &fuzzEnv{keys: k, providers: fuzzProviders(k)}
	w := fuzzWorld(k, nil, "", "")
	rs := k.rsa.signer(t)
	claims := w.payload(t, fuzzAsymIssuer, nil)
	valid := k.rsa.sign(t, w.claims(fuzzAsymIssuer), nil)
	atClaims := func(mods map[string]any) string {
		c := w.claimsWith(fuzzATIssuer, map[string]any{"client_id": "c", "jti": "j"})
		for k, v := range mods {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return compact(hdr(t, "RS256", "rsa-1", map[string]any{"typ": "at+jwt"}), mustJSON(t, c), rs)
	}
	if why := e.checkAccepted([]string{"Bearer " + atClaims(nil)}, acceptedBy("at")); why != "" {
		t.Fatalf("the oracle refuses a valid access token: %s", why)
	}
	tests := []struct {
		name     string
		authz    []string
		provider string // default asym
	}{
		{name: "alg none", authz: []string{"Bearer " + compact(`{"alg":"none"}`, claims, nil) + "AAAA"}},
		{name: "HS256 keyed with the RSA public key PEM", authz: []string{"Bearer " + compact(`{"alg":"HS256","kid":"rsa-1"}`, claims, signHS(pkixPEM(t, k.rsa.priv.Public()), crypto.SHA256))}},
		{name: "signed by another key", authz: []string{"Bearer " + fuzzEmbeddedKeyToken(t, claims)}},
		{name: "crit header, validly signed", authz: []string{"Bearer " + compact(`{"alg":"RS256","crit":["exp"],"exp":1}`, claims, rs)}},
		{name: "duplicate alg, validly signed", authz: []string{"Bearer " + compact(`{"alg":"none","alg":"RS256"}`, claims, rs)}},
		{name: "expired, validly signed", authz: []string{"Bearer " + k.rsa.sign(t, w.claimsWith(fuzzAsymIssuer, map[string]any{"exp": fuzzNow.Add(-time.Hour).Unix()}), nil)}},
		{name: "missing exp, validly signed", authz: []string{"Bearer " + k.rsa.sign(t, w.claimsWith(fuzzAsymIssuer, map[string]any{"exp": nil}), nil)}},
		{name: "other audience, validly signed", authz: []string{"Bearer " + k.rsa.sign(t, w.claimsWith(fuzzAsymIssuer, map[string]any{"aud": "other"}), nil)}},
		{name: "other issuer, validly signed", authz: []string{"Bearer " + k.rsa.sign(t, w.claims(fuzzHMACIssuer), nil)}},
		{name: "padded", authz: []string{"Bearer " + valid + "="}},
		{name: "signature spelled non-canonically", authz: []string{"Bearer " + fuzzNonCanonical(valid)}},
		{name: "tab after Bearer", authz: []string{"Bearer\t" + valid}},
		{name: "two headers", authz: []string{"Bearer " + valid, "Bearer " + valid}},
		{name: "no header", authz: nil},
		{name: "at provider, typ JWT", provider: "at", authz: []string{"Bearer " + compact(hdr(t, "RS256", "rsa-1", nil), mustJSON(t, w.claimsWith(fuzzATIssuer, map[string]any{"client_id": "c", "jti": "j"})), rs)}},
		{name: "at provider, without client_id", provider: "at", authz: []string{"Bearer " + atClaims(map[string]any{"client_id": nil})}},
		{name: "at provider, jti a number", provider: "at", authz: []string{"Bearer " + atClaims(map[string]any{"jti": 7})}},
		{name: "at provider, without iat", provider: "at", authz: []string{"Bearer " + atClaims(map[string]any{"iat": nil})}},
		{name: "rs-only provider, ES256", provider: "rs-only", authz: []string{"Bearer " + k.ec.sign(t, w.claims(fuzzRSOnlyIssuer), nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			provider := tt.provider
			if provider == "" {
				provider = "asym"
			}
			if why := e.checkAccepted(tt.authz, acceptedBy(provider)); why == "" {
				t.Fatal("the oracle lets this token through")
			}
		})
	}
}

// acceptedBy is the outcome of a request the handler accepted for the
// provider: next saw these verified claims.
func acceptedBy(provider string) result {
	req := httptest.NewRequest(http.MethodGet, "http://example.test/api", nil)
	repl := caddy.NewReplacer()
	req = caddyhttp.PrepareRequest(req, repl, httptest.NewRecorder(), nil)
	repl.Map((&Claims{provider: provider}).replace)
	return result{status: http.StatusOK, nextSeen: req}
}

// TestFuzzJWKSOracle makes sure FuzzParseJWKS's oracle accepts a sound key
// set and refuses the key sets parseJWKS must never return.
func TestFuzzJWKSOracle(t *testing.T) {
	k := loadFuzzKeys(t)
	rsaPub := k.rsa.priv.Public().(*rsa.PublicKey)
	ecPub := k.ec.priv.Public().(*ecdsa.PublicKey)
	rsaJWK, err := (&jose.JSONWebKey{Key: rsaPub, KeyID: "r", Use: "sig"}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	encJWK, err := (&jose.JSONWebKey{Key: rsaPub, KeyID: "r", Use: "enc"}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	set := func(kid string, class keyClass, key any) *keySet {
		vk := &verificationKey{kid: kid, class: class, key: key}
		return &keySet{byKid: map[string][]*verificationKey{kid: {vk}}, all: []*verificationKey{vk}}
	}
	small := &rsa.PublicKey{N: new(big.Int).Rsh(rsaPub.N, 1024), E: rsaPub.E}
	//lint:ignore SA1019 an off-curve key can only be built from raw coordinates
	offCurve := &ecdsa.PublicKey{Curve: elliptic.P256(), X: ecPub.X, Y: new(big.Int).Add(ecPub.Y, big.NewInt(1))}
	doc := func(jwk []byte) []byte { return []byte(`{"keys":[` + string(jwk) + `]}`) }

	t.Run("sound set", func(t *testing.T) {
		data := doc(rsaJWK)
		ks, _, err := parseJWKS(data, false)
		if err != nil {
			t.Fatal(err)
		}
		if why := fuzzCheckKeySet(data, false, ks); why != "" {
			t.Fatalf("the oracle refuses a sound set: %s", why)
		}
	})
	refused := []struct {
		name     string
		data     []byte
		allowOct bool
		ks       *keySet
	}{
		{name: "use enc key returned", data: doc(encJWK), ks: set("r", classRSA, rsaPub)},
		{name: "key not in the document", data: []byte(`{"keys":[]}`), ks: set("r", classRSA, rsaPub)},
		{name: "RSA under 2048 bits", data: doc(rsaJWK), ks: set("r", classRSA, small)},
		{name: "EC point off the curve", data: doc(rsaJWK), ks: set("r", classP256, offCurve)},
		{name: "EC key with the RSA class", data: doc(rsaJWK), ks: set("r", classRSA, ecPub)},
		{name: "oct key without allowOct", data: doc(rsaJWK), ks: set("r", classOct, bytes.Repeat([]byte{1}, 32))},
		{name: "private key", data: doc(rsaJWK), ks: set("r", classRSA, k.rsa.priv)},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			if why := fuzzCheckKeySet(tt.data, tt.allowOct, tt.ks); why == "" {
				t.Fatal("the oracle lets this key set through")
			}
		})
	}
}

// TestFuzzDiscoveryOracle makes sure FuzzParseDiscovery's oracle accepts
// what it must and refuses the rest.
func TestFuzzDiscoveryOracle(t *testing.T) {
	tests := []struct {
		name     string
		doc      string
		insecure bool
		got      string
		ok       bool
	}{
		{name: "https", doc: `{"issuer":"https://idp","jwks_uri":"https://idp/jwks"}`, got: "https://idp/jwks", ok: true},
		{name: "loopback http", doc: `{"issuer":"https://idp","jwks_uri":"http://127.0.0.1/jwks"}`, got: "http://127.0.0.1/jwks", ok: true},
		{name: "insecure http", doc: `{"issuer":"https://idp","jwks_uri":"http://idp/jwks"}`, insecure: true, got: "http://idp/jwks", ok: true},
		{name: "other issuer", doc: `{"issuer":"https://evil","jwks_uri":"https://idp/jwks"}`, got: "https://idp/jwks"},
		{name: "issuer case variant", doc: `{"Issuer":"https://idp","jwks_uri":"https://idp/jwks"}`, got: "https://idp/jwks"},
		{name: "duplicate issuer", doc: `{"issuer":"https://evil","issuer":"https://idp","jwks_uri":"https://idp/jwks"}`, got: "https://idp/jwks"},
		{name: "plain http", doc: `{"issuer":"https://idp","jwks_uri":"http://idp/jwks"}`, got: "http://idp/jwks"},
		{name: "not the document's jwks_uri", doc: `{"issuer":"https://idp","jwks_uri":"https://idp/jwks"}`, got: "https://evil/jwks"},
		{name: "relative", doc: `{"issuer":"https://idp","jwks_uri":"/jwks"}`, got: "/jwks"},
		{name: "file", doc: `{"issuer":"https://idp","jwks_uri":"file:///etc/passwd"}`, insecure: true, got: "file:///etc/passwd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why := fuzzCheckDiscovery([]byte(tt.doc), "https://idp", tt.insecure, tt.got)
			if (why == "") != tt.ok {
				t.Fatalf("oracle verdict %q, want ok=%v", why, tt.ok)
			}
		})
	}
}
