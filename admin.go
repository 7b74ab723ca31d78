package oauth2jwt

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
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
//	GET  /oauth2_jwt/providers                  every provider's issuer, key source, keys, fetch state
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

// activeProvider is a provider of a provisioned handler, as the admin API
// shows it.
type activeProvider struct {
	name   string
	issuer string
	source string // "jwks_uri <url>", "discovery <url>" or "jwks_file <path>"
	keys   keySource
	refs   int
}

// registry tracks the providers of every provisioned handler (several
// handlers, and during a reload two configs, may name the same provider).
var registry = struct {
	sync.Mutex
	m map[string]*activeProvider
}{m: make(map[string]*activeProvider)}

func registryKey(name, issuer, source string) string {
	return name + "\x00" + issuer + "\x00" + source
}

func registerProvider(name, issuer, source string, keys keySource) string {
	key := registryKey(name, issuer, source)
	registry.Lock()
	defer registry.Unlock()
	ap := registry.m[key]
	if ap == nil {
		ap = &activeProvider{name: name, issuer: issuer, source: source, keys: keys}
		registry.m[key] = ap
	}
	ap.refs++
	return key
}

func unregisterProvider(key string) {
	registry.Lock()
	defer registry.Unlock()
	if ap := registry.m[key]; ap != nil {
		if ap.refs--; ap.refs <= 0 {
			delete(registry.m, key)
		}
	}
}

func activeProviders() []*activeProvider {
	registry.Lock()
	defer registry.Unlock()
	out := make([]*activeProvider, 0, len(registry.m))
	for _, ap := range registry.m {
		out = append(out, ap)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].name != out[j].name {
			return out[i].name < out[j].name
		}
		return out[i].issuer < out[j].issuer
	})
	return out
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
	Fetches     int64       `json:"fetches"`
}

type keyStatus struct {
	Kid        string   `json:"kid"`
	Type       string   `json:"type"`
	Algorithm  string   `json:"alg,omitempty"`
	Algorithms []string `json:"algorithms"`
}

func (ap *activeProvider) status() providerStatus {
	st := providerStatus{Name: ap.name, Issuer: ap.issuer, KeySource: ap.source, Keys: []keyStatus{}}
	ks, aerr := ap.keys.keys()
	st.Ready = aerr == nil
	if ks == nil {
		if c, ok := ap.keys.(*jwksCache); ok {
			ks = c.current.Load() // stale keys are still shown
		}
	}
	if ks != nil {
		for _, k := range ks.all {
			st.Keys = append(st.Keys, keyStatus{Kid: k.kid, Type: k.class.String(), Algorithm: string(k.alg), Algorithms: k.algorithms()})
		}
	}
	if c, ok := ap.keys.(*jwksCache); ok {
		c.mu.Lock()
		if !c.lastAttempt.IsZero() {
			t := c.lastAttempt
			st.LastFetch = &t
		}
		if !c.nextAttempt.IsZero() {
			t := c.nextAttempt
			st.NextRefresh = &t
		}
		if c.lastErr != nil {
			st.LastResult, st.LastError = "error", c.lastErr.Error()
		} else if c.lastAttempt.IsZero() || c.inflight != nil && ks == nil {
			st.LastResult = "pending"
		} else {
			st.LastResult = "success"
		}
		c.mu.Unlock()
		st.Fetches = c.fetches.Load()
		if ks != nil {
			t := ks.fetchedAt
			st.LastSuccess = &t
			st.KeysAge = c.now().Sub(t).Round(time.Second).String()
		}
	} else {
		st.LastResult = "loaded from file"
	}
	return st
}

func serveProviders(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	list := []providerStatus{}
	for _, ap := range activeProviders() {
		list = append(list, ap.status())
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
	var found []*activeProvider
	for _, ap := range activeProviders() {
		if ap.name == name {
			found = append(found, ap)
		}
	}
	if len(found) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no provider named %q", name)}
	}
	var results []providerStatus
	for _, ap := range found {
		c, ok := ap.keys.(*jwksCache)
		if !ok {
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
		results = append(results, ap.status())
	}
	return writeJSON(w, http.StatusOK, map[string]any{"providers": results})
}

func serveReady(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	notReady := []string{}
	for _, ap := range activeProviders() {
		if _, aerr := ap.keys.keys(); aerr != nil {
			notReady = append(notReady, ap.name)
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
