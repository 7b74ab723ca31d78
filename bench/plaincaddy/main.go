// Command plaincaddy is Caddy with its standard modules only: the baseline
// ("plain Caddy") that bench/load.sh compares Caddy + oauth2_jwt against.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
