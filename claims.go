package oauth2jwt

import (
	"bytes"
	stdjson "encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/go-jose/go-jose/v4/json"
)

// claimsKey is the replacer key under which a verified request's *Claims
// are found. It cannot be written as a placeholder in a config (it starts
// with a NUL byte), so it never prints.
const claimsKey = "\x00oauth2_jwt.claims"

// ClaimsFromRequest returns the verified claims of the request, set by an
// oauth2_jwt handler earlier in the chain, or nil and false when the
// request carried no verified token (a public path, for example). The
// claims travel with the request's Caddy replacer, so handing them over
// costs the hot path nothing.
func ClaimsFromRequest(r *http.Request) (*Claims, bool) {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return nil, false
	}
	v, _ := repl.Get(claimsKey)
	c, ok := v.(*Claims)
	return c, ok && c != nil
}

// Claims is the verified payload of a token. It is immutable and safe for
// concurrent use.
type Claims struct {
	provider string
	tenant   string                     // the tenant of a multi-tenant issuer, or ""
	raw      []byte                     // the payload JSON, as signed
	top      map[string]json.RawMessage // top-level members, or nil once compacted
	// spans locates the top-level members in raw once compact has
	// dropped top: the form the verified-token cache keeps.
	spans    []claimSpan
	subject  string
	expiry   time.Time
	notAfter time.Time // expiry plus leeway: accepted strictly before this
	// notBefore is max(nbf, iat) minus leeway: accepted from this instant.
	notBefore time.Time
	// cnf is the parsed cnf claim (DPoP key, client certificate), or nil.
	cnf *cnfBinding
	// replaceFn is replace as a function value, made once so that a
	// cached token's requests do not allocate it again.
	replaceFn caddy.ReplacerFunc
}

// Provider returns the name of the provider whose key verified the token.
func (c *Claims) Provider() string { return c.provider }

// Tenant returns the tenant matched by a multi-tenant issuer template, or "".
func (c *Claims) Tenant() string { return c.tenant }

// Subject returns the sub claim, or "".
func (c *Claims) Subject() string { return c.subject }

// Expiry returns the exp claim.
func (c *Claims) Expiry() time.Time { return c.expiry }

// JSON returns a copy of the payload JSON exactly as signed.
func (c *Claims) JSON() []byte { return bytes.Clone(c.raw) }

// Raw returns a copy of the JSON of the claim at name, looked up as the
// placeholders do: first a top-level claim named exactly name, else a
// dotted path into nested objects.
func (c *Claims) Raw(name string) (json.RawMessage, bool) {
	v, ok := c.lookup(name)
	if !ok {
		return nil, false
	}
	return bytes.Clone(v), true
}

// lookup is Raw without the copy. The result aliases the signed payload,
// which every reader shares (and the verified-token cache keeps): it must
// never be written to, nor decoded into (a json.RawMessage that is the
// target of Unmarshal is overwritten in place).
func (c *Claims) lookup(name string) (json.RawMessage, bool) {
	if v, ok := c.member(name); ok {
		return v, true
	}
	head, rest, more := strings.Cut(name, ".")
	if !more {
		return nil, false
	}
	v, ok := c.member(head)
	for {
		if !ok || len(v) == 0 || v[0] != '{' {
			return nil, false
		}
		var next map[string]json.RawMessage
		if err := json.Unmarshal(v, &next); err != nil {
			return nil, false
		}
		// A member of the nested object may itself contain a dot.
		if v, ok := next[rest]; ok {
			return v, true
		}
		if head, rest, more = strings.Cut(rest, "."); !more {
			return nil, false
		}
		v, ok = next[head]
	}
}

// member returns the top-level member called name. The result aliases
// the signed payload, as lookup's does.
func (c *Claims) member(name string) (json.RawMessage, bool) {
	if c.top != nil {
		v, ok := c.top[name]
		return v, ok
	}
	for _, m := range c.spans {
		// The comparison does not copy: the compiler compares the bytes.
		if int(m.name1-m.name0) == len(name) && string(c.raw[m.name0:m.name1]) == name {
			return c.raw[m.val0:m.val1:m.val1], true
		}
	}
	return nil, false
}

// String returns the claim at name formatted as its placeholder is: strings
// as they are, numbers without exponent where integral, booleans as
// true/false, arrays of scalars joined with commas, objects as compact JSON,
// and "" for an absent or null claim.
func (c *Claims) String(name string) string {
	v, ok := c.lookup(name)
	if !ok {
		return ""
	}
	return formatJSON(v)
}

