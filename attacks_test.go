package oauth2jwt

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// The adversarial token and header suite of issue 3 ("Tokens that must be
// refused"). Every case is a named subtest that asserts the status, the
// {http.auth.jwt.error} reason code, the Bearer challenge and that the next
// handler was not called. Tokens go-jose refuses to produce are built by
// hand with the toolkit of jws_test.go.
//
// Each TestAttack* takes its cases from a table function (attackX(t, f))
// that only builds tokens; allAttackCases collects every table, and
// FuzzVerify seeds from it, built for the fuzzed handler's own issuers,
// audience and clock (fuzzWorld); TestFuzzEnvAnswersEveryAttack runs the
// lot on that handler too.

const attackAud = "api"

// attackFixture is the world the attack tables build tokens for: keys,
// issuers, audience and the time claims are minted at. newAttackFixture
// makes it live: one handler (h) with several providers, as a real
// deployment might have:
//   - main:    remote JWKS (RS256, ES256 and EdDSA keys), leeway 30s;
//   - rs-only: the same JWKS, algorithms RS256 only;
//   - at:      the same JWKS, require_typ at+jwt.
//
// HMAC tests use a second handler (hmacHandler) that has main plus:
//   - hmac:    a local jwks_file with one oct key, algorithms HS256;
//   - mixed:   a local jwks_file holding the main RSA public key (no alg)
//     and the oct key, algorithms HS256 and RS256: the set-up in which
//     RS256/HS256 key confusion would bite.
//
// The keys are the fixed ones of testdata/keys.
type attackFixture struct {
	h    *Handler
	idp  *testIdP // nil outside newAttackFixture
	dir  string
	rsa  *testKey // kid rsa-1, RS256
	ec   *testKey // kid ec-1, ES256 (P-256)
	ed   *testKey // kid ed-1, EdDSA
	hs   *testKey // kid hs-1, HS256, only in the local files
	logs *observer.ObservedLogs

	iss, rsOnlyIss, atIss, hmacIss, mixedIss string
	aud                                      string
	jwksURL                                  string    // the main provider's JWKS URL
	now                                      time.Time // iat and nbf of the standard claims
	leeway                                   caddy.Duration
}

func newAttackFixture(t *testing.T) *attackFixture {
	t.Helper()
	f := &attackFixture{
		rsa:    fixedKey(t, "rsa-1", jose.RS256),
		ec:     fixedKey(t, "ec-1", jose.ES256),
		ed:     fixedKey(t, "ed-1", jose.EdDSA),
		hs:     fixedKey(t, "hs-1", jose.HS256),
		aud:    attackAud,
		now:    time.Now().Truncate(time.Second),
		leeway: caddy.Duration(30 * time.Second),
	}
	f.idp = newTestIdP(t, f.rsa, f.ec, f.ed)
	f.iss = f.idp.url()
	f.rsOnlyIss = f.idp.url() + "/rs-only"
	f.atIss = f.idp.url() + "/at"
	f.hmacIss = "https://hmac.example.test"
	f.mixedIss = "https://mixed.example.test"
	f.jwksURL = f.idp.url() + "/jwks"

	f.dir = t.TempDir()

	f.h = provisionHandler(t, &Handler{Providers: map[string]*Provider{
		"main":    f.mainProvider(),
		"rs-only": {Issuer: f.rsOnlyIss, Audiences: []string{attackAud}, JWKSURI: f.jwksURL, Algorithms: []string{"RS256"}},
		"at":      {Issuer: f.atIss, Audiences: []string{attackAud}, JWKSURI: f.jwksURL, RequireTyp: "at+jwt"},
	}})
	waitForKeys(t, f.h)
	core, logs := observer.New(zapcore.DebugLevel)
	f.h.obs.logger = zap.New(core)
	f.logs = logs
	return f
}

// mainProvider is the configuration of the main provider; handlers built
// from it share its key cache.
func (f *attackFixture) mainProvider() *Provider {
	return &Provider{Issuer: f.iss, Audiences: []string{attackAud}, JWKSURI: f.jwksURL, Leeway: &f.leeway}
}

// hmacHandler provisions a handler with the main provider and the two
// jwks_file providers hmac and mixed. Every HMAC case runs on it, so that
// HS256 is in the algorithm list go-jose is given (the riskiest set-up).
func (f *attackFixture) hmacHandler(t *testing.T) *Handler {
	t.Helper()
	hmacFile := writeJWKSFile(t, f.dir, "hmac.json", f.hs.public())
	mixedFile := writeJWKSFile(t, f.dir, "mixed.json",
		jose.JSONWebKey{Key: f.rsaPriv().Public(), KeyID: f.rsa.kid, Use: "sig"}, f.hs.public())
	h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
		"main":  f.mainProvider(),
		"hmac":  {Issuer: f.hmacIss, Audiences: []string{attackAud}, JWKSFile: hmacFile, Algorithms: []string{"HS256"}},
		"mixed": {Issuer: f.mixedIss, Audiences: []string{attackAud}, JWKSFile: mixedFile, Algorithms: []string{"HS256", "RS256"}},
	}})
	waitForKeys(t, h)
	return h
}

func (f *attackFixture) rsaPriv() *rsa.PrivateKey   { return f.rsa.priv.(*rsa.PrivateKey) }
func (f *attackFixture) ecPriv() *ecdsa.PrivateKey  { return f.ec.priv.(*ecdsa.PrivateKey) }
func (f *attackFixture) edPriv() ed25519.PrivateKey { return f.ed.priv.(ed25519.PrivateKey) }

// claims returns standard valid claims for iss: the fixture's audience,
// issued at f.now, valid for an hour.
func (f *attackFixture) claims(iss string) map[string]any {
	return map[string]any{
		"iss": iss,
		"aud": f.aud,
		"sub": "user-42",
		"iat": f.now.Unix(),
		"nbf": f.now.Unix(),
		"exp": f.now.Add(time.Hour).Unix(),
	}
}

// claimsWith returns the standard valid claims for iss with mods applied:
// a nil value deletes the claim, a json.RawMessage is written as is.
func (f *attackFixture) claimsWith(iss string, mods map[string]any) map[string]any {
	c := f.claims(iss)
	for k, v := range mods {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// payload is claimsWith as JSON text.
func (f *attackFixture) payload(t testing.TB, iss string, mods map[string]any) string {
	t.Helper()
	return mustJSON(t, f.claimsWith(iss, mods))
}

// atClaims are valid RFC 9068 access token claims for the at provider.
func (f *attackFixture) atClaims() map[string]any {
	c := f.claims(f.atIss)
	c["client_id"] = "client-7"
	c["jti"] = "jti-1"
	return c
}

// advanceCacheClock moves the clock of the JWKS cache behind iss forward
// by d, so that a kid-triggered refresh is allowed again by the rate
// limiter (min_refresh_interval). Fetch-count assertions are then
// meaningful: the module could fetch, and the test shows it does not (or
// only once).
func advanceCacheClock(t *testing.T, h *Handler, iss string, d time.Duration) {
	t.Helper()
	c, ok := h.verifier.byIssuer[iss].keys.(*jwksCache)
	if !ok {
		t.Fatalf("provider of %q has no remote key cache", iss)
	}
	advance(c, d)
}

// ---- running cases ----

// attackCase is one request and the answer it must get.
type attackCase struct {
	name  string
	token string   // sent as "Authorization: Bearer <token>" unless auth is set
	auth  []string // raw Authorization header values, one header line each
	// status and code: the expected HTTP status and {http.auth.jwt.error}.
	status int
	code   string
	// direct, when set, is the reason code verifier.verify must give the
	// token when it is handed over directly (defence in depth for tokens
	// the header parser already refuses).
	direct string
}

func (c attackCase) request() *http.Request {
	if c.auth == nil {
		return bearer(c.token)
	}
	req := httptest.NewRequest(http.MethodGet, "http://example.test/api", nil)
	for _, v := range c.auth {
		req.Header.Add("Authorization", v)
	}
	return req
}

func runAttackCases(t *testing.T, h *Handler, cases []attackCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := serve(t, h, tc.request())
			expectReason(t, res, tc.status, tc.code)
			if tc.status != http.StatusOK {
				if got := res.placeholder("http.auth.user.id"); got != "" {
					t.Errorf("{http.auth.user.id} = %q on a rejected request", got)
				}
			}
			if tc.direct != "" {
				if got := verifierReason(h, tc.token); got != tc.direct {
					t.Errorf("verifier.verify reason = %q, want %q", got, tc.direct)
				}
			}
		})
	}
}

// verifierReason runs the token check alone, bypassing the header parser.
func verifierReason(h *Handler, token string) string {
	_, _, _, aerr := h.verifier.verify(context.Background(), token, h.verifier.now())
	if aerr == nil {
		return "ok"
	}
	return aerr.reason.String()
}

// attackTable is the data of one attack class: the cases for the
// fixture's handler (providers main, rs-only and at) and those for
// hmacHandler (main, hmac and mixed).
type attackTable struct {
	main, hmac []attackCase
}

// run runs the table: main on f.h, then hmac on a fresh hmacHandler in the
// subtest hmacName.
func (tab attackTable) run(t *testing.T, f *attackFixture, hmacName string) {
	t.Helper()
	runAttackCases(t, f.h, tab.main)
	if len(tab.hmac) > 0 {
		t.Run(hmacName, func(t *testing.T) { runAttackCases(t, f.hmacHandler(t), tab.hmac) })
	}
}

// attackEvilURL stands for the attacker's key server in the tables built
// without one (allAttackCases): nothing listens on port 1.
const attackEvilURL = "http://127.0.0.1:1"

// allAttackCases returns the cases of every attack table built for f, the
// seeds of FuzzVerify.
func allAttackCases(t testing.TB, f *attackFixture) []attackCase {
	t.Helper()
	tables := []attackTable{
		attackBaseline(t, f),
		attackAlgNone(t, f),
		attackHMACConfusion(t, f),
		attackAlgKeyMismatch(t, f),
		attackEmbeddedKeys(t, f, attackEvilURL),
		attackHostileKid(t, f),
		attackCritB64Zip(t, f),
		attackSerializations(t, f),
		attackMalformedEncodings(t, f),
		attackDuplicateKeys(t, f),
		attackClaimTypeConfusion(t, f),
		attackTimeBoundaries(t, f),
		attackNoFetchBeforeKeys(t, f),
		attackECDSASignatures(t, f),
		attackRequireTyp(t, f),
		attackHeaderTrickery(t, f),
	}
	var all []attackCase
	for _, tab := range tables {
		all = append(all, tab.main...)
		all = append(all, tab.hmac...)
	}
	return all
}

// ---- tests ----

// TestAttackBaselineAccepted proves the fixture and the hand-made token
// builder produce tokens the handler accepts, so that every refusal in the
// other TestAttack* tests is caused by the attack and not by the set-up.
func TestAttackBaselineAccepted(t *testing.T) {
	f := newAttackFixture(t)
	attackBaseline(t, f).run(t, f, "jwks_file providers")
}

