// Package oauth2jwt is a Caddy HTTP handler that protects what follows it
// with JWT bearer tokens issued by OAuth2 / OpenID Connect providers.
package oauth2jwt

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Default values of the configuration.
const (
	defaultMaxTokenSize    = 16384
	defaultLeeway          = 60 * time.Second
	defaultMinRefresh      = time.Minute
	defaultFetchTimeout    = 10 * time.Second
	defaultMaxStale        = 24 * time.Hour
	maxConfigMaxTokenSize  = 1 << 20
	maxCacheSize           = 10_000_000
	discoveryWellKnownPath = "/.well-known/openid-configuration"
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
	// default, as starlette-oauth2-api) or 401 (RFC 6750's choice).
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

	verifier   verifier
	cache      *tokenCache
	sources    []tokenSource
	fwd        forwarding
	meta       *resourceMetadata
	problems   *problems
	public     caddyhttp.MatchPath
	challenges challenges
	missing    int
	names      []string    // provider names, sorted
	providers  []*provider // in names order
	poolKeys   []string    // cachePool keys this instance holds
	regKeys    []string    // admin registry keys this instance holds
	cacheNames []namedCache
	metrics    *metricSet
	anonCount  *outcomeCounters // requests rejected before a provider is known
	cacheHit   prometheus.Counter
	cacheMiss  prometheus.Counter
	logger     *zap.Logger
}

// Provider is one identity provider whose tokens are accepted.
type Provider struct {
	// The issuer, compared exactly (byte for byte) with the token's `iss`
	// claim. Required.
	Issuer string `json:"issuer,omitempty"`

	// The accepted audiences: the token's `aud` must contain at least one.
	// Required.
	Audiences []string `json:"audiences,omitempty"`

	// The URL of the provider's JWK Set. At most one of jwks_uri,
	// discovery_uri and jwks_file may be set; with none, OpenID discovery
	// at `<issuer>/.well-known/openid-configuration` is used.
	JWKSURI string `json:"jwks_uri,omitempty"`

	// The URL of an OpenID Provider configuration document, whose
	// `issuer` must equal Issuer and whose `jwks_uri` is then used.
	DiscoveryURI string `json:"discovery_uri,omitempty"`

	// A local JWK Set file, read once at provision. Only keys from a file
	// may be symmetric (`oct`) keys for HS256/HS384/HS512.
	JWKSFile string `json:"jwks_file,omitempty"`

	// The allowed signature algorithms. Default: RS256 RS384 RS512 PS256
	// PS384 PS512 ES256 ES384 ES512 EdDSA. HS256/HS384/HS512 are allowed
	// only when listed and the keys come from jwks_file. `none` is never
	// allowed.
	Algorithms []string `json:"algorithms,omitempty"`

	// Clock skew allowed when checking exp, nbf and iat. Default: 60s.
	Leeway *caddy.Duration `json:"leeway,omitempty"`

	// How often the keys are refetched. By default the JWKS response's
	// Cache-Control max-age, bounded to [1m, 24h], else 1h (jittered, and
	// at most half of max_stale).
	RefreshInterval caddy.Duration `json:"refresh_interval,omitempty"`

	// At most one refetch for an unknown `kid` per this interval; it also
	// caps the retry backoff after a failed fetch. Default: 1m.
	MinRefreshInterval caddy.Duration `json:"min_refresh_interval,omitempty"`

	// Timeout of each JWKS or discovery request. Default: 10s.
	FetchTimeout caddy.Duration `json:"fetch_timeout,omitempty"`

	// How long the last good keys keep being used while fetches fail;
	// past that the provider answers 503 until a fetch succeeds.
	// Default: 24h.
	MaxStale caddy.Duration `json:"max_stale,omitempty"`

	// Allow plain http:// key URLs on non-loopback hosts (logged as a
	// warning). http:// on loopback hosts is always allowed.
	InsecureHTTP bool `json:"insecure_http,omitempty"`

	// Require RFC 9068 access tokens: header `typ` must be `at+jwt` (or
	// `application/at+jwt`, compared case-insensitively), and the `sub`,
	// `client_id`, `iat` and `jti` claims must be present. The only
	// accepted value is `at+jwt`.
	RequireTyp string `json:"require_typ,omitempty"`

	// For a multi-tenant issuer written as a template with one `{tenant}`
	// variable (`https://login.microsoftonline.com/{tenant}/v2.0`): the
	// allowed tenant ids, or `*` for any. The token's `iss` must match
	// the template with an allowed tenant, and its `tid` claim, where
	// present, must equal that tenant. Requires jwks_uri or discovery.
	Tenants []string `json:"tenants,omitempty"`
}

