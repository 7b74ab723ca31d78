package oauth2jwt

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// parseTestCaddyfile runs UnmarshalCaddyfile on input as the body of one
// directive; NewTestDispenser names the file "Testfile" and replaces
// {$VAR} / {$VAR:default} like the real Caddyfile adapter.
func parseTestCaddyfile(input string) (*Handler, error) {
	h := new(Handler)
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	return h, err
}

// durationPtr returns a pointer to d, as Provider.Leeway holds it.
func durationPtr(d time.Duration) *caddy.Duration {
	c := caddy.Duration(d)
	return &c
}

func intPtr(n int) *int { return &n }

// asJSON renders a handler for failure messages (the unexported runtime
// fields are zero after parsing, so JSON shows everything that matters).
func asJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return string(b)
}

// caddyfileCase is a directive the parser accepts and the handler it
// must produce.
type caddyfileCase struct {
	name  string
	input string
	want  *Handler
}

// caddyfileCases is the table of TestUnmarshalCaddyfile (also seeds of
// FuzzUnmarshalCaddyfile).
func caddyfileCases() []caddyfileCase {
	return []caddyfileCase{
		{
			name: "minimal provider",
			input: `oauth2_jwt {
	provider main {
		issuer https://issuer.example.com/
		audience api
	}
}`,
			want: &Handler{Providers: map[string]*Provider{
				"main": {Issuer: "https://issuer.example.com/", Audiences: []string{"api"}},
			}},
		},
		{
			name: "every option",
			input: `oauth2_jwt {
	provider corp {
		issuer               https://login.example.com/tenant/v2.0
		audience             api://backend https://api.example.com third
		jwks_uri             http://keys.internal.example/jwks.json
		algorithms           RS256 PS256 ES384 EdDSA
		leeway               0
		refresh_interval     30m
		min_refresh_interval 15s
		fetch_timeout        2s
		max_stale            12h
		insecure_http
		require_typ          at+jwt
	}
	public_paths         /health /metrics
	public_paths         /public/* /docs/*
	realm                "Example API"
	max_token_size       8192
	missing_token_status 401
}`,
			want: &Handler{
				Providers: map[string]*Provider{
					"corp": {
						Issuer:             "https://login.example.com/tenant/v2.0",
						Audiences:          []string{"api://backend", "https://api.example.com", "third"},
						JWKSURI:            "http://keys.internal.example/jwks.json",
						Algorithms:         []string{"RS256", "PS256", "ES384", "EdDSA"},
						Leeway:             durationPtr(0),
						RefreshInterval:    caddy.Duration(30 * time.Minute),
						MinRefreshInterval: caddy.Duration(15 * time.Second),
						FetchTimeout:       caddy.Duration(2 * time.Second),
						MaxStale:           caddy.Duration(12 * time.Hour),
						InsecureHTTP:       true,
						RequireTyp:         "at+jwt",
					},
				},
				PublicPaths:        []string{"/health", "/metrics", "/public/*", "/docs/*"},
				Realm:              "Example API",
				MaxTokenSize:       8192,
				MissingTokenStatus: 401,
			},
		},
		{
			name: "every handler option",
			input: `oauth2_jwt {
	provider a {
		issuer https://a.example.com
		audience api
	}
	cache_size 0
	require scope read write
	require scopes admin
	require claim realm_access.roles admin ops
	require any {
		scope superuser
		claim groups staff
	}
	forward_claim sub X-User-Id
	forward_claim email X-User-Email
	forward_claims_json X-JWT-Claims
	strip_authorization
	token_source header Authorization Bearer
	token_source header X-Token
	token_source cookie access_token
	token_source query access_token
	allow_missing
	allow_cors_preflight
	resource_metadata {
		resource https://api.example.com/v1
		scopes_supported read write
		scopes_supported admin
	}
	error_format json
}`,
			want: &Handler{
				Providers: map[string]*Provider{
					"a": {Issuer: "https://a.example.com", Audiences: []string{"api"}},
				},
				CacheSize: intPtr(0),
				Require: []Requirement{
					{Scopes: []string{"read", "write"}},
					{Scopes: []string{"admin"}},
					{Claim: "realm_access.roles", Values: []string{"admin", "ops"}},
					{Any: []Requirement{
						{Scopes: []string{"superuser"}},
						{Claim: "groups", Values: []string{"staff"}},
					}},
				},
				ForwardClaims: []ClaimHeader{
					{Claim: "sub", Header: "X-User-Id"},
					{Claim: "email", Header: "X-User-Email"},
				},
				ForwardClaimsJSON:  "X-JWT-Claims",
				StripAuthorization: true,
				TokenSources: []TokenSource{
					{Header: "Authorization", Scheme: "Bearer"},
					{Header: "X-Token"},
					{Cookie: "access_token"},
					{Query: "access_token"},
				},
				AllowMissing:       true,
				AllowCORSPreflight: true,
				ResourceMetadata: &ResourceMetadata{
					Resource:        "https://api.example.com/v1",
					ScopesSupported: []string{"read", "write", "admin"},
				},
				ErrorFormat: "json",
			},
		},
		{
			name: "multi-tenant issuer template",
			input: `oauth2_jwt {
	provider entra {
		issuer https://login.microsoftonline.com/{tenant}/v2.0
		audience api://00000000-0000-0000-0000-000000000001
		jwks_uri https://login.microsoftonline.com/common/discovery/v2.0/keys
		tenants 11111111-2222-3333-4444-555555555555 contoso.onmicrosoft.com
	}
	provider any {
		issuer https://{tenant}.auth.example.com/
		audience api
		discovery https://auth.example.com/.well-known/openid-configuration
		tenants *
	}
}`,
			want: &Handler{Providers: map[string]*Provider{
				"entra": {
					Issuer:    "https://login.microsoftonline.com/{tenant}/v2.0",
					Audiences: []string{"api://00000000-0000-0000-0000-000000000001"},
					JWKSURI:   "https://login.microsoftonline.com/common/discovery/v2.0/keys",
					Tenants:   []string{"11111111-2222-3333-4444-555555555555", "contoso.onmicrosoft.com"},
				},
				"any": {
					Issuer:       "https://{tenant}.auth.example.com/",
					Audiences:    []string{"api"},
					DiscoveryURI: "https://auth.example.com/.well-known/openid-configuration",
					Tenants:      []string{"*"},
				},
			}},
		},
		{
			name: "discovery on loopback http, compound and day durations",
			input: `oauth2_jwt {
	provider local {
		issuer http://127.0.0.1:9081
		audience demo-api
		discovery http://127.0.0.1:9081/.well-known/openid-configuration
		leeway 1m30s
		max_stale 2d
	}
	missing_token_status 400
}`,
			want: &Handler{
				Providers: map[string]*Provider{
					"local": {
						Issuer:       "http://127.0.0.1:9081",
						Audiences:    []string{"demo-api"},
						DiscoveryURI: "http://127.0.0.1:9081/.well-known/openid-configuration",
						Leeway:       durationPtr(90 * time.Second),
						MaxStale:     caddy.Duration(48 * time.Hour),
					},
				},
				MissingTokenStatus: 400,
			},
		},
		{
			name: "aliases discovery_uri and audiences",
			input: `oauth2_jwt {
	provider a {
		issuer https://a.example.com
		audiences x y
		discovery_uri https://a.example.com/.well-known/openid-configuration
	}
}`,
			want: &Handler{Providers: map[string]*Provider{
				"a": {
					Issuer:       "https://a.example.com",
					Audiences:    []string{"x", "y"},
					DiscoveryURI: "https://a.example.com/.well-known/openid-configuration",
				},
			}},
		},
		{
			name: "jwks_file with HMAC algorithms",
			input: `oauth2_jwt {
	provider internal {
		issuer https://internal.example.com
		audience svc
		jwks_file /etc/caddy/hmac-keys.json
		algorithms HS256 HS512
	}
}`,
			want: &Handler{Providers: map[string]*Provider{
				"internal": {
					Issuer:     "https://internal.example.com",
					Audiences:  []string{"svc"},
					JWKSFile:   "/etc/caddy/hmac-keys.json",
					Algorithms: []string{"HS256", "HS512"},
				},
			}},
		},
		{
			name: "two providers",
			input: `oauth2_jwt {
	provider auth0 {
		issuer https://tenant.eu.auth0.com/
		audience https://api.example.com
	}
	provider keycloak {
		issuer https://sso.example.com/realms/main
		audience account api
		jwks_uri https://sso.example.com/realms/main/protocol/openid-connect/certs
		algorithms RS256
		leeway 10s
	}
	realm api
}`,
			want: &Handler{
				Providers: map[string]*Provider{
					"auth0": {Issuer: "https://tenant.eu.auth0.com/", Audiences: []string{"https://api.example.com"}},
					"keycloak": {
						Issuer:     "https://sso.example.com/realms/main",
						Audiences:  []string{"account", "api"},
						JWKSURI:    "https://sso.example.com/realms/main/protocol/openid-connect/certs",
						Algorithms: []string{"RS256"},
						Leeway:     durationPtr(10 * time.Second),
					},
				},
				Realm: "api",
			},
		},
		{
			name: "runtime placeholders are kept for provision",
			input: `oauth2_jwt {
	provider env {
		issuer {env.OAUTH2JWT_TEST_ISSUER}
		audience {env.OAUTH2JWT_TEST_AUD} fixed
		jwks_uri {env.OAUTH2JWT_TEST_JWKS}
	}
}`,
			want: &Handler{Providers: map[string]*Provider{
				"env": {
					Issuer:    "{env.OAUTH2JWT_TEST_ISSUER}",
					Audiences: []string{"{env.OAUTH2JWT_TEST_AUD}", "fixed"},
					JWKSURI:   "{env.OAUTH2JWT_TEST_JWKS}",
				},
			}},
		},
		{
			name: "parse-time environment default",
			input: `oauth2_jwt {
	provider env {
		issuer {$OAUTH2JWT_TEST_UNSET_ISSUER:https://default.example.com}
		audience api
	}
}`,
			want: &Handler{Providers: map[string]*Provider{
				"env": {Issuer: "https://default.example.com", Audiences: []string{"api"}},
			}},
		},
		{
			name: "http issuer on localhost and IPv6 loopback need no insecure_http",
			input: `oauth2_jwt {
	provider one {
		issuer http://localhost:8080/realms/dev
		audience api
	}
	provider two {
		issuer https://two.example.com
		audience api
		jwks_uri http://[::1]:9000/jwks
	}
}`,
			want: &Handler{Providers: map[string]*Provider{
				"one": {Issuer: "http://localhost:8080/realms/dev", Audiences: []string{"api"}},
				"two": {Issuer: "https://two.example.com", Audiences: []string{"api"}, JWKSURI: "http://[::1]:9000/jwks"},
			}},
		},
		{
			name: "require_typ is case-insensitive",
			input: `oauth2_jwt {
	provider a {
		issuer https://a.example.com
		audience api
		require_typ AT+JWT
	}
}`,
			want: &Handler{Providers: map[string]*Provider{
				"a": {Issuer: "https://a.example.com", Audiences: []string{"api"}, RequireTyp: "AT+JWT"},
			}},
		},
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range caddyfileCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTestCaddyfile(tc.input)
			if err != nil {
				t.Fatalf("UnmarshalCaddyfile: unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parsed handler differs\n got: %s\nwant: %s", asJSON(got), asJSON(tc.want))
			}
		})
	}
}

