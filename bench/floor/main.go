// Command floor is Caddy with its standard modules and one more handler,
// gojose_floor (floor.go): the go-jose "floor" that bench/load.sh measures
// Caddy + oauth2_jwt's uncached path against. It is built from the same
// Caddy version and module graph as cmd/caddy and bench/plaincaddy, so the
// three servers differ only by the handler in front of `respond`.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
