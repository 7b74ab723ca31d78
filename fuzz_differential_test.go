package oauth2jwt

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
)

// FuzzVerifyDifferential holds the compact JWS path (jws_compact.go,
// jws_json.go, signature.go) to the answers of the go-jose path it
// replaced, kept here verbatim as the oracle (referenceVerify): for the
// same token and the same verifier, both must accept or both refuse with
// the same reason code and step, and an accepted token must give the same
// claims (provider, subject, times, payload bytes, top-level members and
// their values) and key set generation.
//
// The inputs are a token, or a header and a payload (JSON text) that the
// target signs with one of the test keys and then maybe spoils, so that
// mutated JSON reaches the signature check with a valid signature; and a
// selector: which verifier (key sets with and without kids, algs pinned
// by the JWK or not, RSA PKCS #1 v1.5 and PSS, EC P-256, P-384 and P-521,
// Ed25519, HMAC), which signing key, which change to the signature.
//
//	go test -run '^$' -fuzz '^FuzzVerifyDifferential$' -fuzztime 10m .

// diffSigner is one signing key of the differential world, with the alg
// and kid its seeds put in the header.
type diffSigner struct {
	key *testKey
	// issuer is the provider its valid seeds name.
	issuer string
}

// diffWorld is the fuzz target's fixed set-up.
type diffWorld struct {
	env       *fuzzEnv
	verifiers []*verifier
	signers   []diffSigner
}

// Fixed keys beside those of testdata/keys: P-384, P-521 and a 512-bit
// HMAC secret, derived from labels so that saved inputs stay valid.
func diffECKey(tb testing.TB, curve elliptic.Curve, label string) *ecdsa.PrivateKey {
	tb.Helper()
	sum := sha512.Sum512([]byte(label))
	size := (curve.Params().BitSize + 7) / 8
	scalar := make([]byte, size)
	// A scalar of at most 376 (P-384) or 512 (P-521) bits is below the
	// group order.
	copy(scalar[size-min(size-1, len(sum)):], sum[:min(size-1, len(sum))])
	k, err := ecdsa.ParseRawPrivateKey(curve, scalar)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func newDiffWorld(tb testing.TB) *diffWorld {
	tb.Helper()
	e := newFuzzEnv(tb)
	k := e.keys
	rsa0, rsa2 := k.rsa.priv, crypto.Signer(rsaKey(2))
	p384 := diffECKey(tb, elliptic.P384(), "FuzzVerifyDifferential P-384")
	p521 := diffECKey(tb, elliptic.P521(), "FuzzVerifyDifferential P-521")
	hmac64 := sha512.Sum512([]byte("FuzzVerifyDifferential HMAC"))

	w := &diffWorld{env: e}
	for _, s := range []struct {
		kid    string
		alg    jose.SignatureAlgorithm
		priv   any // a crypto.Signer, or an HMAC secret
		issuer string
	}{
		{"rsa-1", jose.RS256, rsa0, fuzzAsymIssuer},
		{"rsa-1", jose.RS384, rsa0, fuzzAsymIssuer},
		{"rsa-1", jose.RS512, rsa0, fuzzAsymIssuer},
		{"ps-1", jose.PS256, rsa0, fuzzAsymIssuer},
		{"ps-1", jose.PS384, rsa0, fuzzAsymIssuer},
		{"ps-1", jose.PS512, rsa0, fuzzAsymIssuer},
		{"ec-1", jose.ES256, k.ec.priv, fuzzAsymIssuer},
		{"ec384-1", jose.ES384, p384, fuzzAsymIssuer},
		{"ec521-1", jose.ES512, p521, fuzzAsymIssuer},
		{"ed-1", jose.EdDSA, k.ed.priv, fuzzAsymIssuer},
		{"hmac-1", jose.HS256, k.hmac.hmac, fuzzHMACIssuer},
		{"hmac-2", jose.HS384, hmac64[:], fuzzHMACIssuer},
		{"hmac-2", jose.HS512, hmac64[:], fuzzHMACIssuer},
		{"rsa-2", jose.RS256, rsa2, fuzzAsymIssuer},
	} {
		t := &testKey{kid: s.kid, alg: s.alg}
		if secret, ok := s.priv.([]byte); ok {
			t.hmac = secret
		} else {
			t.priv = s.priv.(crypto.Signer)
		}
		w.signers = append(w.signers, diffSigner{key: t, issuer: s.issuer})
	}

	pub := func(kid, alg string, key any) jose.JSONWebKey {
		return jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg, Use: "sig"}
	}
	rsaPub, rsa2Pub := rsa0.Public(), rsa2.Public()
	ecPub, edPub := k.ec.priv.Public(), k.ed.priv.Public()
	asymAlgs := []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
		jose.ES256, jose.ES384, jose.ES512, jose.EdDSA}
	hmacAlgs := []jose.SignatureAlgorithm{jose.HS256, jose.HS384, jose.HS512}

	// 0: the FuzzVerify world, which the attack tables were built for.
	w.verifiers = append(w.verifiers, &e.h.verifier)
	// 1: every algorithm, keys with kids and without JWK alg.
	all := []jose.JSONWebKey{
		pub("rsa-1", "", rsaPub), pub("ps-1", "", rsaPub), pub("ec-1", "", ecPub),
		pub("ec384-1", "", p384.Public()), pub("ec521-1", "", p521.Public()), pub("ed-1", "", edPub),
		pub("rsa-2", "", rsa2Pub),
	}
	octs := []jose.JSONWebKey{pub("hmac-1", "", k.hmac.hmac), pub("hmac-2", "", hmac64[:])}
	w.verifiers = append(w.verifiers, diffVerifier(tb, asymAlgs, hmacAlgs, all, octs))
	// 2: no kids: every key of the set is tried (up to
	// maxKidlessCandidates), in JWKS order; another RSA key comes first.
	var noKids, octNoKids []jose.JSONWebKey
	for _, j := range append([]jose.JSONWebKey{pub("", "", rsa2Pub)}, all...) {
		j.KeyID = ""
		noKids = append(noKids, j)
	}
	for _, j := range octs {
		j.KeyID = ""
		octNoKids = append(octNoKids, j)
	}
	w.verifiers = append(w.verifiers, diffVerifier(tb, asymAlgs, hmacAlgs, noKids, octNoKids))
	// 3: algorithms pinned by the JWKs (ps-1 only PS256, rsa-1 only
	// RS384, hmac-2 only HS512) and a provider allow-list narrower than
	// the keys.
	pinned := []jose.JSONWebKey{
		pub("rsa-1", "RS384", rsaPub), pub("ps-1", "PS256", rsaPub), pub("ec-1", "ES256", ecPub),
		pub("ec384-1", "ES384", p384.Public()), pub("ec521-1", "ES512", p521.Public()), pub("ed-1", "EdDSA", edPub),
	}
	octPinned := []jose.JSONWebKey{pub("hmac-1", "HS256", k.hmac.hmac), pub("hmac-2", "HS512", hmac64[:])}
	w.verifiers = append(w.verifiers, diffVerifier(tb,
		[]jose.SignatureAlgorithm{jose.RS384, jose.PS256, jose.ES256, jose.ES512, jose.EdDSA},
		[]jose.SignatureAlgorithm{jose.HS256, jose.HS512}, pinned, octPinned))
	return w
}

