package oauth2jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/go-jose/go-jose/v4"
)

const dpopAud = "dpop-api"

// dpopFixture is an IdP issuing DPoP-bound tokens and a client key.
type dpopFixture struct {
	idp    *testIdP
	signer *testKey
	client *ecdsa.PrivateKey
	jkt    string // RFC 7638 thumbprint of client
}

func newDPoPFixture(t testing.TB) *dpopFixture {
	t.Helper()
	f := &dpopFixture{signer: newTestKey(t, "as-1", jose.ES256, 0)}
	f.idp = newTestIdP(t, f.signer)
	var err error
	if f.client, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	f.jkt = thumbprint(t, f.client.Public())
	return f
}

func thumbprint(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

// handler provisions h with the fixture's provider and its own clock.
func (f *dpopFixture) handler(t testing.TB, h *Handler, clk *testClock) *Handler {
	t.Helper()
	h.Providers = map[string]*Provider{"main": {Issuer: f.idp.url(), Audiences: []string{dpopAud}, JWKSURI: f.idp.url() + "/jwks"}}
	if clk != nil {
		h.deps.now = clk.now
	}
	provisionHandler(t, h)
	waitForKeys(t, h)
	return h
}

// token mints an access token with the given cnf (none when nil).
func (f *dpopFixture) token(t testing.TB, cnf map[string]any) string {
	t.Helper()
	c := claimsFor(f.idp.url(), dpopAud)
	if cnf != nil {
		c["cnf"] = cnf
	}
	return f.signer.sign(t, c, nil)
}

// proofClaims are valid proof claims for a GET of http://example.test/api.
func proofClaims(now time.Time, token string) map[string]any {
	ath := sha256.Sum256([]byte(token))
	return map[string]any{
		"jti": base64.RawURLEncoding.EncodeToString(randBytes(16)),
		"htm": http.MethodGet,
		"htu": "http://example.test/api",
		"iat": now.Unix(),
		"ath": base64.RawURLEncoding.EncodeToString(ath[:]),
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// signProof signs claims as a DPoP proof with key under alg, the header
// embedding jwk (the public key of key when nil) and typ dpop+jwt unless
// extra sets another.
func signProof(t testing.TB, key crypto.Signer, alg jose.SignatureAlgorithm, jwk any, claims map[string]any, extra map[jose.HeaderKey]any) string {
	t.Helper()
	if jwk == nil {
		jwk = jose.JSONWebKey{Key: key.Public()}
	}
	opts := (&jose.SignerOptions{}).WithType("dpop+jwt").WithHeader("jwk", jwk)
	for k, v := range extra {
		opts = opts.WithHeader(k, v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dpopRequest builds a GET of http://example.test/api with the DPoP pair.
func dpopRequest(token, proof string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, "http://example.test/api", nil)
	req.Header.Set("Authorization", "DPoP "+token)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	return req
}

// expectDPoPReason asserts a rejection's status, reason and that the
// challenge of the DPoP scheme carries wantErr.
func expectDPoPReason(t testing.TB, res result, status int, code, wantErr string) {
	t.Helper()
	if res.status != status {
		t.Fatalf("status = %d, want %d (err %v)", res.status, status, res.err)
	}
	if got := res.placeholder("http.auth.jwt.error"); got != code {
		t.Fatalf("{http.auth.jwt.error} = %q, want %q (err %v)", got, code, res.err)
	}
	ch := res.header.Get("WWW-Authenticate")
	if wantErr != "" && !strings.Contains(ch, `DPoP error="`+wantErr+`"`) {
		t.Fatalf("WWW-Authenticate = %q, want a DPoP challenge with error=%q", ch, wantErr)
	}
	if !strings.Contains(ch, `algs="`) {
		t.Fatalf("WWW-Authenticate = %q, want algs", ch)
	}
	if res.nextSeen != nil {
		t.Fatal("next handler called on a rejected request")
	}
}

func TestDPoPValidProof(t *testing.T) {
	f := newDPoPFixture(t)
	h := f.handler(t, &Handler{DPoP: &DPoP{}, StripAuthorization: true}, nil)
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	for i := range 2 { // uncached, then cached
		proof := signProof(t, f.client, jose.ES256, nil, proofClaims(h.verifier.now(), tok), nil)
		res := serve(t, h, dpopRequest(tok, proof))
		if res.status != http.StatusOK {
			t.Fatalf("request %d: status %d (%v)", i, res.status, res.err)
		}
		if got := res.placeholder("http.auth.jwt.dpop.jkt"); got != f.jkt {
			t.Fatalf("{http.auth.jwt.dpop.jkt} = %q, want %q", got, f.jkt)
		}
		if got := res.placeholder("http.auth.user.id"); got != "user-42" {
			t.Fatalf("{http.auth.user.id} = %q", got)
		}
		if res.nextSeen.Header.Get("DPoP") != "" || res.nextSeen.Header.Get("Authorization") != "" {
			t.Fatal("strip_authorization left Authorization or DPoP on the request")
		}
	}
}

func TestDPoPOtherAlgorithms(t *testing.T) {
	f := newDPoPFixture(t)
	h := f.handler(t, &Handler{DPoP: &DPoP{}}, nil)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	rsaPriv := rsaKey(0)
	for _, c := range []struct {
		alg jose.SignatureAlgorithm
		key crypto.Signer
	}{{jose.EdDSA, edPriv}, {jose.PS256, rsaPriv}, {jose.RS256, rsaPriv}} {
		t.Run(string(c.alg), func(t *testing.T) {
			tok := f.token(t, map[string]any{"jkt": thumbprint(t, c.key.Public())})
			proof := signProof(t, c.key, c.alg, nil, proofClaims(h.verifier.now(), tok), nil)
			if res := serve(t, h, dpopRequest(tok, proof)); res.status != http.StatusOK {
				t.Fatalf("status %d (%v)", res.status, res.err)
			}
		})
	}
	t.Run("Ed25519", func(t *testing.T) {
		// go-jose does not sign the fully-specified name: sign by hand.
		tok := f.token(t, map[string]any{"jkt": thumbprint(t, edPriv.Public())})
		jwkJSON, _ := json.Marshal(jose.JSONWebKey{Key: edPriv.Public()})
		proof := rawProof(map[string]any{"typ": "dpop+jwt", "alg": "Ed25519", "jwk": json.RawMessage(jwkJSON)},
			proofClaims(h.verifier.now(), tok), func(in []byte) []byte { return ed25519.Sign(edPriv, in) })
		if res := serve(t, h, dpopRequest(tok, proof)); res.status != http.StatusOK {
			t.Fatalf("status %d (%v)", res.status, res.err)
		}
	})
}

// rawProof assembles a compact JWS by hand; sign gets the signing input.
func rawProof(hdr, claims map[string]any, sign func([]byte) []byte) string {
	c, _ := json.Marshal(claims)
	return rawProofPayload(hdr, c, sign)
}

// rawProofPayload is rawProof with the payload's bytes as they are.
func rawProofPayload(hdr map[string]any, payload []byte, sign func([]byte) []byte) string {
	h, _ := json.Marshal(hdr)
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(payload)
	return in + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(in)))
}

// TestDPoPProofMutations changes one field of a valid proof at a time:
// each is refused with 401 and the DPoP challenge.
func TestDPoPProofMutations(t *testing.T) {
	f := newDPoPFixture(t)
	h := f.handler(t, &Handler{DPoP: &DPoP{}}, nil)
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := func() time.Time { return h.verifier.now() }
	valid := func(mut func(map[string]any)) string {
		c := proofClaims(now(), tok)
		if mut != nil {
			mut(c)
		}
		return signProof(t, f.client, jose.ES256, nil, c, nil)
	}
	pubJWK, _ := json.Marshal(jose.JSONWebKey{Key: f.client.Public()})
	cases := []struct {
		name   string
		proof  func() string
		reason string
		err    string
	}{
		{"typ JWT", func() string {
			return signProof(t, f.client, jose.ES256, nil, proofClaims(now(), tok), map[jose.HeaderKey]any{"typ": "JWT"})
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"alg none", func() string {
			return rawProof(map[string]any{"typ": "dpop+jwt", "alg": "none", "jwk": json.RawMessage(pubJWK)}, proofClaims(now(), tok), func([]byte) []byte { return []byte("x") })
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"alg HS256", func() string {
			s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: randBytes(32)},
				(&jose.SignerOptions{}).WithType("dpop+jwt").WithHeader("jwk", jose.JSONWebKey{Key: f.client.Public()}))
			c, _ := json.Marshal(proofClaims(now(), tok))
			o, _ := s.Sign(c)
			out, _ := o.CompactSerialize()
			return out
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"private jwk", func() string {
			return signProof(t, f.client, jose.ES256, jose.JSONWebKey{Key: f.client}, proofClaims(now(), tok), nil)
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"no jwk", func() string {
			return rawProof(map[string]any{"typ": "dpop+jwt", "alg": "ES256"}, proofClaims(now(), tok), func(in []byte) []byte { return esSign(f.client, in) })
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"jwk not fitting alg", func() string {
			return signProof(t, f.client, jose.ES256, jose.JSONWebKey{Key: rsaKey(0).Public()}, proofClaims(now(), tok), nil)
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"signature by another key", func() string {
			return signProof(t, other, jose.ES256, jose.JSONWebKey{Key: f.client.Public()}, proofClaims(now(), tok), nil)
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"htm POST", func() string { return valid(func(c map[string]any) { c["htm"] = "POST" }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"htm lower case", func() string { return valid(func(c map[string]any) { c["htm"] = "get" }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"htu other path", func() string { return valid(func(c map[string]any) { c["htu"] = "http://example.test/other" }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"htu other host", func() string { return valid(func(c map[string]any) { c["htu"] = "http://evil.test/api" }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"htu other scheme", func() string { return valid(func(c map[string]any) { c["htu"] = "https://example.test/api" }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"htu not a string", func() string { return valid(func(c map[string]any) { c["htu"] = 7 }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"iat 10 minutes old", func() string {
			return valid(func(c map[string]any) { c["iat"] = now().Add(-10 * time.Minute).Unix() })
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"iat 2 minutes ahead", func() string {
			return valid(func(c map[string]any) { c["iat"] = now().Add(2 * time.Minute).Unix() })
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"iat a string", func() string { return valid(func(c map[string]any) { c["iat"] = "now" }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"no iat", func() string { return valid(func(c map[string]any) { delete(c, "iat") }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"no jti", func() string { return valid(func(c map[string]any) { delete(c, "jti") }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"empty jti", func() string { return valid(func(c map[string]any) { c["jti"] = "" }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"10 kB jti", func() string { return valid(func(c map[string]any) { c["jti"] = strings.Repeat("j", 10000) }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"no htm", func() string { return valid(func(c map[string]any) { delete(c, "htm") }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"htm spelled HTM", func() string {
			return valid(func(c map[string]any) { c["HTM"] = c["htm"]; delete(c, "htm") })
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"htm twice, the last one right", func() string {
			c, _ := json.Marshal(proofClaims(now(), tok))
			dup := append([]byte(`{"htm":"POST",`), c[1:]...)
			return rawProofPayload(map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": json.RawMessage(pubJWK)}, dup, func(in []byte) []byte { return esSign(f.client, in) })
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"no htu", func() string { return valid(func(c map[string]any) { delete(c, "htu") }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"no ath", func() string { return valid(func(c map[string]any) { delete(c, "ath") }) }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"ath of another token", func() string {
			return valid(func(c map[string]any) {
				a := sha256.Sum256([]byte(tok + "x"))
				c["ath"] = base64.RawURLEncoding.EncodeToString(a[:])
			})
		}, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"not a JWS", func() string { return "not-a-proof" }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"oversized", func() string { return strings.Repeat("a", maxProofSize) + ".b.c" }, "dpop_proof_invalid", "invalid_dpop_proof"},
		{"key other than cnf.jkt", func() string {
			return signProof(t, other, jose.ES256, nil, proofClaims(now(), tok), nil)
		}, "key_binding_mismatch", "invalid_token"},
	}
	// The valid proof passes (so every failure below is the mutation's).
	if res := serve(t, h, dpopRequest(tok, valid(nil))); res.status != http.StatusOK {
		t.Fatalf("valid proof: status %d (%v)", res.status, res.err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := h.bind.dpop.replay.len()
			res := serve(t, h, dpopRequest(tok, c.proof()))
			expectDPoPReason(t, res, http.StatusUnauthorized, c.reason, c.err)
			if got := h.bind.dpop.replay.len(); got != before {
				t.Fatalf("a refused proof was remembered: replay cache %d -> %d", before, got)
			}
		})
	}

	t.Run("no DPoP header", func(t *testing.T) {
		expectDPoPReason(t, serve(t, h, dpopRequest(tok, "")), http.StatusUnauthorized, "dpop_proof_missing", "invalid_dpop_proof")
	})
	t.Run("two DPoP headers", func(t *testing.T) {
		req := dpopRequest(tok, valid(nil))
		req.Header.Add("DPoP", valid(nil))
		expectDPoPReason(t, serve(t, h, req), http.StatusUnauthorized, "dpop_proof_invalid", "invalid_dpop_proof")
	})
	t.Run("htu with query and fragment still matches", func(t *testing.T) {
		p := valid(func(c map[string]any) { c["htu"] = "http://example.test/api?x=1#frag" })
		req := httptest.NewRequest(http.MethodGet, "http://example.test/api?y=2", nil)
		req.Header.Set("Authorization", "DPoP "+tok)
		req.Header.Set("DPoP", p)
		if res := serve(t, h, req); res.status != http.StatusOK {
			t.Fatalf("status %d (%v)", res.status, res.err)
		}
	})
	t.Run("htu normalised", func(t *testing.T) {
		p := valid(func(c map[string]any) { c["htu"] = "HTTP://Example.TEST:80/a/../%61pi" })
		if res := serve(t, h, dpopRequest(tok, p)); res.status != http.StatusOK {
			t.Fatalf("status %d (%v)", res.status, res.err)
		}
	})
}

// esSign makes a JWS ES256 signature (r || s).
func esSign(k *ecdsa.PrivateKey, in []byte) []byte {
	d := sha256.Sum256(in)
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		panic(err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out
}

func TestDPoPReplay(t *testing.T) {
	f := newDPoPFixture(t)
	h := f.handler(t, &Handler{DPoP: &DPoP{}}, nil)
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	proof := signProof(t, f.client, jose.ES256, nil, proofClaims(h.verifier.now(), tok), nil)
	if res := serve(t, h, dpopRequest(tok, proof)); res.status != http.StatusOK {
		t.Fatalf("first use: status %d (%v)", res.status, res.err)
	}
	// The token is cached now; the proof is still checked.
	expectDPoPReason(t, serve(t, h, dpopRequest(tok, proof)), http.StatusUnauthorized, "dpop_proof_replayed", "invalid_dpop_proof")
}

func TestDPoPCachedTokenStaleProof(t *testing.T) {
	f := newDPoPFixture(t)
	clk := &testClock{}
	h := f.handler(t, &Handler{DPoP: &DPoP{ProofMaxAge: caddy.Duration(time.Minute)}}, clk)
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	proof := signProof(t, f.client, jose.ES256, nil, proofClaims(clk.now(), tok), nil)
	if res := serve(t, h, dpopRequest(tok, proof)); res.status != http.StatusOK {
		t.Fatalf("status %d (%v)", res.status, res.err)
	}
	old := signProof(t, f.client, jose.ES256, nil, proofClaims(clk.now(), tok), nil)
	clk.advance(2 * time.Minute)
	expectDPoPReason(t, serve(t, h, dpopRequest(tok, old)), http.StatusUnauthorized, "dpop_proof_invalid", "invalid_dpop_proof")
	if h.cache.len() != 1 {
		t.Fatalf("the token should be cached (cache has %d entries)", h.cache.len())
	}
}

// TestDPoPReplayCacheBounded: the cache never holds more than its size,
// never forgets an unexpired entry (a flood of fresh proofs must not evict
// a captured one), refuses new entries while full of live ones, and reuses
// the slots of expired entries.
func TestDPoPReplayCacheBounded(t *testing.T) {
	c := newReplayCache(100)
	now := time.Unix(1_800_000_000, 0)
	key := func(i int) (k [32]byte) {
		k[0], k[1], k[2] = byte(i), byte(i>>8), 1
		return k
	}
	for i := range 100 {
		if got := c.add(key(i), now.Add(time.Duration(i)*time.Second), now.Add(time.Hour+time.Duration(i)*time.Second)); got != replayNew {
			t.Fatalf("entry %d: %d, want new", i, got)
		}
	}
	// Full of live entries: a new one is refused, every old one is still
	// known.
	if got := c.add(key(100), now.Add(200*time.Second), now.Add(2*time.Hour)); got != replayFull {
		t.Fatalf("a full cache took a new entry (%d)", got)
	}
	for i := range 100 {
		if got := c.add(key(i), now.Add(200*time.Second), now.Add(2*time.Hour)); got != replaySeen {
			t.Fatalf("entry %d was forgotten (%d)", i, got)
		}
	}
	// Once the oldest entries expire, their slots are reused, one by one.
	later := now.Add(time.Hour + 10*time.Second)
	for i := 100; i < 10_000; i++ {
		got := c.add(key(i), later, later.Add(time.Hour))
		if i-100 <= 10 && got != replayNew {
			t.Fatalf("entry %d: %d, want new (an expired slot is free)", i, got)
		}
		if i-100 > 10 && got != replayFull {
			t.Fatalf("entry %d: %d, want full (only 11 entries had expired)", i, got)
		}
		if n := c.len(); n > 100 {
			t.Fatalf("replay cache holds %d entries, bound 100", n)
		}
	}
	// An expired entry is no replay.
	var k [32]byte
	k[5] = 9
	d := newReplayCache(4)
	d.add(k, now, now.Add(time.Minute))
	if got := d.add(k, now.Add(2*time.Minute), now.Add(time.Hour)); got != replayNew {
		t.Fatalf("an expired entry counted as a replay (%d)", got)
	}
}

func TestDPoPBoundTokenAsBearer(t *testing.T) {
	f := newDPoPFixture(t)
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	for _, c := range []struct {
		name string
		h    *Handler
	}{
		{"no dpop block", &Handler{}},
		{"no dpop block, allow_missing", &Handler{AllowMissing: true}},
		{"dpop block", &Handler{DPoP: &DPoP{}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := f.handler(t, c.h, nil)
			for i := range 2 { // uncached, cached
				res := serve(t, h, bearer(tok))
				expectReason(t, res, http.StatusUnauthorized, "key_binding_mismatch")
				if ch := res.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, `Bearer error="invalid_token"`) {
					t.Fatalf("request %d: WWW-Authenticate = %q", i, ch)
				}
			}
		})
	}
}

func TestDPoPSchemeWithoutDPoPBlock(t *testing.T) {
	f := newDPoPFixture(t)
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	h := f.handler(t, &Handler{}, nil)
	proof := signProof(t, f.client, jose.ES256, nil, proofClaims(h.verifier.now(), tok), nil)
	expectReason(t, serve(t, h, dpopRequest(tok, proof)), http.StatusBadRequest, "missing_token")

	anon := f.handler(t, &Handler{AllowMissing: true}, nil)
	res := serve(t, anon, dpopRequest(tok, proof))
	if res.status != http.StatusOK || res.placeholder("http.auth.user.id") != "" {
		t.Fatalf("allow_missing: status %d, user %q: DPoP without a dpop block must be no credential", res.status, res.placeholder("http.auth.user.id"))
	}
}

func TestDPoPUnboundTokenWithDPoPScheme(t *testing.T) {
	f := newDPoPFixture(t)
	h := f.handler(t, &Handler{DPoP: &DPoP{}}, nil)
	tok := f.token(t, nil)
	proof := signProof(t, f.client, jose.ES256, nil, proofClaims(h.verifier.now(), tok), nil)
	expectDPoPReason(t, serve(t, h, dpopRequest(tok, proof)), http.StatusUnauthorized, "key_binding_mismatch", "invalid_token")
	// The same unbound token as Bearer is fine under mode allowed.
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
}

func TestDPoPModeRequired(t *testing.T) {
	f := newDPoPFixture(t)
	h := f.handler(t, &Handler{DPoP: &DPoP{Mode: "required", Algorithms: []string{"ES256"}}, MissingTokenStatus: 401}, nil)
	res := serve(t, h, bearer(f.token(t, nil)))
	expectReason(t, res, http.StatusUnauthorized, "key_binding_mismatch")
	if ch := res.header.Get("WWW-Authenticate"); ch != `Bearer error="invalid_token", error_description="token key binding not satisfied by the request", DPoP algs="ES256"` {
		t.Fatalf("WWW-Authenticate = %q", ch)
	}
	res = serve(t, h, bearer(""))
	if ch := res.header.Get("WWW-Authenticate"); res.status != 401 || ch != `DPoP algs="ES256"` {
		t.Fatalf("no credentials under mode required: %d %q, want only the DPoP challenge", res.status, ch)
	}
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	proof := signProof(t, f.client, jose.ES256, nil, proofClaims(h.verifier.now(), tok), nil)
	if res := serve(t, h, dpopRequest(tok, proof)); res.status != http.StatusOK {
		t.Fatalf("DPoP under mode required: status %d (%v)", res.status, res.err)
	}
}

func TestDPoPChallenges(t *testing.T) {
	f := newDPoPFixture(t)
	h := f.handler(t, &Handler{DPoP: &DPoP{Algorithms: []string{"ES256", "PS256"}}, MissingTokenStatus: 401, Realm: "api"}, nil)
	res := serve(t, h, bearer(""))
	if want := `Bearer realm="api", DPoP realm="api", algs="ES256 PS256"`; res.status != 401 || res.header.Get("WWW-Authenticate") != want {
		t.Fatalf("no credentials: %d %q, want %q", res.status, res.header.Get("WWW-Authenticate"), want)
	}
	// Both schemes at once.
	req := bearer("a.b.c")
	req.Header.Add("Authorization", "DPoP a.b.c")
	res = serve(t, h, req)
	ch := res.header.Get("WWW-Authenticate")
	if res.status != 400 || strings.Count(ch, `error="invalid_request"`) != 2 || !strings.Contains(ch, "DPoP ") {
		t.Fatalf("both schemes: %d %q, want 400 with invalid_request in both challenges", res.status, ch)
	}
	// An expired token sent with DPoP: the error is in the DPoP challenge.
	c := claimsFor(f.idp.url(), dpopAud)
	c["exp"] = time.Now().Add(-time.Hour).Unix()
	c["cnf"] = map[string]any{"jkt": f.jkt}
	tok := f.signer.sign(t, c, nil)
	proof := signProof(t, f.client, jose.ES256, nil, proofClaims(h.verifier.now(), tok), nil)
	res = serve(t, h, dpopRequest(tok, proof))
	ch = res.header.Get("WWW-Authenticate")
	if res.status != 401 || !strings.HasPrefix(ch, `Bearer realm="api", DPoP realm="api", error="invalid_token"`) {
		t.Fatalf("expired DPoP token: %d %q", res.status, ch)
	}
	// CORS: the challenge and nonce are exposed.
	req = bearer("")
	req.Header.Set("Origin", "https://app.example")
	res = serve(t, h, req)
	if got := res.header.Get("Access-Control-Expose-Headers"); got != "WWW-Authenticate, DPoP-Nonce" {
		t.Fatalf("Access-Control-Expose-Headers = %q", got)
	}
}

func TestDPoPNonces(t *testing.T) {
	f := newDPoPFixture(t)
	clk := &testClock{}
	const secret = "0123456789abcdef0123456789abcdef"
	life := caddy.Duration(5 * time.Minute)
	h := f.handler(t, &Handler{DPoP: &DPoP{NonceSecret: secret, NonceLifetime: life, ProofMaxAge: caddy.Duration(time.Hour)}}, clk)
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	proofWith := func(nonce any) string {
		c := proofClaims(clk.now(), tok)
		if nonce != nil {
			c["nonce"] = nonce
		}
		return signProof(t, f.client, jose.ES256, nil, c, nil)
	}
	res := serve(t, h, dpopRequest(tok, proofWith(nil)))
	expectDPoPReason(t, res, 401, "dpop_nonce_required", "use_dpop_nonce")
	nonce := res.header.Get("DPoP-Nonce")
	if nonce == "" || res.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("DPoP-Nonce %q, Cache-Control %q", nonce, res.header.Get("Cache-Control"))
	}
	res = serve(t, h, dpopRequest(tok, proofWith(nonce)))
	if res.status != 200 || res.header.Get("DPoP-Nonce") != "" {
		t.Fatalf("with the nonce: status %d, DPoP-Nonce %q (%v)", res.status, res.header.Get("DPoP-Nonce"), res.err)
	}
	// Another instance with the same secret accepts it; another secret not.
	h2 := f.handler(t, &Handler{DPoP: &DPoP{NonceSecret: secret, NonceLifetime: life}}, clk)
	if res := serve(t, h2, dpopRequest(tok, proofWith(nonce))); res.status != 200 {
		t.Fatalf("same secret, other instance: status %d (%v)", res.status, res.err)
	}
	h3 := f.handler(t, &Handler{DPoP: &DPoP{NonceSecret: secret + "x", NonceLifetime: life}}, clk)
	expectDPoPReason(t, serve(t, h3, dpopRequest(tok, proofWith(nonce))), 401, "dpop_nonce_required", "use_dpop_nonce")
	expectDPoPReason(t, serve(t, h, dpopRequest(tok, proofWith("garbage"))), 401, "dpop_nonce_required", "use_dpop_nonce")
	expectDPoPReason(t, serve(t, h, dpopRequest(tok, proofWith(42))), 401, "dpop_nonce_required", "use_dpop_nonce")

	// One lifetime later the nonce still works, and the 200 rotates it.
	clk.advance(time.Duration(life))
	res = serve(t, h, dpopRequest(tok, proofWith(nonce)))
	fresh := res.header.Get("DPoP-Nonce")
	if res.status != 200 || fresh == "" || fresh == nonce || res.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("one lifetime later: status %d, DPoP-Nonce %q, Cache-Control %q", res.status, fresh, res.header.Get("Cache-Control"))
	}
	// Two lifetimes after it was minted, it is refused.
	clk.advance(time.Duration(life))
	expectDPoPReason(t, serve(t, h, dpopRequest(tok, proofWith(nonce))), 401, "dpop_nonce_required", "use_dpop_nonce")
}

func TestDPoPNonceWindow(t *testing.T) {
	n := newNonceSource("0123456789abcdef", time.Minute)
	t0 := time.Unix(1_800_000_000, 0) // on a window boundary
	nonce := n.mint(t0)
	for _, c := range []struct {
		after time.Duration
		ok    bool
	}{{0, true}, {59 * time.Second, true}, {time.Minute, true}, {119 * time.Second, true}, {2 * time.Minute, false}, {-time.Second, false}} {
		if ok, _ := n.check(nonce, t0.Add(c.after)); ok != c.ok {
			t.Errorf("nonce minted at the window start, %s later: ok=%v, want %v", c.after, ok, c.ok)
		}
	}
	late := n.mint(t0.Add(59 * time.Second)) // minted at the end of its window
	if ok, _ := n.check(late, t0.Add(59*time.Second+time.Minute)); !ok {
		t.Error("a nonce must be accepted for at least nonce_lifetime")
	}
}

func TestNormalizeHTU(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"https://example.com/a", "https://example.com/a"},
		{"HTTPS://EXAMPLE.com:443/a", "https://example.com/a"},
		{"http://example.com:80", "http://example.com/"},
		{"http://example.com:8080/", "http://example.com:8080/"},
		{"https://example.com/a/./b/../c", "https://example.com/a/c"},
		{"https://example.com/%7euser/%2f", "https://example.com/~user/%2F"},
		{"https://example.com/a?q=1#f", "https://example.com/a"},
		{"https://[::1]:443/x", "https://[::1]/x"},
	} {
		if got, ok := normalizeHTU(c.in); !ok || got != c.want {
			t.Errorf("normalizeHTU(%q) = %q, %v; want %q", c.in, got, ok, c.want)
		}
	}
	for _, bad := range []string{"", "/api", "ftp://example.com/", "https://user@example.com/", "mailto:x@example.com"} {
		if got, ok := normalizeHTU(bad); ok {
			t.Errorf("normalizeHTU(%q) = %q, want refused", bad, got)
		}
	}
}

func TestDPoPOrigin(t *testing.T) {
	f := newDPoPFixture(t)
	h := f.handler(t, &Handler{DPoP: &DPoP{Origin: "https://api.example.com"}}, nil)
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	c := proofClaims(h.verifier.now(), tok)
	c["htu"] = "https://api.example.com/api"
	if res := serve(t, h, dpopRequest(tok, signProof(t, f.client, jose.ES256, nil, c, nil))); res.status != 200 {
		t.Fatalf("htu of the origin: status %d (%v)", res.status, res.err)
	}
	c = proofClaims(h.verifier.now(), tok) // http://example.test/api: the request's own Host
	expectDPoPReason(t, serve(t, h, dpopRequest(tok, signProof(t, f.client, jose.ES256, nil, c, nil))), 401, "dpop_proof_invalid", "invalid_dpop_proof")
}

func TestDPoPCompileErrors(t *testing.T) {
	for _, c := range []struct {
		d    DPoP
		want string
	}{
		{DPoP{Mode: "sometimes"}, "dpop: mode"},
		{DPoP{Algorithms: []string{"HS256"}}, "dpop: algorithms"},
		{DPoP{Algorithms: []string{"none"}}, "dpop: algorithms"},
		{DPoP{ProofMaxAge: caddy.Duration(2 * time.Hour)}, "dpop: proof_max_age"},
		{DPoP{NonceSecret: "short"}, "dpop: nonce_secret"},
		{DPoP{NonceSecret: "{env.OAUTH2JWT_TEST_UNSET_SECRET}"}, "dpop: nonce_secret"},
		{DPoP{NonceLifetime: caddy.Duration(time.Minute)}, "dpop: nonce_lifetime"},
		{DPoP{ReplayCacheSize: -1}, "dpop: replay_cache_size"},
		{DPoP{Origin: "https://api.example.com/path"}, "dpop: origin"},
		{DPoP{Origin: "api.example.com"}, "dpop: origin"},
	} {
		_, err := c.d.compile(caddy.NewReplacer())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one naming %q", c.d, err, c.want)
		}
	}
	t.Setenv("OAUTH2JWT_TEST_SECRET", "0123456789abcdef0123")
	d, err := (&DPoP{NonceSecret: "{env.OAUTH2JWT_TEST_SECRET}"}).compile(caddy.NewReplacer())
	if err != nil || d.nonce == nil {
		t.Fatalf("nonce_secret from the environment: %v", err)
	}
}

func TestDPoPCaddyfile(t *testing.T) {
	in := `oauth2_jwt {
		provider main {
			issuer https://idp.example.com
			audience api
			jwks_uri https://idp.example.com/jwks
		}
		dpop {
			mode required
			algorithms ES256 EdDSA
			proof_max_age 2m
			nonce_secret {env.DPOP_NONCE_SECRET}
			nonce_lifetime 1m
			replay_cache_size 500
			origin https://api.example.com
		}
		certificate_binding {
			mode required
			header Client-Cert
		}
	}`
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	want := DPoP{Mode: "required", Algorithms: []string{"ES256", "EdDSA"}, ProofMaxAge: caddy.Duration(2 * time.Minute),
		NonceSecret: "{env.DPOP_NONCE_SECRET}", NonceLifetime: caddy.Duration(time.Minute), ReplayCacheSize: 500, Origin: "https://api.example.com"}
	got, _ := json.Marshal(h.DPoP)
	wantJSON, _ := json.Marshal(want)
	if string(got) != string(wantJSON) {
		t.Fatalf("dpop = %s, want %s", got, wantJSON)
	}
	if !strings.Contains(string(got), `"proof_max_age":120000000000`) || !strings.Contains(string(got), `"replay_cache_size":500`) {
		t.Fatalf("JSON names: %s", got)
	}
	if h.CertificateBinding == nil || *h.CertificateBinding != (CertificateBinding{Mode: "required", Header: "Client-Cert"}) {
		t.Fatalf("certificate_binding = %+v", h.CertificateBinding)
	}
	for _, c := range []struct{ block, want string }{
		{"dpop {\n mode sometimes\n}", "dpop: mode"},
		{"dpop {\n algorithms HS256\n}", "dpop: algorithms"},
		{"dpop {\n proof_max_age soon\n}", "proof_max_age"},
		{"dpop {\n nonce_secret short\n}", "nonce_secret"},
		{"dpop {\n replay_cache_size 0\n}", "replay_cache_size"},
		{"dpop {\n origin ftp://x\n}", "dpop: origin"},
		{"dpop {\n bogus\n}", "unrecognized"},
		{"dpop {\n mode allowed\n mode required\n}", "more than once"},
		{"dpop\n dpop", "more than once"},
		{"certificate_binding {\n mode sometimes\n}", "certificate_binding: mode"},
		{"certificate_binding {\n header \"bad header\"\n}", "certificate_binding: header"},
	} {
		in := "oauth2_jwt {\nprovider main {\nissuer https://idp.example.com\naudience api\njwks_uri https://idp.example.com/jwks\n}\n" + c.block + "\n}"
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "Testfile:") {
			t.Errorf("%q: error %v, want one naming %q with its line", c.block, err, c.want)
		}
	}
}

func TestDPoPResourceMetadata(t *testing.T) {
	f := newDPoPFixture(t)
	for _, c := range []struct {
		name string
		h    *Handler
		want map[string]any
		not  []string
	}{
		{"none", &Handler{}, nil, []string{"dpop_signing_alg_values_supported", "dpop_bound_access_tokens_required", "tls_client_certificate_bound_access_tokens"}},
		{"dpop allowed", &Handler{DPoP: &DPoP{Algorithms: []string{"ES256", "EdDSA"}}},
			map[string]any{"dpop_signing_alg_values_supported": []any{"ES256", "EdDSA"}, "dpop_bound_access_tokens_required": false}, []string{"tls_client_certificate_bound_access_tokens"}},
		{"dpop required, certificates", &Handler{DPoP: &DPoP{Mode: "required"}, CertificateBinding: &CertificateBinding{}},
			map[string]any{"dpop_bound_access_tokens_required": true, "tls_client_certificate_bound_access_tokens": true}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.h.ResourceMetadata = &ResourceMetadata{Resource: "https://api.example.com"}
			h := f.handler(t, c.h, nil)
			req := httptest.NewRequest(http.MethodGet, "https://api.example.com"+wellKnownResource, nil)
			res := serve(t, h, req)
			var doc map[string]any
			if err := json.Unmarshal(h.req.meta.body, &doc); err != nil || res.status != 200 {
				t.Fatalf("status %d, %v", res.status, err)
			}
			for k, v := range c.want {
				got, _ := json.Marshal(doc[k])
				want, _ := json.Marshal(v)
				if string(got) != string(want) {
					t.Errorf("%s = %s, want %s", k, got, want)
				}
			}
			for _, k := range c.not {
				if _, ok := doc[k]; ok {
					t.Errorf("%s advertised without its block", k)
				}
			}
		})
	}
}

// TestDPoPReplayFlood sends many distinct valid proofs through a handler
// with a small replay cache: the cache stays within its bound, never
// forgets a live proof (the first one is still refused when replayed after
// the flood), answers 503 while it is full of live proofs, and takes new
// proofs again once the old ones have expired.
func TestDPoPReplayFlood(t *testing.T) {
	f := newDPoPFixture(t)
	clk := &testClock{}
	hh := &Handler{DPoP: &DPoP{ReplayCacheSize: 50}}
	hh.deps.now = clk.now
	h := f.handler(t, hh, nil)
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	first := signProof(t, f.client, jose.ES256, nil, proofClaims(h.verifier.now(), tok), nil)
	if res := serve(t, h, dpopRequest(tok, first)); res.status != http.StatusOK {
		t.Fatalf("first proof: status %d (%v)", res.status, res.err)
	}
	for i := 1; i < 300; i++ {
		proof := signProof(t, f.client, jose.ES256, nil, proofClaims(h.verifier.now(), tok), nil)
		res := serve(t, h, dpopRequest(tok, proof))
		switch {
		case i < 50 && res.status != http.StatusOK:
			t.Fatalf("proof %d: status %d (%v)", i, res.status, res.err)
		case i >= 50:
			expectReason(t, res, http.StatusServiceUnavailable, "unavailable")
		}
		if n := h.bind.dpop.replay.len(); n > 50 {
			t.Fatalf("after %d proofs the replay cache holds %d entries, bound 50", i+1, n)
		}
	}
	expectDPoPReason(t, serve(t, h, dpopRequest(tok, first)), http.StatusUnauthorized, "dpop_proof_replayed", "invalid_dpop_proof")

	clk.advance(7 * time.Minute) // past proof_max_age (5m) and the leeway
	proof := signProof(t, f.client, jose.ES256, nil, proofClaims(h.verifier.now(), tok), nil)
	if res := serve(t, h, dpopRequest(tok, proof)); res.status != http.StatusOK {
		t.Fatalf("after the window: status %d (%v)", res.status, res.err)
	}
}

func TestDPoPJSONConfig(t *testing.T) {
	f := newDPoPFixture(t)
	raw := `{"dpop": {"mode": "required", "algorithms": ["ES256"], "proof_max_age": 60000000000, "replay_cache_size": 10, "origin": "https://api.example.com"},
		"certificate_binding": {"mode": "allowed", "header": "client-cert"}}`
	var h Handler
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		t.Fatal(err)
	}
	f.handler(t, &h, nil)
	d := h.bind.dpop
	if d == nil || !d.required || d.algsAttr != "ES256" || d.maxAge != time.Minute || d.replay.size != 10 || d.origin != "https://api.example.com" {
		t.Fatalf("compiled dpop = %+v", d)
	}
	if h.bind.cert.header != "Client-Cert" || h.bind.cert.required {
		t.Fatalf("compiled certificate_binding = %+v", h.bind.cert)
	}
	for _, c := range []struct{ raw, want string }{
		{`{"certificate_binding": {"mode": "always"}}`, "certificate_binding: mode"},
		{`{"certificate_binding": {"header": "bad header"}}`, "certificate_binding: header"},
		{`{"dpop": {"algorithms": ["HS512"]}}`, "dpop: algorithms"},
	} {
		var h Handler
		if err := json.Unmarshal([]byte(c.raw), &h); err != nil {
			t.Fatal(err)
		}
		h.Providers = map[string]*Provider{"main": {Issuer: f.idp.url(), Audiences: []string{dpopAud}, JWKSURI: f.idp.url() + "/jwks"}}
		if _, err := h.compile(caddy.NewReplacer()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", c.raw, err, c.want)
		}
	}
}

// TestDPoPReplayCacheSurvivesReload: a reload provisions the new config
// before the old one is cleaned up; the replay cache is pooled, so a proof
// used under the old config is still refused under the new one (a fresh
// cache would accept it once more within its window).
func TestDPoPReplayCacheSurvivesReload(t *testing.T) {
	f := newDPoPFixture(t)
	old := f.handler(t, &Handler{DPoP: &DPoP{ReplayCacheSize: 777}}, nil)
	tok := f.token(t, map[string]any{"jkt": f.jkt})
	proof := signProof(t, f.client, jose.ES256, nil, proofClaims(old.verifier.now(), tok), nil)
	if res := serve(t, old, dpopRequest(tok, proof)); res.status != http.StatusOK {
		t.Fatalf("first use: status %d (%v)", res.status, res.err)
	}
	reloaded := f.handler(t, &Handler{DPoP: &DPoP{ReplayCacheSize: 777}}, nil)
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	expectDPoPReason(t, serve(t, reloaded, dpopRequest(tok, proof)), http.StatusUnauthorized, "dpop_proof_replayed", "invalid_dpop_proof")
	fresh := signProof(t, f.client, jose.ES256, nil, proofClaims(reloaded.verifier.now(), tok), nil)
	if res := serve(t, reloaded, dpopRequest(tok, fresh)); res.status != http.StatusOK {
		t.Fatalf("a new proof after the reload: status %d (%v)", res.status, res.err)
	}
}
