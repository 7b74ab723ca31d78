package oauth2jwt

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/textproto"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4/json"
)

// CertificateBinding configures certificate-bound access tokens (RFC 8705
// section 3). Tokens carrying cnf.x5t#S256 are checked against the TLS
// client certificate even without this block; the block adds the mode and
// the certificate header of a TLS-terminating proxy.
type CertificateBinding struct {
	// "allowed" (the default): certificate-bound tokens are checked,
	// unbound tokens accepted. "required": unbound tokens are refused.
	Mode string `json:"mode,omitempty"`

	// An RFC 9440 request header (usually Client-Cert) carrying the
	// client certificate as `:<base64 DER>:`, believed only when Caddy
	// marks the peer as a trusted proxy (the server's trusted_proxies);
	// from any other peer the header is removed from the request.
	Header string `json:"header,omitempty"`
}

// maxClientCertHeader bounds the certificate header.
const maxClientCertHeader = 16 << 10

func checkCertBindingMode(s string) error {
	if s != "" && s != "allowed" && s != "required" {
		return fmt.Errorf("certificate_binding: mode: %q is not allowed or required", s)
	}
	return nil
}

// certPolicy is the compiled certificate_binding block (zero without one).
type certPolicy struct {
	configured bool
	required   bool
	header     string // canonical header name, or ""
}

func (c *CertificateBinding) compile() (certPolicy, error) {
	if err := checkCertBindingMode(c.Mode); err != nil {
		return certPolicy{}, err
	}
	cp := certPolicy{configured: true, required: c.Mode == "required"}
	if c.Header != "" {
		if err := checkHeaderName("certificate_binding: header", c.Header); err != nil {
			return certPolicy{}, err
		}
		cp.header = textproto.CanonicalMIMEHeaderKey(c.Header)
	}
	return cp, nil
}