// Strings returns a claim as a list of strings: a string claim as one item,
// an array claim item by item (each formatted as String would); nil when the
// claim is absent.
func (c *Claims) Strings(name string) []string {
	v, ok := c.lookup(name)
	if !ok || len(v) == 0 {
		return nil
	}
	if v[0] != '[' {
		if s := formatJSON(v); s != "" {
			return []string{s}
		}
		return nil
	}
	items, ok := arrayItems(v)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, formatJSON(it))
	}
	return out
}

func formatJSON(v []byte) string {
	if len(v) == 0 {
		return ""
	}
	switch v[0] {
	case '"':
		s, _ := jsonString(v)
		return s
	case 'n':
		return ""
	case 't', 'f':
		return string(v)
	case '[':
		items, ok := arrayItems(v)
		if !ok {
			return ""
		}
		parts := make([]string, 0, len(items))
		for _, it := range items {
			if len(it) > 0 && (it[0] == '[' || it[0] == '{') {
				return compactJSON(v)
			}
			parts = append(parts, formatJSON(it))
		}
		return strings.Join(parts, ",")
	case '{':
		return compactJSON(v)
	default:
		return formatNumber(v)
	}
}

// arrayItems splits a JSON array into its items. The items alias v; they
// are decoded into a fresh slice, never into one that holds aliases of the
// payload, which the decoder would overwrite in place.
func arrayItems(v json.RawMessage) ([]json.RawMessage, bool) {
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		return nil, false
	}
	return items, true
}

func compactJSON(v []byte) string {
	var b bytes.Buffer
	if err := stdjson.Compact(&b, v); err != nil {
		return ""
	}
	return b.String()
}

// formatNumberOrBool prints a JSON number or boolean as its placeholder
// does.
func formatNumberOrBool(v []byte) string {
	if v[0] == 't' || v[0] == 'f' {
		return string(v)
	}
	return formatNumber(v)
}

