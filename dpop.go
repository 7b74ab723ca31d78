package oauth2jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
)

// DPoP makes the handler accept DPoP-bound access tokens (RFC 9449):
// `Authorization: DPoP <token>` with a `DPoP` proof header signed by the
// key the token is bound to (`cnf.jkt`).
type DPoP struct {
	// "allowed" (the default): DPoP-bound tokens are accepted with valid
	// proofs, unbound tokens as Bearer. "required": Bearer is refused.
	Mode string `json:"mode,omitempty"`

	// The proof signature algorithms accepted. Default: ES256 ES384
	// ES512 PS256 PS384 PS512 RS256 RS384 RS512 EdDSA Ed25519. none and
	// HS* are never accepted.
	Algorithms []string `json:"algorithms,omitempty"`

	// How old a proof's iat may be. A proof whose iat is in the future by
	// up to the provider's leeway is accepted too. Default: 5m.
	ProofMaxAge caddy.Duration `json:"proof_max_age,omitempty"`

	// A secret (at least 16 bytes, typically {env.DPOP_NONCE_SECRET})
	// that turns on server nonces (RFC 9449 section 9): every proof must
	// carry a nonce minted under this secret. Nonces are stateless, so
	// every instance with the same secret accepts the others' nonces.
	NonceSecret string `json:"nonce_secret,omitempty"`

	// How long a nonce is accepted at least (at most twice that).
	// Default: 5m.
	NonceLifetime caddy.Duration `json:"nonce_lifetime,omitempty"`

	// How many proofs (jti) are remembered to refuse a replay. Default:
	// 100000.
	ReplayCacheSize int `json:"replay_cache_size,omitempty"`

	// The public scheme://host[:port] of the API, used to build the URI a
	// proof's htu must match when Caddy runs behind a TLS-terminating
	// proxy. By default: the request's scheme and Host.
	Origin string `json:"origin,omitempty"`
}

// Limits and defaults of DPoP proofs.
const (
	defaultProofMaxAge     = 5 * time.Minute
	maxProofMaxAge         = time.Hour
	defaultNonceLifetime   = 5 * time.Minute
	defaultReplayCacheSize = 100_000
	maxReplayCacheSize     = 10_000_000
	minNonceSecret         = 16
	// maxProofSize bounds a DPoP header: a proof with an RSA-4096 jwk is
	// about 1.6 KB.
	maxProofSize = 8192
	// maxJTISize bounds the jti: longer ones are refused, never stored.
	maxJTISize = 256
)

// dpopEd25519 is the fully-specified Ed25519 algorithm name (RFC 9864),
// which go-jose does not know; it is verified directly.
const dpopEd25519 = jose.SignatureAlgorithm("Ed25519")

var defaultDPoPAlgs = []string{"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA", "Ed25519"}

// dpopAlgClass returns the key class a proof algorithm needs, or 0 for an
// algorithm proofs may not use (none, HS*, unknown names).
func dpopAlgClass(alg jose.SignatureAlgorithm) keyClass {
	if alg == dpopEd25519 {
		return classEd25519
	}
	if c := algClass(alg); c != classOct {
		return c
	}
	return 0
}

// dpopPolicy is the compiled dpop block.
type dpopPolicy struct {
	required bool
	algs     []jose.SignatureAlgorithm
	algsAttr string // the algs challenge attribute: "ES256 PS256 ..."
	maxAge   time.Duration
	nonce    *nonceSource // nil without nonce_secret
	replay   *replayCache
	origin   string // normalised scheme://host, or ""
}

func checkDPoPMode(s string) error {
	if s != "" && s != "allowed" && s != "required" {
		return fmt.Errorf("dpop: mode: %q is not allowed or required", s)
	}
	return nil
}

func checkDPoPAlgorithms(names []string) ([]jose.SignatureAlgorithm, error) {
	var out []jose.SignatureAlgorithm
	for _, n := range names {
		alg := jose.SignatureAlgorithm(n)
		if dpopAlgClass(alg) == 0 {
			return nil, fmt.Errorf("dpop: algorithms: %q is not an asymmetric signature algorithm", n)
		}
		for _, a := range out {
			if a == alg {
				return nil, fmt.Errorf("dpop: algorithms: %q listed twice", n)
			}
		}
		out = append(out, alg)
	}
	return out, nil
}

