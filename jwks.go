package oauth2jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
)

// algSet is a small set of signature algorithms.
type algSet uint32

func algBit(alg jose.SignatureAlgorithm) algSet {
	for i, a := range knownAlgs {
		if a == alg {
			return 1 << i
		}
	}
	return 0
}

func (s algSet) has(alg jose.SignatureAlgorithm) bool {
	b := algBit(alg)
	return b != 0 && s&b != 0
}

func (s algSet) list() []jose.SignatureAlgorithm {
	var out []jose.SignatureAlgorithm
	for i, a := range knownAlgs {
		if s&(1<<i) != 0 {
			out = append(out, a)
		}
	}
	return out
}

// knownAlgs are the algorithms the module can verify.
var knownAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
	jose.HS256, jose.HS384, jose.HS512,
}

// defaultAlgs are the asymmetric algorithms allowed when a provider lists
// none.
var defaultAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// keyClass is the kind of a verification key, which decides the algorithms
// it may verify.
type keyClass uint8

const (
	classRSA keyClass = iota + 1
	classP256
	classP384
	classP521
	classEd25519
	classOct
)

// String names the key class as the admin API shows it.
func (c keyClass) String() string {
	switch c {
	case classRSA:
		return "RSA"
	case classP256:
		return "EC P-256"
	case classP384:
		return "EC P-384"
	case classP521:
		return "EC P-521"
	case classEd25519:
		return "OKP Ed25519"
	case classOct:
		return "oct"
	}
	return "unknown"
}

// maxKeysPerSet bounds the work a hostile or broken JWKS can cause.
const maxKeysPerSet = 100

// minRSABits is the smallest RSA modulus accepted (RFC 7518 section 3.3).
const minRSABits = 2048

// verificationKey is one usable public (or, for local files, HMAC) key.
type verificationKey struct {
	kid   string
	alg   jose.SignatureAlgorithm // the JWK's alg member; empty when absent
	class keyClass
	key   any // *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey or []byte
	// rsa is an RSA key's modulus prepared for verification once, when
	// the set is parsed (see signature.go); nil for other keys.
	rsa *rsaVerifyKey
}

// fits reports whether this key may verify a token signed with alg: the key
// type (and curve) must fit the algorithm and, when the JWK names an alg, it
// must be the token's.
func (k *verificationKey) fits(alg jose.SignatureAlgorithm) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	return algClass(alg) == k.class
}

// algorithms lists the algorithms this key may verify.
func (k *verificationKey) algorithms() []string {
	var out []string
	for _, a := range knownAlgs {
		if k.fits(a) {
			out = append(out, string(a))
		}
	}
	return out
}

// algClass returns the key class an algorithm needs.
func algClass(alg jose.SignatureAlgorithm) keyClass {
	switch alg {
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
		return classRSA
	case jose.ES256:
		return classP256
	case jose.ES384:
		return classP384
	case jose.ES512:
		return classP521
	case jose.EdDSA:
		return classEd25519
	case jose.HS256, jose.HS384, jose.HS512:
		return classOct
	}
	return 0
}

// keySet is an immutable set of keys from one successful load. It is
// swapped whole on refresh, so a removed key stops verifying at once.
type keySet struct {
	byKid map[string][]*verificationKey
	all   []*verificationKey
	// fetchedAt is when these keys were last confirmed by a successful fetch.
	fetchedAt time.Time
	// gen changes whenever the key material changes (not on a refetch of
	// the same keys); verified-token caches compare it.
	gen         uint64
	fingerprint [sha256.Size]byte
}

// candidates returns the keys that may verify a token with this kid and
// alg. found reports whether the kid is known at all (for a token without
// kid: whether the set has any key), so that callers can tell an unknown key
// from a known key that does not fit the algorithm.
func (ks *keySet) candidates(kid string, alg jose.SignatureAlgorithm, buf []*verificationKey) (out []*verificationKey, found bool) {
	out = buf[:0]
	pool := ks.all
	if kid != "" {
		var ok bool
		pool, ok = ks.byKid[kid]
		if !ok {
			return out, false
		}
	}
	for _, k := range pool {
		if k.fits(alg) {
			out = append(out, k)
		}
	}
	return out, len(pool) > 0
}

// kids lists the key ids of the set, in JWKS order.
func (ks *keySet) kids() []string {
	out := make([]string, 0, len(ks.all))
	for _, k := range ks.all {
		if k.kid != "" {
			out = append(out, k.kid)
		}
	}
	return out
}

// staticKeys is a key set loaded once from a local jwks_file.
type staticKeys struct{ set *keySet }

func (s staticKeys) keysAt(time.Time) (*keySet, *authError)        { return s.set, nil }
func (s staticKeys) refreshForKid(context.Context, string) *keySet { return nil }

// loadJWKSFile reads and parses a local JWKS file; it also returns the
// file's bytes.
func loadJWKSFile(path string, allowOct bool) (*keySet, []byte, []skippedKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBodySize+1))
	if err != nil {
		return nil, nil, nil, err
	}
	if len(data) > maxBodySize {
		return nil, nil, nil, fmt.Errorf("file larger than %d bytes", maxBodySize)
	}
	ks, skipped, err := parseJWKS(data, allowOct)
	if err != nil {
		return nil, nil, skipped, err
	}
	ks.gen = 1
	return ks, data, skipped, nil
}

