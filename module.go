// Package oauth2jwt is a Caddy HTTP handler that protects what follows it
// with JWT bearer tokens issued by OAuth2 / OpenID Connect providers.
package oauth2jwt

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Limits and defaults of the handler-level options.
const (
	defaultMaxTokenSize   = 16384
	maxConfigMaxTokenSize = 1 << 20
	maxCacheSize          = 10_000_000
)

// Handler authenticates requests with JWT bearer tokens from OAuth2 /
// OpenID Connect providers. A request outside the public paths must carry
// `Authorization: Bearer <token>`; the token's `iss` selects the provider,
// whose cached JWKS keys verify the signature; then issuer, audience,
// expiry, not-before and issued-at are checked.
//
// Responses: a missing token answers 400 (or missing_token_status), a
// malformed Authorization header 400, a token failing any check 401, and a
// provider without usable keys 503 with Retry-After; all carry an RFC 6750
// `WWW-Authenticate: Bearer` challenge and are returned as Caddy errors, so
// `handle_errors` can shape the body.
//
// On success these placeholders are set for later handlers:
//
// Placeholder | Description
// ------------|-------------
// `{http.auth.user.id}` | the `sub` claim (shown as `user_id` in access logs)
// `{http.auth.jwt.provider}` | the name of the provider that verified the token
// `{http.auth.jwt.claims.<name>}` | a claim: a top-level claim named exactly `<name>`, else a dotted path into nested objects
// `{http.auth.jwt.claims_json}` | the whole payload as JSON
// `{http.auth.jwt.error}` | on failure, the reason code (`expired`, `bad_signature`, ...)
//
// Placeholders of requests that pass without a verified token are empty.
type Handler struct {
	// Providers, by name, whose tokens are accepted. Each token's `iss`
	// claim selects exactly one provider.
	Providers map[string]*Provider `json:"providers,omitempty"`

	// Request paths that need no token, as Caddy path matcher patterns
	// (`/health`, `/public/*`, ...).
	PublicPaths []string `json:"public_paths,omitempty"`

	// The realm attribute of the WWW-Authenticate challenge. By default
	// the challenge has no realm.
	Realm string `json:"realm,omitempty"`

	// The longest accepted token, in bytes; longer tokens are refused
	// before any decoding. Default: 16384.
	MaxTokenSize int `json:"max_token_size,omitempty"`

	// The status answered when a request has no bearer token: 400 (the
	// default, as starlette-oauth2-api) or 401 (RFC 6750's choice; the
	// default with resource_metadata, as MCP clients need).
	MissingTokenStatus int `json:"missing_token_status,omitempty"`

	// How many verified tokens are remembered, so that a reused token
	// costs a map look-up instead of a signature check. An entry never
	// outlives its token's exp, and is dropped when the provider's keys
	// change. Default: 10000; 0 disables the cache.
	CacheSize *int `json:"cache_size,omitempty"`

	// Authorization rules, all of which a verified token must meet; a
	// failure answers 403 with an insufficient_scope challenge.
	Require []Requirement `json:"require,omitempty"`

	// Claims forwarded to later handlers and upstreams as request
	// headers. Client-sent values of these headers are removed from every
	// request, including public ones.
	ForwardClaims []ClaimHeader `json:"forward_claims,omitempty"`

	// A request header set to the whole verified payload, base64url
	// encoded (as Envoy's forward_payload_header). Client-sent values are
	// removed from every request.
	ForwardClaimsJSON string `json:"forward_claims_json,omitempty"`

	// Remove the Authorization header before the request goes on.
	StripAuthorization bool `json:"strip_authorization,omitempty"`

	// Where tokens are looked for, in order. Default: the Authorization
	// header with the Bearer scheme.
	TokenSources []TokenSource `json:"token_sources,omitempty"`

	// Let requests without any token through as anonymous (placeholders
	// empty); a token that is present but invalid is still refused.
	AllowMissing bool `json:"allow_missing,omitempty"`

	// Let CORS preflight requests (OPTIONS with Origin and
	// Access-Control-Request-Method) through without a token.
	AllowCORSPreflight bool `json:"allow_cors_preflight,omitempty"`

	// Publish RFC 9728 protected resource metadata and point 401
	// challenges at it.
	ResourceMetadata *ResourceMetadata `json:"resource_metadata,omitempty"`

	// How rejections are answered: "" (default) returns a Caddy error
	// for handle_errors; "json" writes an RFC 9457
	// application/problem+json body with the reason code.
	ErrorFormat string `json:"error_format,omitempty"`

	// Accept DPoP-bound tokens (RFC 9449). Tokens bound to a DPoP key
	// (cnf.jkt) are refused as Bearer even without this block.
	DPoP *DPoP `json:"dpop,omitempty"`

	// Certificate-bound tokens (RFC 8705): the mode, and the certificate
	// header of a trusted TLS-terminating proxy. Tokens bound to a
	// certificate (cnf.x5t#S256) are checked against the TLS client
	// certificate even without this block.
	CertificateBinding *CertificateBinding `json:"certificate_binding,omitempty"`

	// The runtime form of the configuration, compiled by Provision.
	verifier  verifier    // the token checks, and the providers by issuer
	providers []*provider // in names order
	names     []string    // provider names, sorted
	req       requestPolicy
	cache     *tokenCache // the verified-token cache, or nil
	bind      bindingPolicy
	intro     introRoutes // the introspection providers of opaque tokens

	leases      []string    // liveProviders keys this instance holds, given back by Cleanup
	replayLease string      // replayPool key of the DPoP replay cache, or ""
	obs         observers   // logger and metric handles
	deps        runtimeDeps // the clock and the key caches' logger; zero in production
}

