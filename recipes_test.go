package oauth2jwt

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
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
			if formatted := caddyfile.Format(body); !bytes.Equal(formatted, body) {
				t.Fatalf("%s is not caddy fmt-clean; formatted:\n%s", file, formatted)
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
			recipeHandlers(root, &handlers)
			if len(handlers) == 0 {
				t.Fatalf("recipe has no oauth2_jwt handler")
			}
			for _, raw := range handlers {
				var h Handler
				if err := json.Unmarshal(raw, &h); err != nil {
					t.Fatal(err)
				}
				// The whole compile step of Provision, which does no I/O.
				if _, err := h.compile(caddy.NewReplacer()); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// recipeHandlers collects every oauth2_jwt handler object of an adapted
// config (the recipes' own walk, independent of the CLI's).
func recipeHandlers(v any, out *[]json.RawMessage) {
	switch t := v.(type) {
	case map[string]any:
		if t["handler"] == "oauth2_jwt" {
			b, _ := json.Marshal(t)
			*out = append(*out, b)
			return
		}
		for _, e := range t {
			recipeHandlers(e, out)
		}
	case []any:
		for _, e := range t {
			recipeHandlers(e, out)
		}
	}
}

// TestRecipesMatchREADME checks that the README's "## Recipes" section
// shows every recipe file, as it is, and no Caddyfile that is not one.
func TestRecipesMatchREADME(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Recipes\n")
	if !ok {
		t.Fatal(`README.md has no "## Recipes" section`)
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	// Each block, by the "###" heading above it.
	blocks := map[string]string{}
	heading := ""
	for rest := section; ; {
		before, after, found := strings.Cut(rest, "\n```caddyfile\n")
		if !found {
			break
		}
		if i := strings.LastIndex(before, "\n### "); i >= 0 {
			heading, _, _ = strings.Cut(before[i+len("\n### "):], "\n")
		}
		body, tail, closed := strings.Cut(after, "\n```\n")
		if !closed {
			t.Fatal("README recipe block is not closed")
		}
		blocks[body+"\n"] = heading
		rest = "\n" + tail
	}
	files, err := filepath.Glob("testdata/recipes/*.caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recipes: %v", err)
	}
	shown := maps.Clone(blocks)
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := shown[string(body)]; !ok {
			t.Errorf("%s is not shown, as it is, in the README's Recipes section", file)
		}
		delete(shown, string(body))
	}
	for _, heading := range shown {
		t.Errorf("the README recipe block under %q is no file of testdata/recipes", heading)
	}
}
