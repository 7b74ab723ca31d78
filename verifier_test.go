package oauth2jwt

import (
	"context"
	"crypto"
	"testing"
	"time"
)

// TestVerifierNamesFailingStep: each rejection carries the check that
// failed, which inspect prints. It was once guessed from the detail text,
// and every absent claim ("missing" contains "iss") was blamed on the
// issuer.
func TestVerifierNamesFailingStep(t *testing.T) {
	f := newAttackFixture(t)
	rs := signRS(t, f.rsaPriv(), crypto.SHA256)
	h := hdr(t, "RS256", "rsa-1", nil)
	atHdr := hdr(t, "RS256", "rsa-1", map[string]any{"typ": "at+jwt"})
	cases := []struct {
		name, token string
		want        step
	}{
		{"not compact", "a.b", stepShape},
		{"header not UTF-8", compact("{\"alg\":\"RS256\",\"kid\":\"\xff\"}", f.payload(t, f.iss, nil), rs), stepHeader},
		{"alg allowed by no provider", compact(hdr(t, "HS512", "", nil), f.payload(t, f.iss, nil), rs), stepHeader},
		{"payload not an object", compact(h, `[1]`, rs), stepPayload},
		{"iss missing", compact(h, f.payload(t, f.iss, map[string]any{"iss": nil}), rs), stepIssuer},
		{"unknown issuer", compact(h, f.payload(t, "https://other.example", nil), rs), stepIssuer},
		{"alg not in the provider's list", compact(hdr(t, "ES256", "ec-1", nil), f.payload(t, f.rsOnlyIss, nil), signES(t, f.ecPriv(), crypto.SHA256)), stepAlgorithm},
		{"exp missing", compact(h, f.payload(t, f.iss, map[string]any{"exp": nil}), rs), stepTime},
		{"expired", compact(h, f.payload(t, f.iss, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), rs), stepTime},
		{"aud missing", compact(h, f.payload(t, f.iss, map[string]any{"aud": nil}), rs), stepAudience},
		{"aud wrong", compact(h, f.payload(t, f.iss, map[string]any{"aud": "other"}), rs), stepAudience},
		{"sub missing for at+jwt", compact(atHdr, mustJSON(t, func() map[string]any { c := f.atClaims(); delete(c, "sub"); return c }()), rs), stepClaims},
		{"jti missing for at+jwt", compact(atHdr, mustJSON(t, func() map[string]any { c := f.atClaims(); delete(c, "jti"); return c }()), rs), stepClaims},
		{"unknown kid", compact(hdr(t, "RS256", "nope", nil), f.payload(t, f.iss, nil), rs), stepKey},
		{"bad signature", compact(h, f.payload(t, f.iss, nil), fixedSig(make([]byte, 256))), stepSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, aerr := f.h.verifier.verify(context.Background(), tc.token, f.h.verifier.now())
			if aerr == nil {
				t.Fatalf("accepted")
			}
			if aerr.step != tc.want {
				t.Fatalf("step = %s, want %s (%v)", aerr.step, tc.want, aerr)
			}
		})
	}
}
