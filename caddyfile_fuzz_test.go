package oauth2jwt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalCaddyfile feeds arbitrary text to the Caddyfile parser of
// the directive. Properties: it never panics, and when it accepts the
// input, every provider has an issuer and at least one non-empty audience
// (the two fields without which no token can be checked).
//
// The seeds are the inputs of the parser's tables (caddyfileCases,
// caddyfileErrorCases), the oauth2_jwt blocks of the adapt golden files,
// and a few shapes neither holds.
//
//	go test -run XXX -fuzz FuzzUnmarshalCaddyfile -fuzztime 30s .
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, tc := range caddyfileCases() {
		f.Add(tc.input)
	}
	for _, tc := range caddyfileErrorCases() {
		f.Add(tc.input)
	}
	for _, s := range goldenDirectives(f) {
		f.Add(s)
	}
	for _, s := range []string{
		"",
		"oauth2_jwt {\n}",
		"oauth2_jwt {\n\tprovider a {}\n}",
		"oauth2_jwt {\n\tprovider {\n\t\tissuer x {\n\t\t}\n\t}\n\trealm x {\n\t}\n}",
		"oauth2_jwt {\n\tprovider a {\n\t\timport snippet\n\t}\n}",
		"oauth2_jwt {\n\tprovider a {\n\t\tissuer <<EOF\n\t\thttps://a.example.com\n\t\tEOF\n\t\taudience api\n\t}\n}",
	} {
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

// goldenDirectives returns the oauth2_jwt directives of the Caddyfiles in
// adaptGoldenDir: from the line starting with oauth2_jwt to the line that
// closes its block.
func goldenDirectives(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(adaptGoldenDir, "*.caddyfiletest"))
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			tb.Fatal(err)
		}
		caddyfileText, _, _ := strings.Cut(winNewlines.ReplaceAllString(string(data), "\n"), "----------")
		var block []string
		depth := 0
		for _, line := range strings.Split(caddyfileText, "\n") {
			trimmed := strings.TrimSpace(line)
			if block == nil && !strings.HasPrefix(trimmed, "oauth2_jwt") {
				continue
			}
			block = append(block, trimmed)
			depth += strings.Count(trimmed, "{") - strings.Count(trimmed, "}")
			if depth <= 0 {
				out = append(out, strings.Join(block, "\n"))
				block, depth = nil, 0
			}
		}
	}
	if len(out) == 0 {
		tb.Fatalf("no oauth2_jwt directive in %s", adaptGoldenDir)
	}
	return out
}
