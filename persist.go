package oauth2jwt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// Keys across restarts and fleets: a remote key cache keeps the last good
// key set of its source in Caddy's storage (the config's `storage` module:
// the file system by default, or one shared by a fleet), and a new cache
// starts from it while its first fetch is under way. Stored keys go
// through parseJWKS like fetched ones, and their age counts from the time
// they were fetched, so max_stale bounds them across restarts too.

const (
	// storagePrefix is where entries are kept, one per key source URL.
	storagePrefix = "oauth2_jwt/keys/"
	// storedVersion is the entry format.
	storedVersion = 1
	// storageLoadTimeout bounds the read of the stored keys: a failing or
	// hanging storage delays a start by at most this much.
	storageLoadTimeout = 2 * time.Second
	// storageWriteTimeout bounds one write (for storages that honour the
	// context); the writer never holds more than the newest entry.
	storageWriteTimeout = 10 * time.Second
	// storageStopWait bounds how long Destruct waits for a write under way.
	storageStopWait = 2 * time.Second
	// slowStorageMemory is how long a storage that timed out is not waited
	// for again, so that a config with many handlers (each provisioned in
	// turn) or key caches is delayed by one timeout, not one per handler.
	slowStorageMemory = time.Minute
	// maxStoredSize caps an entry: a JWKS and a discovery document, each
	// at most maxBodySize, and the envelope.
	maxStoredSize = 2*maxBodySize + 64<<10
	// maxStoredClockSkew is how far in the future a stored fetch time may
	// be (clocks of a fleet differ); further, the entry is refused.
	maxStoredClockSkew = time.Minute
)

// keyStorage is the part of certmagic.Storage (what caddy.Context.Storage
// returns) that persisting keys uses.
type keyStorage interface {
	Load(ctx context.Context, key string) ([]byte, error)
	Store(ctx context.Context, key string, value []byte) error
}

// keyOrigin says where a cache's current keys came from.
type keyOrigin string

const (
	originNetwork keyOrigin = "network"
	originStorage keyOrigin = "storage"
)

// storedKeys is the entry kept in storage for one key source. It holds
// public keys and public metadata only: private key members a provider
// might publish by mistake are removed before writing.
type storedKeys struct {
	Version   int             `json:"version"`
	Source    string          `json:"source"`     // the discovery or JWKS URL the cache fetches from
	FetchedAt time.Time       `json:"fetched_at"` // when these keys were last fetched successfully
	JWKSURI   string          `json:"jwks_uri"`   // the JWKS URL (resolved by discovery)
	Discovery json.RawMessage `json:"discovery,omitempty"`
	JWKS      json.RawMessage `json:"jwks"`
}

// storageKey is the storage key of a source's entry: it depends on the
// URL only, so changing max_stale or any other timing keeps the entry.
func storageKey(sourceURL string) string {
	sum := sha256.Sum256([]byte(sourceURL))
	return storagePrefix + hex.EncodeToString(sum[:]) + ".json"
}

// persistStorage returns the storage h's key caches persist to: a test's,
// the config's, or nil when persistence is off for the whole handler.
func (h *Handler) persistStorage(ctx caddy.Context) keyStorage {
	switch {
	case h.deps.noStorage:
		return nil
	case h.deps.storage != nil:
		return h.deps.storage
	}
	return contextStorage(ctx)
}

// contextStorage returns the storage of the config ctx belongs to, or nil
// for a Context not made from a config (tests build such bare contexts, on
// which caddy.Context.Storage panics).
func contextStorage(ctx caddy.Context) (s keyStorage) {
	defer func() {
		if recover() != nil {
			s = nil
		}
	}()
	if st := ctx.Storage(); st != nil {
		return st
	}
	return nil
}

// storageID names a storage for the key cache pool: caches persisting to
// different storages are different caches. A storage that describes
// itself (certmagic's FileStorage gives its path) is the same across
// reloads; one that does not is named by its identity, so each config load
// gets its own cache, which starts from the stored keys (an address can
// be reused once the storage is gone, which at worst makes a new storage
// look recently slow). The name is hashed: it is never shown, and a
// description might hold a credential.
func storageID(s keyStorage) string {
	if s == nil {
		return "none"
	}
	var id string
	if str, ok := s.(fmt.Stringer); ok {
		id = fmt.Sprintf("%T:%s", s, str.String())
	} else if v := reflect.ValueOf(s); v.Kind() == reflect.Pointer {
		id = fmt.Sprintf("%T@%x", s, v.Pointer())
	} else {
		id = fmt.Sprintf("%T", s)
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:8])
}

