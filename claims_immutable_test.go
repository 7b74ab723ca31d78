package oauth2jwt

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// signPayload signs payload exactly as given, so a test knows the bytes
// that were signed.
func signPayload(t testing.TB, k *testKey, payload []byte) string {
	t.Helper()
	return compact(hdr(t, string(k.alg), k.kid, nil), string(payload), k.signer(t))
}

// TestClaimsAreImmutable runs every claim reader (each rule kind, the
// placeholders, forwarding, claims_json and the Go API) over every claim
// shape, on the first request and on the cached one, and checks that the
// answers agree and that the payload is still byte for byte what was
// signed. A `require claim` rule on a top-level array claim once decoded
// into a slice holding an alias of the payload and overwrote it: the
// placeholders came out empty and the cached request was refused.
func TestClaimsAreImmutable(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	exp := time.Now().Add(time.Hour).Unix()

	cases := []struct {
		name  string // the claim, as rules and placeholders name it
		json  string // its JSON in the payload (a top-level member, or for nested paths the member holding it)
		top   string // the top-level member name, when name is a path
		match string // a value `require claim` must find ("" for shapes that never match)
		text  string // the placeholder and forwarded value
		list  []string
	}{
		{name: "s", json: `"plain"`, match: "plain", text: "plain", list: []string{"plain"}},
		{name: "esc", json: `"a\"b\\c\u00e9"`, match: "a\"b\\cé", text: "a\"b\\cé", list: []string{"a\"b\\cé"}},
		{name: "n", json: `12.5`, match: "12.5", text: "12.5", list: []string{"12.5"}},
		{name: "i", json: `1767225600`, match: "1767225600", text: "1767225600", list: []string{"1767225600"}},
		{name: "b", json: `true`, match: "true", text: "true", list: []string{"true"}},
		{name: "null", json: `null`, text: ""},
		{name: "roles", json: `["Orders.ReadWrite.All","Orders.Read"]`, match: "Orders.Read", text: "Orders.ReadWrite.All,Orders.Read", list: []string{"Orders.ReadWrite.All", "Orders.Read"}},
		{name: "groups", json: `["admins"]`, match: "admins", text: "admins", list: []string{"admins"}},
		{name: "mixed", json: `["x",1,true,null,{"k":"v"},["n"]]`, match: "1", text: `["x",1,true,null,{"k":"v"},["n"]]`, list: []string{"x", "1", "true", "", `{"k":"v"}`, "n"}},
		{name: "obj", json: `{"a": {"b": "c"}}`, text: `{"a":{"b":"c"}}`, list: []string{`{"a":{"b":"c"}}`}},
		{name: "realm_access.roles", top: "realm_access", json: `{"roles":["orders-admin","orders-user"]}`, match: "orders-user", text: "orders-admin,orders-user", list: []string{"orders-admin", "orders-user"}},
		{name: "cognito:groups", json: `["admins","users"]`, match: "users", text: "admins,users", list: []string{"admins", "users"}},
		{name: "https://example.com/roles", json: `["editor"]`, match: "editor", text: "editor", list: []string{"editor"}},
		{name: "a.b", json: `["dotted"]`, match: "dotted", text: "dotted", list: []string{"dotted"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			top := tc.top
			if top == "" {
				top = tc.name
			}
			payload := []byte(`{"iss":"` + idp.url() + `","aud":"api","sub":"user-1","exp":` + strconv.FormatInt(exp, 10) +
				`,"scope":"read write","scp":["read"],` + strconv.Quote(top) + `:` + tc.json + `}`)
			token := signPayload(t, k, payload)

			claimRule := Requirement{Claim: tc.name, Values: []string{"no-such-value"}}
			if tc.match != "" {
				claimRule.Values = []string{"no-such-value", tc.match}
			}
			h := provisionHandler(t, &Handler{
				Providers: map[string]*Provider{"idp": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"}},
				Require: []Requirement{
					{Scopes: []string{"read"}},
					{Any: []Requirement{claimRule, {Scopes: []string{"write"}}}},
				},
				ForwardClaims:     []ClaimHeader{{Claim: tc.name, Header: "X-Claim"}},
				ForwardClaimsJSON: "X-Payload",
			})
			if tc.match != "" {
				// A second handler whose only rule is the claim rule, so
				// it must match by itself.
				h2 := provisionHandler(t, &Handler{
					Providers: map[string]*Provider{"idp": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"}},
					Require:   []Requirement{{Claim: tc.name, Values: []string{tc.match}}},
				})
				waitForKeys(t, h2)
				for i := 0; i < 2; i++ {
					if res := serve(t, h2, bearer(token)); res.status != http.StatusOK {
						t.Fatalf("request %d: require claim %s %s: status %d (%v)", i+1, tc.name, tc.match, res.status, res.err)
					}
				}
			}
			waitForKeys(t, h)

			for i := 0; i < 3; i++ {
				res := serve(t, h, bearer(token))
				if res.status != http.StatusOK {
					t.Fatalf("request %d: status %d (%v)", i+1, res.status, res.err)
				}
				if got := res.placeholder("http.auth.jwt.claims." + tc.name); got != tc.text {
					t.Errorf("request %d: placeholder = %q, want %q", i+1, got, tc.text)
				}
				gotHdr, forwarded := res.nextSeen.Header["X-Claim"]
				if tc.text == "" && forwarded {
					t.Errorf("request %d: empty claim forwarded as %q", i+1, gotHdr)
				}
				if tc.text != "" && (len(gotHdr) != 1 || gotHdr[0] != tc.text) {
					t.Errorf("request %d: X-Claim = %q, want %q", i+1, gotHdr, tc.text)
				}
				if got := res.placeholder("http.auth.jwt.claims_json"); got != string(payload) {
					t.Errorf("request %d: claims_json = %s, want %s", i+1, got, payload)
				}
				fwdJSON, err := base64.RawURLEncoding.DecodeString(res.nextSeen.Header.Get("X-Payload"))
				if err != nil || !bytes.Equal(fwdJSON, payload) {
					t.Errorf("request %d: X-Payload = %s (%v), want the signed payload", i+1, fwdJSON, err)
				}
				c, ok := ClaimsFromRequest(res.nextSeen)
				if !ok {
					t.Fatalf("request %d: ClaimsFromRequest found nothing", i+1)
				}
				if got := c.String(tc.name); got != tc.text {
					t.Errorf("request %d: String = %q, want %q", i+1, got, tc.text)
				}
				if got := c.Strings(tc.name); strings.Join(got, "|") != strings.Join(tc.list, "|") || len(got) != len(tc.list) {
					t.Errorf("request %d: Strings = %q, want %q", i+1, got, tc.list)
				}
				// The Go API hands out copies: scribbling over them
				// changes nothing for the next reader.
				js := c.JSON()
				if !bytes.Equal(js, payload) {
					t.Errorf("request %d: JSON() = %s", i+1, js)
				}
				raw, ok := c.Raw(tc.name)
				if !ok || (tc.top == "" && string(raw) != tc.json) {
					t.Errorf("request %d: Raw = %s, %v; want %s", i+1, raw, ok, tc.json)
				}
				for j := range js {
					js[j] = 'X'
				}
				for j := range raw {
					raw[j] = 'X'
				}
				if !bytes.Equal(c.raw, payload) {
					t.Fatalf("request %d: the verified payload changed:\n got %s\nwant %s", i+1, c.raw, payload)
				}
				if v, _ := c.member(top); string(v) != tc.json {
					got := string(v)
					t.Fatalf("request %d: the verified member %q changed: %s, want %s", i+1, top, got, tc.json)
				}
			}
		})
	}
}

// TestRuleOnArrayClaimKeepsForwardedValue is the reported case: Entra app
// roles with `require claim roles ...` and `forward_claim roles X-Roles`,
// the same token sent twice.
func TestRuleOnArrayClaimKeepsForwardedValue(t *testing.T) {
	k := newTestKey(t, "k1", jose.RS256, 0)
	idp := newTestIdP(t, k)
	h := provisionHandler(t, &Handler{
		Providers:     map[string]*Provider{"entra": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"}},
		Require:       []Requirement{{Claim: "roles", Values: []string{"Orders.ReadWrite.All"}}},
		ForwardClaims: []ClaimHeader{{Claim: "roles", Header: "X-Roles"}},
	})
	waitForKeys(t, h)
	claims := claimsFor(idp.url(), "api")
	claims["roles"] = []string{"Orders.Read", "Orders.ReadWrite.All"}
	token := k.sign(t, claims, nil)
	for i := 0; i < 2; i++ {
		req := httptest.NewRequest(http.MethodGet, "http://example.test/orders", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res := serve(t, h, req)
		if res.status != http.StatusOK {
			t.Fatalf("request %d: status %d (%v)", i+1, res.status, res.err)
		}
		if got := res.nextSeen.Header.Get("X-Roles"); got != "Orders.Read,Orders.ReadWrite.All" {
			t.Fatalf("request %d: X-Roles = %q", i+1, got)
		}
		if got := res.placeholder("http.auth.jwt.claims.roles"); got != "Orders.Read,Orders.ReadWrite.All" {
			t.Fatalf("request %d: roles placeholder = %q", i+1, got)
		}
	}
}

// TestCachedClaimsReadAsVerified sends payloads that take each of the
// cached claims' forms twice, through the handler: an ordinary one (kept
// as member offsets), one whose member names are spelled with escapes and
// one with over 64 members (both keep the decoder's map). The cached
// request's placeholders and Go API read exactly what the verified one
// did, member by member and along dotted paths.
func TestCachedClaimsReadAsVerified(t *testing.T) {
	f := newAuthzFixture(t)
	h := f.handler(t, &Handler{})
	iss := f.idp.url()
	now := time.Now().Unix()
	common := fmt.Sprintf(`"iss":%q,"aud":"api","sub":"user-1","iat":%d,"exp":%d`, iss, now, now+3600)
	many := common
	for i := range 70 {
		many += fmt.Sprintf(`,"c%d":%d`, i, i)
	}
	cases := []struct {
		name, payload string
		names         []string
		compacted     bool
	}{
		{"ordinary", `{` + common + `,"scope":"read write","https://ns.example/roles":["admin","ops"],"org":{"id":"o1","a.b":{"c":true}},"n":1.5e3}`,
			[]string{"sub", "scope", "https://ns.example/roles", "org", "org.id", "org.a.b", "org.a.b.c", "n", "nope", "org.nope"}, true},
		{"escaped names", `{` + common + `,"n\u0061me":"Ann","r\u00f4le":"x","sc\/pe":"s"}`,
			[]string{"sub", "name", "rôle", "sc/pe", "n\\u0061me"}, false},
		{"over 64 members", `{` + many + `}`, []string{"sub", "c0", "c69", "c70"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := compact(`{"alg":"ES256","kid":"authz","typ":"JWT"}`, tc.payload, f.key.signer(t))
			var first map[string]string
			for i := range 2 {
				res := serve(t, h, bearer(tok))
				if res.status != http.StatusOK {
					t.Fatalf("request %d: status %d (%v)", i+1, res.status, res.err)
				}
				c, ok := ClaimsFromRequest(res.nextSeen)
				if !ok {
					t.Fatalf("request %d: no claims", i+1)
				}
				got := map[string]string{"json": string(c.JSON()), "user": res.placeholder("http.auth.user.id")}
				for _, n := range tc.names {
					raw, ok := c.Raw(n)
					got["p:"+n] = res.placeholder("http.auth.jwt.claims." + n)
					got["s:"+n] = c.String(n)
					got["r:"+n] = fmt.Sprint(ok, string(raw))
					got["l:"+n] = strings.Join(c.Strings(n), "|")
				}
				if i == 0 {
					first = got
					continue
				}
				for k, v := range first {
					if got[k] != v {
						t.Errorf("%s: cached %q, verified %q", k, got[k], v)
					}
				}
				if (c.top == nil) != tc.compacted {
					t.Errorf("cached claims compacted %v, want %v", c.top == nil, tc.compacted)
				}
			}
			if first["p:sub"] != "user-1" || first["user"] != "user-1" {
				t.Fatalf("sub read as %q", first["p:sub"])
			}
		})
	}
}
