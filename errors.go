package oauth2jwt

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// reason is the single outcome code of one request. The same code is used in
// the WWW-Authenticate error_description, the {http.auth.jwt.error}
// placeholder, the debug log field and (later) metric labels. Add codes only
// at the end, and document them in the README.
type reason uint8

const (
	reasonOK reason = iota
	reasonMissingToken
	reasonInvalidRequest
	reasonMalformed
	reasonBadAlgorithm
	reasonUnknownIssuer
	reasonUnknownKey
	reasonBadSignature
	reasonExpired
	reasonNotYetValid
	reasonBadAudience
	reasonMissingClaim
	reasonBadClaim
	reasonUnavailable
	reasonForbidden
	reasonCount
)

// reasonInfo describes one reason code.
type reasonInfo struct {
	code        string
	status      int
	description string // short, fixed text; never echoes token content
}

var reasons = [reasonCount]reasonInfo{
	reasonOK:             {"ok", http.StatusOK, ""},
	reasonMissingToken:   {"missing_token", http.StatusBadRequest, "missing bearer token"},
	reasonInvalidRequest: {"invalid_request", http.StatusBadRequest, "malformed authorization header"},
	reasonMalformed:      {"malformed", http.StatusUnauthorized, "token is not a well-formed compact JWS"},
	reasonBadAlgorithm:   {"bad_algorithm", http.StatusUnauthorized, "token algorithm not allowed for this key"},
	reasonUnknownIssuer:  {"unknown_issuer", http.StatusUnauthorized, "token issuer not accepted"},
	reasonUnknownKey:     {"unknown_key", http.StatusUnauthorized, "token signing key not found"},
	reasonBadSignature:   {"bad_signature", http.StatusUnauthorized, "token signature invalid"},
	reasonExpired:        {"expired", http.StatusUnauthorized, "token expired"},
	reasonNotYetValid:    {"not_yet_valid", http.StatusUnauthorized, "token not yet valid"},
	reasonBadAudience:    {"bad_audience", http.StatusUnauthorized, "token audience not accepted"},
	reasonMissingClaim:   {"missing_claim", http.StatusUnauthorized, "token lacks a required claim"},
	reasonBadClaim:       {"bad_claim", http.StatusUnauthorized, "token claim has an invalid value"},
	reasonUnavailable:    {"unavailable", http.StatusServiceUnavailable, "signing keys unavailable"},
	reasonForbidden:      {"forbidden", http.StatusForbidden, "token lacks the required scope or claims"},
}

// String returns the stable reason code.
func (r reason) String() string {
	if r >= reasonCount {
		return "unknown"
	}
	return reasons[r].code
}

// authError is a request rejection. Its message is safe to log and to send:
// it never contains token content.
type authError struct {
	reason reason
	// detail is a fixed, safe explanation for logs (for example the name of
	// the claim that failed); never token bytes.
	detail string
	// retryAfter is set for reasonUnavailable: seconds until the next fetch.
	retryAfter int
}

func (e *authError) Error() string {
	if e.detail != "" {
		return reasons[e.reason].code + ": " + e.detail
	}
	return reasons[e.reason].code + ": " + reasons[e.reason].description
}

func fail(r reason, detail string) *authError {
	return &authError{reason: r, detail: detail}
}

