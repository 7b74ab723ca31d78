package oauth2jwt

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(MetadataHandler{})
	httpcaddyfile.RegisterHandlerDirective("oauth2_resource_metadata", parseHandler[MetadataHandler])
	// Early, before any rewrite, authentication (basic_auth,
	// forward_auth, oauth2_jwt) and handle/route block: the document is
	// public, and its URL is the one clients derive from the resource,
	// not a rewritten one.
	httpcaddyfile.RegisterDirectiveOrder("oauth2_resource_metadata", httpcaddyfile.After, "redir")
}

// MetadataHandler serves an RFC 9728 OAuth 2.0 Protected Resource Metadata
// document at the well-known URL of its resource
// (`/.well-known/oauth-protected-resource` inserted before the resource's
// path) and passes every other request on. It is the document the
// `resource_metadata` block of oauth2_jwt describes, for sites where
// oauth2_jwt runs only under the resource's path (`handle /mcp* {...}`),
// which the well-known URL never reaches.
//
// The document is public: GET and HEAD answer it with
// `Access-Control-Allow-Origin: *`, and OPTIONS (a CORS preflight)
// answers 204.
type MetadataHandler struct {
	// The protected resource's identifier: an https URL (http only on
	// loopback hosts), without query or fragment. Required. With
	// oauth2_jwt, it should be the one in its resource_metadata block and
	// one of its providers' audiences.
	Resource string `json:"resource,omitempty"`

	// The issuers of the authorization servers that grant tokens for the
	// resource. At least one is required.
	AuthorizationServers []string `json:"authorization_servers,omitempty"`

	// The scopes advertised in scopes_supported.
	ScopesSupported []string `json:"scopes_supported,omitempty"`

	// How tokens may be presented: `header`, `body` or `query`.
	// Default: header.
	BearerMethodsSupported []string `json:"bearer_methods_supported,omitempty"`

	meta *resourceMetadata
}

// CaddyModule returns the Caddy module information.
func (MetadataHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oauth2_resource_metadata",
		New: func() caddy.Module { return new(MetadataHandler) },
	}
}

// Provision builds the document, once.
func (m *MetadataHandler) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	c := *m
	c.Resource = repl.ReplaceKnown(m.Resource, "")
	c.AuthorizationServers = make([]string, len(m.AuthorizationServers))
	for i, s := range m.AuthorizationServers {
		c.AuthorizationServers[i] = repl.ReplaceKnown(s, "")
	}
	if len(c.BearerMethodsSupported) == 0 {
		c.BearerMethodsSupported = []string{"header"}
	}
	if err := c.check(); err != nil {
		return err
	}
	meta, err := newResourceMetadata(c.Resource, c.AuthorizationServers, c.ScopesSupported, c.BearerMethodsSupported)
	if err != nil {
		return fmt.Errorf("oauth2_resource_metadata: %w", err)
	}
	m.meta = meta
	return nil
}

// check validates the configuration; errors name the field.
func (m *MetadataHandler) check() error {
	if _, err := checkResource(m.Resource); err != nil {
		return fmt.Errorf("oauth2_resource_metadata: %w", err)
	}
	if len(m.AuthorizationServers) == 0 {
		return errors.New("oauth2_resource_metadata: authorization_servers: at least one issuer is required")
	}
	for _, s := range m.AuthorizationServers {
		if err := checkIssuerURL(s); err != nil {
			return fmt.Errorf("oauth2_resource_metadata: authorization_servers: %w", err)
		}
	}
	for _, s := range m.ScopesSupported {
		if s == "" || strings.ContainsAny(s, " \t\"\\") {
			return fmt.Errorf("oauth2_resource_metadata: scopes_supported: %q is not a valid scope token", s)
		}
	}
	for _, b := range m.BearerMethodsSupported {
		switch b {
		case "header", "body", "query":
		default:
			return fmt.Errorf("oauth2_resource_metadata: bearer_methods_supported: %q is not header, body or query", b)
		}
	}
	return nil
}

// checkIssuerURL validates an authorization server's issuer identifier
// (RFC 8414 section 2): an https URL (http only on loopback hosts)
// without query or fragment.
func checkIssuerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
		return fmt.Errorf("%q must be an https URL", s)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return fmt.Errorf("%q must not have a query or fragment", s)
	}
	return nil
}

// ServeHTTP answers the metadata document's URL and passes every other
// request to next.
func (m *MetadataHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if m.meta.serve(w, r) {
		return nil
	}
	return next.ServeHTTP(w, r)
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	oauth2_resource_metadata [<matcher>] {
//		resource                 <https URL of the API>
//		authorization_servers    <issuer URL>...
//		scopes_supported         <scope>...
//		bearer_methods_supported header|body|query...
//	}
func (m *MetadataHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	once, err := blockStart(d)
	if err != nil {
		return err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if err := once(opt); err != nil {
			return err
		}
		switch opt {
		case "resource":
			if !d.AllArgs(&m.Resource) {
				return d.ArgErr()
			}
		case "authorization_servers":
			m.AuthorizationServers = d.RemainingArgs()
			if len(m.AuthorizationServers) == 0 {
				return d.ArgErr()
			}
		case "scopes_supported":
			m.ScopesSupported = d.RemainingArgs()
			if len(m.ScopesSupported) == 0 {
				return d.ArgErr()
			}
		case "bearer_methods_supported":
			m.BearerMethodsSupported = d.RemainingArgs()
			if len(m.BearerMethodsSupported) == 0 {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized oauth2_resource_metadata option %q", opt)
		}
	}
	if m.Resource == "" {
		return d.Err("oauth2_resource_metadata: resource is required")
	}
	if len(m.AuthorizationServers) == 0 {
		return d.Err("oauth2_resource_metadata: authorization_servers: at least one issuer is required")
	}
	// Values with runtime placeholders ({env.*}) are checked at provision.
	if !strings.Contains(m.Resource, "{") && !strings.Contains(strings.Join(m.AuthorizationServers, " "), "{") {
		if err := m.check(); err != nil {
			return d.WrapErr(err)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*MetadataHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*MetadataHandler)(nil)
	_ caddyfile.Unmarshaler       = (*MetadataHandler)(nil)
)
