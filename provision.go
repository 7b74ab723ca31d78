package oauth2jwt

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Provision sets up the handler in two steps: compile, which checks the
// whole configuration and builds its runtime form without any I/O, then
// acquire, which loads jwks_file keys and takes the (pooled) key caches,
// whose first fetches start in the background; new caches read their
// stored keys meanwhile, which Provision waits for (at most
// storageLoadTimeout in all). A configuration refused by compile has
// fetched nothing.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.obs.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	specs, err := h.compile(repl)
	if err != nil {
		return err
	}
	h.obs.metrics = getMetrics()
	if err := h.obs.metrics.register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	h.obs.anonCount = h.obs.metrics.outcomes(noProvider)
	h.obs.cacheHit = h.obs.metrics.cacheRequests.WithLabelValues("hit")
	h.obs.cacheMiss = h.obs.metrics.cacheRequests.WithLabelValues("miss")
	if h.req.meta != nil && unusedAudience(h.req.meta.resource, h.providers) {
		h.obs.logger.Warn("resource_metadata: the resource is not an audience of any provider; clients following RFC 8707 ask for tokens whose aud is the resource, and those tokens are refused with bad_audience",
			zap.String("resource", h.req.meta.resource), zap.Strings("providers", h.names))
	}
	store := h.persistStorage(ctx)
	for i, p := range h.providers {
		p.counters = h.obs.metrics.outcomes(p.name)
		if p.intro != nil {
			if err := p.intro.loadKey(); err != nil {
				return fmt.Errorf("provider %q: %w", p.name, err)
			}
			p.intro.observe(h.obs.metrics)
			p.intro.acquire(p)
		}
		if err := h.acquire(p, specs[i], store); err != nil {
			return err
		}
	}
	h.awaitStoredKeys()
	if d := h.bind.dpop; d != nil {
		h.replayLease, d.replay = acquireReplayCache(d.replay.size)
	}
	return nil
}

// compile checks the configuration and builds the handler's runtime form
// (everything but the keys), with errors naming the field. It is pure: it
// reads no file, makes no request and acquires nothing. It returns the key
// sources of the providers, in h.providers order.
func (h *Handler) compile(repl *caddy.Replacer) ([]keySpec, error) {
	if h.MaxTokenSize == 0 {
		h.MaxTokenSize = defaultMaxTokenSize
	}
	if err := h.checkGlobal(); err != nil {
		return nil, err
	}
	h.req.missing = h.MissingTokenStatus
	if h.req.missing == 0 {
		h.req.missing = http.StatusBadRequest
		if h.ResourceMetadata != nil {
			// MCP clients start authorization only on a 401.
			h.req.missing = http.StatusUnauthorized
		}
	}
	size := defaultCacheSize
	if h.CacheSize != nil {
		size = *h.CacheSize
	}
	h.cache = newTokenCache(size)
	if len(h.PublicPaths) > 0 {
		h.req.public = caddyhttp.MatchPath(append([]string(nil), h.PublicPaths...))
		if err := h.req.public.Provision(caddy.Context{}); err != nil {
			return nil, fmt.Errorf("public_paths: %w", err)
		}
	}
	specs, publicIssuers, err := h.compileProviders(repl)
	if err != nil {
		return nil, err
	}
	for i := range h.Require {
		if err := h.Require[i].check(fmt.Sprintf("require[%d]", i)); err != nil {
			return nil, err
		}
	}
	bearerMethods := []string{"header"}
	if len(h.TokenSources) > 0 {
		bearerMethods = nil
	}
	h.req.sources = nil
	for i, src := range h.TokenSources {
		if err := src.check(); err != nil {
			return nil, fmt.Errorf("token_sources[%d]: %w", i, err)
		}
		ts := src.provisioned()
		h.req.sources = append(h.req.sources, ts)
		method := "header"
		if ts.kind == sourceQuery {
			method = "query"
		}
		if ts.kind != sourceCookie && !slices.Contains(bearerMethods, method) {
			bearerMethods = append(bearerMethods, method)
		}
	}
	for i, fc := range h.ForwardClaims {
		if fc.Claim == "" {
			return nil, fmt.Errorf("forward_claims[%d]: claim: required", i)
		}
		if err := checkHeaderName(fmt.Sprintf("forward_claims[%d]: header", i), fc.Header); err != nil {
			return nil, err
		}
	}
	if h.ForwardClaimsJSON != "" {
		if err := checkHeaderName("forward_claims_json", h.ForwardClaimsJSON); err != nil {
			return nil, err
		}
	}
	h.req.fwd = newForwarding(h.ForwardClaims, h.ForwardClaimsJSON, h.StripAuthorization)
	if err := h.compileBinding(repl); err != nil {
		return nil, err
	}
	metaURL := ""
	if h.ResourceMetadata != nil {
		rm := *h.ResourceMetadata
		rm.Resource = repl.ReplaceKnown(rm.Resource, "")
		meta, err := rm.compile(publicIssuers, bearerMethods, h.bind.metadata())
		if err != nil {
			return nil, err
		}
		h.req.meta, metaURL = meta, meta.url
	}
	var dc *dpopChallenge
	if d := h.bind.dpop; d != nil {
		dc = &dpopChallenge{algs: d.algsAttr, required: d.required}
	}
	h.req.challenges = buildChallenges(h.Realm, h.req.missing, strings.Join(scopesOf(h.Require, nil), " "), metaURL, dc)
	h.req.problems = nil
	if h.ErrorFormat == "json" {
		p := buildProblems(h.req.missing)
		h.req.problems = &p
	}
	return specs, nil
}

