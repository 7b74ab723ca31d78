package oauth2jwt

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"
)

// TestCLIKeygenTokenRoundTrip: keygen writes a key pair, token mints with
// the private key, and the module (jwks_file provider) accepts the token.
func TestCLIKeygenTokenRoundTrip(t *testing.T) {
	for _, alg := range []string{"ES256", "RS256", "EdDSA", "PS256", "ES384"} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			priv := filepath.Join(dir, "private.jwk")
			jwks := filepath.Join(dir, "jwks.json")
			cmd := keygenCommand()
			cmd.SetArgs([]string{"--alg", alg, "--private", priv, "--jwks", jwks})
			cmd.SetOut(&bytes.Buffer{})
			if err := cmd.Execute(); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(priv); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("private key file: %v, mode %v", err, fi.Mode())
			}

			var out bytes.Buffer
			tc := tokenCommand()
			tc.SetArgs([]string{"--key", priv, "--iss", "https://issuer.test", "--aud", "api", "--sub", "alice",
				"--ttl", "10m", "--claim", "scope=read write", "--claim", `roles=["a","b"]`, "--claim", "level=3"})
			tc.SetOut(&out)
			if err := tc.Execute(); err != nil {
				t.Fatal(err)
			}
			token := strings.TrimSpace(out.String())

			h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
				"local": {Issuer: "https://issuer.test", Audiences: []string{"api"}, JWKSFile: jwks},
			}})
			res := serve(t, h, bearer(token))
			expectReason(t, res, http.StatusOK, "")
			for name, want := range map[string]string{
				"http.auth.user.id":              "alice",
				"http.auth.jwt.claims.scope":     "read write",
				"http.auth.jwt.claims.roles":     "a,b",
				"http.auth.jwt.claims.level":     "3",
				"http.auth.jwt.claims.aud":       "api",
				"http.auth.jwt.claims_json":      "",
				"http.auth.jwt.claims.not_there": "",
			} {
				got := res.placeholder(name)
				if name == "http.auth.jwt.claims_json" {
					if !json.Valid([]byte(got)) {
						t.Errorf("claims_json is not JSON: %q", got)
					}
					continue
				}
				if got != want {
					t.Errorf("{%s} = %q, want %q", name, got, want)
				}
			}
		})
	}
}

// TestCLIKeygenRefusesOverwrite: keygen never replaces an existing
// --private or --jwks file unless --force is given; the error names the
// file, and nothing is written.
func TestCLIKeygenRefusesOverwrite(t *testing.T) {
	keygen := func(args ...string) error {
		cmd := keygenCommand()
		cmd.SetArgs(append([]string{}, args...)) // never nil: cobra would read os.Args
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		return cmd.Execute()
	}
	dir := t.TempDir()
	priv := filepath.Join(dir, "private.jwk")
	jwks := filepath.Join(dir, "jwks.json")
	if err := keygen("--private", priv, "--jwks", jwks); err != nil {
		t.Fatal(err)
	}
	oldPriv, oldJWKS := mustRead(t, priv), mustRead(t, jwks)

	for _, tc := range []struct {
		name, priv, jwks, want string
	}{
		{"both exist", priv, jwks, priv},
		{"private exists", priv, filepath.Join(dir, "new-jwks.json"), priv},
		{"jwks exists", filepath.Join(dir, "new-private.jwk"), jwks, jwks},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := keygen("--private", tc.priv, "--jwks", tc.jwks)
			if err == nil || !strings.Contains(err.Error(), tc.want+" already exists") || !strings.Contains(err.Error(), "--force") {
				t.Fatalf("error %v, want one naming %s and --force", err, tc.want)
			}
			for _, f := range []string{"new-jwks.json", "new-private.jwk"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
					t.Errorf("%s was written", f)
				}
			}
			if !bytes.Equal(mustRead(t, priv), oldPriv) || !bytes.Equal(mustRead(t, jwks), oldJWKS) {
				t.Errorf("existing files changed")
			}
		})
	}

	t.Run("force", func(t *testing.T) {
		// A loosened mode on the old key must not carry over to the new one.
		if err := os.Chmod(priv, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := keygen("--private", priv, "--jwks", jwks, "--force"); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(mustRead(t, priv), oldPriv) || bytes.Equal(mustRead(t, jwks), oldJWKS) {
			t.Errorf("--force did not overwrite")
		}
		if fi, err := os.Stat(priv); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("private key file: %v, mode %v", err, fi.Mode())
		}
		// The new pair matches: a token signed with the new private key
		// is accepted with the new JWKS.
		tok, err := mintToken(mustRead(t, priv), mintOptions{iss: "https://issuer.test", aud: []string{"api"}, sub: "a", ttl: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
			"local": {Issuer: "https://issuer.test", Audiences: []string{"api"}, JWKSFile: jwks},
		}})
		expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
	})

	t.Run("same file twice", func(t *testing.T) {
		f := filepath.Join(dir, "both.json")
		if err := keygen("--private", f, "--jwks", f); err == nil {
			t.Fatalf("keygen accepted one file for both")
		}
	})
}