// Preallocated errors for the common outcomes, so rejections on the hot path
// do not allocate.
var (
	errMissingToken    = &authError{reason: reasonMissingToken}
	errSeveralHeaders  = &authError{reason: reasonInvalidRequest, detail: "several Authorization headers"}
	errBadHeader       = &authError{reason: reasonInvalidRequest, detail: "authorization header is not 'Bearer <token>'"}
	errHeaderTooLarge  = &authError{reason: reasonInvalidRequest, detail: "authorization header too large"}
	errTooLarge        = &authError{reason: reasonMalformed, detail: "token exceeds max_token_size"}
	errNotCompact      = &authError{reason: reasonMalformed, detail: "token is not three base64url segments"}
	errUnknownIssuer   = &authError{reason: reasonUnknownIssuer}
	errBadSignature    = &authError{reason: reasonBadSignature}
	errExpired         = &authError{reason: reasonExpired}
	errUnknownKey      = &authError{reason: reasonUnknownKey}
	errNoKeyForAlg     = &authError{reason: reasonBadAlgorithm, detail: "no key of the provider fits the token algorithm"}
	errAlgNotAllowed   = &authError{reason: reasonBadAlgorithm, detail: "token algorithm not in the provider's allow-list"}
	errBadAudience     = &authError{reason: reasonBadAudience}
	errNotYetValid     = &authError{reason: reasonNotYetValid, detail: "nbf is in the future"}
	errIssuedInFuture  = &authError{reason: reasonNotYetValid, detail: "iat is in the future"}
	errMissingExp      = &authError{reason: reasonMissingClaim, detail: "exp claim missing"}
	errMissingIss      = &authError{reason: reasonMissingClaim, detail: "iss claim missing"}
	errMissingAud      = &authError{reason: reasonMissingClaim, detail: "aud claim missing"}
	errPayloadNotObj   = &authError{reason: reasonMalformed, detail: "payload is not a JSON object without duplicate keys"}
	errHeaderForbidden = &authError{reason: reasonMalformed, detail: "token header uses crit, b64, zip or a nested JWT"}
)

// challenges holds the WWW-Authenticate values for every reason, computed
// once at Provision so that rejections do no string formatting.
type challenges [reasonCount]string

// buildChallenges computes the challenges. scopes is the space-separated
// list of scopes the handler requires (for insufficient_scope), metadataURL
// the RFC 9728 resource metadata URL added to 401 challenges.
func buildChallenges(realm string, missingStatus int, scopes, metadataURL string) challenges {
	var c challenges
	for r := reason(1); r < reasonCount; r++ {
		info := reasons[r]
		var params []string
		if realm != "" {
			params = append(params, "realm="+quote(realm))
		}
		status := info.status
		switch r {
		case reasonMissingToken:
			status = missingStatus
			if missingStatus != http.StatusUnauthorized {
				params = append(params, `error="invalid_request"`, "error_description="+quote(info.description))
			}
			// With 401, RFC 6750 section 3.1: no error code when the
			// request carried no authentication information.
		case reasonInvalidRequest:
			params = append(params, `error="invalid_request"`, "error_description="+quote(info.description))
		case reasonUnavailable:
		case reasonForbidden:
			params = append(params, `error="insufficient_scope"`, "error_description="+quote(info.description))
			if scopes != "" {
				params = append(params, "scope="+quote(scopes))
			}
		default:
			params = append(params, `error="invalid_token"`, "error_description="+quote(info.description))
		}
		if metadataURL != "" && status == http.StatusUnauthorized {
			params = append(params, "resource_metadata="+quote(metadataURL))
		}
		if len(params) == 0 {
			c[r] = "Bearer"
		} else {
			c[r] = "Bearer " + strings.Join(params, ", ")
		}
	}
	return c
}

// problems holds RFC 9457 problem+json bodies per reason, for
// error_format json.
type problems [reasonCount][]byte

func buildProblems(missingStatus int) problems {
	var p problems
	for r := reason(1); r < reasonCount; r++ {
		info := reasons[r]
		status := info.status
		if r == reasonMissingToken {
			status = missingStatus
		}
		body, _ := json.Marshal(struct {
			Type   string `json:"type"`
			Title  string `json:"title"`
			Status int    `json:"status"`
			Detail string `json:"detail"`
			Code   string `json:"code"`
		}{"about:blank", http.StatusText(status), status, info.description, info.code})
		p[r] = body
	}
	return p
}

// quote renders s as an RFC 9110 quoted-string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

func retryAfterHeader(seconds int) string {
	if seconds < 1 {
		seconds = 1
	}
	return strconv.Itoa(seconds)
}