// tenantVar is the variable of a multi-tenant issuer template.
const tenantVar = "{tenant}"

func (p *Provider) templated() bool { return strings.Contains(p.Issuer, tenantVar) }

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oauth2_jwt",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the handler: defaults, providers, key caches.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.metrics = getMetrics()
	if err := h.metrics.register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	h.anonCount = h.metrics.outcomes(noProvider)
	h.cacheHit = h.metrics.cacheRequests.WithLabelValues("hit")
	h.cacheMiss = h.metrics.cacheRequests.WithLabelValues("miss")
	if h.MaxTokenSize == 0 {
		h.MaxTokenSize = defaultMaxTokenSize
	}
	h.missing = h.MissingTokenStatus
	if h.missing == 0 {
		h.missing = http.StatusBadRequest
	}
	if err := h.checkGlobal(); err != nil {
		return err
	}
	size := defaultCacheSize
	if h.CacheSize != nil {
		size = *h.CacheSize
	}
	h.cache = newTokenCache(size)

	if len(h.PublicPaths) > 0 {
		h.public = caddyhttp.MatchPath(append([]string(nil), h.PublicPaths...))
		if err := h.public.Provision(ctx); err != nil {
			return fmt.Errorf("public_paths: %w", err)
		}
	}

	if len(h.Providers) == 0 {
		return errors.New("at least one provider is required")
	}
	h.names = make([]string, 0, len(h.Providers))
	for name := range h.Providers {
		h.names = append(h.names, name)
	}
	sort.Strings(h.names)

	repl := caddy.NewReplacer()
	h.verifier = verifier{
		byIssuer:     make(map[string]*provider, len(h.Providers)),
		maxTokenSize: h.MaxTokenSize,
		now:          time.Now,
	}
	var all algSet
	issuers := make(map[string]string, len(h.Providers))
	var publicIssuers []string
	for _, name := range h.names {
		cfg := h.Providers[name]
		if cfg == nil {
			return fmt.Errorf("provider %q: empty configuration", name)
		}
		p, err := h.provisionProvider(name, cfg.expanded(repl))
		if err != nil {
			return err
		}
		if other, dup := issuers[p.issuer]; dup {
			return fmt.Errorf("provider %q: issuer %q is already the issuer of provider %q", name, p.issuer, other)
		}
		issuers[p.issuer] = name
		if p.tenants != nil {
			// Found only through its template, never by its literal
			// template string (which would skip the tenant checks).
			h.verifier.templated = append(h.verifier.templated, p)
		} else {
			h.verifier.byIssuer[p.issuer] = p
			publicIssuers = append(publicIssuers, p.issuer)
		}
		h.providers = append(h.providers, p)
		all |= p.algs
	}
	h.verifier.parseAlgs = all.list()

	for i := range h.Require {
		if err := h.Require[i].check(fmt.Sprintf("require[%d]", i)); err != nil {
			return err
		}
	}
	bearerMethods := []string{"header"}
	if len(h.TokenSources) > 0 {
		bearerMethods = nil
	}
	for i, src := range h.TokenSources {
		if err := src.check(); err != nil {
			return fmt.Errorf("token_sources[%d]: %w", i, err)
		}
		ts := src.provisioned()
		h.sources = append(h.sources, ts)
		method := "header"
		if ts.kind == sourceQuery {
			method = "query"
		}
		if ts.kind != sourceCookie && !slices.Contains(bearerMethods, method) {
			bearerMethods = append(bearerMethods, method)
		}
	}
	for i, fc := range h.ForwardClaims {
		if fc.Claim == "" || !validHeaderName(fc.Header) {
			return fmt.Errorf("forward_claims[%d]: claim and a valid header name are required", i)
		}
	}
	if h.ForwardClaimsJSON != "" && !validHeaderName(h.ForwardClaimsJSON) {
		return fmt.Errorf("forward_claims_json: %q is not a valid header name", h.ForwardClaimsJSON)
	}
	h.fwd = newForwarding(h.ForwardClaims, h.ForwardClaimsJSON, h.StripAuthorization)
	metaURL := ""
	if h.ResourceMetadata != nil {
		meta, err := h.ResourceMetadata.provision(publicIssuers, bearerMethods)
		if err != nil {
			return err
		}
		h.meta, metaURL = meta, meta.url
	}
	h.challenges = buildChallenges(h.Realm, h.missing, strings.Join(scopesOf(h.Require, nil), " "), metaURL)
	if h.ErrorFormat == "json" {
		p := buildProblems(h.missing)
		h.problems = &p
	}
	return nil
}