func checkProofMaxAge(d caddy.Duration) error {
	if d < 0 || time.Duration(d) > maxProofMaxAge {
		return fmt.Errorf("dpop: proof_max_age: %s is not between 0 and %s", time.Duration(d), maxProofMaxAge)
	}
	return nil
}

func checkNonceLifetime(d caddy.Duration) error {
	if d < 0 || time.Duration(d) > 24*time.Hour {
		return fmt.Errorf("dpop: nonce_lifetime: %s is not between 0 and 24h", time.Duration(d))
	}
	if d != 0 && time.Duration(d) < time.Second {
		return fmt.Errorf("dpop: nonce_lifetime: %s is shorter than 1s", time.Duration(d))
	}
	return nil
}

func checkReplayCacheSize(n int) error {
	if n < 0 || n > maxReplayCacheSize {
		return fmt.Errorf("dpop: replay_cache_size: %d is not between 1 and %d", n, maxReplayCacheSize)
	}
	return nil
}

// checkOrigin validates origin and returns its normalised form.
func checkOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("dpop: origin: %q is not scheme://host[:port]", s)
	}
	n, ok := normalizeHTU(s)
	if !ok {
		return "", fmt.Errorf("dpop: origin: %q is not scheme://host[:port]", s)
	}
	return strings.TrimSuffix(n, "/"), nil
}

// compile checks the dpop block and builds its runtime form; errors name
// the field. Placeholders in nonce_secret are resolved with repl.
func (c *DPoP) compile(repl *caddy.Replacer) (*dpopPolicy, error) {
	if err := checkDPoPMode(c.Mode); err != nil {
		return nil, err
	}
	names := c.Algorithms
	if len(names) == 0 {
		names = defaultDPoPAlgs
	}
	algs, err := checkDPoPAlgorithms(names)
	if err != nil {
		return nil, err
	}
	if err := checkProofMaxAge(c.ProofMaxAge); err != nil {
		return nil, err
	}
	if err := checkNonceLifetime(c.NonceLifetime); err != nil {
		return nil, err
	}
	if err := checkReplayCacheSize(c.ReplayCacheSize); err != nil {
		return nil, err
	}
	d := &dpopPolicy{
		required: c.Mode == "required",
		algs:     algs,
		algsAttr: strings.Join(names, " "),
		maxAge:   time.Duration(c.ProofMaxAge),
	}
	if d.maxAge == 0 {
		d.maxAge = defaultProofMaxAge
	}
	size := c.ReplayCacheSize
	if size == 0 {
		size = defaultReplayCacheSize
	}
	d.replay = newReplayCache(size)
	if c.Origin != "" {
		if d.origin, err = checkOrigin(c.Origin); err != nil {
			return nil, err
		}
	}
	if c.NonceSecret != "" {
		secret := repl.ReplaceKnown(c.NonceSecret, "")
		if len(secret) < minNonceSecret {
			return nil, fmt.Errorf("dpop: nonce_secret: shorter than %d bytes once placeholders are resolved (is the environment variable set?)", minNonceSecret)
		}
		life := time.Duration(c.NonceLifetime)
		if life == 0 {
			life = defaultNonceLifetime
		}
		d.nonce = newNonceSource(secret, life)
	} else if c.NonceLifetime != 0 {
		return nil, errors.New("dpop: nonce_lifetime: needs nonce_secret")
	}
	return d, nil
}

