package oauth2jwt

import (
	"crypto"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// TestAttackNotUTF8 refuses headers and payloads that are not UTF-8 (RFC
// 8259 section 8.1, RFC 7515 section 4, RFC 7519 section 7.2), even when
// they are otherwise valid and correctly signed.
func TestAttackNotUTF8(t *testing.T) {
	f := newAttackFixture(t)
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	good := f.payload(t, f.iss, nil)
	withSub := func(sub string) string {
		return `{"iss":"` + f.iss + `","aud":"api","exp":` + itoa(int(time.Now().Add(time.Hour).Unix())) + `,"sub":"` + sub + `"}`
	}
	runAttackCases(t, f.h, []attackCase{
		{name: "valid control token", token: compact(hdr(t, "RS256", "rsa-1", nil), withSub("ok"), rs), status: http.StatusOK, code: ""},
		{name: "payload string with a lone 0xff byte", token: compact(hdr(t, "RS256", "rsa-1", nil), withSub("a\xffb"), rs), status: 401, code: "malformed", direct: "malformed"},
		{name: "payload with an overlong encoding of /", token: compact(hdr(t, "RS256", "rsa-1", nil), withSub("\xc0\xaf"), rs), status: 401, code: "malformed"},
		{name: "payload with an encoded surrogate", token: compact(hdr(t, "RS256", "rsa-1", nil), withSub("\xed\xa0\x80"), rs), status: 401, code: "malformed"},
		{name: "payload with a truncated sequence", token: compact(hdr(t, "RS256", "rsa-1", nil), withSub("\xe2\x82"), rs), status: 401, code: "malformed"},
		{name: "header typ with a lone 0xfe byte", token: compact(`{"alg":"RS256","kid":"rsa-1","typ":"JWT\xfe"}`, good, rs), status: 401, code: "malformed", direct: "malformed"},
		{name: "header with an invalid byte in an unknown member", token: compact(`{"alg":"RS256","kid":"rsa-1","x":"\x80"}`, good, rs), status: 401, code: "malformed"},
	})
}

// TestAttackHeaderMemberTypes refuses registered JOSE header members of the
// wrong JSON type (RFC 7515 section 4.1): go-jose reads a null or numeric
// kid as no kid, which would make a token with a broken kid try every key.
func TestAttackHeaderMemberTypes(t *testing.T) {
	f := newAttackFixture(t)
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	p := f.payload(t, f.iss, nil)
	raw := func(name string, v string) string {
		m := map[string]json.RawMessage{"alg": json.RawMessage(`"RS256"`), "kid": json.RawMessage(`"rsa-1"`), "typ": json.RawMessage(`"JWT"`)}
		m[name] = json.RawMessage(v)
		return mustJSON(t, m)
	}
	cases := []attackCase{
		{name: "control: every member well typed", token: compact(raw("x5t", `"abc"`), p, rs), status: http.StatusOK},
	}
	for _, c := range []struct{ member, value string }{
		{"kid", `null`}, {"kid", `123`}, {"kid", `["rsa-1"]`}, {"kid", `{"id":"rsa-1"}`}, {"kid", `true`},
		{"typ", `null`}, {"typ", `1`}, {"cty", `null`}, {"cty", `["json"]`},
		{"x5t", `null`}, {"x5t", `42`}, {"x5t#S256", `{}`}, {"jku", `null`}, {"x5u", `1`},
		{"jwk", `"a key"`}, {"jwk", `null`}, {"x5c", `"MIIB"`}, {"x5c", `[1]`}, {"x5c", `null`},
		{"crit", `"exp"`}, {"crit", `null`},
	} {
		cases = append(cases, attackCase{name: c.member + " " + c.value, token: compact(raw(c.member, c.value), p, rs), status: 401, code: "malformed", direct: "malformed"})
	}
	runAttackCases(t, f.h, cases)
}

// TestForwardRefusesControlCharacters: a claim whose text holds any C0 or
// C1 control character (U+0085 NEL included) or DEL is not forwarded as a
// header; other non-ASCII text is.
func TestForwardRefusesControlCharacters(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	h := provisionHandler(t, &Handler{
		Providers:     map[string]*Provider{"idp": {Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"}},
		ForwardClaims: []ClaimHeader{{Claim: "name", Header: "X-Name"}},
	})
	waitForKeys(t, h)
	for _, c := range []struct {
		value string
		sent  bool
	}{
		{"Zoë Ångström 日本", true},
		{"tab\there", false},
		{"line\nbreak", false},
		{"nul\x00", false},
		{"del\x7f", false},
		{"nel\u0085forged: yes", false},
		{"c1\u009b31m", false},
		{"c1 first \u0080", false},
		{"line separator\u2028", true},
	} {
		claims := claimsFor(idp.url(), "api")
		claims["name"] = c.value
		token := k.sign(t, claims, nil)
		for i := 0; i < 2; i++ {
			res := serve(t, h, bearer(token))
			if res.status != http.StatusOK {
				t.Fatalf("%q: status %d (%v)", c.value, res.status, res.err)
			}
			got, ok := res.nextSeen.Header["X-Name"]
			if ok != c.sent || (ok && got[0] != c.value) {
				t.Errorf("%q (request %d): X-Name = %q, forwarded %v, want forwarded %v", c.value, i+1, got, ok, c.sent)
			}
		}
	}
}
