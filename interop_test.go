package oauth2jwt

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Interoperability: tokens issued by an independent OpenID Connect provider
// implementation, zitadel/oidc's OP (pkg/op) with its in-memory example
// storage, served on 127.0.0.1. Tokens are obtained as real clients would
// (golang.org/x/oauth2: the client_credentials grant, and the authorization
// code flow with the login step done through the example storage), never
// minted by our helpers; the module finds the keys through the OP's
// discovery document and JWKS.

const (
	// The service user built into zitadel's example storage
	// (client_credentials grant).
	zitadelServiceID     = "sid1"
	zitadelServiceSecret = "verysecret"
	// A confidential web client registered for the authorization code flow.
	zitadelWebID       = "web"
	zitadelWebSecret   = "web-secret"
	zitadelRedirectURI = "http://127.0.0.1/interop/callback"
	// A user of the example storage: its id, and its password (the user
	// name is test-user@<issuer host>).
	zitadelUserID   = "id1"
	zitadelPassword = "verysecure"
)

// zitadelOP is a zitadel OpenID provider on 127.0.0.1 with an http issuer.
type zitadelOP struct {
	issuer    string
	srv       *httptest.Server
	client    *http.Client // never follows redirects
	storage   *zitadelStorage
	provider  *op.Provider
	discHits  atomic.Int64
	keysHits  atomic.Int64
	discovery struct {
		Issuer                string `json:"issuer"`
		AuthorizationEndpoint string `json:"authorization_endpoint"`
		TokenEndpoint         string `json:"token_endpoint"`
		JWKSURI               string `json:"jwks_uri"`
	}
}

// zitadelStorage is zitadel's example storage with two changes: clients get
// JWT access tokens (the example's clients issue opaque ones), and the
// signing key can be rotated.
type zitadelStorage struct {
	*storage.Storage
	mu      sync.Mutex
	rotated *zitadelSigningKey // when set, signs instead of the example's own key, which stays published
}

// jwtAccessTokens makes a zitadel client receive JWT access tokens.
type jwtAccessTokens struct{ op.Client }

func (jwtAccessTokens) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

func (s *zitadelStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return jwtAccessTokens{c}, nil
}

func (s *zitadelStorage) ClientCredentials(ctx context.Context, id, secret string) (op.Client, error) {
	c, err := s.Storage.ClientCredentials(ctx, id, secret)
	if err != nil {
		return nil, err
	}
	return jwtAccessTokens{c}, nil
}

func (s *zitadelStorage) SigningKey(ctx context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	k := s.rotated
	s.mu.Unlock()
	if k == nil {
		return s.Storage.SigningKey(ctx)
	}
	return k, nil
}

func (s *zitadelStorage) SignatureAlgorithms(ctx context.Context) ([]jose.SignatureAlgorithm, error) {
	algs, err := s.Storage.SignatureAlgorithms(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rotated != nil {
		algs = append(algs, s.rotated.k.alg)
	}
	return algs, err
}

func (s *zitadelStorage) KeySet(ctx context.Context) ([]op.Key, error) {
	keys, err := s.Storage.KeySet(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rotated != nil {
		keys = append(keys, zitadelPublicKey{s.rotated.k})
	}
	return keys, err
}

// rotate makes the OP sign with k from now on and publish it next to its
// previous key.
func (s *zitadelStorage) rotate(k *testKey) {
	s.mu.Lock()
	s.rotated = &zitadelSigningKey{k}
	s.mu.Unlock()
}

// zitadelSigningKey and zitadelPublicKey hand a test key to zitadel, which
// signs with it (op.SigningKey) and publishes it in its JWKS (op.Key).
type zitadelSigningKey struct{ k *testKey }

func (s *zitadelSigningKey) SignatureAlgorithm() jose.SignatureAlgorithm { return s.k.alg }
func (s *zitadelSigningKey) Key() any                                    { return s.k.priv }
func (s *zitadelSigningKey) ID() string                                  { return s.k.kid }

type zitadelPublicKey struct{ k *testKey }

func (p zitadelPublicKey) ID() string                         { return p.k.kid }
func (p zitadelPublicKey) Algorithm() jose.SignatureAlgorithm { return p.k.alg }
func (p zitadelPublicKey) Use() string                        { return "sig" }
func (p zitadelPublicKey) Key() any                           { return p.k.priv.Public() }

// newZitadelOP starts a zitadel OP on 127.0.0.1 and reads its discovery
// document as a client would.
func newZitadelOP(t *testing.T) *zitadelOP {
	t.Helper()
	// The issuer must be known before the OP is built: listen first.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &zitadelOP{issuer: "http://" + l.Addr().String()}
	o.storage = &zitadelStorage{Storage: storage.NewStorageWithClients(
		storage.NewUserStore(o.issuer),
		map[string]*storage.Client{zitadelWebID: storage.WebClient(zitadelWebID, zitadelWebSecret, zitadelRedirectURI)},
	)}
	o.provider, err = op.NewProvider(
		&op.Config{CryptoKey: sha256.Sum256([]byte("interop test")), CodeMethodS256: true},
		o.storage, op.StaticIssuer(o.issuer), op.WithAllowInsecure(),
	)
	if err != nil {
		_ = l.Close()
		t.Fatalf("zitadel op: %v", err)
	}
	keysPath := o.provider.KeysEndpoint().Relative()
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case discoveryWellKnownPath:
			o.discHits.Add(1)
		case keysPath:
			o.keysHits.Add(1)
		}
		o.provider.ServeHTTP(w, r)
	}))
	_ = o.srv.Listener.Close()
	o.srv.Listener = l
	o.srv.Start()
	t.Cleanup(o.srv.Close)
	o.client = &http.Client{
		Transport:     o.srv.Client().Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}

	resp, err := o.client.Get(o.issuer + discoveryWellKnownPath)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("discovery: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&o.discovery); err != nil {
		t.Fatalf("discovery: %v", err)
	}
	if o.discovery.Issuer != o.issuer || o.discovery.TokenEndpoint == "" || o.discovery.JWKSURI != o.issuer+keysPath {
		t.Fatalf("discovery document: %+v", o.discovery)
	}
	return o
}

