package oauth2jwt

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
)

// maxKidlessCandidates bounds the signature checks one token without kid
// can cause.
const maxKidlessCandidates = 8

// provider is the runtime form of a configured Provider: the policy used to
// check its tokens, and where its keys come from.
type provider struct {
	name      string
	issuer    string
	audiences []string
	algs      algSet
	leeway    time.Duration
	// requireAT enforces RFC 9068 access tokens: typ at+jwt and the
	// sub, client_id, iat and jti claims.
	requireAT bool
	keys      keySource
	counters  *outcomeCounters
	// Multi-tenant issuer template: iss = tmplPrefix + tenant + tmplSuffix.
	tmplPrefix, tmplSuffix string
	tenants                map[string]bool // nil for a plain issuer
	anyTenant              bool
}

// maxTenantLen bounds a tenant id taken from an issuer.
const maxTenantLen = 128

// validTenant reports whether s may be a tenant id: a non-empty path
// segment of unreserved URL characters.
func validTenant(s string) bool {
	if s == "" || len(s) > maxTenantLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(b64urlChars[c] || c == '.' || c == '~') {
			return false
		}
	}
	return true
}

// matchTenant returns the tenant of iss when iss fits this provider's
// issuer template with an allowed tenant.
func (p *provider) matchTenant(iss string) (string, bool) {
	if p.tenants == nil || len(iss) <= len(p.tmplPrefix)+len(p.tmplSuffix) ||
		!strings.HasPrefix(iss, p.tmplPrefix) || !strings.HasSuffix(iss, p.tmplSuffix) {
		return "", false
	}
	tenant := iss[len(p.tmplPrefix) : len(iss)-len(p.tmplSuffix)]
	if !validTenant(tenant) || (!p.anyTenant && !p.tenants[tenant]) {
		return "", false
	}
	return tenant, true
}

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

// verifier checks bearer tokens against a set of providers. It holds no
// per-request state and is safe for concurrent use.
type verifier struct {
	byIssuer     map[string]*provider
	templated    []*provider               // providers with a multi-tenant issuer template
	parseAlgs    []jose.SignatureAlgorithm // every algorithm any provider allows
	maxTokenSize int
	now          func() time.Time
}

// bearerToken extracts the token of an `Authorization: Bearer` header.
func bearerToken(h http.Header, maxTokenSize int) (string, *authError) {
	vals := h["Authorization"]
	switch len(vals) {
	case 0:
		return "", errMissingToken
	case 1:
	default:
		return "", errSeveralHeaders
	}
	v := vals[0]
	if len(v) > headerLimit(maxTokenSize) {
		return "", errHeaderTooLarge
	}
	if len(v) < 6 || !strings.EqualFold(v[:6], "bearer") {
		return "", errMissingToken
	}
	if len(v) == 6 {
		return "", errMissingToken
	}
	if v[6] != ' ' {
		// A tab, CR, LF or other control character after the scheme is a
		// malformed header (line folding included); "Bearerx..." is simply
		// another scheme.
		if v[6] < 0x21 || v[6] == 0x7f {
			return "", errBadHeader
		}
		return "", errMissingToken
	}
	tok := strings.TrimLeft(v[7:], " ")
	if tok == "" {
		return "", errMissingToken
	}
	// The token's characters are checked by the caller (isB64Token) only
	// when it is not a cached, already verified token.
	return tok, nil
}

// headerLimit is the largest Authorization header value considered at all;
// anything longer is a malformed request (400) rather than a token.
func headerLimit(maxTokenSize int) int {
	return max(4*maxTokenSize, 64<<10)
}

// b64urlChars marks the bytes of unpadded base64url; b64urlValue holds
// their 6-bit values.
var (
	b64urlChars [256]bool
	b64urlValue [256]byte
)

func init() {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := 0; i < len(alphabet); i++ {
		b64urlChars[alphabet[i]] = true
		b64urlValue[alphabet[i]] = byte(i)
	}
}

// hasSeparator reports whether a token holds white space or control
// characters: two tokens, or a folded header, rather than one malformed
// token.
func hasSeparator(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return true
		}
	}
	return false
}

// canonicalEnd reports whether the last character of a base64url segment
// of length n leaves its unused low bits zero, so that no two strings
// decode to the same bytes (a token has exactly one spelling).
func canonicalEnd(last byte, n int) bool {
	switch n % 4 {
	case 2:
		return b64urlValue[last]&0x0f == 0
	case 3:
		return b64urlValue[last]&0x03 == 0
	}
	return true
}

