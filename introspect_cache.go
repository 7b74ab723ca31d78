package oauth2jwt

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// introShared is the part of an introspector that may outlive its
// config: the answers, the rate limit and the calls in flight.
type introShared struct {
	cache  *introCache
	limit  *tokenBucket
	flight flightGroup
}

func newIntroShared(c *introspectConfig, now time.Time) *introShared {
	return &introShared{cache: newIntroCache(c.size), limit: newTokenBucket(c.rate, now)}
}

// Destruct implements caddy.Destructor: the shared state holds memory
// only.
func (*introShared) Destruct() error { return nil }

// introPool shares introspection state across handlers and config
// reloads, as replayPool does for DPoP proofs: a `caddy reload` keeps the
// cached answers (no burst of calls to the endpoint, no answer forgotten)
// and max_rate stays one budget per endpoint and client. Only handlers
// that would cache the very same facts share an entry: see introPoolKey.
var introPool = caddy.NewUsagePool()

// introPoolKey names the state an introspector of provider p may share:
// the provider's identity (name, issuer), the endpoint and client that
// ask, and everything that decides what an answer becomes when it is
// cached (the audiences, the leeway, allow_missing_audience, the signed
// answer and its algorithms, the TTLs, the cache size and max_rate). A
// reload that changes any of them starts afresh; one that changes only
// a route's require rules, or the client secret, keeps the answers.
func introPoolKey(p *provider) string {
	c := p.intro.cfg
	endpoint := c.endpoint
	if endpoint == "" {
		endpoint = "discovery " + c.discoveryURI
	}
	return strings.Join([]string{"oauth2_jwt|introspection", p.name, p.issuer, endpoint, c.clientID,
		strings.Join(p.audiences, "\x01"), p.leeway.String(), fmt.Sprint(p.allowNoAud),
		fmt.Sprint(c.jwtResponse), fmt.Sprint(uint64(p.algs)), c.cacheTTL.String(), c.negativeTTL.String(),
		fmt.Sprint(c.size), fmt.Sprint(c.rate)}, "\x00")
}

// acquire swaps the introspector's own state for the pooled one of its
// key; close gives it back. Provision calls it, once.
func (in *introspector) acquire(p *provider) {
	key := introPoolKey(p)
	own := in.introShared
	val, _, _ := introPool.LoadOrNew(key, func() (caddy.Destructor, error) { return own, nil })
	in.introShared, in.lease = val.(*introShared), key
}

// release gives back the pooled state, once.
func (in *introspector) release() {
	if in.lease == "" {
		return
	}
	_, _ = introPool.Delete(in.lease)
	in.lease = ""
}

// introCache remembers introspection answers of one provider, keyed by
// the SHA-256 of the token: the token itself is never kept. It holds
// facts, never decisions: the require rules of each route run on every
// request. Bounded by entry count; when full, expired entries met first
// are dropped, else an arbitrary one (Go's map order is random).
type introCache struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]*introEntry
}

// introEntry is one cached answer: either the claims of an active token
// or the refusal an answer implied (inactive, another audience, ...).
// Entries are immutable once stored.
type introEntry struct {
	claims  *Claims
	refusal *authError
	// until is when the entry stops being fresh: for a positive answer
	// min(exp+leeway, fetched+cache_ttl), for a refusal fetched+
	// negative_ttl. Past it the endpoint is asked again.
	until time.Time
	// hardUntil is how long a positive answer may be served while the
	// endpoint cannot answer: its exp (plus leeway), or, for an answer
	// without exp, fetched+cache_ttl (faults or not).
	hardUntil time.Time
}

// positiveEntry makes the entry of an active answer fetched at at.
func positiveEntry(c *Claims, at time.Time, ttl time.Duration) *introEntry {
	e := &introEntry{claims: c, until: at.Add(ttl)}
	if c.expiry.IsZero() {
		e.hardUntil = e.until
	} else {
		e.hardUntil = c.notAfter
		if e.hardUntil.Before(e.until) {
			e.until = e.hardUntil
		}
	}
	return e
}

// expired reports whether the entry is of no use at now.
func (e *introEntry) expired(now time.Time) bool {
	if e.claims != nil {
		return !now.Before(e.hardUntil)
	}
	return !now.Before(e.until)
}

func newIntroCache(size int) *introCache {
	return &introCache{max: size, m: make(map[[32]byte]*introEntry)}
}

func (c *introCache) get(key [32]byte) *introEntry {
	c.mu.Lock()
	e := c.m[key]
	c.mu.Unlock()
	return e
}

// put stores an entry, evicting to stay within the bound.
func (c *introCache) put(key [32]byte, e *introEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		evicted, seen := false, 0
		for k, old := range c.m {
			if old.expired(now) {
				delete(c.m, k)
				evicted = true
			}
			if seen++; seen >= 8 {
				break
			}
		}
		if !evicted {
			for k := range c.m {
				delete(c.m, k)
				break
			}
		}
	}
	c.m[key] = e
}

// len returns the number of entries.
func (c *introCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// tokenBucket limits introspection calls to rate per second, with a
// burst of one second's worth (at least 1). It reads the injected clock.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, now time.Time) *tokenBucket {
	burst := max(rate, 1)
	return &tokenBucket{rate: rate, burst: burst, tokens: burst, last: now}
}

// take takes one call. When none is left it reserves the next one if it
// comes within maxWait, returning how long to wait; else it reports
// false and how long until a call is free.
func (b *tokenBucket) take(now time.Time, maxWait time.Duration) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	wait := time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
	if wait > maxWait {
		return wait, false
	}
	b.tokens--
	return wait, true
}

// flightGroup makes concurrent first uses of one token share one call.
type flightGroup struct {
	mu     sync.Mutex
	m      map[[32]byte]*flight
	joined atomic.Int64 // callers that waited on another's call (tests)
}

type flight struct {
	done chan struct{}
	res  flightResult
}

type flightResult struct {
	claims  *Claims
	refusal *authError
	fault   *introFault
}

// do runs fn once for every caller with key that arrives while it runs.
func (g *flightGroup) do(key [32]byte, fn func() flightResult) flightResult {
	g.mu.Lock()
	if f, ok := g.m[key]; ok {
		g.mu.Unlock()
		g.joined.Add(1)
		<-f.done
		return f.res
	}
	if g.m == nil {
		g.m = make(map[[32]byte]*flight)
	}
	f := &flight{done: make(chan struct{})}
	g.m[key] = f
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.m, key)
		g.mu.Unlock()
		close(f.done)
	}()
	f.res = fn()
	return f.res
}
