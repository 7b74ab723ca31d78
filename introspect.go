package oauth2jwt

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Defaults and limits of the introspection block.
const (
	defaultIntroCacheTTL    = time.Minute
	defaultIntroNegativeTTL = 10 * time.Second
	defaultIntroRate        = 50 // calls per second
	defaultIntroCacheSize   = 10000
	maxIntroCacheSize       = 1_000_000
	// maxIntrospectionBody caps an introspection answer.
	maxIntrospectionBody = 64 << 10
	// defaultIntroMaxWait is how long a call over max_rate may wait for
	// its turn before the request is answered 503.
	defaultIntroMaxWait = 250 * time.Millisecond
	// introAuthLogEvery rate-limits the error log of an endpoint that
	// refuses our credentials.
	introAuthLogEvery = time.Minute
)

// Introspection accepts a provider's opaque access tokens through OAuth
// 2.0 token introspection (RFC 7662): a token that is not a compact JWS
// is POSTed to the endpoint, and the answer's members become the
// request's claims. Answers are cached per provider by the SHA-256 of the
// token (never the token), for at most cache_ttl and never past the
// answer's exp; the require rules run on every request.
type Introspection struct {
	// The introspection endpoint. Default: the introspection_endpoint
	// of the provider's discovery document (discovery, else the
	// issuer's), read at the first opaque token.
	Endpoint string `json:"endpoint,omitempty"`

	// The client credentials the endpoint authenticates this resource
	// server with: client_id always, client_secret unless auth_method is
	// private_key_jwt.
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`

	// client_secret_basic (the default), client_secret_post, or
	// private_key_jwt (RFC 7523: a JWT signed with private_key).
	AuthMethod string `json:"auth_method,omitempty"`

	// For private_key_jwt: a file holding the client's private key as a
	// JWK (RSA, EC or Ed25519; its `alg`, else RS256, ES256/384/512 or
	// EdDSA by key type; its `kid` goes in the assertion's header). Read
	// at provision.
	PrivateKey string `json:"private_key,omitempty"`

	// Opaque tokens starting with this prefix go to this provider, and
	// only those. See the README for the routing rule.
	TokenPrefix string `json:"token_prefix,omitempty"`

	// The longest a positive answer is reused; never past its exp.
	// Default: 1m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	// How long a refused answer (inactive, another audience, ...) is
	// reused. Default: 10s.
	NegativeTTL caddy.Duration `json:"negative_ttl,omitempty"`

	// Introspection calls allowed to the endpoint, as `<n>/s` or `<n>/m`.
	// Calls over it wait briefly, then the request is answered 503.
	// Default: 50/s.
	MaxRate string `json:"max_rate,omitempty"`

	// The number of answers remembered (positive and negative).
	// Default: 10000.
	CacheSize int `json:"cache_size,omitempty"`

	// Ask for a signed answer (RFC 9701) and accept only one: a JWS of
	// typ token-introspection+jwt signed by a key of the provider's key
	// source, with iss the issuer and aud our client_id; anything else
	// is 503.
	JWTResponse bool `json:"jwt_response,omitempty"`

	// Also introspect this provider's JWTs, after they passed every
	// local check, so that a revoked JWT is refused (within cache_ttl).
	// The request's claims stay the JWT's.
	IntrospectJWTs bool `json:"introspect_jwts,omitempty"`
}

// introspectConfig is the compiled introspection block.
type introspectConfig struct {
	endpoint     string // or "" to read it from discoveryURI
	discoveryURI string
	issuer       string
	clientID     string
	clientSecret string
	authPost     bool
	privateKey   string // private_key_jwt: the key file
	jwtResponse  bool
	jwts         bool // introspect_jwts
	prefix       string
	cacheTTL     time.Duration
	negativeTTL  time.Duration
	rate         float64 // calls per second
	size         int
	timeout      time.Duration
	insecureHTTP bool
}

// compile checks the block of provider p; errors name the field.
func (in *Introspection) compile(p *Provider) (*introspectConfig, error) {
	insecureHTTP := p.InsecureHTTP
	discoveryURI := ""
	if in.Endpoint != "" {
		if err := checkEndpointURL(in.Endpoint, insecureHTTP); err != nil {
			return nil, fmt.Errorf("introspection: endpoint: %w", err)
		}
	} else {
		discoveryURI = p.DiscoveryURI
		if discoveryURI == "" {
			discoveryURI = strings.TrimSuffix(p.Issuer, "/") + discoveryWellKnownPath
		}
		u, err := url.Parse(discoveryURI)
		if err == nil {
			err = checkFetchURL(u, insecureHTTP)
		}
		if err != nil {
			return nil, fmt.Errorf("introspection: endpoint: not set, and the discovery document it is read from is refused: %w", err)
		}
	}
	var err error
	if in.ClientID == "" {
		return nil, errors.New("introspection: client_id: required")
	}
	if err := checkIntroAuthMethod(in.AuthMethod); err != nil {
		return nil, err
	}
	if in.AuthMethod == "private_key_jwt" {
		if in.PrivateKey == "" {
			return nil, errors.New("introspection: private_key: required with auth_method private_key_jwt")
		}
		if in.ClientSecret != "" {
			return nil, errors.New("introspection: client_secret: not used with auth_method private_key_jwt")
		}
	} else {
		if in.ClientSecret == "" {
			return nil, errors.New("introspection: client_secret: required")
		}
		if in.PrivateKey != "" {
			return nil, errors.New("introspection: private_key: only with auth_method private_key_jwt")
		}
	}
	if err := checkTokenPrefix(in.TokenPrefix); err != nil {
		return nil, err
	}
	for _, d := range []struct {
		field string
		d     caddy.Duration
	}{{"introspection: cache_ttl", in.CacheTTL}, {"introspection: negative_ttl", in.NegativeTTL}} {
		if err := nonNegative(d.field, d.d); err != nil {
			return nil, err
		}
	}
	rate := float64(defaultIntroRate)
	if in.MaxRate != "" {
		if rate, err = parseRate(in.MaxRate); err != nil {
			return nil, err
		}
	}
	size := defaultIntroCacheSize
	if in.CacheSize != 0 {
		if err := checkIntroCacheSize(in.CacheSize); err != nil {
			return nil, err
		}
		size = in.CacheSize
	}
	return &introspectConfig{
		endpoint:     in.Endpoint,
		discoveryURI: discoveryURI,
		issuer:       p.Issuer,
		clientID:     in.ClientID,
		clientSecret: in.ClientSecret,
		authPost:     in.AuthMethod == "client_secret_post",
		privateKey:   in.PrivateKey,
		jwtResponse:  in.JWTResponse,
		jwts:         in.IntrospectJWTs,
		prefix:       in.TokenPrefix,
		cacheTTL:     durationOr(in.CacheTTL, defaultIntroCacheTTL),
		negativeTTL:  durationOr(in.NegativeTTL, defaultIntroNegativeTTL),
		rate:         rate,
		size:         size,
		timeout:      durationOr(p.FetchTimeout, defaultFetchTimeout),
		insecureHTTP: insecureHTTP,
	}, nil
}

// checkEndpointURL applies the key URL policy to an introspection
// endpoint, which must not carry credentials either.
func checkEndpointURL(raw string, insecureHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if err := checkFetchURL(u, insecureHTTP); err != nil {
		return err
	}
	if u.User != nil {
		return errors.New("must not hold credentials (use client_id and client_secret)")
	}
	return nil
}

func checkIntroAuthMethod(s string) error {
	switch s {
	case "", "client_secret_basic", "client_secret_post", "private_key_jwt":
		return nil
	}
	return fmt.Errorf("introspection: auth_method: %q is not client_secret_basic, client_secret_post or private_key_jwt", s)
}

func checkTokenPrefix(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("introspection: token_prefix: %q holds a character no token has", s)
		}
	}
	return nil
}

func checkIntroCacheSize(n int) error {
	if n < 1 || n > maxIntroCacheSize {
		return fmt.Errorf("introspection: cache_size: %d is not between 1 and %d", n, maxIntroCacheSize)
	}
	return nil
}

// parseRate reads `<n>/s`, `<n>/m` or `<n>` (per second).
func parseRate(s string) (float64, error) {
	num, unit, _ := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n <= 0 || n > 1e6 {
		return 0, fmt.Errorf("introspection: max_rate: %q is not a positive number of calls per s or m", s)
	}
	switch unit {
	case "", "s":
		return n, nil
	case "m":
		return n / 60, nil
	}
	return 0, fmt.Errorf("introspection: max_rate: %q: the unit must be s or m", s)
}

// unmarshalCaddyfile reads an introspection block, the cursor on its name.
func (in *Introspection) unmarshalCaddyfile(d *caddyfile.Dispenser, provider string) error {
	once, err := subBlockStart(d, fmt.Sprintf("provider %q: introspection: ", provider))
	if err != nil {
		return err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if err := once(opt); err != nil {
			return err
		}
		duration := func(dst *caddy.Duration) error {
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("provider %q: introspection: %s: %q is not a duration: %v", provider, opt, s, err)
			}
			if err := nonNegative("introspection: "+opt, caddy.Duration(dur)); err != nil {
				return d.Errf("provider %q: %v", provider, err)
			}
			*dst = caddy.Duration(dur)
			return nil
		}
		none := func(string) error { return nil }
		var err error
		switch opt {
		case "endpoint":
			err = stringArg(d, &in.Endpoint, none)
		case "client_id":
			err = stringArg(d, &in.ClientID, none)
		case "client_secret":
			err = stringArg(d, &in.ClientSecret, none)
		case "auth_method":
			err = stringArg(d, &in.AuthMethod, checkIntroAuthMethod)
		case "private_key":
			err = stringArg(d, &in.PrivateKey, none)
		case "token_prefix":
			err = stringArg(d, &in.TokenPrefix, checkTokenPrefix)
		case "cache_ttl":
			err = duration(&in.CacheTTL)
		case "negative_ttl":
			err = duration(&in.NegativeTTL)
		case "max_rate":
			err = stringArg(d, &in.MaxRate, func(s string) error { _, err := parseRate(s); return err })
		case "cache_size":
			in.CacheSize, err = intArg(d, "introspection: cache_size", checkIntroCacheSize)
		case "jwt_response", "introspect_jwts":
			if d.NextArg() {
				return d.ArgErr()
			}
			if opt == "jwt_response" {
				in.JWTResponse = true
			} else {
				in.IntrospectJWTs = true
			}
		default:
			return d.Errf("provider %q: introspection: unrecognized option %q", provider, opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// introspector is a provider's introspection client, with its answer
// cache, rate limit and singleflight. Those three are pooled (introPool):
// every handler, in every loaded config, whose provider has the same name,
// issuer, endpoint, client_id and answer policy shares them, so a reload
// keeps the cached answers and max_rate bounds the calls of them all.
type introspector struct {
	cfg    *introspectConfig
	client *http.Client
	now    func() time.Time
	log    *zap.Logger
	name   string
	issuer string
	*introShared
	maxWait time.Duration
	// wait sleeps for a turn under max_rate (sleep; tests replace it).
	wait func(ctx context.Context, d time.Duration) error
	// lease is the introPool key of the shared state, or "" while the
	// introspector has its own (compiled, not provisioned).
	lease string

	calls       [introResultCount]prometheus.Counter
	cacheHit    prometheus.Counter
	cacheMiss   prometheus.Counter
	rateLimited prometheus.Counter

	mu          sync.Mutex
	lastCall    time.Time
	lastResult  string
	lastAuthLog time.Time

	// The endpoint read from discovery, once (endpoint unset).
	discMu   sync.Mutex
	endpoint string
	nextDisc time.Time // no discovery attempt before this
	discErr  error
	fetcher  *fetcher

	signer jose.Signer // private_key_jwt, loaded by loadKey
}

// clientAssertionType is RFC 7523's client_assertion_type.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// loadKey reads the private_key_jwt key file, at provision.
func (in *introspector) loadKey() error {
	path := in.cfg.privateKey
	if path == "" {
		return nil
	}
	data, err := readCapped(path)
	if err != nil {
		return fmt.Errorf("introspection: private_key: %w", err)
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(data); err != nil {
		return fmt.Errorf("introspection: private_key: %s is not a JWK: %w", path, err)
	}
	alg := jose.SignatureAlgorithm(k.Algorithm)
	switch key := k.Key.(type) {
	case *rsa.PrivateKey:
		if alg == "" {
			alg = jose.RS256
		}
	case *ecdsa.PrivateKey:
		if alg == "" {
			alg = map[int]jose.SignatureAlgorithm{256: jose.ES256, 384: jose.ES384, 521: jose.ES512}[key.Curve.Params().BitSize]
		}
	case ed25519.PrivateKey:
		if alg == "" {
			alg = jose.EdDSA
		}
	default:
		return fmt.Errorf("introspection: private_key: %s is not an RSA, EC or Ed25519 private key", path)
	}
	if c := algClass(alg); c == classOct || algBit(alg) == 0 {
		return fmt.Errorf("introspection: private_key: algorithm %q is not an asymmetric signature algorithm", alg)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if k.KeyID != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), k.KeyID)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k.Key}, opts)
	if err != nil {
		return fmt.Errorf("introspection: private_key: %s: %w", path, err)
	}
	in.signer = s
	return nil
}

// assertion makes a fresh RFC 7523 client assertion: iss and sub the
// client_id, aud the issuer (RFC 7523bis), a minute of life, a random jti.
func (in *introspector) assertion() (string, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	now := in.now()
	c := in.cfg
	return jwt.Signed(in.signer).Claims(jwt.Claims{
		Issuer: c.clientID, Subject: c.clientID, Audience: jwt.Audience{c.issuer},
		ID: hex.EncodeToString(id[:]), IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)),
	}).Serialize()
}

// introDiscoveryRetry is the pause after a failed read of the discovery
// document, during which opaque tokens are answered 503 at once.
const introDiscoveryRetry = 10 * time.Second

// resolveEndpoint returns the endpoint: configured, else read once from
// the discovery document.
func (in *introspector) resolveEndpoint(ctx context.Context) (string, *introFault) {
	if in.cfg.endpoint != "" {
		return in.cfg.endpoint, nil
	}
	in.discMu.Lock()
	defer in.discMu.Unlock()
	if in.endpoint != "" {
		return in.endpoint, nil
	}
	now := in.now()
	if now.Before(in.nextDisc) {
		return "", &introFault{err: in.discErr, retryAfter: int((in.nextDisc.Sub(now) + time.Second - 1) / time.Second)}
	}
	ep, err := in.discover(ctx)
	if err != nil {
		in.nextDisc, in.discErr = now.Add(introDiscoveryRetry), err
		return "", &introFault{err: err, retryAfter: int(introDiscoveryRetry / time.Second)}
	}
	in.endpoint = ep
	return ep, nil
}

// discover reads introspection_endpoint from the discovery document,
// whose issuer must be the provider's.
func (in *introspector) discover(ctx context.Context) (string, error) {
	body, _, _, err := in.fetcher.get(ctx, in.cfg.discoveryURI)
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	var doc struct {
		Issuer   string `json:"issuer"`
		Endpoint string `json:"introspection_endpoint"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("discovery: decoding the document: %w", err)
	}
	if !discoveryIssuerMatches(doc.Issuer, in.cfg.issuer) {
		return "", fmt.Errorf("discovery: the document's issuer %q is not the provider's issuer", clip(doc.Issuer))
	}
	if doc.Endpoint == "" {
		return "", errors.New("discovery: the document has no introspection_endpoint (set endpoint)")
	}
	if err := checkEndpointURL(doc.Endpoint, in.cfg.insecureHTTP); err != nil {
		return "", fmt.Errorf("discovery: introspection_endpoint: %w", err)
	}
	return doc.Endpoint, nil
}