func attackBaseline(t testing.TB, f *attackFixture) attackTable {
	main := f.payload(t, f.iss, nil)
	return attackTable{main: []attackCase{
		{name: "RS256 go-jose", token: f.rsa.sign(t, f.claims(f.iss), nil), status: 200},
		{name: "ES256 go-jose", token: f.ec.sign(t, f.claims(f.iss), nil), status: 200},
		{name: "EdDSA go-jose", token: f.ed.sign(t, f.claims(f.iss), nil), status: 200},
		{name: "RS256 hand-made", token: compact(hdr(t, "RS256", "rsa-1", nil), main, signRS(t, f.rsaPriv(), crypto.SHA256)), status: 200},
		{name: "ES256 hand-made", token: compact(hdr(t, "ES256", "ec-1", nil), main, signES(t, f.ecPriv(), crypto.SHA256)), status: 200},
		{name: "EdDSA hand-made", token: compact(hdr(t, "EdDSA", "ed-1", nil), main, signEd(f.edPriv())), status: 200},
		{name: "RS256 hand-made without kid", token: compact(hdr(t, "RS256", "", nil), main, signRS(t, f.rsaPriv(), crypto.SHA256)), status: 200},
		{name: "RS256 for rs-only provider", token: f.rsa.sign(t, f.claims(f.rsOnlyIss), nil), status: 200},
		{name: "at+jwt access token", token: f.rsa.sign(t, f.atClaims(), map[jose.HeaderKey]any{"typ": "at+jwt"}), status: 200},
		{name: "scheme in lower case", auth: []string{"bearer " + f.rsa.sign(t, f.claims(f.iss), nil)}, status: 200},
		{name: "several spaces after Bearer", auth: []string{"Bearer    " + f.rsa.sign(t, f.claims(f.iss), nil)}, status: 200},
		{name: "aud array holding the audience", token: f.rsa.sign(t, f.claimsWith(f.iss, map[string]any{"aud": []string{"other", f.aud}}), nil), status: 200},
	}, hmac: []attackCase{
		{name: "HS256 from jwks_file", token: compact(hdr(t, "HS256", f.hs.kid, nil), f.payload(t, f.hmacIss, nil), signHS(f.hs.hmac, crypto.SHA256)), status: 200},
		{name: "HS256 go-jose from jwks_file", token: f.hs.sign(t, f.claims(f.hmacIss), nil), status: 200},
		{name: "RS256 from mixed jwks_file", token: f.rsa.sign(t, f.claims(f.mixedIss), nil), status: 200},
		{name: "HS256 from mixed jwks_file", token: f.hs.sign(t, f.claims(f.mixedIss), nil), status: 200},
	}}
}

// TestAttackAlgNone: alg none/None/NONE/empty, unsigned tokens and tokens
// whose signature part is empty are refused.
func TestAttackAlgNone(t *testing.T) {
	f := newAttackFixture(t)
	attackAlgNone(t, f).run(t, f, "HMAC provider")
}

func attackAlgNone(t testing.TB, f *attackFixture) attackTable {
	p := f.payload(t, f.iss, nil)
	valid := strings.Split(f.rsa.sign(t, f.claims(f.iss), nil), ".")
	junk := fixedSig([]byte("signature"))
	return attackTable{main: []attackCase{
		{name: "alg none unsigned", token: compact(`{"alg":"none"}`, p, nil), status: 401, code: "malformed"},
		{name: "alg none unsigned with typ and kid", token: compact(hdr(t, "none", "rsa-1", nil), p, nil), status: 401, code: "malformed"},
		{name: "alg none with a signature", token: compact(`{"alg":"none"}`, p, junk), status: 401, code: "bad_algorithm"},
		{name: "alg None", token: compact(hdr(t, "None", "rsa-1", nil), p, junk), status: 401, code: "bad_algorithm"},
		{name: "alg NONE", token: compact(hdr(t, "NONE", "rsa-1", nil), p, junk), status: 401, code: "bad_algorithm"},
		{name: "alg nOnE", token: compact(hdr(t, "nOnE", "rsa-1", nil), p, junk), status: 401, code: "bad_algorithm"},
		{name: "alg empty", token: compact(hdr(t, "", "rsa-1", nil), p, junk), status: 401, code: "bad_algorithm"},
		{name: "alg missing", token: compact(`{"kid":"rsa-1","typ":"JWT"}`, p, junk), status: 401, code: "bad_algorithm"},
		{name: "alg null", token: compact(`{"alg":null,"kid":"rsa-1"}`, p, junk), status: 401, code: "bad_algorithm"},
		{name: "alg number", token: compact(`{"alg":256,"kid":"rsa-1"}`, p, junk), status: 401, code: "bad_algorithm"},
		{name: "alg none with the signature of a valid RS256 token", token: b64url([]byte(`{"alg":"none","kid":"rsa-1"}`)) + "." + valid[1] + "." + valid[2], status: 401, code: "bad_algorithm"},
		{name: "valid RS256 token with its signature removed", token: valid[0] + "." + valid[1] + ".", status: 401, code: "malformed"},
		{name: "valid RS256 token without signature part", token: valid[0] + "." + valid[1], status: 401, code: "malformed"},
		{name: "RS256 header with an empty signature", token: compact(hdr(t, "RS256", "rsa-1", nil), p, nil), status: 401, code: "malformed"},
	}, hmac: []attackCase{
		{name: "alg none unsigned", token: compact(`{"alg":"none"}`, f.payload(t, f.hmacIss, nil), nil), status: 401, code: "malformed"},
		{name: "alg none with a signature", token: compact(`{"alg":"none","kid":"`+f.hs.kid+`"}`, f.payload(t, f.hmacIss, nil), junk), status: 401, code: "bad_algorithm"},
		{name: "alg none with the HMAC of the oct key", token: compact(`{"alg":"none","kid":"`+f.hs.kid+`"}`, f.payload(t, f.hmacIss, nil), signHS(f.hs.hmac, crypto.SHA256)), status: 401, code: "bad_algorithm"},
	}}
}

// TestAttackHMACConfusion: HS256/384/512 tokens whose secret is the
// provider's RSA, EC or Ed25519 public key (as PEM, DER, JWK JSON, the
// whole JWKS, modulus or point bytes) are refused: HMAC is not allowed for
// keys fetched over the network, and a symmetric algorithm is never
// verified with an asymmetric key, even when the provider allows HS256.
//
// f.h has no HMAC provider: HS* is not even in the algorithm list given
// to go-jose. The HMAC handler has HS256 in that list, so the provider's
// own allow-list and key binding must refuse.
func TestAttackHMACConfusion(t *testing.T) {
	f := newAttackFixture(t)
	attackHMACConfusion(t, f).run(t, f, "handler with HMAC providers")
}

func attackHMACConfusion(t testing.TB, f *attackFixture) attackTable {
	type secret struct {
		name  string
		kid   string
		bytes []byte
	}
	var secrets []secret
	add := func(name, kid string, b []byte) { secrets = append(secrets, secret{name, kid, b}) }

	rsaPub := &f.rsaPriv().PublicKey
	rsaPKIX, err := x509.MarshalPKIXPublicKey(rsaPub)
	if err != nil {
		t.Fatal(err)
	}
	rsaPKCS1 := x509.MarshalPKCS1PublicKey(rsaPub)
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPKIX})
	add("RSA PEM", "rsa-1", rsaPEM)
	add("RSA PEM without final newline", "rsa-1", bytes.TrimSpace(rsaPEM))
	add("RSA PKCS1 PEM", "rsa-1", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: rsaPKCS1}))
	add("RSA DER", "rsa-1", rsaPKIX)
	add("RSA PKCS1 DER", "rsa-1", rsaPKCS1)
	add("RSA JWK JSON", "rsa-1", []byte(mustJSON(t, f.rsa.public())))
	add("RSA modulus bytes", "rsa-1", rsaPub.N.Bytes())
	add("RSA modulus base64url", "rsa-1", []byte(b64url(rsaPub.N.Bytes())))

	ecPub := &f.ecPriv().PublicKey
	ecPKIX, err := x509.MarshalPKIXPublicKey(ecPub)
	if err != nil {
		t.Fatal(err)
	}
	ecdhPub, err := ecPub.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	add("EC PEM", "ec-1", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPKIX}))
	add("EC DER", "ec-1", ecPKIX)
	add("EC JWK JSON", "ec-1", []byte(mustJSON(t, f.ec.public())))
	add("EC point bytes", "ec-1", ecdhPub.Bytes())
	add("EC x coordinate", "ec-1", ecdhPub.Bytes()[1:33])

	add("Ed25519 public key bytes", "ed-1", []byte(f.edPriv().Public().(ed25519.PublicKey)))
	add("whole JWKS document", "rsa-1", []byte(mustJSON(t, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{f.rsa.public(), f.ec.public(), f.ed.public()}})))

	hmacAlgs := []struct {
		alg  string
		hash crypto.Hash
	}{{"HS256", crypto.SHA256}, {"HS384", crypto.SHA384}, {"HS512", crypto.SHA512}}

	var mainCases, plainCases, mixedCases, hmacCases []attackCase
	mainP := f.payload(t, f.iss, nil)
	mixedP := f.payload(t, f.mixedIss, nil)
	hmacP := f.payload(t, f.hmacIss, nil)
	for _, s := range secrets {
		for _, a := range hmacAlgs {
			sign := signHS(s.bytes, a.hash)
			// The remote provider: HS* is never allowed for its keys.
			mainCases = append(mainCases,
				attackCase{name: a.alg + " " + s.name + " kid " + s.kid, token: compact(hdr(t, a.alg, s.kid, nil), mainP, sign), status: 401, code: "bad_algorithm"},
				attackCase{name: a.alg + " " + s.name + " no kid", token: compact(hdr(t, a.alg, "", nil), mainP, sign), status: 401, code: "bad_algorithm"},
			)
			plainCases = append(plainCases,
				attackCase{name: "remote provider: " + a.alg + " " + s.name + " kid " + s.kid, token: compact(hdr(t, a.alg, s.kid, nil), mainP, sign), status: 401, code: "bad_algorithm"},
			)
		}
		if !strings.HasPrefix(s.name, "RSA") {
			continue
		}
		// The mixed local file holds the same RSA public key and an oct
		// key, and allows HS256: the RSA key must not become an HMAC
		// secret (bad_algorithm when the kid names it), and without kid
		// only the oct key is tried (bad_signature).
		mixedCases = append(mixedCases,
			attackCase{name: "mixed jwks_file: HS256 " + s.name + " kid rsa-1", token: compact(hdr(t, "HS256", "rsa-1", nil), mixedP, signHS(s.bytes, crypto.SHA256)), status: 401, code: "bad_algorithm"},
			attackCase{name: "mixed jwks_file: HS256 " + s.name + " no kid", token: compact(hdr(t, "HS256", "", nil), mixedP, signHS(s.bytes, crypto.SHA256)), status: 401, code: "bad_signature"},
			attackCase{name: "mixed jwks_file: HS256 " + s.name + " kid " + f.hs.kid, token: compact(hdr(t, "HS256", f.hs.kid, nil), mixedP, signHS(s.bytes, crypto.SHA256)), status: 401, code: "bad_signature"},
			attackCase{name: "mixed jwks_file: HS384 " + s.name + " kid rsa-1", token: compact(hdr(t, "HS384", "rsa-1", nil), mixedP, signHS(s.bytes, crypto.SHA384)), status: 401, code: "bad_algorithm"},
			attackCase{name: "mixed jwks_file: HS512 " + s.name + " kid rsa-1", token: compact(hdr(t, "HS512", "rsa-1", nil), mixedP, signHS(s.bytes, crypto.SHA512)), status: 401, code: "bad_algorithm"},
		)
		hmacCases = append(hmacCases,
			attackCase{name: "hmac jwks_file: HS256 " + s.name + " kid " + f.hs.kid, token: compact(hdr(t, "HS256", f.hs.kid, nil), hmacP, signHS(s.bytes, crypto.SHA256)), status: 401, code: "bad_signature"},
		)
	}
	return attackTable{main: mainCases, hmac: append(append(plainCases, mixedCases...), hmacCases...)}
}