// expanded returns a copy with global placeholders ({env.*}, ...) in its
// strings replaced.
func (p *Provider) expanded(repl *caddy.Replacer) *Provider {
	c := *p
	c.Issuer = repl.ReplaceKnown(p.Issuer, "")
	c.JWKSURI = repl.ReplaceKnown(p.JWKSURI, "")
	c.DiscoveryURI = repl.ReplaceKnown(p.DiscoveryURI, "")
	c.JWKSFile = repl.ReplaceKnown(p.JWKSFile, "")
	c.Audiences = make([]string, len(p.Audiences))
	for i, a := range p.Audiences {
		c.Audiences[i] = repl.ReplaceKnown(a, "")
	}
	return &c
}

// checkGlobal validates the handler-level options.
func (h *Handler) checkGlobal() error {
	if h.MaxTokenSize < 0 || h.MaxTokenSize > maxConfigMaxTokenSize {
		return fmt.Errorf("max_token_size: %d is not between 1 and %d", h.MaxTokenSize, maxConfigMaxTokenSize)
	}
	switch h.MissingTokenStatus {
	case 0, http.StatusBadRequest, http.StatusUnauthorized:
	default:
		return fmt.Errorf("missing_token_status: %d is not 400 or 401", h.MissingTokenStatus)
	}
	if h.CacheSize != nil && (*h.CacheSize < 0 || *h.CacheSize > maxCacheSize) {
		return fmt.Errorf("cache_size: %d is not between 0 and %d", *h.CacheSize, maxCacheSize)
	}
	switch h.ErrorFormat {
	case "", "json":
	default:
		return fmt.Errorf("error_format: %q is not json", h.ErrorFormat)
	}
	for _, c := range h.Realm {
		if c < 0x20 || c == 0x7f {
			return errors.New("realm: contains a control character")
		}
	}
	return nil
}

