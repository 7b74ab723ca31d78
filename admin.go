package oauth2jwt

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI is a Caddy admin API module (`admin.api.oauth2_jwt`) that shows
// the state of every provider of the loaded config and lets operators force
// a key refresh. It is loaded automatically with the admin API.
//
//	GET  /oauth2_jwt/providers                  every provider's issuer, key source, keys, fetch state, introspection
//	POST /oauth2_jwt/providers/<name>/refresh   refetch the keys now (429 when rate limited)
//	GET  /oauth2_jwt/ready                      200 when every provider has usable keys, else 503
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.oauth2_jwt",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/oauth2_jwt/providers", Handler: caddy.AdminHandlerFunc(serveProviders)},
		{Pattern: "/oauth2_jwt/providers/", Handler: caddy.AdminHandlerFunc(serveProviderAction)},
		{Pattern: "/oauth2_jwt/ready", Handler: caddy.AdminHandlerFunc(serveReady)},
	}
}

// providerStatus is one provider in the admin API's answers.
type providerStatus struct {
	Name        string      `json:"name"`
	Issuer      string      `json:"issuer"`
	KeySource   string      `json:"key_source"`
	Ready       bool        `json:"ready"`
	Keys        []keyStatus `json:"keys"`
	LastFetch   *time.Time  `json:"last_fetch,omitempty"`
	LastResult  string      `json:"last_result,omitempty"`
	LastError   string      `json:"last_error,omitempty"`
	LastSuccess *time.Time  `json:"last_success,omitempty"`
	NextRefresh *time.Time  `json:"next_refresh,omitempty"`
	KeysAge     string      `json:"keys_age,omitempty"`
	// KeyOrigin is where the current keys came from: "network" (a fetch
	// by this Caddy), "storage" (the stored keys of an earlier fetch, by
	// this Caddy before a restart or by another node) or "file".
	KeyOrigin string `json:"key_origin,omitempty"`
	Fetches   int64  `json:"fetches"`
	// Persistence of the keys in Caddy's storage; absent with
	// persist_keys off and for jwks_file.
	StorageKey string     `json:"storage_key,omitempty"`
	LastStored *time.Time `json:"last_stored,omitempty"` // fetch time of the last entry written
	StoreError string     `json:"store_error,omitempty"` // the last write's error, until one succeeds
	// Introspection of opaque tokens: the endpoint, the last call's
	// result and the cache size; absent without introspection.
	Introspection *introspectionStatus `json:"introspection,omitempty"`
}

type keyStatus struct {
	Kid        string   `json:"kid"`
	Type       string   `json:"type"`
	Algorithm  string   `json:"alg,omitempty"`
	Algorithms []string `json:"algorithms"`
}

func (lp *liveProvider) status() providerStatus {
	st := providerStatus{Name: lp.name, Issuer: lp.issuer, KeySource: lp.source, Keys: []keyStatus{}}
	var ks *keySet
	if lp.cache == nil {
		ks, _ = lp.keys.keysAt(time.Time{}) // a jwks_file's keys never age
		st.Ready = true
		st.LastResult = "loaded from file"
		st.KeyOrigin = "file"
	} else {
		cs := lp.cache.status()
		ks, st.Ready, st.Fetches = cs.keys, cs.usable, cs.successes+cs.errors // stale keys are still shown
		if !cs.lastAttempt.IsZero() {
			t := cs.lastAttempt
			st.LastFetch = &t
		}
		if !cs.nextAttempt.IsZero() {
			t := cs.nextAttempt
			st.NextRefresh = &t
		}
		switch {
		case cs.lastErr != nil:
			st.LastResult, st.LastError = "error", cs.lastErr.Error()
		case cs.pending:
			st.LastResult = "pending"
		default:
			st.LastResult = "success"
		}
		if ks != nil {
			t := ks.fetchedAt
			st.LastSuccess = &t
			st.KeysAge = cs.now.Sub(t).Round(time.Second).String()
			st.KeyOrigin = string(cs.origin)
		}
		if cs.stored.enabled {
			st.StorageKey = cs.stored.key
			if !cs.stored.lastStored.IsZero() {
				t := cs.stored.lastStored
				st.LastStored = &t
			}
			if cs.stored.lastErr != nil {
				st.StoreError = cs.stored.lastErr.Error()
			}
		}
	}
	st.Introspection = introspectionOf(lp.name, lp.issuer)
	if ks != nil {
		for _, k := range ks.all {
			st.Keys = append(st.Keys, keyStatus{Kid: k.kid, Type: k.class.String(), Algorithm: string(k.alg), Algorithms: k.algorithms()})
		}
	}
	return st
}

func serveProviders(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	list := []providerStatus{}
	for _, lp := range loadedProviders() {
		list = append(list, lp.status())
	}
	return writeJSON(w, http.StatusOK, map[string]any{"providers": list})
}

func serveProviderAction(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, "/oauth2_jwt/providers/")
	name, action, ok := strings.Cut(rest, "/")
	if !ok || action != "refresh" || name == "" {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown path %q", r.URL.Path)}
	}
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	var found []*liveProvider
	for _, lp := range loadedProviders() {
		if lp.name == name {
			found = append(found, lp)
		}
	}
	if len(found) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no provider named %q", name)}
	}
	var results []providerStatus
	for _, lp := range found {
		c := lp.cache
		if c == nil {
			return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("provider %q loads its keys from a file at provision; reload the config instead", name)}
		}
		wait, retryIn := c.forceRefresh()
		if wait == nil {
			w.Header().Set("Retry-After", retryAfterHeader(int((retryIn+time.Second-1)/time.Second)))
			return caddy.APIError{HTTPStatus: http.StatusTooManyRequests,
				Err: fmt.Errorf("provider %q: a fetch ran less than min_refresh_interval ago; retry in %s", name, retryIn.Round(time.Second))}
		}
		select {
		case <-wait:
		case <-r.Context().Done():
			return r.Context().Err()
		}
		results = append(results, lp.status())
	}
	return writeJSON(w, http.StatusOK, map[string]any{"providers": results})
}

func serveReady(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	notReady := []string{}
	for _, lp := range loadedProviders() {
		if !lp.status().Ready {
			notReady = append(notReady, lp.name)
		}
	}
	status := http.StatusOK
	if len(notReady) > 0 {
		status = http.StatusServiceUnavailable
	}
	return writeJSON(w, status, map[string]any{"ready": len(notReady) == 0, "not_ready": notReady})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// Interface guard
var _ caddy.AdminRouter = (*AdminAPI)(nil)