// TestUnmarshalCaddyfileLeewayZero checks that `leeway 0` is kept as an
// explicit zero (no clock skew) and not confused with "unset" (default 60s).
func TestUnmarshalCaddyfileLeewayZero(t *testing.T) {
	h, err := parseTestCaddyfile(`oauth2_jwt {
	provider a {
		issuer https://a.example.com
		audience api
		leeway 0
	}
	provider b {
		issuer https://b.example.com
		audience api
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	if l := h.Providers["a"].Leeway; l == nil || *l != 0 {
		t.Errorf("leeway 0: got %v, want a non-nil pointer to 0", l)
	}
	if l := h.Providers["b"].Leeway; l != nil {
		t.Errorf("no leeway: got %v, want nil (default applies at provision)", *l)
	}
	// The JSON form must keep the explicit zero too.
	b, err := json.Marshal(h.Providers["a"])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"leeway":0`) {
		t.Errorf("JSON of leeway 0 provider = %s, want it to contain \"leeway\":0", b)
	}
}

var lineRef = regexp.MustCompile(`, at Testfile:(\d+)`)

// caddyfileErrorCase is a directive the parser refuses, with a substring
// of the error and the line it must point at.
type caddyfileErrorCase struct {
	name    string
	input   string
	wantErr string
	line    int // expected ", at Testfile:<line>"; 0: any line
}