// check validates one provider's configuration; errors name the field.
// It does not modify the provider.
func (p *Provider) check() error {
	if p.Issuer == "" {
		return errors.New("issuer: required")
	}
	if strings.TrimSpace(p.Issuer) != p.Issuer {
		return fmt.Errorf("issuer: %q has leading or trailing white space", p.Issuer)
	}
	if len(p.Audiences) == 0 {
		return errors.New("audience: at least one is required")
	}
	for _, a := range p.Audiences {
		if a == "" {
			return errors.New("audience: empty value")
		}
	}
	sources := 0
	for _, s := range []string{p.JWKSURI, p.DiscoveryURI, p.JWKSFile} {
		if s != "" {
			sources++
		}
	}
	if sources > 1 {
		return errors.New("jwks_uri, discovery and jwks_file: only one key source may be set")
	}
	for field, raw := range map[string]string{"jwks_uri": p.JWKSURI, "discovery": p.DiscoveryURI} {
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if err := checkFetchURL(u, p.InsecureHTTP); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	}
	if sources == 0 {
		u, err := url.Parse(p.Issuer)
		if err != nil {
			return fmt.Errorf("issuer: %w (no key source is set, so discovery at the issuer is used)", err)
		}
		if err := checkFetchURL(u, p.InsecureHTTP); err != nil {
			return fmt.Errorf("issuer: %w (no key source is set, so discovery at the issuer is used)", err)
		}
	}
	algs, hmac, err := parseAlgorithms(p.Algorithms)
	if err != nil {
		return err
	}
	if hmac && p.JWKSFile == "" {
		return errors.New("algorithms: HS256/HS384/HS512 require keys from a local jwks_file, never keys fetched over the network")
	}
	_ = algs
	if p.Leeway != nil && *p.Leeway < 0 {
		return errors.New("leeway: must not be negative")
	}
	for field, d := range map[string]caddy.Duration{
		"refresh_interval": p.RefreshInterval, "min_refresh_interval": p.MinRefreshInterval,
		"fetch_timeout": p.FetchTimeout, "max_stale": p.MaxStale,
	} {
		if d < 0 {
			return fmt.Errorf("%s: must not be negative", field)
		}
	}
	maxStale := durationOr(p.MaxStale, defaultMaxStale)
	if p.RefreshInterval > 0 && time.Duration(p.RefreshInterval) >= maxStale {
		return fmt.Errorf("refresh_interval: %s must be shorter than max_stale (%s)", time.Duration(p.RefreshInterval), maxStale)
	}
	if p.templated() {
		if strings.Count(p.Issuer, tenantVar) != 1 {
			return fmt.Errorf("issuer: a template may hold %s only once", tenantVar)
		}
		if len(p.Tenants) == 0 {
			return fmt.Errorf("tenants: required with an issuer template (list tenant ids, or * for any)")
		}
		if p.JWKSURI == "" && p.DiscoveryURI == "" {
			return fmt.Errorf("jwks_uri or discovery: required with an issuer template")
		}
	} else if len(p.Tenants) > 0 {
		return fmt.Errorf("tenants: only valid with an issuer template holding %s", tenantVar)
	}
	for _, t := range p.Tenants {
		if t == "" || (t != "*" && !validTenant(t)) {
			return fmt.Errorf("tenants: %q is not a valid tenant id", t)
		}
	}
	if p.RequireTyp != "" && !strings.EqualFold(p.RequireTyp, "at+jwt") {
		return fmt.Errorf("require_typ: %q is not supported (only at+jwt)", p.RequireTyp)
	}
	return nil
}

// parseAlgorithms turns an allow-list into a set; it reports whether it
// holds an HMAC algorithm.
func parseAlgorithms(names []string) (algSet, bool, error) {
	if len(names) == 0 {
		names = defaultAlgs
	}
	var set algSet
	hmac := false
	for _, n := range names {
		alg := jose.SignatureAlgorithm(n)
		if strings.EqualFold(n, "none") {
			return 0, false, errors.New(`algorithms: "none" is never allowed`)
		}
		b := algBit(alg)
		if b == 0 {
			return 0, false, fmt.Errorf("algorithms: unknown algorithm %q", n)
		}
		if algClass(alg) == classOct {
			hmac = true
		}
		set |= b
	}
	return set, hmac, nil
}