// endpointNow is the endpoint for the admin API.
func (in *introspector) endpointNow() string {
	if in.cfg.endpoint != "" {
		return in.cfg.endpoint
	}
	in.discMu.Lock()
	defer in.discMu.Unlock()
	if in.endpoint != "" {
		return in.endpoint
	}
	return "(from discovery " + in.cfg.discoveryURI + ")"
}

// Results of an introspection call, as metric labels.
const (
	introActive = iota
	introInactive
	introError
	introResultCount
)

var introResultNames = [introResultCount]string{"active", "inactive", "error"}

// start gives the introspector its runtime parts.
func (in *introspector) start(name, issuer string, now func() time.Time, log *zap.Logger) {
	c := in.cfg
	in.name, in.issuer, in.now, in.log = name, issuer, now, log
	in.introShared = newIntroShared(c, now())
	in.maxWait = defaultIntroMaxWait
	in.wait = sleep
	if c.endpoint == "" {
		in.fetcher = newFetcher(c.timeout, c.insecureHTTP)
	}
	in.client = &http.Client{
		Timeout: c.timeout,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: c.timeout, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   c.timeout,
			ResponseHeaderTimeout: c.timeout,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		// A redirect would resend the token elsewhere: never followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// observe resolves the introspector's metric handles.
func (in *introspector) observe(m *metricSet) {
	for i := range in.calls {
		in.calls[i] = m.introCalls.WithLabelValues(in.name, introResultNames[i])
	}
	in.cacheHit = m.introCache.WithLabelValues(in.name, "hit")
	in.cacheMiss = m.introCache.WithLabelValues(in.name, "miss")
	in.rateLimited = m.introRateLimited.WithLabelValues(in.name)
	liveIntrospectors.Store(in, struct{}{})
}

// liveIntrospectors are the introspectors of the provisioned handlers,
// for the admin API: added by Provision, removed by Cleanup.
var liveIntrospectors sync.Map // *introspector -> struct{}

// close drops the client's idle connections, the admin API's entry and
// the lease on the pooled state.
func (in *introspector) close() {
	liveIntrospectors.Delete(in)
	in.release()
	if in.client != nil {
		in.client.CloseIdleConnections()
	}
	if in.fetcher != nil {
		in.fetcher.close()
	}
}

// introspectionStatus is a provider's introspection in the admin API.
type introspectionStatus struct {
	Endpoint    string     `json:"endpoint"`
	TokenPrefix string     `json:"token_prefix,omitempty"`
	LastCall    *time.Time `json:"last_call,omitempty"`
	LastResult  string     `json:"last_result,omitempty"`
	// CacheEntries counts the cached answers of the provider, in every
	// cache of a loaded config (handlers with the same policy share one).
	CacheEntries int `json:"cache_entries"`
}

// introspectionOf returns the introspection state of the loaded
// provider name with issuer, or nil when it has none.
func introspectionOf(name, issuer string) *introspectionStatus {
	var st *introspectionStatus
	counted := map[*introCache]bool{}
	liveIntrospectors.Range(func(k, _ any) bool {
		in := k.(*introspector)
		if in.name != name || in.issuer != issuer {
			return true
		}
		if st == nil {
			st = &introspectionStatus{Endpoint: in.endpointNow(), TokenPrefix: in.cfg.prefix}
		}
		if !counted[in.cache] {
			counted[in.cache] = true
			st.CacheEntries += in.cache.len()
		}
		in.mu.Lock()
		if !in.lastCall.IsZero() && (st.LastCall == nil || in.lastCall.After(*st.LastCall)) {
			t := in.lastCall
			st.LastCall, st.LastResult = &t, in.lastResult
		}
		in.mu.Unlock()
		return true
	})
	return st
}

// introFault is an introspection call that did not give an answer about
// the token: the endpoint is down, slow, failing, refusing our
// credentials, or over max_rate. The token may be fine: 503, never 401.
type introFault struct {
	err        error
	retryAfter int // seconds
}

// call asks the endpoint about token, within max_rate. It returns the
// checked claims, or the refusal the answer implies, or a fault.
func (in *introspector) call(ctx context.Context, p *provider, token string) (*Claims, *authError, *introFault) {
	if wait, ok := in.limit.take(in.now(), in.maxWait); !ok {
		in.rateLimited.Inc()
		return nil, nil, &introFault{err: errors.New("max_rate reached"), retryAfter: int((wait + time.Second - 1) / time.Second)}
	} else if wait > 0 {
		if err := in.wait(ctx, wait); err != nil {
			return nil, nil, &introFault{err: err, retryAfter: 1}
		}
	}
	top, raw, fault := in.ask(ctx, p, token)
	if fault != nil {
		return nil, nil, fault
	}
	claims, aerr, err := checkAnswer(p, top, raw, in.now())
	switch {
	case err != nil:
		in.record(introError, "error: "+err.Error())
		return nil, nil, &introFault{err: err, retryAfter: 1}
	case aerr != nil:
		in.record(introInactive, "refused: "+aerr.explain())
		return nil, aerr, nil
	}
	in.record(introActive, "active")
	return claims, nil, nil
}

// sleep waits d for a turn under max_rate, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ask makes one request to the endpoint and returns the RFC 7662 answer
// (taken out of its RFC 9701 JWT with jwt_response) as parsed members and
// raw JSON, before the provider's rules judge it; or the fault that kept
// it from being one. It is the whole exchange with the endpoint, shared
// by the handler and inspect --introspect, so both see the same answer.
func (in *introspector) ask(ctx context.Context, p *provider, token string) (map[string]json.RawMessage, []byte, *introFault) {
	fail := func(err error, retryAfter int) (map[string]json.RawMessage, []byte, *introFault) {
		in.record(introError, "error: "+err.Error())
		return nil, nil, &introFault{err: err, retryAfter: retryAfter}
	}
	endpoint, fault := in.resolveEndpoint(ctx)
	if fault != nil {
		return fail(fault.err, fault.retryAfter)
	}
	body, ctype, fault := in.post(ctx, endpoint, token)
	if fault != nil {
		return fail(fault.err, fault.retryAfter)
	}
	want := "application/json"
	if in.cfg.jwtResponse {
		want = introJWTMediaType
	}
	if mt, _, err := mime.ParseMediaType(ctype); err != nil || mt != want {
		return fail(fmt.Errorf("answer is %q, not %s", clip(ctype), want), 1)
	}
	if in.cfg.jwtResponse {
		var err error
		if body, err = in.unwrapJWT(ctx, p, body); err != nil {
			return fail(err, 1)
		}
	}
	top, raw, err := parseAnswer(body)
	if err != nil {
		return fail(err, 1)
	}
	return top, raw, nil
}

// record counts a call and keeps its result for the admin API.
func (in *introspector) record(result int, text string) {
	in.calls[result].Inc()
	in.mu.Lock()
	in.lastCall, in.lastResult = in.now(), text
	in.mu.Unlock()
}

// post sends the RFC 7662 request: the token in a form body, never in a
// URL, with the client's credentials.
func (in *introspector) post(ctx context.Context, endpoint, token string) ([]byte, string, *introFault) {
	c := in.cfg
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	switch {
	case in.signer != nil:
		a, err := in.assertion()
		if err != nil {
			return nil, "", &introFault{err: fmt.Errorf("signing the client assertion: %w", err), retryAfter: 1}
		}
		form.Set("client_id", c.clientID)
		form.Set("client_assertion_type", clientAssertionType)
		form.Set("client_assertion", a)
	case c.authPost:
		form.Set("client_id", c.clientID)
		form.Set("client_secret", c.clientSecret)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, "", &introFault{err: err, retryAfter: 1}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.jwtResponse {
		req.Header.Set("Accept", introJWTMediaType)
	} else {
		req.Header.Set("Accept", "application/json")
	}
	req.Header.Set("User-Agent", "caddy-oauth2-jwt")
	if !c.authPost && in.signer == nil {
		// RFC 6749 section 2.3.1: both form-encoded, then Basic.
		req.SetBasicAuth(url.QueryEscape(c.clientID), url.QueryEscape(c.clientSecret))
	}
	resp, err := in.client.Do(req)
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil, "", &introFault{err: fmt.Errorf("timed out after fetch_timeout %s", c.timeout), retryAfter: 1}
		}
		// err holds the endpoint URL, never the token (it is in the body).
		return nil, "", &introFault{err: fmt.Errorf("request failed: %w", err), retryAfter: 1}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		in.logCredentials(resp.StatusCode)
		return nil, "", &introFault{err: fmt.Errorf("the endpoint refused our client credentials (HTTP %d)", resp.StatusCode), retryAfter: 60}
	case resp.StatusCode != http.StatusOK:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, "", &introFault{err: fmt.Errorf("unexpected HTTP status %d", resp.StatusCode), retryAfter: 1}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIntrospectionBody+1))
	if err != nil {
		return nil, "", &introFault{err: fmt.Errorf("reading the answer: %w", err), retryAfter: 1}
	}
	if len(body) > maxIntrospectionBody {
		return nil, "", &introFault{err: fmt.Errorf("answer exceeds %d bytes", maxIntrospectionBody), retryAfter: 1}
	}
	return body, resp.Header.Get("Content-Type"), nil
}