// ctx returns a context whose oauth2 calls use the OP's client.
func (o *zitadelOP) ctx() context.Context {
	return context.WithValue(context.Background(), oauth2.HTTPClient, o.srv.Client())
}

// clientCredentialsToken obtains an access token with the client_credentials
// grant (RFC 6749 section 4.4) as the example's service user.
func (o *zitadelOP) clientCredentialsToken(t *testing.T, scopes ...string) string {
	t.Helper()
	cfg := clientcredentials.Config{
		ClientID:     zitadelServiceID,
		ClientSecret: zitadelServiceSecret,
		TokenURL:     o.discovery.TokenEndpoint,
		Scopes:       scopes,
		AuthStyle:    oauth2.AuthStyleInHeader,
	}
	tok, err := cfg.Token(o.ctx())
	if err != nil {
		t.Fatalf("client_credentials grant: %v", err)
	}
	return tok.AccessToken
}

// codeFlowTokens runs the authorization code flow for the web client and
// the example user, and returns the access token and the ID token. The
// login page is not served: the user's password is checked through the
// example storage, as its login page would, which then redirects to the
// OP's callback.
func (o *zitadelOP) codeFlowTokens(t *testing.T, nonce string) (accessToken, idToken string) {
	t.Helper()
	cfg := oauth2.Config{
		ClientID:     zitadelWebID,
		ClientSecret: zitadelWebSecret,
		RedirectURL:  zitadelRedirectURI,
		Scopes:       []string{"openid", "profile", storage.CustomScope},
		Endpoint: oauth2.Endpoint{
			AuthURL:   o.discovery.AuthorizationEndpoint,
			TokenURL:  o.discovery.TokenEndpoint,
			AuthStyle: oauth2.AuthStyleInHeader,
		},
	}
	const state = "interop-state"
	// Authorization request: the OP answers with a redirect to the login.
	loc := o.redirect(t, cfg.AuthCodeURL(state, oauth2.SetAuthURLParam("nonce", nonce)))
	id := loc.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("authorize redirected to %s, want the login page", loc)
	}
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(o.issuer, "http://"))
	if err := o.storage.CheckUsernamePassword("test-user@"+host, zitadelPassword, id); err != nil {
		t.Fatalf("login: %v", err)
	}
	// The login redirects to the OP's callback, which redirects to the
	// client with a code.
	cb := op.AuthCallbackURL(o.provider)(op.ContextWithIssuer(context.Background(), o.issuer), id)
	loc = o.redirect(t, cb)
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != zitadelRedirectURI || loc.Query().Get("state") != state {
		t.Fatalf("callback redirected to %s, want %s with state", loc, zitadelRedirectURI)
	}
	tok, err := cfg.Exchange(o.ctx(), loc.Query().Get("code"))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	idToken, _ = tok.Extra("id_token").(string)
	if idToken == "" {
		t.Fatal("token response without id_token")
	}
	return tok.AccessToken, idToken
}

