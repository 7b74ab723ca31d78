package oauth2jwt

import (
	"bytes"
	"compress/flate"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	stdjson "encoding/json"
	"encoding/pem"
	"errors"
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
// Regression inputs live in testdata/fuzz/<FuzzName>/.

// Fixed keys, so that the tokens in testdata/fuzz stay validly signed from
// one run to the next. Test material only: never use these keys elsewhere.
const fuzzRSAKeyPEM = `-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDLa/PVTkiU7P7f
putk+4nCKK4s4vnrgxrAW/+qYbXlCwsB3CM/pl5bIkRA97vOnSJBOrvcyeb/7Kpb
tyONWbKZ+eev+pbYjNQMm8mYHR8s3BhAWnPJWOSpSxB9EmMJoCgf1mYTxiKcDn6M
Xj1WtjR1CeBCkEQkptJPyvKSFVrncAOqc17NI0mxRpq6jzA48+T48iKlos1NhQ06
vPR+thlo9MyPTy4jC6YmMbN/oA2+Vki85dLREiU7pogMN0slBFBz6iMwrc+5jbg5
fdVmn8LjYzk3OWAL3TepjMiep2rOxULJUfgRiDavyE4yatpOzdET7D/cPF7cwHAa
GRszC4LzAgMBAAECggEAPQa0zuA+XBdBWz1LTy87I7lqj2LEkUfypZSz/Zx0ojMO
6U7ucDDsC7EbAtaPTCvN0/3X0CPuHgcVEJC/pK8tKo5TWHL4AB03nFS8RNsvuBiL
WfsI03XMm5E+cBctCP04LFz4oKQHTAP5KQk4o6Pj1tzQn4eCOfCmFXQQE40+iUGC
vE4IwhDUK5/b69eQveVC+0uCW379AzgpJZBSm6jiHbuShhx8qNbeXyeWA2Dn10Yv
exig6uZAb6J4Jxmt11X3Lv1eI1Pmo1dKWKy/TbupmRqFkA9tliVGcAY9X5YL57D8
860KXJIPD9mKes5xRJpyoRpacKlECNhAXjw5Z5OXIQKBgQDL1w68FR1x0lRb24ls
WX3jf5uyBPMpEPgCrvmOk+M5t1Xt93b3W1hD1ArFl+qb7Yswe6wyXCy2p+vNbexY
SK0Pfd0vSP3CivlU/FXNw1jNxQl6Hpz39oEB2kwLgGA0NEom23XkekdVMWM1oMNK
YYRYLhw+CheNfJL0PQb2Z5ud0QKBgQD/eXz4ciIRrUjxfjhlINZ9odNddg1ETBvB
nt8d8Gc4uKs5Cf82xpz1rQYqw6skcbqWcp/Mz6/27mt5iJA7isTG8dnK8iSPqMRO
0qipX+vpldOz5AiS+qtoU3TNqCYfDWp/1A2Aq5ltJ6tP9Fo7NrA6hXj7khyhvpme
NLFGP1jxgwKBgQC9C1pS/JIuOY6bEmPE5Mpn7rUKyKRq9Z3Nf1Fa9bTKlklPRS5E
Aac+YK0My/N9YTSxZkExA2NEkz+RadzDk8NMlsJHVD5j6leKhetdxUnarF45r6KM
JUVH3pigIhMW11fd6bLQjscRL5h+5/W2SfJfhYQT1XA6e8oeUWrfov8jwQKBgEpz
gjr5L/qM0HQoP5EhJ8EHFwzmqWkc8P3VKdqUw9Ag6S0/P5Qb/4QNP33Y9hgx2Jmd
n/pVEEfbJZEOflIL19rOgpUFSihfm44JEEQEA0FYe5CyRNlomelWYPTKKwnjpATK
rICyAY1xARjU8jLNdkAnw6E07IkqfaRAYOVC8s23AoGAefcG6r4biMhd8fFC7G5M
ebJQGhN6PdRovoHHp7Y5SL0Z8pHOW8VQZue++ByZgyMGLvA2wVbkFcjv9/rLWdHy
nnCC4tJHsBmOCp5YVlVch700AAzPwBwT5MtmaDG8rX4ARkSxE/ZlppT6dYWduJwE
xp2qNNT6A6M7n4HHLzvmOhA=
-----END PRIVATE KEY-----
`

const fuzzECKeyPEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgg0K9TCmhHoun5rFG
pb2oDS4/PrO+FvX4eiZ16gsg10mhRANCAASnH9QatCKqfcqDMgf5EljXOd8xDI0D
uY+NyyX4dUOyqlxvsyDGrodcrLuMUDBJvp7gEnj8GqFNUOWp3gYHZPp8
-----END PRIVATE KEY-----
`

const (
	fuzzEd25519SeedHex = "8050286a510d84e7936f95d3bdf33cac658ed8091c8fb8a5c9baab1697f63164"
	fuzzHMACSecretHex  = "f20ed93dc753d49ea9af50a55ca5522ea8d76c8a56614d87ecc36d94ab4e4318"
)

// The fuzzed handler's fixed world: two providers read from jwks_files, a
// fixed clock, and the keys above.
const (
	fuzzAsymIssuer = "https://idp.example/asym"
	fuzzHMACIssuer = "https://idp.example/hmac"
	fuzzAudience   = "api://fuzz"
	fuzzLeeway     = 60 * time.Second
	// fuzzVerifyTimeout bounds one ServeHTTP call. Verification with local
	// keys takes microseconds to milliseconds; this only catches hangs.
	fuzzVerifyTimeout = 5 * time.Second
)

// fuzzNow is the fuzzed handler's clock: 2026-01-01T00:00:00Z.
var fuzzNow = time.Unix(1767225600, 0)

// fuzzKeys are the fixed test keys, as testKeys (which sign) and as the
// public halves an independent oracle verifies with.
type fuzzKeys struct {
	rsa, rsaNoKid, ec, ed, hmac *testKey
	rsaPubPEM, ecPubPEM         []byte // PKIX PEM of the public keys (HMAC confusion)
	rsaPubDER                   []byte
	rsaPubJWK                   []byte // the public JWK JSON as published
}

func loadFuzzKeys(tb testing.TB) *fuzzKeys {
	tb.Helper()
	parse := func(p string) crypto.Signer {
		block, _ := pem.Decode([]byte(p))
		if block == nil {
			tb.Fatal("fuzz key: bad PEM")
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			tb.Fatal(err)
		}
		return k.(crypto.Signer)
	}
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	rsaPriv := parse(fuzzRSAKeyPEM)
	k := &fuzzKeys{
		rsa:      &testKey{kid: "rsa-1", alg: jose.RS256, priv: rsaPriv},
		rsaNoKid: &testKey{alg: jose.RS256, priv: rsaPriv},
		ec:       &testKey{kid: "ec-1", alg: jose.ES256, priv: parse(fuzzECKeyPEM)},
		ed:       &testKey{kid: "ed-1", alg: jose.EdDSA, priv: ed25519.NewKeyFromSeed(unhex(fuzzEd25519SeedHex))},
		hmac:     &testKey{kid: "hmac-1", alg: jose.HS256, hmac: unhex(fuzzHMACSecretHex)},
	}
	der, err := x509.MarshalPKIXPublicKey(rsaPriv.Public())
	if err != nil {
		tb.Fatal(err)
	}
	k.rsaPubDER = der
	k.rsaPubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	ecDER, err := x509.MarshalPKIXPublicKey(k.ec.priv.Public())
	if err != nil {
		tb.Fatal(err)
	}
	k.ecPubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER})
	pub := k.rsa.public()
	if k.rsaPubJWK, err = pub.MarshalJSON(); err != nil {
		tb.Fatal(err)
	}
	return k
}

// fuzzProvider is what the oracle knows about one configured provider.
type fuzzProvider struct {
	issuer string
	algs   []jose.SignatureAlgorithm
	keys   []any // verification keys
}

type fuzzEnv struct {
	h         *Handler
	keys      *fuzzKeys
	providers map[string]fuzzProvider // by provider name
}

// newFuzzEnv writes the two JWK Sets to a temporary directory and
// provisions a handler on them with the fixed clock.
func newFuzzEnv(tb testing.TB) *fuzzEnv {
	tb.Helper()
	k := loadFuzzKeys(tb)
	dir := tb.TempDir()
	writeSet := func(name string, keys ...jose.JSONWebKey) string {
		data, err := stdjson.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			tb.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			tb.Fatal(err)
		}
		return path
	}
	ecPub := k.ec.public()
	ecPub.Algorithm = "" // bound to ES256 by its curve alone
	edPub := k.ed.public()
	edPub.Use = ""
	asymFile := writeSet("asym.json", k.rsa.public(), ecPub, edPub)
	hmacFile := writeSet("hmac.json", k.hmac.public())

	leeway := caddy.Duration(fuzzLeeway)
	h := provisionHandler(tb, &Handler{Providers: map[string]*Provider{
		"asym": {Issuer: fuzzAsymIssuer, Audiences: []string{fuzzAudience}, JWKSFile: asymFile,
			Algorithms: []string{"RS256", "ES256", "EdDSA"}, Leeway: &leeway},
		"hmac": {Issuer: fuzzHMACIssuer, Audiences: []string{fuzzAudience}, JWKSFile: hmacFile,
			Algorithms: []string{"HS256"}, Leeway: &leeway},
	}})
	h.verifier.now = func() time.Time { return fuzzNow }
	h.obs.logger = zap.NewNop() // a debug line per rejected input would dominate the run
	return &fuzzEnv{h: h, keys: k, providers: map[string]fuzzProvider{
		"asym": {issuer: fuzzAsymIssuer, algs: []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA},
			keys: []any{k.rsa.priv.Public(), k.ec.priv.Public(), k.ed.priv.Public()}},
		"hmac": {issuer: fuzzHMACIssuer, algs: []jose.SignatureAlgorithm{jose.HS256},
			keys: []any{k.hmac.hmac}},
	}}
}

// fuzzClaims returns claims valid at fuzzNow for iss, with changes applied
// (a nil value deletes the claim).
func fuzzClaims(iss string, changes map[string]any) map[string]any {
	c := map[string]any{
		"iss": iss,
		"aud": fuzzAudience,
		"sub": "user-1",
		"iat": fuzzNow.Add(-time.Minute).Unix(),
		"nbf": fuzzNow.Add(-time.Minute).Unix(),
		"exp": fuzzNow.Add(time.Hour).Unix(),
	}
	for name, v := range changes {
		if v == nil {
			delete(c, name)
			continue
		}
		c[name] = v
	}
	return c
}

// fuzzClaimsJSON is fuzzClaims as JSON text.
func fuzzClaimsJSON(iss string) string {
	b, _ := stdjson.Marshal(fuzzClaims(iss, nil))
	return string(b)
}

func fuzzB64(s []byte) string { return base64.RawURLEncoding.EncodeToString(s) }

// fuzzRawJWS signs header and payload JSON exactly as given (duplicate
// members, crit, ... included) and returns the compact serialization.
// key: *rsa.PrivateKey (RS256), *ecdsa.PrivateKey (ES256, P-256),
// ed25519.PrivateKey (EdDSA), []byte (HS256), nil (no signature).
func fuzzRawJWS(tb testing.TB, header, payload string, key any) string {
	tb.Helper()
	input := fuzzB64([]byte(header)) + "." + fuzzB64([]byte(payload))
	digest := sha256.Sum256([]byte(input))
	var sig []byte
	var err error
	switch k := key.(type) {
	case nil:
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(nil, k, crypto.SHA256, digest[:])
	case *ecdsa.PrivateKey:
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, k, digest[:])
		if err == nil {
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		}
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, []byte(input))
	case []byte:
		m := hmac.New(sha256.New, k)
		m.Write([]byte(input))
		sig = m.Sum(nil)
	default:
		tb.Fatalf("fuzzRawJWS: key type %T", key)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return input + "." + fuzzB64(sig)
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

// fuzzOutcome is what one request through the handler produced.
type fuzzOutcome struct {
	status int
	err    error
	header http.Header
	next   *http.Request // the request next saw; nil when next was not called
}

// serve runs one request through the handler as Caddy's server would. It
// does not use the testing.T, so that it may run on another goroutine.
func (e *fuzzEnv) serve(req *http.Request) fuzzOutcome {
	repl := caddy.NewReplacer()
	w := httptest.NewRecorder()
	req = caddyhttp.PrepareRequest(req, repl, w, nil)
	out := fuzzOutcome{status: http.StatusOK}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		out.next = r
		return nil
	})
	out.err = e.h.ServeHTTP(w, req, next)
	out.header = w.Header()
	if out.err != nil {
		var he caddyhttp.HandlerError
		if errors.As(out.err, &he) {
			out.status = he.StatusCode
		} else {
			out.status = -1
		}
	}
	return out
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
func (e *fuzzEnv) checkAccepted(authz []string, out fuzzOutcome) string {
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
	claims, ok := ClaimsFromRequest(out.next)
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
	return ""
}

// FuzzVerify feeds tokens (and Authorization header forms) to a handler
// provisioned from jwks_files with a fixed clock. Properties: no panic; the
// call returns within fuzzVerifyTimeout; the answer is 200, 400 or 401 with
// a Bearer challenge; and a token is accepted only when checkAccepted, which
// re-verifies the signature with go-jose against the test keys, agrees.
func FuzzVerify(f *testing.F) {
	e := newFuzzEnv(f)
	for _, tok := range fuzzVerifySeeds(f, e.keys) {
		f.Add(tok, uint8(0))
	}
	valid := e.keys.rsa.sign(f, fuzzClaims(fuzzAsymIssuer, nil), nil)
	for form := range fuzzHeaderForms {
		f.Add(valid, uint8(form))
	}
	f.Fuzz(func(t *testing.T, token string, form uint8) {
		authz := fuzzHeaderForms[int(form)%len(fuzzHeaderForms)](token)
		// The token is also in the query string, where it must be ignored.
		req := httptest.NewRequest(http.MethodGet, "http://example.test/api?access_token="+url.QueryEscape(token), nil)
		if authz != nil {
			req.Header["Authorization"] = authz
		}
		done := make(chan fuzzOutcome, 1)
		go func() { done <- e.serve(req) }()
		var out fuzzOutcome
		select {
		case out = <-done:
		case <-time.After(fuzzVerifyTimeout):
			t.Fatalf("ServeHTTP did not return within %s; token %q", fuzzVerifyTimeout, token)
		}
		switch out.status {
		case http.StatusOK:
			if out.next == nil {
				t.Fatal("status 200 but next was not called")
			}
			if why := e.checkAccepted(authz, out); why != "" {
				t.Fatalf("token wrongly accepted: %s\nAuthorization: %q", why, authz)
			}
		case http.StatusBadRequest, http.StatusUnauthorized:
			if out.next != nil {
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

// fuzzVerifySeeds are valid tokens of every algorithm and the hostile
// tokens of issue 3, built with the fixed keys.
func fuzzVerifySeeds(tb testing.TB, k *fuzzKeys) []string {
	tb.Helper()
	asym := fuzzClaims(fuzzAsymIssuer, nil)
	claims := fuzzClaimsJSON(fuzzAsymIssuer)
	hclaims := fuzzClaimsJSON(fuzzHMACIssuer)
	rsaPriv := k.rsa.priv.(*rsa.PrivateKey)
	ecPriv := k.ec.priv.(*ecdsa.PrivateKey)
	edPriv := k.ed.priv.(ed25519.PrivateKey)
	rsaHdr := `{"alg":"RS256","kid":"rsa-1","typ":"JWT"}`
	valid := k.rsa.sign(tb, asym, nil)
	validParts := strings.Split(valid, ".")
	signedWith := func(changes map[string]any) string {
		return k.rsa.sign(tb, fuzzClaims(fuzzAsymIssuer, changes), nil)
	}

	seeds := []string{
		// Valid, one per algorithm and provider.
		valid,
		k.rsaNoKid.sign(tb, asym, nil),
		k.ec.sign(tb, asym, nil),
		k.ed.sign(tb, asym, nil),
		k.hmac.sign(tb, fuzzClaims(fuzzHMACIssuer, nil), nil),
		signedWith(map[string]any{"aud": []string{"other", fuzzAudience}}),
		k.rsa.sign(tb, asym, map[jose.HeaderKey]any{"typ": "at+jwt"}),
		fuzzRawJWS(tb, rsaHdr, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"ES256","kid":"ec-1"}`, claims, ecPriv),
		fuzzRawJWS(tb, `{"alg":"EdDSA"}`, claims, edPriv),
		fuzzRawJWS(tb, `{"alg":"HS256","kid":"hmac-1"}`, hclaims, k.hmac.hmac),

		// alg none and unsigned tokens.
		fuzzRawJWS(tb, `{"alg":"none"}`, claims, nil),
		fuzzRawJWS(tb, `{"alg":"none"}`, claims, nil) + "AAAA",
		fuzzRawJWS(tb, `{"alg":"None","kid":"rsa-1"}`, claims, nil) + "AAAA",
		fuzzRawJWS(tb, `{"alg":"NONE"}`, claims, nil) + "AAAA",
		fuzzRawJWS(tb, `{"alg":""}`, claims, nil) + "AAAA",
		fuzzRawJWS(tb, `{"typ":"JWT"}`, claims, nil) + "AAAA",
		validParts[0] + "." + validParts[1] + ".",
		validParts[0] + "." + validParts[1],

		// HMAC confusion: HS256 keyed with the public keys.
		fuzzRawJWS(tb, `{"alg":"HS256","kid":"rsa-1"}`, claims, k.rsaPubPEM),
		fuzzRawJWS(tb, `{"alg":"HS256","kid":"rsa-1"}`, claims, k.rsaPubDER),
		fuzzRawJWS(tb, `{"alg":"HS256","kid":"rsa-1"}`, claims, k.rsaPubJWK),
		fuzzRawJWS(tb, `{"alg":"HS256","kid":"rsa-1"}`, claims, rsaPriv.N.Bytes()),
		fuzzRawJWS(tb, `{"alg":"HS256","kid":"ec-1"}`, claims, k.ecPubPEM),
		fuzzRawJWS(tb, `{"alg":"HS256"}`, claims, k.rsaPubPEM),
		fuzzRawJWS(tb, `{"alg":"HS256","kid":"hmac-1"}`, hclaims, k.rsaPubPEM),
		fuzzRawJWS(tb, `{"alg":"HS256","kid":"hmac-1"}`, claims, k.hmac.hmac),

		// alg not matching the key, alg outside the allow-list.
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"ec-1"}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"ES256","kid":"rsa-1"}`, claims, ecPriv),
		fuzzRawJWS(tb, `{"alg":"ES384","kid":"ec-1"}`, claims, ecPriv),
		fuzzRawJWS(tb, `{"alg":"EdDSA","kid":"rsa-1"}`, claims, edPriv),
		(&testKey{kid: "rsa-1", alg: jose.PS256, priv: rsaPriv}).sign(tb, asym, nil),

		// Forbidden header members, validly signed.
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1","crit":["exp"],"exp":1}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1","crit":[]}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1","crit":["b64"],"b64":false}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1","b64":false}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1","zip":"DEF"}`, string(fuzzDeflate(tb, claims)), rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1","zip":"DEF"}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1","cty":"JWT"}`, valid, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1","cty":"jwt"}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1","cty":"application/JWT"}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1","cty":7}`, claims, rsaPriv),

		// Embedded keys and key URLs: an attacker's key, its JWK embedded.
		fuzzEmbeddedKeyToken(tb, claims),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1","jku":"http://127.0.0.1:1/jwks","x5u":"http://127.0.0.1:1/x"}`, claims, rsaPriv),

		// kid tricks.
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"../../../../dev/zero"}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"' OR 1=1 --"}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"`+strings.Repeat("k", 10<<10)+`"}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"rsa-1\n\u0000\u001b[31m"}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","kid":"RSA-1"}`, claims, rsaPriv),

		// JWE, JSON serializations, several signatures.
		fuzzB64([]byte(`{"alg":"RSA-OAEP","enc":"A256GCM","kid":"rsa-1"}`)) + ".AAAA.AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA",
		fuzzB64([]byte(`{"alg":"dir","enc":"A128GCM"}`)) + ".." + validParts[1] + ".." + validParts[2],
		`{"payload":"` + validParts[1] + `","protected":"` + validParts[0] + `","signature":"` + validParts[2] + `"}`,
		`{"payload":"` + validParts[1] + `","signatures":[{"protected":"` + validParts[0] + `","signature":"` + validParts[2] + `"},{"protected":"` + validParts[0] + `","signature":"` + validParts[2] + `"}]}`,
		valid + "." + validParts[2],

		// Duplicate members, validly signed.
		fuzzRawJWS(tb, `{"alg":"none","alg":"RS256","kid":"rsa-1"}`, claims, rsaPriv),
		fuzzRawJWS(tb, `{"alg":"RS256","alg":"HS256","kid":"rsa-1"}`, claims, rsaPriv),
		fuzzRawJWS(tb, rsaHdr, `{"iss":"`+fuzzAsymIssuer+`","aud":"`+fuzzAudience+`","exp":1000,"exp":1867225600}`, rsaPriv),
		fuzzRawJWS(tb, rsaHdr, `{"iss":"https://evil.example","iss":"`+fuzzAsymIssuer+`","aud":"`+fuzzAudience+`","exp":1867225600}`, rsaPriv),
		fuzzRawJWS(tb, rsaHdr, `{"iss":"`+fuzzAsymIssuer+`","aud":"other","aud":"`+fuzzAudience+`","exp":1867225600}`, rsaPriv),
		fuzzRawJWS(tb, rsaHdr, `{"iss":"`+fuzzAsymIssuer+`","aud":"`+fuzzAudience+`","exp":1000,"EXP":1867225600}`, rsaPriv),

		// Malformed encodings.
		valid + "=",
		validParts[0] + "==." + validParts[1] + "." + validParts[2],
		validParts[0] + "." + validParts[1] + "=." + validParts[2],
		base64.URLEncoding.EncodeToString([]byte(rsaHdr)) + "." + validParts[1] + "." + validParts[2],
		strings.ReplaceAll(valid, "-", "+"),
		validParts[0][:10] + " " + validParts[0][10:] + "." + validParts[1] + "." + validParts[2],
		validParts[0] + "\n." + validParts[1] + "." + validParts[2],
		validParts[0] + "." + validParts[1][:20] + "\r\n" + validParts[1][20:] + "." + validParts[2],
		valid + "garbage!",
		valid + ".",
		"." + valid,
		validParts[0] + ".." + validParts[1] + "." + validParts[2],
		fuzzRawJWS(tb, `"RS256"`, claims, rsaPriv),
		fuzzRawJWS(tb, `[]`, claims, rsaPriv),
		fuzzRawJWS(tb, `null`, claims, rsaPriv),
		fuzzRawJWS(tb, rsaHdr, `null`, rsaPriv),
		fuzzRawJWS(tb, rsaHdr, `[1,2]`, rsaPriv),
		fuzzRawJWS(tb, rsaHdr, `"claims"`, rsaPriv),
		fuzzRawJWS(tb, rsaHdr, claims+` `, rsaPriv),
		fuzzRawJWS(tb, rsaHdr, claims+`{}`, rsaPriv),
		fuzzRawJWS(tb, ` `+rsaHdr, claims, rsaPriv),
		strings.Repeat(".", 4096),
		strings.Repeat("e30.", 3000) + "e30",
		strings.Repeat("A", 17000) + "." + validParts[1] + "." + validParts[2],
		"",
		"e30.e30.e30",
		"a.b.c",

		// Claim type confusion and time edges, validly signed.
		signedWith(map[string]any{"aud": 42}),
		signedWith(map[string]any{"aud": map[string]any{"x": fuzzAudience}}),
		signedWith(map[string]any{"aud": []any{fuzzAudience, 1}}),
		signedWith(map[string]any{"aud": []any{}}),
		signedWith(map[string]any{"exp": strconv.FormatInt(fuzzNow.Add(time.Hour).Unix(), 10)}),
		signedWith(map[string]any{"exp": -1}),
		signedWith(map[string]any{"exp": 1e300}),
		signedWith(map[string]any{"exp": stdjson.Number("9223372036854775808")}),
		signedWith(map[string]any{"exp": float64(fuzzNow.Unix()) + 0.5}),
		signedWith(map[string]any{"nbf": "0"}),
		signedWith(map[string]any{"iat": true}),
		signedWith(map[string]any{"iss": fuzzAsymIssuer + "/"}),
		signedWith(map[string]any{"iss": strings.ToUpper(fuzzAsymIssuer)}),
		signedWith(map[string]any{"iss": " " + fuzzAsymIssuer}),
		signedWith(map[string]any{"iss": fuzzHMACIssuer}),
		signedWith(map[string]any{"iss": nil}),
		signedWith(map[string]any{"aud": nil}),
		signedWith(map[string]any{"exp": nil}),
		signedWith(map[string]any{"sub": 1}),
		signedWith(map[string]any{"exp": fuzzNow.Add(-fuzzLeeway - time.Second).Unix()}),
		signedWith(map[string]any{"exp": fuzzNow.Add(-fuzzLeeway + time.Second).Unix()}),
		signedWith(map[string]any{"nbf": fuzzNow.Add(fuzzLeeway + time.Second).Unix()}),
		signedWith(map[string]any{"iat": fuzzNow.Add(fuzzLeeway + time.Second).Unix()}),

		// Signature tricks.
		fuzzPsychicSig(claims),
		fuzzRawJWS(tb, `{"alg":"ES256","kid":"ec-1"}`, claims, ecPriv)[:len(fuzzRawJWS(tb, `{"alg":"ES256","kid":"ec-1"}`, claims, ecPriv))-4],
		fuzzHighS(tb, fuzzRawJWS(tb, `{"alg":"ES256","kid":"ec-1"}`, claims, ecPriv)),
		validParts[0] + "." + validParts[1] + "." + fuzzB64(append([]byte{0}, fuzzUnB64(tb, validParts[2])...)),
		validParts[0] + "." + validParts[1] + "." + fuzzB64(fuzzUnB64(tb, validParts[2])[1:]),
		validParts[0] + "." + validParts[1] + "." + fuzzB64(make([]byte, 256)),
		fuzzNonCanonical(valid),
	}
	return seeds
}

