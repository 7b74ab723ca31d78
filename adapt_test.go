package oauth2jwt

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard" // basic_auth, forward_auth, request_header, respond, ...
)

// adaptGoldenDir holds golden files: a Caddyfile, a line `----------`, then
// either the expected JSON (starting with `{`) or a substring of the
// expected adapt error.
const adaptGoldenDir = "testdata/caddyfile_adapt"

var winNewlines = regexp.MustCompile(`\r?\n`)

// TestCaddyfileAdapt adapts every golden Caddyfile with Caddy's real
// Caddyfile adapter (directive registration, directive order, matcher
// handling, {$ENV} substitution) and compares the JSON, or the error.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(adaptGoldenDir, "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no golden files in %s", adaptGoldenDir)
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(winNewlines.ReplaceAllString(string(data), "\n"), "----------")
			if len(parts) != 2 {
				t.Fatalf("%s: want exactly one `----------` separator, found %d", name, len(parts)-1)
			}
			input, expected := strings.TrimSpace(parts[0])+"\n", strings.TrimSpace(parts[1])

			adapter := caddyconfig.GetAdapter("caddyfile")
			_, warnings, err := adapter.Adapt([]byte(input), nil)

			if strings.HasPrefix(expected, "{") {
				if err != nil {
					t.Fatalf("adapt: %v", err)
				}
				for _, w := range warnings {
					t.Errorf("adapt warning: %s:%d: %s: %s", name, w.Line, w.Directive, w.Message)
				}
				if !caddytest.CompareAdapt(t, name, input, "caddyfile", expected) {
					t.Errorf("adapted JSON of %s differs from the golden file (diff on stdout)", name)
				}
				return
			}

			if err == nil {
				t.Fatalf("adapt: no error, want one containing %q", expected)
			}
			if got := winNewlines.ReplaceAllString(err.Error(), "\n"); !strings.Contains(got, expected) {
				t.Errorf("adapt error:\n%s\nwant it to contain:\n%s", got, expected)
			}
		})
	}
}

// TestAdaptExampleCaddyfile keeps Caddyfile.example valid: it must adapt
// without errors or warnings (a formatting warning included), with the
// module in the config.
func TestAdaptExampleCaddyfile(t *testing.T) {
	data, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("caddyfile adapter not registered")
	}
	out, warnings, err := adapter.Adapt(data, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatalf("adapt Caddyfile.example: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("adapt Caddyfile.example: warning at %s:%d (%s): %s", w.File, w.Line, w.Directive, w.Message)
	}
	if !strings.Contains(string(out), `"handler":"oauth2_jwt"`) {
		t.Errorf("adapted Caddyfile.example has no oauth2_jwt handler:\n%s", out)
	}
}
