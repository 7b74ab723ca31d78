package oauth2jwt

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	jose "github.com/go-jose/go-jose/v4"
)

// Default values of a provider's configuration.
const (
	defaultLeeway          = 60 * time.Second
	defaultMinRefresh      = time.Minute
	defaultFetchTimeout    = 10 * time.Second
	defaultMaxStale        = 24 * time.Hour
	discoveryWellKnownPath = "/.well-known/openid-configuration"
)

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

	// Keep the last good keys in Caddy's storage (the config's `storage`
	// module), so that a Caddy starting while the provider is down (a
	// restart, a new node of a fleet sharing the storage) starts from
	// them, within max_stale of when they were fetched. Only public keys
	// are stored. Default: true. Not valid with jwks_file, whose keys are
	// never stored.
	PersistKeys *bool `json:"persist_keys,omitempty"`

	// For a multi-tenant issuer written as a template with one `{tenant}`
	// variable (`https://login.microsoftonline.com/{tenant}/v2.0`): the
	// allowed tenant ids, or `*` for any. The token's `iss` must match
	// the template with an allowed tenant, and its `tid` claim, where
	// present, must equal that tenant. Requires jwks_uri or discovery.
	Tenants []string `json:"tenants,omitempty"`

	// Accept opaque access tokens of this provider through OAuth 2.0
	// token introspection (RFC 7662). See Introspection.
	Introspection *Introspection `json:"introspection,omitempty"`

	// Accept introspection answers without `aud`. Risky: such an answer
	// says nothing about which API the token was meant for, so a token
	// issued for any other resource of the same provider is accepted
	// too. Only for providers that never put aud in their answers.
	AllowMissingAudience bool `json:"allow_missing_audience,omitempty"`
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
	if p.Introspection != nil {
		in := *p.Introspection
		in.Endpoint = repl.ReplaceKnown(in.Endpoint, "")
		in.ClientID = repl.ReplaceKnown(in.ClientID, "")
		in.ClientSecret = repl.ReplaceKnown(in.ClientSecret, "")
		in.TokenPrefix = repl.ReplaceKnown(in.TokenPrefix, "")
		in.PrivateKey = repl.ReplaceKnown(in.PrivateKey, "")
		c.Introspection = &in
	}
	return &c
}

// keySpec says where a provider's keys come from, as compile found it:
// a local file, read when the keys are acquired, or a remote source.
type keySpec struct {
	file     string // jwks_file path, or ""
	allowOct bool   // the file may hold HMAC keys (HS* is allowed)
	fetch    fetchConfig
	persist  bool // remote keys are kept in Caddy's storage (persist_keys)
}

// source names the key source for the admin API.
func (k keySpec) source() string {
	switch {
	case k.file != "":
		return "jwks_file " + k.file
	case k.fetch.discoveryURI != "":
		return "discovery " + k.fetch.discoveryURI
	}
	return "jwks_uri " + k.fetch.jwksURI
}