// requestPolicy is the compiled form of the request-level options: where
// tokens are found, what passes without one, what is forwarded, and how
// rejections are answered.
type requestPolicy struct {
	sources    []tokenSource
	public     caddyhttp.MatchPath
	fwd        forwarding
	meta       *resourceMetadata
	missing    int // the status of a request without a token
	challenges challenges
	problems   *problems // error_format json bodies, or nil
}

// observers are the handler's logger and metric handles, resolved once.
type observers struct {
	logger    *zap.Logger
	metrics   *metricSet
	anonCount *outcomeCounters // requests rejected before a provider is known
	cacheHit  prometheus.Counter
	cacheMiss prometheus.Counter
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oauth2_jwt",
		New: func() caddy.Module { return new(Handler) },
	}
}

// ServeHTTP authenticates the request and calls next on success. It holds
// only the cache-hit path: a reused token, within its lifetime, whose key
// set is unchanged and which needs no binding or introspection check. All
// else (the options that act before the token, a missing or oversized
// token, a miss, verification, rejections) is in functions of their own,
// kept out of line, so that this frame, which stays on the stack under
// every later handler, is small: a connection goroutine's stack then fits
// in the size the GC shrinks it to, instead of being copied back on every
// request after each collection.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.actsBeforeToken() {
		if done, err := h.serveBeforeToken(w, r, next); done {
			return err
		}
	}
	token, src, aerr := extractToken(r, h.req.sources, h.MaxTokenSize, h.bind.dpop != nil)
	if aerr != nil || len(token) > h.MaxTokenSize {
		return h.serveNoToken(w, r, src, aerr, next)
	}
	now := h.verifier.now()
	if h.cache != nil {
		if e := h.cache.get(token, now); e != nil {
			if h.plainHit(e, now) {
				h.obs.cacheHit.Inc()
				if !h.admit(r, e.p, &e.claims) {
					return h.forbid(w, r, src, e.p)
				}
				return next.ServeHTTP(w, r)
			}
			return h.serveCached(w, r, token, src, e, next)
		}
	}
	return h.serveMiss(w, r, token, src, next)
}

// actsBeforeToken reports whether an option acts on the request before
// its token is looked for.
func (h *Handler) actsBeforeToken() bool {
	return len(h.req.fwd.reserved) > 0 || h.bind.cert.header != "" || h.req.meta != nil ||
		h.AllowCORSPreflight || h.req.public != nil
}