// caddyfileErrorCases is the table of TestUnmarshalCaddyfileErrors (also
// seeds of FuzzUnmarshalCaddyfile).
func caddyfileErrorCases() []caddyfileErrorCase {
	// provider wraps provider block lines (starting at line 3) into a full
	// directive: line 1 `oauth2_jwt {`, line 2 `provider a {`.
	provider := func(lines ...string) string {
		return "oauth2_jwt {\n\tprovider a {\n\t\t" + strings.Join(lines, "\n\t\t") + "\n\t}\n}"
	}
	const iss = "issuer https://a.example.com"
	const aud = "audience api"
	// global wraps handler-level option lines (starting at line 6) after a
	// valid provider a.
	global := func(lines ...string) string {
		return "oauth2_jwt {\n\tprovider a {\n\t\t" + iss + "\n\t\t" + aud + "\n\t}\n\t" +
			strings.Join(lines, "\n\t") + "\n}"
	}

	return []caddyfileErrorCase{
		// Unknown options.
		{"unknown option", global("frobnicate yes"), `unrecognized oauth2_jwt option "frobnicate"`, 6},
		{"unknown provider option", provider(iss, "audiance api"), `provider "a": unrecognized option "audiance"`, 4},
		{"nested block as option", global("realm x {", "}"), `unrecognized oauth2_jwt option "{"`, 0},

		// Argument counts.
		{"directive argument", "oauth2_jwt extra {\n\tprovider a {\n\t\t" + iss + "\n\t\t" + aud + "\n\t}\n}", "wrong argument count", 1},
		{"provider without name", "oauth2_jwt {\n\tprovider {\n\t\t" + iss + "\n\t}\n}", "wrong argument count or unexpected line ending after 'provider'", 2},
		{"provider with two names", "oauth2_jwt {\n\tprovider a b {\n\t\t" + iss + "\n\t}\n}", "wrong argument count", 2},
		{"issuer missing arg", provider("issuer", aud), `provider "a": issuer: wrong argument count`, 3},
		{"issuer extra arg", provider(iss+" https://b.example.com", aud), "wrong argument count", 3},
		{"audience missing arg", provider(iss, "audience"), `provider "a": audience: wrong argument count`, 4},
		{"jwks_uri missing arg", provider(iss, aud, "jwks_uri"), `provider "a": jwks_uri: wrong argument count`, 5},
		{"discovery extra arg", provider(iss, aud, "discovery https://a.example.com/d https://a.example.com/e"), "wrong argument count", 5},
		{"jwks_file extra arg", provider(iss, aud, "jwks_file a.json b.json"), "wrong argument count", 5},
		{"algorithms missing arg", provider(iss, aud, "algorithms"), `provider "a": algorithms: wrong argument count`, 5},
		{"leeway missing arg", provider(iss, aud, "leeway"), `provider "a": leeway: wrong argument count`, 5},
		{"leeway extra arg", provider(iss, aud, "leeway 1s 2s"), "wrong argument count", 5},
		{"max_stale missing arg", provider(iss, aud, "max_stale"), `provider "a": max_stale: wrong argument count`, 5},
		{"insecure_http with arg", provider(iss, aud, "insecure_http yes"), "wrong argument count", 5},
		{"require_typ missing arg", provider(iss, aud, "require_typ"), `provider "a": require_typ: wrong argument count`, 5},
		{"public_paths missing arg", global("public_paths"), "unexpected line ending after 'public_paths'", 6},
		{"realm missing arg", global("realm"), "unexpected line ending after 'realm'", 6},
		{"realm extra arg", global("realm a b"), "wrong argument count", 6},
		{"max_token_size missing arg", global("max_token_size"), "unexpected line ending after 'max_token_size'", 6},
		{"missing_token_status extra arg", global("missing_token_status 400 401"), "wrong argument count", 6},

		// Duplicates.
		{"duplicate realm", global("realm a", "realm b"), "realm: specified more than once", 7},
		{"duplicate max_token_size", global("max_token_size 10", "max_token_size 20"), "max_token_size: specified more than once", 7},
		{"duplicate missing_token_status", global("missing_token_status 401", "missing_token_status 400"), "missing_token_status: specified more than once", 7},
		{"duplicate issuer", provider(iss, aud, "issuer https://b.example.com"), `provider "a": issuer: specified more than once`, 5},
		{"duplicate leeway", provider(iss, aud, "leeway 1s", "leeway 2s"), `provider "a": leeway: specified more than once`, 6},
		{"duplicate insecure_http", provider(iss, aud, "insecure_http", "insecure_http"), `provider "a": insecure_http: specified more than once`, 6},
		// The aliases name the same field; the second line silently
		// replacing the first would drop an audience or a key source.
		{"duplicate audience through alias audiences", provider(iss, aud, "audiences other"), `provider "a": audiences: specified more than once`, 5},
		{"duplicate discovery through alias discovery_uri", provider(iss, aud, "discovery https://a.example.com/one", "discovery_uri https://a.example.com/two"), `provider "a": discovery_uri: specified more than once`, 6},
		{"duplicate provider name", "oauth2_jwt {\n\tprovider a {\n\t\t" + iss + "\n\t\t" + aud + "\n\t}\n\tprovider a {\n\t\tissuer https://b.example.com\n\t\t" + aud + "\n\t}\n}",
			`provider "a": defined more than once`, 6},
		// Line 0 below: the error points at the directive's closing brace
		// (line 10), not at either provider; reported, not locked in.
		{"two providers with the same issuer", "oauth2_jwt {\n\tprovider b {\n\t\t" + iss + "\n\t\t" + aud + "\n\t}\n\tprovider a {\n\t\t" + iss + "\n\t\taudience other\n\t}\n}",
			`provider "a": issuer "https://a.example.com" is already the issuer of provider "b"`, 6},

		// Values.
		{"bad duration", provider(iss, aud, "leeway soon"), `provider "a": leeway: "soon" is not a duration`, 5},
		{"bad duration unit", provider(iss, aud, "fetch_timeout 10"), `provider "a": fetch_timeout: "10" is not a duration`, 5},
		{"negative duration", provider(iss, aud, "max_stale -1h"), `provider "a": max_stale: must not be negative`, 5},
		{"negative leeway", provider(iss, aud, "leeway -5s"), `provider "a": leeway: must not be negative`, 5},
		{"negative refresh_interval", provider(iss, aud, "refresh_interval -1m"), `provider "a": refresh_interval: must not be negative`, 5},
		{"max_token_size not a number", global("max_token_size 16k"), `max_token_size: "16k" is not a number`, 6},
		{"max_token_size zero", global("max_token_size 0"), `max_token_size: 0 is not between 1 and 1048576`, 6},
		{"max_token_size negative", global("max_token_size -1"), `max_token_size: -1 is not between 1 and 1048576`, 6},
		{"max_token_size too large", global("max_token_size 1048577"), `max_token_size: 1048577 is not between 1 and 1048576`, 6},
		{"missing_token_status 403", global("missing_token_status 403"), `missing_token_status: 403 is not 400 or 401`, 6},
		{"missing_token_status not a number", global("missing_token_status unauthorized"), `missing_token_status: "unauthorized" is not a number`, 6},
		// Line 0: checked after the block, so it points at the closing brace.
		{"realm with control character", global("realm \"a\tb\""), "realm: contains a control character", 0},
		{"cache_size negative", global("cache_size -1"), `cache_size: -1 is not between 0 and 10000000`, 6},
		{"cache_size not a number", global("cache_size many"), `cache_size: "many" is not a number`, 6},
		{"cache_size too large", global("cache_size 10000001"), `cache_size: 10000001 is not between 0 and 10000000`, 6},
		{"error_format other than json", global("error_format html"), `error_format: "html" is not json`, 6},
		{"require without kind", global("require"), "unexpected line ending after 'require'", 6},
		{"require unknown kind", global("require role admin"), `require: expected scope, claim or any, got "role"`, 6},
		{"require scope without scopes", global("require scope"), "unexpected line ending after 'scope'", 6},
		{"require claim without value", global("require claim groups"), "wrong argument count", 6},
		{"require scope with a quote", global(`require scope "a\"b"`), `require: scopes: "a\"b" is not a valid scope token`, 6},
		{"require any empty", global("require any {", "}"), "require any: the block needs at least one requirement", 0},
		{"require any with argument", global("require any x {", "scope a", "}"), "wrong argument count", 6},
		{"require any with bad member", global("require any {", "\tscope a", "\tgroup b", "}"), `require: expected scope, claim or any, got "group"`, 8},
		{"forward_claim missing header", global("forward_claim sub"), "unexpected line ending after 'sub'", 6},
		{"forward_claim extra arg", global("forward_claim sub X-User extra"), "wrong argument count", 6},
		{"duplicate forward_claims_json", global("forward_claims_json X-A", "forward_claims_json X-B"), "forward_claims_json: specified more than once", 7},
		{"strip_authorization with arg", global("strip_authorization yes"), "wrong argument count", 6},
		{"duplicate allow_missing", global("allow_missing", "allow_missing"), "allow_missing: specified more than once", 7},
		{"allow_cors_preflight with arg", global("allow_cors_preflight on"), "wrong argument count", 6},
		{"token_source missing name", global("token_source header"), "unexpected line ending after 'header'", 6},
		{"token_source unknown kind", global("token_source form token"), "token_source: expected 'header <name> [<scheme>]', 'cookie <name>' or 'query <param>'", 6},
		{"token_source cookie extra arg", global("token_source cookie a b"), "token_source: expected", 6},
		{"token_source name with space", global(`token_source header "X Token"`), "token_source: names must not contain spaces or quotes", 6},
		{"resource_metadata without resource", global("resource_metadata {", "\tscopes_supported read", "}"), "resource_metadata: resource is required", 0},
		{"resource_metadata unknown option", global("resource_metadata {", "\tresource https://api.example.com", "\tauthorization_servers https://a.example.com", "}"), `resource_metadata: unrecognized option "authorization_servers"`, 8},
		{"resource_metadata with argument", global("resource_metadata https://api.example.com"), "wrong argument count", 6},
		{"tenants without issuer template", provider(iss, aud, "tenants contoso"), `provider "a": tenants: only valid with an issuer template holding {tenant}`, 2},
		{"issuer template without tenants", provider("issuer https://login.example.com/{tenant}/v2.0", aud, "jwks_uri https://login.example.com/keys"), `provider "a": tenants: required with an issuer template`, 2},
		{"issuer template without key source", provider("issuer https://login.example.com/{tenant}/v2.0", aud, "tenants *"), `provider "a": jwks_uri or discovery: required with an issuer template`, 2},
		{"issuer template with two variables", provider("issuer https://{tenant}.example.com/{tenant}", aud, "jwks_uri https://login.example.com/keys", "tenants *"), `provider "a": issuer: a template may hold {tenant} only once`, 2},
		{"invalid tenant id", provider("issuer https://login.example.com/{tenant}/v2.0", aud, "jwks_uri https://login.example.com/keys", "tenants ok a/b"), `provider "a": tenants: "a/b" is not a valid tenant id`, 2},
		{"tenants missing arg", provider(iss, aud, "tenants"), `provider "a": tenants: wrong argument count`, 5},
		{"require_typ other than at+jwt", provider(iss, aud, "require_typ JWT"), `provider "a": require_typ: "JWT" is not supported (only at+jwt)`, 2},

		// Provider consistency (reported at the provider's line).
		{"no provider", "oauth2_jwt {\n\trealm x\n}", "at least one provider block is required", 0},
		{"empty directive", "oauth2_jwt", "at least one provider block is required", 1},
		{"missing issuer", provider(aud), `provider "a": issuer: required`, 2},
		{"provider without block", "oauth2_jwt {\n\tprovider a\n}", `provider "a": issuer: required`, 2},
		{"issuer with surrounding space", provider(`issuer " https://a.example.com"`, aud), `provider "a": issuer: " https://a.example.com" has leading or trailing white space`, 2},
		{"missing audience", provider(iss), `provider "a": audience: at least one is required`, 2},
		{"empty audience", provider(iss, `audience api ""`), `provider "a": audience: empty value`, 2},
		{"jwks_uri and jwks_file", provider(iss, aud, "jwks_uri https://a.example.com/jwks", "jwks_file keys.json"), `provider "a": jwks_uri, discovery and jwks_file: only one key source may be set`, 2},
		{"discovery and jwks_uri", provider(iss, aud, "discovery https://a.example.com/d", "jwks_uri https://a.example.com/jwks"), "only one key source may be set", 2},
		{"unknown algorithm", provider(iss, aud, "algorithms RS256 XS999"), `provider "a": algorithms: unknown algorithm "XS999"`, 5},
		{"algorithm none", provider(iss, aud, "algorithms none"), `provider "a": algorithms: "none" is never allowed`, 5},
		{"algorithm NONE among others", provider(iss, aud, "algorithms RS256 NONE"), `provider "a": algorithms: "none" is never allowed`, 5},
		{"HS256 without jwks_file", provider(iss, aud, "algorithms HS256"), `provider "a": algorithms: HS256/HS384/HS512 require keys from a local jwks_file`, 2},
		{"HS384 with jwks_uri", provider(iss, aud, "jwks_uri https://a.example.com/jwks", "algorithms RS256 HS384"), `provider "a": algorithms: HS256/HS384/HS512 require keys from a local jwks_file`, 2},
		{"refresh_interval equal to max_stale", provider(iss, aud, "refresh_interval 2h", "max_stale 2h"), `provider "a": refresh_interval: 2h0m0s must be shorter than max_stale (2h0m0s)`, 2},
		{"refresh_interval above default max_stale", provider(iss, aud, "refresh_interval 25h"), `provider "a": refresh_interval: 25h0m0s must be shorter than max_stale (24h0m0s)`, 2},
		{"http jwks_uri on non-loopback host", provider(iss, aud, "jwks_uri http://keys.example.com/jwks"), `provider "a": jwks_uri: "http://keys.example.com/jwks" is plain http on a non-loopback host (use https, or set insecure_http)`, 2},
		{"http discovery on non-loopback host", provider(iss, aud, "discovery http://a.example.com/.well-known/openid-configuration"), `provider "a": discovery: "http://a.example.com/.well-known/openid-configuration" is plain http on a non-loopback host`, 2},
		{"http issuer used for discovery", provider("issuer http://a.example.com", aud), `provider "a": issuer: "http://a.example.com" is plain http on a non-loopback host (use https, or set insecure_http) (no key source is set, so discovery at the issuer is used)`, 2},
		{"jwks_uri with another scheme", provider(iss, aud, "jwks_uri ftp://a.example.com/jwks"), `provider "a": jwks_uri: "ftp://a.example.com/jwks": scheme must be https (or http)`, 2},
		{"jwks_uri without host", provider(iss, aud, "jwks_uri https:///jwks"), `provider "a": jwks_uri: "https:///jwks" has no host`, 2},
		// A runtime placeholder in one field defers URL checks to
		// provision, but cannot make a missing field present: the error
		// should still be reported here, with its line.
		{"missing issuer next to a placeholder audience", provider("audience {env.OAUTH2JWT_TEST_AUD}"), `provider "a": issuer: required`, 2},
		{"missing audience next to a placeholder issuer", provider("issuer {env.OAUTH2JWT_TEST_ISSUER}"), `provider "a": audience: at least one is required`, 2},
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, tc := range caddyfileErrorCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTestCaddyfile(tc.input)
			if err == nil {
				t.Fatalf("UnmarshalCaddyfile: no error, want one containing %q\ninput:\n%s", tc.wantErr, tc.input)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantErr) {
				t.Errorf("error = %q\nwant it to contain %q", msg, tc.wantErr)
			}
			m := lineRef.FindStringSubmatch(msg)
			if m == nil {
				t.Fatalf("error %q has no Caddyfile line reference (\", at Testfile:N\")", msg)
			}
			if tc.line != 0 && m[1] != fmt.Sprint(tc.line) {
				t.Errorf("error %q points at line %s, want line %d\ninput:\n%s", msg, m[1], tc.line, tc.input)
			}
		})
	}
}
