package oauth2jwt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"
)

// selfSignedCert makes a client certificate, as RFC 8705 section 2.2
// clients may use.
func selfSignedCert(t testing.TB, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := selfSignedTemplate(cn)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func selfSignedTemplate(cn string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

func certThumb(cert *x509.Certificate) string {
	d := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(d[:])
}

// withCert makes req arrive over TLS with the client certificate cert
// (none when nil).
func withCert(req *http.Request, cert *x509.Certificate) *http.Request {
	req.TLS = &tls.ConnectionState{}
	if cert != nil {
		req.TLS.PeerCertificates = []*x509.Certificate{cert}
	}
	return req
}

// serveFromProxy is serve for a request whose peer Caddy marked as a
// trusted proxy (or not).
func serveFromProxy(t testing.TB, h *Handler, req *http.Request, trusted bool) result {
	t.Helper()
	res, err := serveRequest(h, req, func(r *http.Request) {
		caddyhttp.SetVar(r.Context(), caddyhttp.TrustedProxyVarKey, trusted)
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestCertificateBoundToken(t *testing.T) {
	f := newDPoPFixture(t)
	cert, other := selfSignedCert(t, "client"), selfSignedCert(t, "other")
	tok := f.token(t, map[string]any{"x5t#S256": certThumb(cert)})
	// No certificate_binding block: the binding is checked anyway.
	h := f.handler(t, &Handler{}, nil)
	for i := range 2 { // uncached, cached
		res := serve(t, h, withCert(bearer(tok), cert))
		expectReason(t, res, http.StatusOK, "")
		if got := res.placeholder("http.auth.jwt.cnf.x5t#S256"); got != certThumb(cert) {
			t.Fatalf("request %d: {http.auth.jwt.cnf.x5t#S256} = %q", i, got)
		}
		expectReason(t, serve(t, h, withCert(bearer(tok), other)), http.StatusUnauthorized, "cert_binding_mismatch")
		expectReason(t, serve(t, h, withCert(bearer(tok), nil)), http.StatusUnauthorized, "cert_binding_mismatch")
		expectReason(t, serve(t, h, bearer(tok)), http.StatusUnauthorized, "cert_binding_mismatch")
	}
	res := serve(t, h, bearer(tok))
	if ch := res.header.Get("WWW-Authenticate"); ch != `Bearer error="invalid_token", error_description="token is not bound to the client certificate"` {
		t.Fatalf("WWW-Authenticate = %q", ch)
	}
	// An unbound token needs no certificate in mode allowed.
	expectReason(t, serve(t, h, bearer(f.token(t, nil))), http.StatusOK, "")
	if got := serve(t, h, bearer(f.token(t, nil))).placeholder("http.auth.jwt.cnf.x5t#S256"); got != "" {
		t.Fatalf("unbound token: {http.auth.jwt.cnf.x5t#S256} = %q", got)
	}
}

func TestCertificateBindingRequired(t *testing.T) {
	f := newDPoPFixture(t)
	cert := selfSignedCert(t, "client")
	h := f.handler(t, &Handler{CertificateBinding: &CertificateBinding{Mode: "required"}}, nil)
	expectReason(t, serve(t, h, withCert(bearer(f.token(t, nil)), cert)), http.StatusUnauthorized, "cert_binding_mismatch")
	expectReason(t, serve(t, h, withCert(bearer(f.token(t, map[string]any{"x5t#S256": certThumb(cert)})), cert)), http.StatusOK, "")
}

func TestCertificateHeaderFromProxy(t *testing.T) {
	f := newDPoPFixture(t)
	cert, proxyCert := selfSignedCert(t, "client"), selfSignedCert(t, "proxy")
	tok := f.token(t, map[string]any{"x5t#S256": certThumb(cert)})
	h := f.handler(t, &Handler{CertificateBinding: &CertificateBinding{Header: "Client-Cert"}}, nil)
	hdr := ":" + base64.StdEncoding.EncodeToString(cert.Raw) + ":"
	req := func(v string) *http.Request {
		r := withCert(bearer(tok), proxyCert) // the proxy's own certificate on the hop
		r.Header.Set("Client-Cert", v)
		return r
	}
	res := serveFromProxy(t, h, req(hdr), true)
	expectReason(t, res, http.StatusOK, "")
	if res.nextSeen.Header.Get("Client-Cert") != hdr {
		t.Fatal("a trusted proxy's Client-Cert should reach later handlers")
	}
	// From an untrusted peer the header is removed and not believed.
	res = serveFromProxy(t, h, req(hdr), false)
	expectReason(t, res, http.StatusUnauthorized, "cert_binding_mismatch")
	// On an accepted request too, the untrusted header never travels on.
	unbound := bearer(f.token(t, nil))
	unbound.Header.Set("Client-Cert", hdr)
	res = serveFromProxy(t, h, unbound, false)
	expectReason(t, res, http.StatusOK, "")
	if res.nextSeen.Header.Get("Client-Cert") != "" {
		t.Fatal("an untrusted peer's Client-Cert reached a later handler")
	}
	// Nor its underscore spelling, which CGI-style upstreams read as the
	// same HTTP_CLIENT_CERT variable.
	under := bearer(f.token(t, nil))
	under.Header.Set("Client_Cert", hdr) // stored as Client_cert, as Go's server reads it
	res = serveFromProxy(t, h, under, false)
	expectReason(t, res, http.StatusOK, "")
	if res.nextSeen.Header.Get("Client_Cert") != "" {
		t.Fatal("an untrusted peer's Client_Cert reached a later handler")
	}
	// Malformed values from a trusted proxy: 401, never 500.
	for _, bad := range []string{"garbage", "::", ":!!!:", ":" + base64.StdEncoding.EncodeToString([]byte("not DER")) + ":", base64.StdEncoding.EncodeToString(cert.Raw)} {
		expectReason(t, serveFromProxy(t, h, req(bad), true), http.StatusUnauthorized, "cert_binding_mismatch")
	}
	two := req(hdr)
	two.Header.Add("Client-Cert", hdr)
	expectReason(t, serveFromProxy(t, h, two, true), http.StatusUnauthorized, "cert_binding_mismatch")
	// Another certificate in the header.
	expectReason(t, serveFromProxy(t, h, req(":"+base64.StdEncoding.EncodeToString(proxyCert.Raw)+":"), true), http.StatusUnauthorized, "cert_binding_mismatch")
}

func TestDPoPAndCertificateBound(t *testing.T) {
	f := newDPoPFixture(t)
	cert := selfSignedCert(t, "client")
	h := f.handler(t, &Handler{DPoP: &DPoP{}}, nil)
	tok := f.token(t, map[string]any{"jkt": f.jkt, "x5t#S256": certThumb(cert)})
	proof := func() string {
		c := proofClaims(h.verifier.now(), tok)
		c["htu"] = "https://example.test/api" // withCert makes the request TLS
		return signProof(t, f.client, jose.ES256, nil, c, nil)
	}
	if res := serve(t, h, withCert(dpopRequest(tok, proof()), cert)); res.status != http.StatusOK {
		t.Fatalf("both bindings met: status %d (%v)", res.status, res.err)
	}
	expectDPoPReason(t, serve(t, h, withCert(dpopRequest(tok, proof()), nil)), http.StatusUnauthorized, "cert_binding_mismatch", "invalid_token")
	expectDPoPReason(t, serve(t, h, withCert(dpopRequest(tok, ""), cert)), http.StatusUnauthorized, "dpop_proof_missing", "invalid_dpop_proof")
	expectReason(t, serve(t, h, withCert(bearer(tok), cert)), http.StatusUnauthorized, "key_binding_mismatch")
}

func TestMalformedCnf(t *testing.T) {
	f := newDPoPFixture(t)
	h := f.handler(t, &Handler{}, nil)
	for _, cnf := range []any{"string", 7, map[string]any{"jkt": 7}, map[string]any{"jkt": "short"},
		map[string]any{"x5t#S256": "AAAA"}, map[string]any{"jkt": base64.StdEncoding.EncodeToString(make([]byte, 32))}} {
		c := claimsFor(f.idp.url(), dpopAud)
		c["cnf"] = cnf
		expectReason(t, serve(t, h, bearer(f.signer.sign(t, c, nil))), http.StatusUnauthorized, "bad_claim")
	}
}

// TestUncheckedCnfRefused: a token bound only by a confirmation method
// the module does not check (RFC 7800 jwk, jwe, jku, kid, RFC 9203 osc,
// an unknown member) is refused, Bearer or DPoP, each token sent twice
// (the second time from the cache); an empty cnf binds nothing, and
// beside jkt or x5t#S256 another member changes nothing.
func TestUncheckedCnfRefused(t *testing.T) {
	f := newDPoPFixture(t)
	h := f.handler(t, &Handler{DPoP: &DPoP{}}, nil)
	jwk := map[string]any{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tOfOiDVIRhoWlI_qSJ_xHtSJsngA"}
	for name, cnf := range map[string]map[string]any{
		"jwk": {"jwk": jwk}, "jwe": {"jwe": "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d"}, "jku": {"jku": "https://keys.example/jwks", "kid": "k1"},
		"kid": {"kid": "some-key"}, "osc": {"osc": map[string]any{"ms": "abc"}}, "unknown": {"x5t": "c29tZS1zaGExLXRodW1icHJpbnQ"},
	} {
		c := claimsFor(f.idp.url(), dpopAud)
		c["cnf"] = cnf
		tok := f.signer.sign(t, c, nil)
		for i := range 2 {
			res := serve(t, h, bearer(tok))
			expectReason(t, res, http.StatusUnauthorized, "key_binding_mismatch")
			if ch := res.header.Get("WWW-Authenticate"); !strings.Contains(ch, `error="invalid_token"`) {
				t.Fatalf("cnf %s, request %d: challenge %q", name, i+1, ch)
			}
		}
		proof := signProof(t, f.client, jose.ES256, nil, proofClaims(h.verifier.now(), tok), nil)
		expectReason(t, serve(t, h, dpopRequest(tok, proof)), http.StatusUnauthorized, "key_binding_mismatch")
	}
	c := claimsFor(f.idp.url(), dpopAud)
	c["cnf"] = map[string]any{}
	tok := f.signer.sign(t, c, nil)
	for range 2 {
		expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
	}
	c = claimsFor(f.idp.url(), dpopAud)
	c["cnf"] = map[string]any{"jkt": f.jkt, "kid": "some-key"}
	tok = f.signer.sign(t, c, nil)
	for range 2 {
		proof := signProof(t, f.client, jose.ES256, nil, proofClaims(h.verifier.now(), tok), nil)
		if res := serve(t, h, dpopRequest(tok, proof)); res.status != http.StatusOK {
			t.Fatalf("cnf with jkt and kid, valid proof: status %d (%v)", res.status, res.err)
		}
		expectReason(t, serve(t, h, bearer(tok)), http.StatusUnauthorized, "key_binding_mismatch")
	}
}