// compileBinding compiles the dpop and certificate_binding blocks.
func (h *Handler) compileBinding(repl *caddy.Replacer) error {
	h.bind = bindingPolicy{}
	if h.DPoP != nil {
		d, err := h.DPoP.compile(repl)
		if err != nil {
			return err
		}
		h.bind.dpop = d
	}
	if h.CertificateBinding != nil {
		cp, err := h.CertificateBinding.compile()
		if err != nil {
			return err
		}
		h.bind.cert = cp
	}
	return nil
}

// compileProviders compiles every provider, in name order, into
// h.providers and h.verifier; it returns their key sources and the
// issuers that are not templates (for the resource metadata).
func (h *Handler) compileProviders(repl *caddy.Replacer) ([]keySpec, []string, error) {
	if len(h.Providers) == 0 {
		return nil, nil, errors.New("providers: at least one provider is required")
	}
	h.names = make([]string, 0, len(h.Providers))
	for name := range h.Providers {
		h.names = append(h.names, name)
	}
	sort.Strings(h.names)
	h.verifier = verifier{
		byIssuer:     make(map[string]*provider, len(h.Providers)),
		maxTokenSize: h.MaxTokenSize,
		now:          h.deps.clock(),
	}
	h.providers = make([]*provider, 0, len(h.names))
	h.intro = introRoutes{}
	specs := make([]keySpec, 0, len(h.names))
	issuers := make(map[string]string, len(h.Providers))
	var all algSet
	var publicIssuers []string
	for _, name := range h.names {
		cfg := h.Providers[name]
		if cfg == nil {
			return nil, nil, fmt.Errorf("provider %q: empty configuration", name)
		}
		p, spec, err := cfg.expanded(repl).compile(name)
		if err != nil {
			return nil, nil, fmt.Errorf("provider %q: %w", name, err)
		}
		if err := issuerTaken(issuers, name, p.issuer); err != nil {
			return nil, nil, err
		}
		if p.tenants != nil {
			// Found only through its template, never by its literal
			// template string (which would skip the tenant checks).
			h.verifier.templated = append(h.verifier.templated, p)
		} else {
			h.verifier.byIssuer[p.issuer] = p
			publicIssuers = append(publicIssuers, p.issuer)
		}
		if p.intro != nil {
			if err := h.intro.add(p); err != nil {
				return nil, nil, err
			}
			p.intro.start(p.name, p.issuer, h.verifier.now, h.introLogger())
		}
		h.providers = append(h.providers, p)
		specs = append(specs, spec)
		all |= p.algs
	}
	h.verifier.parseAlgs = all.list()
	return specs, publicIssuers, nil
}

// introLogger is the logger of the introspection clients: the handler's,
// else the injected one, else none (compile without Provision).
func (h *Handler) introLogger() *zap.Logger {
	switch {
	case h.obs.logger != nil:
		return h.obs.logger
	case h.deps.log != nil:
		return h.deps.log
	}
	return zap.NewNop()
}