// TestAttackAlgKeyMismatch: an alg that does not fit the key the kid
// names (RS256 with an EC key, ES256 with an RSA key, ES384 with a P-256
// key, EdDSA with a non-Ed25519 key), an alg other than the JWK's own alg,
// and an alg outside the provider's allow-list are refused.
func TestAttackAlgKeyMismatch(t *testing.T) {
	f := newAttackFixture(t)
	attackAlgKeyMismatch(t, f).run(t, f, "jwks_file providers")
}

func attackAlgKeyMismatch(t testing.TB, f *attackFixture) attackTable {
	p := f.payload(t, f.iss, nil)
	rsOnly := f.payload(t, f.rsOnlyIss, nil)
	rs256 := signRS(t, f.rsaPriv(), crypto.SHA256)
	es256 := signES(t, f.ecPriv(), crypto.SHA256)
	return attackTable{main: []attackCase{
		{name: "RS256 header, EC kid, EC signature", token: compact(hdr(t, "RS256", "ec-1", nil), p, es256), status: 401, code: "bad_algorithm"},
		{name: "RS256 header, EC kid, RSA signature", token: compact(hdr(t, "RS256", "ec-1", nil), p, rs256), status: 401, code: "bad_algorithm"},
		{name: "RS256 header, Ed25519 kid", token: compact(hdr(t, "RS256", "ed-1", nil), p, rs256), status: 401, code: "bad_algorithm"},
		{name: "ES256 header, RSA kid, EC signature", token: compact(hdr(t, "ES256", "rsa-1", nil), p, es256), status: 401, code: "bad_algorithm"},
		{name: "ES256 header, RSA kid, RSA signature", token: compact(hdr(t, "ES256", "rsa-1", nil), p, rs256), status: 401, code: "bad_algorithm"},
		{name: "ES384 header, P-256 kid, P-256 SHA-384 signature", token: compact(hdr(t, "ES384", "ec-1", nil), p, signES(t, f.ecPriv(), crypto.SHA384)), status: 401, code: "bad_algorithm"},
		{name: "ES384 header, no kid, P-256 signature", token: compact(hdr(t, "ES384", "", nil), p, signES(t, f.ecPriv(), crypto.SHA384)), status: 401, code: "bad_algorithm"},
		{name: "ES512 header, P-256 kid", token: compact(hdr(t, "ES512", "ec-1", nil), p, signES(t, f.ecPriv(), crypto.SHA512)), status: 401, code: "bad_algorithm"},
		{name: "EdDSA header, RSA kid", token: compact(hdr(t, "EdDSA", "rsa-1", nil), p, rs256), status: 401, code: "bad_algorithm"},
		{name: "EdDSA header, EC kid", token: compact(hdr(t, "EdDSA", "ec-1", nil), p, es256), status: 401, code: "bad_algorithm"},
		{name: "PS256 signed by the RSA key whose JWK says alg RS256", token: compact(hdr(t, "PS256", "rsa-1", nil), p, signPS(t, f.rsaPriv(), crypto.SHA256)), status: 401, code: "bad_algorithm"},
		{name: "RS512 signed by the RSA key whose JWK says alg RS256", token: compact(hdr(t, "RS512", "rsa-1", nil), p, signRS(t, f.rsaPriv(), crypto.SHA512)), status: 401, code: "bad_algorithm"},
		{name: "ES256 valid signature, provider allows RS256 only", token: compact(hdr(t, "ES256", "ec-1", nil), rsOnly, es256), status: 401, code: "bad_algorithm"},
		{name: "EdDSA valid signature, provider allows RS256 only", token: compact(hdr(t, "EdDSA", "ed-1", nil), rsOnly, signEd(f.edPriv())), status: 401, code: "bad_algorithm"},
		{name: "HS256 with the real oct key, remote provider", token: compact(hdr(t, "HS256", f.hs.kid, nil), p, signHS(f.hs.hmac, crypto.SHA256)), status: 401, code: "bad_algorithm"},
		{name: "unknown alg RS1", token: compact(hdr(t, "RS1", "rsa-1", nil), p, rs256), status: 401, code: "bad_algorithm"},
		{name: "alg in lower case rs256", token: compact(hdr(t, "rs256", "rsa-1", nil), p, rs256), status: 401, code: "bad_algorithm"},
		{name: "alg ES256K", token: compact(hdr(t, "ES256K", "ec-1", nil), p, es256), status: 401, code: "bad_algorithm"},
		{name: "JWE key algorithm RSA-OAEP in a JWS", token: compact(hdr(t, "RSA-OAEP", "rsa-1", nil), p, rs256), status: 401, code: "bad_algorithm"},
	}, hmac: []attackCase{
		{name: "RS256 for the HS256-only provider", token: compact(hdr(t, "RS256", "rsa-1", nil), f.payload(t, f.hmacIss, nil), rs256), status: 401, code: "bad_algorithm"},
		{name: "HS256 with the real oct key, remote provider", token: compact(hdr(t, "HS256", f.hs.kid, nil), p, signHS(f.hs.hmac, crypto.SHA256)), status: 401, code: "bad_algorithm"},
		{name: "HS384 with the real oct key, provider allows HS256", token: compact(hdr(t, "HS384", f.hs.kid, nil), f.payload(t, f.hmacIss, nil), signHS(f.hs.hmac, crypto.SHA384)), status: 401, code: "bad_algorithm"},
		{name: "ES256 for the mixed provider (RS256 and HS256)", token: compact(hdr(t, "ES256", "ec-1", nil), f.payload(t, f.mixedIss, nil), es256), status: 401, code: "bad_algorithm"},
	}}
}

// TestAttackEmbeddedKeys: jwk, jku, x5u and x5c headers are never used to
// find or fetch a key (CVE-2018-0114 class). A token signed by the key it
// embeds is refused, no request reaches the jku/x5u URL and the provider's
// JWKS is not fetched again.
func TestAttackEmbeddedKeys(t *testing.T) {
	f := newAttackFixture(t)
	attacker := rsaKey(attackerRSA)
	var evilHits atomic.Int64
	attackerJWKS := mustJSON(t, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &attacker.PublicKey, KeyID: "attacker", Algorithm: "RS256", Use: "sig"},
		{Key: &attacker.PublicKey, KeyID: "rsa-1", Algorithm: "RS256", Use: "sig"},
	}})
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		evilHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(attackerJWKS))
	}))
	t.Cleanup(evil.Close)

	before := f.idp.jwksHits.Load()
	runAttackCases(t, f.h, attackEmbeddedKeys(t, f, evil.URL).main)
	if n := evilHits.Load(); n != 0 {
		t.Errorf("the jku/x5u server got %d requests, want 0", n)
	}
	// Kids "attacker" are unknown; the refresh they may cause is rate
	// limited (min_refresh_interval 1m since the first fetch), so the
	// provider's JWKS must not be fetched at all.
	if n := f.idp.jwksHits.Load() - before; n != 0 {
		t.Errorf("the provider's JWKS was fetched %d more times, want 0", n)
	}
}

// attackerRSA is the rsaKey of the attacker in attackEmbeddedKeys.
const attackerRSA = 1

// attackEmbeddedKeys: tokens signed by attacker keys (an RSA key the
// attacker's server at evilURL publishes, fresh EC and Ed25519 keys) that
// embed or point at those keys.
func attackEmbeddedKeys(t testing.TB, f *attackFixture, evilURL string) attackTable {
	attacker := rsaKey(attackerRSA)
	attackerEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, attackerEd, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	jwkOf := func(pub any, kid, alg string) json.RawMessage {
		return json.RawMessage(mustJSON(t, jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: alg, Use: "sig"}))
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "attacker"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &attacker.PublicKey, attacker)
	if err != nil {
		t.Fatal(err)
	}
	x5c := []string{base64.StdEncoding.EncodeToString(der)}

	p := f.payload(t, f.iss, nil)
	rs := signRS(t, attacker, crypto.SHA256)
	es := signES(t, attackerEC, crypto.SHA256)
	ed := signEd(attackerEd)
	jwkRSA := jwkOf(&attacker.PublicKey, "attacker", "RS256")
	return attackTable{main: []attackCase{
		{name: "jwk RSA no kid", token: compact(hdr(t, "RS256", "", map[string]any{"jwk": jwkRSA}), p, rs), status: 401, code: "bad_signature"},
		{name: "jwk RSA with the provider's kid", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"jwk": jwkOf(&attacker.PublicKey, "rsa-1", "RS256")}), p, rs), status: 401, code: "bad_signature"},
		{name: "jwk RSA with its own kid", token: compact(hdr(t, "RS256", "attacker", map[string]any{"jwk": jwkRSA}), p, rs), status: 401, code: "unknown_key"},
		{name: "jwk EC no kid", token: compact(hdr(t, "ES256", "", map[string]any{"jwk": jwkOf(&attackerEC.PublicKey, "", "ES256")}), p, es), status: 401, code: "bad_signature"},
		{name: "jwk EC with the provider's kid", token: compact(hdr(t, "ES256", "ec-1", map[string]any{"jwk": jwkOf(&attackerEC.PublicKey, "ec-1", "ES256")}), p, es), status: 401, code: "bad_signature"},
		{name: "jwk Ed25519 no kid", token: compact(hdr(t, "EdDSA", "", map[string]any{"jwk": jwkOf(attackerEd.Public(), "", "EdDSA")}), p, ed), status: 401, code: "bad_signature"},
		{name: "jku no kid", token: compact(hdr(t, "RS256", "", map[string]any{"jku": evilURL + "/jwks"}), p, rs), status: 401, code: "bad_signature"},
		{name: "jku with the provider's kid", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"jku": evilURL + "/jwks"}), p, rs), status: 401, code: "bad_signature"},
		{name: "jku with a kid only the jku set has", token: compact(hdr(t, "RS256", "attacker", map[string]any{"jku": evilURL + "/jwks"}), p, rs), status: 401, code: "unknown_key"},
		{name: "jku pointing at the provider's own JWKS", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"jku": f.jwksURL}), p, rs), status: 401, code: "bad_signature"},
		{name: "x5u no kid", token: compact(hdr(t, "RS256", "", map[string]any{"x5u": evilURL + "/cert.pem"}), p, rs), status: 401, code: "bad_signature"},
		{name: "x5u with a kid only the attacker has", token: compact(hdr(t, "RS256", "attacker", map[string]any{"x5u": evilURL + "/cert.pem"}), p, rs), status: 401, code: "unknown_key"},
		{name: "x5c self-signed no kid", token: compact(hdr(t, "RS256", "", map[string]any{"x5c": x5c}), p, rs), status: 401, code: "bad_signature"},
		{name: "x5c self-signed with the provider's kid", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"x5c": x5c}), p, rs), status: 401, code: "bad_signature"},
		{name: "jwk jku x5u and x5c together", token: compact(hdr(t, "RS256", "", map[string]any{"jwk": jwkRSA, "jku": evilURL + "/jwks", "x5u": evilURL + "/cert.pem", "x5c": x5c}), p, rs), status: 401, code: "bad_signature"},
	}}
}