// keyStore is a key cache's link to storage: its entry's key and the
// state of its one writer goroutine, fed through a "latest wins" slot, so
// a slow storage never queues writes nor holds more than one entry.
type keyStore struct {
	storage keyStorage
	id      string // storageID(storage)
	key     string
	kick    chan struct{} // capacity 1: an entry is pending
	done    chan struct{} // closed when the writer has stopped

	writes, writeErrs atomic.Int64

	mu         sync.Mutex
	pending    *storedKeys // the newest entry not yet written, or nil
	lastStored time.Time   // the fetch time of the last entry written
	lastErr    error       // the last write's error, nil after a success
}

func newKeyStore(s keyStorage, sourceURL string) *keyStore {
	return &keyStore{storage: s, id: storageID(s), key: storageKey(sourceURL), kick: make(chan struct{}, 1), done: make(chan struct{})}
}

// slowStorages maps the ids of storages that timed out (a read at start,
// or a write at stop) to when, on the wall clock: it measures real waiting.
var slowStorages sync.Map

// recentlySlow reports whether this storage timed out within
// slowStorageMemory.
func (s *keyStore) recentlySlow() bool {
	t, ok := slowStorages.Load(s.id)
	return ok && time.Since(t.(time.Time)) < slowStorageMemory
}

// markSlow records that this storage timed out, and forgets old records.
func (s *keyStore) markSlow() {
	now := time.Now()
	slowStorages.Range(func(id, t any) bool {
		if now.Sub(t.(time.Time)) >= slowStorageMemory {
			slowStorages.Delete(id)
		}
		return true
	})
	slowStorages.Store(s.id, now)
}

// storeStatus is a snapshot of a keyStore, for the admin API and metrics.
type storeStatus struct {
	enabled    bool
	key        string
	lastStored time.Time
	lastErr    error
	writes     int64
	errors     int64
}

func (s *keyStore) status() storeStatus {
	st := storeStatus{enabled: true, key: s.key, writes: s.writes.Load(), errors: s.writeErrs.Load()}
	s.mu.Lock()
	st.lastStored, st.lastErr = s.lastStored, s.lastErr
	s.mu.Unlock()
	return st
}

// stopWriter waits for the writer to stop (the cache's context is
// cancelled), at most storageStopWait, and not at all for a storage that
// recently hung: a config with many key caches on a hanging storage stops
// within one timeout. The writer ends by itself whenever the storage
// answers.
func (s *keyStore) stopWriter() {
	if s.recentlySlow() {
		return
	}
	t := time.NewTimer(storageStopWait)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		s.markSlow()
	}
}

// queueStoreLocked hands the keys of a successful fetch to the writer,
// replacing any entry it has not written yet; it never blocks (it runs
// under c.mu, on the path of requests waiting for an unknown-kid refresh).
func (c *jwksCache) queueStoreLocked(jwks []byte, fetchedAt time.Time) {
	s := c.store
	if s == nil {
		return
	}
	e := &storedKeys{Version: storedVersion, Source: c.cfg.sourceURL(), FetchedAt: fetchedAt, JWKSURI: c.jwksURI, JWKS: jwks}
	if c.cfg.discoveryURI != "" {
		if c.discovery == nil {
			return // cannot happen: a JWKS URL is only known from a discovery document
		}
		e.Discovery = c.discovery
	}
	s.mu.Lock()
	s.pending = e
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// runWriter is the storage writer: it writes the pending entry whenever
// there is one, until the cache is destroyed.
func (c *jwksCache) runWriter() {
	s := c.store
	defer close(s.done)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-s.kick:
		}
		s.mu.Lock()
		e := s.pending
		s.pending = nil
		s.mu.Unlock()
		if e != nil {
			c.write(e)
		}
	}
}