func fuzzDeflate(tb testing.TB, s string) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = w.Write([]byte(s))
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func fuzzUnB64(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// fuzzEmbeddedKeyToken is signed by a fresh key whose public JWK it embeds
// (CVE-2018-0114 class), with the provider's kid.
func fuzzEmbeddedKeyToken(tb testing.TB, claims string) string {
	tb.Helper()
	attacker, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	jwk, err := (&jose.JSONWebKey{Key: attacker.Public()}).MarshalJSON()
	if err != nil {
		tb.Fatal(err)
	}
	return fuzzRawJWS(tb, `{"alg":"ES256","kid":"ec-1","jwk":`+string(jwk)+`}`, claims, attacker)
}

// fuzzPsychicSig is an ES256 token with r = s = 0 (CVE-2022-21449).
func fuzzPsychicSig(claims string) string {
	return fuzzB64([]byte(`{"alg":"ES256","kid":"ec-1"}`)) + "." + fuzzB64([]byte(claims)) + "." + fuzzB64(make([]byte, 64))
}

// fuzzNonCanonical sets a stray low bit in the token's last character: the
// same signature bytes, spelled differently (an RS256 signature has four
// unused bits there).
func fuzzNonCanonical(tok string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, tok[len(tok)-1])
	return tok[:len(tok)-1] + string(alphabet[i^1])
}