// logCredentials logs, at most once per introAuthLogEvery, that the
// endpoint refuses our credentials: no request can pass until an
// operator fixes them.
func (in *introspector) logCredentials(status int) {
	now := in.now()
	in.mu.Lock()
	due := in.lastAuthLog.IsZero() || now.Sub(in.lastAuthLog) >= introAuthLogEvery
	if due {
		in.lastAuthLog = now
	}
	in.mu.Unlock()
	if due {
		in.log.Error("introspection endpoint refuses the client credentials; opaque tokens are answered 503 until they are fixed",
			zap.String("provider", in.name), zap.String("endpoint", in.endpointNow()),
			zap.String("client_id", in.cfg.clientID), zap.Int("status", status))
	}
}

// introJWTMediaType is RFC 9701's media type of a signed answer; its
// typ is the part after "application/".
const introJWTMediaType = "application/token-introspection+jwt"

// unwrapJWT verifies an RFC 9701 signed answer with the provider's keys
// and returns its token_introspection member, the RFC 7662 answer.
func (in *introspector) unwrapJWT(ctx context.Context, p *provider, body []byte) ([]byte, error) {
	s := string(bytes.TrimSpace(body))
	if _, _, ok := compactParts(s); !ok {
		return nil, errors.New("signed answer is not a compact JWS")
	}
	jws, err := jose.ParseSignedCompact(s, p.algs.list())
	if err != nil || len(jws.Signatures) != 1 {
		return nil, errors.New("signed answer: not one JWS signature with an algorithm of the provider")
	}
	hdr := jws.Signatures[0].Header
	if checkHeader(&hdr) != nil {
		return nil, errors.New("signed answer: forbidden header (crit, b64, zip, nested JWT)")
	}
	typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string)
	if !strings.EqualFold(typ, "token-introspection+jwt") && !strings.EqualFold(typ, introJWTMediaType) {
		return nil, errors.New("signed answer: typ is not token-introspection+jwt")
	}
	ks, aerr := p.keys.keysAt(in.now())
	if aerr != nil {
		return nil, fmt.Errorf("signed answer: %s", aerr.explain())
	}
	alg := jose.SignatureAlgorithm(hdr.Algorithm)
	var buf [maxKidlessCandidates]*verificationKey
	cands, found := ks.candidates(hdr.KeyID, alg, buf[:])
	if !found && hdr.KeyID != "" {
		if fresh := p.keys.refreshForKid(ctx, hdr.KeyID); fresh != nil {
			cands, _ = fresh.candidates(hdr.KeyID, alg, buf[:])
		}
	}
	var payload []byte
	for _, k := range cands[:min(len(cands), maxKidlessCandidates)] {
		if b, err := jws.Verify(k.key); err == nil {
			payload = b
			break
		}
	}
	if payload == nil {
		return nil, errors.New("signed answer: no key of the provider verifies its signature")
	}
	top, _, err := parseAnswer(payload)
	if err != nil {
		return nil, fmt.Errorf("signed answer: %w", err)
	}
	if iss, ok := jsonString(top["iss"]); !ok || iss != p.issuer {
		return nil, errors.New("signed answer: iss is not the provider's issuer")
	}
	if raw, ok := top["aud"]; !ok || checkAudience(raw, []string{in.cfg.clientID}) != nil {
		return nil, errors.New("signed answer: aud is not our client_id")
	}
	ti, ok := top["token_introspection"]
	if !ok || len(ti) == 0 || ti[0] != '{' {
		return nil, errors.New("signed answer: no token_introspection object")
	}
	return ti, nil
}

