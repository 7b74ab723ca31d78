package oauth2jwt

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

const (
	// firstBackoff is the first retry delay after a failed fetch; it
	// doubles with every failure, up to min_refresh_interval.
	firstBackoff = time.Second
	// maxNegativeKids bounds the memory of kids confirmed unknown.
	maxNegativeKids = 1024
	// maxNegativeKidLen: longer kids are never remembered (they are never
	// real), they simply hit the refresh rate limit.
	maxNegativeKidLen = 256
)

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
// `caddy reload` never refetches keys. Its values are *jwksCache.
var cachePool = caddy.NewUsagePool()

// runtimeDeps are what the request path and the key caches take from their
// surroundings: the clock and, for key caches, the logger and the storage
// they keep their keys in. The zero value means the wall clock, Caddy's
// default logger at the time of logging (a pooled cache outlives the
// config that made it, and so its logger) and the config's storage.
type runtimeDeps struct {
	now func() time.Time
	log *zap.Logger
	// storage replaces the config's storage (tests); for a key cache, it
	// is the storage it was given (nil: keys are not persisted).
	storage keyStorage
	// noStorage turns key persistence off whatever the config says (the
	// inspect command, which must not touch a Caddy's storage).
	noStorage bool
}

// clockOverride, when set, is the clock of handlers whose deps name none.
// Only tests set it: integration tests cannot reach the handlers that a
// real Caddy constructs, and move their time through it instead.
var clockOverride atomic.Pointer[func() time.Time]

func (d runtimeDeps) clock() func() time.Time {
	if d.now != nil {
		return d.now
	}
	if f := clockOverride.Load(); f != nil {
		return *f
	}
	return time.Now
}

// jwksCache holds the keys of one remote key source. It owns one refresh
// goroutine, started by start and stopped by Destruct (when the last config
// using it is unloaded), and, when it persists its keys, one storage writer
// (persist.go).
type jwksCache struct {
	cfg    fetchConfig
	fetch  *fetcher
	now    func() time.Time
	logger *zap.Logger // nil: Caddy's current default logger
	store  *keyStore   // where the keys are persisted, or nil

	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	wake      chan struct{} // a fetch ended: the refresher re-reads nextAttempt
	firstDone chan struct{} // closed when the first fetch has ended, either way
	loaded    chan struct{} // closed when the stored keys were read, refused or given up on

	current atomic.Pointer[keySet]

	// Fetch counts by result, read by the metrics collector at scrape
	// time; they count from the cache's first fetch.
	successes, errs atomic.Int64

	mu          sync.Mutex
	inflight    chan struct{}  // closed when the fetch in flight ends
	fetching    sync.WaitGroup // fetch goroutines, waited for by Destruct
	lastAttempt time.Time      // start of the last fetch attempt
	nextAttempt time.Time      // when the refresher will try next
	lastErr     error
	failures    int    // consecutive failed fetches
	jwksURI     string // resolved from discovery, or the configured one
	discovery   []byte // the discovery document jwksURI was resolved from, or nil
	origin      keyOrigin
	negative    map[string]time.Time
	loggedSkips map[string]struct{}
	gen         uint64
}

// newJWKSCache makes a key cache for cfg; with deps.storage set (and not
// deps.noStorage), it persists its keys there.
func newJWKSCache(cfg fetchConfig, deps runtimeDeps) *jwksCache {
	ctx, cancel := context.WithCancel(context.Background())
	c := &jwksCache{
		cfg:         cfg,
		fetch:       newFetcher(cfg.fetchTimeout, cfg.insecureHTTP),
		now:         deps.clock(),
		logger:      deps.log,
		ctx:         ctx,
		cancel:      cancel,
		done:        make(chan struct{}),
		wake:        make(chan struct{}, 1),
		firstDone:   make(chan struct{}),
		loaded:      make(chan struct{}),
		jwksURI:     cfg.jwksURI,
		negative:    make(map[string]time.Time),
		loggedSkips: make(map[string]struct{}),
	}
	if deps.storage != nil && !deps.noStorage {
		c.store = newKeyStore(deps.storage, cfg.sourceURL())
	}
	return c
}

func (c *jwksCache) log() *zap.Logger {
	if c.logger != nil {
		return c.logger
	}
	return caddy.Log().Named("http.handlers.oauth2_jwt")
}

// start launches the refresher and, when the cache persists its keys, the
// storage writer and the read of the stored keys. The first fetch begins
// at once, in the background, alongside that read: Caddy starts even when
// the identity provider is down.
func (c *jwksCache) start() {
	go c.run()
	if c.store == nil {
		close(c.loaded)
		return
	}
	go c.runWriter()
	go c.loadStored()
}

