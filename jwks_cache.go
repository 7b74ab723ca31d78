package oauth2jwt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/go-jose/go-jose/v4/json"
	"go.uber.org/zap"
)

const (
	// maxBodySize caps every JWKS and discovery response.
	maxBodySize = 1 << 20
	// maxRedirects caps redirects followed by a key fetch.
	maxRedirects = 3
	// minDerivedRefresh and maxDerivedRefresh bound a refresh interval
	// taken from the response's Cache-Control max-age.
	minDerivedRefresh = time.Minute
	maxDerivedRefresh = 24 * time.Hour
	// firstBackoff is the first retry delay after a failed fetch.
	firstBackoff = time.Second
	// maxNegativeKids bounds the memory of kids confirmed unknown.
	maxNegativeKids = 1024
	// maxNegativeKidLen: longer kids are never remembered (they are never
	// real), they simply hit the refresh rate limit.
	maxNegativeKidLen = 256
)

// keySource is what a provider's keys are checked against. It is either a
// remote, refreshed JWKS (jwksCache) or a local file read at provision
// (staticKeys).
type keySource interface {
	// keys returns the current key set, or an unavailable error when the
	// provider has no usable keys (never loaded, or older than max_stale).
	keys() (*keySet, *authError)
	// keysAt is keys for a clock reading the caller already has.
	keysAt(now time.Time) (*keySet, *authError)
	// refreshForKid is called when a token names a kid the current set does
	// not have. It may fetch the JWKS once (rate limited, shared by
	// concurrent callers) and returns the set to retry with, or nil when no
	// newer set can be had. It never blocks longer than the fetch timeout.
	refreshForKid(ctx context.Context, kid string) *keySet
}

// staticKeys is a key set loaded once from a local jwks_file.
type staticKeys struct{ set *keySet }

func (s staticKeys) keys() (*keySet, *authError)                   { return s.set, nil }
func (s staticKeys) keysAt(time.Time) (*keySet, *authError)        { return s.set, nil }
func (s staticKeys) refreshForKid(context.Context, string) *keySet { return nil }

// loadJWKSFile reads and parses a local JWKS file.
func loadJWKSFile(path string, allowOct bool) (*keySet, []skippedKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBodySize+1))
	if err != nil {
		return nil, nil, err
	}
	if len(data) > maxBodySize {
		return nil, nil, fmt.Errorf("file larger than %d bytes", maxBodySize)
	}
	ks, skipped, err := parseJWKS(data, allowOct)
	if err != nil {
		return nil, skipped, err
	}
	ks.gen = 1
	return ks, skipped, nil
}

// fetchConfig identifies a remote key source and how it is fetched. Two
// providers (in one config or across reloads) with equal fetchConfigs share
// one jwksCache.
type fetchConfig struct {
	jwksURI         string
	discoveryURI    string
	issuer          string // checked against the discovery document
	refreshInterval time.Duration
	minRefresh      time.Duration
	fetchTimeout    time.Duration
	maxStale        time.Duration
	insecureHTTP    bool
}

func (f fetchConfig) poolKey() string {
	if f.discoveryURI == "" {
		// The issuer only matters for checking a discovery document:
		// providers with different issuers sharing one JWKS URL (Entra
		// ID's v1 and v2 issuers, say) share one cache and one fetch.
		f.issuer = ""
	}
	return fmt.Sprintf("oauth2_jwt|jwks=%s|discovery=%s|issuer=%s|refresh=%s|min=%s|timeout=%s|stale=%s|insecure=%t",
		f.jwksURI, f.discoveryURI, f.issuer, f.refreshInterval, f.minRefresh, f.fetchTimeout, f.maxStale, f.insecureHTTP)
}

// sourceURL is the URL a fetch starts from, for logs.
func (f fetchConfig) sourceURL() string {
	if f.discoveryURI != "" {
		return f.discoveryURI
	}
	return f.jwksURI
}

// cachePool shares key caches across handlers and config reloads, so a
// `caddy reload` never refetches keys.
var cachePool = caddy.NewUsagePool()