// compactParts checks that token is exactly three non-empty segments of
// base64url characters without padding, and returns the index of the two
// dots. go-jose decodes loosely, so this runs first.
func compactParts(token string) (dot1, dot2 int, ok bool) {
	dot1, dot2 = -1, -1
	for i := 0; i < len(token); i++ {
		c := token[i]
		if b64urlChars[c] {
			continue
		}
		if c != '.' {
			return 0, 0, false
		}
		switch {
		case dot1 < 0:
			dot1 = i
		case dot2 < 0:
			dot2 = i
		default:
			return 0, 0, false
		}
	}
	if dot1 <= 0 || dot2 <= dot1+1 || dot2 == len(token)-1 {
		return 0, 0, false
	}
	// A base64url segment never has a length of 1 modulo 4, and its last
	// character must not carry stray bits.
	n1, n2, n3 := dot1, dot2-dot1-1, len(token)-dot2-1
	if n1%4 == 1 || n2%4 == 1 || n3%4 == 1 ||
		!canonicalEnd(token[dot1-1], n1) || !canonicalEnd(token[dot2-1], n2) || !canonicalEnd(token[len(token)-1], n3) {
		return 0, 0, false
	}
	return dot1, dot2, true
}

// verify checks one token and returns its claims and provider. Cheap checks
// come first; only a token that passes every local check may cause a key
// fetch (an unknown kid), and then at most once per min_refresh_interval.
func (v *verifier) verify(ctx context.Context, token string, now time.Time) (*Claims, *provider, uint64, *authError) {
	if len(token) > v.maxTokenSize {
		return nil, nil, 0, errTooLarge
	}
	dot1, dot2, ok := compactParts(token)
	if !ok {
		return nil, nil, 0, errNotCompact
	}
	tok, err := jwt.ParseSigned(token, v.parseAlgs)
	if err != nil {
		var unexpected *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &unexpected) {
			return nil, nil, 0, errAlgNotAllowed
		}
		return nil, nil, 0, fail(reasonMalformed, "token header or encoding invalid")
	}
	if len(tok.Headers) != 1 {
		return nil, nil, 0, fail(reasonMalformed, "token must have exactly one signature")
	}
	hdr := &tok.Headers[0]
	alg := jose.SignatureAlgorithm(hdr.Algorithm)
	if aerr := checkHeader(hdr); aerr != nil {
		return nil, nil, 0, aerr
	}

	payload, err := base64.RawURLEncoding.DecodeString(token[dot1+1 : dot2])
	if err != nil {
		return nil, nil, 0, errNotCompact
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(payload, &top); err != nil || top == nil {
		return nil, nil, 0, errPayloadNotObj
	}
	// go-jose's decoder refuses duplicate member names, but a RawMessage
	// value is only scanned: decode nested objects and arrays too, so no
	// duplicate hides at any depth (a last-wins parser upstream would read
	// them differently).
	for _, raw := range top {
		if len(raw) > 0 && (raw[0] == '{' || raw[0] == '[') {
			var nested any
			if err := json.Unmarshal(raw, &nested); err != nil {
				return nil, nil, 0, errPayloadNotObj
			}
		}
	}

	// Provider: one map look-up on the unverified iss.
	issRaw, ok := top["iss"]
	if !ok {
		return nil, nil, 0, errMissingIss
	}
	iss, ok := jsonString(issRaw)
	if !ok {
		return nil, nil, 0, fail(reasonBadClaim, "iss is not a string")
	}
	p := v.byIssuer[iss]
	tenant := ""
	if p == nil {
		for _, tp := range v.templated {
			if t, ok := tp.matchTenant(iss); ok {
				p, tenant = tp, t
				break
			}
		}
		if p == nil {
			return nil, nil, 0, errUnknownIssuer
		}
		if raw, ok := top["tid"]; ok {
			if tid, ok := jsonString(raw); !ok || tid != tenant {
				return nil, p, 0, fail(reasonBadClaim, "tid does not match the issuer's tenant")
			}
		}
	}
	if !p.algs.has(alg) {
		return nil, p, 0, errAlgNotAllowed
	}
	if p.requireAT && !isAccessTokenType(hdr) {
		return nil, p, 0, fail(reasonBadClaim, "typ is not at+jwt")
	}

	claims, aerr := checkClaims(p, top, now)
	if aerr != nil {
		return nil, p, 0, aerr
	}

	// Keys: only now may the network be involved.
	ks, aerr := p.keys.keysAt(now)
	if aerr != nil {
		return nil, p, 0, aerr
	}
	gen := ks.gen
	var buf [maxKidlessCandidates]*verificationKey
	cands, found := ks.candidates(hdr.KeyID, alg, buf[:])
	if !found && hdr.KeyID != "" {
		if fresh := p.keys.refreshForKid(ctx, hdr.KeyID); fresh != nil {
			cands, found = fresh.candidates(hdr.KeyID, alg, buf[:])
			gen = fresh.gen
		}
	}
	if !found {
		return nil, p, 0, errUnknownKey
	}
	if len(cands) == 0 {
		return nil, p, 0, errNoKeyForAlg
	}
	if len(cands) > maxKidlessCandidates {
		cands = cands[:maxKidlessCandidates]
	}
	for _, k := range cands {
		if tok.Claims(k.key) == nil {
			claims.provider = p.name
			claims.tenant = tenant
			claims.replaceFn = claims.replace
			claims.raw = payload
			claims.top = top
			return claims, p, gen, nil
		}
	}
	return nil, p, 0, errBadSignature
}