func durationOr(d caddy.Duration, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// provisionProvider builds the runtime provider and acquires its keys.
func (h *Handler) provisionProvider(name string, cfg *Provider) (*provider, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("provider %q: %w", name, err)
	}
	algs, _, _ := parseAlgorithms(cfg.Algorithms)
	p := &provider{
		counters:  h.metrics.outcomes(name),
		name:      name,
		issuer:    cfg.Issuer,
		audiences: cfg.Audiences,
		algs:      algs,
		leeway:    defaultLeeway,
		requireAT: cfg.RequireTyp != "",
	}
	if cfg.Leeway != nil {
		p.leeway = time.Duration(*cfg.Leeway)
	}
	if cfg.templated() {
		p.tmplPrefix, p.tmplSuffix, _ = strings.Cut(cfg.Issuer, tenantVar)
		p.tenants = make(map[string]bool)
		for _, t := range cfg.Tenants {
			if t == "*" {
				p.anyTenant = true
			}
			p.tenants[t] = true
		}
	}

	if cfg.JWKSFile != "" {
		ks, skipped, err := loadJWKSFile(cfg.JWKSFile, algs&(algBit(jose.HS256)|algBit(jose.HS384)|algBit(jose.HS512)) != 0)
		for _, s := range skipped {
			h.logger.Warn("skipping unusable key in jwks_file", zap.String("provider", name), zap.String("file", cfg.JWKSFile), zap.String("kid", s.kid), zap.String("reason", s.reason))
		}
		if err != nil {
			return nil, fmt.Errorf("provider %q: jwks_file: %w", name, err)
		}
		p.keys = staticKeys{set: ks}
		h.regKeys = append(h.regKeys, registerProvider(name, cfg.Issuer, "jwks_file "+cfg.JWKSFile, p.keys))
		return p, nil
	}

	fc := fetchConfig{
		jwksURI:         cfg.JWKSURI,
		discoveryURI:    cfg.DiscoveryURI,
		issuer:          cfg.Issuer,
		refreshInterval: time.Duration(cfg.RefreshInterval),
		minRefresh:      durationOr(cfg.MinRefreshInterval, defaultMinRefresh),
		fetchTimeout:    durationOr(cfg.FetchTimeout, defaultFetchTimeout),
		maxStale:        durationOr(cfg.MaxStale, defaultMaxStale),
		insecureHTTP:    cfg.InsecureHTTP,
	}
	if fc.jwksURI == "" && fc.discoveryURI == "" {
		fc.discoveryURI = strings.TrimSuffix(cfg.Issuer, "/") + discoveryWellKnownPath
	}
	if cfg.InsecureHTTP {
		h.logger.Warn("insecure_http: keys may be fetched over plain HTTP, which lets a network attacker substitute them",
			zap.String("provider", name), zap.String("url", fc.sourceURL()))
	}
	key := fc.poolKey()
	val, _, err := cachePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		c := newJWKSCache(fc)
		c.start()
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("provider %q: key cache: %w", name, err)
	}
	h.poolKeys = append(h.poolKeys, key)
	c := val.(*jwksCache)
	c.addName(name)
	h.cacheNames = append(h.cacheNames, namedCache{c, name})
	p.keys = c
	source := "jwks_uri " + fc.jwksURI
	if fc.discoveryURI != "" {
		source = "discovery " + fc.discoveryURI
	}
	h.regKeys = append(h.regKeys, registerProvider(name, cfg.Issuer, source, c))
	return p, nil
}

// Validate checks the configuration without changing it.
func (h *Handler) Validate() error {
	if err := h.checkGlobal(); err != nil {
		return err
	}
	if len(h.Providers) == 0 {
		return errors.New("at least one provider is required")
	}
	return nil
}

// Cleanup releases the key caches this instance acquired.
func (h *Handler) Cleanup() error {
	for _, key := range h.regKeys {
		unregisterProvider(key)
	}
	h.regKeys = nil
	for _, nc := range h.cacheNames {
		nc.cache.removeName(nc.name)
	}
	h.cacheNames = nil
	var errs []error
	for _, key := range h.poolKeys {
		if _, err := cachePool.Delete(key); err != nil {
			errs = append(errs, err)
		}
	}
	h.poolKeys = nil
	return errors.Join(errs...)
}

// ServeHTTP authenticates the request and calls next on success.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if len(h.fwd.reserved) > 0 {
		h.fwd.scrub(r.Header)
	}
	if h.meta != nil && h.meta.serve(w, r) {
		return nil
	}
	if h.AllowCORSPreflight && r.Method == http.MethodOptions &&
		r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != "" {
		return h.passAnonymous(w, r, repl, next)
	}
	if h.public != nil {
		if ok, err := h.public.MatchWithError(r); err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, err)
		} else if ok {
			return h.passAnonymous(w, r, repl, next)
		}
	}

	token, src, aerr := extractToken(r, h.sources, h.MaxTokenSize)
	if aerr != nil {
		if aerr == errMissingToken && h.AllowMissing {
			return h.passAnonymous(w, r, repl, next)
		}
		return h.reject(w, repl, nil, aerr)
	}
	if len(token) > h.MaxTokenSize {
		// Refused before it is hashed, scanned or decoded.
		return h.reject(w, repl, nil, errTooLarge)
	}
	now := h.verifier.now()
	if h.cache != nil {
		if e := h.cache.get(token, now); e != nil {
			ks, aerr := e.p.keys.keysAt(now)
			if aerr != nil {
				return h.reject(w, repl, e.p, aerr)
			}
			if ks.gen == e.gen {
				h.cacheHit.Inc()
				return h.accept(w, r, repl, src, e.p, e.claims, next)
			}
		}
		h.cacheMiss.Inc()
	}
	if hasSeparator(token) {
		return h.reject(w, repl, nil, errBadHeader)
	}
	claims, p, gen, aerr := h.verifier.verify(r.Context(), token, now)
	if aerr != nil {
		return h.reject(w, repl, p, aerr)
	}
	if h.cache != nil {
		// Clone: the token is a substring of the request's header (or
		// cookie, or query), which the cache must not keep alive.
		if h.cache.put(strings.Clone(token), &cachedToken{claims: claims, p: p, gen: gen}, now) {
			h.metrics.cacheEvicted.Inc()
		}
	}
	return h.accept(w, r, repl, src, p, claims, next)
}

