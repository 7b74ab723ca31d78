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
	httpcaddyfile.RegisterHandlerDirective("oauth2_jwt", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("oauth2_jwt", httpcaddyfile.After, "forward_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
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
//		}
//		public_paths         <path> [<path>...]
//		realm                <realm>
//		max_token_size       <bytes>
//		missing_token_status 400|401
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	once := func(name string) error {
		if seen[name] {
			return d.Errf("%s: specified more than once", name)
		}
		seen[name] = true
		return nil
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
			if !d.AllArgs(&h.Realm) {
				return d.ArgErr()
			}

		case "max_token_size":
			if err := once(opt); err != nil {
				return err
			}
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 || n > maxConfigMaxTokenSize {
				return d.Errf("max_token_size: %q is not a number of bytes between 1 and %d", s, maxConfigMaxTokenSize)
			}
			h.MaxTokenSize = n

		case "missing_token_status":
			if err := once(opt); err != nil {
				return err
			}
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(s)
			if err != nil || (n != 400 && n != 401) {
				return d.Errf("missing_token_status: %q is not 400 or 401", s)
			}
			h.MissingTokenStatus = n

		default:
			return d.Errf("unrecognized oauth2_jwt option %q", opt)
		}
	}
	if len(h.Providers) == 0 {
		return d.Err("oauth2_jwt: at least one provider block is required")
	}
	if err := h.checkGlobal(); err != nil {
		return d.WrapErr(err)
	}
	issuers := map[string]string{}
	for name, p := range h.Providers {
		if other, dup := issuers[p.Issuer]; dup {
			a, b := min(name, other), max(name, other)
			return d.Errf("providers %q and %q have the same issuer %q", a, b, p.Issuer)
		}
		issuers[p.Issuer] = name
	}
	return nil
}

// unmarshalCaddyfile reads one provider block.
func (p *Provider) unmarshalCaddyfile(d *caddyfile.Dispenser, name string) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("provider %q: %s: specified more than once", name, opt)
		}
		seen[opt] = true
		oneArg := func(dst *string) error {
			if !d.AllArgs(dst) {
				return d.ArgErr()
			}
			return nil
		}
		duration := func(dst *caddy.Duration) error {
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("provider %q: %s: %q is not a duration: %v", name, opt, s, err)
			}
			if dur < 0 {
				return d.Errf("provider %q: %s: %q must not be negative", name, opt, s)
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
				return d.ArgErr()
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
				return d.ArgErr()
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
				return d.ArgErr()
			}
			p.InsecureHTTP = true
		case "require_typ":
			err = oneArg(&p.RequireTyp)
		default:
			return d.Errf("provider %q: unrecognized option %q", name, opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkUnlessPlaceholders validates the provider now, unless a value holds
// a runtime placeholder ({env.*}, ...), which Provision expands and checks.
func (p *Provider) checkUnlessPlaceholders() error {
	for _, s := range append([]string{p.Issuer, p.JWKSURI, p.DiscoveryURI, p.JWKSFile}, p.Audiences...) {
		if strings.Contains(s, "{") {
			return nil
		}
	}
	return p.check()
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