// diffVerifier builds a verifier with the providers asym (asymAlgs, the
// asym keys), at (the same, RFC 9068 access tokens) and hmac (hmacAlgs,
// the oct keys), as provision would from jwks_files.
func diffVerifier(tb testing.TB, asymAlgs, hmacAlgs []jose.SignatureAlgorithm, asym, oct []jose.JSONWebKey) *verifier {
	tb.Helper()
	set := func(keys []jose.JSONWebKey, allowOct bool) keySource {
		data, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			tb.Fatal(err)
		}
		ks, skipped, err := parseJWKS(data, allowOct)
		if err != nil || len(skipped) != 0 {
			tb.Fatalf("test JWKS: %v (skipped %v)", err, skipped)
		}
		ks.gen = 1
		return staticKeys{set: ks}
	}
	bits := func(algs []jose.SignatureAlgorithm) algSet {
		var s algSet
		for _, a := range algs {
			s |= algBit(a)
		}
		return s
	}
	asymKeys, octKeys := set(asym, false), set(oct, true)
	ps := []*provider{
		{name: "asym", issuer: fuzzAsymIssuer, algs: bits(asymAlgs), keys: asymKeys},
		{name: "at", issuer: fuzzATIssuer, algs: bits(asymAlgs), keys: asymKeys, requireAT: true},
		{name: "hmac", issuer: fuzzHMACIssuer, algs: bits(hmacAlgs), keys: octKeys},
	}
	v := &verifier{byIssuer: map[string]*provider{}, maxTokenSize: defaultMaxTokenSize, now: func() time.Time { return fuzzNow }}
	var union algSet
	for _, p := range ps {
		p.audiences = []string{fuzzAudience}
		p.leeway = fuzzLeeway
		v.byIssuer[p.issuer] = p
		union |= p.algs
	}
	v.parseAlgs = union.list()
	return v
}

