package oauth2jwt

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"

	"github.com/caddyserver/caddy/v2"
)

// liveProviders is the one book of the providers of every loaded config:
// a usage pool of *liveProvider. Each Provision takes one reference per
// provider and Cleanup gives it back, so during a reload the providers of
// both configs are listed, and a provider that no loaded config names is
// gone. The admin API and the metrics read it (Range); nothing else counts
// providers.
var liveProviders = caddy.NewUsagePool()

// liveProvider is one provider as loaded: its name, issuer, key source
// and keys. Several handlers (and, during a reload, two configs) naming the
// same provider with the same key source share one record.
type liveProvider struct {
	name    string
	issuer  string
	source  string // "jwks_uri <url>", "discovery <url>" or "jwks_file <path>"
	keys    keySource
	cache   *jwksCache // the remote key cache, or nil for a jwks_file
	poolKey string     // the cachePool key this record holds, or ""
}

// Destruct gives back the key cache this record holds; it implements
// caddy.Destructor for the usage pool.
func (lp *liveProvider) Destruct() error {
	if lp.poolKey == "" {
		return nil
	}
	_, err := cachePool.Delete(lp.poolKey)
	return err
}

// liveKey identifies a provider record: the same name and issuer with the
// same key source (for a remote source, the same fetch settings; for a
// file, the same content) is the same record.
func liveKey(name, issuer, source string) string {
	return name + "\x00" + issuer + "\x00" + source
}

// fileKeyID names a jwks_file's content, so that a reload reading a changed
// file gets a new record (and the new keys) rather than the old one.
func fileKeyID(path string, data []byte) string {
	sum := sha256.Sum256(data)
	return "file|" + path + "|" + hex.EncodeToString(sum[:])
}

// acquireRemote returns the record of a remote-keys provider, creating it
// and, when no other provider uses the same source, its key cache (whose
// first fetch and read of the stored keys start at once). The cache
// persists its keys to deps.storage (none when nil) for its whole life;
// providers naming another storage get another cache. The caller releases
// the record with liveProviders.Delete(key).
func acquireRemote(name, issuer, source string, fc fetchConfig, deps runtimeDeps) (string, *liveProvider, error) {
	if deps.noStorage {
		deps.storage = nil
	}
	poolKey := fc.poolKey() + "|storage=" + storageID(deps.storage)
	key := liveKey(name, issuer, poolKey)
	val, _, err := liveProviders.LoadOrNew(key, func() (caddy.Destructor, error) {
		cv, _, err := cachePool.LoadOrNew(poolKey, func() (caddy.Destructor, error) {
			c := newJWKSCache(fc, deps)
			c.start()
			return c, nil
		})
		if err != nil {
			return nil, err
		}
		c := cv.(*jwksCache)
		return &liveProvider{name: name, issuer: issuer, source: source, keys: c, cache: c, poolKey: poolKey}, nil
	})
	if err != nil {
		return "", nil, err
	}
	return key, val.(*liveProvider), nil
}

// acquireStatic returns the record of a jwks_file provider.
func acquireStatic(name, issuer, source, contentID string, keys staticKeys) (string, *liveProvider) {
	key := liveKey(name, issuer, contentID)
	val, _, _ := liveProviders.LoadOrNew(key, func() (caddy.Destructor, error) {
		return &liveProvider{name: name, issuer: issuer, source: source, keys: keys}, nil
	})
	return key, val.(*liveProvider)
}

// loadedProviders lists the records, sorted by name then issuer.
func loadedProviders() []*liveProvider {
	var out []*liveProvider
	liveProviders.Range(func(_, v any) bool {
		out = append(out, v.(*liveProvider))
		return true
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].name != out[j].name {
			return out[i].name < out[j].name
		}
		return out[i].issuer < out[j].issuer
	})
	return out
}

// providerNames returns the names of the loaded providers that use c,
// sorted and without repeats.
func providerNames(c *jwksCache) []string {
	var out []string
	for _, lp := range loadedProviders() {
		if lp.cache == c && (len(out) == 0 || out[len(out)-1] != lp.name) {
			out = append(out, lp.name)
		}
	}
	return out
}