func TestCLITokenFromPEM(t *testing.T) {
	dir := t.TempDir()
	k := newTestKey(t, "", jose.RS256, 0)
	pemFile := filepath.Join(dir, "key.pem")
	writePEM(t, pemFile, k)
	tok, err := mintToken(mustRead(t, pemFile), mintOptions{iss: "https://issuer.test", aud: []string{"api"}, sub: "bob", ttl: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// The kid defaults to the key's thumbprint; publish the key under it.
	_, _, kid, err := parsePrivateKey(mustRead(t, pemFile))
	if err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dir, "jwks.json")
	pub := k.public()
	pub.KeyID = kid
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err := os.WriteFile(jwks, b, 0o644); err != nil {
		t.Fatal(err)
	}
	h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
		"local": {Issuer: "https://issuer.test", Audiences: []string{"api"}, JWKSFile: jwks},
	}})
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
}

func TestCLITokenErrors(t *testing.T) {
	dir := t.TempDir()
	priv, pub, err := generateKey(jose.ES256, "k")
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		key  []byte
		opts mintOptions
		want string
	}{
		"public key":    {pub, mintOptions{}, "JWK"},
		"not a key":     {[]byte("hello"), mintOptions{}, "neither a JWK nor PEM"},
		"bad claim":     {priv, mintOptions{claims: []string{"novalue"}}, "want name=value"},
		"bad algorithm": {priv, mintOptions{alg: "none"}, "unsupported algorithm"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := mintToken(tc.key, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, _, err := generateKey("HS256", ""); err == nil {
		t.Fatalf("keygen accepted HS256")
	}
	_ = dir
}

// inspectIdP starts a test IdP and returns it with its key and a JSON
// config whose one oauth2_jwt handler trusts it (issuer = its URL,
// audiences api and api2).
func inspectIdP(t *testing.T) (*testIdP, *testKey, []byte) {
	t.Helper()
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	cfg := []byte(`{"apps":{"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[
		{"handler":"oauth2_jwt","providers":{"idp":{"issuer":"` + idp.url() + `","audiences":["api","api2"],"jwks_uri":"` + idp.url() + `/jwks"}}},
		{"handler":"static_response","body":"ok"}]}]}}}}}`)
	return idp, k, cfg
}

// quietBase returns a caddy.Context for inspect, as the command makes it.
func quietBase(t *testing.T) caddy.Context {
	t.Helper()
	base, restore, err := quietCaddy()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restore)
	return base
}

// TestCLIInspect runs inspect against a JSON config whose provider's keys
// come from a test IdP, for a valid, an expired, a wrong-audience, an
// unknown-issuer and an unknown-kid token. A failed issuer or audience
// check lists what would have been accepted; no output holds the token's
// signature.
func TestCLIInspect(t *testing.T) {
	idp, k, cfg := inspectIdP(t)
	stranger := newTestKey(t, "k-unknown", jose.ES256, 0)

	expired := claimsFor(idp.url(), "api")
	expired["exp"] = time.Now().Add(-2 * time.Hour).Unix()
	multiAud := claimsFor(idp.url(), "")
	multiAud["aud"] = []string{"other", "https://idp.test/userinfo"}
	cases := []struct {
		name     string
		token    string
		accepted bool
		want     []string
	}{
		{"valid", k.sign(t, claimsFor(idp.url(), "api"), nil), true,
			[]string{`selects provider "idp"`, "[ok]   signature", "result: ACCEPTED", `"sub": "user-42"`}},
		{"expired", k.sign(t, expired, nil), false,
			[]string{"[ok]   issuer", "[FAIL] time: expired", "result: REJECTED, 401 expired", "ago)"}},
		{"wrong audience", k.sign(t, claimsFor(idp.url(), "other"), nil), false,
			[]string{"[ok]   time", "[FAIL] audience: bad_audience", "401 bad_audience",
				`token aud: "other"` + "\n", `accepted:  "api", "api2" (provider idp)`}},
		{"wrong audiences", k.sign(t, multiAud, nil), false,
			[]string{"[FAIL] audience: bad_audience", `token aud: "other", "https://idp.test/userinfo"` + "\n",
				`accepted:  "api", "api2" (provider idp)`}},
		{"unknown issuer", k.sign(t, claimsFor(idp.url()+"/", "api"), nil), false,
			[]string{"[FAIL] issuer: unknown_issuer", `token iss: "` + idp.url() + `/"` + "\n",
				`accepted:  "` + idp.url() + `" (provider idp)`, "401 unknown_issuer"}},
		{"unknown kid", stranger.sign(t, claimsFor(idp.url(), "api"), nil), false,
			[]string{"[ok]   keys", "[FAIL] key: unknown_key", "401 unknown_key"}},
		{"not a token", "hello", false,
			[]string{"1 segments", "[FAIL] shape: malformed"}},
	}
	base := quietBase(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			ok, err := inspect(base, &out, tc.token, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.accepted {
				t.Errorf("accepted = %v, want %v", ok, tc.accepted)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String(), "[FAIL]") == tc.accepted {
				t.Errorf("FAIL marker presence wrong:\n%s", out.String())
			}
			if parts := strings.Split(tc.token, "."); len(parts) == 3 && strings.Contains(out.String(), parts[2]) {
				t.Errorf("output holds the token's signature:\n%s", out.String())
			}
		})
	}
}