// TestAttackHostileKid: path traversal, SQL-ish, 10 KB and control
// character kids are unknown keys (no lookup beyond the provider's set),
// cause at most one JWKS fetch for the whole group, and never reach the
// log as raw control characters.
func TestAttackHostileKid(t *testing.T) {
	f := newAttackFixture(t)
	// Let the rate limiter allow one kid-triggered refresh now, so that
	// "at most one fetch" is a real bound and not an artefact of timing.
	advanceCacheClock(t, f.h, f.iss, 2*time.Minute)
	tab := attackHostileKid(t, f)
	cases := tab.main

	before := f.idp.jwksHits.Load()
	// Twice: the second round must be answered from the rate limiter and
	// the negative cache.
	for round := range 2 {
		t.Run("round "+itoa(round+1), func(t *testing.T) { runAttackCases(t, f.h, cases) })
	}
	n := f.idp.jwksHits.Load() - before
	t.Logf("%d requests with hostile kids caused %d JWKS fetches", 2*len(cases), n)
	if n > 1 {
		t.Errorf("hostile kids caused %d JWKS fetches, want at most 1", n)
	}

	entries := f.logs.All()
	if len(entries) < 2*len(cases) {
		t.Fatalf("got %d debug log entries for %d rejections; the log check would be vacuous", len(entries), 2*len(cases))
	}
	for _, e := range entries {
		texts := []string{e.Message}
		for k, v := range e.ContextMap() {
			s, _ := json.Marshal(v)
			texts = append(texts, k, string(s), stringOf(v))
		}
		for _, s := range texts {
			if i := strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == 0x2028 || r == 0x2029 }); i >= 0 {
				t.Errorf("log entry %q carries a raw control character in %q", e.Message, s)
			}
			for _, bad := range []string{"passwd", "forged", "UNION", "red"} {
				if strings.Contains(s, bad) {
					t.Errorf("log entry %q carries token content %q: %q", e.Message, bad, s)
				}
			}
		}
	}

	// A local jwks_file provider: the kid is only ever a map key, never a
	// file name.
	t.Run("jwks_file provider", func(t *testing.T) { runAttackCases(t, f.hmacHandler(t), tab.hmac) })
}

func attackHostileKid(t testing.TB, f *attackFixture) attackTable {
	p := f.payload(t, f.iss, nil)
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	kids := []struct{ name, kid string }{
		{"path traversal", "../../../../etc/passwd"},
		{"path traversal to the jwks_file", "../hmac.json"},
		{"encoded path traversal", "..%2F..%2F..%2Fetc%2Fpasswd"},
		{"absolute path", "/etc/passwd"},
		{"file URL", "file:///etc/passwd"},
		{"http URL", "http://127.0.0.1:1/jwks"},
		{"SQL tautology", "' OR '1'='1"},
		{"SQL comment after a real kid", "rsa-1' --"},
		{"SQL union", "x' UNION SELECT key FROM keys --"},
		{"real kid with NUL appended", "rsa-1\x00"},
		{"real kid with trailing space", "rsa-1 "},
		{"real kid in upper case", "RSA-1"},
		{"10 KB kid", strings.Repeat("A", 10<<10)},
		{"10 KB traversal kid", strings.Repeat("../", 10<<10/3)},
		{"CRLF log line forgery", "x\r\nlevel=error msg=\"forged entry\""},
		{"ANSI escape", "\x1b[31mred\x1b[0m"},
		{"NUL and BEL", "a\x00b\x07c"},
		{"DEL", "kid\x7f"},
		{"Unicode line separator", "a\u2028b\u2029c"},
		{"invalid UTF-8", "a\xff\xfeb"},
	}
	var cases []attackCase
	for _, k := range kids {
		cases = append(cases, attackCase{name: k.name, token: compact(hdr(t, "RS256", k.kid, nil), p, rs), status: 401, code: "unknown_key"})
	}
	cases = append(cases,
		attackCase{name: "kid number", token: compact(`{"alg":"RS256","kid":1}`, p, rs), status: 401, code: "malformed"},
		attackCase{name: "kid object", token: compact(`{"alg":"RS256","kid":{"path":"/etc/passwd"}}`, p, rs), status: 401, code: "malformed"},
		attackCase{name: "kid array", token: compact(`{"alg":"RS256","kid":["rsa-1"]}`, p, rs), status: 401, code: "malformed"},
	)

	hmacP := f.payload(t, f.hmacIss, nil)
	hs := signHS(f.hs.hmac, crypto.SHA256)
	return attackTable{main: cases, hmac: []attackCase{
		{name: "path traversal", token: compact(hdr(t, "HS256", "../../../../etc/passwd", nil), hmacP, hs), status: 401, code: "unknown_key"},
		{name: "the file's own name", token: compact(hdr(t, "HS256", "hmac.json", nil), hmacP, hs), status: 401, code: "unknown_key"},
		{name: "the file's path", token: compact(hdr(t, "HS256", filepath.Join(f.dir, "hmac.json"), nil), hmacP, hs), status: 401, code: "unknown_key"},
	}}
}

func stringOf(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// TestAttackCritB64Zip: crit (unknown extension, b64, or even empty),
// b64 (RFC 7797 unencoded payloads) and zip in a JWS header are refused.
func TestAttackCritB64Zip(t *testing.T) {
	f := newAttackFixture(t)
	attackCritB64Zip(t, f).run(t, f, "HMAC provider")
}

func attackCritB64Zip(t testing.TB, f *attackFixture) attackTable {
	claims := f.payload(t, f.iss, nil)
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	// RFC 7797: with b64 false the signing input is the raw payload.
	unencoded := func(header string) string {
		h := b64url([]byte(header))
		sig := rs([]byte(h + "." + claims))
		return h + "." + b64url([]byte(claims)) + "." + b64url(sig)
	}
	hmacP := f.payload(t, f.hmacIss, nil)
	hs := signHS(f.hs.hmac, crypto.SHA256)
	return attackTable{main: []attackCase{
		{name: "crit with an unknown extension", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"crit": []string{"x-unknown"}, "x-unknown": true}), claims, rs), status: 401, code: "malformed"},
		{name: "crit naming a registered claim", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"crit": []string{"exp"}, "exp": 1}), claims, rs), status: 401, code: "malformed"},
		{name: "crit empty array", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"crit": []string{}}), claims, rs), status: 401, code: "malformed"},
		{name: "crit as a string", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"crit": "b64"}), claims, rs), status: 401, code: "malformed"},
		{name: "crit b64 with b64 false, signed as RFC 7797", token: unencoded(hdr(t, "RS256", "rsa-1", map[string]any{"crit": []string{"b64"}, "b64": false})), status: 401, code: "malformed"},
		{name: "crit b64 with b64 false, signed over the encoded payload", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"crit": []string{"b64"}, "b64": false}), claims, rs), status: 401, code: "malformed"},
		{name: "b64 false without crit", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"b64": false}), claims, rs), status: 401, code: "malformed"},
		{name: "b64 true", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"b64": true}), claims, rs), status: 401, code: "malformed"},
		{name: "zip DEF", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"zip": "DEF"}), claims, rs), status: 401, code: "malformed"},
		{name: "zip DEF over a deflated payload", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"zip": "DEF"}), deflate(t, claims), rs), status: 401, code: "malformed"},
		{name: "zip unknown value", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"zip": "GZIP"}), claims, rs), status: 401, code: "malformed"},
	}, hmac: []attackCase{
		{name: "zip DEF", token: compact(hdr(t, "HS256", f.hs.kid, map[string]any{"zip": "DEF"}), hmacP, hs), status: 401, code: "malformed"},
		{name: "crit b64 with b64 false", token: compact(hdr(t, "HS256", f.hs.kid, map[string]any{"crit": []string{"b64"}, "b64": false}), hmacP, hs), status: 401, code: "malformed"},
	}}
}

// deflate compresses s with DEFLATE (RFC 1951), as zip DEF would.
func deflate(t testing.TB, s string) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte(s))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// TestAttackSerializations: JWE (five segments), JWS JSON serialization
// (general and flattened), several signatures, and nested JWTs (cty JWT)
// are refused where a compact, plainly signed JWT is expected.
func TestAttackSerializations(t *testing.T) {
	f := newAttackFixture(t)
	runAttackCases(t, f.h, attackSerializations(t, f).main)
}

func attackSerializations(t testing.TB, f *attackFixture) attackTable {
	claims := f.payload(t, f.iss, nil)
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	valid := f.rsa.sign(t, f.claims(f.iss), nil)

	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.RSA_OAEP_256, Key: f.rsaPriv().Public()},
		(&jose.EncrypterOptions{}).WithContentType("JWT").WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	encrypt := func(plaintext string) string {
		obj, err := enc.Encrypt([]byte(plaintext))
		if err != nil {
			t.Fatal(err)
		}
		s, err := obj.CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	jwe := encrypt(claims)
	nestedJWE := encrypt(valid)

	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: f.rsaPriv()},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "rsa-1"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign([]byte(claims))
	if err != nil {
		t.Fatal(err)
	}
	general := obj.FullSerialize()
	vp := strings.Split(valid, ".")
	flattened := mustJSON(t, map[string]string{"protected": vp[0], "payload": vp[1], "signature": vp[2]})
	multi, err := jose.NewMultiSigner([]jose.SigningKey{
		{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: f.rsaPriv(), KeyID: "rsa-1"}},
		{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: f.ecPriv(), KeyID: "ec-1"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mobj, err := multi.Sign([]byte(claims))
	if err != nil {
		t.Fatal(err)
	}
	several := mobj.FullSerialize()
	// Compact-looking: two signatures glued as extra segments.
	ev := strings.Split(f.ec.sign(t, f.claims(f.iss), nil), ".")
	glued := valid + "." + ev[0] + "." + ev[2]

	return attackTable{main: []attackCase{
		{name: "JWE compact five segments", token: jwe, status: 401, code: "malformed"},
		{name: "JWE wrapping a valid signed JWT", token: nestedJWE, status: 401, code: "malformed"},
		{name: "five segments with empty encrypted key", token: vp[0] + "..AAAA." + vp[1] + "." + vp[2], status: 401, code: "malformed"},
		// The JSON serializations are one token that is not a compact JWS:
		// 401 malformed (a space inside would make it two tokens: 400).
		{name: "JWS JSON general serialization", token: general, status: 401, code: "malformed", direct: "malformed"},
		{name: "JWS JSON flattened serialization", token: flattened, status: 401, code: "malformed", direct: "malformed"},
		{name: "JWS JSON with two signatures", token: several, status: 401, code: "malformed", direct: "malformed"},
		{name: "JWS JSON base64url-wrapped", token: b64url([]byte(general)), status: 401, code: "malformed"},
		{name: "two compact signatures glued", token: glued, status: 401, code: "malformed"},
		{name: "nested JWT cty JWT", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"cty": "JWT"}), valid, rs), status: 401, code: "malformed"},
		{name: "nested JWT cty jwt lower case", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"cty": "jwt"}), valid, rs), status: 401, code: "malformed"},
		{name: "nested JWT cty application/jwt", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"cty": "application/jwt"}), valid, rs), status: 401, code: "malformed"},
		{name: "cty JWT over plain claims", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"cty": "JWT"}), claims, rs), status: 401, code: "malformed"},
		{name: "cty not a string", token: compact(hdr(t, "RS256", "rsa-1", map[string]any{"cty": 1}), claims, rs), status: 401, code: "malformed"},
		{name: "payload is a JWT without cty", token: compact(hdr(t, "RS256", "rsa-1", nil), valid, rs), status: 401, code: "malformed"},
	}}
}

