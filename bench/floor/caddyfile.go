package main

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("gojose_floor", parseFloor)
	// The same place in the handler chain as oauth2_jwt, so a site block
	// reads the same for both.
	httpcaddyfile.RegisterDirectiveOrder("gojose_floor", httpcaddyfile.After, "forward_auth")
}

func parseFloor(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	f := new(Floor)
	err := f.UnmarshalCaddyfile(h.Dispenser)
	return f, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	gojose_floor {
//		jwks_file  <path>
//		issuer     <iss>
//		audience   <aud>
//		algorithms <alg...>
//	}
func (f *Floor) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "jwks_file", "issuer", "audience":
			if !d.NextArg() {
				return d.ArgErr()
			}
			v := d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
			switch opt {
			case "jwks_file":
				f.JWKSFile = v
			case "issuer":
				f.Issuer = v
			default:
				f.Audience = v
			}
		case "algorithms":
			f.Algorithms = d.RemainingArgs()
			if len(f.Algorithms) == 0 {
				return d.ArgErr()
			}
		default:
			return d.Errf("gojose_floor: unknown option %q", opt)
		}
	}
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Floor)(nil)