// TestCLIInspectTemplatedIssuer: for an unknown issuer, the accepted list
// holds every provider's issuer, multi-tenant templates with their tenants.
func TestCLIInspectTemplatedIssuer(t *testing.T) {
	idp, k, _ := inspectIdP(t)
	cfg := []byte(`{"handler":"oauth2_jwt","providers":{
		"idp":{"issuer":"` + idp.url() + `","audiences":["api"],"jwks_uri":"` + idp.url() + `/jwks"},
		"entra":{"issuer":"https://login.microsoftonline.com/{tenant}/v2.0","tenants":["t1","t2"],"audiences":["api"],"jwks_uri":"` + idp.url() + `/jwks"},
		"multi":{"issuer":"https://multi.test/{tenant}","tenants":["*"],"audiences":["api"],"jwks_uri":"` + idp.url() + `/jwks"}}}`)
	claims := claimsFor("https://login.microsoftonline.com/t3/v2.0", "api")
	claims["tid"] = "t3"
	var out bytes.Buffer
	ok, err := inspect(quietBase(t), &out, k.sign(t, claims, nil), cfg)
	if err != nil || ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	for _, w := range []string{
		"[FAIL] issuer: unknown_issuer",
		`token iss: "https://login.microsoftonline.com/t3/v2.0"`,
		`token tid: "t3"`,
		`"https://login.microsoftonline.com/{tenant}/v2.0" (provider entra, tenants t1 t2)`,
		`"` + idp.url() + `" (provider idp)`,
		`"https://multi.test/{tenant}" (provider multi, any tenant)`,
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
}

// runInspect runs the inspect command in-process with stdin and args and
// returns its output and exit code (0, or the exitError's).
func runInspect(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := inspectCommand()
	var stdout, stderr bytes.Buffer
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	// Never nil: cobra reads os.Args (the test binary's own flags, such as
	// -test.count) when given nil.
	cmd.SetArgs(append([]string{}, args...))
	// As under Caddy's root command (and withExitCode): no usage text,
	// and the message of an exitError is taken below.
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	code := 0
	if err != nil {
		var ee *exitError
		if !errors.As(err, &ee) {
			t.Fatalf("error %v is not an exitError", err)
		}
		code = ee.code
		if ee.err != nil {
			stderr.WriteString(ee.err.Error())
		}
	}
	return stdout.String(), stderr.String(), code
}

// TestCLIInspectAdapterChoice: --config picks the adapter from the file
// name as `caddy run --config` does.
func TestCLIInspectAdapterChoice(t *testing.T) {
	idp, k, jsonCfg := inspectIdP(t)
	caddyfile := ":0 {\n\toauth2_jwt {\n\t\tprovider idp {\n\t\t\tissuer " + idp.url() + "\n\t\t\taudience api\n\t\t\tjwks_uri " + idp.url() + "/jwks\n\t\t}\n\t}\n\trespond ok\n}\n"
	token := k.sign(t, claimsFor(idp.url(), "api"), nil)
	for _, tc := range []struct {
		file, body string
		args       []string
	}{
		{"Caddyfile", caddyfile, nil},
		{"api.Caddyfile", caddyfile, nil},
		{"Caddyfile.prod", caddyfile, nil},
		{"x.caddyfile", caddyfile, nil},
		{"caddy.json", string(jsonCfg), nil},
		{"Caddyfile.json", string(jsonCfg), nil},
		{"site.conf", caddyfile, []string{"--adapter", "caddyfile"}},
		{"site.conf", string(jsonCfg), nil},
	} {
		t.Run(tc.file, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), tc.file)
			if err := os.WriteFile(file, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := runInspect(t, token, append([]string{"--config", file}, tc.args...)...)
			if code != 0 || !strings.Contains(out, "result: ACCEPTED") {
				t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
			}
		})
	}
}