// TestAttackMalformedEncodings: padding, characters outside base64url,
// white space inside, headers or payloads that are not JSON objects,
// trailing garbage, extra dots and huge segment counts are refused. A
// token over max_token_size is refused before it is decoded, without
// allocating.
func TestAttackMalformedEncodings(t *testing.T) {
	f := newAttackFixture(t)
	runAttackCases(t, f.h, attackMalformedEncodings(t, f).main)

	over := overMaxTokenSize(f.h)
	t.Run("over max_token_size refused before decoding", func(t *testing.T) {
		ctx, now := context.Background(), time.Now()
		allocs, bytes := measureAllocs(100, func() {
			if _, _, _, aerr := f.h.verifier.verify(ctx, over, now); aerr == nil || aerr.reason != reasonMalformed {
				panic("oversized token not refused as malformed")
			}
		})
		if allocs > 0 || bytes > 0 {
			t.Errorf("refusing a %d-byte token allocated %.1f times / %.0f bytes per call, want none", len(over), allocs, bytes)
		}
	})
}

// overMaxTokenSize is a token of three segments, one byte over h's
// max_token_size.
func overMaxTokenSize(h *Handler) string {
	return strings.Repeat("a", 6000) + "." + strings.Repeat("b", 6000) + "." + strings.Repeat("c", h.MaxTokenSize-12000-1)
}

func attackMalformedEncodings(t testing.TB, f *attackFixture) attackTable {
	claims := f.payload(t, f.iss, nil)
	h0 := hdr(t, "RS256", "rsa-1", nil)
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	valid := compact(h0, claims, rs)
	v := strings.Split(valid, ".")
	signed := func(header, payload string) string { return compact(header, payload, rs) }
	// White space or control characters inside make the header hold
	// several tokens or a folded line: 400 invalid_request. Any other
	// character outside base64url is one malformed token: 401. The
	// verifier on its own refuses both as malformed.
	header400 := func(name, token string) attackCase {
		return attackCase{name: name, token: token, status: 400, code: "invalid_request", direct: "malformed"}
	}
	malformed401 := func(name, token string) attackCase {
		return attackCase{name: name, token: token, status: 401, code: "malformed", direct: "malformed"}
	}
	// A last character with stray low bits decodes to the same bytes as
	// the canonical one: refused, so each token has exactly one spelling.
	lastSig := v[2][len(v[2])-1]
	strayBits := string(rune(lastSig))
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		if byte(c) != lastSig && b64urlValue[byte(c)]&^0x03 == b64urlValue[lastSig]&^0x03 {
			strayBits = string(c)
			break
		}
	}
	over := overMaxTokenSize(f.h)

	return attackTable{main: []attackCase{
		{name: "padding at the end", token: valid + "==", status: 401, code: "malformed"},
		malformed401("padding on every segment", v[0]+"=."+v[1]+"=."+v[2]+"="),
		malformed401("padding inside the header segment", v[0][:4]+"="+v[0][4:]+"."+v[1]+"."+v[2]),
		malformed401("signature spelled with stray bits in its last character", v[0]+"."+v[1]+"."+v[2][:len(v[2])-1]+strayBits),
		{name: "standard base64 alphabet + and /", token: v[0] + "." + v[1] + "." + "ab+/" + v[2], status: 401, code: "malformed"},
		{name: "tilde", token: v[0] + "." + v[1] + "~." + v[2], status: 401, code: "malformed"},
		malformed401("percent-encoded dot", v[0]+"%2E"+v[1]+"."+v[2]),
		header400("space inside", v[0]+"."+v[1][:10]+" "+v[1][10:]+"."+v[2]),
		header400("tab inside", v[0]+"."+v[1][:10]+"\t"+v[1][10:]+"."+v[2]),
		header400("CR LF inside (Go's base64 skips them)", v[0]+"."+v[1][:10]+"\r\n"+v[1][10:]+"."+v[2]),
		header400("LF inside", v[0]+"\n."+v[1]+"."+v[2]),
		header400("NUL inside", v[0]+"."+v[1]+"\x00."+v[2]),
		malformed401("non-ASCII letter", v[0]+"."+v[1]+"é."+v[2]),
		{name: "header is an array", token: signed(`["RS256"]`, claims), status: 401, code: "malformed"},
		{name: "header is a string", token: signed(`"RS256"`, claims), status: 401, code: "malformed"},
		{name: "header is null", token: signed(`null`, claims), status: 401, code: "malformed"},
		{name: "header is a number", token: signed(`256`, claims), status: 401, code: "malformed"},
		{name: "header is truncated JSON", token: signed(`{"alg":"RS256","kid":"rsa-1"`, claims), status: 401, code: "malformed"},
		{name: "header is not JSON", token: signed(`alg=RS256`, claims), status: 401, code: "malformed"},
		{name: "header with trailing garbage", token: signed(h0+`garbage`, claims), status: 401, code: "malformed"},
		{name: "header with a second object", token: signed(h0+`{"alg":"none"}`, claims), status: 401, code: "malformed"},
		{name: "payload is an array", token: signed(h0, `[`+claims+`]`), status: 401, code: "malformed"},
		{name: "payload is a string", token: signed(h0, `"claims"`), status: 401, code: "malformed"},
		{name: "payload is a number", token: signed(h0, `42`), status: 401, code: "malformed"},
		{name: "payload is null", token: signed(h0, `null`), status: 401, code: "malformed"},
		{name: "payload is true", token: signed(h0, `true`), status: 401, code: "malformed"},
		{name: "payload is empty", token: signed(h0, ``), status: 401, code: "malformed"},
		{name: "payload is truncated JSON", token: signed(h0, claims[:len(claims)-1]), status: 401, code: "malformed"},
		{name: "payload with trailing garbage", token: signed(h0, claims+`garbage`), status: 401, code: "malformed"},
		{name: "payload with a second object", token: signed(h0, claims+`{"exp":0}`), status: 401, code: "malformed"},
		{name: "payload with a byte order mark", token: signed(h0, "\ufeff"+claims), status: 401, code: "malformed"},
		{name: "trailing garbage after the signature", token: valid + "AA", status: 401, code: "bad_signature"},
		{name: "trailing dot", token: valid + ".", status: 401, code: "malformed"},
		{name: "four segments", token: valid + ".AAAA", status: 401, code: "malformed"},
		{name: "leading dot", token: "." + valid, status: 401, code: "malformed"},
		{name: "empty header segment", token: "." + v[1] + "." + v[2], status: 401, code: "malformed"},
		{name: "empty payload segment", token: v[0] + ".." + v[2], status: 401, code: "malformed"},
		{name: "only dots", token: "..", status: 401, code: "malformed"},
		{name: "ten thousand dots", token: strings.Repeat(".", 10000), status: 401, code: "malformed"},
		{name: "five thousand segments", token: strings.Repeat("ab.", 5000) + "ab", status: 401, code: "malformed"},
		{name: "impossible base64 length", token: "x." + v[1] + "." + v[2], status: 401, code: "malformed"},
		{name: "one segment", token: v[0], status: 401, code: "malformed"},
		{name: "over max_token_size", token: over, status: 401, code: "malformed"},
	}}
}

// TestAttackDuplicateKeys: duplicate members in the header or the claims
// JSON are refused, never resolved first-wins or last-wins; members that
// differ only by case are different members.
func TestAttackDuplicateKeys(t *testing.T) {
	f := newAttackFixture(t)
	runAttackCases(t, f.h, attackDuplicateKeys(t, f).main)
}

func attackDuplicateKeys(t testing.TB, f *attackFixture) attackTable {
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	claims := f.payload(t, f.iss, nil)
	now := f.now.Unix()
	past, future := now-3600, now+3600
	audJSON := mustJSON(t, f.aud)
	body := func(members string) string {
		return `{` + members + `,"aud":` + audJSON + `,"sub":"user-42","iat":` + itoa(int(now)) + `}`
	}
	issJSON := mustJSON(t, f.iss)
	return attackTable{main: []attackCase{
		{name: "header alg none then RS256", token: compact(`{"alg":"none","alg":"RS256","kid":"rsa-1"}`, claims, rs), status: 401, code: "malformed"},
		{name: "header alg RS256 then none", token: compact(`{"alg":"RS256","alg":"none","kid":"rsa-1"}`, claims, rs), status: 401, code: "malformed"},
		{name: "header alg RS256 twice", token: compact(`{"alg":"RS256","alg":"RS256","kid":"rsa-1"}`, claims, rs), status: 401, code: "malformed"},
		{name: "header kid twice", token: compact(`{"alg":"RS256","kid":"other","kid":"rsa-1"}`, claims, rs), status: 401, code: "malformed"},
		{name: "header typ twice", token: compact(`{"alg":"RS256","kid":"rsa-1","typ":"JWT","typ":"at+jwt"}`, claims, rs), status: 401, code: "malformed"},
		{name: "header alg twice, second escaped", token: compact(`{"alg":"none","\u0061lg":"RS256","kid":"rsa-1"}`, claims, rs), status: 401, code: "malformed"},
		{name: "claims iss twice", token: compact(`{"alg":"RS256","kid":"rsa-1"}`, body(`"iss":"https://evil.example","iss":`+issJSON+`,"exp":`+itoa(int(future))), rs), status: 401, code: "malformed"},
		{name: "claims iss twice, same value", token: compact(`{"alg":"RS256","kid":"rsa-1"}`, body(`"iss":`+issJSON+`,"iss":`+issJSON+`,"exp":`+itoa(int(future))), rs), status: 401, code: "malformed"},
		{name: "claims aud twice", token: compact(`{"alg":"RS256","kid":"rsa-1"}`, `{"iss":`+issJSON+`,"aud":"other","aud":`+audJSON+`,"exp":`+itoa(int(future))+`}`, rs), status: 401, code: "malformed"},
		{name: "claims exp twice, past then future", token: compact(`{"alg":"RS256","kid":"rsa-1"}`, body(`"iss":`+issJSON+`,"exp":`+itoa(int(past))+`,"exp":`+itoa(int(future))), rs), status: 401, code: "malformed"},
		{name: "claims exp twice, future then past", token: compact(`{"alg":"RS256","kid":"rsa-1"}`, body(`"iss":`+issJSON+`,"exp":`+itoa(int(future))+`,"exp":`+itoa(int(past))), rs), status: 401, code: "malformed"},
		{name: "claims sub twice", token: compact(`{"alg":"RS256","kid":"rsa-1"}`, `{"iss":`+issJSON+`,"aud":`+audJSON+`,"sub":"a","sub":"admin","exp":`+itoa(int(future))+`}`, rs), status: 401, code: "malformed"},
		{name: "claims exp twice, second escaped", token: compact(`{"alg":"RS256","kid":"rsa-1"}`, body(`"iss":`+issJSON+`,"exp":`+itoa(int(past))+`,"\u0065xp":`+itoa(int(future))), rs), status: 401, code: "malformed"},
		// Case-sensitive: EXP is not exp (encoding/json would let the
		// later EXP overwrite exp).
		{name: "claims exp past and EXP future", token: compact(`{"alg":"RS256","kid":"rsa-1"}`, body(`"iss":`+issJSON+`,"exp":`+itoa(int(past))+`,"EXP":`+itoa(int(future))), rs), status: 401, code: "expired"},
		{name: "claims ISS only", token: compact(`{"alg":"RS256","kid":"rsa-1"}`, body(`"ISS":`+issJSON+`,"exp":`+itoa(int(future))), rs), status: 401, code: "missing_claim"},
		{name: "header ALG only", token: compact(`{"ALG":"RS256","kid":"rsa-1"}`, claims, rs), status: 401, code: "bad_algorithm"},
		{name: "duplicate inside a nested claim object", token: compact(`{"alg":"RS256","kid":"rsa-1"}`, body(`"iss":`+issJSON+`,"exp":`+itoa(int(future))+`,"realm_access":{"roles":["user"],"roles":["admin"]}`), rs), status: 401, code: "malformed"},
	}}
}