// formatNumber prints a JSON number; integral values print without
// exponent (1.7672256e+09 prints as 1767225600).
func formatNumber(v []byte) string {
	s := string(v)
	if !strings.ContainsAny(s, ".eE") {
		return s
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return s
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// replace resolves the placeholders of a verified request. It is given to
// the replacer with Map, so claims are only formatted when a later handler
// asks for them.
func (c *Claims) replace(key string) (any, bool) {
	switch key {
	case claimsKey:
		return c, true
	case "http.auth.user.id":
		return c.subject, true
	case "http.auth.jwt.provider":
		return c.provider, true
	case "http.auth.jwt.tenant":
		return c.tenant, true
	case "http.auth.jwt.claims_json":
		return string(c.raw), true
	case "http.auth.jwt.error":
		return "", true
	case "http.auth.jwt.dpop.jkt":
		// A token with cnf.jkt is accepted only with a proof whose key
		// has this thumbprint.
		if c.cnf != nil && c.cnf.hasJKT {
			return c.cnf.jktStr, true
		}
		return "", true
	case "http.auth.jwt.cnf.x5t#S256":
		// Likewise, only with the client certificate of this digest.
		if c.cnf != nil && c.cnf.hasX5T {
			return c.cnf.x5tStr, true
		}
		return "", true
	}
	if name, ok := strings.CutPrefix(key, "http.auth.jwt.claims."); ok {
		return c.String(name), true
	}
	if strings.HasPrefix(key, "http.auth.jwt.") {
		return "", true
	}
	return nil, false
}

// anonymousPlaceholders resolves the module's placeholders to "" on
// requests that pass without a verified token, so they never print as
// their literal text. Values set statically (for example
// {http.auth.jwt.error} on a rejection) take precedence in the replacer.
func anonymousPlaceholders(key string) (any, bool) {
	if key == "http.auth.user.id" || strings.HasPrefix(key, "http.auth.jwt.") {
		return "", true
	}
	return nil, false
}

// numericDate parses an RFC 7519 NumericDate: a JSON number of seconds
// since the epoch, non-negative and within int64 seconds.
func numericDate(v json.RawMessage) (time.Time, bool) {
	if len(v) == 0 || v[0] == '"' || v[0] == '-' || v[0] == '{' || v[0] == '[' || v[0] == 't' || v[0] == 'f' || v[0] == 'n' {
		return time.Time{}, false
	}
	s := string(v)
	if !strings.ContainsAny(s, ".eE") {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n > maxNumericDate {
			return time.Time{}, false
		}
		return time.Unix(n, 0), true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// maxNumericDate is the year 9999: later dates are refused as invalid
// rather than overflowing time arithmetic.
const maxNumericDate = 253402300799

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

// maxCompactMembers bounds the payloads compact rewrites: one with more
// top-level members keeps the decoder's map (real access tokens have a
// dozen or two), so that a look-up by name stays a short scan.
const maxCompactMembers = 64

// memberSpan locates one top-level member in a payload: its name between
// the quotes, and its value.
type memberSpan struct {
	name0, name1 int32
	val0, val1   int32
	escaped      bool // the name has escapes: its decoded form differs
}

// claimSpan is a memberSpan of a compacted Claims, whose names are
// spelled without escapes: 16 bytes a member, where a map entry costs
// a name string, a value slice and the table's slack.
type claimSpan struct {
	name0, name1 int32
	val0, val1   int32
}

// compact rewrites the claims of a verified token, before anyone else
// sees them, into the form the verified-token cache keeps: the same
// members with the same bytes, located by offsets into raw instead of a
// map of names and copies. Anything unexpected (a member name spelled
// with escapes, more than maxCompactMembers members, a payload that is
// not the decoder's map member for member) leaves c as it was.
func (c *Claims) compact() {
	if len(c.top) == 0 || len(c.top) > maxCompactMembers || len(c.raw) > math.MaxInt32 {
		return
	}
	var buf [maxCompactMembers]memberSpan
	found, ok := topMembers(c.raw, buf[:0])
	if !ok || len(found) != len(c.top) {
		return
	}
	spans := make([]claimSpan, len(found))
	for i, m := range found {
		if m.escaped {
			return
		}
		v, ok := c.top[string(c.raw[m.name0:m.name1])]
		if !ok || !bytes.Equal(c.raw[m.val0:m.val1], v) {
			return
		}
		spans[i] = claimSpan{name0: m.name0, name1: m.name1, val0: m.val0, val1: m.val1}
	}
	// The decoder refuses duplicate members, so len(found) distinct
	// names each matching a member of top are all of top.
	c.spans, c.top = spans, nil
}

// topMembers returns the spans of the top-level members of raw, a JSON
// object the decoder has already accepted, or false when raw does not
// read as one (the caller then keeps the decoder's map). Nothing is
// decoded; bounds are checked on every step, whatever raw holds.
func topMembers(raw []byte, out []memberSpan) ([]memberSpan, bool) {
	i := skipJSONSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, false
	}
	i = skipJSONSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return out, skipJSONSpace(raw, i+1) == len(raw)
	}
	for {
		if i >= len(raw) || raw[i] != '"' || len(out) == cap(out) {
			return nil, false
		}
		end, escaped, ok := scanJSONString(raw, i)
		if !ok {
			return nil, false
		}
		m := memberSpan{name0: int32(i + 1), name1: int32(end - 1), escaped: escaped}
		i = skipJSONSpace(raw, end)
		if i >= len(raw) || raw[i] != ':' {
			return nil, false
		}
		i = skipJSONSpace(raw, i+1)
		end, ok = scanJSONValue(raw, i)
		if !ok {
			return nil, false
		}
		m.val0, m.val1 = int32(i), int32(end)
		out = append(out, m)
		i = skipJSONSpace(raw, end)
		if i >= len(raw) {
			return nil, false
		}
		switch raw[i] {
		case ',':
			i = skipJSONSpace(raw, i+1)
		case '}':
			return out, skipJSONSpace(raw, i+1) == len(raw)
		default:
			return nil, false
		}
	}
}

// skipJSONSpace returns the index of the first byte at or after i that is
// not JSON whitespace.
func skipJSONSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r') {
		i++
	}
	return i
}

// scanJSONString returns the index after the string that starts with the
// quote at i, and whether it has escapes.
func scanJSONString(raw []byte, i int) (end int, escaped, ok bool) {
	for j := i + 1; j < len(raw); j++ {
		switch raw[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped, true
		}
	}
	return 0, false, false
}

// scanJSONValue returns the index after the value that starts at i:
// a string, an object or array (to its matching bracket, strings
// skipped), or a number or literal (to the next delimiter).
func scanJSONValue(raw []byte, i int) (int, bool) {
	if i >= len(raw) {
		return 0, false
	}
	switch raw[i] {
	case '"':
		end, _, ok := scanJSONString(raw, i)
		return end, ok
	case '{', '[':
		depth := 0
		for j := i; j < len(raw); j++ {
			switch raw[j] {
			case '"':
				end, _, ok := scanJSONString(raw, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	}
	j := i
	for j < len(raw) {
		switch raw[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return j, j > i
		}
		j++
	}
	return j, j > i
}
