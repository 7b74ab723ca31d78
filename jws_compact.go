package oauth2jwt

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
)

// The compact JWS path: a token's three segments read in one pass each,
// with the accept and refuse decisions (and reason codes) the verifier
// made when it parsed tokens with go-jose (jwt.ParseSigned, plus the
// header and payload checks around it). FuzzVerifyDifferential runs the
// two side by side. go-jose itself still reads the rare header that embeds
// a key or a certificate chain (jwk, x5c), which it validates in ways not
// worth repeating: such a token is refused or ignored exactly as before.

// parsedToken is a token whose shape, header and payload passed the
// checks that need no provider.
type parsedToken struct {
	alg jose.SignatureAlgorithm
	kid string // the decoded kid, "" when absent
	typ string // the decoded typ, "" when absent
	// input is the JWS signing input, the token up to its second dot.
	input   string
	sig     []byte
	payload []byte
	top     map[string]json.RawMessage
}

// errHeaderInvalid is go-jose's refusal of a header member it decodes
// itself (a nonce that is not a string, a value its decoder refuses, an
// embedded key or certificate chain it cannot read).
var errHeaderInvalid = &authError{step: stepHeader, reason: reasonMalformed, detail: "token header or encoding invalid"}

// maxStackHeader is the largest decoded header read without a heap
// buffer; real headers are well under 200 bytes.
const maxStackHeader = 512

// maxStackMembers is how many top-level members are collected without a
// heap buffer.
const maxStackMembers = 32

// parse runs the checks that need no provider: size, compact shape, the
// JOSE header, and a UTF-8 JSON object payload without duplicate members.
func (v *verifier) parse(token string) (*parsedToken, *authError) {
	if len(token) > v.maxTokenSize {
		return nil, errTooLarge
	}
	dot1, dot2, ok := compactParts(token)
	if !ok {
		return nil, errNotCompact
	}
	pt := &parsedToken{input: token[:dot2]}
	if aerr := v.parseHeader(token, dot1, pt); aerr != nil {
		return nil, aerr
	}
	sig, err := base64.RawURLEncoding.DecodeString(token[dot2+1:])
	if err != nil {
		return nil, errHeaderInvalid
	}
	pt.sig = sig
	if aerr := parsePayload(token[dot1+1:dot2], pt); aerr != nil {
		return nil, aerr
	}
	return pt, nil
}

// parseHeader decodes the protected header token[:dot1] into pt, with the
// checks in the order they were made when go-jose read it: UTF-8 and a
// JSON object without duplicate members, the registered members' types,
// the algorithm, the members go-jose decodes itself, then the features
// refused (checkHeader's crit, b64, zip and nested-JWT cty).
func (v *verifier) parseHeader(token string, dot1 int, pt *parsedToken) *authError {
	seg := token[:dot1]
	var buf [maxStackHeader]byte
	dst := buf[:]
	if n := base64.RawURLEncoding.DecodedLen(len(seg)); n > len(dst) {
		dst = make([]byte, n)
	}
	n, err := base64.RawURLEncoding.Decode(dst, []byte(seg))
	if err != nil {
		return errNotCompact
	}
	if !utf8.Valid(dst[:n]) {
		return errHeaderNotUTF8
	}
	h := string(dst[:n])
	var mbuf [maxStackMembers]jsonMember
	members, deepBad, ok := scanObject(h, headerRules, mbuf[:0])
	if !ok {
		return errHeaderNotObj
	}
	// headerMemberTypes, in the header's order.
	for _, m := range members {
		want, registered := headerMemberTypes[m.name]
		if !registered {
			continue
		}
		val := h[m.v0:m.v1]
		if val[0] != want {
			return fail(stepHeader, reasonMalformed, "header member "+m.name+" has the wrong JSON type")
		}
		if want == '[' && !arrayOfStrings(val) {
			return fail(stepHeader, reasonMalformed, "header member "+m.name+" is not an array of strings")
		}
	}
	var alg, cty string
	var hasCty, badNonce, forbidden, embeds bool
	for _, m := range members {
		val := h[m.v0:m.v1]
		if val == "null" {
			// go-jose skips a null member as if absent (alg included).
			continue
		}
		switch m.name {
		case "alg":
			alg, _ = decodedString(val) // not a string: no algorithm
		case "kid":
			pt.kid, _ = decodedString(val)
		case "typ":
			pt.typ, _ = decodedString(val)
		case "cty":
			cty, hasCty = decodedString(val)
		case "nonce":
			badNonce = val[0] != '"'
		case "crit", "b64", "zip":
			forbidden = true
		case "jwk", "x5c":
			embeds = true
		}
	}
	if aerr := v.checkParseAlg(alg); aerr != nil {
		return aerr
	}
	pt.alg = jose.SignatureAlgorithm(alg)
	if deepBad || badNonce {
		return errHeaderInvalid
	}
	if embeds {
		if _, err := jose.ParseSignedCompact(token, v.parseAlgs); err != nil {
			return errHeaderInvalid
		}
	}
	if forbidden || hasCty && (strings.EqualFold(cty, "JWT") || strings.EqualFold(cty, "application/jwt")) {
		return errHeaderForbidden
	}
	return nil
}

// checkParseAlg is go-jose's first header check: the algorithm must be one
// of those some provider allows (with none configured, go-jose refused
// every token as malformed).
func (v *verifier) checkParseAlg(alg string) *authError {
	if len(v.parseAlgs) == 0 {
		return errHeaderInvalid
	}
	for _, a := range v.parseAlgs {
		if string(a) == alg {
			return nil
		}
	}
	return errAlgUnknown
}

// parsePayload decodes the payload segment into pt: UTF-8, one JSON object
// whose members' names are unique at every depth, and whose nested numbers
// fit a float64 (RFC 7519 section 7.2 step 10; go-jose's decoder). The top
// map's values are subslices of pt.payload, each capped at its own end.
func parsePayload(seg string, pt *parsedToken) *authError {
	payload, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return errNotCompact
	}
	if !utf8.Valid(payload) {
		// RFC 8259 section 8.1, RFC 7519 section 7.2: the claims are
		// UTF-8; a decoder that replaces invalid bytes would read them
		// differently from one that keeps them.
		return errPayloadNotUTF8
	}
	// The names are substrings of one copy of the payload.
	s := string(payload)
	var mbuf [maxStackMembers]jsonMember
	members, deepBad, ok := scanObject(s, payloadRules, mbuf[:0])
	if !ok || deepBad {
		return errPayloadNotObj
	}
	top := make(map[string]json.RawMessage, len(members))
	for _, m := range members {
		top[m.name] = payload[m.v0:m.v1:m.v1]
	}
	pt.payload = payload
	pt.top = top
	return nil
}
