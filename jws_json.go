package oauth2jwt

import (
	"strconv"
	"strings"

	"github.com/go-jose/go-jose/v4/json"
)

// The token's header and payload are read by one strict JSON scanner that
// gives, in a single pass and without reflection, the answers go-jose's
// decoder (github.com/go-jose/go-jose/v4/json) gave the verifier before:
// the same grammar (RFC 8259, at most maxJSONDepth nested containers), the
// same member names (escapes decoded, a lone surrogate read as U+FFFD),
// duplicate names refused where that decoder refuses them, and numbers that
// a float64 cannot hold refused where it decoded them into interface
// values. FuzzVerifyDifferential holds the two to the same answers.

// maxJSONDepth is go-jose's decoder's nesting limit (its scanner's
// maxNestingDepth): a document with more nested objects and arrays is not
// JSON to it, so it is not to us.
const maxJSONDepth = 10000

// maxLinearNames (nested objects) and maxLinearMembers (the top-level
// object) are how many member names of one object are compared one by one
// for duplicates; a larger object switches to a set, so a hostile object
// of thousands of members costs linear time.
const (
	maxLinearNames   = 16
	maxLinearMembers = 32
)

// maxPlainDigits is the most integer digits a number without exponent may
// have and still be known to fit a float64 (whose largest value is about
// 1.8e308) without parsing it.
const maxPlainDigits = 308

// memberRules says which top-level member values are checked as go-jose
// checked them when it decoded them into interface values (duplicate names
// at any depth, float64 range), and which only for their grammar.
type memberRules uint8

const (
	// payloadRules: the payload was decoded into map[string]RawMessage,
	// then each object or array member again into an interface value.
	payloadRules memberRules = iota
	// headerRules: go-jose decoded every header member into an interface
	// value, except those it reads itself (alg, kid, nonce, jwk, x5c).
	headerRules
)

// deep reports whether the value of the member name, starting with first,
// is decoded as an interface value.
func (r memberRules) deep(name string, first byte) bool {
	if r == payloadRules {
		return first == '{' || first == '['
	}
	switch name {
	case "alg", "kid", "nonce", "jwk", "x5c":
		return false
	}
	return true
}

// jsonMember is one top-level member of a scanned object: its decoded
// name, and its value as s[v0:v1] (no surrounding white space).
type jsonMember struct {
	name   string
	v0, v1 int
}

// jsonFrame is one open container of the value being scanned.
type jsonFrame struct {
	object bool
	// names is where this object's member names start in
	// jsonScanner.names; set replaces them past maxLinearNames.
	names int
	set   map[string]struct{}
}

// scanObject reads s as a JSON object (white space around it allowed) and
// appends its top-level members, in document order, to out. ok is false
// when s is not valid JSON, not an object, deeper than maxJSONDepth, or
// has two top-level members of the same name. deepBad is true when, by
// rules, a member's value holds what go-jose refused to decode into an
// interface value; the scan then still checks the whole grammar, since a
// caller answers a grammar error first.
func scanObject(s string, rules memberRules, out []jsonMember) (members []jsonMember, deepBad, ok bool) {
	var seen map[string]struct{}
	i := skipSpace(s, 0)
	if i >= len(s) || s[i] != '{' {
		return nil, false, false
	}
	i = skipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		return out, false, skipSpace(s, i+1) == len(s)
	}
	for {
		if i >= len(s) || s[i] != '"' {
			return nil, false, false
		}
		end, escaped, ok := scanString(s, i)
		if !ok {
			return nil, false, false
		}
		name, ok := memberName(s, i, end, escaped)
		if !ok {
			return nil, false, false
		}
		if seen != nil {
			if _, dup := seen[name]; dup {
				return nil, false, false
			}
			seen[name] = struct{}{}
		} else {
			for _, m := range out {
				if m.name == name {
					return nil, false, false
				}
			}
			if len(out) >= maxLinearMembers {
				seen = make(map[string]struct{}, 2*len(out))
				for _, m := range out {
					seen[m.name] = struct{}{}
				}
				seen[name] = struct{}{}
			}
		}
		i = skipSpace(s, end)
		if i >= len(s) || s[i] != ':' {
			return nil, false, false
		}
		i = skipSpace(s, i+1)
		if i >= len(s) {
			return nil, false, false
		}
		v0 := i
		var bad bool
		if i, bad, ok = scanValue(s, i, rules.deep(name, s[i])); !ok {
			return nil, false, false
		}
		deepBad = deepBad || bad
		out = append(out, jsonMember{name: name, v0: v0, v1: i})
		i = skipSpace(s, i)
		if i >= len(s) {
			return nil, false, false
		}
		switch s[i] {
		case ',':
			i = skipSpace(s, i+1)
		case '}':
			return out, deepBad, skipSpace(s, i+1) == len(s)
		default:
			return nil, false, false
		}
	}
}

