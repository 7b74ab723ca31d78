package oauth2jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha256" // hashes used by the hand-made signatures
	_ "crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The test kit's keys and JWS toolkit, shared by every test: signing keys
// for each algorithm family (the fixed ones read from testdata/keys), and
// two ways to make a token: go-jose (testKey.sign) for well-formed JWTs,
// and by hand (compact, hdr and the sign* functions) for the tokens
// go-jose refuses to produce: base64url of our own header and payload
// text, signed with the standard library.

// testKeyDir holds the fixed keys (see its README.md).
const testKeyDir = "testdata/keys"

// testKey is a private signing key with its public JWK.
type testKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer // nil for HMAC
	hmac []byte
}

// public returns the key's public JWK as the IdP publishes it.
func (k *testKey) public() jose.JSONWebKey {
	if k.hmac != nil {
		return jose.JSONWebKey{Key: k.hmac, KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
	}
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// fixedKeys caches the parsed files of testKeyDir by name.
var fixedKeys sync.Map // file name -> crypto.Signer or []byte

// loadFixedKey returns the key of testdata/keys/<name>: a crypto.Signer
// for a PKCS #8 PEM file, the secret for a .jwk file (an oct JWK).
func loadFixedKey(name string) (any, error) {
	if k, ok := fixedKeys.Load(name); ok {
		return k, nil
	}
	data, err := os.ReadFile(filepath.Join(testKeyDir, name))
	if err != nil {
		return nil, fmt.Errorf("fixed test key: %w", err)
	}
	var key any
	if filepath.Ext(name) == ".jwk" {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(data); err != nil {
			return nil, fmt.Errorf("fixed test key %s: %w", name, err)
		}
		secret, ok := jwk.Key.([]byte)
		if !ok {
			return nil, fmt.Errorf("fixed test key %s: a %T, want an oct key", name, jwk.Key)
		}
		key = secret
	} else {
		block, _ := pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("fixed test key %s: no PEM block", name)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("fixed test key %s: %w", name, err)
		}
		key = k.(crypto.Signer)
	}
	k, _ := fixedKeys.LoadOrStore(name, key)
	return k, nil
}

// rsaKey returns the RSA 2048 key testdata/keys/rsa-<i>.pem: pass distinct
// i to get distinct keys. The keys are fixed because generating one takes
// tens of milliseconds.
func rsaKey(i int) *rsa.PrivateKey {
	k, err := loadFixedKey(fmt.Sprintf("rsa-%d.pem", i))
	if err != nil {
		panic(fmt.Sprintf("%v (add the key: see %s/README.md)", err, testKeyDir))
	}
	return k.(*rsa.PrivateKey)
}

// fixedKey returns the fixed key of alg's family (rsa-0, ec-p256, ed25519
// or hmac) with this kid. The fuzz corpus in testdata/fuzz is signed with
// these keys.
func fixedKey(t testing.TB, kid string, alg jose.SignatureAlgorithm) *testKey {
	t.Helper()
	k := &testKey{kid: kid, alg: alg}
	var name string
	switch algClass(alg) {
	case classRSA:
		k.priv = rsaKey(0)
		return k
	case classP256:
		name = "ec-p256.pem"
	case classEd25519:
		name = "ed25519.pem"
	case classOct:
		name = "hmac.jwk"
	default:
		t.Fatalf("no fixed key for %s", alg)
	}
	key, err := loadFixedKey(name)
	if err != nil {
		t.Fatal(err)
	}
	if secret, ok := key.([]byte); ok {
		k.hmac = append([]byte(nil), secret...)
	} else {
		k.priv = key.(crypto.Signer)
	}
	return k
}

// newTestKey makes a key for alg. RSA keys come from the fixed pool (pass
// distinct n to get distinct RSA keys); the others are generated.
func newTestKey(t testing.TB, kid string, alg jose.SignatureAlgorithm, n int) *testKey {
	t.Helper()
	k := &testKey{kid: kid, alg: alg}
	var err error
	switch algClass(alg) {
	case classRSA:
		k.priv = rsaKey(n)
	case classP256:
		k.priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case classP384:
		k.priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case classP521:
		k.priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case classEd25519:
		_, k.priv, err = ed25519.GenerateKey(rand.Reader)
	case classOct:
		k.hmac = make([]byte, 32)
		_, err = rand.Read(k.hmac)
	default:
		t.Fatalf("no key for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sign mints a compact JWS of claims with go-jose. extra header members
// are added to the protected header (typ defaults to JWT).
func (k *testKey) sign(t testing.TB, claims any, extra map[jose.HeaderKey]any) string {
	t.Helper()
	var key any = k.priv
	if k.hmac != nil {
		key = k.hmac
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if k.kid != "" {
		opts = opts.WithHeader("kid", k.kid)
	}
	for name, v := range extra {
		opts = opts.WithHeader(name, v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signer returns the hand-made signature function of the key's algorithm,
// for compact.
func (k *testKey) signer(t testing.TB) signFn {
	t.Helper()
	var h crypto.Hash
	switch k.alg {
	case jose.RS256, jose.PS256, jose.ES256, jose.HS256:
		h = crypto.SHA256
	case jose.RS384, jose.PS384, jose.ES384, jose.HS384:
		h = crypto.SHA384
	case jose.RS512, jose.PS512, jose.ES512, jose.HS512:
		h = crypto.SHA512
	}
	switch k.alg {
	case jose.RS256, jose.RS384, jose.RS512:
		return signRS(t, k.priv.(*rsa.PrivateKey), h)
	case jose.PS256, jose.PS384, jose.PS512:
		return signPS(t, k.priv.(*rsa.PrivateKey), h)
	case jose.ES256, jose.ES384, jose.ES512:
		return signES(t, k.priv.(*ecdsa.PrivateKey), h)
	case jose.EdDSA:
		return signEd(k.priv.(ed25519.PrivateKey))
	case jose.HS256, jose.HS384, jose.HS512:
		return signHS(k.hmac, h)
	}
	t.Fatalf("no hand-made signer for %s", k.alg)
	return nil
}

// ---- hand-made tokens ----

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// unb64url decodes unpadded base64url.
func unb64url(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// signFn signs a JWS signing input (ASCII(b64(header) "." b64(payload))).
type signFn func(input []byte) []byte

// compact builds b64(header).b64(payload).b64(sign(input)) from raw JSON
// text, which may be anything (duplicate keys, non-objects, ...). A nil
// sign leaves the signature segment empty.
func compact(header, payload string, sign signFn) string {
	input := b64url([]byte(header)) + "." + b64url([]byte(payload))
	if sign == nil {
		return input + "."
	}
	return input + "." + b64url(sign([]byte(input)))
}

// hdr returns a header JSON object with alg, kid (when not empty) and typ
// JWT, plus extra members (a nil value deletes the member).
func hdr(t testing.TB, alg, kid string, extra map[string]any) string {
	t.Helper()
	m := map[string]any{"alg": alg, "typ": "JWT"}
	if kid != "" {
		m["kid"] = kid
	}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	return mustJSON(t, m)
}

func digest(h crypto.Hash, in []byte) []byte {
	d := h.New()
	d.Write(in)
	return d.Sum(nil)
}

func signRS(t testing.TB, k *rsa.PrivateKey, h crypto.Hash) signFn {
	return func(in []byte) []byte {
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, h, digest(h, in))
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
}

func signPS(t testing.TB, k *rsa.PrivateKey, h crypto.Hash) signFn {
	return func(in []byte) []byte {
		sig, err := rsa.SignPSS(rand.Reader, k, h, digest(h, in), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
}

// signES returns the JWS form of an ECDSA signature: r and s as big-endian
// integers of the curve's byte size, concatenated (RFC 7518 section 3.4).
func signES(t testing.TB, k *ecdsa.PrivateKey, h crypto.Hash) signFn {
	return func(in []byte) []byte {
		r, s, err := ecdsa.Sign(rand.Reader, k, digest(h, in))
		if err != nil {
			t.Fatal(err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		out := make([]byte, 2*size)
		r.FillBytes(out[:size])
		s.FillBytes(out[size:])
		return out
	}
}

func signEd(k ed25519.PrivateKey) signFn {
	return func(in []byte) []byte { return ed25519.Sign(k, in) }
}

func signHS(secret []byte, h crypto.Hash) signFn {
	return func(in []byte) []byte {
		mac := hmac.New(h.New, secret)
		mac.Write(in)
		return mac.Sum(nil)
	}
}

// fixedSig returns sig whatever the input.
func fixedSig(sig []byte) signFn { return func([]byte) []byte { return sig } }

// mapSig signs with base and then transforms the signature.
func mapSig(base signFn, fn func([]byte) []byte) signFn {
	return func(in []byte) []byte { return fn(base(in)) }
}

// pkixPEM is the PKIX PEM ("PUBLIC KEY") of a public key.
func pkixPEM(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// writeJWKSFile writes a JWK Set of keys to dir/name and returns its path.
func writeJWKSFile(t testing.TB, dir, name string, keys ...jose.JSONWebKey) string {
	t.Helper()
	data, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
