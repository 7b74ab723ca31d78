package oauth2jwt

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
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
	// intro is the introspection client and cache of a provider that
	// accepts opaque tokens, or nil.
	intro *introspector
	// allowNoAud accepts introspection answers without aud.
	allowNoAud bool
}

// keySource is what a provider's keys are checked against: a remote,
// refreshed JWKS (jwksCache) or a local file read at provision
// (staticKeys).
type keySource interface {
	// keysAt returns the key set usable at now, or an unavailable error
	// when the provider has no usable keys (never loaded, or older than
	// max_stale).
	keysAt(now time.Time) (*keySet, *authError)
	// refreshForKid is called when a token names a kid the current set does
	// not have. It may fetch the JWKS once (rate limited, shared by
	// concurrent callers) and returns the set to retry with, or nil when no
	// newer set can be had. It never blocks longer than the fetch timeout.
	refreshForKid(ctx context.Context, kid string) *keySet
}

// verifier checks bearer tokens against a set of providers. It holds no
// per-request state and is safe for concurrent use.
type verifier struct {
	byIssuer     map[string]*provider
	templated    []*provider               // providers with a multi-tenant issuer template
	parseAlgs    []jose.SignatureAlgorithm // every algorithm any provider allows
	maxTokenSize int
	now          func() time.Time
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
	pt, aerr := v.parse(token)
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
	if p.requireAT && !isAccessTokenType(pt.typ) {
		return nil, p, 0, fail(stepHeader, reasonBadClaim, "typ is not at+jwt")
	}
	claims, aerr := checkClaims(p, pt.top, now)
	if aerr != nil {
		return nil, p, 0, aerr
	}
	gen, aerr := verifySignature(ctx, p, pt, now)
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

// selectProvider finds the provider of the unverified iss: one map
// look-up, else the issuer templates (with the tid check).
func (v *verifier) selectProvider(top map[string]json.RawMessage) (*provider, string, *authError) {
	issRaw, ok := top["iss"]
	if !ok {
		return nil, "", errMissingIss
	}
	iss, ok := jsonString(issRaw)
	if !ok {
		return nil, "", fail(stepIssuer, reasonBadClaim, "iss is not a string")
	}
	if p := v.byIssuer[iss]; p != nil {
		return p, "", nil
	}
	for _, tp := range v.templated {
		tenant, ok := tp.matchTenant(iss)
		if !ok {
			continue
		}
		if raw, ok := top["tid"]; ok {
			if tid, ok := jsonString(raw); !ok || tid != tenant {
				return tp, "", fail(stepIssuer, reasonBadClaim, "tid does not match the issuer's tenant")
			}
		}
		return tp, tenant, nil
	}
	return nil, "", fail(stepIssuer, reasonUnknownIssuer, "iss "+clip(iss)+" is not the issuer of any provider")
}

// verifySignature checks the signature with the provider's keys, and
// returns the generation of the key set that verified it. Only here may
// the network be involved (an unknown kid).
func verifySignature(ctx context.Context, p *provider, pt *parsedToken, now time.Time) (uint64, *authError) {
	ks, aerr := p.keys.keysAt(now)
	if aerr != nil {
		return 0, aerr
	}
	kid := pt.kid
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
		// The token's kid is not quoted: it is the member attackers fill
		// with log forgeries. The provider's own kids are.
		return 0, fail(stepKey, reasonUnknownKey, "the token's kid is none of the provider's kids "+clipList(ks.kids()))
	}
	if len(cands) == 0 {
		return 0, errNoKeyForAlg
	}
	if len(cands) > maxKidlessCandidates {
		cands = cands[:maxKidlessCandidates]
	}
	input := []byte(pt.input) // one copy, for every candidate
	for _, k := range cands {
		if k.verify(pt.alg, input, pt.sig) {
			return ks.gen, nil
		}
	}
	return 0, errBadSignature
}

