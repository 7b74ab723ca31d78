package oauth2jwt

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// TestRecipes adapts every README recipe (testdata/recipes/*.caddyfile) and
// compares the JSON with its golden file, so the documented Caddyfiles
// cannot rot; each oauth2_jwt handler found must also pass the config
// checks Provision runs (without fetching keys). Set UPDATE_GOLDEN=1 to
// rewrite the golden files, then review the diff.
func TestRecipes(t *testing.T) {
	files, err := filepath.Glob("testdata/recipes/*.caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recipes: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".caddyfile")
		t.Run(name, func(t *testing.T) {
			body, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, map[string]any{"filename": file})
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			if len(warnings) > 0 {
				t.Fatalf("adapt warnings: %v", warnings)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, adapted, "", "\t"); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			golden := strings.TrimSuffix(file, ".caddyfile") + ".json"
			if os.Getenv("UPDATE_GOLDEN") != "" {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("golden file: %v", err)
			}
			if !bytes.Equal(want, pretty.Bytes()) {
				t.Fatalf("adapted JSON differs from %s:\n%s", golden, pretty.String())
			}

			var root any
			_ = json.Unmarshal(adapted, &root)
			var handlers []json.RawMessage
			findHandlers(root, &handlers)
			if len(handlers) == 0 {
				t.Fatalf("recipe has no oauth2_jwt handler")
			}
			for _, raw := range handlers {
				var h Handler
				if err := json.Unmarshal(raw, &h); err != nil {
					t.Fatal(err)
				}
				if err := h.checkGlobal(); err != nil {
					t.Fatal(err)
				}
				for pname, p := range h.Providers {
					if err := p.check(); err != nil {
						t.Fatalf("provider %q: %v", pname, err)
					}
				}
				for i := range h.Require {
					if err := h.Require[i].check("require"); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}
