package oauth2jwt

import "strings"

// Issuers are compared exactly, byte for byte, except for multi-tenant
// templates: an issuer written with one {tenant} variable
// (`https://login.microsoftonline.com/{tenant}/v2.0`) matches the issuers of
// the allowed tenants. This file holds the template rules: what a tenant id
// may be, how a token's iss is matched, and which discovery document
// issuers a template accepts.

// tenantVar is the variable of a multi-tenant issuer template.
const tenantVar = "{tenant}"

// maxTenantLen bounds a tenant id taken from an issuer.
const maxTenantLen = 128

func (p *Provider) templated() bool { return strings.Contains(p.Issuer, tenantVar) }

// setTemplate makes p match the issuers of template (holding tenantVar
// once) with one of tenants, or any tenant for "*".
func (p *provider) setTemplate(template string, tenants []string) {
	p.tmplPrefix, p.tmplSuffix, _ = strings.Cut(template, tenantVar)
	p.tenants = make(map[string]bool, len(tenants))
	for _, t := range tenants {
		if t == "*" {
			p.anyTenant = true
		}
		p.tenants[t] = true
	}
}

// validTenant reports whether s may be a tenant id: a non-empty path
// segment of unreserved URL characters.
func validTenant(s string) bool {
	if s == "" || len(s) > maxTenantLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(b64urlChars[c] || c == '.' || c == '~') {
			return false
		}
	}
	return true
}

// matchTenant returns the tenant of iss when iss fits this provider's
// issuer template with an allowed tenant.
func (p *provider) matchTenant(iss string) (string, bool) {
	if p.tenants == nil || len(iss) <= len(p.tmplPrefix)+len(p.tmplSuffix) ||
		!strings.HasPrefix(iss, p.tmplPrefix) || !strings.HasSuffix(iss, p.tmplSuffix) {
		return "", false
	}
	tenant := iss[len(p.tmplPrefix) : len(iss)-len(p.tmplSuffix)]
	if !validTenant(tenant) || (!p.anyTenant && !p.tenants[tenant]) {
		return "", false
	}
	return tenant, true
}

// discoveryIssuerMatches compares a discovery document's issuer with the
// configured one: exactly, or, for a multi-tenant template, either the same
// template with any variable name ({tenantid} in Entra ID's common
// endpoint) or one concrete tenant's issuer.
func discoveryIssuerMatches(doc, configured string) bool {
	if doc == configured {
		return true
	}
	prefix, suffix, ok := strings.Cut(configured, tenantVar)
	if !ok || len(doc) <= len(prefix)+len(suffix) || !strings.HasPrefix(doc, prefix) || !strings.HasSuffix(doc, suffix) {
		return false
	}
	middle := doc[len(prefix) : len(doc)-len(suffix)]
	if len(middle) > 2 && middle[0] == '{' && middle[len(middle)-1] == '}' && validTenant(middle[1:len(middle)-1]) {
		return true
	}
	return validTenant(middle)
}