// jwksCache holds the keys of one remote key source. It owns one refresh
// goroutine, started by start and stopped by Destruct (when the last config
// using it is unloaded).
type jwksCache struct {
	cfg    fetchConfig
	client *http.Client
	// logger, when set (tests), replaces Caddy's current default logger.
	logger atomic.Pointer[zap.Logger]
	// skew shifts this cache's clock; tests use it to simulate hours
	// passing. Always zero in production.
	skew atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{} // a fetch ended: the refresher re-reads nextAttempt

	current atomic.Pointer[keySet]

	mu          sync.Mutex
	inflight    chan struct{} // closed when the fetch in flight ends
	lastAttempt time.Time     // start of the last fetch attempt
	nextAttempt time.Time     // when the refresher will try next
	lastErr     error
	failures    int    // consecutive failed fetches
	jwksURI     string // resolved from discovery, or the configured one
	negative    map[string]time.Time
	loggedSkips map[string]struct{}
	gen         uint64
	fetches     atomic.Int64 // fetch attempts, for tests and the admin API
	// names are the provider names using this cache (with reference
	// counts), the label of its metrics.
	names map[string]int
}

func newJWKSCache(cfg fetchConfig) *jwksCache {
	ctx, cancel := context.WithCancel(context.Background())
	c := &jwksCache{
		cfg:         cfg,
		ctx:         ctx,
		cancel:      cancel,
		done:        make(chan struct{}),
		wake:        make(chan struct{}, 1),
		jwksURI:     cfg.jwksURI,
		negative:    make(map[string]time.Time),
		loggedSkips: make(map[string]struct{}),
		names:       make(map[string]int),
	}
	c.client = &http.Client{
		Timeout: cfg.fetchTimeout,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: cfg.fetchTimeout, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   cfg.fetchTimeout,
			ResponseHeaderTimeout: cfg.fetchTimeout,
			MaxIdleConns:          2,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			if via[len(via)-1].URL.Scheme == "https" && req.URL.Scheme != "https" {
				return errors.New("refusing a redirect from https to " + req.URL.Scheme)
			}
			return checkFetchURL(req.URL, cfg.insecureHTTP)
		},
	}
	return c
}

// now is the cache's clock.
func (c *jwksCache) now() time.Time {
	return time.Now().Add(time.Duration(c.skew.Load()))
}

func (c *jwksCache) log() *zap.Logger {
	if l := c.logger.Load(); l != nil {
		return l
	}
	return caddy.Log().Named("http.handlers.oauth2_jwt")
}

// start launches the refresher. The first fetch begins at once, in the
// background: Caddy starts even when the identity provider is down.
func (c *jwksCache) start() {
	go c.run()
}

// Destruct stops the refresher; it implements caddy.Destructor and is called
// by the usage pool when no loaded config uses this cache any more.
func (c *jwksCache) Destruct() error {
	c.cancel()
	<-c.done
	c.client.CloseIdleConnections()
	return nil
}

// run is the refresher: it fetches at nextAttempt, which every fetch
// (periodic, unknown-kid or forced) sets, and wakes up to re-read it
// whenever a fetch it did not start ends.
func (c *jwksCache) run() {
	defer close(c.done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.wake:
			c.resetTimer(timer)
			continue
		case <-timer.C:
		}
		wait := c.fetchShared(true)
		select {
		case <-c.ctx.Done():
			return
		case <-wait:
		}
		c.resetTimer(timer)
	}
}

// resetTimer arms the refresher's timer for nextAttempt.
func (c *jwksCache) resetTimer(timer *time.Timer) {
	c.mu.Lock()
	delay := c.nextAttempt.Sub(c.now())
	c.mu.Unlock()
	timer.Stop()
	timer.Reset(max(delay, 0))
}

// fetchShared starts a fetch unless one is in flight, and returns a channel
// closed when the fetch in flight ends. full re-reads the discovery
// document too (when configured); a kid-triggered refresh reads only the
// JWKS.
func (c *jwksCache) fetchShared(full bool) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startFetchLocked(full)
}

func (c *jwksCache) startFetchLocked(full bool) <-chan struct{} {
	if c.inflight != nil {
		return c.inflight
	}
	ch := make(chan struct{})
	c.inflight = ch
	c.lastAttempt = c.now()
	jwksURI := c.jwksURI
	go func() {
		defer func() {
			if r := recover(); r != nil {
				// A panic while parsing a hostile document must not take
				// Caddy down: it counts as a failed fetch.
				c.mu.Lock()
				c.failures++
				c.lastErr = fmt.Errorf("panic while fetching keys: %v", r)
				c.nextAttempt = c.now().Add(min(firstBackoff<<min(c.failures-1, 20), c.cfg.minRefresh))
				c.inflight = nil
				c.mu.Unlock()
				c.log().Error("JWKS fetch panicked", zap.String("source", c.cfg.sourceURL()), zap.Any("panic", r))
			}
			close(ch)
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}()
		c.fetch(full || jwksURI == "", jwksURI)
	}()
	return ch
}