// checkGlobal validates the handler-level options; each check is the one
// the Caddyfile parser runs on its option.
func (h *Handler) checkGlobal() error {
	if err := checkMaxTokenSize(h.MaxTokenSize); err != nil {
		return err
	}
	if err := checkMissingTokenStatus(h.MissingTokenStatus, true); err != nil {
		return err
	}
	if h.CacheSize != nil {
		if err := checkCacheSize(*h.CacheSize); err != nil {
			return err
		}
	}
	if err := checkErrorFormat(h.ErrorFormat); err != nil {
		return err
	}
	return checkRealm(h.Realm)
}

func checkMaxTokenSize(n int) error {
	if n < 1 || n > maxConfigMaxTokenSize {
		return fmt.Errorf("max_token_size: %d is not between 1 and %d", n, maxConfigMaxTokenSize)
	}
	return nil
}

// checkMissingTokenStatus allows 400 and 401, and 0 (the default) when
// unsetOK (in JSON, where an absent field reads as 0).
func checkMissingTokenStatus(n int, unsetOK bool) error {
	if n == http.StatusBadRequest || n == http.StatusUnauthorized || (n == 0 && unsetOK) {
		return nil
	}
	return fmt.Errorf("missing_token_status: %d is not 400 or 401", n)
}

func checkCacheSize(n int) error {
	if n < 0 || n > maxCacheSize {
		return fmt.Errorf("cache_size: %d is not between 0 and %d", n, maxCacheSize)
	}
	return nil
}

func checkErrorFormat(s string) error {
	if s != "" && s != "json" {
		return fmt.Errorf("error_format: %q is not json", s)
	}
	return nil
}

func checkRealm(s string) error {
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return errors.New("realm: contains a control character")
		}
	}
	return nil
}

// checkHeaderName refuses a header name that is not an RFC 9110 token.
func checkHeaderName(field, name string) error {
	if !validHeaderName(name) {
		return fmt.Errorf("%s: %q is not a valid header name", field, name)
	}
	return nil
}

// acquire gives p its keys: a jwks_file is read now; a remote source's
// key cache is taken from the pool (and started when new), persisting its
// keys to store unless the provider has persist_keys off.
func (h *Handler) acquire(p *provider, spec keySpec, store keyStorage) error {
	if spec.file != "" {
		ks, data, skipped, err := loadJWKSFile(spec.file, spec.allowOct)
		for _, s := range skipped {
			h.obs.logger.Warn("skipping unusable key in jwks_file", zap.String("provider", p.name), zap.String("file", spec.file), zap.String("kid", s.kid), zap.String("reason", s.reason))
		}
		if err != nil {
			return fmt.Errorf("provider %q: jwks_file: %w", p.name, err)
		}
		key, lp := acquireStatic(p.name, p.issuer, spec.source(), fileKeyID(spec.file, data), staticKeys{set: ks})
		h.leases = append(h.leases, key)
		p.keys = lp.keys
		return nil
	}
	if spec.fetch.insecureHTTP {
		h.obs.logger.Warn("insecure_http: keys may be fetched over plain HTTP, which lets a network attacker substitute them",
			zap.String("provider", p.name), zap.String("url", spec.fetch.sourceURL()))
	}
	deps := h.deps
	deps.storage = nil
	if spec.persist {
		deps.storage = store
	}
	key, lp, err := acquireRemote(p.name, p.issuer, spec.source(), spec.fetch, deps)
	if err != nil {
		return fmt.Errorf("provider %q: key cache: %w", p.name, err)
	}
	h.leases = append(h.leases, key)
	p.keys = lp.keys
	return nil
}

// Cleanup gives back the provider records (and through them the key
// caches) this instance acquired.
func (h *Handler) Cleanup() error {
	var errs []error
	for _, key := range h.leases {
		if _, err := liveProviders.Delete(key); err != nil {
			errs = append(errs, err)
		}
	}
	h.leases = nil
	if h.replayLease != "" {
		if _, err := replayPool.Delete(h.replayLease); err != nil {
			errs = append(errs, err)
		}
		h.replayLease = ""
	}
	for _, p := range h.providers {
		if p.intro != nil {
			p.intro.close()
		}
	}
	return errors.Join(errs...)
}