// accept applies the authorization rules to a verified request, then hands
// it to the next handler with the claims as lazily resolved placeholders,
// in the request's variables and in forwarded headers.
func (h *Handler) accept(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, src *tokenSource, p *provider, claims *Claims, next caddyhttp.Handler) error {
	if repl != nil {
		// Placeholders and ClaimsFromRequest resolve through this one
		// provider, lazily; the function value is made once per token.
		repl.Map(claims.replaceFn)
	}
	if len(h.Require) > 0 && !satisfied(h.Require, claims) {
		return h.reject(w, repl, p, errForbidden)
	}
	p.counters[reasonOK].Inc()
	h.fwd.apply(r.Header, claims)
	h.passOn(r)
	return next.ServeHTTP(w, r)
}

// passAnonymous lets a request through without a verified token.
func (h *Handler) passAnonymous(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, next caddyhttp.Handler) error {
	if repl != nil {
		repl.Map(anonymousPlaceholders)
	}
	h.passOn(r)
	return next.ServeHTTP(w, r)
}

// passOn removes what must not reach later handlers: the Authorization
// header when strip_authorization is set, and query-string tokens.
func (h *Handler) passOn(r *http.Request) {
	if h.fwd.stripAuth {
		delete(r.Header, "Authorization")
	}
	// Every query source's parameter goes, whichever source (if any)
	// yielded the token: a token in the URL never travels on.
	for i := range h.sources {
		if s := &h.sources[i]; s.kind == sourceQuery && r.URL.RawQuery != "" {
			if q := removeQueryParam(r.URL.RawQuery, s.name); q != r.URL.RawQuery {
				r.URL.RawQuery = q
				r.RequestURI = r.URL.RequestURI()
			}
		}
	}
}

// reject answers a failed authentication: the challenge header, the reason
// placeholder, a debug log line, and a Caddy error with the status.
func (h *Handler) reject(w http.ResponseWriter, repl *caddy.Replacer, p *provider, e *authError) error {
	if p != nil {
		p.counters[e.reason].Inc()
	} else {
		h.anonCount[e.reason].Inc()
	}
	info := reasons[e.reason]
	status := info.status
	if e.reason == reasonMissingToken {
		status = h.missing
	}
	hdr := w.Header()
	hdr.Set("WWW-Authenticate", h.challenges[e.reason])
	if e.reason == reasonUnavailable {
		hdr.Set("Retry-After", retryAfterHeader(e.retryAfter))
	}
	if repl != nil {
		repl.Set("http.auth.jwt.error", info.code)
		repl.Map(anonymousPlaceholders)
	}
	if h.problems != nil {
		hdr.Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		_, err := w.Write(h.problems[e.reason])
		h.logRejection(p, info.code, e.detail, status)
		return err
	}
	h.logRejection(p, info.code, e.detail, status)
	return caddyhttp.Error(status, e)
}

// logRejection logs a rejection once, at debug level.
func (h *Handler) logRejection(p *provider, code, detail string, status int) {
	if ce := h.logger.Check(zapcore.DebugLevel, "bearer token rejected"); ce != nil {
		name := ""
		if p != nil {
			name = p.name
		}
		ce.Write(zap.String("provider", name), zap.String("reason", code), zap.String("detail", detail), zap.Int("status", status))
	}
}

// namedCache is a key cache used under a provider name.
type namedCache struct {
	cache *jwksCache
	name  string
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
