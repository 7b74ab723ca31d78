package oauth2jwt

import (
	"net/http"
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
	reasonDPoPProofMissing
	reasonDPoPProofInvalid
	reasonDPoPProofReplayed
	reasonDPoPNonceRequired
	reasonKeyBindingMismatch
	reasonCertBindingMismatch
	reasonInactive
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

	reasonDPoPProofMissing:    {"dpop_proof_missing", http.StatusUnauthorized, "DPoP proof missing"},
	reasonDPoPProofInvalid:    {"dpop_proof_invalid", http.StatusUnauthorized, "DPoP proof invalid"},
	reasonDPoPProofReplayed:   {"dpop_proof_replayed", http.StatusUnauthorized, "DPoP proof already used"},
	reasonDPoPNonceRequired:   {"dpop_nonce_required", http.StatusUnauthorized, "DPoP proof needs a fresh server nonce"},
	reasonKeyBindingMismatch:  {"key_binding_mismatch", http.StatusUnauthorized, "token key binding not satisfied by the request"},
	reasonCertBindingMismatch: {"cert_binding_mismatch", http.StatusUnauthorized, "token is not bound to the client certificate"},
	reasonInactive:            {"inactive", http.StatusUnauthorized, "token is not active"},
}

// String returns the stable reason code.
func (r reason) String() string {
	if r >= reasonCount {
		return "unknown"
	}
	return reasons[r].code
}

// step is the check of the verification that refused a token, in the
// order the checks run (README "What is checked, in order"); inspect
// prints it.
type step uint8

const (
	stepRequest       step = iota // the Authorization header or token source
	stepShape                     // size and compact serialization
	stepHeader                    // the JOSE header
	stepPayload                   // the claims JSON
	stepIssuer                    // iss selects the provider
	stepAlgorithm                 // the provider's algorithm allow-list
	stepTime                      // exp, nbf, iat
	stepAudience                  // aud
	stepClaims                    // other claims (sub, typ, at+jwt members)
	stepKeys                      // the provider has usable keys
	stepKey                       // a key fits the kid and alg
	stepSignature                 // the signature
	stepRequire                   // the require rules
	stepProof                     // the DPoP proof (RFC 9449 section 4.3)
	stepBinding                   // the token's cnf binding (DPoP key, client certificate)
	stepIntrospection             // the introspection call of an opaque token (RFC 7662)
	stepCount
)

var stepNames = [stepCount]string{"request", "shape", "header", "payload", "issuer", "algorithm", "time", "audience", "claims", "keys", "key", "signature", "require", "proof", "binding", "introspection"}

// String returns the step's name.
func (s step) String() string {
	if s >= stepCount {
		return "unknown"
	}
	return stepNames[s]
}

// authError is a request rejection. Its message is safe to log and to send:
// it never contains token content.
type authError struct {
	reason reason
	step   step
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

// explain is the detail, or the reason's fixed description when the
// error has none: never empty.
func (e *authError) explain() string {
	if e.detail != "" {
		return e.detail
	}
	return reasons[e.reason].description
}

func fail(s step, r reason, detail string) *authError {
	return &authError{step: s, reason: r, detail: detail}
}

// Preallocated errors for the common outcomes, so rejections on the hot path
// do not allocate.
var (
	errMissingToken    = &authError{step: stepRequest, reason: reasonMissingToken}
	errSeveralHeaders  = &authError{step: stepRequest, reason: reasonInvalidRequest, detail: "several Authorization headers"}
	errBadHeader       = &authError{step: stepRequest, reason: reasonInvalidRequest, detail: "authorization header is not 'Bearer <token>'"}
	errHeaderTooLarge  = &authError{step: stepRequest, reason: reasonInvalidRequest, detail: "authorization header too large"}
	errTooLarge        = &authError{step: stepShape, reason: reasonMalformed, detail: "token exceeds max_token_size"}
	errNotCompact      = &authError{step: stepShape, reason: reasonMalformed, detail: "token is not three base64url segments"}
	errBadSignature    = &authError{step: stepSignature, reason: reasonBadSignature}
	errUnknownKey      = &authError{step: stepKey, reason: reasonUnknownKey}
	errNoKeyForAlg     = &authError{step: stepKey, reason: reasonBadAlgorithm, detail: "no key of the provider fits the token algorithm"}
	errAlgNotAllowed   = &authError{step: stepAlgorithm, reason: reasonBadAlgorithm, detail: "token algorithm not in the provider's allow-list"}
	errAlgUnknown      = &authError{step: stepHeader, reason: reasonBadAlgorithm, detail: "token algorithm allowed by no provider"}
	errNotYetValid     = &authError{step: stepTime, reason: reasonNotYetValid, detail: "nbf is in the future"}
	errIssuedInFuture  = &authError{step: stepTime, reason: reasonNotYetValid, detail: "iat is in the future"}
	errMissingExp      = &authError{step: stepTime, reason: reasonMissingClaim, detail: "exp claim missing"}
	errMissingIss      = &authError{step: stepIssuer, reason: reasonMissingClaim, detail: "iss claim missing"}
	errMissingAud      = &authError{step: stepAudience, reason: reasonMissingClaim, detail: "aud claim missing"}
	errPayloadNotObj   = &authError{step: stepPayload, reason: reasonMalformed, detail: "payload is not a JSON object without duplicate keys"}
	errHeaderForbidden = &authError{step: stepHeader, reason: reasonMalformed, detail: "token header uses crit, b64, zip or a nested JWT"}
	errHeaderNotUTF8   = &authError{step: stepHeader, reason: reasonMalformed, detail: "token header is not valid UTF-8"}
	errHeaderNotObj    = &authError{step: stepHeader, reason: reasonMalformed, detail: "token header is not a JSON object without duplicate members"}
	errPayloadNotUTF8  = &authError{step: stepPayload, reason: reasonMalformed, detail: "payload is not valid UTF-8"}
)