// checkHeader refuses JWS features a resource server must not honour:
// critical extensions (crit, including b64), unencoded payloads (b64),
// compression (zip) and nested JWTs (cty JWT). Embedded keys and key URLs
// (jwk, jku, x5u, x5c) are ignored: keys only ever come from the provider's
// configured source.
func checkHeader(h *jose.Header) *authError {
	if h.ExtraHeaders == nil {
		return nil
	}
	for _, name := range [...]jose.HeaderKey{"crit", "b64", "zip"} {
		if _, ok := h.ExtraHeaders[name]; ok {
			return errHeaderForbidden
		}
	}
	if cty, ok := h.ExtraHeaders["cty"]; ok {
		s, isString := cty.(string)
		if !isString || strings.EqualFold(s, "JWT") || strings.EqualFold(s, "application/jwt") {
			return errHeaderForbidden
		}
	}
	return nil
}

// isAccessTokenType reports whether the header's typ is RFC 9068's at+jwt.
func isAccessTokenType(h *jose.Header) bool {
	typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
	return strings.EqualFold(typ, "at+jwt") || strings.EqualFold(typ, "application/at+jwt")
}

// checkClaims applies the provider's time and audience rules to the
// unverified claims. Nothing here touches the network.
func checkClaims(p *provider, top map[string]json.RawMessage, now time.Time) (*Claims, *authError) {
	c := &Claims{}

	expRaw, ok := top["exp"]
	if !ok || string(expRaw) == "null" {
		return nil, errMissingExp
	}
	exp, ok := numericDate(expRaw)
	if !ok {
		return nil, fail(reasonBadClaim, "exp is not a valid NumericDate")
	}
	c.expiry = exp
	c.notAfter = exp.Add(p.leeway)
	if !now.Before(c.notAfter) {
		return nil, errExpired
	}
	if raw, ok := top["nbf"]; ok {
		nbf, ok := numericDate(raw)
		if !ok {
			return nil, fail(reasonBadClaim, "nbf is not a valid NumericDate")
		}
		if now.Add(p.leeway).Before(nbf) {
			return nil, errNotYetValid
		}
		c.notBefore = nbf.Add(-p.leeway)
	}
	iatRaw, hasIat := top["iat"]
	if hasIat {
		iat, ok := numericDate(iatRaw)
		if !ok {
			return nil, fail(reasonBadClaim, "iat is not a valid NumericDate")
		}
		if now.Add(p.leeway).Before(iat) {
			return nil, errIssuedInFuture
		}
		if from := iat.Add(-p.leeway); from.After(c.notBefore) {
			c.notBefore = from
		}
	}

	audRaw, ok := top["aud"]
	if !ok {
		return nil, errMissingAud
	}
	if aerr := checkAudience(audRaw, p.audiences); aerr != nil {
		return nil, aerr
	}

	if raw, ok := top["sub"]; ok {
		sub, ok := jsonString(raw)
		if !ok {
			return nil, fail(reasonBadClaim, "sub is not a string")
		}
		c.subject = sub
	}

	if p.requireAT {
		if _, ok := top["sub"]; !ok {
			return nil, fail(reasonMissingClaim, "sub claim missing (required for at+jwt)")
		}
		if !hasIat {
			return nil, fail(reasonMissingClaim, "iat claim missing (required for at+jwt)")
		}
		for _, name := range [...]string{"client_id", "jti"} {
			raw, ok := top[name]
			if !ok {
				return nil, fail(reasonMissingClaim, name+" claim missing (required for at+jwt)")
			}
			if _, ok := jsonString(raw); !ok {
				return nil, fail(reasonBadClaim, name+" is not a string")
			}
		}
	}
	return c, nil
}

// checkAudience accepts an aud that is a string or an array of strings
// containing at least one configured audience.
func checkAudience(raw json.RawMessage, want []string) *authError {
	if len(raw) > 0 && raw[0] == '"' {
		aud, ok := jsonString(raw)
		if !ok {
			return fail(reasonBadClaim, "aud is not a string or an array of strings")
		}
		for _, w := range want {
			if aud == w {
				return nil
			}
		}
		return errBadAudience
	}
	if len(raw) == 0 || raw[0] != '[' {
		return fail(reasonBadClaim, "aud is not a string or an array of strings")
	}
	var auds []json.RawMessage
	if err := json.Unmarshal(raw, &auds); err != nil {
		return fail(reasonBadClaim, "aud is not a string or an array of strings")
	}
	match := false
	for _, a := range auds {
		s, ok := jsonString(a)
		if !ok {
			return fail(reasonBadClaim, "aud is not a string or an array of strings")
		}
		for _, w := range want {
			if s == w {
				match = true
			}
		}
	}
	if !match {
		return errBadAudience
	}
	return nil
}

// jsonString decodes a JSON string value. The common case, a string
// without escapes, costs one copy.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	simple := true
	for _, c := range inner {
		if c == '\\' || c == '"' || c < 0x20 {
			simple = false
			break
		}
	}
	if simple {
		return string(inner), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}