// TestCLIInspectExitCodes: 0 accepted, 1 rejected (also without --config
// for an expired or undecodable token), 2 when inspect cannot run.
func TestCLIInspectExitCodes(t *testing.T) {
	idp, k, cfg := inspectIdP(t)
	cfgFile := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(cfgFile, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	noHandler := filepath.Join(t.TempDir(), "empty.json")
	if err := os.WriteFile(noHandler, []byte(`{"apps":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	valid := k.sign(t, claimsFor(idp.url(), "api"), nil)
	expiredClaims := claimsFor(idp.url(), "api")
	expiredClaims["exp"] = time.Now().Add(-2 * time.Hour).Unix()
	expired := k.sign(t, expiredClaims, nil)
	// Within the default leeway of 60s: the module accepts it.
	justExpiredClaims := claimsFor(idp.url(), "api")
	justExpiredClaims["exp"] = time.Now().Add(-20 * time.Second).Unix()
	future := claimsFor(idp.url(), "api")
	future["nbf"] = time.Now().Add(time.Hour).Unix()
	noExp := claimsFor(idp.url(), "api")
	delete(noExp, "exp")

	for _, tc := range []struct {
		name    string
		stdin   string
		args    []string
		code    int
		stdout  []string
		message string
	}{
		{"empty stdin", "", nil, 2, nil, "no token on stdin"},
		{"white space only", " \n\t\r\n", []string{"--config", cfgFile}, 2, nil, "no token on stdin"},
		{"bearer only", "Bearer \n", nil, 2, nil, "no token on stdin"},
		{"valid, no config", valid + "\n", nil, 0, []string{"signature, issuer and audience not checked", "within its validity period"}, ""},
		{"bearer prefix", "Bearer " + valid + "\n", nil, 0, []string{"within its validity period"}, ""},
		{"within leeway, no config", k.sign(t, justExpiredClaims, nil), nil, 0, []string{"within its validity period"}, ""},
		{"expired, no config", expired, nil, 1, []string{"REJECTED, expired 2h0m", "ago"}, ""},
		{"not yet valid, no config", k.sign(t, future, nil), nil, 1, []string{"REJECTED, not yet valid: nbf is in "}, ""},
		{"no exp, no config", k.sign(t, noExp, nil), nil, 1, []string{"REJECTED, no exp claim"}, ""},
		{"garbage, no config", "hello", nil, 1, []string{"REJECTED, not a JWT"}, ""},
		{"two segments, no config", strings.Join(strings.Split(valid, ".")[:2], "."), nil, 1, []string{"REJECTED, not a JWT"}, ""},
		{"bad base64, no config", "!!!.e30.sig", nil, 1, []string{"not base64url", "REJECTED, not a JWT"}, ""},
		{"valid", valid, []string{"--config", cfgFile}, 0, []string{"result: ACCEPTED"}, ""},
		{"expired", expired, []string{"--config", cfgFile}, 1, []string{"[FAIL] time: expired"}, ""},
		{"missing config", valid, []string{"--config", filepath.Join(t.TempDir(), "nope.json")}, 2, nil, "nope.json"},
		{"config from stdin", valid, []string{"--config", "-"}, 2, nil, "stdin carries the token"},
		{"config without handler", valid, []string{"--config", noHandler}, 2, nil, "no oauth2_jwt handler"},
		{"adapter without config", valid, []string{"--adapter", "caddyfile"}, 2, nil, "--adapter needs --config"},
		{"token as an argument", "", []string{valid}, 2, nil, "reads the token on stdin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runInspect(t, tc.stdin, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stderr %q\n%s", code, tc.code, errOut, out)
			}
			for _, w := range tc.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(errOut, tc.message) || (tc.message == "") != (errOut == "") {
				t.Errorf("stderr %q, want one mentioning %q", errOut, tc.message)
			}
		})
	}
}

// TestCLIInspectNamesSites: with several handlers, each "Handler N of M"
// line names its server, listen address, host and path matchers.
func TestCLIInspectNamesSites(t *testing.T) {
	idp, k, _ := inspectIdP(t)
	provider := "\t\tprovider idp {\n\t\t\tissuer " + idp.url() + "\n\t\t\taudience api\n\t\t\tjwks_uri " + idp.url() + "/jwks\n\t\t}\n"
	caddyfile := "http://api.localhost:8081, http://api2.localhost:8081 {\n\thandle /mcp* {\n\t\toauth2_jwt {\n" + provider + "\t\t}\n\t\trespond ok\n\t}\n\trespond hi\n}\n\n" +
		":8082 {\n\toauth2_jwt {\n" + strings.ReplaceAll(provider, "\t\t", "\t") + "\t}\n\trespond ok\n}\n"
	file := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfile), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runInspect(t, k.sign(t, claimsFor(idp.url(), "api"), nil), "--config", file)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Handler ") {
			lines = append(lines, l)
		}
	}
	want := []string{
		"Handler 1 of 2 (providers: idp) at apps.http.servers.srv0, listen :8081, host api.localhost api2.localhost, path /mcp*",
		"Handler 2 of 2 (providers: idp) at apps.http.servers.srv1, listen :8082, any host",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("handler lines:\n%s\nwant:\n%s\n\nfull output:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"), out)
	}
}

// TestCLIFindHandlersSite: the site of handlers in nested subroutes, error
// routes, with several matcher sets and outside the http app.
func TestCLIFindHandlersSite(t *testing.T) {
	cfg := `{"apps":{"http":{"servers":{"web":{"listen":[":443",":8443"],
		"routes":[{"match":[{"host":["a.test"],"path":["/api/*"]},{"host":["b.test"],"method":["GET"]}],
			"handle":[{"handler":"subroute","routes":[{"match":[{"path":["/api/v1/*"]}],"handle":[{"handler":"oauth2_jwt","n":2}]}]}]}],
		"errors":{"routes":[{"handle":[{"handler":"oauth2_jwt","n":1}]}]}}}},
		"other":{"list":[{"handler":"oauth2_jwt","n":3}]}}}`
	var root any
	if err := json.Unmarshal([]byte(cfg), &root); err != nil {
		t.Fatal(err)
	}
	var found []foundHandler
	findHandlers(root, site{}, &found)
	want := []string{
		"apps.http.servers.web (error routes), listen :443 :8443, any host",
		"apps.http.servers.web, listen :443 :8443, host a.test b.test, path /api/* > /api/v1/*, other matchers: method",
		"apps.other.list.0",
	}
	if len(found) != len(want) {
		t.Fatalf("found %d handlers, want %d", len(found), len(want))
	}
	for i, f := range found {
		if got := f.at.String(); got != want[i] {
			t.Errorf("handler %d at %q, want %q", i+1, got, want[i])
		}
		if !strings.Contains(string(f.raw), `"n":`+strconv.Itoa(i+1)) {
			t.Errorf("handler %d is %s", i+1, f.raw)
		}
	}
}

// TestCLIQuietCaddyRestores: the default logger is silenced for inspect
// and put back afterwards.
func TestCLIQuietCaddyRestores(t *testing.T) {
	before := caddy.Log()
	base, restore, err := quietCaddy()
	if err != nil {
		t.Fatal(err)
	}
	if caddy.Log() == before || base.Logger() == before {
		t.Errorf("logging not replaced")
	}
	restore()
	if caddy.Log() != before {
		t.Errorf("default logger not restored")
	}
}

// TestCLIMainHelper is not a test: run by TestCLIMain in a child process,
// it is the caddy command with the arguments in $OAUTH2JWT_CLI_ARGS.
func TestCLIMainHelper(t *testing.T) {
	args := os.Getenv("OAUTH2JWT_CLI_ARGS")
	if args == "" {
		t.Skip("helper process for TestCLIMain")
	}
	if err := json.Unmarshal([]byte(args), &os.Args); err != nil {
		t.Fatal(err)
	}
	caddycmd.Main()
	os.Exit(0)
}

// TestCLIMain runs `caddy oauth2-jwt inspect` as a process, through
// Caddy's own main: its exit codes are 0, 1 and 2, and neither stdout
// nor stderr carries a log line, although provisioning logs a warning
// (insecure_http) and the key cache logs its fetch.
func TestCLIMain(t *testing.T) {
	idp, k, _ := inspectIdP(t)
	cfg := `{"apps":{"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[
		{"handler":"oauth2_jwt","providers":{"idp":{"issuer":"` + idp.url() + `","audiences":["api"],"jwks_uri":"` + idp.url() + `/jwks","insecure_http":true}}}]}]}}}}}`
	cfgFile := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	expired := claimsFor(idp.url(), "api")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	for _, tc := range []struct {
		name, stdin string
		args        []string
		code        int
		stdout      string
		stderr      string
	}{
		{"accepted", k.sign(t, claimsFor(idp.url(), "api"), nil), []string{"--config", cfgFile}, 0, "result: ACCEPTED", ""},
		{"rejected", k.sign(t, claimsFor(idp.url(), "other"), nil), []string{"--config", cfgFile}, 1, "[FAIL] audience", ""},
		{"expired, no config", k.sign(t, expired, nil), nil, 1, "REJECTED, expired", ""},
		{"empty", "\n", []string{"--config", cfgFile}, 2, "", "Error: no token on stdin: pipe one in, e.g. caddy oauth2-jwt inspect < token.txt\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Not os.Args[0]: caddytest rewrites os.Args to start its Caddy.
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(self, "-test.run=^TestCLIMainHelper$")
			args, _ := json.Marshal(append([]string{"caddy", "oauth2-jwt", "inspect"}, tc.args...))
			cmd.Env = append(os.Environ(), "OAUTH2JWT_CLI_ARGS="+string(args))
			cmd.Stdin = strings.NewReader(tc.stdin)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err = cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if !strings.Contains(stdout.String(), tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, stdout.String())
			}
			if stderr.String() != tc.stderr {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr.String(), tc.stderr)
			}
			for _, l := range strings.Split(stdout.String(), "\n") {
				if strings.Contains(l, `"level":`) || strings.Contains(l, `"msg":`) || strings.Contains(l, "\tINFO\t") || strings.Contains(l, "\tWARN\t") {
					t.Errorf("stdout has a log line: %s", l)
				}
			}
		})
	}
}

func writePEM(t *testing.T, file string, k *testKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runCobra runs a subcommand in-process and returns its stdout.
func runCobra(t *testing.T, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd.SetArgs(append([]string{}, args...)) // never nil: cobra would read os.Args
	cmd.SetOut(&out)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	return strings.TrimSpace(out.String()), err
}

// dpopSetup is an issuer key pair and a client DPoP key pair, both made by
// keygen, and a token bound to the client key made by token --dpop-key.
type dpopSetup struct {
	dir, issJWKS, clientPriv, clientJWKS, token string
}

func newDPoPSetup(t *testing.T, clientAlg string) dpopSetup {
	t.Helper()
	dir := t.TempDir()
	s := dpopSetup{dir: dir, issJWKS: filepath.Join(dir, "jwks.json"),
		clientPriv: filepath.Join(dir, "client.jwk"), clientJWKS: filepath.Join(dir, "client-jwks.json")}
	issPriv := filepath.Join(dir, "private.jwk")
	if _, err := runCobra(t, keygenCommand(), "--private", issPriv, "--jwks", s.issJWKS); err != nil {
		t.Fatal(err)
	}
	if _, err := runCobra(t, keygenCommand(), "--alg", clientAlg, "--private", s.clientPriv, "--jwks", s.clientJWKS); err != nil {
		t.Fatal(err)
	}
	var err error
	s.token, err = runCobra(t, tokenCommand(), "--key", issPriv, "--iss", "https://issuer.test", "--aud", "api",
		"--sub", "alice", "--dpop-key", s.clientPriv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (s dpopSetup) proof(t *testing.T, args ...string) string {
	t.Helper()
	p, err := runCobra(t, dpopProofCommand(), append([]string{"--key", s.clientPriv}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (s dpopSetup) handler(t *testing.T, d *DPoP) *Handler {
	return provisionHandler(t, &Handler{DPoP: d, Providers: map[string]*Provider{
		"local": {Issuer: "https://issuer.test", Audiences: []string{"api"}, JWKSFile: s.issJWKS},
	}})
}

func cliDPoPRequest(method, target, token, proof string) *http.Request {
	req := httptest.NewRequest(method, target, nil)
	req.Header.Set("Authorization", "DPoP "+token)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	return req
}

func expectStatusReason(t *testing.T, res result, status int, code string) {
	t.Helper()
	if res.status != status || res.placeholder("http.auth.jwt.error") != code {
		t.Fatalf("status %d, reason %q; want %d %q (err %v)", res.status, res.placeholder("http.auth.jwt.error"), status, code, res.err)
	}
	if (status == http.StatusOK) != (res.nextSeen != nil) {
		t.Fatalf("next handler called: %v, status %d", res.nextSeen != nil, status)
	}
}

// TestCLIDPoPFlow: keygen makes a client key, token --dpop-key binds a
// token to it, dpop-proof signs a proof, and a handler with a dpop block
// accepts the pair (HTTP and HTTPS URLs, a query on the request); the
// same proof again, a proof for another URL or method, the token as
// Bearer and a proof by another key are refused with the module's reasons.
func TestCLIDPoPFlow(t *testing.T) {
	for _, alg := range []string{"ES256", "EdDSA", "PS256", "ES384"} {
		t.Run(alg, func(t *testing.T) {
			s := newDPoPSetup(t, alg)
			h := s.handler(t, &DPoP{})
			thumb, err := jwkThumbprintOf(mustRead(t, s.clientJWKS))
			if err != nil {
				t.Fatal(err)
			}

			p := s.proof(t, "--method", "GET", "--url", "http://example.test/api?x=1", "--token", s.token)
			res := serve(t, h, cliDPoPRequest("GET", "http://example.test/api?y=2", s.token, p))
			expectStatusReason(t, res, http.StatusOK, "")
			if got := res.placeholder("http.auth.jwt.dpop.jkt"); got != thumb {
				t.Errorf("{http.auth.jwt.dpop.jkt} = %q, want the client key's thumbprint %q", got, thumb)
			}
			expectStatusReason(t, serve(t, h, cliDPoPRequest("GET", "http://example.test/api", s.token, p)),
				http.StatusUnauthorized, "dpop_proof_replayed")

			p = s.proof(t, "--method", "POST", "--url", "https://example.test/api/items", "--token", s.token)
			expectStatusReason(t, serve(t, h, cliDPoPRequest("POST", "https://example.test/api/items", s.token, p)), http.StatusOK, "")

			p = s.proof(t, "--url", "http://example.test/other", "--token", s.token)
			expectStatusReason(t, serve(t, h, cliDPoPRequest("GET", "http://example.test/api", s.token, p)),
				http.StatusUnauthorized, "dpop_proof_invalid")
			p = s.proof(t, "--method", "POST", "--url", "http://example.test/api", "--token", s.token)
			expectStatusReason(t, serve(t, h, cliDPoPRequest("GET", "http://example.test/api", s.token, p)),
				http.StatusUnauthorized, "dpop_proof_invalid")
			p = s.proof(t, "--url", "http://example.test/api") // no --token: no ath
			expectStatusReason(t, serve(t, h, cliDPoPRequest("GET", "http://example.test/api", s.token, p)),
				http.StatusUnauthorized, "dpop_proof_invalid")
			expectStatusReason(t, serve(t, h, bearer(s.token)), http.StatusUnauthorized, "key_binding_mismatch")

			other := newDPoPSetup(t, alg)
			p = other.proof(t, "--url", "http://example.test/api", "--token", s.token)
			expectStatusReason(t, serve(t, h, cliDPoPRequest("GET", "http://example.test/api", s.token, p)),
				http.StatusUnauthorized, "key_binding_mismatch")
		})
	}
}

// TestCLIDPoPKeyForms: --cnf-key and --dpop-key take a public JWK, a
// private JWK and a one-key JWK set, and all bind to the same thumbprint;
// unusable keys and conflicting options are refused.
func TestCLIDPoPKeyForms(t *testing.T) {
	s := newDPoPSetup(t, "ES256")
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(mustRead(t, s.clientJWKS), &set); err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(s.dir, "client-pub.jwk")
	b, _ := json.Marshal(set.Keys[0])
	if err := os.WriteFile(pubFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := set.Keys[0].Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	issPriv := filepath.Join(s.dir, "private.jwk")
	for _, args := range [][]string{{"--cnf-key", pubFile}, {"--dpop-key", s.clientPriv}, {"--cnf-key", s.clientJWKS}} {
		tok, err := runCobra(t, tokenCommand(), append([]string{"--key", issPriv, "--iss", "i"}, args...)...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		var claims struct {
			Cnf map[string]string `json:"cnf"`
		}
		if err := json.Unmarshal(decodeSegment(t, tok, 1), &claims); err != nil {
			t.Fatal(err)
		}
		if claims.Cnf["jkt"] != base64.RawURLEncoding.EncodeToString(want) || len(claims.Cnf) != 1 {
			t.Errorf("%v: cnf = %v, want jkt %x", args, claims.Cnf, want)
		}
	}

	twoKeys := filepath.Join(s.dir, "two.json")
	set.Keys = append(set.Keys, set.Keys[0])
	b, _ = json.Marshal(set)
	hmacJWK := filepath.Join(s.dir, "hmac.jwk")
	if err := os.WriteFile(twoKeys, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hmacJWK, []byte(`{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dpop-key", twoKeys}, "holds 2 keys"},
		{[]string{"--dpop-key", hmacJWK}, "not a usable DPoP key"},
		{[]string{"--dpop-key", s.clientPriv, "--cnf-key", pubFile}, "same option"},
		{[]string{"--dpop-key", s.clientPriv, "--claim", `cnf={"jkt":"x"}`}, "cannot be combined"},
	} {
		_, err := runCobra(t, tokenCommand(), append([]string{"--key", issPriv, "--iss", "i"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
	if _, err := runCobra(t, dpopProofCommand(), "--key", hmacJWK, "--url", "https://a.test/"); err == nil ||
		!strings.Contains(err.Error(), "asymmetric") {
		t.Errorf("dpop-proof with an HMAC key: %v", err)
	}
	if _, err := runCobra(t, dpopProofCommand(), "--key", s.clientPriv, "--url", "/relative"); err == nil ||
		!strings.Contains(err.Error(), "absolute") {
		t.Errorf("dpop-proof with a relative URL: %v", err)
	}
}

func decodeSegment(t *testing.T, jwt string, i int) []byte {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("%d segments", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCLIDPoPProofShape decodes proofs with go-jose, not the module: typ
// dpop+jwt, alg the key's, a jwk with no private member that verifies the
// signature, a random jti of 16+ bytes, htm, htu without query and
// fragment, iat now, ath the SHA-256 of the token, nonce when given.
func TestCLIDPoPProofShape(t *testing.T) {
	for _, tc := range []struct {
		alg     string
		private []string
	}{
		{"ES256", []string{"d"}},
		{"EdDSA", []string{"d"}},
		{"RS256", []string{"d", "p", "q", "dp", "dq", "qi"}},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			s := newDPoPSetup(t, tc.alg)
			before := time.Now().Unix()
			raw := s.proof(t, "--method", "PATCH", "--url", "https://API.example.test:443/a/b?q=1#frag", "--token", "tok.en.x", "--nonce", "n-1")
			again := s.proof(t, "--url", "https://api.example.test/a/b")

			jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(tc.alg)})
			if err != nil {
				t.Fatal(err)
			}
			hdr := jws.Signatures[0].Protected
			if typ := hdr.ExtraHeaders[jose.HeaderType]; typ != "dpop+jwt" {
				t.Errorf("typ = %v", typ)
			}
			if hdr.JSONWebKey == nil || !hdr.JSONWebKey.IsPublic() {
				t.Fatalf("jwk missing or private: %+v", hdr.JSONWebKey)
			}
			var rawHdr struct {
				JWK map[string]any `json:"jwk"`
				Kid *string        `json:"kid"`
			}
			if err := json.Unmarshal(decodeSegment(t, raw, 0), &rawHdr); err != nil {
				t.Fatal(err)
			}
			for _, m := range tc.private {
				if _, ok := rawHdr.JWK[m]; ok {
					t.Errorf("jwk carries private member %q", m)
				}
			}
			payload, err := jws.Verify(hdr.JSONWebKey)
			if err != nil {
				t.Fatalf("signature does not verify with the jwk: %v", err)
			}
			var c map[string]any
			if err := json.Unmarshal(payload, &c); err != nil {
				t.Fatal(err)
			}
			jti, err := base64.RawURLEncoding.DecodeString(c["jti"].(string))
			if err != nil || len(jti) < 16 {
				t.Errorf("jti %q: %d bytes, %v", c["jti"], len(jti), err)
			}
			var c2 map[string]any
			_ = json.Unmarshal(decodeSegment(t, again, 1), &c2)
			if c2["jti"] == c["jti"] {
				t.Errorf("two proofs share jti %v", c["jti"])
			}
			if _, ok := c2["ath"]; ok {
				t.Errorf("proof without --token has ath")
			}
			if _, ok := c2["nonce"]; ok {
				t.Errorf("proof without --nonce has nonce")
			}
			sum := sha256.Sum256([]byte("tok.en.x"))
			for name, want := range map[string]any{
				"htm": "PATCH", "htu": "https://API.example.test:443/a/b",
				"ath": base64.RawURLEncoding.EncodeToString(sum[:]), "nonce": "n-1",
			} {
				if c[name] != want {
					t.Errorf("%s = %v, want %v", name, c[name], want)
				}
			}
			if iat, _ := c["iat"].(float64); int64(iat) < before || int64(iat) > time.Now().Unix() {
				t.Errorf("iat = %v, want now", c["iat"])
			}
		})
	}
}

// TestCLITokenCnfX5t: token --cnf-x5t binds a token to a PEM certificate;
// the handler accepts it over TLS with that client certificate only.
func TestCLITokenCnfX5t(t *testing.T) {
	s := newDPoPSetup(t, "ES256")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	certFile := filepath.Join(s.dir, "client.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := runCobra(t, tokenCommand(), "--key", filepath.Join(s.dir, "private.jwk"), "--iss", "https://issuer.test",
		"--aud", "api", "--cnf-x5t", certFile)
	if err != nil {
		t.Fatal(err)
	}
	h := s.handler(t, nil)
	req := bearer(tok)
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	res := serve(t, h, req)
	expectStatusReason(t, res, http.StatusOK, "")
	sum := sha256.Sum256(der)
	if got := res.placeholder("http.auth.jwt.cnf.x5t#S256"); got != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Errorf("{http.auth.jwt.cnf.x5t#S256} = %q", got)
	}
	expectStatusReason(t, serve(t, h, bearer(tok)), http.StatusUnauthorized, "cert_binding_mismatch")
	if _, err := runCobra(t, tokenCommand(), "--key", filepath.Join(s.dir, "private.jwk"), "--cnf-x5t", s.clientPriv); err == nil {
		t.Errorf("--cnf-x5t accepted a file without a certificate")
	}
}

