package oauth2jwt

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/go-jose/go-jose/v4/json"
)

// discoveryDocument holds the members of an OpenID Provider Metadata
// document this module uses.
type discoveryDocument struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// parseDiscovery decodes a discovery document and checks it against the
// configured issuer (OpenID Connect Discovery 1.0, section 4.3).
func parseDiscovery(data []byte, issuer string, insecureHTTP bool) (string, error) {
	var doc discoveryDocument
	if err := json.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("decoding discovery document: %w", err)
	}
	if !discoveryIssuerMatches(doc.Issuer, issuer) {
		return "", fmt.Errorf("discovery document issuer %q does not equal the configured issuer %q", doc.Issuer, issuer)
	}
	if doc.JWKSURI == "" {
		return "", errors.New("discovery document has no jwks_uri")
	}
	u, err := url.Parse(doc.JWKSURI)
	if err != nil {
		return "", fmt.Errorf("discovery document jwks_uri: %w", err)
	}
	if err := checkFetchURL(u, insecureHTTP); err != nil {
		return "", fmt.Errorf("discovery document jwks_uri: %w", err)
	}
	return doc.JWKSURI, nil
}

// errDiscoveryRefused marks a discovery document that was fetched but
// refused (wrong issuer, no jwks_uri, a jwks_uri against the URL policy):
// a configuration fault on one side or the other, logged as an error.
var errDiscoveryRefused = errors.New("discovery document refused")

// discover fetches the discovery document of cfg and returns its jwks_uri
// and the document (which the key cache stores with the keys).
func discover(ctx context.Context, f *fetcher, cfg fetchConfig) (string, []byte, error) {
	body, _, _, err := f.get(ctx, cfg.discoveryURI)
	if err != nil {
		return "", nil, fmt.Errorf("discovery: %w", err)
	}
	u, err := parseDiscovery(body, cfg.issuer, cfg.insecureHTTP)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", errDiscoveryRefused, err)
	}
	return u, body, nil
}