// write stores one entry. A failure is logged as a warning once per
// streak of failures (then at debug level), so a storage that stays broken
// costs one line, not one per refresh.
func (c *jwksCache) write(e *storedKeys) {
	s := c.store
	data, err := encodeStored(e)
	if err == nil {
		ctx, cancel := context.WithTimeout(c.ctx, storageWriteTimeout)
		err = safeStore(ctx, s.storage, s.key, data)
		cancel()
	}
	if err != nil && c.ctx.Err() != nil {
		return // the cache is being destroyed; nothing to report
	}
	s.mu.Lock()
	first := s.lastErr == nil
	if err == nil {
		s.lastStored, s.lastErr = e.FetchedAt, nil
	} else {
		s.lastErr = err
	}
	s.mu.Unlock()
	if err == nil {
		s.writes.Add(1)
		c.log().Debug("JWKS stored", zap.String("source", e.Source), zap.String("storage_key", s.key), zap.Time("fetched_at", e.FetchedAt))
		return
	}
	s.writeErrs.Add(1)
	log := c.log().Debug
	if first {
		log = c.log().Warn
	}
	log("could not store the JWKS; a Caddy starting while the provider is down will have no keys for it",
		zap.String("source", e.Source), zap.String("storage_key", s.key), zap.Error(err))
}

// safeStore is storage.Store with a panic (a broken storage module) turned
// into an error.
func safeStore(ctx context.Context, st keyStorage, key string, data []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("storage panicked: %v", r)
		}
	}()
	return st.Store(ctx, key, data)
}

// encodeStored serializes an entry, with private key members removed.
func encodeStored(e *storedKeys) ([]byte, error) {
	pub, err := publicJWKS(e.JWKS)
	if err != nil {
		return nil, err
	}
	out := *e
	out.JWKS = pub
	data, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encoding stored keys: %w", err)
	}
	return data, nil
}

// privateJWKMembers are the JWK members of private and symmetric keys
// (RFC 7518 sections 6.2.2, 6.3.2 and 6.4.1; RFC 8037 section 2).
var privateJWKMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// publicJWKS returns the JWK Set with every private member removed, so
// nothing secret is ever stored, even from a provider that publishes
// private keys by mistake (whose public halves are the ones used). Keys
// without private members are kept byte for byte; members of the set
// other than "keys" are dropped.
func publicJWKS(data []byte) ([]byte, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("decoding JWK set: %w", err)
	}
	for i, raw := range doc.Keys {
		var members map[string]json.RawMessage
		if json.Unmarshal(raw, &members) != nil {
			continue // not an object: parseJWKS skips it again on load
		}
		changed := false
		for _, m := range privateJWKMembers {
			if _, ok := members[m]; ok {
				delete(members, m)
				changed = true
			}
		}
		if changed {
			b, err := json.Marshal(members)
			if err != nil {
				return nil, fmt.Errorf("encoding JWK: %w", err)
			}
			doc.Keys[i] = b
		}
	}
	return json.Marshal(doc)
}

// loadStored reads the cache's entry, bounded by storageLoadTimeout
// whether or not the storage honours its context, and installs the keys
// unless they are refused or the network fetch has already brought keys.
// It closes c.loaded when done. The read runs in a goroutine of its own
// that is abandoned (and ends whenever the storage answers) on timeout.
func (c *jwksCache) loadStored() {
	defer close(c.loaded)
	s := c.store
	type loadResult struct {
		data []byte
		err  error
	}
	got := make(chan loadResult, 1)
	ctx, cancel := context.WithTimeout(c.ctx, storageLoadTimeout)
	defer cancel()
	go func() {
		defer func() {
			if r := recover(); r != nil {
				got <- loadResult{err: fmt.Errorf("storage panicked: %v", r)}
			}
		}()
		data, err := s.storage.Load(ctx, s.key)
		got <- loadResult{data, err}
	}()
	timer := time.NewTimer(storageLoadTimeout)
	defer timer.Stop()
	var r loadResult
	select {
	case r = <-got:
	case <-timer.C:
		r.err = context.DeadlineExceeded
		s.markSlow()
	case <-c.ctx.Done():
		return
	}
	fields := []zap.Field{zap.String("source", c.cfg.sourceURL()), zap.String("storage_key", s.key)}
	switch {
	case r.err != nil && notStored(r.err):
		c.log().Debug("no stored JWKS", fields...)
		return
	case errors.Is(r.err, context.DeadlineExceeded):
		c.log().Warn(fmt.Sprintf("storage did not answer within %s; starting without the stored JWKS", storageLoadTimeout), fields...)
		return
	case r.err != nil:
		c.log().Warn("could not read the stored JWKS; starting without it", append(fields, zap.Error(r.err))...)
		return
	}
	e, ks, skipped, err := c.parseStored(r.data, c.now())
	if err != nil {
		c.log().Warn("ignoring the stored JWKS", append(fields, zap.Error(err))...)
		return
	}
	c.mu.Lock()
	if c.current.Load() != nil {
		c.mu.Unlock()
		c.log().Debug("stored JWKS not used: the network fetch was faster", fields...)
		return
	}
	c.logSkippedLocked(e.JWKSURI, skipped)
	c.gen++
	ks.gen = c.gen
	c.current.Store(ks)
	c.origin = originStorage
	if c.cfg.discoveryURI != "" {
		c.jwksURI, c.discovery = e.JWKSURI, e.Discovery
	}
	c.mu.Unlock()
	c.log().Info("JWKS loaded from storage; the network fetch replaces it when it succeeds",
		append(fields, zap.Int("keys", len(ks.all)), zap.Time("fetched_at", e.FetchedAt), zap.Duration("keys_age", c.now().Sub(e.FetchedAt)))...)
}