// serveBeforeToken runs what comes before the token, in order: forwarded
// and certificate headers scrubbed, the metadata document answered, CORS
// preflights and public paths let through. done reports that the request
// was answered (err is then the handler's result).
//
//go:noinline
func (h *Handler) serveBeforeToken(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (done bool, err error) {
	if len(h.req.fwd.reserved) > 0 {
		h.req.fwd.scrub(r.Header)
	}
	h.bind.cert.scrubCertHeader(r)
	if h.req.meta != nil && h.req.meta.serve(w, r) {
		return true, nil
	}
	if h.AllowCORSPreflight && r.Method == http.MethodOptions &&
		r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != "" {
		return true, h.passAnonymous(w, r, next)
	}
	if h.req.public != nil {
		if ok, err := h.req.public.MatchWithError(r); err != nil {
			return true, caddyhttp.Error(http.StatusInternalServerError, err)
		} else if ok {
			return true, h.passAnonymous(w, r, next)
		}
	}
	return false, nil
}

// serveNoToken answers a request whose token could not be taken: none
// (anonymous when allow_missing), a malformed source, or a token over
// max_token_size, which is refused before it is hashed, scanned or
// decoded.
//
//go:noinline
func (h *Handler) serveNoToken(w http.ResponseWriter, r *http.Request, src *tokenSource, aerr *authError, next caddyhttp.Handler) error {
	if aerr == nil {
		return h.reject(w, r, replacerOf(r), nil, errTooLarge, schemeOf(src))
	}
	if aerr == errMissingToken && h.AllowMissing {
		return h.passAnonymous(w, r, next)
	}
	return h.reject(w, r, replacerOf(r), nil, aerr, schemeNone)
}

// plainHit reports whether a cached token needs nothing more than accept:
// its provider's keys are usable and still the set that verified it, and
// neither introspection (introspect_jwts) nor a binding (cnf, DPoP, a
// required certificate) asks for a per-request check.
func (h *Handler) plainHit(e *cachedToken, now time.Time) bool {
	if e.claims.cnf != nil || h.bind.dpop != nil || h.bind.cert.required || e.p.intro != nil {
		return false
	}
	ks, aerr := e.p.keys.keysAt(now)
	return aerr == nil && ks.gen == e.gen
}

// serveCached handles a cached token that is not a plain hit: keys past
// max_stale refuse it, a changed key set sends it to verification again,
// and a hit that needs introspection or binding checks gets them (the
// cache skips the token's signature only: the binding and every DPoP
// proof check run again).
//
//go:noinline
func (h *Handler) serveCached(w http.ResponseWriter, r *http.Request, token string, src *tokenSource, e *cachedToken, next caddyhttp.Handler) error {
	now := h.verifier.now()
	ks, aerr := e.p.keys.keysAt(now)
	if aerr != nil {
		return h.reject(w, r, replacerOf(r), e.p, aerr, schemeOf(src))
	}
	if ks.gen != e.gen {
		return h.serveMiss(w, r, token, src, next)
	}
	h.obs.cacheHit.Inc()
	if aerr := revoked(r, e.p, token, now); aerr != nil {
		return h.reject(w, r, replacerOf(r), e.p, aerr, schemeOf(src))
	}
	return h.acceptBound(w, r, src, e.p, &e.claims, token, now, next)
}

// serveMiss handles a token the cache does not hold (or holds for an
// older key set): an opaque token goes to introspection, a JWT is
// verified, its cnf parsed once, and it is cached before it is accepted.
//
//go:noinline
func (h *Handler) serveMiss(w http.ResponseWriter, r *http.Request, token string, src *tokenSource, next caddyhttp.Handler) error {
	now := h.verifier.now()
	if h.intro.any() && !hasSeparator(token) {
		if _, _, ok := compactParts(token); !ok {
			return h.serveOpaque(w, r, src, token, now, next)
		}
	}
	if h.cache != nil {
		h.obs.cacheMiss.Inc()
	}
	repl := replacerOf(r)
	sch := schemeOf(src)
	if hasSeparator(token) {
		return h.reject(w, r, repl, nil, errBadHeader, schemeNone)
	}
	claims, p, gen, aerr := h.verifier.verify(r.Context(), token, now)
	if aerr != nil {
		return h.reject(w, r, repl, p, aerr, sch)
	}
	// The cnf claim is parsed once per verified token, before the claims
	// are shared (cache, replacer): a cached hit costs nothing more.
	if claims.cnf, aerr = parseCnf(claims.top); aerr != nil {
		return h.reject(w, r, repl, p, aerr, sch)
	}
	if h.cache != nil {
		// A stored entry's claims are the compact copy, which this
		// request shares with the later hits.
		if e, evicted := h.cache.put(token, p, gen, claims, now); e == nil {
			h.obs.metrics.cacheRefused.Inc()
		} else {
			claims = &e.claims
			if evicted {
				h.obs.metrics.cacheEvicted.Inc()
			}
		}
	}
	if aerr := revoked(r, p, token, now); aerr != nil {
		return h.reject(w, r, repl, p, aerr, sch)
	}
	return h.acceptBound(w, r, src, p, claims, token, now, next)
}

// serveOpaque authenticates a token that is not a compact JWS through
// the introspection provider it routes to; everything after (binding,
// rules, forwarding) is what a verified JWT gets.
//
//go:noinline
func (h *Handler) serveOpaque(w http.ResponseWriter, r *http.Request, src *tokenSource, token string, now time.Time, next caddyhttp.Handler) error {
	p := h.intro.route(token)
	if p == nil {
		return h.reject(w, r, replacerOf(r), nil, errOpaqueNoRoute, schemeOf(src))
	}
	claims, aerr := p.intro.introspect(r.Context(), p, token, now)
	if aerr != nil {
		return h.reject(w, r, replacerOf(r), p, aerr, schemeOf(src))
	}
	return h.acceptBound(w, r, src, p, claims, token, now, next)
}

// replacerOf returns the request's Caddy replacer, or nil outside Caddy's
// server (a handler called directly).
func replacerOf(r *http.Request) *caddy.Replacer {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	return repl
}

// revoked asks a provider with introspect_jwts whether a verified JWT is
// still active; nil for other providers.
func revoked(r *http.Request, p *provider, token string, now time.Time) *authError {
	if p.intro == nil || !p.intro.cfg.jwts {
		return nil
	}
	_, aerr := p.intro.introspect(r.Context(), p, token, now)
	return aerr
}

// acceptBound runs the binding checks (DPoP proof, cnf, client
// certificate) of a verified token, then accepts the request.
func (h *Handler) acceptBound(w http.ResponseWriter, r *http.Request, src *tokenSource, p *provider, claims *Claims, token string, now time.Time, next caddyhttp.Handler) error {
	if claims.cnf != nil || h.bind.dpop != nil || h.bind.cert.required {
		nonce, aerr := h.checkBinding(r, token, src == dpopSource, p, claims, now)
		if aerr != nil {
			return h.reject(w, r, replacerOf(r), p, aerr, schemeOf(src))
		}
		if nonce != "" {
			hdr := w.Header()
			hdr.Set("DPoP-Nonce", nonce)
			hdr.Set("Cache-Control", "no-store")
			if r.Header.Get("Origin") != "" {
				hdr.Add("Access-Control-Expose-Headers", "DPoP-Nonce")
			}
		}
	}
	return h.accept(w, r, src, p, claims, next)
}

// accept applies the authorization rules to a verified request, then hands
// it to the next handler with the claims as lazily resolved placeholders,
// in the request's variables and in forwarded headers.
func (h *Handler) accept(w http.ResponseWriter, r *http.Request, src *tokenSource, p *provider, claims *Claims, next caddyhttp.Handler) error {
	if !h.admit(r, p, claims) {
		return h.forbid(w, r, src, p)
	}
	return next.ServeHTTP(w, r)
}

// admit is accept up to the next handler, apart so that the cache-hit
// path calls next from its own (small) frame: it publishes the claims as
// lazily resolved placeholders and checks the require rules; a request
// that meets them is counted, gets its forwarded headers and loses what
// must not travel on. It reports false when a rule is not met.
func (h *Handler) admit(r *http.Request, p *provider, claims *Claims) bool {
	if repl := replacerOf(r); repl != nil {
		// Placeholders and ClaimsFromRequest resolve through this one
		// provider, lazily; the function value is made once per token.
		repl.Map(claims.replaceFn)
	}
	if len(h.Require) > 0 && !satisfied(h.Require, claims) {
		return false
	}
	p.counters[reasonOK].Inc()
	h.req.fwd.apply(r.Header, claims)
	h.passOn(r)
	return true
}

// forbid answers a verified request that fails the require rules.
//
//go:noinline
func (h *Handler) forbid(w http.ResponseWriter, r *http.Request, src *tokenSource, p *provider) error {
	return h.reject(w, r, replacerOf(r), p, errForbidden, schemeOf(src))
}

// passAnonymous lets a request through without a verified token.
func (h *Handler) passAnonymous(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if repl := replacerOf(r); repl != nil {
		repl.Map(anonymousPlaceholders)
	}
	h.passOn(r)
	return next.ServeHTTP(w, r)
}

// passOn removes what must not reach later handlers: the Authorization
// header when strip_authorization is set, and query-string tokens.
func (h *Handler) passOn(r *http.Request) {
	if h.req.fwd.stripAuth {
		delete(r.Header, "Authorization")
		delete(r.Header, "Dpop")
	}
	// Every query source's parameter goes, whichever source (if any)
	// yielded the token: a token in the URL never travels on.
	for i := range h.req.sources {
		if s := &h.req.sources[i]; s.kind == sourceQuery && r.URL.RawQuery != "" {
			if q := removeQueryParam(r.URL.RawQuery, s.name); q != r.URL.RawQuery {
				r.URL.RawQuery = q
				r.RequestURI = r.URL.RequestURI()
			}
		}
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