// memberName is the decoded name of the string s[i:end]: a substring
// when it has no escape, else what go-jose's decoder makes of it.
func memberName(s string, i, end int, escaped bool) (string, bool) {
	if !escaped {
		return s[i+1 : end-1], true
	}
	return jsonString(json.RawMessage(s[i:end]))
}

// decodedString decodes a JSON string value already checked by a scan.
func decodedString(v string) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	if strings.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1], true
	}
	return jsonString(json.RawMessage(v))
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace[T string | []byte](s T, i int) int {
	for i < len(s) {
		switch s[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// The states of jsonScanner.value between two tokens.
const (
	wantValue  = iota // a value starts at i
	wantName          // a member name starts at i
	afterValue        // a value ended just before i
)

// scanValue scans the JSON value starting at s[i] and returns the index
// just past it. deep says whether it is checked as go-jose checked
// interface values; deepBad reports a duplicate name or a number out of
// float64 range found there (the value is still valid JSON). Containers
// are kept on an explicit stack, so a deeply nested document costs no
// goroutine stack; its inline buffers keep a token's usual few nested
// objects allocation free.
func scanValue(s string, i int, deep bool) (end int, deepBad, ok bool) {
	var frameBuf [8]jsonFrame
	var nameBuf [16]string
	frames, names := frameBuf[:0], nameBuf[:0]
	pop := func() {
		names = names[:frames[len(frames)-1].names]
		frames = frames[:len(frames)-1]
	}
	state := wantValue
	for {
		switch state {
		case wantValue:
			if i >= len(s) {
				return 0, false, false
			}
			switch c := s[i]; {
			case c == '{' || c == '[':
				// The top-level object is one level already.
				if len(frames)+2 > maxJSONDepth {
					return 0, false, false
				}
				frames = append(frames, jsonFrame{object: c == '{', names: len(names)})
				i = skipSpace(s, i+1)
				if i < len(s) && (c == '{' && s[i] == '}' || c == '[' && s[i] == ']') {
					pop()
					i++
					state = afterValue
				} else if c == '{' {
					state = wantName
				}
				continue
			case c == '"':
				e, _, ok := scanString(s, i)
				if !ok {
					return 0, false, false
				}
				i = e
			case c == 't':
				if !strings.HasPrefix(s[i:], "true") {
					return 0, false, false
				}
				i += 4
			case c == 'f':
				if !strings.HasPrefix(s[i:], "false") {
					return 0, false, false
				}
				i += 5
			case c == 'n':
				if !strings.HasPrefix(s[i:], "null") {
					return 0, false, false
				}
				i += 4
			case c == '-' || '0' <= c && c <= '9':
				e, huge, ok := scanNumber(s, i, deep)
				if !ok {
					return 0, false, false
				}
				deepBad = deepBad || huge
				i = e
			default:
				return 0, false, false
			}
			state = afterValue
		case wantName:
			if i >= len(s) || s[i] != '"' {
				return 0, false, false
			}
			e, escaped, ok := scanString(s, i)
			if !ok {
				return 0, false, false
			}
			if deep {
				name, ok := memberName(s, i, e, escaped)
				if !ok {
					return 0, false, false
				}
				var dup bool
				names, dup = addName(&frames[len(frames)-1], names, name)
				deepBad = deepBad || dup
			}
			i = skipSpace(s, e)
			if i >= len(s) || s[i] != ':' {
				return 0, false, false
			}
			i = skipSpace(s, i+1)
			state = wantValue
		case afterValue:
			if len(frames) == 0 {
				return i, deepBad, true
			}
			i = skipSpace(s, i)
			if i >= len(s) {
				return 0, false, false
			}
			object := frames[len(frames)-1].object
			switch c := s[i]; {
			case c == ',':
				i = skipSpace(s, i+1)
				if object {
					state = wantName
				} else {
					state = wantValue
				}
			case c == '}' && object || c == ']' && !object:
				pop()
				i++
			default:
				return 0, false, false
			}
		}
	}
}

// addName records a member name of the innermost (deep) object top, whose
// names so far end names, and reports whether the object already has it.
func addName(top *jsonFrame, names []string, name string) ([]string, bool) {
	if top.set != nil {
		if _, dup := top.set[name]; dup {
			return names, true
		}
		top.set[name] = struct{}{}
		return names, false
	}
	for _, n := range names[top.names:] {
		if n == name {
			return names, true
		}
	}
	names = append(names, name)
	if len(names)-top.names > maxLinearNames {
		top.set = make(map[string]struct{}, 2*maxLinearNames)
		for _, n := range names[top.names:] {
			top.set[n] = struct{}{}
		}
		names = names[:top.names]
	}
	return names, false
}

// scanString scans the string starting at s[i] (a quote) and returns the
// index just past its closing quote, and whether it has escapes. Control
// characters are refused, as is any escape but RFC 8259's. The caller has
// checked that s is UTF-8.
func scanString[T string | []byte](s T, i int) (end int, escaped, ok bool) {
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return j + 1, escaped, true
		case c == '\\':
			escaped = true
			j++
			if j >= len(s) {
				return 0, false, false
			}
			switch s[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(s) || !isHex(s[j+1]) || !isHex(s[j+2]) || !isHex(s[j+3]) || !isHex(s[j+4]) {
					return 0, false, false
				}
				j += 4
			default:
				return 0, false, false
			}
		case c < 0x20:
			return 0, false, false
		}
	}
	return 0, false, false
}

// scanNumber scans the number starting at s[i] (RFC 8259 section 6) and
// returns the index just past it. In a deep value, huge reports a number
// a float64 cannot hold, which go-jose's decoder refused there.
func scanNumber(s string, i int, deep bool) (end int, huge, ok bool) {
	j := i
	if s[j] == '-' {
		j++
	}
	digits := j
	switch {
	case j < len(s) && s[j] == '0':
		j++
	case j < len(s) && '1' <= s[j] && s[j] <= '9':
		for j < len(s) && '0' <= s[j] && s[j] <= '9' {
			j++
		}
	default:
		return 0, false, false
	}
	digits = j - digits
	if j < len(s) && s[j] == '.' {
		j++
		k := j
		for j < len(s) && '0' <= s[j] && s[j] <= '9' {
			j++
		}
		if j == k {
			return 0, false, false
		}
	}
	exponent := false
	if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
		exponent = true
		j++
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		k := j
		for j < len(s) && '0' <= s[j] && s[j] <= '9' {
			j++
		}
		if j == k {
			return 0, false, false
		}
	}
	if deep && (exponent || digits > maxPlainDigits) {
		if _, err := strconv.ParseFloat(s[i:j], 64); err != nil {
			huge = true
		}
	}
	return j, huge, true
}

// arrayOfStrings reports whether v, a JSON array already checked by a
// scan, holds only strings.
func arrayOfStrings(v string) bool {
	i := skipSpace(v, 1)
	if i < len(v) && v[i] == ']' {
		return true
	}
	for i < len(v) {
		if v[i] != '"' {
			return false
		}
		end, _, ok := scanString(v, i)
		if !ok {
			return false
		}
		i = skipSpace(v, end)
		if i < len(v) && v[i] == ']' {
			return true
		}
		i = skipSpace(v, i+1) // the comma
	}
	return false
}