// unmarshalCaddyfile reads a dpop block, the cursor on "dpop".
func (c *DPoP) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	once, err := subBlockStart(d, "dpop: ")
	if err != nil {
		return err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if err := once(opt); err != nil {
			return err
		}
		duration := func(dst *caddy.Duration, check func(caddy.Duration) error) error {
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("dpop: %s: %q is not a duration: %v", opt, s, err)
			}
			if err := check(caddy.Duration(dur)); err != nil {
				return d.WrapErr(err)
			}
			*dst = caddy.Duration(dur)
			return nil
		}
		var err error
		switch opt {
		case "mode":
			err = stringArg(d, &c.Mode, checkDPoPMode)
		case "algorithms":
			c.Algorithms = d.RemainingArgs()
			if len(c.Algorithms) == 0 {
				return d.ArgErr()
			}
			if _, aerr := checkDPoPAlgorithms(c.Algorithms); aerr != nil {
				return d.WrapErr(aerr)
			}
		case "proof_max_age":
			err = duration(&c.ProofMaxAge, checkProofMaxAge)
		case "nonce_lifetime":
			err = duration(&c.NonceLifetime, checkNonceLifetime)
		case "nonce_secret":
			err = stringArg(d, &c.NonceSecret, func(s string) error {
				if !strings.Contains(s, "{") && len(s) < minNonceSecret {
					return fmt.Errorf("dpop: nonce_secret: shorter than %d bytes", minNonceSecret)
				}
				return nil
			})
		case "replay_cache_size":
			var n int
			n, err = intArg(d, "dpop: replay_cache_size", func(n int) error {
				if n == 0 {
					return errors.New("dpop: replay_cache_size: must be at least 1")
				}
				return checkReplayCacheSize(n)
			})
			c.ReplayCacheSize = n
		case "origin":
			err = stringArg(d, &c.Origin, func(s string) error {
				_, err := checkOrigin(s)
				return err
			})
		default:
			return d.Errf("dpop: unrecognized option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// dpopProof is a proof that passed every check of checkProof.
type dpopProof struct {
	thumb     [32]byte // RFC 7638 SHA-256 thumbprint of its jwk
	replayKey [32]byte // SHA-256(thumbprint || jti)
	expires   time.Time
	// freshNonce is a new nonce to send with the response when the
	// proof's nonce is from the previous window, else "".
	freshNonce string
}

// Preallocated proof errors.
var (
	errProofMissing   = &authError{step: stepProof, reason: reasonDPoPProofMissing, detail: "no DPoP header"}
	errSeveralProofs  = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "several DPoP headers"}
	errProofTooLarge  = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof too large"}
	errProofNotJWS    = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof is not a compact JWS with an allowed alg"}
	errProofTyp       = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof typ is not dpop+jwt"}
	errProofHeader    = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof header uses crit, b64 or zip"}
	errProofJWK       = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof jwk missing, private, or not fitting alg"}
	errProofSignature = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof signature invalid"}
	errProofClaims    = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof lacks jti, htm, htu, iat or ath, or one has the wrong type"}
	errProofJTI       = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof jti empty or too long"}
	errProofHTM       = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof htm is not the request method"}
	errProofHTU       = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof htu is not the request URI"}
	errProofOld       = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof iat older than proof_max_age"}
	errProofFuture    = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof iat in the future"}
	errProofATH       = &authError{step: stepProof, reason: reasonDPoPProofInvalid, detail: "DPoP proof ath is not the hash of the access token"}
	errNonceMissing   = &authError{step: stepProof, reason: reasonDPoPNonceRequired, detail: "DPoP proof has no nonce"}
	errNonceStale     = &authError{step: stepProof, reason: reasonDPoPNonceRequired, detail: "DPoP proof nonce unknown or expired"}
	errProofReplayed  = &authError{step: stepProof, reason: reasonDPoPProofReplayed, detail: "DPoP proof jti already used"}
	// The replay cache holds replay_cache_size unexpired proofs: a new
	// one cannot be remembered, so it is not accepted (503, retry soon).
	errReplayCacheFull = &authError{step: stepProof, reason: reasonUnavailable, detail: "DPoP replay cache full of unexpired proofs (raise replay_cache_size)", retryAfter: 1}
)

// checkProof runs the checks of RFC 9449 section 4.3 on the request's
// DPoP header, for the access token sent with it. Nothing is stored: the
// caller remembers the proof (replayKey) once every other check passed.
func (d *dpopPolicy) checkProof(r *http.Request, token string, now time.Time, leeway time.Duration) (*dpopProof, *authError) {
	vals := r.Header["Dpop"]
	switch len(vals) {
	case 0:
		return nil, errProofMissing
	case 1:
	default:
		return nil, errSeveralProofs
	}
	raw := vals[0]
	if len(raw) > maxProofSize {
		return nil, errProofTooLarge // before any decoding
	}
	dot1 := strings.IndexByte(raw, '.')
	dot2 := strings.LastIndexByte(raw, '.')
	if dot1 <= 0 || dot2 == dot1 || dot2 == len(raw)-1 || strings.IndexByte(raw[dot1+1:dot2], '.') >= 0 {
		return nil, errProofNotJWS
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c != '.' && !b64urlChars[c] {
			return nil, errProofNotJWS
		}
	}
	jws, err := jose.ParseSignedCompact(raw, d.algs)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, errProofNotJWS
	}
	sig := &jws.Signatures[0]
	hdr := sig.Protected
	if typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string); typ != "dpop+jwt" {
		return nil, errProofTyp
	}
	if checkHeader(&hdr) != nil {
		return nil, errProofHeader
	}
	alg := jose.SignatureAlgorithm(hdr.Algorithm)
	jwk := hdr.JSONWebKey
	if jwk == nil || !jwk.Valid() || !jwk.IsPublic() || publicKeyClass(jwk.Key) != dpopAlgClass(alg) {
		return nil, errProofJWK
	}
	var payload []byte
	if alg == dpopEd25519 {
		if !ed25519.Verify(jwk.Key.(ed25519.PublicKey), []byte(raw[:dot2]), sig.Signature) {
			return nil, errProofSignature
		}
		payload = jws.UnsafePayloadWithoutVerification()
	} else if payload, err = jws.Verify(jwk.Key); err != nil {
		return nil, errProofSignature
	}

	var claims struct {
		JTI   *string              `json:"jti"`
		HTM   *string              `json:"htm"`
		HTU   *string              `json:"htu"`
		IAT   josejson.RawMessage  `json:"iat"`
		ATH   *string              `json:"ath"`
		Nonce *josejson.RawMessage `json:"nonce"`
	}
	// go-jose's decoder, as for tokens: member names match exactly (no
	// "HTM" for htm) and a duplicate member refuses the proof.
	if err := josejson.Unmarshal(payload, &claims); err != nil || claims.JTI == nil || claims.HTM == nil ||
		claims.HTU == nil || claims.ATH == nil || len(claims.IAT) == 0 {
		return nil, errProofClaims
	}
	if n := len(*claims.JTI); n == 0 || n > maxJTISize {
		return nil, errProofJTI
	}
	if *claims.HTM != requestMethod(r) {
		return nil, errProofHTM
	}
	got, ok := normalizeHTU(*claims.HTU)
	if !ok || got != d.requestHTU(r) {
		return nil, errProofHTU
	}
	iat, ok := numericDate(claims.IAT)
	if !ok {
		return nil, errProofClaims
	}
	if iat.Before(now.Add(-d.maxAge)) {
		return nil, errProofOld
	}
	if iat.After(now.Add(leeway)) {
		return nil, errProofFuture
	}
	ath := sha256.Sum256([]byte(token))
	want := make([]byte, base64.RawURLEncoding.EncodedLen(len(ath)))
	base64.RawURLEncoding.Encode(want, ath[:])
	if subtle.ConstantTimeCompare(want, []byte(*claims.ATH)) != 1 {
		return nil, errProofATH
	}
	p := &dpopProof{expires: now.Add(d.maxAge + leeway)}
	if d.nonce != nil {
		if claims.Nonce == nil {
			return nil, errNonceMissing
		}
		var nonce string
		if josejson.Unmarshal(*claims.Nonce, &nonce) != nil {
			return nil, errNonceStale
		}
		ok, stale := d.nonce.check(nonce, now)
		if !ok {
			return nil, errNonceStale
		}
		if stale {
			p.freshNonce = d.nonce.mint(now)
		}
	}
	thumb, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil || len(thumb) != len(p.thumb) {
		return nil, errProofJWK
	}
	copy(p.thumb[:], thumb)
	hsh := sha256.New()
	hsh.Write(p.thumb[:])
	hsh.Write([]byte(*claims.JTI))
	hsh.Sum(p.replayKey[:0])
	return p, nil
}