// fetch performs one fetch and records its outcome. It runs on the
// goroutine started by startFetchLocked, bounded by the fetch timeout and
// by the cache's lifetime.
func (c *jwksCache) fetch(discover bool, jwksURI string) {
	c.fetches.Add(1)
	start := c.now()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.fetchTimeout)
	defer cancel()

	var (
		ks      *keySet
		skipped []skippedKey
		maxAge  time.Duration
		status  int
		err     error
	)
	fetchURL := jwksURI
	if discover && c.cfg.discoveryURI != "" {
		fetchURL = c.cfg.discoveryURI
		jwksURI, err = c.discover(ctx)
	}
	if err == nil {
		fetchURL = jwksURI
		var body []byte
		body, status, maxAge, err = c.get(ctx, jwksURI)
		if err == nil {
			ks, skipped, err = parseJWKS(body, false)
		}
	}
	elapsed := c.now().Sub(start)

	c.mu.Lock()
	defer func() {
		c.inflight = nil
		c.mu.Unlock()
	}()
	now := c.now()
	c.logSkippedLocked(jwksURI, skipped)
	if err == nil {
		ks.fetchedAt = now
	}
	c.recordFetchLocked(ks, err)
	if err != nil {
		c.failures++
		c.lastErr = err
		backoff := firstBackoff << min(c.failures-1, 20)
		backoff = min(backoff, c.cfg.minRefresh)
		c.nextAttempt = now.Add(backoff)
		fields := []zap.Field{
			zap.String("url", fetchURL),
			zap.String("source", c.cfg.sourceURL()),
			zap.Int("status", status),
			zap.Duration("duration", elapsed),
			zap.Error(err),
			zap.Duration("retry_in", backoff),
		}
		if prev := c.current.Load(); prev != nil {
			age := now.Sub(prev.fetchedAt)
			fields = append(fields, zap.Duration("keys_age", age), zap.Bool("keys_usable", age <= c.cfg.maxStale))
			c.log().Warn("JWKS refresh failed; keeping the last good keys", fields...)
		} else {
			c.log().Warn("JWKS fetch failed; provider has no keys yet", fields...)
		}
		return
	}
	if discover && c.cfg.discoveryURI != "" {
		c.jwksURI = jwksURI
	}
	c.failures = 0
	c.lastErr = nil
	if prev := c.current.Load(); prev != nil && prev.fingerprint == ks.fingerprint {
		ks.gen = prev.gen
	} else {
		c.gen++
		ks.gen = c.gen
	}
	c.current.Store(ks)
	interval := c.cfg.refreshInterval
	if interval == 0 {
		interval = time.Hour
		if maxAge > 0 {
			interval = min(max(maxAge, minDerivedRefresh), maxDerivedRefresh)
		}
		// Refresh well before the keys would go stale.
		interval = min(interval, c.cfg.maxStale/2)
	}
	// Jitter: up to 10% earlier, so many Caddy instances do not refresh in
	// step.
	interval -= time.Duration(rand.Int64N(int64(interval)/10 + 1))
	c.nextAttempt = now.Add(interval)
	c.log().Info("JWKS fetched",
		zap.String("url", jwksURI),
		zap.Int("status", status),
		zap.Int("keys", len(ks.all)),
		zap.Int("skipped", len(skipped)),
		zap.Duration("duration", elapsed),
		zap.Duration("next_refresh", interval))
}

// logSkippedLocked logs each skipped key once per cache lifetime.
func (c *jwksCache) logSkippedLocked(url string, skipped []skippedKey) {
	for _, s := range skipped {
		id := s.kid + "\x00" + s.reason
		if _, seen := c.loggedSkips[id]; seen || len(c.loggedSkips) >= maxKeysPerSet*4 {
			continue
		}
		c.loggedSkips[id] = struct{}{}
		c.log().Warn("skipping unusable JWKS key", zap.String("url", url), zap.String("kid", s.kid), zap.String("reason", s.reason))
	}
}