// compile checks one provider's (expanded) configuration and returns its
// runtime form, without keys, and where its keys come from; errors name
// the field. It reads no file and makes no request.
func (p *Provider) compile(name string) (*provider, keySpec, error) {
	if err := p.checkSource(); err != nil {
		return nil, keySpec{}, err
	}
	algs, hmac, err := parseAlgorithms(p.Algorithms)
	if err != nil {
		return nil, keySpec{}, err
	}
	if hmac && p.JWKSFile == "" {
		return nil, keySpec{}, errors.New("algorithms: HS256/HS384/HS512 require keys from a local jwks_file, never keys fetched over the network")
	}
	if p.Leeway != nil {
		if err := nonNegative("leeway", *p.Leeway); err != nil {
			return nil, keySpec{}, err
		}
	}
	for _, d := range []struct {
		field string
		d     caddy.Duration
	}{
		{"refresh_interval", p.RefreshInterval}, {"min_refresh_interval", p.MinRefreshInterval},
		{"fetch_timeout", p.FetchTimeout}, {"max_stale", p.MaxStale},
	} {
		if err := nonNegative(d.field, d.d); err != nil {
			return nil, keySpec{}, err
		}
	}
	maxStale := durationOr(p.MaxStale, defaultMaxStale)
	if p.RefreshInterval > 0 && time.Duration(p.RefreshInterval) >= maxStale {
		return nil, keySpec{}, fmt.Errorf("refresh_interval: %s must be shorter than max_stale (%s)", time.Duration(p.RefreshInterval), maxStale)
	}
	if err := p.checkTenants(); err != nil {
		return nil, keySpec{}, err
	}
	if p.PersistKeys != nil && p.JWKSFile != "" {
		return nil, keySpec{}, errors.New("persist_keys: only for keys fetched over the network (jwks_uri or discovery); jwks_file keys are never stored")
	}
	if p.RequireTyp != "" && !strings.EqualFold(p.RequireTyp, "at+jwt") {
		return nil, keySpec{}, fmt.Errorf("require_typ: %q is not supported (only at+jwt)", p.RequireTyp)
	}

	var intro *introspector
	if p.Introspection != nil {
		if p.templated() {
			return nil, keySpec{}, errors.New("introspection: not supported with an issuer template")
		}
		ic, err := p.Introspection.compile(p)
		if err != nil {
			return nil, keySpec{}, err
		}
		intro = &introspector{cfg: ic}
	} else if p.AllowMissingAudience {
		return nil, keySpec{}, errors.New("allow_missing_audience: only valid with introspection")
	}

	rp := &provider{
		name:       name,
		issuer:     p.Issuer,
		audiences:  p.Audiences,
		algs:       algs,
		leeway:     defaultLeeway,
		requireAT:  p.RequireTyp != "",
		intro:      intro,
		allowNoAud: p.AllowMissingAudience,
	}
	if p.Leeway != nil {
		rp.leeway = time.Duration(*p.Leeway)
	}
	if p.templated() {
		rp.setTemplate(p.Issuer, p.Tenants)
	}
	if p.JWKSFile != "" {
		return rp, keySpec{file: p.JWKSFile, allowOct: hmac}, nil
	}
	fc := fetchConfig{
		jwksURI:         p.JWKSURI,
		discoveryURI:    p.DiscoveryURI,
		issuer:          p.Issuer,
		refreshInterval: time.Duration(p.RefreshInterval),
		minRefresh:      durationOr(p.MinRefreshInterval, defaultMinRefresh),
		fetchTimeout:    durationOr(p.FetchTimeout, defaultFetchTimeout),
		maxStale:        maxStale,
		insecureHTTP:    p.InsecureHTTP,
	}
	if fc.jwksURI == "" && fc.discoveryURI == "" {
		fc.discoveryURI = strings.TrimSuffix(p.Issuer, "/") + discoveryWellKnownPath
	}
	return rp, keySpec{fetch: fc, persist: p.PersistKeys == nil || *p.PersistKeys}, nil
}

// checkSource checks the issuer, the audiences and the key source.
func (p *Provider) checkSource() error {
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
	for _, f := range []struct{ field, raw string }{{"jwks_uri", p.JWKSURI}, {"discovery", p.DiscoveryURI}} {
		if f.raw == "" {
			continue
		}
		u, err := url.Parse(f.raw)
		if err != nil {
			return fmt.Errorf("%s: %w", f.field, err)
		}
		if err := checkFetchURL(u, p.InsecureHTTP); err != nil {
			return fmt.Errorf("%s: %w", f.field, err)
		}
	}
	if sources == 0 {
		u, err := url.Parse(p.Issuer)
		if err == nil {
			err = checkFetchURL(u, p.InsecureHTTP)
		}
		if err != nil {
			return fmt.Errorf("issuer: %w (no key source is set, so discovery at the issuer is used)", err)
		}
	}
	return nil
}

// checkTenants checks an issuer template and its tenants.
func (p *Provider) checkTenants() error {
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
	return nil
}

// nonNegative refuses a negative duration option.
func nonNegative(field string, d caddy.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s: must not be negative", field)
	}
	return nil
}

// issuerTaken refuses an issuer that another provider already has.
// issuers maps issuers to provider names; it is updated.
func issuerTaken(issuers map[string]string, name, issuer string) error {
	if other, dup := issuers[issuer]; dup && other != name {
		return fmt.Errorf("provider %q: issuer %q is already the issuer of provider %q", name, issuer, other)
	}
	issuers[issuer] = name
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