// publicKeyClass is the key class of a parsed public jwk, or 0 for an
// unusable one (an RSA modulus under 2048 bits, an unknown curve).
func publicKeyClass(k any) keyClass {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return 0
		}
		return classRSA
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return classP256
		case elliptic.P384():
			return classP384
		case elliptic.P521():
			return classP521
		}
	case ed25519.PublicKey:
		return classEd25519
	}
	return 0
}

// requestMethod is the method of Caddy's original request.
func requestMethod(r *http.Request) string {
	if or, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && or.Method != "" {
		return or.Method
	}
	return r.Method
}

// requestHTU is the normalised URI a proof's htu must match: the origin
// (or the request's scheme and Host) and the path of Caddy's original
// request, before any rewrite, handle_path or uri strip_prefix.
func (d *dpopPolicy) requestHTU(r *http.Request) string {
	target := ""
	if or, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		target = or.RequestURI
		if target == "" && or.URL != nil {
			target = or.URL.EscapedPath()
		}
	} else {
		target = r.RequestURI
		if target == "" {
			target = r.URL.EscapedPath()
		}
	}
	if !strings.HasPrefix(target, "/") {
		// Absolute form (a proxy request) or asterisk form.
		u, err := url.Parse(target)
		if err != nil {
			return ""
		}
		target = u.EscapedPath()
	}
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	base := d.origin
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	n, _ := normalizeHTU(base + target)
	return n
}

