package oauth2jwt

import (
	"encoding/base64"
	"net/http"
	"net/textproto"
	"strings"
	"unicode/utf8"
)

// ClaimHeader forwards one claim to the upstream as a request header.
type ClaimHeader struct {
	// The claim, by name or dotted path, formatted as its placeholder is.
	Claim string `json:"claim,omitempty"`
	// The request header to set.
	Header string `json:"header,omitempty"`
}

// forwarding holds the provisioned claim-forwarding settings.
type forwarding struct {
	claims    []ClaimHeader // Header canonicalized
	jsonHdr   string        // canonical header for the whole payload, or ""
	stripAuth bool
	reserved  []string // every header the module sets: removed from client requests
}

func newForwarding(claims []ClaimHeader, jsonHeader string, stripAuth bool) forwarding {
	f := forwarding{stripAuth: stripAuth}
	for _, c := range claims {
		c.Header = textproto.CanonicalMIMEHeaderKey(c.Header)
		f.claims = append(f.claims, c)
		f.reserved = append(f.reserved, c.Header)
	}
	if jsonHeader != "" {
		f.jsonHdr = textproto.CanonicalMIMEHeaderKey(jsonHeader)
		f.reserved = append(f.reserved, f.jsonHdr)
	}
	return f
}

// scrub removes every client-sent copy of the headers the module sets, on
// every request, so a client can never spoof them.
func (f *forwarding) scrub(h http.Header) {
	deleteHeaders(h, f.reserved)
}

// deleteHeaders removes the headers of names (canonical) from h, with
// their underscore spellings: CGI, WSGI, PHP and Rack upstreams read
// X_User_Id and X-User-Id as the same variable (HTTP_X_USER_ID).
func deleteHeaders(h http.Header, names []string) {
	for _, name := range names {
		delete(h, name)
	}
	for name := range h {
		if strings.IndexByte(name, '_') < 0 {
			continue
		}
		dashed := textproto.CanonicalMIMEHeaderKey(strings.ReplaceAll(name, "_", "-"))
		for _, r := range names {
			if dashed == r {
				delete(h, name)
				break
			}
		}
	}
}

// apply sets the forwarded headers of a verified request. A claim whose
// formatted value is empty or would not be a valid header value (control
// characters) is not forwarded.
func (f *forwarding) apply(h http.Header, c *Claims) {
	for _, fc := range f.claims {
		v := c.String(fc.Claim)
		if v == "" || !validHeaderValue(v) {
			continue
		}
		h[fc.Header] = []string{v}
	}
	if f.jsonHdr != "" {
		h[f.jsonHdr] = []string{base64.RawURLEncoding.EncodeToString(c.raw)}
	}
}

// validHeaderName reports whether name is an RFC 9110 token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether a claim's text may be forwarded as a
// header value: valid UTF-8 without any control character, C0 (tab
// included), DEL or C1 (U+0080 to U+009F, such as U+0085 NEL, which some
// upstreams treat as a line break).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c == 0x7f {
			return false
		}
		if c < utf8.RuneSelf {
			continue
		}
		r, size := utf8.DecodeRuneInString(v[i:])
		if r == utf8.RuneError && size == 1 || r >= 0x80 && r <= 0x9f {
			return false
		}
		i += size - 1
	}
	return true
}
