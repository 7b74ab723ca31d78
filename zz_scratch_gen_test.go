package oauth2jwt

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

func TestZZScratchGen(t *testing.T) {
	files, _ := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	for _, f := range files {
		data, _ := os.ReadFile(f)
		s := string(data)
		if strings.Contains(s, "----------") {
			continue
		}
		in := strings.TrimSpace(s) + "\n"
		out, warns, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(in), nil)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		t.Logf("%s warnings: %v", f, warns)
		var buf bytes.Buffer
		json.Indent(&buf, out, "", "\t")
		os.WriteFile(f, []byte(in+"----------\n"+buf.String()+"\n"), 0o644)
	}
}