// fuzzHighS replaces s by n - s in an ES256 token.
func fuzzHighS(tb testing.TB, tok string) string {
	tb.Helper()
	i := strings.LastIndexByte(tok, '.')
	sig := fuzzUnB64(tb, tok[i+1:])
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s)
	s.FillBytes(sig[32:])
	return tok[:i+1] + fuzzB64(sig)
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
	rsa1024 := fmt.Sprintf(`{"kty":"RSA","kid":"rsa-1024","n":%q,"e":"AQAB"}`, fuzzB64(n1024))
	// The EC key with y changed: a point not on P-256.
	var ecm map[string]string
	_ = stdjson.Unmarshal([]byte(ecJWK), &ecm)
	y := fuzzUnB64(tb, ecm["y"])
	y[len(y)-1] ^= 1
	offCurve := fmt.Sprintf(`{"kty":"EC","crv":"P-256","kid":"ec-bad","x":%q,"y":%q}`, ecm["x"], fuzzB64(y))
	ed448 := `{"kty":"OKP","crv":"Ed448","kid":"ed448","x":"` + fuzzB64(bytes.Repeat([]byte{7}, 57)) + `"}`
	x25519 := `{"kty":"OKP","crv":"X25519","kid":"x25519","use":"enc","x":"` + fuzzB64(bytes.Repeat([]byte{9}, 32)) + `"}`

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
	k := e.keys
	asym := fuzzClaims(fuzzAsymIssuer, nil)
	tests := []struct {
		name   string
		token  string
		form   int
		status int
	}{
		{name: "RS256 with kid", token: k.rsa.sign(t, asym, nil), status: http.StatusOK},
		{name: "RS256 without kid", token: k.rsaNoKid.sign(t, asym, nil), status: http.StatusOK},
		{name: "ES256, JWK without alg", token: k.ec.sign(t, asym, nil), status: http.StatusOK},
		{name: "EdDSA", token: k.ed.sign(t, asym, nil), status: http.StatusOK},
		{name: "HS256 from the oct jwks_file", token: k.hmac.sign(t, fuzzClaims(fuzzHMACIssuer, nil), nil), status: http.StatusOK},
		{name: "lower-case scheme", token: k.rsa.sign(t, asym, nil), form: 1, status: http.StatusOK},
		{name: "tab after Bearer", token: k.rsa.sign(t, asym, nil), form: 3, status: http.StatusBadRequest},
		{name: "two Authorization headers", token: k.rsa.sign(t, asym, nil), form: 4, status: http.StatusBadRequest},
		{name: "token only in the query", token: k.rsa.sign(t, asym, nil), form: 7, status: http.StatusBadRequest},
		{name: "alg none", token: fuzzRawJWS(t, `{"alg":"none"}`, fuzzClaimsJSON(fuzzAsymIssuer), nil) + "AAAA", status: http.StatusUnauthorized},
		{name: "HS256 keyed with the RSA public key PEM", token: fuzzRawJWS(t, `{"alg":"HS256","kid":"rsa-1"}`, fuzzClaimsJSON(fuzzAsymIssuer), k.rsaPubPEM), status: http.StatusUnauthorized},
		{name: "expired beyond the leeway", token: k.rsa.sign(t, fuzzClaims(fuzzAsymIssuer, map[string]any{"exp": fuzzNow.Add(-fuzzLeeway - time.Second).Unix()}), nil), status: http.StatusUnauthorized},
		{name: "signature spelled non-canonically", token: fuzzNonCanonical(k.rsa.sign(t, asym, nil)), status: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			authz := fuzzHeaderForms[tt.form](tt.token)
			req := httptest.NewRequest(http.MethodGet, "http://example.test/api?access_token="+url.QueryEscape(tt.token), nil)
			if authz != nil {
				req.Header["Authorization"] = authz
			}
			out := e.serve(req)
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

// TestFuzzOracleRefusesForgeries makes sure FuzzVerify's oracle is not
// vacuous: had the handler accepted these, the fuzz run would fail.
func TestFuzzOracleRefusesForgeries(t *testing.T) {
	k := loadFuzzKeys(t)
	e := &fuzzEnv{keys: k, providers: map[string]fuzzProvider{
		"asym": {issuer: fuzzAsymIssuer, algs: []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA},
			keys: []any{k.rsa.priv.Public(), k.ec.priv.Public(), k.ed.priv.Public()}},
	}}
	rsaPriv := k.rsa.priv.(*rsa.PrivateKey)
	claims := fuzzClaimsJSON(fuzzAsymIssuer)
	valid := k.rsa.sign(t, fuzzClaims(fuzzAsymIssuer, nil), nil)
	tests := []struct {
		name  string
		authz []string
	}{
		{name: "alg none", authz: []string{"Bearer " + fuzzRawJWS(t, `{"alg":"none"}`, claims, nil) + "AAAA"}},
		{name: "HS256 keyed with the RSA public key PEM", authz: []string{"Bearer " + fuzzRawJWS(t, `{"alg":"HS256","kid":"rsa-1"}`, claims, k.rsaPubPEM)}},
		{name: "signed by another key", authz: []string{"Bearer " + fuzzEmbeddedKeyToken(t, claims)}},
		{name: "crit header, validly signed", authz: []string{"Bearer " + fuzzRawJWS(t, `{"alg":"RS256","crit":["exp"],"exp":1}`, claims, rsaPriv)}},
		{name: "duplicate alg, validly signed", authz: []string{"Bearer " + fuzzRawJWS(t, `{"alg":"none","alg":"RS256"}`, claims, rsaPriv)}},
		{name: "expired, validly signed", authz: []string{"Bearer " + k.rsa.sign(t, fuzzClaims(fuzzAsymIssuer, map[string]any{"exp": fuzzNow.Add(-time.Hour).Unix()}), nil)}},
		{name: "missing exp, validly signed", authz: []string{"Bearer " + k.rsa.sign(t, fuzzClaims(fuzzAsymIssuer, map[string]any{"exp": nil}), nil)}},
		{name: "other audience, validly signed", authz: []string{"Bearer " + k.rsa.sign(t, fuzzClaims(fuzzAsymIssuer, map[string]any{"aud": "other"}), nil)}},
		{name: "other issuer, validly signed", authz: []string{"Bearer " + k.rsa.sign(t, fuzzClaims(fuzzHMACIssuer, nil), nil)}},
		{name: "padded", authz: []string{"Bearer " + valid + "="}},
		{name: "signature spelled non-canonically", authz: []string{"Bearer " + fuzzNonCanonical(valid)}},
		{name: "tab after Bearer", authz: []string{"Bearer\t" + valid}},
		{name: "two headers", authz: []string{"Bearer " + valid, "Bearer " + valid}},
		{name: "no header", authz: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "http://example.test/api", nil)
			repl := caddy.NewReplacer()
			req = caddyhttp.PrepareRequest(req, repl, httptest.NewRecorder(), nil)
			repl.Map((&Claims{provider: "asym"}).replace)
			if why := e.checkAccepted(tt.authz, fuzzOutcome{status: http.StatusOK, next: req}); why == "" {
				t.Fatal("the oracle lets this token through")
			}
		})
	}
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