// skippedKey records a JWKS entry that was not loaded, and why.
type skippedKey struct {
	kid    string
	reason string
}

// jwksDocument is the outer shape of a JWK Set (RFC 7517 section 5).
type jwksDocument struct {
	Keys []json.RawMessage `json:"keys"`
}

// jwkMembers are the members read before go-jose parses a key, to decide
// whether it should be parsed at all.
type jwkMembers struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
}

// parseJWKS decodes a JWK Set one key at a time, so that one unusable key
// never disables the rest (go-jose rejects a whole JSONWebKeySet for one
// unsupported key). Symmetric (oct) keys are only accepted when allowOct is
// set, which is the case only for local files.
func parseJWKS(data []byte, allowOct bool) (*keySet, []skippedKey, error) {
	var doc jwksDocument
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("decoding JWK set: %w", err)
	}
	if doc.Keys == nil {
		return nil, nil, errors.New(`decoding JWK set: no "keys" array`)
	}
	ks := &keySet{byKid: make(map[string][]*verificationKey)}
	var skipped []skippedKey
	h := sha256.New()
	for i, raw := range doc.Keys {
		if len(ks.all) >= maxKeysPerSet {
			skipped = append(skipped, skippedKey{reason: fmt.Sprintf("more than %d keys; %d ignored", maxKeysPerSet, len(doc.Keys)-i)})
			break
		}
		k, why := parseJWK(raw, allowOct)
		if k == nil {
			skipped = append(skipped, skippedKey{kid: why.kid, reason: why.reason})
			continue
		}
		if prev, dup := ks.byKid[k.kid]; dup && k.kid != "" {
			if !sameKey(prev[0].key, k.key) {
				skipped = append(skipped, skippedKey{kid: k.kid, reason: "duplicate kid with a different key; the first one is used"})
			}
			continue
		}
		ks.all = append(ks.all, k)
		if k.kid != "" {
			ks.byKid[k.kid] = []*verificationKey{k}
		}
		h.Write([]byte(raw))
		h.Write([]byte{0})
	}
	if len(ks.all) == 0 {
		return nil, skipped, errors.New("JWK set has no usable signing key")
	}
	h.Sum(ks.fingerprint[:0])
	return ks, skipped, nil
}

// parseJWK turns one JWK into a verification key, or says why it is skipped.
func parseJWK(raw json.RawMessage, allowOct bool) (*verificationKey, skippedKey) {
	var m jwkMembers
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, skippedKey{reason: "not a JSON object with string members: " + err.Error()}
	}
	skip := func(reason string) (*verificationKey, skippedKey) {
		return nil, skippedKey{kid: m.Kid, reason: reason}
	}
	if m.Use != "" && m.Use != "sig" {
		return skip(fmt.Sprintf("use %q is not sig", m.Use))
	}
	if m.Alg != "" && algClass(jose.SignatureAlgorithm(m.Alg)) == 0 {
		return skip(fmt.Sprintf("alg %q is not a supported signature algorithm", m.Alg))
	}
	switch m.Kty {
	case "RSA", "EC", "OKP":
	case "oct":
		if !allowOct {
			return skip("symmetric (oct) keys are only accepted from a local jwks_file")
		}
	default:
		return skip(fmt.Sprintf("unsupported kty %q", m.Kty))
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return skip("invalid key: " + err.Error())
	}
	// go-jose's Valid reports false for every symmetric key; their length
	// is checked below instead.
	if _, oct := jwk.Key.([]byte); !oct && !jwk.Valid() {
		return skip("invalid key material")
	}
	k := &verificationKey{kid: m.Kid, alg: jose.SignatureAlgorithm(m.Alg)}
	key := jwk.Key
	if !jwk.IsPublic() {
		if m.Kty != "oct" {
			// A private key in a published set is a misconfiguration on the
			// provider's side; only its public half is ever used.
			key = jwk.Public().Key
		}
	}
	switch pub := key.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return skip(fmt.Sprintf("RSA key of %d bits is under %d", pub.N.BitLen(), minRSABits))
		}
		k.class = classRSA
		k.rsa = newRSAVerifyKey(pub)
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			k.class = classP256
		case elliptic.P384():
			k.class = classP384
		case elliptic.P521():
			k.class = classP521
		default:
			return skip("unsupported EC curve")
		}
	case ed25519.PublicKey:
		k.class = classEd25519
	case []byte:
		if len(pub) < 32 {
			return skip("HMAC key shorter than 256 bits")
		}
		k.class = classOct
	default:
		return skip(fmt.Sprintf("unsupported key type %T", key))
	}
	k.key = key
	if k.alg != "" && algClass(k.alg) != k.class {
		return skip(fmt.Sprintf("alg %q does not fit the key type", m.Alg))
	}
	return k, skippedKey{}
}

// sameKey reports whether two parsed keys are the same key material.
func sameKey(a, b any) bool {
	type equaler interface{ Equal(crypto any) bool }
	switch ka := a.(type) {
	case equaler:
		return ka.Equal(b)
	case []byte:
		kb, ok := b.([]byte)
		return ok && string(ka) == string(kb)
	}
	return false
}
