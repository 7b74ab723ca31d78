package oauth2jwt

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
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
	path string // request path that answers the document
	url  string // absolute URL, for the resource_metadata challenge parameter
	body []byte
}

func (m *ResourceMetadata) provision(issuers []string, bearerMethods []string) (*resourceMetadata, error) {
	if m.Resource == "" {
		return nil, errors.New("resource_metadata: resource is required")
	}
	u, err := url.Parse(m.Resource)
	if err != nil {
		return nil, fmt.Errorf("resource_metadata: resource: %w", err)
	}
	if u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
		return nil, fmt.Errorf("resource_metadata: resource: %q must be an https URL", m.Resource)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("resource_metadata: resource: %q must not have a query or fragment", m.Resource)
	}
	suffix := strings.TrimSuffix(u.EscapedPath(), "/")
	rm := &resourceMetadata{path: wellKnownResource + suffix}
	rm.url = u.Scheme + "://" + u.Host + rm.path
	doc := map[string]any{
		"resource":                 m.Resource,
		"authorization_servers":    issuers,
		"bearer_methods_supported": bearerMethods,
	}
	if len(m.ScopesSupported) > 0 {
		doc["scopes_supported"] = m.ScopesSupported
	}
	rm.body, err = json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("resource_metadata: %w", err)
	}
	return rm, nil
}

// serve answers a request for the metadata document; it reports whether
// the request was one.
func (rm *resourceMetadata) serve(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path != rm.path || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "max-age=3600")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(rm.body)
	}
	return true
}