// parseAnswer reads an answer: a UTF-8 JSON object without duplicate
// members at any depth, as a token payload must be.
func parseAnswer(body []byte) (map[string]json.RawMessage, []byte, error) {
	raw := bytes.TrimSpace(body)
	if !utf8.Valid(raw) {
		return nil, nil, errors.New("answer is not valid UTF-8")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return nil, nil, errors.New("answer is not a JSON object without duplicate members")
	}
	for _, v := range top {
		if len(v) > 0 && (v[0] == '{' || v[0] == '[') {
			var nested any
			if err := json.Unmarshal(v, &nested); err != nil {
				return nil, nil, errors.New("answer is not a JSON object without duplicate members")
			}
		}
	}
	return top, bytes.Clone(raw), nil
}

// Refusals of introspection answers.
var (
	errInactive       = &authError{step: stepIntrospection, reason: reasonInactive, detail: "the introspection endpoint says the token is not active"}
	errOpaqueNoRoute  = &authError{step: stepIssuer, reason: reasonUnknownIssuer, detail: "opaque token: no introspection provider takes it (token_prefix)"}
	errAnswerIssuer   = &authError{step: stepIssuer, reason: reasonBadClaim, detail: "the introspection answer's iss is not the provider's issuer"}
	errNotAccessToken = &authError{step: stepClaims, reason: reasonBadClaim, detail: "the introspection answer names a token that is not an access token"}
	errNoAudNoType    = &authError{step: stepClaims, reason: reasonBadClaim, detail: "the introspection answer has neither aud nor token_type: nothing says it is an access token"}
)