// Destruct stops the refresher and the storage writer; it implements
// caddy.Destructor and is called by the usage pool when no loaded config
// uses this cache any more. A write to a storage that ignores cancellation
// is waited for at most storageStopWait.
func (c *jwksCache) Destruct() error {
	c.cancel()
	<-c.done
	c.fetching.Wait() // fetches started by refreshForKid or forceRefresh too
	<-c.loaded
	if c.store != nil {
		c.store.stopWriter()
	}
	c.fetch.close()
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
	c.fetching.Add(1)
	go func() {
		defer c.fetching.Done()
		defer func() {
			if r := recover(); r != nil {
				// A panic while parsing a hostile document must not take
				// Caddy down: it counts as a failed fetch.
				c.mu.Lock()
				c.failLocked(fmt.Errorf("panic while fetching keys: %v", r))
				c.mu.Unlock()
				c.log().Error("JWKS fetch panicked", zap.String("source", c.cfg.sourceURL()), zap.Any("panic", r))
			}
			c.mu.Lock()
			c.inflight = nil
			c.mu.Unlock()
			c.firstEnded()
			close(ch)
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}()
		res := c.fetchOnce(full || jwksURI == "", jwksURI)
		c.record(res)
	}()
	return ch
}

// firstEnded closes firstDone once.
func (c *jwksCache) firstEnded() {
	select {
	case <-c.firstDone:
	default:
		close(c.firstDone)
	}
}

// fetchResult is the outcome of one fetch, before it is recorded.
type fetchResult struct {
	discovered bool   // the discovery document was read
	discovery  []byte // the discovery document, when discovered
	jwksURI    string // the JWKS URL used (resolved by discovery when discovered)
	body       []byte // the JWKS document, on success
	url        string // the URL of the failing request, for logs
	ks         *keySet
	skipped    []skippedKey
	maxAge     time.Duration
	status     int
	elapsed    time.Duration
	err        error
}

// fetchOnce performs one fetch, without touching the cache's state: with
// full, through the discovery document (when configured). It is bounded by
// the fetch timeout and by the cache's lifetime.
func (c *jwksCache) fetchOnce(full bool, jwksURI string) fetchResult {
	start := c.now()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.fetchTimeout)
	defer cancel()
	res := fetchResult{jwksURI: jwksURI, url: jwksURI}
	if full && c.cfg.discoveryURI != "" {
		res.discovered, res.url = true, c.cfg.discoveryURI
		res.jwksURI, res.discovery, res.err = discover(ctx, c.fetch, c.cfg)
	}
	if res.err == nil {
		res.url = res.jwksURI
		res.body, res.status, res.maxAge, res.err = c.fetch.get(ctx, res.jwksURI)
		if res.err == nil {
			res.ks, res.skipped, res.err = parseJWKS(res.body, false)
		}
	}
	res.elapsed = c.now().Sub(start)
	return res
}

// record stores a fetch outcome: the new keys, or the failure and its
// backoff, then logs it.
func (c *jwksCache) record(res fetchResult) {
	names := providerNames(c) // before c.mu: the registry is never read under it
	c.mu.Lock()
	defer c.mu.Unlock()
	c.logSkippedLocked(res.jwksURI, res.skipped)
	if res.err != nil && c.ctx.Err() != nil {
		return // the cache is being destroyed: a cancelled fetch is no failure
	}
	if res.err != nil {
		if errors.Is(res.err, errDiscoveryRefused) {
			c.log().Error("OpenID discovery document refused; provider's tokens are answered 503 until it is fixed",
				zap.String("url", c.cfg.discoveryURI), zap.Error(res.err))
		}
		backoff := c.failLocked(res.err)
		fields := []zap.Field{
			zap.Strings("providers", names),
			zap.String("url", res.url),
			zap.String("source", c.cfg.sourceURL()),
			zap.Int("status", res.status),
			zap.Duration("duration", res.elapsed),
			zap.Error(res.err),
			zap.Duration("retry_in", backoff),
		}
		if prev := c.current.Load(); prev != nil {
			age := c.now().Sub(prev.fetchedAt)
			fields = append(fields, zap.Duration("keys_age", age), zap.Bool("keys_usable", age <= c.cfg.maxStale),
				zap.String("keys_origin", string(c.origin)))
			c.log().Warn("JWKS refresh failed; keeping the last good keys", fields...)
		} else {
			c.log().Warn("JWKS fetch failed; provider has no keys yet", fields...)
		}
		return
	}
	now := c.now()
	ks := res.ks
	ks.fetchedAt = now
	if res.discovered {
		c.jwksURI, c.discovery = res.jwksURI, res.discovery
	}
	c.origin = originNetwork
	c.failures = 0
	c.lastErr = nil
	if prev := c.current.Load(); prev != nil && prev.fingerprint == ks.fingerprint {
		ks.gen = prev.gen
	} else {
		c.gen++
		ks.gen = c.gen
	}
	c.current.Store(ks)
	c.successes.Add(1)
	c.queueStoreLocked(res.body, now)
	interval := c.nextInterval(res.maxAge)
	c.nextAttempt = now.Add(interval)
	c.log().Info("JWKS fetched",
		zap.Strings("providers", names),
		zap.String("url", res.jwksURI),
		zap.Int("status", res.status),
		zap.Int("keys", len(ks.all)),
		zap.Int("skipped", len(res.skipped)),
		zap.Duration("duration", res.elapsed),
		zap.Duration("next_refresh", interval))
}

