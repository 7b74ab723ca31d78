package oauth2jwt

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("oauth2_jwt", parseHandler[Handler])
	httpcaddyfile.RegisterDirectiveOrder("oauth2_jwt", httpcaddyfile.After, "forward_auth")
}

// parseHandler parses a handler directive of this package into a new T.
func parseHandler[T any, PT interface {
	*T
	caddyfile.Unmarshaler
	caddyhttp.MiddlewareHandler
}](h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := PT(new(T))
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// blockStart consumes a directive's name, refuses arguments after it, and
// returns a function that refuses an option given twice in its block.
func blockStart(d *caddyfile.Dispenser) (once func(opt string) error, err error) {
	d.Next() // consume directive name
	return subBlockStart(d, "")
}

// subBlockStart refuses arguments after a block's name (the cursor on it)
// and returns a function that refuses an option given twice in the
// block; prefix ("dpop: ", ...) names the block in errors.
func subBlockStart(d *caddyfile.Dispenser, prefix string) (once func(opt string) error, err error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	seen := map[string]bool{}
	return func(opt string) error {
		if seen[opt] {
			return d.Errf("%s%s: specified more than once", prefix, opt)
		}
		seen[opt] = true
		return nil
	}, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	oauth2_jwt [<matcher>] {
//		provider <name> {
//			issuer               <issuer URL>
//			audience             <aud> [<aud>...]
//			jwks_uri             <url>
//			discovery            <url>
//			jwks_file            <path>
//			algorithms           <alg> [<alg>...]
//			leeway               <duration>
//			refresh_interval     <duration>
//			min_refresh_interval <duration>
//			fetch_timeout        <duration>
//			max_stale            <duration>
//			insecure_http
//			require_typ          at+jwt
//			tenants              <tenant id>... | *
//			persist_keys         on|off
//			introspection {
//				endpoint      <url> (default: from discovery)
//				client_id     <id>
//				client_secret <secret>
//				auth_method   client_secret_basic|client_secret_post|private_key_jwt
//				private_key   <JWK file>
//				token_prefix  <prefix>
//				cache_ttl     <duration>
//				negative_ttl  <duration>
//				max_rate      <n>/s|<n>/m
//				cache_size    <entries>
//				jwt_response
//				introspect_jwts
//			}
//			allow_missing_audience
//		}
//		public_paths         <path> [<path>...]
//		realm                <realm>
//		max_token_size       <bytes>
//		missing_token_status 400|401
//		cache_size           <entries>
//		require scope <scope> [<scope>...]
//		require claim <path> <value> [<value>...]
//		require any {
//			scope <scope>...
//			claim <path> <value>...
//		}
//		forward_claim        <path> <header>
//		forward_claims_json  <header>
//		strip_authorization
//		token_source         header <name> [<scheme>] | cookie <name> | query <param>
//		allow_missing
//		allow_cors_preflight
//		resource_metadata {
//			resource         <https URL of the API>
//			scopes_supported <scope>...
//		}
//		error_format         json
//		dpop {
//			mode              allowed|required
//			algorithms        <alg>...
//			proof_max_age     <duration>
//			nonce_secret      <secret>
//			nonce_lifetime    <duration>
//			replay_cache_size <entries>
//			origin            <scheme://host[:port]>
//		}
//		certificate_binding {
//			mode   allowed|required
//			header <name>
//		}
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	once, err := blockStart(d)
	if err != nil {
		return err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "provider":
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
			if _, dup := h.Providers[name]; dup {
				return d.Errf("provider %q: defined more than once", name)
			}
			file, line := d.File(), d.Line()
			p := new(Provider)
			if err := p.unmarshalCaddyfile(d, name); err != nil {
				return err
			}
			if err := p.checkUnlessPlaceholders(); err != nil {
				return fmt.Errorf("provider %q: %w, at %s:%d", name, err, file, line)
			}
			issuers := make(map[string]string, len(h.Providers))
			for other, op := range h.Providers {
				issuers[op.Issuer] = other
			}
			if err := issuerTaken(issuers, name, p.Issuer); err != nil {
				return fmt.Errorf("%w, at %s:%d", err, file, line)
			}
			if h.Providers == nil {
				h.Providers = make(map[string]*Provider)
			}
			h.Providers[name] = p

		case "public_paths":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.PublicPaths = append(h.PublicPaths, args...)

		case "realm":
			if err := once(opt); err != nil {
				return err
			}
			if err := stringArg(d, &h.Realm, checkRealm); err != nil {
				return err
			}

		case "max_token_size":
			if err := once(opt); err != nil {
				return err
			}
			n, err := intArg(d, opt, checkMaxTokenSize)
			if err != nil {
				return err
			}
			h.MaxTokenSize = n

		case "cache_size":
			if err := once(opt); err != nil {
				return err
			}
			n, err := intArg(d, opt, checkCacheSize)
			if err != nil {
				return err
			}
			h.CacheSize = &n

		case "missing_token_status":
			if err := once(opt); err != nil {
				return err
			}
			n, err := intArg(d, opt, func(n int) error { return checkMissingTokenStatus(n, false) })
			if err != nil {
				return err
			}
			h.MissingTokenStatus = n

		case "require":
			if !d.NextArg() {
				return d.ArgErr()
			}
			q, err := parseRequirement(d)
			if err != nil {
				return err
			}
			h.Require = append(h.Require, q)

		case "forward_claim":
			var claim, header string
			if !d.AllArgs(&claim, &header) {
				return d.ArgErr()
			}
			if err := checkHeaderName("forward_claim", header); err != nil {
				return d.WrapErr(err)
			}
			h.ForwardClaims = append(h.ForwardClaims, ClaimHeader{Claim: claim, Header: header})

		case "forward_claims_json":
			if err := once(opt); err != nil {
				return err
			}
			if !d.AllArgs(&h.ForwardClaimsJSON) {
				return d.ArgErr()
			}
			if err := checkHeaderName("forward_claims_json", h.ForwardClaimsJSON); err != nil {
				return d.WrapErr(err)
			}

		case "strip_authorization", "allow_missing", "allow_cors_preflight":
			if err := once(opt); err != nil {
				return err
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			switch opt {
			case "strip_authorization":
				h.StripAuthorization = true
			case "allow_missing":
				h.AllowMissing = true
			default:
				h.AllowCORSPreflight = true
			}

		case "token_source":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.ArgErr()
			}
			var src TokenSource
			switch {
			case args[0] == "header" && len(args) <= 3:
				src.Header = args[1]
				if len(args) == 3 {
					src.Scheme = args[2]
				}
			case args[0] == "cookie" && len(args) == 2:
				src.Cookie = args[1]
			case args[0] == "query" && len(args) == 2:
				src.Query = args[1]
			default:
				return d.Errf("token_source: expected 'header <name> [<scheme>]', 'cookie <name>' or 'query <param>'")
			}
			if err := src.check(); err != nil {
				return d.WrapErr(err)
			}
			h.TokenSources = append(h.TokenSources, src)

		case "resource_metadata":
			if err := once(opt); err != nil {
				return err
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			h.ResourceMetadata = new(ResourceMetadata)
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "resource":
					if h.ResourceMetadata.Resource != "" {
						return d.Err("resource_metadata: resource: specified more than once")
					}
					if !d.AllArgs(&h.ResourceMetadata.Resource) {
						return d.ArgErr()
					}
					if !strings.Contains(h.ResourceMetadata.Resource, "{") {
						if _, err := checkResource(h.ResourceMetadata.Resource); err != nil {
							return d.WrapErr(fmt.Errorf("resource_metadata: %w", err))
						}
					}
				case "scopes_supported":
					args := d.RemainingArgs()
					if len(args) == 0 {
						return d.ArgErr()
					}
					h.ResourceMetadata.ScopesSupported = append(h.ResourceMetadata.ScopesSupported, args...)
				default:
					return d.Errf("resource_metadata: unrecognized option %q", d.Val())
				}
			}
			if h.ResourceMetadata.Resource == "" {
				return d.Err("resource_metadata: resource is required")
			}

		case "error_format":
			if err := once(opt); err != nil {
				return err
			}
			if err := stringArg(d, &h.ErrorFormat, checkErrorFormat); err != nil {
				return err
			}

		case "dpop":
			if err := once(opt); err != nil {
				return err
			}
			h.DPoP = new(DPoP)
			if err := h.DPoP.unmarshalCaddyfile(d); err != nil {
				return err
			}

		case "certificate_binding":
			if err := once(opt); err != nil {
				return err
			}
			h.CertificateBinding = new(CertificateBinding)
			if err := h.CertificateBinding.unmarshalCaddyfile(d); err != nil {
				return err
			}

		default:
			return d.Errf("unrecognized oauth2_jwt option %q", opt)
		}
	}
	if len(h.Providers) == 0 {
		return d.Err("oauth2_jwt: at least one provider block is required")
	}
	return nil
}