// normalizeHTU applies RFC 3986 section 6.2.2 (case, percent-encoding,
// dot segments) and section 6.2.3 (default port, empty path)
// normalisation to an http(s) URI, and drops its query and fragment. It
// reports false for anything else.
func normalizeHTU(s string) (string, bool) {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.Opaque != "" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	host := strings.ToLower(u.Host)
	if (scheme == "http" && strings.HasSuffix(host, ":80")) || (scheme == "https" && strings.HasSuffix(host, ":443")) {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	host = strings.TrimSuffix(host, ":")
	p := removeDotSegments(normalizePercent(u.EscapedPath()))
	if p == "" {
		p = "/"
	}
	return scheme + "://" + host + p, true
}

// normalizePercent upper-cases percent-encodings and decodes those of
// unreserved characters (RFC 3986 section 6.2.2.1, 6.2.2.2).
func normalizePercent(p string) string {
	if strings.IndexByte(p, '%') < 0 {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' || i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			b.WriteByte(c)
			continue
		}
		v := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(v) {
			b.WriteByte(v)
		} else {
			const digits = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(digits[v>>4])
			b.WriteByte(digits[v&0xf])
		}
		i += 2
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// removeDotSegments is RFC 3986 section 5.2.4.
func removeDotSegments(in string) string {
	if !strings.Contains(in, ".") {
		return in
	}
	var out []string
	segs := strings.Split(in, "/")
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return strings.Join(out, "/")
}

// nonceSource mints and checks server nonces statelessly: a nonce is the
// number of its time window and an HMAC of it under the secret, so any
// instance with the same secret checks any instance's nonce. A nonce is
// accepted in its window and the next: at least one lifetime, at most
// two, after it was minted.
type nonceSource struct {
	key      [32]byte
	lifetime time.Duration
}

func newNonceSource(secret string, lifetime time.Duration) *nonceSource {
	return &nonceSource{key: sha256.Sum256([]byte("oauth2_jwt dpop nonce\x00" + secret)), lifetime: lifetime}
}

const nonceLen = 8 + 16 // window number, truncated HMAC-SHA256

func (n *nonceSource) window(t time.Time) uint64 {
	return uint64(t.UnixNano()) / uint64(n.lifetime)
}

func (n *nonceSource) mac(w uint64, out []byte) {
	m := hmac.New(sha256.New, n.key[:])
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], w)
	m.Write(b[:])
	copy(out, m.Sum(nil))
}