// failLocked records a failed fetch and returns the delay before the
// next attempt: firstBackoff doubled per consecutive failure, at most
// min_refresh_interval.
func (c *jwksCache) failLocked(err error) time.Duration {
	c.failures++
	c.lastErr = err
	c.errs.Add(1)
	backoff := min(firstBackoff<<min(c.failures-1, 20), c.cfg.minRefresh)
	c.nextAttempt = c.now().Add(backoff)
	return backoff
}

// nextInterval is the delay until the next periodic refresh after a
// successful fetch: refresh_interval, else the response's max-age bounded
// to [1m, 24h], else 1h; at most half of max_stale, and up to 10% earlier
// so that many Caddy instances do not refresh in step.
func (c *jwksCache) nextInterval(maxAge time.Duration) time.Duration {
	interval := c.cfg.refreshInterval
	if interval == 0 {
		interval = time.Hour
		if maxAge > 0 {
			interval = min(max(maxAge, minDerivedRefresh), maxDerivedRefresh)
		}
		interval = min(interval, c.cfg.maxStale/2)
	}
	return interval - time.Duration(rand.Int64N(int64(interval)/10+1))
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

// cacheStatus is a snapshot of a key cache, for the admin API, the CLI and
// the metrics.
type cacheStatus struct {
	keys        *keySet   // the current keys, stale ones included; nil before the first success
	origin      keyOrigin // where keys came from
	usable      bool      // keys are present and within max_stale
	pending     bool      // no fetch has ended yet
	lastAttempt time.Time
	nextAttempt time.Time
	lastErr     error
	successes   int64
	errors      int64
	now         time.Time // the cache's clock when the snapshot was taken
	stored      storeStatus
}

// status returns a snapshot of the cache.
func (c *jwksCache) status() cacheStatus {
	now := c.now()
	st := cacheStatus{successes: c.successes.Load(), errors: c.errs.Load(), now: now}
	c.mu.Lock()
	st.keys, st.origin = c.current.Load(), c.origin
	st.lastAttempt, st.nextAttempt, st.lastErr = c.lastAttempt, c.nextAttempt, c.lastErr
	c.mu.Unlock()
	st.usable = st.keys != nil && now.Sub(st.keys.fetchedAt) <= c.cfg.maxStale
	if c.store != nil {
		st.stored = c.store.status()
	}
	select {
	case <-c.firstDone:
	default:
		st.pending = true
	}
	return st
}

// awaitFirstFetch waits until the cache's first fetch has ended (with keys
// or with an error), or ctx is done.
func (c *jwksCache) awaitFirstFetch(ctx context.Context) error {
	select {
	case <-c.firstDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keysAt implements keySource.
func (c *jwksCache) keysAt(now time.Time) (*keySet, *authError) {
	ks := c.current.Load()
	if ks != nil && now.Sub(ks.fetchedAt) <= c.cfg.maxStale {
		return ks, nil
	}
	c.mu.Lock()
	wait := c.nextAttempt.Sub(now)
	c.mu.Unlock()
	detail := "keys never loaded"
	if ks != nil {
		detail = "keys older than max_stale"
	}
	return nil, &authError{step: stepKeys, reason: reasonUnavailable, detail: detail, retryAfter: int((wait + time.Second - 1) / time.Second)}
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

// keys is keysAt on the cache's own clock.
func (c *jwksCache) keys() (*keySet, *authError) { return c.keysAt(c.now()) }