// token builds the token of a header-and-payload input: signed by the
// selected key, then changed as the selector says.
func (w *diffWorld) token(t *testing.T, header, payload string, sel uint16) string {
	s := w.signers[int(sel>>4&0xf)%len(w.signers)]
	input := b64url([]byte(header)) + "." + b64url([]byte(payload))
	sig := s.key.signer(t)([]byte(input))
	switch mode := int(sel >> 8 & 0xf); {
	case mode == 4: // a flipped bit
		sig[len(sig)-1] ^= 1
	case mode == 5: // one byte short
		sig = sig[:len(sig)-1]
	case mode == 6: // one byte long
		sig = append([]byte{0}, sig...)
	case mode == 7: // the signature of another input
		sig = s.key.signer(t)([]byte(input + "x"))
	case mode >= 8:
		if priv, ok := s.key.priv.(*rsa.PrivateKey); ok {
			sig = diffRSAEncoding(t, priv, s.key.alg, []byte(input), sig, mode)
		}
	}
	return input + "." + b64url(sig)
}

// diffRSAEncoding returns, for an RSA signer, a signature whose encoded
// message (what the verifier recovers with the public key) is the valid
// one, sig's, changed where a lax verifier might not look; for PSS, modes
// 13 to 15 are valid signatures with other salt lengths (none, the
// longest, one byte).
func diffRSAEncoding(t *testing.T, priv *rsa.PrivateKey, alg jose.SignatureAlgorithm, input, sig []byte, mode int) []byte {
	h := algHash(alg)
	pss := alg == jose.PS256 || alg == jose.PS384 || alg == jose.PS512
	if pss && mode >= 13 {
		salt := map[int]int{13: 0, 14: rsa.PSSSaltLengthAuto, 15: 1}[mode]
		out, err := rsa.SignPSS(rand.Reader, priv, h, digest(h, input), &rsa.PSSOptions{SaltLength: salt})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	k := priv.Size()
	em := new(big.Int).Exp(new(big.Int).SetBytes(sig), big.NewInt(int64(priv.E)), priv.N).FillBytes(make([]byte, k))
	tLen := len(digestInfoPrefixes[h]) + h.Size()
	switch mode {
	case 8:
		em[0] ^= 0x80
	case 9:
		em[1] ^= 0x03
	case 10:
		em[k-1] ^= 0x01
	case 11:
		em[k/2] ^= 0x01
	case 12:
		if pss {
			em[k-h.Size()-2] ^= 0x01 // the salt's last byte, masked
		} else {
			em[k-tLen-1] = 0x01 // the separator before T
		}
	case 13: // DigestInfo without the NULL parameters, PS one byte longer
		prefix := digestInfoPrefixes[h]
		short := append([]byte{prefix[0], prefix[1] - 2, prefix[2], prefix[3] - 2}, prefix[4:len(prefix)-4]...)
		short = append(short, prefix[len(prefix)-2:]...)
		copy(em[k-tLen-1:], append(append([]byte{0xff, 0xff, 0x00}, short...), digest(h, input)...))
	case 14: // T one byte early, a zero after it
		copy(em[k-tLen-2:], append(em[k-tLen-1:], 0))
	case 15: // a zero inside PS
		em[5] = 0
	}
	m := new(big.Int).SetBytes(em)
	return new(big.Int).Exp(m, priv.D, priv.N).FillBytes(make([]byte, k))
}

func FuzzVerifyDifferential(f *testing.F) {
	w := newDiffWorld(f)
	for _, s := range diffSeeds(f, w) {
		f.Add(s.token, s.header, s.payload, s.sel)
	}
	f.Fuzz(func(t *testing.T, token, header, payload string, sel uint16) {
		if header != "" || payload != "" {
			token = w.token(t, header, payload, sel)
		}
		v := w.verifiers[int(sel&0xf)%len(w.verifiers)]
		if why := diffCompare(v, token); why != "" {
			t.Fatalf("the compact JWS path and go-jose disagree: %s\ntoken %q", why, token)
		}
	})
}

// diffCompare runs both paths on token and describes any disagreement.
func diffCompare(v *verifier, token string) string {
	ctx := context.Background()
	fc, fp, fgen, ferr := v.verify(ctx, token, fuzzNow)
	rc, rp, rgen, rerr := referenceVerify(v, ctx, token, fuzzNow)
	if why := diffAudience(v, token); why != "" {
		return why
	}
	switch {
	case (ferr == nil) != (rerr == nil):
		return fmt.Sprintf("fast %v, go-jose %v", ferr, rerr)
	case ferr != nil:
		if ferr.reason != rerr.reason || ferr.step != rerr.step || !sameDetail(ferr.detail, rerr.detail) {
			return fmt.Sprintf("fast refuses with %v (step %s), go-jose with %v (step %s)", ferr, ferr.step, rerr, rerr.step)
		}
		if fp != rp {
			return "the two name different providers for the refusal"
		}
		return ""
	}
	if fp != rp || fgen != rgen {
		return fmt.Sprintf("provider %q gen %d, go-jose provider %q gen %d", fp.name, fgen, rp.name, rgen)
	}
	return diffClaims(fc, rc)
}

// diffAudience compares checkAudience with go-jose's reading of aud
// (referenceCheckAudience) for every provider, whatever the rest of the
// token: both paths share checkClaims, so it is compared on its own.
func diffAudience(v *verifier, token string) string {
	pt, aerr := referenceParse(v, token)
	if aerr != nil {
		return ""
	}
	aud, ok := pt.top["aud"]
	if !ok {
		return ""
	}
	for _, p := range v.byIssuer {
		f, r := checkAudience(aud, p.audiences), referenceCheckAudience(aud, p.audiences)
		if (f == nil) != (r == nil) || f != nil && (f.reason != r.reason || f.detail != r.detail) {
			return fmt.Sprintf("aud %s for %v: %v, go-jose %v", aud, p.audiences, f, r)
		}
	}
	return ""
}

// sameDetail compares two rejection details. go-jose's path checked the
// registered header members' types in map order, so with several wrong
// members it named any one of them.
func sameDetail(fast, ref string) bool {
	const typed = "header member "
	return fast == ref || strings.HasPrefix(fast, typed) && strings.HasPrefix(ref, typed)
}

// diffClaims compares the claims of an accepted token.
func diffClaims(f, r *Claims) string {
	switch {
	case f.provider != r.provider || f.tenant != r.tenant || f.subject != r.subject:
		return fmt.Sprintf("provider/tenant/subject %q/%q/%q, go-jose %q/%q/%q", f.provider, f.tenant, f.subject, r.provider, r.tenant, r.subject)
	case !f.expiry.Equal(r.expiry) || !f.notAfter.Equal(r.notAfter) || !f.notBefore.Equal(r.notBefore):
		return fmt.Sprintf("times %v %v %v, go-jose %v %v %v", f.expiry, f.notAfter, f.notBefore, r.expiry, r.notAfter, r.notBefore)
	case !bytes.Equal(f.raw, r.raw):
		return fmt.Sprintf("payload %q, go-jose %q", f.raw, r.raw)
	case len(f.top) != len(r.top):
		return fmt.Sprintf("%d top-level members, go-jose %d", len(f.top), len(r.top))
	case f.cnf != nil || r.cnf != nil:
		return "verify set cnf"
	}
	for name, rv := range r.top {
		fv, ok := f.top[name]
		if !ok {
			return fmt.Sprintf("member %q missing", name)
		}
		if !bytes.Equal(fv, rv) {
			return fmt.Sprintf("member %q is %s, go-jose %s", name, fv, rv)
		}
		if cap(fv) != len(fv) {
			return fmt.Sprintf("member %q can be appended to in place (cap %d, len %d)", name, cap(fv), len(fv))
		}
	}
	return ""
}

// diffSeed is one seed input of FuzzVerifyDifferential.
type diffSeed struct {
	token, header, payload string
	sel                    uint16
}

// diffSel is the selector of verifier vi, signer si, signature change m.
func diffSel(vi, si, m int) uint16 { return uint16(vi | si<<4 | m<<8) }

// diffSeeds are the tokens of every attack table (as FuzzVerify seeds
// them, for verifier 0, the world they were built for) and, as header and
// payload inputs, a valid token of every signing key for every verifier,
// and JSON shapes where a decoder could read differently from go-jose.
func diffSeeds(tb testing.TB, w *diffWorld) []diffSeed {
	tb.Helper()
	var seeds []diffSeed
	seen := map[string]bool{}
	for _, tc := range allAttackCases(tb, w.env.world) {
		if tc.auth != nil {
			continue
		}
		key := tc.token
		if i := strings.LastIndexByte(key, '.'); i >= 0 && (tc.code == "bad_algorithm" || tc.code == "unknown_key") {
			key = key[:i]
		}
		if !seen[key] {
			seen[key] = true
			seeds = append(seeds, diffSeed{token: tc.token})
		}
	}
	for _, tok := range fuzzVerifyExtraSeeds(tb, w.env.world) {
		seeds = append(seeds, diffSeed{token: tok})
	}

	claims := func(iss string, mods map[string]any) string { return w.env.world.payload(tb, iss, mods) }
	for si, s := range w.signers {
		h := hdr(tb, string(s.key.alg), s.key.kid, nil)
		for vi := range w.verifiers {
			seeds = append(seeds, diffSeed{header: h, payload: claims(s.issuer, nil), sel: diffSel(vi, si, 0)})
		}
		// Without kid, and as an RFC 9068 access token.
		seeds = append(seeds,
			diffSeed{header: hdr(tb, string(s.key.alg), "", nil), payload: claims(s.issuer, nil), sel: diffSel(2, si, 0)},
			diffSeed{header: hdr(tb, string(s.key.alg), s.key.kid, map[string]any{"typ": "at+jwt"}),
				payload: claims(fuzzATIssuer, map[string]any{"client_id": "c", "jti": "j"}), sel: diffSel(1, si, 0)})
		for m := 4; m <= 15; m++ {
			if _, isRSA := s.key.priv.(*rsa.PrivateKey); m >= 8 && !isRSA {
				break
			}
			seeds = append(seeds, diffSeed{header: h, payload: claims(s.issuer, nil), sel: diffSel(1, si, m)})
		}
	}

	// JSON edge cases, signed with ES256 (a fast signer) for verifier 1.
	const es = 6 // the ES256 signer's index
	good := claims(fuzzAsymIssuer, nil)
	goodHdr := `{"alg":"ES256","kid":"ec-1"}`
	withClaim := func(member string) string { return good[:len(good)-1] + "," + member + "}" }
	for _, h := range []string{
		goodHdr,
		` {"alg":"ES256" , "kid":"ec-1"} `,
		`{"\u0061lg":"ES256","kid":"ec-1"}`,
		`{"alg":"ES\u0032256","kid":"ec\u002d1"}`,
		`{"alg":"ES256","kid":"ec-1","alg":"ES256"}`,
		`{"alg":"ES256","kid":"ec-1","\u0061lg":"ES256"}`,
		`{"alg":"ES256","kid":"ec-1","nonce":5}`,
		`{"alg":"ES256","kid":"ec-1","nonce":null}`,
		`{"alg":"ES256","kid":"ec-1","nonce":"n"}`,
		`{"alg":"none","kid":"ec-1","nonce":5}`,
		`{"alg":null,"kid":"ec-1"}`,
		`{"alg":["ES256"],"kid":"ec-1"}`,
		`{"alg":"ES256","kid":null}`,
		`{"alg":"ES256","kid":5}`,
		`{"alg":"ES256","kid":"ec-1","zip":null}`,
		`{"alg":"ES256","kid":"ec-1","b64":null}`,
		`{"alg":"ES256","kid":"ec-1","b64":true}`,
		`{"alg":"ES256","kid":"ec-1","crit":null}`,
		`{"alg":"ES256","kid":"ec-1","crit":[]}`,
		`{"alg":"ES256","kid":"ec-1","crit":[1]}`,
		`{"alg":"ES256","kid":"ec-1","cty":"\u004aWT"}`,
		`{"alg":"ES256","kid":"ec-1","cty":"json"}`,
		`{"alg":"ES256","kid":"ec-1","typ":"AT+JWT"}`,
		`{"alg":"ES256","kid":"ec-1","x":1e400}`,
		`{"alg":"ES256","kid":"ec-1","x":1e-400}`,
		`{"alg":"ES256","kid":"ec-1","x":{"a":1,"a":2}}`,
		`{"alg":"ES256","kid":"ec-1","x":{"\ud800":1,"\udfff":2}}`,
		`{"alg":"ES256","kid":"ec-1","x":[[[[[[[[]]]]]]]]}`,
		`{"alg":"ES256","kid":"ec-1","jwk":{"kty":"EC"}}`,
		`{"alg":"ES256","kid":"ec-1","jwk":null}`,
		`{"alg":"ES256","kid":"ec-1","x5c":[]}`,
		`{"alg":"ES256","kid":"ec-1","x5c":["AAAA"]}`,
		`{"alg":"ES256","kid":"ec-1","x5c":[1],"crit":5}`,
		`{"alg":"ES256","kid":"ec-1","jku":"https://e","x5u":5}`,
		`{"alg":"ES256","kid":"ec-1"}x`,
		`{"alg":"ES256","kid":"ec-1",}`,
		`[{"alg":"ES256","kid":"ec-1"}]`,
		`null`,
	} {
		seeds = append(seeds, diffSeed{header: h, payload: good, sel: diffSel(1, es, 0)})
	}
	deep := strings.Repeat("[", maxJSONDepth-1) + strings.Repeat("]", maxJSONDepth-1)
	// Objects past the linear duplicate search, duplicate last.
	var many strings.Builder
	for i := range 2 * maxLinearMembers {
		fmt.Fprintf(&many, `"m%d":%d,`, i, i)
	}
	members := many.String()
	for _, p := range []string{
		" " + good + "\n",
		withClaim(`"x":1e400`),
		withClaim(`"x":[1e400]`),
		withClaim(`"x":[1e-400,-0,0.5e+3]`),
		withClaim(`"x":{"a":1,"a":2}`),
		withClaim(`"x":{"a":{"b":1,"b":1}}`),
		withClaim(`"x":[{"a":1},{"a":1}]`),
		withClaim(`"x":{"\ud800":1,"\udbff":2}`),
		withClaim(`"\ud800":1,"\udfff":2`),
		withClaim(`"\u0069ss":"x"`),
		withClaim(`"x":"\ud800\u0041\/\b"`),
		withClaim(`"x":"\x"`),
		withClaim(`"x":01`),
		withClaim(`"x":1.`),
		withClaim(`"x":-`),
		withClaim(`"x":tru`),
		withClaim(`"x":` + deep),
		withClaim(`"x":[` + deep + `]`),
		withClaim(`"x":null,"y":true,"z":false`),
		withClaim(members + `"m0":0`),
		withClaim(members + `"m00":0`),
		withClaim(`"x":{` + members + `"m1":1}`),
		withClaim(`"x":{` + members + `"m01":1}`),
		withClaim(`"sub":"\u00e9"`),
		withClaim(`"aud":["a","` + fuzzAudience + `"]`),
		withClaim(`"exp":1e400`),
		withClaim(`"nbf":null`),
		strings.Replace(good, `"aud":"`+fuzzAudience+`"`, `"aud":[ "a" , "`+fuzzAudience+`" ]`, 1),
		strings.Replace(good, `"aud":"`+fuzzAudience+`"`, `"aud":["api:\/\/fuzz"]`, 1),
		strings.Replace(good, `"aud":"`+fuzzAudience+`"`, `"aud":["\u0061",1]`, 1),
		strings.Replace(good, `"aud":"`+fuzzAudience+`"`, `"aud":[]`, 1),
		strings.Replace(good, `"aud":"`+fuzzAudience+`"`, `"aud":[["`+fuzzAudience+`"]]`, 1),
		strings.Replace(good, `"aud":"`+fuzzAudience+`"`, `"aud":["x","`+fuzzAudience+`",null]`, 1),
		`{"iss":"` + fuzzAsymIssuer + `"}`,
		`{}`,
		`[]`,
		`null`,
		"{\"iss\":\"a\x01\"}",
	} {
		seeds = append(seeds, diffSeed{header: goodHdr, payload: p, sel: diffSel(1, es, 0)})
	}
	return seeds
}

// TestDiffOracleSeesDisagreements makes sure the comparison can fail: a
// verifier whose answer differs from go-jose's is reported.
func TestDiffOracleSeesDisagreements(t *testing.T) {
	w := newDiffWorld(t)
	v := w.verifiers[1]
	tok := w.token(t, `{"alg":"ES256","kid":"ec-1"}`, w.env.world.payload(t, fuzzAsymIssuer, nil), diffSel(1, 6, 0))
	if why := diffCompare(v, tok); why != "" {
		t.Fatalf("a valid token: %s", why)
	}
	fc, _, _, aerr := v.verify(context.Background(), tok, fuzzNow)
	if aerr != nil {
		t.Fatal(aerr)
	}
	rc, _, _, _ := referenceVerify(v, context.Background(), tok, fuzzNow)
	changed := *fc
	changed.top = map[string]json.RawMessage{}
	for k, val := range fc.top {
		changed.top[k] = val
	}
	changed.top["sub"] = json.RawMessage(`"someone else"`)
	if diffClaims(&changed, rc) == "" {
		t.Fatal("a changed member goes unnoticed")
	}
	if diffClaims(fc, rc) != "" {
		t.Fatal("equal claims reported as different")
	}
	if sameDetail("iss claim missing", "exp claim missing") {
		t.Fatal("different details reported as the same")
	}
}

// ---- the oracle: the go-jose path, as verifier.go had it ----

// referenceToken is a token as the go-jose path parsed it.
type referenceToken struct {
	jws     *jwt.JSONWebToken
	hdr     *jose.Header
	alg     jose.SignatureAlgorithm
	payload []byte
	top     map[string]json.RawMessage
}

// referenceVerify is verifier.verify with the go-jose parser and
// signature check; the provider, time, audience and claim rules are the
// verifier's own.
func referenceVerify(v *verifier, ctx context.Context, token string, now time.Time) (*Claims, *provider, uint64, *authError) {
	pt, aerr := referenceParse(v, token)
	if aerr != nil {
		return nil, nil, 0, aerr
	}
	p, tenant, aerr := v.selectProvider(pt.top)
	if aerr != nil {
		return nil, p, 0, aerr
	}
	if !p.algs.has(pt.alg) {
		return nil, p, 0, errAlgNotAllowed
	}
	typ, _ := pt.hdr.ExtraHeaders[jose.HeaderType].(string)
	if p.requireAT && !isAccessTokenType(typ) {
		return nil, p, 0, fail(stepHeader, reasonBadClaim, "typ is not at+jwt")
	}
	claims, aerr := checkClaims(p, pt.top, now)
	if aerr != nil {
		return nil, p, 0, aerr
	}
	gen, aerr := referenceSignature(ctx, p, pt, now)
	if aerr != nil {
		return nil, p, 0, aerr
	}
	claims.provider = p.name
	claims.tenant = tenant
	claims.replaceFn = claims.replace
	claims.raw = pt.payload
	claims.top = pt.top
	return claims, p, gen, nil
}

// referenceParse is the go-jose parse: jwt.ParseSigned with the header
// checks around it, and the payload decoded twice (the top-level map,
// then each nested value) for duplicates.
func referenceParse(v *verifier, token string) (*referenceToken, *authError) {
	if len(token) > v.maxTokenSize {
		return nil, errTooLarge
	}
	dot1, dot2, ok := compactParts(token)
	if !ok {
		return nil, errNotCompact
	}
	if aerr := referenceCheckHeaderJSON(token[:dot1]); aerr != nil {
		return nil, aerr
	}
	tok, err := jwt.ParseSigned(token, v.parseAlgs)
	if err != nil {
		var unexpected *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &unexpected) {
			return nil, errAlgUnknown
		}
		return nil, fail(stepHeader, reasonMalformed, "token header or encoding invalid")
	}
	if len(tok.Headers) != 1 {
		return nil, fail(stepHeader, reasonMalformed, "token must have exactly one signature")
	}
	pt := &referenceToken{jws: tok, hdr: &tok.Headers[0]}
	pt.alg = jose.SignatureAlgorithm(pt.hdr.Algorithm)
	if aerr := checkHeader(pt.hdr); aerr != nil {
		return nil, aerr
	}
	pt.payload, err = base64.RawURLEncoding.DecodeString(token[dot1+1 : dot2])
	if err != nil {
		return nil, errNotCompact
	}
	if !utf8.Valid(pt.payload) {
		return nil, errPayloadNotUTF8
	}
	if err := json.Unmarshal(pt.payload, &pt.top); err != nil || pt.top == nil {
		return nil, errPayloadNotObj
	}
	for _, raw := range pt.top {
		if len(raw) > 0 && (raw[0] == '{' || raw[0] == '[') {
			var nested any
			if err := json.Unmarshal(raw, &nested); err != nil {
				return nil, errPayloadNotObj
			}
		}
	}
	return pt, nil
}