// headerMemberTypes are the JSON types of the registered JOSE header
// members (RFC 7515 section 4.1, RFC 7519 section 5): '"' a string, '['
// an array (of strings), '{' an object. alg is left to the allow-list
// check, which answers any alg that is not an allowed string with
// bad_algorithm. A registered member of another type (null included) is
// refused: go-jose reads a `null` or non-string kid as no kid at all,
// which would send such a token down the kid-less path.
var headerMemberTypes = map[string]byte{
	"jku": '"', "jwk": '{', "kid": '"', "x5u": '"', "x5c": '[',
	"x5t": '"', "x5t#S256": '"', "typ": '"', "cty": '"', "crit": '[',
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
func isAccessTokenType(typ string) bool {
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
		return nil, fail(stepTime, reasonBadClaim, "exp is not a valid NumericDate")
	}
	c.expiry = exp
	c.notAfter = exp.Add(p.leeway)
	if !now.Before(c.notAfter) {
		return nil, fail(stepTime, reasonExpired, "exp "+exp.UTC().Format(time.RFC3339)+" is "+now.Sub(exp).Round(time.Second).String()+" ago, beyond the leeway of "+p.leeway.String())
	}
	if raw, ok := top["nbf"]; ok {
		nbf, ok := numericDate(raw)
		if !ok {
			return nil, fail(stepTime, reasonBadClaim, "nbf is not a valid NumericDate")
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
			return nil, fail(stepTime, reasonBadClaim, "iat is not a valid NumericDate")
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
			return nil, fail(stepClaims, reasonBadClaim, "sub is not a string")
		}
		c.subject = sub
	}

	if p.requireAT {
		if _, ok := top["sub"]; !ok {
			return nil, fail(stepClaims, reasonMissingClaim, "sub claim missing (required for at+jwt)")
		}
		if !hasIat {
			return nil, fail(stepClaims, reasonMissingClaim, "iat claim missing (required for at+jwt)")
		}
		for _, name := range [...]string{"client_id", "jti"} {
			raw, ok := top[name]
			if !ok {
				return nil, fail(stepClaims, reasonMissingClaim, name+" claim missing (required for at+jwt)")
			}
			if _, ok := jsonString(raw); !ok {
				return nil, fail(stepClaims, reasonBadClaim, name+" is not a string")
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
			return fail(stepAudience, reasonBadClaim, "aud is not a string or an array of strings")
		}
		for _, w := range want {
			if aud == w {
				return nil
			}
		}
		return audienceMismatch([]string{aud}, want)
	}
	if len(raw) == 0 || raw[0] != '[' {
		return fail(stepAudience, reasonBadClaim, "aud is not a string or an array of strings")
	}
	match, ok := audienceArrayMatch(raw, want)
	if !ok {
		return fail(stepAudience, reasonBadClaim, "aud is not a string or an array of strings")
	}
	if !match {
		items, _ := arrayItems(raw)
		got := make([]string, 0, len(items))
		for _, a := range items {
			s, _ := jsonString(a)
			got = append(got, s)
		}
		return audienceMismatch(got, want)
	}
	return nil
}

// audienceArrayMatch reads raw, a JSON array, item by item: ok is false
// unless it is an array of strings only, and match reports whether one of
// them is in want. Items without escapes are compared in place.
func audienceArrayMatch(raw []byte, want []string) (match, ok bool) {
	i := skipSpace(raw, 1)
	if i < len(raw) && raw[i] == ']' {
		return false, skipSpace(raw, i+1) == len(raw)
	}
	for {
		if i >= len(raw) || raw[i] != '"' {
			return false, false
		}
		end, escaped, ok := scanString(raw, i)
		if !ok {
			return false, false
		}
		if escaped {
			s, ok := jsonString(raw[i:end])
			if !ok {
				return false, false
			}
			match = match || slices.Contains(want, s)
		} else {
			inner := raw[i+1 : end-1]
			for _, w := range want {
				match = match || string(inner) == w
			}
		}
		i = skipSpace(raw, end)
		if i >= len(raw) {
			return false, false
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case ']':
			return match, skipSpace(raw, i+1) == len(raw)
		default:
			return false, false
		}
	}
}

// audienceMismatch explains a bad_audience rejection: the token's aud
// values (at most a few, clipped) and the accepted ones.
func audienceMismatch(got, want []string) *authError {
	return fail(stepAudience, reasonBadAudience, "aud "+clipList(got)+" holds none of the accepted audiences "+clipList(want))
}

// maxDetailItems and maxDetailLen bound what a rejection's detail quotes
// from a token, so a hostile token cannot make log lines large.
const (
	maxDetailItems = 5
	maxDetailLen   = 64
)

// clip quotes s for a log detail, cut to maxDetailLen bytes on a rune
// boundary.
func clip(s string) string {
	if len(s) > maxDetailLen {
		cut := maxDetailLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

// clipList renders a list of strings for a log detail.
func clipList(items []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, it := range items {
		if i == maxDetailItems {
			b.WriteString(" ...")
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(clip(it))
	}
	b.WriteByte(']')
	return b.String()
}