// TestCLIInspectDPoP: inspect --dpop runs the handler's proof and binding
// checks and names the one that fails, with what the proof carries and
// what was expected; exit codes 0, 1 and 2 as for tokens.
func TestCLIInspectDPoP(t *testing.T) {
	s := newDPoPSetup(t, "ES256")
	cfg := func(dpop string) string {
		f := filepath.Join(t.TempDir(), "caddy.json")
		c := `{"apps":{"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[
			{"handler":"oauth2_jwt",` + dpop + `"providers":{"local":{"issuer":"https://issuer.test","audiences":["api"],"jwks_file":"` + s.issJWKS + `"}}}]}]}}}}}`
		if err := os.WriteFile(f, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	plain, withNonce, noDPoP := cfg(`"dpop":{},`), cfg(`"dpop":{"nonce_secret":"0123456789abcdef0123"},`), cfg("")
	good := s.proof(t, "--url", "https://api.test/v1/items", "--token", s.token)
	goodFile := filepath.Join(s.dir, "proof.txt")
	if err := os.WriteFile(goodFile, []byte(good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := newDPoPSetup(t, "ES256")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"valid", []string{"-c", plain, "--dpop", good, "--url", "https://api.test/v1/items?page=2"}, 0,
			[]string{"Proof header:", `"typ": "dpop+jwt"`, "[ok]   signature", "[ok]   proof", "[ok]   binding", "result: ACCEPTED"}},
		{"from file", []string{"-c", plain, "--dpop-file", goodFile, "--url", "https://api.test/v1/items"}, 0,
			[]string{"[ok]   proof", "result: ACCEPTED"}},
		{"other URL", []string{"-c", plain, "--dpop", good, "--url", "https://api.test/v1/other"}, 1,
			[]string{"[FAIL] proof: dpop_proof_invalid (DPoP proof htu is not the request URI)",
				`proof htu: "https://api.test/v1/items"`, `expected:  "https://api.test/v1/other"`, "401 dpop_proof_invalid"}},
		{"http, not https", []string{"-c", plain, "--dpop", good, "--url", "http://api.test/v1/items"}, 1,
			[]string{"[FAIL] proof: dpop_proof_invalid (DPoP proof htu is not the request URI)"}},
		{"other method", []string{"-c", plain, "--dpop", good, "--method", "DELETE", "--url", "https://api.test/v1/items"}, 1,
			[]string{"[FAIL] proof: dpop_proof_invalid (DPoP proof htm is not the request method)", `proof htm: "GET"`, `request:   "DELETE"`}},
		{"other key", []string{"-c", plain, "--dpop", other.proof(t, "--url", "https://api.test/", "--token", s.token), "--url", "https://api.test/"}, 1,
			[]string{"[ok]   proof", "[FAIL] binding: key_binding_mismatch (DPoP proof key thumbprint is not the token's cnf.jkt)", "token cnf.jkt:"}},
		{"as bearer", []string{"-c", plain}, 1,
			[]string{"[--]   proof", "[FAIL] binding: key_binding_mismatch (DPoP-bound token (cnf.jkt) presented without DPoP)"}},
		{"nonce needed", []string{"-c", withNonce, "--dpop", good, "--url", "https://api.test/v1/items"}, 1,
			[]string{"[FAIL] proof: dpop_nonce_required (DPoP proof has no nonce)", "the handler would answer DPoP-Nonce: "}},
		{"no dpop block", []string{"-c", noDPoP, "--dpop", good, "--url", "https://api.test/v1/items"}, 1,
			[]string{"[FAIL] proof: the handler has no dpop block", "400 missing_token"}},
		{"dpop without config", []string{"--dpop", good, "--url", "https://api.test/"}, 2, nil},
		{"dpop without url", []string{"-c", plain, "--dpop", good}, 2, nil},
		{"url without dpop", []string{"-c", plain, "--url", "https://api.test/"}, 2, nil},
		{"both proofs", []string{"-c", plain, "--dpop", good, "--dpop-file", goodFile, "--url", "https://api.test/"}, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runInspect(t, s.token, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %s\n%s", code, tc.code, errOut, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if sig := strings.Split(good, ".")[2]; strings.Contains(out, sig) {
				t.Errorf("output holds the proof's signature")
			}
		})
	}
	// The nonce inspect prints is one the handler accepts.
	out, _, _ := runInspect(t, s.token, "-c", withNonce, "--dpop", good, "--url", "https://api.test/v1/items")
	_, after, _ := strings.Cut(out, "DPoP-Nonce: ")
	nonce, _, _ := strings.Cut(after, " ")
	p := s.proof(t, "--url", "https://api.test/v1/items", "--token", s.token, "--nonce", nonce)
	out, _, code := runInspect(t, s.token, "-c", withNonce, "--dpop", p, "--url", "https://api.test/v1/items")
	if code != 0 || !strings.Contains(out, "result: ACCEPTED") {
		t.Errorf("proof with the printed nonce: exit %d\n%s", code, out)
	}
}