// unmarshalCaddyfile reads a certificate_binding block, the cursor on its
// name.
func (c *CertificateBinding) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	once, err := subBlockStart(d, "certificate_binding: ")
	if err != nil {
		return err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if err := once(opt); err != nil {
			return err
		}
		var err error
		switch opt {
		case "mode":
			err = stringArg(d, &c.Mode, checkCertBindingMode)
		case "header":
			err = stringArg(d, &c.Header, func(s string) error { return checkHeaderName("certificate_binding: header", s) })
		default:
			return d.Errf("certificate_binding: unrecognized option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// bindingPolicy is the compiled form of the dpop and certificate_binding
// blocks.
type bindingPolicy struct {
	dpop *dpopPolicy // nil without a dpop block
	cert certPolicy
}

// cnfBinding is the part of a token's cnf claim (RFC 7800) this module
// enforces, parsed once when the token is verified.
type cnfBinding struct {
	jkt    [32]byte // RFC 7638 SHA-256 thumbprint of the DPoP key (RFC 9449 section 6.1)
	x5t    [32]byte // SHA-256 of the client certificate's DER (RFC 8705 section 3.1)
	hasJKT bool
	hasX5T bool
	jktStr string // as in the token, for placeholders
	x5tStr string
}

// parseCnf reads a verified payload's cnf claim; it returns nil when the
// token has no cnf or an empty one. A cnf whose members hold neither
// jkt nor x5t#S256 binds the token by a method this module does not
// check (RFC 7800 jwk, jwe, jku, kid, RFC 9203 osc, or one it does not
// know): the token is refused rather than taken as a bearer token, which
// would undo the binding. Beside jkt or x5t#S256, other members are
// ignored.
func parseCnf(top map[string]json.RawMessage) (*cnfBinding, *authError) {
	raw, ok := top["cnf"]
	if !ok {
		return nil, nil
	}
	var members map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &members) != nil {
		return nil, fail(stepClaims, reasonBadClaim, "cnf is not a JSON object")
	}
	var b cnfBinding
	if v, ok := members["jkt"]; ok {
		s, ok := jsonString(v)
		if !ok || !decodeDigest(s, &b.jkt) {
			return nil, fail(stepClaims, reasonBadClaim, "cnf.jkt is not a base64url SHA-256 thumbprint")
		}
		b.hasJKT, b.jktStr = true, s
	}
	if v, ok := members["x5t#S256"]; ok {
		s, ok := jsonString(v)
		if !ok || !decodeDigest(s, &b.x5t) {
			return nil, fail(stepClaims, reasonBadClaim, "cnf.x5t#S256 is not a base64url SHA-256 digest")
		}
		b.hasX5T, b.x5tStr = true, s
	}
	if !b.hasJKT && !b.hasX5T {
		if len(members) > 0 {
			return nil, errUncheckedCnf
		}
		return nil, nil
	}
	return &b, nil
}

// decodeDigest decodes canonical unpadded base64url of exactly 32 bytes.
func decodeDigest(s string, out *[32]byte) bool {
	if len(s) != 43 {
		return false
	}
	n, err := base64.RawURLEncoding.Strict().Decode(out[:], []byte(s))
	return err == nil && n == 32
}

// Preallocated binding errors.
var (
	errUncheckedCnf     = &authError{step: stepBinding, reason: reasonKeyBindingMismatch, detail: "token is bound (cnf) by a confirmation method this server does not check: only jkt and x5t#S256 are"}
	errBoundAsBearer    = &authError{step: stepBinding, reason: reasonKeyBindingMismatch, detail: "DPoP-bound token (cnf.jkt) presented without DPoP"}
	errDPoPRequired     = &authError{step: stepBinding, reason: reasonKeyBindingMismatch, detail: "dpop mode required: only DPoP-bound tokens are accepted"}
	errNotDPoPBound     = &authError{step: stepBinding, reason: reasonKeyBindingMismatch, detail: "token presented with DPoP has no cnf.jkt"}
	errKeyMismatch      = &authError{step: stepBinding, reason: reasonKeyBindingMismatch, detail: "DPoP proof key thumbprint is not the token's cnf.jkt"}
	errNoClientCert     = &authError{step: stepBinding, reason: reasonCertBindingMismatch, detail: "certificate-bound token (cnf.x5t#S256) without a client certificate"}
	errCertMismatch     = &authError{step: stepBinding, reason: reasonCertBindingMismatch, detail: "client certificate is not the token's cnf.x5t#S256"}
	errCertRequired     = &authError{step: stepBinding, reason: reasonCertBindingMismatch, detail: "certificate_binding mode required: token has no cnf.x5t#S256"}
	errBadClientCertHdr = &authError{step: stepBinding, reason: reasonCertBindingMismatch, detail: "client certificate header is not one RFC 9440 byte sequence holding a DER certificate"}
)

// checkBinding enforces a verified token's cnf and the binding modes on
// one request; it runs on every request, cached token or not. viaDPoP
// tells that the token came as `Authorization: DPoP`. On success it
// returns a fresh DPoP nonce to send along, or "".
func (h *Handler) checkBinding(r *http.Request, token string, viaDPoP bool, p *provider, c *Claims, now time.Time) (string, *authError) {
	cnf := c.cnf
	d := h.bind.dpop
	var proof *dpopProof
	if viaDPoP {
		pr, aerr := d.checkProof(r, token, now, p.leeway)
		if aerr != nil {
			return "", aerr
		}
		if cnf == nil || !cnf.hasJKT {
			return "", errNotDPoPBound
		}
		if subtle.ConstantTimeCompare(pr.thumb[:], cnf.jkt[:]) != 1 {
			return "", errKeyMismatch
		}
		proof = pr
	} else {
		if cnf != nil && cnf.hasJKT {
			return "", errBoundAsBearer // RFC 9449 section 7.2
		}
		if d != nil && d.required {
			return "", errDPoPRequired
		}
	}
	if cnf != nil && cnf.hasX5T {
		digest, ok, aerr := h.clientCertDigest(r)
		if aerr != nil {
			return "", aerr
		}
		if !ok {
			return "", errNoClientCert
		}
		if subtle.ConstantTimeCompare(digest[:], cnf.x5t[:]) != 1 {
			return "", errCertMismatch
		}
	} else if h.bind.cert.required {
		return "", errCertRequired
	}
	if proof != nil {
		// Remembered only now that every other check passed.
		switch d.replay.add(proof.replayKey, now, proof.expires) {
		case replaySeen:
			return "", errProofReplayed
		case replayFull:
			return "", errReplayCacheFull
		}
		return proof.freshNonce, nil
	}
	return "", nil
}

// trustedProxy reports whether Caddy marked the request's peer as one of
// the server's trusted_proxies.
func trustedProxy(r *http.Request) bool {
	v, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return v
}

// scrubCertHeader removes the certificate header of a request from a peer
// that is not a trusted proxy, so no later handler believes it.
func (cp *certPolicy) scrubCertHeader(r *http.Request) {
	if cp.header != "" && !trustedProxy(r) {
		deleteHeaders(r.Header, []string{cp.header})
	}
}

// clientCertDigest returns the SHA-256 of the client certificate's DER:
// from the certificate header when configured and the peer is a trusted
// proxy, else from the TLS connection. ok is false without a certificate.
func (h *Handler) clientCertDigest(r *http.Request) (digest [32]byte, ok bool, aerr *authError) {
	if name := h.bind.cert.header; name != "" && trustedProxy(r) {
		vals := r.Header[name]
		switch len(vals) {
		case 0:
			return digest, false, nil
		case 1:
		default:
			return digest, false, errBadClientCertHdr
		}
		der, ok := parseClientCertHeader(vals[0])
		if !ok {
			return digest, false, errBadClientCertHdr
		}
		return sha256.Sum256(der), true, nil
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return digest, false, nil
	}
	return sha256.Sum256(r.TLS.PeerCertificates[0].Raw), true, nil
}

// parseClientCertHeader decodes an RFC 9440 Client-Cert value, an RFC
// 8941 byte sequence (`:<base64>:`), and checks that it is one DER
// certificate.
func parseClientCertHeader(v string) ([]byte, bool) {
	if len(v) > maxClientCertHeader {
		return nil, false
	}
	if len(v) < 3 || v[0] != ':' || v[len(v)-1] != ':' {
		return nil, false
	}
	der, err := base64.StdEncoding.DecodeString(v[1 : len(v)-1])
	if err != nil || len(der) == 0 {
		return nil, false
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return nil, false
	}
	return der, true
}