// addName records a provider name using this cache, for metric labels.
func (c *jwksCache) addName(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.names[name]++
	if ks := c.current.Load(); ks != nil {
		m := getMetrics()
		m.keysLoaded.WithLabelValues(name).Set(float64(len(ks.all)))
		m.lastFetch.WithLabelValues(name).Set(float64(ks.fetchedAt.Unix()))
	}
}

func (c *jwksCache) removeName(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.names[name]--; c.names[name] <= 0 {
		delete(c.names, name)
	}
}

// recordFetchLocked updates the metrics of a fetch outcome.
func (c *jwksCache) recordFetchLocked(ks *keySet, err error) {
	m := getMetrics()
	result := "success"
	if err != nil {
		result = "error"
	}
	for name := range c.names {
		m.fetches.WithLabelValues(name, result).Inc()
		if err == nil {
			m.keysLoaded.WithLabelValues(name).Set(float64(len(ks.all)))
			m.lastFetch.WithLabelValues(name).Set(float64(ks.fetchedAt.Unix()))
		}
	}
}

// forceRefresh starts a full refresh for the admin API, subject to the
// same rate limit as unknown-kid refreshes. It returns the channel of the
// fetch (possibly one already in flight), or nil and how long until a
// fetch is allowed.
func (c *jwksCache) forceRefresh() (<-chan struct{}, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight != nil {
		return c.inflight, 0
	}
	if since := c.now().Sub(c.lastAttempt); since < c.cfg.minRefresh {
		return nil, c.cfg.minRefresh - since
	}
	return c.startFetchLocked(true), 0
}

// discoveryDocument holds the members of an OpenID Provider Metadata
// document this module uses.
type discoveryDocument struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// parseDiscovery decodes a discovery document and checks it against the
// configured issuer (OpenID Connect Discovery 1.0, section 4.3).
func parseDiscovery(data []byte, issuer string, insecureHTTP bool) (string, error) {
	var doc discoveryDocument
	if err := json.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("decoding discovery document: %w", err)
	}
	if !discoveryIssuerMatches(doc.Issuer, issuer) {
		return "", fmt.Errorf("discovery document issuer %q does not equal the configured issuer %q", doc.Issuer, issuer)
	}
	if doc.JWKSURI == "" {
		return "", errors.New("discovery document has no jwks_uri")
	}
	u, err := url.Parse(doc.JWKSURI)
	if err != nil {
		return "", fmt.Errorf("discovery document jwks_uri: %w", err)
	}
	if err := checkFetchURL(u, insecureHTTP); err != nil {
		return "", fmt.Errorf("discovery document jwks_uri: %w", err)
	}
	return doc.JWKSURI, nil
}

// discoveryIssuerMatches compares a discovery document's issuer with the
// configured one: exactly, or, for a multi-tenant template, either the same
// template with any variable name ({tenantid} in Entra ID's common
// endpoint) or one concrete tenant's issuer.
func discoveryIssuerMatches(doc, configured string) bool {
	if doc == configured {
		return true
	}
	prefix, suffix, ok := strings.Cut(configured, tenantVar)
	if !ok || len(doc) <= len(prefix)+len(suffix) || !strings.HasPrefix(doc, prefix) || !strings.HasSuffix(doc, suffix) {
		return false
	}
	middle := doc[len(prefix) : len(doc)-len(suffix)]
	if len(middle) > 2 && middle[0] == '{' && middle[len(middle)-1] == '}' && validTenant(middle[1:len(middle)-1]) {
		return true
	}
	return validTenant(middle)
}

func (c *jwksCache) discover(ctx context.Context) (string, error) {
	body, _, _, err := c.get(ctx, c.cfg.discoveryURI)
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	u, err := parseDiscovery(body, c.cfg.issuer, c.cfg.insecureHTTP)
	if err != nil {
		c.log().Error("OpenID discovery document refused; provider's tokens are answered 503 until it is fixed",
			zap.String("url", c.cfg.discoveryURI), zap.Error(err))
	}
	return u, err
}