// referenceCheckHeaderJSON is the header check the go-jose path ran before
// go-jose read the header.
func referenceCheckHeaderJSON(seg string) *authError {
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return errNotCompact
	}
	if !utf8.Valid(raw) {
		return errHeaderNotUTF8
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil || members == nil {
		return errHeaderNotObj
	}
	for name, want := range headerMemberTypes {
		v, ok := members[name]
		if !ok {
			continue
		}
		if len(v) == 0 || v[0] != want {
			return fail(stepHeader, reasonMalformed, "header member "+name+" has the wrong JSON type")
		}
		if want == '[' {
			items, ok := arrayItems(v)
			if !ok {
				return errHeaderNotObj
			}
			for _, it := range items {
				if len(it) == 0 || it[0] != '"' {
					return fail(stepHeader, reasonMalformed, "header member "+name+" is not an array of strings")
				}
			}
		}
	}
	return nil
}

// referenceCheckAudience is checkAudience as the go-jose path had it.
func referenceCheckAudience(raw json.RawMessage, want []string) *authError {
	if len(raw) > 0 && raw[0] == '"' {
		return checkAudience(raw, want) // unchanged for a string
	}
	if len(raw) == 0 || raw[0] != '[' {
		return fail(stepAudience, reasonBadClaim, "aud is not a string or an array of strings")
	}
	var auds []json.RawMessage
	if err := json.Unmarshal(raw, &auds); err != nil {
		return fail(stepAudience, reasonBadClaim, "aud is not a string or an array of strings")
	}
	match := false
	for _, a := range auds {
		s, ok := jsonString(a)
		if !ok {
			return fail(stepAudience, reasonBadClaim, "aud is not a string or an array of strings")
		}
		for _, w := range want {
			if s == w {
				match = true
			}
		}
	}
	if !match {
		got := make([]string, 0, len(auds))
		for _, a := range auds {
			s, _ := jsonString(a)
			got = append(got, s)
		}
		return audienceMismatch(got, want)
	}
	return nil
}

