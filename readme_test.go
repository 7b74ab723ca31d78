package oauth2jwt

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard" // the directives README Caddyfiles use
)

// README Caddyfile blocks come in two kinds, told apart by the fence's info
// string:
//
//   - ```caddyfile: a complete Caddyfile (global options and/or site
//     blocks). It must be `caddy fmt`-clean and adapt without errors or
//     warnings.
//   - ```caddyfile fragment: a directive's syntax reference or an excerpt
//     (`oauth2_jwt { provider idp { ... } ... }`) that is not a config on
//     its own. It must be `caddy fmt`-clean; it is not adapted.
//
// Renderers take the first word of the info string as the language, so both
// kinds are highlighted as Caddyfiles. Any other info string starting with
// "caddyfile" is an error, so a typo cannot skip a block's checks.
const (
	readmeCaddyfileInfo = "caddyfile"
	readmeFragmentInfo  = "caddyfile fragment"
)

// readmeEnvPlaceholder is a Caddyfile environment placeholder without a
// default, such as {$OIDC_ISSUER}: the README expects the user to set it.
// An unset one is replaced by an empty string when the Caddyfile is parsed,
// which drops the argument, so the test sets it to readmeEnvValue.
var readmeEnvPlaceholder = regexp.MustCompile(`\{\$([A-Za-z_][A-Za-z0-9_]*)\}`)

const readmeEnvValue = "https://issuer.example.com"

// readmeBlock is one fenced Caddyfile block of README.md.
type readmeBlock struct {
	line     int    // README line of the opening fence
	fragment bool   // info string readmeFragmentInfo
	body     string // the lines between the fences, each ending with "\n"
}

// readmeCaddyfiles returns every ```caddyfile block of the Markdown file at
// path, failing on an unknown "caddyfile..." info string or an unclosed fence.
func readmeCaddyfiles(t *testing.T, path string) []readmeBlock {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		blocks  []readmeBlock
		cur     *readmeBlock
		inFence bool // inside any fenced block (Caddyfile or not)
		fenceAt int
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if !inFence {
			if !strings.HasPrefix(trimmed, "```") {
				continue
			}
			inFence, fenceAt = true, n
			info := strings.Join(strings.Fields(strings.TrimPrefix(trimmed, "```")), " ")
			switch {
			case info == readmeCaddyfileInfo:
				cur = &readmeBlock{line: n}
			case info == readmeFragmentInfo:
				cur = &readmeBlock{line: n, fragment: true}
			case strings.HasPrefix(strings.ToLower(info), "caddyfile"):
				t.Errorf("%s:%d: unknown info string %q: use %q (a complete Caddyfile) or %q (not adapted)",
					path, n, info, readmeCaddyfileInfo, readmeFragmentInfo)
			}
			continue
		}
		if trimmed == "```" {
			inFence = false
			if cur != nil {
				blocks = append(blocks, *cur)
				cur = nil
			}
			continue
		}
		if cur != nil {
			cur.body += line + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if inFence {
		t.Fatalf("%s:%d: fenced block is never closed", path, fenceAt)
	}
	return blocks
}

// firstDifference returns the 1-based line of got where it first differs
// from want, with both lines.
func firstDifference(got, want string) (int, string, string) {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl || i >= len(g) || i >= len(w) {
			return i + 1, gl, wl
		}
	}
	return 0, "", ""
}

// TestReadmeCaddyfiles checks every Caddyfile block of README.md: each is
// exactly what Caddy's formatter (the one behind `caddy fmt`) makes of it,
// and each complete Caddyfile adapts with Caddy's Caddyfile adapter without
// errors or warnings. Failures name the README line of the block.
func TestReadmeCaddyfiles(t *testing.T) {
	blocks := readmeCaddyfiles(t, "README.md")
	var complete int
	for _, b := range blocks {
		if !b.fragment {
			complete++
		}
	}
	// The README has complete Caddyfiles; finding none means the extraction broke.
	if complete == 0 {
		t.Fatalf("README.md: %d Caddyfile blocks, none complete: the extraction found the wrong blocks", len(blocks))
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("caddyfile adapter not registered")
	}
	for _, b := range blocks {
		t.Run(fmt.Sprintf("line%d", b.line), func(t *testing.T) {
			if formatted := string(caddyfile.Format([]byte(b.body))); formatted != b.body {
				n, got, want := firstDifference(b.body, formatted)
				t.Errorf("README.md:%d: block is not caddy fmt-clean; README line %d is\n\t%q\ncaddy fmt makes it\n\t%q\nformatted block:\n%s",
					b.line, b.line+n, got, want, formatted)
			}
			if b.fragment {
				return
			}
			for _, m := range readmeEnvPlaceholder.FindAllStringSubmatch(b.body, -1) {
				if _, set := os.LookupEnv(m[1]); !set {
					t.Setenv(m[1], readmeEnvValue)
				}
			}
			// Blank lines in front make the adapter's line numbers README
			// lines. They also make the adapter's own formatting warning
			// fire; that one is skipped, formatting being checked above.
			padded := []byte(strings.Repeat("\n", b.line) + b.body)
			fmtWarning, _ := caddyfile.FormattingDifference("README.md", padded)
			_, warnings, err := adapter.Adapt(padded, map[string]any{"filename": "README.md"})
			if err != nil {
				t.Fatalf("README.md:%d: adapt: %v", b.line, err)
			}
			for _, w := range warnings {
				if w != fmtWarning {
					t.Errorf("README.md:%d: adapt warning at README.md:%d (%s): %s", b.line, w.Line, w.Directive, w.Message)
				}
			}
		})
	}
}
