package oauth2jwt

// The token's segments are checked as unpadded, canonical base64url
// (RFC 7515 section 2, RFC 4648 section 5) before any decoder sees them:
// go-jose decodes loosely, and a token must have exactly one spelling.

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