// referenceSignature is verifySignature with go-jose's signature check.
func referenceSignature(ctx context.Context, p *provider, pt *referenceToken, now time.Time) (uint64, *authError) {
	ks, aerr := p.keys.keysAt(now)
	if aerr != nil {
		return 0, aerr
	}
	kid := pt.hdr.KeyID
	var buf [maxKidlessCandidates]*verificationKey
	cands, found := ks.candidates(kid, pt.alg, buf[:])
	if !found && kid != "" {
		if fresh := p.keys.refreshForKid(ctx, kid); fresh != nil {
			ks = fresh
			cands, found = ks.candidates(kid, pt.alg, buf[:])
		}
	}
	if !found {
		if kid == "" {
			return 0, errUnknownKey
		}
		return 0, fail(stepKey, reasonUnknownKey, "the token's kid is none of the provider's kids "+clipList(ks.kids()))
	}
	if len(cands) == 0 {
		return 0, errNoKeyForAlg
	}
	if len(cands) > maxKidlessCandidates {
		cands = cands[:maxKidlessCandidates]
	}
	for _, k := range cands {
		if pt.jws.Claims(k.key) == nil {
			return ks.gen, nil
		}
	}
	return 0, errBadSignature
}

// TestDiffSeedsCoverEveryKey makes sure the target's signed inputs reach
// the signature check for every signing key: accepted with and without
// kid, and refused for a spoiled signature, by both paths alike.
func TestDiffSeedsCoverEveryKey(t *testing.T) {
	w := newDiffWorld(t)
	for si, s := range w.signers {
		t.Run(string(s.key.alg)+"/"+s.key.kid, func(t *testing.T) {
			claims := w.env.world.payload(t, s.issuer, nil)
			for _, c := range []struct {
				vi, m int
				kid   string
				want  string // the reason code; "" accepted
			}{
				{vi: 1, kid: s.key.kid},
				{vi: 2},
				{vi: 1, m: 4, kid: s.key.kid, want: "bad_signature"},
				{vi: 2, m: 7, want: "bad_signature"},
			} {
				tok := w.token(t, hdr(t, string(s.key.alg), c.kid, nil), claims, diffSel(c.vi, si, c.m))
				v := w.verifiers[c.vi]
				if why := diffCompare(v, tok); why != "" {
					t.Fatal(why)
				}
				_, _, _, aerr := v.verify(context.Background(), tok, fuzzNow)
				got := ""
				if aerr != nil {
					got = aerr.reason.String()
				}
				if got != c.want {
					t.Fatalf("verifier %d, change %d: %q (%v), want %q", c.vi, c.m, got, aerr, c.want)
				}
			}
			if _, isRSA := s.key.priv.(*rsa.PrivateKey); !isRSA {
				return
			}
			pss := strings.HasPrefix(string(s.key.alg), "PS")
			for m := 8; m <= 15; m++ {
				tok := w.token(t, hdr(t, string(s.key.alg), s.key.kid, nil), claims, diffSel(1, si, m))
				if why := diffCompare(w.verifiers[1], tok); why != "" {
					t.Fatalf("encoding change %d: %s", m, why)
				}
				_, _, _, aerr := w.verifiers[1].verify(context.Background(), tok, fuzzNow)
				if valid := pss && m >= 13; (aerr == nil) != valid {
					t.Fatalf("encoding change %d: %v, want accepted %v", m, aerr, valid)
				}
			}
		})
	}
}