// TestAttackClaimTypeConfusion: aud as a number, object or array of
// non-strings; exp/nbf/iat as strings, negative, NaN-like or beyond int64;
// iss differing by case, trailing slash or white space: all refused.
func TestAttackClaimTypeConfusion(t *testing.T) {
	f := newAttackFixture(t)
	runAttackCases(t, f.h, attackClaimTypeConfusion(t, f).main)
}

func attackClaimTypeConfusion(t testing.TB, f *attackFixture) attackTable {
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	h0 := hdr(t, "RS256", "rsa-1", nil)
	future := f.now.Add(time.Hour).Unix()
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	tok := func(mods map[string]any) string { return compact(h0, f.payload(t, f.iss, mods), rs) }
	// Hand-written JSON for values encoding/json cannot produce.
	literal := func(expJSON string) string {
		return compact(h0, `{"iss":`+mustJSON(t, f.iss)+`,"aud":`+mustJSON(t, f.aud)+`,"sub":"user-42","exp":`+expJSON+`}`, rs)
	}
	upperIss := strings.ToUpper(f.iss[:len("http://")]) + f.iss[len("http://"):] // the scheme in upper case
	return attackTable{main: []attackCase{
		{name: "aud number", token: tok(map[string]any{"aud": 123}), status: 401, code: "bad_claim"},
		{name: "aud object", token: tok(map[string]any{"aud": map[string]any{f.aud: true}}), status: 401, code: "bad_claim"},
		{name: "aud array of numbers", token: tok(map[string]any{"aud": []int{1, 2}}), status: 401, code: "bad_claim"},
		{name: "aud array with the audience and a number", token: tok(map[string]any{"aud": []any{f.aud, 1}}), status: 401, code: "bad_claim"},
		{name: "aud array with the audience and null", token: tok(map[string]any{"aud": []any{f.aud, nil}}), status: 401, code: "bad_claim"},
		{name: "aud nested array", token: tok(map[string]any{"aud": [][]string{{f.aud}}}), status: 401, code: "bad_claim"},
		{name: "aud null", token: tok(map[string]any{"aud": raw("null")}), status: 401, code: "bad_claim"},
		{name: "aud true", token: tok(map[string]any{"aud": true}), status: 401, code: "bad_claim"},
		{name: "aud empty array", token: tok(map[string]any{"aud": []string{}}), status: 401, code: "bad_audience"},
		{name: "aud differing by case", token: tok(map[string]any{"aud": strings.ToUpper(f.aud)}), status: 401, code: "bad_audience"},
		{name: "aud missing", token: tok(map[string]any{"aud": nil}), status: 401, code: "missing_claim"},
		{name: "exp string of digits", token: tok(map[string]any{"exp": itoa(int(future))}), status: 401, code: "bad_claim"},
		{name: "exp negative", token: tok(map[string]any{"exp": -1}), status: 401, code: "bad_claim"},
		{name: "exp negative zero", token: literal(`-0`), status: 401, code: "bad_claim"},
		{name: "exp string NaN", token: tok(map[string]any{"exp": "NaN"}), status: 401, code: "bad_claim"},
		{name: "exp string Infinity", token: tok(map[string]any{"exp": "Infinity"}), status: 401, code: "bad_claim"},
		{name: "exp literal NaN (invalid JSON)", token: literal(`NaN`), status: 401, code: "malformed"},
		{name: "exp literal Infinity (invalid JSON)", token: literal(`Infinity`), status: 401, code: "malformed"},
		{name: "exp 1e400 overflows float64", token: literal(`1e400`), status: 401, code: "bad_claim"},
		{name: "exp int64 max plus one", token: literal(`9223372036854775808`), status: 401, code: "bad_claim"},
		{name: "exp int64 max", token: literal(`9223372036854775807`), status: 401, code: "bad_claim"},
		{name: "exp 1e19", token: literal(`1e19`), status: 401, code: "bad_claim"},
		{name: "exp 100 digits", token: literal(strings.Repeat("9", 100)), status: 401, code: "bad_claim"},
		{name: "exp true", token: tok(map[string]any{"exp": true}), status: 401, code: "bad_claim"},
		{name: "exp object", token: tok(map[string]any{"exp": map[string]int64{"value": future}}), status: 401, code: "bad_claim"},
		{name: "exp array", token: tok(map[string]any{"exp": []int64{future}}), status: 401, code: "bad_claim"},
		{name: "exp zero", token: tok(map[string]any{"exp": 0}), status: 401, code: "expired"},
		{name: "nbf string", token: tok(map[string]any{"nbf": itoa(int(f.now.Unix()))}), status: 401, code: "bad_claim"},
		{name: "nbf negative", token: tok(map[string]any{"nbf": -1}), status: 401, code: "bad_claim"},
		{name: "nbf int64 max plus one", token: tok(map[string]any{"nbf": raw("9223372036854775808")}), status: 401, code: "bad_claim"},
		{name: "nbf 1e400", token: tok(map[string]any{"nbf": raw("1e400")}), status: 401, code: "bad_claim"},
		{name: "nbf null", token: tok(map[string]any{"nbf": raw("null")}), status: 401, code: "bad_claim"},
		{name: "iat string", token: tok(map[string]any{"iat": itoa(int(f.now.Unix()))}), status: 401, code: "bad_claim"},
		{name: "iat negative", token: tok(map[string]any{"iat": -1}), status: 401, code: "bad_claim"},
		{name: "iat int64 max plus one", token: tok(map[string]any{"iat": raw("9223372036854775808")}), status: 401, code: "bad_claim"},
		{name: "iat boolean", token: tok(map[string]any{"iat": false}), status: 401, code: "bad_claim"},
		{name: "iss differing by case", token: tok(map[string]any{"iss": upperIss}), status: 401, code: "unknown_issuer"},
		{name: "iss with trailing slash", token: tok(map[string]any{"iss": f.iss + "/"}), status: 401, code: "unknown_issuer"},
		{name: "iss with leading space", token: tok(map[string]any{"iss": " " + f.iss}), status: 401, code: "unknown_issuer"},
		{name: "iss with trailing space", token: tok(map[string]any{"iss": f.iss + " "}), status: 401, code: "unknown_issuer"},
		{name: "iss with trailing newline", token: tok(map[string]any{"iss": f.iss + "\n"}), status: 401, code: "unknown_issuer"},
		{name: "iss with trailing NUL", token: tok(map[string]any{"iss": f.iss + "\x00"}), status: 401, code: "unknown_issuer"},
		{name: "iss number", token: tok(map[string]any{"iss": 1}), status: 401, code: "bad_claim"},
		{name: "iss array", token: tok(map[string]any{"iss": []string{f.iss}}), status: 401, code: "bad_claim"},
		{name: "iss object", token: tok(map[string]any{"iss": map[string]string{"iss": f.iss}}), status: 401, code: "bad_claim"},
		{name: "iss null", token: tok(map[string]any{"iss": raw("null")}), status: 401, code: "bad_claim"},
		{name: "iss missing", token: tok(map[string]any{"iss": nil}), status: 401, code: "missing_claim"},
		{name: "sub number", token: tok(map[string]any{"sub": 42}), status: 401, code: "bad_claim"},
		{name: "sub object", token: tok(map[string]any{"sub": map[string]string{"id": "admin"}}), status: 401, code: "bad_claim"},
		{name: "sub array", token: tok(map[string]any{"sub": []string{"admin"}}), status: 401, code: "bad_claim"},
	}}
}

// TestAttackTimeBoundaries: with a 30s leeway, a token expired 1s beyond
// the leeway, not valid for 1s beyond it, issued in the future, or without
// exp is refused; the tokens just inside the leeway are accepted. An
// expired token or a foreign iss never causes a key fetch.
func TestAttackTimeBoundaries(t *testing.T) {
	f := newAttackFixture(t)
	f.h.verifier.now = func() time.Time { return f.now }
	runAttackCases(t, f.h, attackTimeBoundaries(t, f).main)

	// Cheap checks first: allow a kid-triggered refresh, then show that an
	// expired token or a token of an unknown issuer with an unknown kid
	// does not use it, while a valid token with an unknown kid does.
	t.Run("no fetch for expired or foreign tokens", func(t *testing.T) {
		cases := attackNoFetchBeforeKeys(t, f).main
		refused, control := cases[:len(cases)-1], cases[len(cases)-1:]
		advanceCacheClock(t, f.h, f.iss, 2*time.Minute)
		before := f.idp.jwksHits.Load()
		runAttackCases(t, f.h, refused)
		if n := f.idp.jwksHits.Load() - before; n != 0 {
			t.Errorf("refused-before-keys tokens caused %d JWKS fetches, want 0", n)
		}
		runAttackCases(t, f.h, control)
		if n := f.idp.jwksHits.Load() - before; n != 1 {
			t.Errorf("control: a valid token with an unknown kid caused %d JWKS fetches, want 1", n)
		}
	})
}