// accessTokenTypes are the token_type values of access tokens (RFC 6749
// section 7.1 types, RFC 8693 identifiers), compared case-insensitively.
var accessTokenTypes = []string{"bearer", "dpop", "n_a", "access_token", "urn:ietf:params:oauth:token-type:access_token"}

// nonAccessTokenUses are token_use values (Cognito, Hydra) naming
// another kind of token.
var nonAccessTokenUses = []string{"refresh", "refresh_token", "id", "id_token",
	"urn:ietf:params:oauth:token-type:refresh_token", "urn:ietf:params:oauth:token-type:id_token"}

// checkAnswer applies the provider's rules to an answer. It returns the
// claims, or the refusal (a fact about the token, cached as negative), or
// an error when the answer is not one (the endpoint misbehaves).
func checkAnswer(p *provider, top map[string]json.RawMessage, raw []byte, now time.Time) (*Claims, *authError, error) {
	switch string(top["active"]) {
	case "true":
	case "false":
		return nil, errInactive, nil
	default:
		return nil, nil, errors.New("answer has no boolean active member")
	}
	if v, ok := top["iss"]; ok {
		if iss, ok := jsonString(v); !ok || iss != p.issuer {
			return nil, errAnswerIssuer, nil
		}
	}
	for _, m := range []struct {
		name   string
		accept func(string) bool
	}{
		{"token_type", func(s string) bool { return containsFold(accessTokenTypes, s) }},
		{"token_use", func(s string) bool { return !containsFold(nonAccessTokenUses, s) }},
	} {
		if v, ok := top[m.name]; ok {
			if s, ok := jsonString(v); !ok || !m.accept(s) {
				return nil, errNotAccessToken, nil
			}
		}
	}
	c := &Claims{}
	if v, ok := top["exp"]; ok {
		exp, ok := numericDate(v)
		if !ok {
			return nil, fail(stepTime, reasonBadClaim, "exp is not a valid NumericDate"), nil
		}
		c.expiry, c.notAfter = exp, exp.Add(p.leeway)
		if !now.Before(c.notAfter) {
			return nil, fail(stepTime, reasonExpired, "exp of the introspection answer is past, beyond the leeway of "+p.leeway.String()), nil
		}
	}
	for _, name := range [...]string{"nbf", "iat"} {
		v, ok := top[name]
		if !ok {
			continue
		}
		t, ok := numericDate(v)
		if !ok {
			return nil, fail(stepTime, reasonBadClaim, name+" is not a valid NumericDate"), nil
		}
		if now.Add(p.leeway).Before(t) {
			return nil, fail(stepTime, reasonNotYetValid, name+" of the introspection answer is in the future"), nil
		}
		if from := t.Add(-p.leeway); from.After(c.notBefore) {
			c.notBefore = from
		}
	}
	if v, ok := top["aud"]; ok {
		if aerr := checkAudience(v, p.audiences); aerr != nil {
			return nil, aerr, nil
		}
	} else if !p.allowNoAud {
		return nil, fail(stepAudience, reasonMissingClaim, "the introspection answer has no aud (allow_missing_audience is off)"), nil
	} else if _, ok := top["token_type"]; !ok {
		// Without aud, token_type is the only sign that this is an
		// access token: oidc-provider (and Logto, built on it) answers
		// for a refresh token with neither.
		return nil, errNoAudNoType, nil
	}
	if v, ok := top["sub"]; ok {
		sub, ok := jsonString(v)
		if !ok {
			return nil, fail(stepClaims, reasonBadClaim, "sub is not a string"), nil
		}
		c.subject = sub
	}
	cnf, aerr := parseCnf(top)
	if aerr != nil {
		return nil, aerr, nil
	}
	c.cnf = cnf
	c.provider = p.name
	c.raw = raw
	c.top = top
	c.replaceFn = c.replace
	return c, nil, nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// introRoutes sends opaque tokens to introspection providers: by
// token_prefix, else to the one provider without a prefix.
type introRoutes struct {
	prefixed []*provider
	fallback *provider
}

func (r *introRoutes) any() bool { return r.fallback != nil || len(r.prefixed) > 0 }

// route returns the provider of an opaque token, or nil.
func (r *introRoutes) route(token string) *provider {
	for _, p := range r.prefixed {
		if strings.HasPrefix(token, p.intro.cfg.prefix) {
			return p
		}
	}
	return r.fallback
}

// add registers an introspection provider, refusing an ambiguous set:
// no token_prefix may start with another (or equal it), and at most one
// provider may have none. Then every opaque token has at most one
// provider.
func (r *introRoutes) add(p *provider) error {
	prefix := p.intro.cfg.prefix
	if prefix == "" {
		if r.fallback != nil {
			return fmt.Errorf("provider %q: introspection: providers %q and %q both have no token_prefix; at most one introspection provider may go without one", p.name, r.fallback.name, p.name)
		}
		r.fallback = p
		return nil
	}
	for _, o := range r.prefixed {
		op := o.intro.cfg.prefix
		if strings.HasPrefix(prefix, op) || strings.HasPrefix(op, prefix) {
			return fmt.Errorf("provider %q: introspection: token_prefix %q overlaps token_prefix %q of provider %q", p.name, prefix, op, o.name)
		}
	}
	r.prefixed = append(r.prefixed, p)
	return nil
}

// introspect returns the claims of an opaque token of provider p: from
// the cache when fresh, else from one call shared by concurrent requests
// for the same token. A fault serves a cached positive answer until its
// own expiry, else it is 503.
func (in *introspector) introspect(ctx context.Context, p *provider, token string, now time.Time) (*Claims, *authError) {
	key := sha256.Sum256([]byte(token))
	e := in.cache.get(key)
	if e != nil {
		if e.refusal != nil && now.Before(e.until) {
			in.cacheHit.Inc()
			return nil, e.refusal
		}
		if e.claims != nil {
			if !now.Before(e.hardUntil) && !e.claims.expiry.IsZero() {
				in.cacheHit.Inc()
				return nil, fail(stepTime, reasonExpired, "exp of the introspection answer is past, beyond the leeway of "+p.leeway.String())
			}
			if now.Before(e.until) {
				in.cacheHit.Inc()
				return e.claims, timeCheck(e.claims, now)
			}
		}
	}
	in.cacheMiss.Inc()
	res := in.flight.do(key, func() flightResult {
		// A call that ended since the look-up above has answered.
		if e2 := in.cache.get(key); e2 != nil && e2 != e && now.Before(e2.until) {
			return flightResult{claims: e2.claims, refusal: e2.refusal}
		}
		// The call outlives the request that started it, for the
		// others waiting on it, within the fetch timeout.
		c, refusal, fault := in.call(context.WithoutCancel(ctx), p, token)
		at := in.now()
		switch {
		case c != nil:
			in.cache.put(key, positiveEntry(c, at, in.cfg.cacheTTL), at)
		case refusal != nil:
			in.cache.put(key, &introEntry{refusal: refusal, until: at.Add(in.cfg.negativeTTL)}, at)
		}
		return flightResult{claims: c, refusal: refusal, fault: fault}
	})
	switch {
	case res.claims != nil:
		return res.claims, timeCheck(res.claims, now)
	case res.refusal != nil:
		return nil, res.refusal
	}
	if e != nil && e.claims != nil && now.Before(e.hardUntil) {
		// The endpoint cannot answer: the last positive answer holds
		// until its own exp.
		return e.claims, timeCheck(e.claims, now)
	}
	return nil, &authError{step: stepIntrospection, reason: reasonUnavailable,
		detail: "introspection endpoint unavailable: " + res.fault.err.Error(), retryAfter: max(res.fault.retryAfter, 1)}
}

// timeCheck re-checks a cached answer's exp and nbf/iat at now.
func timeCheck(c *Claims, now time.Time) *authError {
	if !c.expiry.IsZero() && !now.Before(c.notAfter) {
		return fail(stepTime, reasonExpired, "exp of the introspection answer is past")
	}
	if now.Before(c.notBefore) {
		return errNotYetValid
	}
	return nil
}

// readCapped reads a small local file (a private key), refusing one over
// maxBodySize.
func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBodySize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(data) > maxBodySize {
		return nil, fmt.Errorf("%s exceeds %d bytes", path, maxBodySize)
	}
	return data, nil
}

// authMethod names the client authentication of the calls, for inspect.
func (in *introspector) authMethod() string {
	switch {
	case in.cfg.privateKey != "":
		return "private_key_jwt"
	case in.cfg.authPost:
		return "client_secret_post"
	}
	return "client_secret_basic"
}