// unmarshalCaddyfile reads one provider block.
func (p *Provider) unmarshalCaddyfile(d *caddyfile.Dispenser, name string) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		canonical := opt
		switch opt {
		case "audiences":
			canonical = "audience"
		case "discovery_uri":
			canonical = "discovery"
		}
		if seen[canonical] {
			return d.Errf("provider %q: %s: specified more than once", name, opt)
		}
		seen[canonical] = true
		argErr := func() error {
			return d.Errf("provider %q: %s: wrong argument count", name, opt)
		}
		oneArg := func(dst *string) error {
			if !d.AllArgs(dst) {
				return argErr()
			}
			return nil
		}
		duration := func(dst *caddy.Duration) error {
			var s string
			if !d.AllArgs(&s) {
				return argErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("provider %q: %s: %q is not a duration: %v", name, opt, s, err)
			}
			if err := nonNegative(opt, caddy.Duration(dur)); err != nil {
				return d.Errf("provider %q: %v", name, err)
			}
			*dst = caddy.Duration(dur)
			return nil
		}
		var err error
		switch opt {
		case "issuer":
			err = oneArg(&p.Issuer)
		case "audience", "audiences":
			p.Audiences = d.RemainingArgs()
			if len(p.Audiences) == 0 {
				return argErr()
			}
		case "jwks_uri":
			err = oneArg(&p.JWKSURI)
		case "discovery", "discovery_uri":
			err = oneArg(&p.DiscoveryURI)
		case "jwks_file":
			err = oneArg(&p.JWKSFile)
		case "algorithms":
			p.Algorithms = d.RemainingArgs()
			if len(p.Algorithms) == 0 {
				return argErr()
			}
			if _, _, aerr := parseAlgorithms(p.Algorithms); aerr != nil {
				return d.Errf("provider %q: %v", name, aerr)
			}
		case "leeway":
			var dur caddy.Duration
			err = duration(&dur)
			p.Leeway = &dur
		case "refresh_interval":
			err = duration(&p.RefreshInterval)
		case "min_refresh_interval":
			err = duration(&p.MinRefreshInterval)
		case "fetch_timeout":
			err = duration(&p.FetchTimeout)
		case "max_stale":
			err = duration(&p.MaxStale)
		case "insecure_http":
			if d.NextArg() {
				return argErr()
			}
			p.InsecureHTTP = true
		case "require_typ":
			err = oneArg(&p.RequireTyp)
		case "tenants":
			p.Tenants = d.RemainingArgs()
			if len(p.Tenants) == 0 {
				return argErr()
			}
		case "introspection":
			if p.Introspection == nil {
				p.Introspection = &Introspection{}
			}
			err = p.Introspection.unmarshalCaddyfile(d, name)
		case "allow_missing_audience":
			if d.NextArg() {
				return argErr()
			}
			p.AllowMissingAudience = true
		case "persist_keys":
			var v string
			if err = oneArg(&v); err != nil {
				break
			}
			if v != "on" && v != "off" {
				return d.Errf("provider %q: persist_keys: %q is not on or off", name, v)
			}
			on := v == "on"
			p.PersistKeys = &on
		default:
			return d.Errf("provider %q: unrecognized option %q", name, opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// stringArg reads the single argument of an option into dst and checks it
// with the option's own check.
func stringArg(d *caddyfile.Dispenser, dst *string, check func(string) error) error {
	if !d.AllArgs(dst) {
		return d.ArgErr()
	}
	if err := check(*dst); err != nil {
		return d.WrapErr(err)
	}
	return nil
}

// intArg reads the single integer argument of option opt and checks it
// with the option's own check, the one JSON configs get.
func intArg(d *caddyfile.Dispenser, opt string, check func(int) error) (int, error) {
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, d.Errf("%s: %q is not a number", opt, s)
	}
	if err := check(n); err != nil {
		return 0, d.WrapErr(err)
	}
	return n, nil
}

// parseRequirement reads one requirement, the cursor on its kind:
// `scope <s>...`, `claim <path> <value>...` or `any { <requirement>... }`.
func parseRequirement(d *caddyfile.Dispenser) (Requirement, error) {
	var q Requirement
	switch kind := d.Val(); kind {
	case "scope", "scopes":
		q.Scopes = d.RemainingArgs()
		if len(q.Scopes) == 0 {
			return q, d.ArgErr()
		}
	case "claim":
		args := d.RemainingArgs()
		if len(args) < 2 {
			return q, d.ArgErr()
		}
		q.Claim, q.Values = args[0], args[1:]
	case "any":
		if d.NextArg() {
			return q, d.ArgErr()
		}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			sub, err := parseRequirement(d)
			if err != nil {
				return q, err
			}
			q.Any = append(q.Any, sub)
		}
		if len(q.Any) == 0 {
			return q, d.Err("require any: the block needs at least one requirement")
		}
	default:
		return q, d.Errf("%v, got %q", errNoRequirementKind, kind)
	}
	if err := q.check("require"); err != nil {
		return q, d.WrapErr(err)
	}
	return q, nil
}

// checkUnlessPlaceholders validates the provider now. A value holding a
// runtime placeholder ({env.*}, ...) is only known at Provision, which
// checks it again: here it stands in as a valid value, so that every other
// error (a missing field, two key sources) is still reported with its line.
func (p *Provider) checkUnlessPlaceholders() error {
	c := *p
	stand := func(s, valid string) string {
		if strings.Contains(strings.ReplaceAll(s, tenantVar, ""), "{") {
			return valid
		}
		return s
	}
	c.Issuer = stand(c.Issuer, "https://placeholder.invalid")
	c.JWKSURI = stand(c.JWKSURI, "https://placeholder.invalid/jwks")
	c.DiscoveryURI = stand(c.DiscoveryURI, "https://placeholder.invalid/.well-known/openid-configuration")
	c.Audiences = make([]string, len(p.Audiences))
	for i, a := range p.Audiences {
		c.Audiences[i] = stand(a, "placeholder")
	}
	if p.Introspection != nil {
		in := *p.Introspection
		in.Endpoint = stand(in.Endpoint, "https://placeholder.invalid/introspect")
		c.Introspection = &in
	}
	_, _, err := c.compile("")
	return err
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
