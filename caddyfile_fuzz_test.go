package oauth2jwt

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalCaddyfile feeds arbitrary text to the Caddyfile parser of
// the directive. Properties: it never panics, and when it accepts the
// input, every provider has an issuer and at least one non-empty audience
// (the two fields without which no token can be checked).
//
//	go test -run XXX -fuzz FuzzUnmarshalCaddyfile -fuzztime 30s .
func FuzzUnmarshalCaddyfile(f *testing.F) {
	seeds := []string{
		"",
		"oauth2_jwt",
		"oauth2_jwt {\n}",
		"oauth2_jwt {\n\tprovider a {\n\t\tissuer https://a.example.com\n\t\taudience api\n\t}\n}",
		`oauth2_jwt {
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
		`oauth2_jwt {
	provider auth0 {
		issuer https://tenant.eu.auth0.com/
		audience https://api.example.com
	}
	provider keycloak {
		issuer https://sso.example.com/realms/main
		audiences account api
		discovery_uri https://sso.example.com/realms/main/.well-known/openid-configuration
	}
}`,
		`oauth2_jwt {
	provider internal {
		issuer https://internal.example.com
		audience svc
		jwks_file /etc/caddy/hmac-keys.json
		algorithms HS256 HS512
	}
}`,
		`oauth2_jwt {
	provider env {
		issuer {env.ISSUER}
		audience {env.AUD} fixed
		jwks_uri {env.JWKS}
	}
}`,
		"oauth2_jwt {\n\tprovider a {\n\t\tissuer https://a.example.com\n\t\taudience api\n\t\tleeway -5s\n\t}\n}",
		"oauth2_jwt {\n\tprovider a {\n\t\tissuer https://a.example.com\n\t\taudience api\n\t\talgorithms none\n\t}\n}",
		"oauth2_jwt {\n\tprovider a {\n\t\tissuer http://a.example.com\n\t\taudience api\n\t}\n}",
		"oauth2_jwt {\n\tprovider a {\n\t\tissuer https://a.example.com\n\t\taudience api\n\t\trefresh_interval 2h\n\t\tmax_stale 2h\n\t}\n}",
		"oauth2_jwt {\n\tprovider a {\n\t\tissuer https://a.example.com\n\t\taudience api \"\"\n\t}\n}",
		"oauth2_jwt {\n\tprovider a {\n\t\tissuer https://a.example.com\n\t\taudience api\n\t}\n\tprovider b {\n\t\tissuer https://a.example.com\n\t\taudience api\n\t}\n}",
		"oauth2_jwt {\n\tprovider a {\n\t\tissuer https://a.example.com\n\t\taudience api\n\t}\n\tmax_token_size 0\n\tmissing_token_status 403\n}",
		"oauth2_jwt {\n\tprovider {\n\t\tissuer x {\n\t\t}\n\t}\n\trealm x {\n\t}\n}",
		"oauth2_jwt /api/* {\n\tprovider a {\n\t\tissuer https://a.example.com\n\t\taudience api\n\t}\n}",
		"oauth2_jwt {\n\tprovider a {}\n}",
		"oauth2_jwt {\n\tprovider a {\n\t\timport snippet\n\t}\n}",
		"oauth2_jwt {\n\tprovider a {\n\t\tissuer <<EOF\n\t\thttps://a.example.com\n\t\tEOF\n\t\taudience api\n\t}\n}",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		// NewTestDispenser calls log.Fatalf on lexer errors; tokenize
		// first and skip what Caddy would reject before our parser runs.
		tokens, err := caddyfile.Tokenize([]byte(input), "Testfile")
		if err != nil {
			return
		}
		h := new(Handler)
		if err := h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			return
		}
		if len(h.Providers) == 0 {
			t.Fatalf("accepted a configuration without providers:\n%s", input)
		}
		for name, p := range h.Providers {
			if p == nil {
				t.Fatalf("provider %q accepted as nil:\n%s", name, input)
			}
			if p.Issuer == "" {
				t.Fatalf("provider %q accepted without issuer:\n%s", name, input)
			}
			if len(p.Audiences) == 0 {
				t.Fatalf("provider %q accepted without audience:\n%s", name, input)
			}
			for _, a := range p.Audiences {
				if a == "" {
					t.Fatalf("provider %q accepted with an empty audience:\n%s", name, input)
				}
			}
		}
	})
}