// redirect GETs u and returns the redirect's target.
func (o *zitadelOP) redirect(t *testing.T, u string) *url.URL {
	t.Helper()
	resp, err := o.client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("GET %s: status %d, want a redirect", u, resp.StatusCode)
	}
	loc, err := resp.Location()
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// jwtParts decodes a compact JWS's header and payload without verifying it
// (to see what the OP issued).
func jwtParts(t *testing.T, token string) (header, payload map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS (%d parts): the OP issued an opaque token?", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &payload} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
	}
	return header, payload
}

// tamperSub changes one character of the token's payload, the last
// character of the sub claim, and keeps the original signature.
func tamperSub(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var payload map[string]any
	if err := json.Unmarshal(raw, &payload); err != nil {
		t.Fatal(err)
	}
	sub, _ := payload["sub"].(string)
	subJSON, _ := json.Marshal(sub)
	i := strings.Index(string(raw), `"sub":`+string(subJSON))
	if sub == "" || i < 0 {
		t.Fatalf("no sub claim in %s", raw)
	}
	at := i + len(`"sub":`) + len(subJSON) - 2 // the last character of the value
	changed := byte('X')
	if raw[at] == changed {
		changed = 'Y'
	}
	tampered := append([]byte(nil), raw...)
	tampered[at] = changed
	parts[1] = base64.RawURLEncoding.EncodeToString(tampered)
	return strings.Join(parts, ".")
}

// zitadelHandler provisions a handler trusting the OP for audiences, with
// keys found through discovery at the issuer (no key source configured).
func zitadelHandler(t *testing.T, o *zitadelOP, minRefresh time.Duration, audiences ...string) *Handler {
	t.Helper()
	h := provisionHandler(t, &Handler{Providers: map[string]*Provider{
		"zitadel": {Issuer: o.issuer, Audiences: audiences, MinRefreshInterval: caddy.Duration(minRefresh)},
	}})
	waitForKeys(t, h)
	return h
}

// TestInteropZitadel sends tokens issued by zitadel's OP (client_credentials
// access token, authorization code access token and ID token) through the
// module: accepted with their sub and claims as placeholders; a tampered
// copy and a provider expecting another audience are refused.
func TestInteropZitadel(t *testing.T) {
	o := newZitadelOP(t)
	const nonce = "interop-nonce-1"
	serviceToken := o.clientCredentialsToken(t, storage.CustomScope)
	codeAccessToken, idToken := o.codeFlowTokens(t, nonce)

	exampleKeys, err := o.storage.Storage.KeySet(context.Background())
	if err != nil || len(exampleKeys) != 1 {
		t.Fatalf("example storage keys: %v %v", exampleKeys, err)
	}
	for name, tok := range map[string]string{"client_credentials": serviceToken, "code access": codeAccessToken, "id": idToken} {
		header, _ := jwtParts(t, tok)
		if header["alg"] != "RS256" || header["kid"] != exampleKeys[0].ID() {
			t.Fatalf("%s token header %v: want RS256 with the OP's kid %q", name, header, exampleKeys[0].ID())
		}
	}

	discBefore, keysBefore := o.discHits.Load(), o.keysHits.Load()
	service := zitadelHandler(t, o, 0, zitadelServiceID)
	web := zitadelHandler(t, o, 0, zitadelWebID)
	other := zitadelHandler(t, o, 0, "https://api.other.example")

	tests := []struct {
		name       string
		h          *Handler
		token      string
		wantStatus int
		wantReason string
		wantSub    string
		wantClaims map[string]string
	}{
		{
			name: "client_credentials access token accepted", h: service, token: serviceToken,
			wantStatus: http.StatusOK, wantSub: zitadelServiceID,
			wantClaims: map[string]string{
				"iss": o.issuer, "aud": zitadelServiceID, "client_id": zitadelServiceID,
				"custom_claim.client": zitadelServiceID, "custom_claim.other": "stuff",
			},
		},
		{
			name: "authorization code access token accepted", h: web, token: codeAccessToken,
			wantStatus: http.StatusOK, wantSub: zitadelUserID,
			wantClaims: map[string]string{"iss": o.issuer, "aud": zitadelWebID, "client_id": zitadelWebID},
		},
		{
			name: "ID token accepted", h: web, token: idToken,
			wantStatus: http.StatusOK, wantSub: zitadelUserID,
			wantClaims: map[string]string{"iss": o.issuer, "aud": zitadelWebID, "nonce": nonce},
		},
		{
			name: "client_credentials token with one payload character changed", h: service, token: tamperSub(t, serviceToken),
			wantStatus: http.StatusUnauthorized, wantReason: "bad_signature",
		},
		{
			name: "ID token with one payload character changed", h: web, token: tamperSub(t, idToken),
			wantStatus: http.StatusUnauthorized, wantReason: "bad_signature",
		},
		{
			name: "client_credentials token for a provider expecting another audience", h: other, token: serviceToken,
			wantStatus: http.StatusUnauthorized, wantReason: "bad_audience",
		},
		{
			name: "access token of another client", h: service, token: codeAccessToken,
			wantStatus: http.StatusUnauthorized, wantReason: "bad_audience",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := serve(t, tc.h, bearer(tc.token))
			expectReason(t, res, tc.wantStatus, tc.wantReason)
			if tc.wantStatus != http.StatusOK {
				if got, _ := res.repl.GetString("http.auth.user.id"); got != "" {
					t.Errorf("{http.auth.user.id} = %q on a rejected token", got)
				}
				return
			}
			_, payload := jwtParts(t, tc.token)
			if payload["sub"] != tc.wantSub {
				t.Fatalf("the OP issued sub %v, want %q", payload["sub"], tc.wantSub)
			}
			if got := res.placeholder("http.auth.user.id"); got != tc.wantSub {
				t.Errorf("{http.auth.user.id} = %q, want the token's sub %q", got, tc.wantSub)
			}
			if got := res.placeholder("http.auth.jwt.provider"); got != "zitadel" {
				t.Errorf("{http.auth.jwt.provider} = %q, want zitadel", got)
			}
			for name, want := range tc.wantClaims {
				if got := res.placeholder("http.auth.jwt.claims." + name); got != want {
					t.Errorf("{http.auth.jwt.claims.%s} = %q, want %q", name, got, want)
				}
			}
		})
	}

	// The three handlers share one key cache: one discovery read and one
	// JWKS read in all, none for the requests above.
	if d, k := o.discHits.Load()-discBefore, o.keysHits.Load()-keysBefore; d != 1 || k != 1 {
		t.Errorf("OP saw %d discovery and %d JWKS requests, want 1 and 1", d, k)
	}
}

