package oauth2jwt

import (
	"sync"
	"time"
)

// defaultCacheSize is the default bound of the verified-token cache.
const defaultCacheSize = 10000

// tokenCacheShards spreads the cache over independently locked maps, so
// concurrent requests do not contend on one lock.
const tokenCacheShards = 64

// tokenCache remembers tokens that passed every check, so that a client
// reusing its access token (the common case) costs a map look-up instead of
// a signature verification. It is per handler, because the policy that
// accepted a token (audiences, algorithms, leeway) is per handler.
//
// Keys are the full token strings, so two different tokens never collide.
// An entry is used only while:
//   - the token is within its exp (plus leeway) and nbf/iat (minus leeway),
//     checked on every hit;
//   - the provider's key set is the one that verified it (generation
//     match): a refresh that changes the keys invalidates every entry, so
//     a token signed by a removed key is refused after that refresh;
//   - the provider's keys are usable at all (not past max_stale).
type tokenCache struct {
	perShard int
	nShards  uint // tokenCacheShards, or fewer for a cache smaller than that
	shards   [tokenCacheShards]tokenShard
}

type tokenShard struct {
	mu sync.RWMutex
	m  map[string]*cachedToken
	_  [40]byte // keep shards on separate cache lines
}

// cachedToken is one verified token.
type cachedToken struct {
	claims *Claims
	p      *provider
	gen    uint64 // key set generation that verified it
}

func newTokenCache(size int) *tokenCache {
	if size <= 0 {
		return nil
	}
	n := min(size, tokenCacheShards)
	c := &tokenCache{nShards: uint(n), perShard: (size + n - 1) / n}
	for i := range c.nShards {
		c.shards[i].m = make(map[string]*cachedToken)
	}
	return c
}

// shard picks a token's shard from the last two characters of its
// signature, which are uniformly distributed for real signatures, instead
// of hashing the whole token a second time (the map look-up hashes it
// once). Only verified tokens are ever stored, so a client cannot crowd one
// shard without holding many valid tokens.
func (c *tokenCache) shard(token string) *tokenShard {
	n := len(token)
	if n < 2 {
		return &c.shards[0]
	}
	return &c.shards[(uint(token[n-1])*31+uint(token[n-2]))%c.nShards]
}

// get returns the cached entry for token when it may still be used at now.
func (c *tokenCache) get(token string, now time.Time) *cachedToken {
	s := c.shard(token)
	s.mu.RLock()
	e := s.m[token]
	s.mu.RUnlock()
	if e == nil || !now.Before(e.claims.notAfter) || now.Before(e.claims.notBefore) {
		return nil
	}
	return e
}

// put stores a verified token. When the shard is full, it drops expired
// entries it meets first, else an arbitrary one (Go's map iteration order
// is random), which bounds memory at the configured entry count. It
// reports whether it evicted an entry.
func (c *tokenCache) put(token string, e *cachedToken, now time.Time) (evicted bool) {
	s := c.shard(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[token]; !ok && len(s.m) >= c.perShard {
		seen := 0
		for k, old := range s.m {
			if !now.Before(old.claims.notAfter) {
				delete(s.m, k)
				evicted = true
			}
			if seen++; seen >= 8 {
				break
			}
		}
		if !evicted {
			for k := range s.m {
				delete(s.m, k)
				evicted = true
				break
			}
		}
	}
	s.m[token] = e
	return evicted
}

// len returns the number of entries (for tests and metrics).
func (c *tokenCache) len() int {
	n := 0
	for i := range c.nShards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
