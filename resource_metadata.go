package oauth2jwt

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// wellKnownResource is the RFC 9728 well-known URI suffix.
const wellKnownResource = "/.well-known/oauth-protected-resource"

// ResourceMetadata makes the handler publish RFC 9728 OAuth 2.0 Protected
// Resource Metadata, which MCP clients and other OAuth clients use to find
// the authorization server of an API.
type ResourceMetadata struct {
	// The protected resource's identifier: an https URL (RFC 9728
	// section 2). The metadata is served at its host with
	// /.well-known/oauth-protected-resource inserted before its path.
	Resource string `json:"resource,omitempty"`

	// The scopes advertised in scopes_supported.
	ScopesSupported []string `json:"scopes_supported,omitempty"`
}

// resourceMetadata is the provisioned form: where it is served and the
// document, encoded once.
type resourceMetadata struct {
	resource string // the resource identifier
	path     string // request path that answers the document
	url      string // absolute URL, for the resource_metadata challenge parameter
	body     []byte
}

// compile builds the document of the oauth2_jwt resource_metadata block:
// the authorization servers are the providers' issuers; extra holds
// further members (the sender-constraint ones, see bindingPolicy.metadata).
func (m *ResourceMetadata) compile(issuers []string, bearerMethods []string, extra map[string]any) (*resourceMetadata, error) {
	rm, err := newResourceMetadataWith(m.Resource, issuers, m.ScopesSupported, bearerMethods, extra)
	if err != nil {
		return nil, fmt.Errorf("resource_metadata: %w", err)
	}
	return rm, nil
}

// checkResource validates a protected resource identifier (RFC 9728
// section 1.2): an https URL (http only on loopback hosts) without query
// or fragment.
func checkResource(resource string) (*url.URL, error) {
	if resource == "" {
		return nil, errors.New("resource is required")
	}
	u, err := url.Parse(resource)
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	if u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
		return nil, fmt.Errorf("resource: %q must be an https URL", resource)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return nil, fmt.Errorf("resource: %q must not have a query or fragment", resource)
	}
	return u, nil
}

// newResourceMetadata validates the resource and encodes the RFC 9728
// document. It is the one implementation behind both the oauth2_jwt
// resource_metadata block and the oauth2_resource_metadata handler.
func newResourceMetadata(resource string, authServers, scopes, bearerMethods []string) (*resourceMetadata, error) {
	return newResourceMetadataWith(resource, authServers, scopes, bearerMethods, nil)
}

// newResourceMetadataWith is newResourceMetadata with extra members.
func newResourceMetadataWith(resource string, authServers, scopes, bearerMethods []string, extra map[string]any) (*resourceMetadata, error) {
	u, err := checkResource(resource)
	if err != nil {
		return nil, err
	}
	// RFC 9728 section 3.1: the well-known suffix goes between the host
	// and the path; a trailing slash of the path is dropped.
	suffix := strings.TrimSuffix(u.EscapedPath(), "/")
	rm := &resourceMetadata{resource: resource, path: wellKnownResource + suffix}
	rm.url = u.Scheme + "://" + u.Host + rm.path
	doc := map[string]any{
		"resource":                 resource,
		"authorization_servers":    authServers,
		"bearer_methods_supported": bearerMethods,
	}
	if len(scopes) > 0 {
		doc["scopes_supported"] = scopes
	}
	for k, v := range extra {
		doc[k] = v
	}
	rm.body, err = json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encoding the document: %w", err)
	}
	return rm, nil
}

// metadata returns the RFC 9728 members describing sender-constrained
// tokens: dpop_signing_alg_values_supported and
// dpop_bound_access_tokens_required with a dpop block,
// tls_client_certificate_bound_access_tokens with a certificate_binding
// block.
func (b *bindingPolicy) metadata() map[string]any {
	m := map[string]any{}
	if d := b.dpop; d != nil {
		algs := make([]string, len(d.algs))
		for i, a := range d.algs {
			algs[i] = string(a)
		}
		m["dpop_signing_alg_values_supported"] = algs
		m["dpop_bound_access_tokens_required"] = d.required
	}
	if b.cert.configured {
		m["tls_client_certificate_bound_access_tokens"] = true
	}
	return m
}

// metadataMethods are the methods the document answers, for Allow and
// Access-Control-Allow-Methods.
const metadataMethods = "GET, HEAD, OPTIONS"

// serve answers a request for the metadata document; it reports whether
// the request was one. The document is public and carries no credentials,
// so any origin may read it (browser-based MCP clients fetch it
// cross-origin): GET and HEAD answer with Access-Control-Allow-Origin: *,
// and OPTIONS, a CORS preflight, answers 204.
func (rm *resourceMetadata) serve(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path != rm.path {
		return false
	}
	h := w.Header()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(rm.body)))
		h.Set("Cache-Control", "max-age=3600")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(rm.body)
		}
	case http.MethodOptions:
		h.Set("Allow", metadataMethods)
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", metadataMethods)
		// Clients send headers such as MCP-Protocol-Version with their
		// discovery request; the document does not depend on any.
		if req := r.Header.Values("Access-Control-Request-Headers"); len(req) > 0 {
			h.Set("Access-Control-Allow-Headers", strings.Join(req, ", "))
			h.Add("Vary", "Access-Control-Request-Headers")
		}
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
	default:
		return false
	}
	return true
}

// unusedAudience reports whether resource is none of the providers'
// audiences: clients that follow RFC 8707 ask for tokens whose aud is the
// resource, which the handler would then refuse.
func unusedAudience(resource string, providers []*provider) bool {
	for _, p := range providers {
		if slices.Contains(p.audiences, resource) {
			return false
		}
	}
	return true
}
