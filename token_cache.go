package oauth2jwt

import (
	"crypto/sha256"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
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
// An entry is found by the token's 64-bit maphash (one hash per look-up,
// under a seed drawn per cache, so nobody can aim tokens at one shard or
// one index cell) and used only when the request's token is the entry's:
// an entry keeps the token's SHA-256 digest (32 bytes where the token is
// about a kilobyte), which a hit compares by hashing the request's token
// (about 0.9 us a kilobyte); an entry hit promoteHits times (its hit
// count, halved with the sketch, measures recent use) stores a copy of
// the token, which later hits compare byte for byte. So the tokens in
// steady use cost a comparison per request, and the many entries of a
// cache under churn, hit now and then, cost 32 bytes instead of a token.
// Two tokens share an entry only if they collide under SHA-256, which
// nobody knows how to bring about. It is used only while:
//   - the token is within its exp (plus leeway) and nbf/iat (minus leeway),
//     checked on every hit;
//   - the provider's key set is the one that verified it (generation
//     match): a refresh that changes the keys invalidates every entry, so
//     a token signed by a removed key is refused after that refresh;
//   - the provider's keys are usable at all (not past max_stale).
//
// Each shard holds at most its share of the bound (the shares add up to
// cache_size exactly) in a CLOCK ring: a hit sets the entry's reference
// bit and counts the hit (atomically, under the read lock, and only
// until the count saturates, so a hot entry's cache line is not written
// on every hit); the hand of a full ring moves past referenced entries,
// clearing their bits (their second chance), and settles on the first
// entry that is unreferenced or expired. Each step of the hand clears a
// bit that only a hit sets again, so this costs O(1) amortised and never
// scans the map.
//
// A full shard admits a new token only when it is used more often than
// the entry the hand settled on (TinyLFU, as in Caffeine and Ristretto):
// each shard counts the tokens it is offered in a count-min sketch, and
// an entry's frequency is its sketch count plus its hits; every
// agingFactor x limit offers, the counts are halved, so old popularity
// fades. An expired victim is always replaced, and so is one whose key
// set has changed. Without this, more distinct tokens in rotation than
// the cache holds would replace every entry before its next use (no hits
// at all); with it, the cache keeps a stable part of them and hits on
// those. A new token in a full cache is
// admitted after a few uses, once it outweighs an unused entry.
type tokenCache struct {
	seed    maphash.Seed
	nShards uint64 // tokenCacheShards, or fewer for a cache smaller than that
	shards  [tokenCacheShards]tokenShard
}

// tokenShard is one independently locked part of the cache.
//
// Its index is an open-addressing table (linear probing from the hash's
// low bits, at most half full) of ring positions plus one, 0 marking an
// empty cell: a look-up costs a few int32 reads past the one hash of the
// token, where a Go map keyed by the hash would hash it once more. A
// removal shifts the cells after it back (no tombstones), so a table
// that only ever sees evictions never degrades.
type tokenShard struct {
	mu    sync.RWMutex
	index []int32     // len a power of two, at least twice len(ring)
	ring  []cacheSlot // grows up to limit, then is reused in place
	hand  int         // the next eviction candidate in a full ring
	limit int         // this shard's share of cache_size
	// sketch holds sketchRows rows of counters of the tokens offered
	// (put), each row a power of two long; offers counts them since the
	// last halving. Written under the write lock only.
	sketch []uint8
	offers int
	_      [8]byte // keep shards on separate cache lines (128 bytes each)
}

// The frequency sketch: sketchRows counters per token, each at most
// sketchMax; a row has sketchWidth counters per entry of the shard's
// limit (rounded up to a power of two), so that collisions rarely
// inflate a count; the counts are halved every agingFactor x limit
// offers.
const (
	sketchRows  = 4
	sketchMax   = 15
	sketchWidth = 8
	agingFactor = 20
)

// cacheSlot is one ring position: the hash the index knows it by, its
// entry, its recent hits (the admission weight) and the reference bit.
type cacheSlot struct {
	hash uint64
	e    *cachedToken
	hits atomic.Uint32 // hits since stored, up to sketchMax, halved with the sketch
	ref  atomic.Bool   // set by a hit, cleared by the passing hand
}

// cachedToken is one verified token: what a hit needs and nothing more.
// The claims are held by value, so that an entry is one allocation.
type cachedToken struct {
	digest tokenDigest // of the token
	// token is a copy of the token, stored once the entry is in steady
	// use (nil until then); a hit compares it instead of hashing.
	token  atomic.Pointer[string]
	p      *provider
	gen    uint64 // key set generation that verified it
	claims Claims
}

// newTokenCache returns a cache of exactly size entries, or nil for a
// size of zero or less (the cache is disabled).
func newTokenCache(size int) *tokenCache {
	if size <= 0 {
		return nil
	}
	n := min(size, tokenCacheShards)
	c := &tokenCache{seed: maphash.MakeSeed(), nShards: uint64(n)}
	for i := range n {
		s := &c.shards[i]
		s.limit = size / n
		if i < size%n {
			s.limit++
		}
		w := 16
		for w < sketchWidth*s.limit {
			w *= 2
		}
		s.sketch = make([]uint8, sketchRows*w)
	}
	return c
}

// tokenDigest is the SHA-256 digest of a token.
type tokenDigest [sha256.Size]byte

// tokenDigestOf returns token's digest. The hash reads the string's bytes in
// place (it neither keeps nor writes them): converting a kilobyte token
// to a []byte would copy it to the heap on every request.
func tokenDigestOf(token string) tokenDigest {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}

// locate hashes token and returns its shard. The shard is picked from
// the hash's high 32 bits by multiplication (uniform for any shard
// count); the index, keyed by the whole hash, spreads on its low bits.
// maphash.Comparable hashes a string in one pass of the runtime's hasher
// (maphash.String chains it over 128-byte blocks: three times slower on a
// 900-byte token).
func (c *tokenCache) locate(token string) (uint64, *tokenShard) {
	h := maphash.Comparable(c.seed, token)
	return h, &c.shards[((h>>32)*c.nShards)>>32]
}

// get returns the cached entry for token when it may still be used at now.
// The entry is taken under the read lock and checked after it: hashing a
// token to compare digests takes about a microsecond, which stores into
// the shard need not wait for. An entry's fields are immutable (its copy
// of the token is atomic), so it can be read after an eviction.
func (c *tokenCache) get(token string, now time.Time) *cachedToken {
	h, s := c.locate(token)
	var e *cachedToken
	var keep bool
	s.mu.RLock()
	if _, i := s.find(h); i >= 0 {
		sl := &s.ring[i]
		e, keep = sl.e, sl.hits.Load() >= promoteHits
		// Read first: a hot entry's cache line is not written on every
		// hit. Concurrent hits may count once: the count is an
		// estimate. (Another token of the same 64-bit hash would count
		// here too, with odds of 2^-64: harmless.)
		if !sl.ref.Load() {
			sl.ref.Store(true)
		}
		if n := sl.hits.Load(); n < sketchMax {
			sl.hits.Store(n + 1)
		}
	}
	s.mu.RUnlock()
	if e == nil || !e.is(token, keep) || !now.Before(e.claims.notAfter) || now.Before(e.claims.notBefore) {
		return nil
	}
	return e
}

// promoteHits is the hit count from which a hit stores the token's copy.
const promoteHits = 8

// is reports whether token is the entry's: equal to its copy, or, until
// one is stored, of its digest. With keep, a match stores the copy
// (concurrent hits store one of theirs, all equal).
func (e *cachedToken) is(token string, keep bool) bool {
	if t := e.token.Load(); t != nil {
		return *t == token
	}
	if tokenDigestOf(token) != e.digest {
		return false
	}
	if keep {
		// The request's token is a substring of a header, a cookie or
		// the query, which the cache must not keep alive.
		t := strings.Clone(token)
		e.token.CompareAndSwap(nil, &t)
	}
	return true
}

// put offers a verified token, with the provider, key set generation and
// claims that verified it. A shard that is not full stores it; a full
// one replaces the entry its CLOCK hand settles on if that one is used
// less often than this token or cannot be used (expired, or its key set
// changed), and otherwise keeps it. The entry is made (newCachedToken)
// only when it is stored: under churn most offers are not, and they cost
// no digest and no compact copy. put returns the stored entry, or nil,
// and whether another entry was dropped for it.
func (c *tokenCache) put(token string, p *provider, gen uint64, claims *Claims, now time.Time) (e *cachedToken, evicted bool) {
	h, s := c.locate(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	freq := s.offer(h)
	pos, i := s.find(h)
	if i >= 0 {
		// The same token verified again (a generation change, or two
		// concurrent misses), or, with odds of 2^-64 under a secret seed,
		// another token of the same hash: either way the slot is reused.
		sl := &s.ring[i]
		e = newCachedToken(token, p, gen, claims)
		evicted = sl.e.digest != e.digest
		sl.e = e
		return e, evicted
	}
	if len(s.ring) < s.limit {
		if 2*(len(s.ring)+1) > len(s.index) {
			s.growIndex()
			pos, _ = s.find(h)
		}
		if len(s.ring) == cap(s.ring) {
			s.grow()
		}
		e = newCachedToken(token, p, gen, claims)
		s.ring = append(s.ring, cacheSlot{hash: h, e: e})
		s.index[pos] = int32(len(s.ring))
		return e, false
	}
	i = s.victim(now)
	sl := &s.ring[i]
	if sl.e.usable(now) && !admits(freq, s.frequency(sl)) {
		return nil, false
	}
	e = newCachedToken(token, p, gen, claims)
	old, _ := s.find(sl.hash)
	s.unindex(old)
	sl.hash, sl.e = h, e
	sl.ref.Store(false)
	sl.hits.Store(0)
	// The removal may have moved cells: probe again.
	pos, _ = s.find(h)
	s.index[pos] = int32(i + 1)
	return e, true
}

// usable reports whether a hit on the entry could be accepted at now
// without verifying the token again: it has not expired, and its
// provider's keys are usable and still the set that verified it. An
// entry that is not usable makes room for any token: a token whose key
// set changed is verified again on its next use anyway (and stored
// again, in its own slot if it still has it).
func (e *cachedToken) usable(now time.Time) bool {
	if !now.Before(e.claims.notAfter) {
		return false
	}
	if e.p == nil || e.p.keys == nil {
		return true
	}
	ks, aerr := e.p.keys.keysAt(now)
	return aerr == nil && ks.gen == e.gen
}

// admits reports whether a token offered freq times outweighs a victim
// of frequency victim: strictly more often (ties keep the entry, so that
// tokens in rotation do not replace one another), or saturated, so that
// a token in heavy use gets in without waiting for the counts to age.
func admits(freq, victim int) bool {
	return freq > victim || freq == sketchMax
}

// frequency returns a stored entry's weight against a new token: its
// sketch count plus its hits, at most sketchMax.
func (s *tokenShard) frequency(sl *cacheSlot) int {
	return min(s.count(sl.hash, false)+int(sl.hits.Load()), sketchMax)
}

// offer counts one offer of hash h and returns its count. It halves
// every count, and the entries' hits, every agingFactor x limit offers.
func (s *tokenShard) offer(h uint64) int {
	n := s.count(h, true)
	if s.offers++; s.offers >= agingFactor*s.limit {
		s.offers = 0
		for i := range s.sketch {
			s.sketch[i] >>= 1
		}
		for i := range s.ring {
			sl := &s.ring[i]
			sl.hits.Store(sl.hits.Load() >> 1)
		}
	}
	return n
}

// count returns the count of hash h, the least of its sketchRows
// counters, and with add first increments those counters that hold that
// least value (a conservative update: counters another token inflated
// are left alone).
func (s *tokenShard) count(h uint64, add bool) int {
	w := len(s.sketch) / sketchRows
	var cells [sketchRows]int
	least := uint8(sketchMax)
	for r := range sketchRows {
		// A different mix of the seeded hash for each row.
		x := (h ^ uint64(r+1)*0x9e3779b97f4a7c15) * 0xff51afd7ed558ccd
		x ^= x >> 33
		cells[r] = r*w + int(x&uint64(w-1))
		least = min(least, s.sketch[cells[r]])
	}
	if !add || least == sketchMax {
		return int(least)
	}
	for _, i := range cells {
		if s.sketch[i] == least {
			s.sketch[i]++
		}
	}
	return int(least) + 1
}

// find probes the index for hash h. It returns the cell that holds h and
// h's ring position, or, when h is absent, the empty cell that ends the
// probe (where h would go) and -1. The index is at most half full, so a
// probe ends well within one turn; the turn bounds it all the same.
func (s *tokenShard) find(h uint64) (cell, slot int) {
	mask := uint64(len(s.index) - 1)
	i := h & mask
	for range s.index {
		j := s.index[i]
		if j == 0 {
			return int(i), -1
		}
		if s.ring[j-1].hash == h {
			return int(i), int(j - 1)
		}
		i = (i + 1) & mask
	}
	return -1, -1
}

// unindex empties cell i and shifts back the cells of the probe run after
// it that may move into the hole: those whose home cell does not lie
// cyclically in (hole, cell].
func (s *tokenShard) unindex(i int) {
	mask := len(s.index) - 1
	for j := (i + 1) & mask; s.index[j] != 0; j = (j + 1) & mask {
		home := int(s.ring[s.index[j]-1].hash & uint64(mask))
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			s.index[i] = s.index[j]
			i = j
		}
	}
	s.index[i] = 0
}

// growIndex doubles the index (16 cells at first) and re-inserts every
// ring position: amortised O(1) per stored token, and only while the
// shard fills up.
func (s *tokenShard) growIndex() {
	s.index = make([]int32, max(2*len(s.index), 16))
	for i := range s.ring {
		cell, _ := s.find(s.ring[i].hash)
		s.index[cell] = int32(i + 1)
	}
}

// grow doubles the ring's capacity, never past the shard's limit, so a
// full shard holds no spare slots.
func (s *tokenShard) grow() {
	n := min(max(2*cap(s.ring), 8), s.limit)
	ring := make([]cacheSlot, len(s.ring), n)
	for i := range s.ring {
		o := &s.ring[i]
		ring[i] = cacheSlot{hash: o.hash, e: o.e}
		ring[i].ref.Store(o.ref.Load())
		ring[i].hits.Store(o.hits.Load())
	}
	s.ring = ring
}

// victim advances the hand of a full ring to the slot to replace: the
// first one that is expired, or unreferenced; referenced slots passed on
// the way lose their bit. It ends within one turn of the ring, since the
// hand clears every bit it passes (hits need the read lock, which the
// caller's write lock excludes).
func (s *tokenShard) victim(now time.Time) int {
	for {
		i := s.hand
		if s.hand++; s.hand == len(s.ring) {
			s.hand = 0
		}
		sl := &s.ring[i]
		if !sl.ref.Load() || !now.Before(sl.e.claims.notAfter) {
			return i
		}
		sl.ref.Store(false)
	}
}

// len returns the number of entries (for tests and metrics).
func (c *tokenCache) len() int {
	n := 0
	for i := range c.nShards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.ring)
		s.mu.RUnlock()
	}
	return n
}

// newCachedToken returns the cache entry of a verified token: its
// digest (not the token: a substring of a header, a cookie or the query,
// which the cache must not keep alive), its claims compacted (same
// members, less memory) and with their own replacer function value. The
// request that verified the token uses the entry's claims too.
func newCachedToken(token string, p *provider, gen uint64, c *Claims) *cachedToken {
	e := &cachedToken{digest: tokenDigestOf(token), p: p, gen: gen, claims: *c}
	e.claims.compact()
	e.claims.replaceFn = e.claims.replace
	return e
}