// attackTimeBoundaries: exp, nbf and iat just inside and just outside the
// main provider's leeway, at f.now; and the rs-only provider, which keeps
// the default 60s leeway (leeway is per provider).
func attackTimeBoundaries(t testing.TB, f *attackFixture) attackTable {
	now := f.now
	leeway := time.Duration(f.leeway)
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	h0 := hdr(t, "RS256", "rsa-1", nil)
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	tok := func(mods map[string]any) string {
		c := map[string]any{"iss": f.iss, "aud": f.aud, "sub": "user-42", "iat": now.Unix(), "nbf": now.Unix(), "exp": at(time.Hour)}
		for k, v := range mods {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return compact(h0, mustJSON(t, c), rs)
	}
	rsOnlyTok := func(exp int64) string {
		return compact(h0, mustJSON(t, map[string]any{"iss": f.rsOnlyIss, "aud": f.aud, "exp": exp}), rs)
	}
	return attackTable{main: []attackCase{
		{name: "exp leeway+1s ago", token: tok(map[string]any{"exp": at(-leeway - time.Second), "iat": at(-time.Hour), "nbf": at(-time.Hour)}), status: 401, code: "expired"},
		{name: "exp fractional leeway+0.5s ago", token: tok(map[string]any{"exp": json.RawMessage(itoa(int(at(-leeway-time.Second))) + ".5"), "iat": at(-time.Hour), "nbf": at(-time.Hour)}), status: 401, code: "expired"},
		{name: "exp leeway-1s ago accepted", token: tok(map[string]any{"exp": at(-leeway + time.Second), "iat": at(-time.Hour), "nbf": at(-time.Hour)}), status: 200},
		{name: "exp 1s ago accepted within leeway", token: tok(map[string]any{"exp": at(-time.Second), "iat": at(-time.Hour), "nbf": at(-time.Hour)}), status: 200},
		{name: "nbf leeway+1s ahead", token: tok(map[string]any{"nbf": at(leeway + time.Second)}), status: 401, code: "not_yet_valid"},
		{name: "nbf leeway ahead accepted", token: tok(map[string]any{"nbf": at(leeway)}), status: 200},
		{name: "nbf leeway-1s ahead accepted", token: tok(map[string]any{"nbf": at(leeway - time.Second)}), status: 200},
		{name: "iat leeway+1s ahead", token: tok(map[string]any{"iat": at(leeway + time.Second)}), status: 401, code: "not_yet_valid"},
		{name: "iat a day ahead", token: tok(map[string]any{"iat": at(24 * time.Hour)}), status: 401, code: "not_yet_valid"},
		{name: "iat leeway ahead accepted", token: tok(map[string]any{"iat": at(leeway)}), status: 200},
		{name: "exp missing", token: tok(map[string]any{"exp": nil}), status: 401, code: "missing_claim"},
		{name: "exp null", token: tok(map[string]any{"exp": json.RawMessage("null")}), status: 401, code: "missing_claim"},
		{name: "exp missing, nbf and iat missing", token: tok(map[string]any{"exp": nil, "nbf": nil, "iat": nil}), status: 401, code: "missing_claim"},
		{name: "exp past and nbf future", token: tok(map[string]any{"exp": at(-time.Hour), "nbf": at(time.Hour)}), status: 401, code: "expired"},
		{name: "default leeway: exp 61s ago", token: rsOnlyTok(at(-61 * time.Second)), status: 401, code: "expired"},
		{name: "default leeway: exp 59s ago accepted", token: rsOnlyTok(at(-59 * time.Second)), status: 200},
	}}
}

// attackNoFetchBeforeKeys: tokens with an unknown kid that are refused on
// cheaper grounds (expired, foreign issuer, wrong audience), then the
// control: a valid token with an unknown kid, the last case.
func attackNoFetchBeforeKeys(t testing.TB, f *attackFixture) attackTable {
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	at := func(d time.Duration) int64 { return f.now.Add(d).Unix() }
	return attackTable{main: []attackCase{
		{name: "expired with unknown kid", token: compact(hdr(t, "RS256", "new-kid", nil), mustJSON(t, map[string]any{"iss": f.iss, "aud": f.aud, "exp": at(-time.Hour)}), rs), status: 401, code: "expired"},
		{name: "unknown issuer with unknown kid", token: compact(hdr(t, "RS256", "new-kid", nil), mustJSON(t, map[string]any{"iss": "https://evil.example", "aud": f.aud, "exp": at(time.Hour)}), rs), status: 401, code: "unknown_issuer"},
		{name: "wrong audience with unknown kid", token: compact(hdr(t, "RS256", "new-kid", nil), mustJSON(t, map[string]any{"iss": f.iss, "aud": "other", "exp": at(time.Hour)}), rs), status: 401, code: "bad_audience"},
		{name: "valid with unknown kid (control)", token: compact(hdr(t, "RS256", "new-kid", nil), mustJSON(t, map[string]any{"iss": f.iss, "aud": f.aud, "exp": at(time.Hour)}), rs), status: 401, code: "unknown_key"},
	}}
}

// TestAttackECDSASignatures: psychic signatures (r = s = 0,
// CVE-2022-21449 class), signatures of the wrong length or encoding, and
// zero-padded or truncated RSA signatures are refused.
func TestAttackECDSASignatures(t *testing.T) {
	f := newAttackFixture(t)
	runAttackCases(t, f.h, attackECDSASignatures(t, f).main)
}

func attackECDSASignatures(t testing.TB, f *attackFixture) attackTable {
	p := f.payload(t, f.iss, nil)
	n := elliptic.P256().Params().N
	es := signES(t, f.ecPriv(), crypto.SHA256)
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	ed := signEd(f.edPriv())
	esH := hdr(t, "ES256", "ec-1", nil)
	rsH := hdr(t, "RS256", "rsa-1", nil)
	edH := hdr(t, "EdDSA", "ed-1", nil)
	rsOf := func(r, s *big.Int) []byte {
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out
	}
	split := func(sig []byte) (*big.Int, *big.Int) {
		return new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	}
	// l is the order of the Ed25519 base point.
	l, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	return attackTable{main: []attackCase{
		{name: "ES256 r=s=0", token: compact(esH, p, fixedSig(make([]byte, 64))), status: 401, code: "bad_signature"},
		{name: "ES256 r=s=0 without kid", token: compact(hdr(t, "ES256", "", nil), p, fixedSig(make([]byte, 64))), status: 401, code: "bad_signature"},
		{name: "ES256 r=s=n", token: compact(esH, p, fixedSig(rsOf(n, n))), status: 401, code: "bad_signature"},
		{name: "ES256 r=0 valid s", token: compact(esH, p, mapSig(es, func(b []byte) []byte { _, s := split(b); return rsOf(big.NewInt(0), s) })), status: 401, code: "bad_signature"},
		{name: "ES256 valid r s=0", token: compact(esH, p, mapSig(es, func(b []byte) []byte { r, _ := split(b); return rsOf(r, big.NewInt(0)) })), status: 401, code: "bad_signature"},
		{name: "ES256 r and s swapped", token: compact(esH, p, mapSig(es, func(b []byte) []byte { return cat(b[32:], b[:32]) })), status: 401, code: "bad_signature"},
		{name: "ES256 63 bytes", token: compact(esH, p, mapSig(es, func(b []byte) []byte { return b[:63] })), status: 401, code: "bad_signature"},
		{name: "ES256 65 bytes zero-prefixed", token: compact(esH, p, mapSig(es, func(b []byte) []byte { return cat([]byte{0}, b) })), status: 401, code: "bad_signature"},
		{name: "ES256 r only", token: compact(esH, p, mapSig(es, func(b []byte) []byte { return b[:32] })), status: 401, code: "bad_signature"},
		{name: "ES256 r and s padded to 64 bytes each", token: compact(esH, p, mapSig(es, func(b []byte) []byte { return cat(make([]byte, 32), b[:32], make([]byte, 32), b[32:]) })), status: 401, code: "bad_signature"},
		{name: "ES256 ASN.1 DER signature", token: compact(esH, p, func(in []byte) []byte {
			sig, err := ecdsa.SignASN1(rand.Reader, f.ecPriv(), digest(crypto.SHA256, in))
			if err != nil {
				t.Fatal(err)
			}
			return sig
		}), status: 401, code: "bad_signature"},
		{name: "ES256 one bit flipped", token: compact(esH, p, mapSig(es, func(b []byte) []byte { b[10] ^= 1; return b })), status: 401, code: "bad_signature"},
		// High-S: (r, n-s) is the other valid ECDSA signature of the same
		// message. RFC 7518 section 3.4 does not require low-S and Go's
		// crypto/ecdsa accepts it, so our policy is to accept it as a
		// valid signature: it proves possession of the same private key
		// over the same signing input. (Signature malleability only
		// matters to systems keying on signature bytes; this module keys
		// on nothing.)
		{name: "ES256 high-S variant accepted (policy)", token: compact(esH, p, mapSig(es, func(b []byte) []byte {
			r, s := split(b)
			return rsOf(r, new(big.Int).Sub(n, s))
		})), status: 200},
		{name: "EdDSA all zero", token: compact(edH, p, fixedSig(make([]byte, 64))), status: 401, code: "bad_signature"},
		{name: "EdDSA 63 bytes", token: compact(edH, p, mapSig(ed, func(b []byte) []byte { return b[:63] })), status: 401, code: "bad_signature"},
		{name: "EdDSA non-canonical S+L", token: compact(edH, p, mapSig(ed, func(b []byte) []byte {
			le := func(x []byte) []byte { // little-endian <-> big-endian
				out := make([]byte, len(x))
				for i := range x {
					out[len(x)-1-i] = x[i]
				}
				return out
			}
			s := new(big.Int).SetBytes(le(b[32:]))
			s.Add(s, l)
			return cat(b[:32], le(s.FillBytes(make([]byte, 32))))
		})), status: 401, code: "bad_signature"},
		{name: "RS256 zero byte prepended", token: compact(rsH, p, mapSig(rs, func(b []byte) []byte { return cat([]byte{0}, b) })), status: 401, code: "bad_signature"},
		{name: "RS256 last byte removed", token: compact(rsH, p, mapSig(rs, func(b []byte) []byte { return b[:len(b)-1] })), status: 401, code: "bad_signature"},
		{name: "RS256 first byte removed", token: compact(rsH, p, mapSig(rs, func(b []byte) []byte { return b[1:] })), status: 401, code: "bad_signature"},
		{name: "RS256 all zero", token: compact(rsH, p, fixedSig(make([]byte, 256))), status: 401, code: "bad_signature"},
		{name: "RS256 signature value 1", token: compact(rsH, p, fixedSig(big.NewInt(1).FillBytes(make([]byte, 256)))), status: 401, code: "bad_signature"},
		{name: "RS256 signature plus modulus", token: compact(rsH, p, mapSig(rs, func(b []byte) []byte {
			return new(big.Int).Add(new(big.Int).SetBytes(b), f.rsaPriv().N).Bytes()
		})), status: 401, code: "bad_signature"},
		{name: "RS256 header over a PS256 signature", token: compact(rsH, p, signPS(t, f.rsaPriv(), crypto.SHA256)), status: 401, code: "bad_signature"},
		{name: "RS256 signature of another token", token: compact(rsH, p, fixedSig(rs([]byte("another signing input")))), status: 401, code: "bad_signature"},
	}}
}

// TestAttackRequireTyp: with require_typ at+jwt an ID token (typ JWT) is
// refused; at+jwt and application/at+jwt in any case are accepted when
// sub, client_id, iat and jti are present, and refused when one is
// missing.
func TestAttackRequireTyp(t *testing.T) {
	f := newAttackFixture(t)
	runAttackCases(t, f.h, attackRequireTyp(t, f).main)
}

func attackRequireTyp(t testing.TB, f *attackFixture) attackTable {
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	tok := func(typ any, mods map[string]any) string {
		c := f.atClaims()
		for k, v := range mods {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return compact(hdr(t, "RS256", "rsa-1", map[string]any{"typ": typ}), mustJSON(t, c), rs)
	}
	idToken := f.claims(f.atIss)
	idToken["nonce"] = "n-0S6_WzA2Mj"
	idToken["auth_time"] = f.now.Unix()
	return attackTable{main: []attackCase{
		{name: "ID token typ JWT", token: compact(hdr(t, "RS256", "rsa-1", nil), mustJSON(t, idToken), rs), status: 401, code: "bad_claim"},
		{name: "typ JWT with every access token claim", token: tok("JWT", nil), status: 401, code: "bad_claim"},
		{name: "typ missing", token: tok(nil, nil), status: 401, code: "bad_claim"},
		{name: "typ empty", token: tok("", nil), status: 401, code: "bad_claim"},
		// A typ that is not a string breaks RFC 7515 section 4.1.9: the
		// header is malformed, whatever the provider requires.
		{name: "typ number", token: tok(1, nil), status: 401, code: "malformed"},
		{name: "typ array", token: tok([]string{"at+jwt"}, nil), status: 401, code: "malformed"},
		{name: "typ at+jwt with trailing space", token: tok("at+jwt ", nil), status: 401, code: "bad_claim"},
		{name: "typ at+jwt with a parameter", token: tok("application/at+jwt; charset=utf-8", nil), status: 401, code: "bad_claim"},
		{name: "typ id_token+jwt", token: tok("id_token+jwt", nil), status: 401, code: "bad_claim"},
		{name: "typ at+jwt", token: tok("at+jwt", nil), status: 200},
		{name: "typ AT+JWT", token: tok("AT+JWT", nil), status: 200},
		{name: "typ At+Jwt", token: tok("At+Jwt", nil), status: 200},
		{name: "typ application/at+jwt", token: tok("application/at+jwt", nil), status: 200},
		{name: "typ Application/AT+JWT", token: tok("Application/AT+JWT", nil), status: 200},
		{name: "at+jwt without sub", token: tok("at+jwt", map[string]any{"sub": nil}), status: 401, code: "missing_claim"},
		{name: "at+jwt without client_id", token: tok("at+jwt", map[string]any{"client_id": nil}), status: 401, code: "missing_claim"},
		{name: "at+jwt without iat", token: tok("at+jwt", map[string]any{"iat": nil}), status: 401, code: "missing_claim"},
		{name: "at+jwt without jti", token: tok("at+jwt", map[string]any{"jti": nil}), status: 401, code: "missing_claim"},
		{name: "at+jwt without exp", token: tok("at+jwt", map[string]any{"exp": nil}), status: 401, code: "missing_claim"},
		{name: "at+jwt client_id number", token: tok("at+jwt", map[string]any{"client_id": 7}), status: 401, code: "bad_claim"},
		{name: "at+jwt jti object", token: tok("at+jwt", map[string]any{"jti": map[string]int{"id": 1}}), status: 401, code: "bad_claim"},
		{name: "at+jwt sub number", token: tok("at+jwt", map[string]any{"sub": 42}), status: 401, code: "bad_claim"},
		// Without require_typ, typ is not a gate: the same kind of token
		// is fine for the main provider.
		{name: "provider without require_typ accepts typ JWT", token: f.rsa.sign(t, f.claims(f.iss), nil), status: 200},
	}}
}

// TestAttackHeaderTrickery: several Authorization headers, Bearer with two
// tokens, tabs or line folding, other schemes and a 1 MB header are bad
// requests (400); a token just over max_token_size is 401 malformed; the
// large inputs are refused without large allocations.
func TestAttackHeaderTrickery(t *testing.T) {
	f := newAttackFixture(t)
	runAttackCases(t, f.h, attackHeaderTrickery(t, f).main)

	tok := f.rsa.sign(t, f.claims(f.iss), nil)
	mb := strings.Repeat("a", 1<<20)
	query := httptest.NewRequest(http.MethodGet, "http://example.test/api?access_token="+tok, nil)
	form := httptest.NewRequest(http.MethodPost, "http://example.test/api", strings.NewReader("access_token="+tok))
	form.Header.Set("Content-Type", "application/x-www-form-urlencoded")

	// With missing_token_status 401 a request without token answers 401;
	// malformed headers (tabs, line folding, several tokens) must still be
	// 400 invalid_request, not mistaken for a missing token.
	t.Run("missing_token_status 401", func(t *testing.T) {
		h := provisionHandler(t, &Handler{MissingTokenStatus: 401, Providers: map[string]*Provider{"main": f.mainProvider()}})
		waitForKeys(t, h)
		runAttackCases(t, h, []attackCase{
			{name: "tab after Bearer", auth: []string{"Bearer\t" + tok}, status: 400, code: "invalid_request"},
			{name: "line folding after Bearer", auth: []string{"Bearer\r\n " + tok}, status: 400, code: "invalid_request"},
			{name: "Bearer with two tokens", auth: []string{"Bearer a b"}, status: 400, code: "invalid_request"},
			{name: "two Authorization headers", auth: []string{"Bearer " + tok, "Bearer " + tok}, status: 400, code: "invalid_request"},
			{name: "Basic scheme", auth: []string{"Basic xyz"}, status: 401, code: "missing_token"},
		})
	})

	t.Run("token only in the query string", func(t *testing.T) {
		expectReason(t, serve(t, f.h, query), 400, "missing_token")
	})
	t.Run("token only in a form body", func(t *testing.T) {
		expectReason(t, serve(t, f.h, form), 400, "missing_token")
	})

	// max_token_size is exact: a token of exactly that size passes the
	// size check, one byte more does not.
	t.Run("max_token_size boundary", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			max    int
			status int
			code   string
		}{
			{"token of exactly max_token_size accepted", len(tok), 200, ""},
			{"token one byte over max_token_size", len(tok) - 1, 401, "malformed"},
		} {
			t.Run(c.name, func(t *testing.T) {
				h := provisionHandler(t, &Handler{MaxTokenSize: c.max, Providers: map[string]*Provider{
					"main": {Issuer: f.iss, Audiences: []string{attackAud}, JWKSURI: f.idp.url() + "/jwks", Leeway: &f.leeway},
				}})
				waitForKeys(t, h)
				expectReason(t, serve(t, h, bearer(tok)), c.status, c.code)
			})
		}
	})

	t.Run("allocations", func(t *testing.T) {
		huge := http.Header{"Authorization": {"Bearer " + mb}}
		overTok := tok + strings.Repeat("A", f.h.MaxTokenSize-len(tok)+1)
		ctx, now := context.Background(), time.Now()
		for _, c := range []struct {
			name      string
			fn        func()
			maxAllocs float64
			maxBytes  float64
		}{
			{"bearerToken refuses a 1 MB header", func() {
				if _, aerr := bearerToken(huge, f.h.MaxTokenSize); aerr == nil || aerr.reason != reasonInvalidRequest {
					panic("1 MB header not refused")
				}
			}, 0, 0},
			{"verify refuses a token over max_token_size", func() {
				if _, _, _, aerr := f.h.verifier.verify(ctx, overTok, now); aerr == nil || aerr.reason != reasonMalformed {
					panic("oversized token not refused")
				}
			}, 0, 0},
		} {
			t.Run(c.name, func(t *testing.T) {
				allocs, bytes := measureAllocs(200, c.fn)
				if allocs > c.maxAllocs || bytes > c.maxBytes {
					t.Errorf("%.1f allocations / %.0f bytes per call, want at most %.0f / %.0f", allocs, bytes, c.maxAllocs, c.maxBytes)
				}
			})
		}
		// The whole ServeHTTP rejection of a 1 MB header: a handful of
		// small allocations (the challenge header, the placeholder and
		// Caddy's HandlerError), never a copy of the header.
		for _, c := range []struct {
			name   string
			header string
		}{
			{"ServeHTTP refuses a 1 MB header", "Bearer " + mb},
			{"ServeHTTP refuses a token over max_token_size", "Bearer " + overTok},
		} {
			t.Run(c.name, func(t *testing.T) {
				req := httptest.NewRequest(http.MethodGet, "http://example.test/api", nil)
				req.Header.Set("Authorization", c.header)
				w := httptest.NewRecorder()
				req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, nil)
				next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
					panic("next called on a rejected request")
				})
				allocs, bytes := measureAllocs(200, func() {
					if err := f.h.ServeHTTP(w, req, next); err == nil {
						panic("not refused")
					}
				})
				t.Logf("%.1f allocations / %.0f bytes per rejection", allocs, bytes)
				if allocs > 20 || bytes > 4096 {
					t.Errorf("%.1f allocations / %.0f bytes per rejection, want at most 20 / 4096", allocs, bytes)
				}
			})
		}
	})
}