// mint returns the nonce of now's window.
func (n *nonceSource) mint(now time.Time) string {
	var b [nonceLen]byte
	w := n.window(now)
	binary.BigEndian.PutUint64(b[:8], w)
	n.mac(w, b[8:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// check reports whether nonce is valid at now, and whether it is from the
// previous window (so the response should carry a fresh one).
func (n *nonceSource) check(nonce string, now time.Time) (ok, stale bool) {
	if len(nonce) != base64.RawURLEncoding.EncodedLen(nonceLen) {
		return false, false
	}
	var b [nonceLen]byte
	if k, err := base64.RawURLEncoding.Strict().Decode(b[:], []byte(nonce)); err != nil || k != nonceLen {
		return false, false
	}
	w := binary.BigEndian.Uint64(b[:8])
	cur := n.window(now)
	if w != cur && w+1 != cur {
		return false, false
	}
	var want [16]byte
	n.mac(w, want[:])
	if !hmac.Equal(want[:], b[8:]) {
		return false, false
	}
	return true, w != cur
}

// replayCache remembers proofs that were accepted, by SHA-256 of their
// key's thumbprint and jti, until they are too old to be accepted anyway.
// It holds at most size entries: when full, the oldest entry goes (entries
// are added in time order, so it is the first to expire).
type replayCache struct {
	mu   sync.Mutex
	size int
	seen map[[32]byte]replayEntry
	ring [][32]byte // insertion order; grows up to size
	next int        // the ring slot replaced next once full
}

type replayEntry struct {
	expires time.Time
	slot    int
}

func newReplayCache(size int) *replayCache {
	return &replayCache{size: size, seen: make(map[[32]byte]replayEntry)}
}

// replayPool shares DPoP replay caches across handlers and config
// reloads, so a `caddy reload` does not forget the proofs already used
// (each would otherwise be accepted once more within its window). Handlers
// with the same replay_cache_size share one cache: a proof is single-use
// everywhere, and its htu keeps it to its own route anyway.
var replayPool = caddy.NewUsagePool()

// acquireReplayCache returns the pooled replay cache of this size and the
// pool key to give back in Cleanup.
func acquireReplayCache(size int) (string, *replayCache) {
	key := fmt.Sprintf("oauth2_jwt|dpop-replay|size=%d", size)
	val, _, _ := replayPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return newReplayCache(size), nil
	})
	return key, val.(*replayCache)
}

// Destruct implements caddy.Destructor: a replay cache holds memory only.
func (c *replayCache) Destruct() error { return nil }

// Outcomes of replayCache.add.
const (
	replayNew  = iota // recorded: the proof is new
	replaySeen        // already recorded and unexpired: a replay
	replayFull        // every slot holds an unexpired entry: nothing recorded
)

// add records key until expires. Entries expire in insertion order (their
// expiry is now plus a fixed window), so when the ring is full its oldest
// slot is the first to expire; an unexpired entry is never dropped, or a
// flood of fresh proofs could evict a captured one and let it be replayed.
// A full cache of live entries refuses new proofs (replayFull) instead.
func (c *replayCache) add(key [32]byte, now, expires time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.seen[key]; ok && now.Before(e.expires) {
		return replaySeen
	}
	slot := len(c.ring)
	if slot < c.size {
		c.ring = append(c.ring, key)
	} else {
		slot = c.next
		old := c.ring[slot]
		if e, ok := c.seen[old]; ok && e.slot == slot {
			if now.Before(e.expires) {
				return replayFull
			}
			delete(c.seen, old)
		}
		c.ring[slot] = key
		c.next = (c.next + 1) % c.size
	}
	c.seen[key] = replayEntry{expires: expires, slot: slot}
	return replayNew
}

// len returns the number of entries.
func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}
