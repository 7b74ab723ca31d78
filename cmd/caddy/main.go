// Command caddy is Caddy with its standard modules and the oauth2_jwt
// module, so `go run ./cmd/caddy run --config Caddyfile.example` works
// without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-oauth2-jwt/caddy-oauth2-jwt"
)

func main() {
	caddycmd.Main()
}