func attackHeaderTrickery(t testing.TB, f *attackFixture) attackTable {
	tok := f.rsa.sign(t, f.claims(f.iss), nil)
	mb := strings.Repeat("a", 1<<20)
	return attackTable{main: []attackCase{
		{name: "two Authorization headers", auth: []string{"Bearer " + tok, "Bearer " + tok}, status: 400, code: "invalid_request"},
		{name: "Authorization headers Basic and Bearer", auth: []string{"Basic dXNlcjpwYXNz", "Bearer " + tok}, status: 400, code: "invalid_request"},
		{name: "Bearer with two tokens", auth: []string{"Bearer a b"}, status: 400, code: "invalid_request"},
		{name: "Bearer with two valid tokens", auth: []string{"Bearer " + tok + " " + tok}, status: 400, code: "invalid_request"},
		{name: "Bearer tokens separated by a comma", auth: []string{"Bearer " + tok + ", Bearer " + tok}, status: 400, code: "invalid_request"},
		{name: "tab after Bearer", auth: []string{"Bearer\t" + tok}, status: 400, code: "invalid_request"},
		{name: "tab after the token", auth: []string{"Bearer " + tok + "\t"}, status: 400, code: "invalid_request"},
		{name: "line folding after Bearer", auth: []string{"Bearer\r\n " + tok}, status: 400, code: "invalid_request"},
		{name: "line folding with a tab after Bearer", auth: []string{"Bearer\r\n\t" + tok}, status: 400, code: "invalid_request"},
		{name: "line folding inside the token", auth: []string{"Bearer " + tok[:20] + "\r\n " + tok[20:]}, status: 400, code: "invalid_request"},
		{name: "line feed after the token", auth: []string{"Bearer " + tok + "\n"}, status: 400, code: "invalid_request"},
		{name: "Basic scheme", auth: []string{"Basic xyz"}, status: 400, code: "missing_token"},
		{name: "Bearer alone", auth: []string{"Bearer"}, status: 400, code: "missing_token"},
		{name: "Bearer and a space", auth: []string{"Bearer "}, status: 400, code: "missing_token"},
		{name: "Bearer and spaces", auth: []string{"Bearer     "}, status: 400, code: "missing_token"},
		{name: "empty Authorization header", auth: []string{""}, status: 400, code: "missing_token"},
		{name: "Bearer glued to the token", auth: []string{"Bearer" + tok}, status: 400, code: "missing_token"},
		{name: "1 MB Bearer header", auth: []string{"Bearer " + mb}, status: 400, code: "invalid_request"},
		{name: "1 MB Basic header", auth: []string{"Basic " + mb}, status: 400, code: "invalid_request"},
		{name: "1 MB of dots", auth: []string{"Bearer " + strings.Repeat(".", 1<<20)}, status: 400, code: "invalid_request"},
		{name: "token just over max_token_size", token: tok + strings.Repeat("A", f.h.MaxTokenSize-len(tok)+1), status: 401, code: "malformed"},
	}}
}

// measureAllocs runs fn runs times (after one warm-up call) and returns
// the mean number of heap allocations and of bytes allocated per call.
// Like testing.AllocsPerRun it pins GOMAXPROCS to 1 while measuring.
func measureAllocs(runs int, fn func()) (allocs, bytes float64) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	fn()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		fn()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(runs), float64(after.TotalAlloc-before.TotalAlloc) / float64(runs)
}