// TestInteropZitadelKeyRotation rotates the OP's signing key: zitadel signs
// with a new ES256 key under a kid the module has not seen, and publishes it
// next to the old one. The first such token causes one JWKS read (not a
// discovery read) and is accepted; tokens of the old key still are.
func TestInteropZitadelKeyRotation(t *testing.T) {
	o := newZitadelOP(t)
	oldToken := o.clientCredentialsToken(t)
	discBefore, keysBefore := o.discHits.Load(), o.keysHits.Load()
	// The unknown-kid refresh is rate limited to one per
	// min_refresh_interval since the last fetch; 1ns takes the limit out
	// of this test (other tests cover it).
	h := zitadelHandler(t, o, time.Nanosecond, zitadelServiceID)

	fetches := func() (disc, keys int64) {
		return o.discHits.Load() - discBefore, o.keysHits.Load() - keysBefore
	}
	rotatedKey := newTestKey(t, "zitadel-rotated-es256", jose.ES256, 0)
	var newToken string
	steps := []struct {
		name      string
		token     func() string
		wantDisc  int64
		wantKeys  int64
		wantKidOf *testKey // nil: the example storage's key
	}{
		{name: "token of the initial key", token: func() string { return oldToken }, wantDisc: 1, wantKeys: 1},
		{name: "token of the rotated key, kid not seen yet", token: func() string {
			o.storage.rotate(rotatedKey)
			newToken = o.clientCredentialsToken(t)
			return newToken
		}, wantDisc: 1, wantKeys: 2, wantKidOf: rotatedKey},
		{name: "rotated key again, no fetch", token: func() string { return newToken }, wantDisc: 1, wantKeys: 2, wantKidOf: rotatedKey},
		{name: "initial key still published", token: func() string { return oldToken }, wantDisc: 1, wantKeys: 2},
	}
	for _, step := range steps {
		ok := t.Run(step.name, func(t *testing.T) {
			token := step.token()
			header, payload := jwtParts(t, token)
			if step.wantKidOf != nil && (header["kid"] != step.wantKidOf.kid || header["alg"] != string(step.wantKidOf.alg)) {
				t.Fatalf("the OP signed with %v, want kid %q alg %s", header, step.wantKidOf.kid, step.wantKidOf.alg)
			}
			res := serve(t, h, bearer(token))
			expectReason(t, res, http.StatusOK, "")
			if got := res.placeholder("http.auth.user.id"); got != payload["sub"] || got != zitadelServiceID {
				t.Errorf("{http.auth.user.id} = %q, want the token's sub %v", got, payload["sub"])
			}
			if d, k := fetches(); d != step.wantDisc || k != step.wantKeys {
				t.Errorf("OP saw %d discovery and %d JWKS requests, want %d and %d", d, k, step.wantDisc, step.wantKeys)
			}
		})
		if !ok {
			break
		}
	}
}