// notStored reports whether a Load error means that there is no entry
// (a path component that is not a directory counts as none).
func notStored(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// parseStored checks an entry against this cache and parses its keys
// exactly as fetched keys are parsed; the key set's age counts from the
// stored fetch time.
func (c *jwksCache) parseStored(data []byte, now time.Time) (*storedKeys, *keySet, []skippedKey, error) {
	if len(data) > maxStoredSize {
		return nil, nil, nil, fmt.Errorf("entry of %d bytes is larger than %d", len(data), maxStoredSize)
	}
	var e storedKeys
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, nil, nil, fmt.Errorf("corrupt entry: %w", err)
	}
	if e.Version != storedVersion {
		return nil, nil, nil, fmt.Errorf("entry version %d is not %d", e.Version, storedVersion)
	}
	if e.Source != c.cfg.sourceURL() {
		return nil, nil, nil, fmt.Errorf("entry is for %q, not %q", e.Source, c.cfg.sourceURL())
	}
	switch age := now.Sub(e.FetchedAt); {
	case e.FetchedAt.IsZero():
		return nil, nil, nil, errors.New("entry has no fetched_at")
	case age < -maxStoredClockSkew:
		return nil, nil, nil, fmt.Errorf("entry's fetched_at %s is %s in the future", e.FetchedAt.Format(time.RFC3339), (-age).Round(time.Second))
	case age > c.cfg.maxStale:
		return nil, nil, nil, fmt.Errorf("keys fetched %s ago, longer than max_stale %s", age.Round(time.Second), c.cfg.maxStale)
	}
	if c.cfg.discoveryURI != "" {
		uri, err := parseDiscovery(e.Discovery, c.cfg.issuer, c.cfg.insecureHTTP)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("stored discovery document: %w", err)
		}
		if uri != e.JWKSURI {
			return nil, nil, nil, fmt.Errorf("stored jwks_uri %q is not the stored discovery document's %q", e.JWKSURI, uri)
		}
	} else if e.JWKSURI != c.cfg.jwksURI {
		return nil, nil, nil, fmt.Errorf("stored jwks_uri %q is not %q", e.JWKSURI, c.cfg.jwksURI)
	}
	ks, skipped, err := parseJWKS(e.JWKS, false)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("stored keys: %w", err)
	}
	ks.fetchedAt = e.FetchedAt
	return &e, ks, skipped, nil
}

// awaitStoredKeys waits until every key cache of h has read its stored
// keys or given up. The reads run in parallel, each bounded by
// storageLoadTimeout from its start, so a restarted Caddy serves stored
// keys from its first request and a hanging storage delays it by at most
// that much: a storage that had timed out recently when this wait began
// is not waited for (its reads still run, and install keys if they answer
// in time). Caches that already existed (a reload) return at once.
func (h *Handler) awaitStoredKeys() {
	var wait []*jwksCache
	for _, p := range h.providers {
		if c, ok := p.keys.(*jwksCache); ok && (c.store == nil || !c.store.recentlySlow()) {
			wait = append(wait, c)
		}
	}
	for _, c := range wait {
		<-c.loaded
	}
}
