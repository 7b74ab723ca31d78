package oauth2jwt

import (
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
)

// TokenSource is one place a bearer token is looked for. Exactly one of
// Header, Cookie or Query is set.
type TokenSource struct {
	// A request header carrying the token. With Scheme, the value must be
	// `<scheme> <token>` (scheme compared case-insensitively); without
	// it, the whole value is the token.
	Header string `json:"header,omitempty"`

	// The authentication scheme of Header, such as `Bearer`.
	Scheme string `json:"scheme,omitempty"`

	// A cookie carrying the token.
	Cookie string `json:"cookie,omitempty"`

	// A query parameter carrying the token. Discouraged (RFC 6750 section
	// 5.3: URLs end up in logs and browser history); the parameter is
	// removed from the URL before the request goes on.
	Query string `json:"query,omitempty"`
}

func (s *TokenSource) check() error {
	n := 0
	for _, v := range []string{s.Header, s.Cookie, s.Query} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("token_source: exactly one of header, cookie or query must be set")
	}
	if s.Scheme != "" && s.Header == "" {
		return errors.New("token_source: scheme is only valid with header")
	}
	if strings.ContainsAny(s.Header+s.Scheme+s.Cookie+s.Query, " \t\r\n\"") {
		return errors.New("token_source: names must not contain spaces or quotes")
	}
	return nil
}

// sourceKind tells where a token came from.
type sourceKind uint8

const (
	sourceDefault sourceKind = iota
	sourceHeader
	sourceCookie
	sourceQuery
)

// tokenSource is the provisioned form of a TokenSource.
type tokenSource struct {
	kind   sourceKind
	name   string // canonical header name, cookie name or query parameter
	scheme string
}

func (s TokenSource) provisioned() tokenSource {
	switch {
	case s.Header != "":
		return tokenSource{kind: sourceHeader, name: textproto.CanonicalMIMEHeaderKey(s.Header), scheme: s.Scheme}
	case s.Cookie != "":
		return tokenSource{kind: sourceCookie, name: s.Cookie}
	default:
		return tokenSource{kind: sourceQuery, name: s.Query}
	}
}

// dpopSource is the source of a token sent as `Authorization: DPoP`.
var dpopSource = &tokenSource{kind: sourceHeader, name: "Authorization", scheme: "DPoP"}

// schemeOf tells the authentication scheme a token came with, which picks
// the challenge its rejection carries.
func schemeOf(src *tokenSource) authScheme {
	if src == dpopSource {
		return schemeDPoP
	}
	return schemeBearer
}

// extractToken finds the request's token in the configured sources, in
// order. It returns the source that yielded it (nil for the default
// Authorization: Bearer, dpopSource for `Authorization: DPoP` when dpop
// is true), or errMissingToken when no source has one. Without dpop,
// `Authorization: DPoP` is no credential.
func extractToken(r *http.Request, sources []tokenSource, maxTokenSize int, dpop bool) (string, *tokenSource, *authError) {
	if dpop {
		if tok, ok, aerr := dpopToken(r.Header, maxTokenSize); aerr != nil || ok {
			return tok, dpopSource, aerr
		}
	}
	if len(sources) == 0 {
		tok, aerr := bearerToken(r.Header, maxTokenSize)
		return tok, nil, aerr
	}
	for i := range sources {
		s := &sources[i]
		var vals []string
		switch s.kind {
		case sourceHeader:
			vals = r.Header[s.name]
		case sourceCookie:
			for _, c := range r.CookiesNamed(s.name) {
				vals = append(vals, c.Value)
			}
		case sourceQuery:
			vals = queryValues(r.URL.RawQuery, s.name)
		}
		switch len(vals) {
		case 0:
			continue
		case 1:
		default:
			return "", nil, errSeveralTokens
		}
		v := vals[0]
		if len(v) > headerLimit(maxTokenSize) {
			return "", nil, errHeaderTooLarge
		}
		if s.kind == sourceHeader && s.scheme != "" {
			scheme, tok, ok := strings.Cut(v, " ")
			if !ok || !strings.EqualFold(scheme, s.scheme) {
				continue // another scheme: not this source's token
			}
			v = strings.TrimLeft(tok, " ")
		} else {
			v = strings.TrimSpace(v)
		}
		if v == "" {
			continue
		}
		return v, s, nil
	}
	return "", nil, errMissingToken
}

var urlUnescape = url.QueryUnescape

var errSeveralTokens = &authError{step: stepRequest, reason: reasonInvalidRequest, detail: "a token source yields several tokens"}

// queryValues returns the raw values of one query parameter, unescaped,
// without parsing the rest of the query.
func queryValues(rawQuery, name string) []string {
	var out []string
	for part := range strings.SplitSeq(rawQuery, "&") {
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			if uk, err := urlUnescape(k); err != nil || uk != name {
				continue
			}
		}
		uv, err := urlUnescape(v)
		if err != nil {
			uv = "\x00" // an undecodable value is refused later as a malformed token
		}
		out = append(out, uv)
	}
	return out
}

// removeQueryParam deletes every occurrence of a parameter from a raw
// query, keeping the order and encoding of the others.
func removeQueryParam(rawQuery, name string) string {
	var b strings.Builder
	for part := range strings.SplitSeq(rawQuery, "&") {
		k, _, _ := strings.Cut(part, "=")
		if k == name {
			continue
		}
		if uk, err := urlUnescape(k); err == nil && uk == name {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	return b.String()
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

// dpopToken extracts the token of an `Authorization: DPoP` header; ok is
// false when the header has another scheme or is absent.
func dpopToken(h http.Header, maxTokenSize int) (tok string, ok bool, aerr *authError) {
	vals := h["Authorization"]
	if len(vals) == 0 {
		return "", false, nil
	}
	if len(vals) > 1 {
		return "", false, errSeveralHeaders
	}
	v := vals[0]
	if len(v) < 4 || !strings.EqualFold(v[:4], "dpop") || (len(v) > 4 && v[4] != ' ') {
		if len(v) > 4 && strings.EqualFold(v[:4], "dpop") && (v[4] < 0x21 || v[4] == 0x7f) {
			return "", false, errBadHeader
		}
		return "", false, nil
	}
	if len(v) > headerLimit(maxTokenSize) {
		return "", false, errHeaderTooLarge
	}
	tok = strings.TrimLeft(v[min(len(v), 5):], " ")
	if tok == "" {
		return "", false, errMissingToken
	}
	return tok, true, nil
}

// headerLimit is the largest Authorization header value considered at all;
// anything longer is a malformed request (400) rather than a token.
func headerLimit(maxTokenSize int) int {
	return max(4*maxTokenSize, 64<<10)
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