// get fetches one document with the size cap, and returns its body, status
// and Cache-Control max-age.
func (c *jwksCache) get(ctx context.Context, rawURL string) ([]byte, int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, 0, 0, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	req.Header.Set("User-Agent", "caddy-oauth2-jwt")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, 0, 0, c.timeoutErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, resp.StatusCode, 0, fmt.Errorf("unexpected HTTP status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "text/html" {
			return nil, resp.StatusCode, 0, errors.New("response is an HTML page, not JSON")
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodySize+1))
	if err != nil {
		return nil, resp.StatusCode, 0, fmt.Errorf("reading body: %w", c.timeoutErr(err))
	}
	if len(body) > maxBodySize {
		return nil, resp.StatusCode, 0, fmt.Errorf("response body exceeds %d bytes", maxBodySize)
	}
	return body, resp.StatusCode, maxAge(resp.Header.Get("Cache-Control")), nil
}

// timeoutErr names a timeout as one, whichever layer noticed it.
func (c *jwksCache) timeoutErr(err error) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("timed out after fetch_timeout %s: %w", c.cfg.fetchTimeout, err)
	}
	return err
}

// maxAge returns the max-age of a Cache-Control header, or 0.
func maxAge(cc string) time.Duration {
	for part := range strings.SplitSeq(cc, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || !strings.EqualFold(name, "max-age") {
			continue
		}
		n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
		if err != nil || n <= 0 {
			return 0
		}
		if n > int64(maxDerivedRefresh/time.Second) {
			return maxDerivedRefresh
		}
		return time.Duration(n) * time.Second
	}
	return 0
}

// keys implements keySource.
func (c *jwksCache) keys() (*keySet, *authError) {
	return c.keysAt(time.Now())
}

// keysAt implements keySource.
func (c *jwksCache) keysAt(now time.Time) (*keySet, *authError) {
	ks := c.current.Load()
	if ks != nil && now.Add(time.Duration(c.skew.Load())).Sub(ks.fetchedAt) <= c.cfg.maxStale {
		return ks, nil
	}
	c.mu.Lock()
	wait := c.nextAttempt.Sub(c.now())
	c.mu.Unlock()
	detail := "keys never loaded"
	if ks != nil {
		detail = "keys older than max_stale"
	}
	return nil, &authError{reason: reasonUnavailable, detail: detail, retryAfter: int((wait + time.Second - 1) / time.Second)}
}

// refreshForKid implements keySource.
func (c *jwksCache) refreshForKid(ctx context.Context, kid string) *keySet {
	now := c.now()
	c.mu.Lock()
	if until, ok := c.negative[kid]; ok {
		if now.Before(until) {
			c.mu.Unlock()
			return nil
		}
		delete(c.negative, kid)
	}
	var wait <-chan struct{} = c.inflight
	if c.inflight == nil {
		if now.Sub(c.lastAttempt) < c.cfg.minRefresh {
			// Rate limited: a fetch happened recently and its keys are
			// the ones we have. Never wait on the limiter.
			c.mu.Unlock()
			return nil
		}
		wait = c.startFetchLocked(false)
	}
	c.mu.Unlock()

	timer := time.NewTimer(c.cfg.fetchTimeout)
	defer timer.Stop()
	select {
	case <-wait:
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return nil
	}
	ks := c.current.Load()
	if ks == nil {
		return nil
	}
	if _, ok := ks.byKid[kid]; !ok && len(kid) <= maxNegativeKidLen {
		c.mu.Lock()
		if len(c.negative) >= maxNegativeKids {
			for k, until := range c.negative {
				if !now.Before(until) {
					delete(c.negative, k)
				}
			}
			if len(c.negative) >= maxNegativeKids {
				clear(c.negative)
			}
		}
		c.negative[kid] = c.now().Add(c.cfg.minRefresh)
		c.mu.Unlock()
	}
	return ks
}

// checkFetchURL allows https, and http only for loopback hosts unless
// insecureHTTP is set.
func checkFetchURL(u *url.URL, insecureHTTP bool) error {
	switch u.Scheme {
	case "https":
	case "http":
		if !insecureHTTP && !isLoopbackHost(u.Hostname()) {
			return fmt.Errorf("%q is plain http on a non-loopback host (use https, or set insecure_http)", u.Redacted())
		}
	default:
		return fmt.Errorf("%q: scheme must be https (or http)", u.Redacted())
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", u.Redacted())
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
