package oauth2jwt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/filestorage"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Tests of persist.go: the last good keys kept in Caddy's storage and
// read back by a new key cache (a restart, or another node of a fleet).

// TestMain gives the Caddys of this test binary a storage of their own:
// integration tests that name no storage use Caddy's default, which holds
// the keys every provider stores since key persistence, and one in the
// user's data directory would leak entries from one run into the next (a
// later test's identity provider on a reused port would find them).
func TestMain(m *testing.M) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("oauth2jwt-test-storage-%d", os.Getpid()))
	caddy.DefaultStorage.Path = dir // created by the first write, if any
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// memStorage is an in-memory keyStorage that counts its calls and can be
// made to fail or to hang (ignoring its context, as a broken storage
// module would).
type memStorage struct {
	name    string
	mu      sync.Mutex
	data    map[string][]byte
	loadErr error

	loadGate  chan struct{} // when set, Load waits until it is closed
	storeGate chan struct{} // when set, Store waits until it is closed

	loads, stores    atomic.Int64
	inStore, maxBusy atomic.Int64
	entered          chan struct{}   // a Store started
	written          chan storedKeys // each entry stored, decoded
}

var memStorages atomic.Int64

func newMemStorage() *memStorage {
	return &memStorage{name: fmt.Sprint(memStorages.Add(1)), data: map[string][]byte{}, entered: make(chan struct{}, 64), written: make(chan storedKeys, 64)}
}

// String names the storage, as certmagic's FileStorage does: a storage
// recognised across config loads (and, here, never mistaken for an earlier
// one at the same address).
func (m *memStorage) String() string { return "mem:" + m.name }

func (m *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	m.loads.Add(1)
	if m.loadGate != nil {
		<-m.loadGate
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.loadErr != nil {
		return nil, m.loadErr
	}
	b, ok := m.data[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return append([]byte(nil), b...), nil
}

func (m *memStorage) Store(_ context.Context, key string, value []byte) error {
	m.stores.Add(1)
	busy := m.inStore.Add(1)
	defer m.inStore.Add(-1)
	for {
		old := m.maxBusy.Load()
		if busy <= old || m.maxBusy.CompareAndSwap(old, busy) {
			break
		}
	}
	m.entered <- struct{}{}
	if m.storeGate != nil {
		<-m.storeGate
	}
	m.mu.Lock()
	m.data[key] = append([]byte(nil), value...)
	m.mu.Unlock()
	var e storedKeys
	if err := json.Unmarshal(value, &e); err != nil {
		panic(fmt.Sprintf("the module stored an entry that is not JSON: %v", err))
	}
	m.written <- e
	return nil
}

// put stores raw under the entry key of source, as an earlier Caddy would.
func (m *memStorage) put(source string, raw []byte) {
	m.mu.Lock()
	m.data[storageKey(source)] = raw
	m.mu.Unlock()
}

func (m *memStorage) get(source string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data[storageKey(source)]
}

// nextWrite returns the next entry the module stores, failing after 5s.
func (m *memStorage) nextWrite(t testing.TB) storedKeys {
	t.Helper()
	select {
	case e := <-m.written:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no entry was stored within 5s")
	}
	return storedKeys{}
}

// persistHandler provisions one provider whose keys persist to st, on clk,
// logging warnings and above into the returned observer.
func persistHandler(t testing.TB, name string, p *Provider, st keyStorage, clk *testClock) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.WarnLevel)
	h := &Handler{Providers: map[string]*Provider{name: p}}
	h.deps.now, h.deps.log, h.deps.storage = clk.now, zap.New(core), st
	return provisionHandler(t, h), logs
}

func jwksProvider(idp *testIdP) *Provider {
	return &Provider{Issuer: idp.url(), Audiences: []string{"api"}, JWKSURI: idp.url() + "/jwks"}
}

// refreshUntilUsable refreshes c until its keys are usable: a refresh
// may join a fetch already in flight (a retry of the refresher) that
// started before the provider came back.
func refreshUntilUsable(t testing.TB, c *jwksCache) {
	t.Helper()
	for range 3 {
		refreshNow(c)
		if c.status().usable {
			return
		}
	}
	t.Fatalf("keys not usable after 3 refreshes: %v", c.status().lastErr)
}

// storageWarnings are the warnings about stored keys (they all name the
// storage key).
func storageWarnings(logs *observer.ObservedLogs) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range logs.All() {
		if _, ok := e.ContextMap()["storage_key"]; ok && e.Level >= zapcore.WarnLevel {
			out = append(out, e)
		}
	}
	return out
}

// adminProvider returns the admin API's answer for the provider with this
// name and issuer (GET /oauth2_jwt/providers).
func adminProvider(t testing.TB, name, issuer string) map[string]any {
	t.Helper()
	w := httptest.NewRecorder()
	if err := serveProviders(w, httptest.NewRequest(http.MethodGet, "/oauth2_jwt/providers", nil)); err != nil {
		t.Fatal(err)
	}
	var body struct {
		Providers []map[string]any `json:"providers"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	for _, p := range body.Providers {
		if p["name"] == name && p["issuer"] == issuer {
			return p
		}
	}
	t.Fatalf("provider %q (%s) not in the admin API's answer %s", name, issuer, w.Body.String())
	return nil
}

// sample scrapes the key metrics and returns the value of the metric's
// series with these labels ("name=value" each).
func sample(t testing.TB, metric string, labels ...string) (float64, bool) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(newKeyCollector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, m := range f.GetMetric() {
			var have []string
			for _, l := range m.GetLabel() {
				have = append(have, l.GetName()+"="+l.GetValue())
			}
			if !containsAll(have, labels) {
				continue
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// storedFetchedAt is the fetched_at of source's entry in st, or zero.
func storedFetchedAt(st *memStorage, source string) time.Time {
	var e storedKeys
	_ = json.Unmarshal(st.get(source), &e)
	return e.FetchedAt
}

// TestPersistRestartDuringOutage: keys fetched by one Caddy are stored
// (and restored after each refresh, unchanged or not); a new key cache,
// started 30 minutes later while the provider is down, accepts the token
// from its first request, says "storage" in the admin API and metrics,
// and fails closed once max_stale has passed since the original fetch
// (not since the restart). When the provider is back, network keys
// replace the stored ones and are stored.
func TestPersistRestartDuringOutage(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	st := newMemStorage()
	clk := &testClock{}
	source := idp.url() + "/jwks"
	p := jwksProvider(idp)
	p.MaxStale = caddy.Duration(time.Hour)
	tok := k.sign(t, longLived(claimsFor(idp.url(), "api")), nil)

	h1, logs1 := persistHandler(t, "persist-restart", p, st, clk)
	waitForKeys(t, h1)
	expectReason(t, serve(t, h1, bearer(tok)), http.StatusOK, "")
	e := st.nextWrite(t)
	c1 := cacheOf(t, h1, idp.url())
	first := c1.status().keys
	if e.Source != source || e.JWKSURI != source || !e.FetchedAt.Equal(first.fetchedAt) || e.Discovery != nil {
		t.Fatalf("stored entry: source %q, jwks_uri %q, fetched_at %s (keys fetched at %s), discovery %s",
			e.Source, e.JWKSURI, e.FetchedAt, first.fetchedAt, e.Discovery)
	}
	if ks, _, err := parseJWKS(e.JWKS, false); err != nil || len(ks.kids()) != 1 || ks.kids()[0] != "k1" {
		t.Fatalf("stored JWKS %s: %v", e.JWKS, err)
	}
	if st.get(source) == nil {
		t.Fatalf("nothing under %s", storageKey(source))
	}

	// A refresh returning the same keys keeps fetched_at current in storage.
	clk.advance(10 * time.Minute)
	refreshNow(c1)
	if e := st.nextWrite(t); !e.FetchedAt.Equal(c1.status().keys.fetchedAt) || !e.FetchedAt.After(first.fetchedAt) {
		t.Fatalf("after an unchanged refresh, fetched_at %s, want the refresh's %s", e.FetchedAt, c1.status().keys.fetchedAt)
	}
	original := c1.status().keys.fetchedAt
	if n := len(storageWarnings(logs1)); n != 0 {
		t.Fatalf("%d storage warnings on a working storage: %v", n, logs1.All())
	}

	// Caddy stops; the provider goes down; Caddy starts 30 minutes later.
	if err := h1.Cleanup(); err != nil {
		t.Fatal(err)
	}
	idp.setStatus(http.StatusServiceUnavailable)
	clk.advance(30 * time.Minute)
	h2, _ := persistHandler(t, "persist-restart", p, st, clk)
	c2 := cacheOf(t, h2, idp.url())
	if c2 == c1 {
		t.Fatal("the restarted handler got the old key cache")
	}
	expectReason(t, serve(t, h2, bearer(tok)), http.StatusOK, "") // no wait: provisioning read the stored keys
	ps := adminProvider(t, "persist-restart", idp.url())
	if ps["key_origin"] != "storage" || ps["ready"] != true || !strings.HasPrefix(fmt.Sprint(ps["keys_age"]), "30m") || ps["last_success"] != original.Format(time.RFC3339Nano) {
		t.Fatalf("admin API after the restart: key_origin %v, ready %v, keys_age %v, last_success %v (want %s)",
			ps["key_origin"], ps["ready"], ps["keys_age"], ps["last_success"], original.Format(time.RFC3339Nano))
	}
	if v, ok := sample(t, "caddy_oauth2_jwt_keys_from_storage", "provider=persist-restart"); !ok || v != 1 {
		t.Fatalf("keys_from_storage = %v (present %v), want 1", v, ok)
	}

	clk.advance(29 * time.Minute) // 59m after the original fetch
	refreshNow(c2)                // fails: the provider is still down
	expectReason(t, serve(t, h2, bearer(tok)), http.StatusOK, "")
	clk.advance(2 * time.Minute) // 61m after the original fetch, 31m after the restart
	expectReason(t, serve(t, h2, bearer(tok)), http.StatusServiceUnavailable, "unavailable")
	if ps := adminProvider(t, "persist-restart", idp.url()); ps["ready"] != false {
		t.Fatalf("ready = %v with keys past max_stale", ps["ready"])
	}

	// The provider is back: network keys replace the stored ones.
	idp.setStatus(0)
	refreshUntilUsable(t, c2)
	expectReason(t, serve(t, h2, bearer(tok)), http.StatusOK, "")
	if ps := adminProvider(t, "persist-restart", idp.url()); ps["key_origin"] != "network" {
		t.Fatalf("key_origin = %v after a successful fetch, want network", ps["key_origin"])
	}
	if v, _ := sample(t, "caddy_oauth2_jwt_keys_from_storage", "provider=persist-restart"); v != 0 {
		t.Fatalf("keys_from_storage = %v after a successful fetch, want 0", v)
	}
	// (A retry of the refresher may fetch too: wait for the newest write.)
	waitUntil(t, 5*time.Second, "the network keys stored", func() bool {
		return storedFetchedAt(st, source).Equal(c2.status().keys.fetchedAt)
	})
}

// TestPersistDiscovery: with discovery, the entry holds the discovery
// document and the resolved jwks_uri; restored, both are checked again
// (the document's issuer against the configured one).
func TestPersistDiscovery(t *testing.T) {
	k := newTestKey(t, "k1", jose.EdDSA, 0)
	idp := newTestIdP(t, k)
	st := newMemStorage()
	clk := &testClock{}
	p := &Provider{Issuer: idp.url(), Audiences: []string{"api"}} // discovery at the issuer
	tok := k.sign(t, claimsFor(idp.url(), "api"), nil)

	h1, _ := persistHandler(t, "persist-discovery", p, st, clk)
	waitForKeys(t, h1)
	e := st.nextWrite(t)
	var doc discoveryDocument
	if err := json.Unmarshal(e.Discovery, &doc); err != nil || doc.Issuer != idp.url() {
		t.Fatalf("stored discovery document %s: %v", e.Discovery, err)
	}
	if e.Source != idp.url()+discoveryWellKnownPath || e.JWKSURI != idp.url()+"/jwks" {
		t.Fatalf("stored source %q, jwks_uri %q", e.Source, e.JWKSURI)
	}
	if err := h1.Cleanup(); err != nil {
		t.Fatal(err)
	}

	idp.setStatus(http.StatusBadGateway)
	h2, logs := persistHandler(t, "persist-discovery", p, st, clk)
	expectReason(t, serve(t, h2, bearer(tok)), http.StatusOK, "")
	if n := len(storageWarnings(logs)); n != 0 {
		t.Fatalf("storage warnings: %v", logs.All())
	}
	if err := h2.Cleanup(); err != nil {
		t.Fatal(err)
	}

	// The same entry under a provider whose issuer the document does not
	// name (one with the same discovery URL) is refused.
	other := &Provider{Issuer: "https://other.example", Audiences: []string{"api"}, DiscoveryURI: idp.url() + discoveryWellKnownPath}
	h3, logs := persistHandler(t, "persist-discovery-other", other, st, clk)
	if got := storageWarnings(logs); len(got) != 1 || !strings.Contains(fmt.Sprint(got[0].ContextMap()["error"]), "issuer") {
		t.Fatalf("want one warning about the stored document's issuer, got %v", logs.All())
	}
	expectReason(t, serve(t, h3, bearer(k.sign(t, claimsFor("https://other.example", "api"), nil))), http.StatusServiceUnavailable, "unavailable")
}

// TestPersistRefusedEntries: an entry that is corrupt, for another URL,
// too old, from the future, of another format, without a usable key, or
// unreadable is ignored with one warning, and the provider behaves as
// without persistence: 503 while the provider is down, 200 once it is up,
// and the entry is then overwritten with a good one.
func TestPersistRefusedEntries(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	jwk, err := json.Marshal(k.public())
	if err != nil {
		t.Fatal(err)
	}
	good := json.RawMessage(`{"keys":[` + string(jwk) + `]}`)
	for _, tc := range []struct {
		name    string
		entry   func(source string, now time.Time) []byte // nil: nothing stored
		loadErr error
		want    string // in the warning's error
	}{
		{name: "truncated JSON", entry: func(string, time.Time) []byte { return []byte(`{"version":1,"source":`) }, want: "corrupt"},
		{name: "not JSON", entry: func(string, time.Time) []byte { return []byte("\x00\x01garbage") }, want: "corrupt"},
		{name: "another URL", entry: func(_ string, now time.Time) []byte {
			return persistJSON(t, storedKeys{Version: 1, Source: "https://other.example/jwks", FetchedAt: now, JWKSURI: "https://other.example/jwks", JWKS: good})
		}, want: "is for"},
		{name: "too old", entry: func(source string, now time.Time) []byte {
			return persistJSON(t, storedKeys{Version: 1, Source: source, FetchedAt: now.Add(-25 * time.Hour), JWKSURI: source, JWKS: good})
		}, want: "max_stale"},
		{name: "from the future", entry: func(source string, now time.Time) []byte {
			return persistJSON(t, storedKeys{Version: 1, Source: source, FetchedAt: now.Add(2 * time.Hour), JWKSURI: source, JWKS: good})
		}, want: "future"},
		{name: "other version", entry: func(source string, now time.Time) []byte {
			return persistJSON(t, storedKeys{Version: 2, Source: source, FetchedAt: now, JWKSURI: source, JWKS: good})
		}, want: "version"},
		{name: "no usable key", entry: func(source string, now time.Time) []byte {
			return persistJSON(t, storedKeys{Version: 1, Source: source, FetchedAt: now, JWKSURI: source, JWKS: json.RawMessage(`{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}`)})
		}, want: "no usable signing key"},
		{name: "no fetch time", entry: func(source string, _ time.Time) []byte {
			return persistJSON(t, storedKeys{Version: 1, Source: source, JWKSURI: source, JWKS: good})
		}, want: "fetched_at"},
		{name: "unreadable", loadErr: fs.ErrPermission, want: "permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idp := newTestIdP(t, k)
			idp.setStatus(http.StatusServiceUnavailable)
			source := idp.url() + "/jwks"
			st := newMemStorage()
			st.loadErr = tc.loadErr
			clk := &testClock{}
			if tc.entry != nil {
				st.put(source, tc.entry(source, clk.now()))
			}
			tok := k.sign(t, claimsFor(idp.url(), "api"), nil)
			h, logs := persistHandler(t, "persist-refused", jwksProvider(idp), st, clk)
			expectReason(t, serve(t, h, bearer(tok)), http.StatusServiceUnavailable, "unavailable")
			got := storageWarnings(logs)
			if len(got) != 1 || !strings.Contains(fmt.Sprint(got[0].ContextMap()["error"]), tc.want) {
				t.Fatalf("want one storage warning mentioning %q, got %v", tc.want, logs.All())
			}

			idp.setStatus(0)
			refreshUntilUsable(t, cacheOf(t, h, idp.url()))
			expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
			if e := st.nextWrite(t); e.Source != source || e.Version != storedVersion {
				t.Fatalf("the refused entry was not replaced by a good one: %+v", e)
			}
			if n := len(storageWarnings(logs)); n != 1 {
				t.Fatalf("%d storage warnings, want still 1: %v", n, logs.All())
			}
		})
	}
}

func persistJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPersistMaxStaleChangeKeepsEntry: the entry's key depends on the URL
// only, so a config changing max_stale (a new key cache) still finds it,
// and judges its age with the new max_stale.
func TestPersistMaxStaleChangeKeepsEntry(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	st := newMemStorage()
	clk := &testClock{}
	tok := k.sign(t, longLived(claimsFor(idp.url(), "api")), nil)
	p := jwksProvider(idp)
	p.MaxStale = caddy.Duration(time.Hour)
	h1, _ := persistHandler(t, "persist-maxstale", p, st, clk)
	waitForKeys(t, h1)
	st.nextWrite(t)
	if err := h1.Cleanup(); err != nil {
		t.Fatal(err)
	}
	idp.setStatus(http.StatusServiceUnavailable)
	clk.advance(2 * time.Hour)

	short, long := *p, *p
	short.RefreshInterval = caddy.Duration(10 * time.Minute) // another key cache, same max_stale: 2h is too old
	h2, logs := persistHandler(t, "persist-maxstale", &short, st, clk)
	expectReason(t, serve(t, h2, bearer(tok)), http.StatusServiceUnavailable, "unavailable")
	if got := storageWarnings(logs); len(got) != 1 {
		t.Fatalf("want one warning about the old entry, got %v", logs.All())
	}
	if err := h2.Cleanup(); err != nil {
		t.Fatal(err)
	}
	long.MaxStale = caddy.Duration(3 * time.Hour)
	h3, _ := persistHandler(t, "persist-maxstale", &long, st, clk)
	expectReason(t, serve(t, h3, bearer(tok)), http.StatusOK, "")
	if ps := adminProvider(t, "persist-maxstale", idp.url()); ps["key_origin"] != "storage" {
		t.Fatalf("key_origin = %v, want storage", ps["key_origin"])
	}
}

// TestPersistHangingStorage: a storage whose Load and Store never return
// (and ignore their context) delays provisioning by at most 2s in all, with
// one warning per provider, reads of several providers running at once; a
// second handler (another site block of the config) is not delayed again.
// The providers then work as without persistence, and Cleanup does not
// wait on the stuck writes.
func TestPersistHangingStorage(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp1, idp2, idp3 := newTestIdP(t, k), newTestIdP(t, k), newTestIdP(t, k)
	st := newMemStorage()
	st.loadGate, st.storeGate = make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(st.loadGate); close(st.storeGate) }) // after the handlers' cleanup
	clk := &testClock{}
	core, logs := observer.New(zapcore.WarnLevel)
	h := &Handler{Providers: map[string]*Provider{"persist-hang-a": jwksProvider(idp1), "persist-hang-b": jwksProvider(idp2)}}
	h.deps = runtimeDeps{now: clk.now, log: zap.New(core), storage: st}

	start := time.Now()
	provisionHandler(t, h)
	if d := time.Since(start); d > storageLoadTimeout+time.Second {
		t.Fatalf("provisioning two providers took %s with a hanging storage, want at most %s", d, storageLoadTimeout)
	}
	got := storageWarnings(logs)
	if len(got) != 2 || !strings.Contains(got[0].Message, "did not answer") || !strings.Contains(got[1].Message, "did not answer") {
		t.Fatalf("want one warning per provider about the storage not answering, got %v", logs.All())
	}
	start = time.Now()
	h2, _ := persistHandler(t, "persist-hang-c", jwksProvider(idp3), st, clk)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a second handler on the same hanging storage took %s to provision", d)
	}

	waitForKeys(t, h)
	waitForKeys(t, h2)
	expectReason(t, serve(t, h, bearer(k.sign(t, claimsFor(idp1.url(), "api"), nil))), http.StatusOK, "")
	expectReason(t, serve(t, h2, bearer(k.sign(t, claimsFor(idp3.url(), "api"), nil))), http.StatusOK, "")
	for range 3 {
		<-st.entered // every writer is stuck in Store now
	}
	start = time.Now()
	if err := errors.Join(h.Cleanup(), h2.Cleanup()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Cleanup took %s with writes stuck on a storage known to hang", d)
	}
}

// TestPersistStopWithStuckWrite: a storage that reads fine but never
// finishes a write: Cleanup waits for the write at most storageStopWait.
func TestPersistStopWithStuckWrite(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	st := newMemStorage()
	st.storeGate = make(chan struct{})
	t.Cleanup(func() { close(st.storeGate) })
	h, _ := persistHandler(t, "persist-stuck-write", jwksProvider(idp), st, &testClock{})
	waitForKeys(t, h)
	<-st.entered
	start := time.Now()
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > storageStopWait+time.Second {
		t.Fatalf("Cleanup took %s with a write stuck, want at most %s", d, storageStopWait)
	}
}

// TestPersistWriterLatestWins: while a write is under way, later fetches
// do not queue writes nor start more writers: the writer then stores only
// the newest entry.
func TestPersistWriterLatestWins(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	st := newMemStorage()
	st.storeGate = make(chan struct{})
	clk := &testClock{}
	h, _ := persistHandler(t, "persist-latest", jwksProvider(idp), st, clk)
	waitForKeys(t, h)
	<-st.entered // the first fetch's write, held
	c := cacheOf(t, h, idp.url())
	for range 5 {
		clk.advance(time.Minute)
		refreshNow(c)
	}
	last := c.status().keys.fetchedAt
	if n := st.stores.Load(); n != 1 {
		t.Fatalf("%d writes started while one is held, want 1", n)
	}
	close(st.storeGate)
	st.nextWrite(t) // the held one
	if e := st.nextWrite(t); !e.FetchedAt.Equal(last) {
		t.Fatalf("second write has fetched_at %s, want the newest fetch's %s", e.FetchedAt, last)
	}
	if n, busy := st.stores.Load(), st.maxBusy.Load(); n != 2 || busy != 1 {
		t.Fatalf("%d writes (%d at once), want 2 (1 at once)", n, busy)
	}
}

// TestPersistUnwritableStorageDir: Caddy's file-system storage under a
// path that cannot be a directory: the provider works as without
// persistence, with one warning (not one per refresh), and the admin API
// shows the error.
func TestPersistUnwritableStorageDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := filestorage.FileStorage{Root: filepath.Join(file, "caddy")}.CertMagicStorage()
	if err != nil {
		t.Fatal(err)
	}
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	clk := &testClock{}
	h, logs := persistHandler(t, "persist-unwritable", jwksProvider(idp), st, clk)
	waitForKeys(t, h)
	expectReason(t, serve(t, h, bearer(k.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")
	c := cacheOf(t, h, idp.url())
	waitUntil(t, 5*time.Second, "the failed write", func() bool { return c.status().stored.errors >= 1 })
	for range 2 {
		refreshNow(c)
	}
	waitUntil(t, 5*time.Second, "three failed writes", func() bool { return c.status().stored.errors >= 3 })
	got := storageWarnings(logs)
	if len(got) != 1 || !strings.Contains(got[0].Message, "could not store") {
		t.Fatalf("want one warning about storing, got %v", logs.All())
	}
	if ps := adminProvider(t, "persist-unwritable", idp.url()); ps["store_error"] == nil || ps["last_stored"] != nil {
		t.Fatalf("admin API: store_error %v, last_stored %v", ps["store_error"], ps["last_stored"])
	}
	if v, ok := sample(t, "caddy_oauth2_jwt_key_storage_writes_total", "provider=persist-unwritable", "result=error"); !ok || v != 3 {
		t.Fatalf("key_storage_writes_total{result=error} = %v (present %v), want 3", v, ok)
	}
	if v, ok := sample(t, "caddy_oauth2_jwt_key_storage_writes_total", "provider=persist-unwritable", "result=success"); !ok || v != 0 {
		t.Fatalf("key_storage_writes_total{result=success} = %v (present %v), want 0", v, ok)
	}
}

// TestPersistKeysOff: with persist_keys off nothing is read from or
// written to storage, and jwks_file providers never touch it.
func TestPersistKeysOff(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	st := newMemStorage()
	clk := &testClock{}
	source := idp.url() + "/jwks"
	stored := persistJSON(t, storedKeys{Version: 1, Source: source, FetchedAt: clk.now(), JWKSURI: source, JWKS: json.RawMessage(`{"keys":[` + string(persistJSON(t, k.public())) + `]}`)})
	st.put(source, stored)
	idp.setStatus(http.StatusServiceUnavailable)

	off := false
	p := jwksProvider(idp)
	p.PersistKeys = &off
	h, _ := persistHandler(t, "persist-off", p, st, clk)
	tok := k.sign(t, claimsFor(idp.url(), "api"), nil)
	expectReason(t, serve(t, h, bearer(tok)), http.StatusServiceUnavailable, "unavailable")
	idp.setStatus(0)
	refreshUntilUsable(t, cacheOf(t, h, idp.url()))
	expectReason(t, serve(t, h, bearer(tok)), http.StatusOK, "")
	if ps := adminProvider(t, "persist-off", idp.url()); ps["storage_key"] != nil {
		t.Fatalf("storage_key = %v with persist_keys off", ps["storage_key"])
	}

	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, []byte(`{"keys":[`+string(persistJSON(t, k.public()))+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	persistHandler(t, "persist-file", &Provider{Issuer: "https://file.example", Audiences: []string{"api"}, JWKSFile: file}, st, clk)

	if loads, stores := st.loads.Load(), st.stores.Load(); loads != 0 || stores != 0 {
		t.Fatalf("storage used %d loads, %d stores; want none", loads, stores)
	}
	if !bytes.Equal(st.get(source), stored) {
		t.Fatal("the stored entry changed")
	}
}

// TestPersistCacheFollowsStorage: providers persisting to different
// storages, or one not persisting, get different key caches (each writes
// only where it was told to); the same storage shares one cache.
func TestPersistCacheFollowsStorage(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	a, b := newMemStorage(), newMemStorage()
	clk := &testClock{}
	off := false
	pOff := jwksProvider(idp)
	pOff.PersistKeys = &off
	ha1, _ := persistHandler(t, "persist-pool", jwksProvider(idp), a, clk)
	ha2, _ := persistHandler(t, "persist-pool", jwksProvider(idp), a, clk)
	hb, _ := persistHandler(t, "persist-pool", jwksProvider(idp), b, clk)
	hOff, _ := persistHandler(t, "persist-pool", pOff, a, clk)
	ca1, ca2, cb, cOff := cacheOf(t, ha1, idp.url()), cacheOf(t, ha2, idp.url()), cacheOf(t, hb, idp.url()), cacheOf(t, hOff, idp.url())
	if ca1 != ca2 {
		t.Error("two handlers with one storage got two key caches")
	}
	if ca1 == cb || ca1 == cOff || cb == cOff {
		t.Error("handlers with different storages (or none) share a key cache")
	}
	a.nextWrite(t)
	b.nextWrite(t)
	if sa, sb := a.stores.Load(), b.stores.Load(); sa != 1 || sb != 1 {
		t.Errorf("stores: %d to a, %d to b; want 1 each", sa, sb)
	}
}

// TestPersistStoresPublicKeysOnly: a provider publishing a private key by
// mistake: the stored JWKS has no private member, and the restored public
// key still verifies.
func TestPersistStoresPublicKeysOnly(t *testing.T) {
	k := newTestKey(t, "k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	private, err := json.Marshal(jose.JSONWebKey{Key: k.priv, KeyID: "k1", Algorithm: "ES256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(private), `"d":`) {
		t.Fatalf("test key has no private member: %s", private)
	}
	idp.setRawJWKS(`{"keys":[` + string(private) + `],"extra":"dropped"}`)
	st := newMemStorage()
	clk := &testClock{}
	h1, _ := persistHandler(t, "persist-public", jwksProvider(idp), st, clk)
	waitForKeys(t, h1)
	e := st.nextWrite(t)
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(e.JWKS, &doc); err != nil || len(doc.Keys) != 1 {
		t.Fatalf("stored JWKS %s: %v", e.JWKS, err)
	}
	for _, m := range privateJWKMembers {
		if _, ok := doc.Keys[0][m]; ok {
			t.Fatalf("stored JWKS holds private member %q: %s", m, e.JWKS)
		}
	}
	if strings.Contains(string(st.get(idp.url()+"/jwks")), "dropped") {
		t.Fatalf("stored JWKS keeps members other than keys: %s", e.JWKS)
	}
	if err := h1.Cleanup(); err != nil {
		t.Fatal(err)
	}
	idp.setStatus(http.StatusServiceUnavailable)
	h2, _ := persistHandler(t, "persist-public", jwksProvider(idp), st, clk)
	expectReason(t, serve(t, h2, bearer(k.sign(t, claimsFor(idp.url(), "api"), nil))), http.StatusOK, "")
}

// TestPersistKeysOption: `persist_keys on|off` in a Caddyfile provider
// block and "persist_keys" in JSON; the default is on; persist_keys with
// jwks_file and values other than on/off are refused.
func TestPersistKeysOption(t *testing.T) {
	parse := func(body string) (*Provider, error) {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("oauth2_jwt {\n\tprovider p {\n" + body + "\n\t}\n}"))
		return h.Providers["p"], err
	}
	const base = "issuer https://idp.example\naudience api\n"
	for _, tc := range []struct {
		body string
		want *bool
		err  string
	}{
		{body: base},
		{body: base + "persist_keys off", want: new(bool)},
		{body: base + "persist_keys on", want: func() *bool { b := true; return &b }()},
		{body: base + "persist_keys no", err: `persist_keys: "no" is not on or off`},
		{body: base + "persist_keys", err: "wrong argument count"},
		{body: base + "persist_keys on off", err: "wrong argument count"},
		{body: base + "persist_keys off\npersist_keys on", err: "specified more than once"},
		{body: "issuer https://idp.example\naudience api\njwks_file keys.json\npersist_keys off", err: "persist_keys: only for keys fetched over the network"},
	} {
		p, err := parse(tc.body)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.body, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.body, err)
		case (p.PersistKeys == nil) != (tc.want == nil) || (p.PersistKeys != nil && *p.PersistKeys != *tc.want):
			t.Errorf("%q: PersistKeys = %v, want %v", tc.body, p.PersistKeys, tc.want)
		}
	}

	for _, tc := range []struct {
		json    string
		persist bool
	}{
		{`{"issuer":"https://idp.example","audiences":["api"]}`, true},
		{`{"issuer":"https://idp.example","audiences":["api"],"persist_keys":true}`, true},
		{`{"issuer":"https://idp.example","audiences":["api"],"persist_keys":false}`, false},
	} {
		var p Provider
		if err := json.Unmarshal([]byte(tc.json), &p); err != nil {
			t.Fatal(err)
		}
		_, spec, err := p.compile("p")
		if err != nil || spec.persist != tc.persist {
			t.Errorf("%s: persist %v (%v), want %v", tc.json, spec.persist, err, tc.persist)
		}
	}
	var p Provider
	if err := json.Unmarshal([]byte(`{"issuer":"https://idp.example","audiences":["api"],"jwks_file":"k.json","persist_keys":false}`), &p); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.compile("p"); err == nil || !strings.Contains(err.Error(), "persist_keys") {
		t.Errorf("persist_keys with jwks_file in JSON: error %v", err)
	}
}

// Integration: a real Caddy with its file-system storage.

// persistGlobals are integrationGlobals with the storage in dir.
func persistGlobals(dir string) string {
	return strings.Replace(integrationGlobals, "\tdefault_bind 127.0.0.1\n", "\tdefault_bind 127.0.0.1\n\tstorage file_system "+dir+"\n", 1)
}

// persistSite is a site whose provider persists its keys.
func persistSite(addr string, idp *testIdP) string {
	return fmt.Sprintf(`
http://%s {
	oauth2_jwt {
		provider fleet {
			issuer %s
			audience api
			jwks_uri %s/jwks
			max_stale 1h
		}
	}
	respond "hello {http.auth.user.id}"
}
`, addr, idp.url(), idp.url())
}

// adminGet returns a provider's entry in GET <base>/oauth2_jwt/providers.
func adminGet(t *testing.T, base, name string) map[string]any {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/oauth2_jwt/providers", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", base)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Providers []map[string]any `json:"providers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	for _, p := range body.Providers {
		if p["name"] == name {
			return p
		}
	}
	return nil
}

// TestIntegrationPersistRestartAndFleet: a real Caddy with `storage
// file_system <dir>` fetches the keys and stores them; it stops (its
// config unloaded, so its key cache is gone); the provider goes down; 30
// minutes later Caddy starts again and its first answer to the token is
// 200, the admin API says "storage"; a second Caddy process started only
// now, on the same storage directory, accepts the token too (the fleet
// case); 61 minutes after the original fetch (31 after the restart) the
// first Caddy answers 503. Then a corrupt entry: Caddy starts and answers
// 503 as it would without persistence.
func TestIntegrationPersistRestartAndFleet(t *testing.T) {
	clk := &testClock{}
	now := clk.now
	clockOverride.Store(&now)
	t.Cleanup(func() { clockOverride.Store(nil) })

	k := newTestKey(t, "fleet-k1", jose.ES256, 0)
	idp := newTestIdP(t, k)
	dir := t.TempDir()
	config := persistGlobals(dir) + persistSite("localhost:9080", idp)
	tok := k.sign(t, longLived(claimsFor(idp.url(), "api")), nil)

	tc := newIntegrationTester(t, config, "caddyfile")
	waitForStatus(t, tc, "/", tok, http.StatusOK, 10*time.Second)
	entryFile := filepath.Join(dir, filepath.FromSlash(storageKey(idp.url()+"/jwks")))
	var entry storedKeys
	waitUntil(t, 5*time.Second, "the stored JWKS", func() bool {
		data, err := os.ReadFile(entryFile)
		return err == nil && json.Unmarshal(data, &entry) == nil
	})
	first := adminGet(t, adminBase, "fleet")
	if first["key_origin"] != "network" || first["last_success"] != entry.FetchedAt.Format(time.RFC3339Nano) {
		t.Fatalf("before the restart: key_origin %v, last_success %v, stored fetched_at %s", first["key_origin"], first["last_success"], entry.FetchedAt)
	}

	// Stop: a config without the provider unloads its key cache.
	stopped := persistGlobals(dir) + "\nhttp://localhost:9080 {\n\trespond \"stopped\"\n}\n"
	if res := call(t, newIntegrationTester(t, stopped, "caddyfile"), "/", tok); res.body != "stopped" {
		t.Fatalf("the stopped config answers %d %q", res.status, res.body)
	}
	if p := adminGet(t, adminBase, "fleet"); p != nil {
		t.Fatalf("provider still loaded after its config was unloaded: %v", p)
	}
	idp.srv.Close()
	clk.advance(30 * time.Minute)

	tc = newIntegrationTester(t, config, "caddyfile")
	if res := call(t, tc, "/", tok); res.status != http.StatusOK || res.body != "hello user-42" {
		t.Fatalf("first request after the restart: %d %q, want 200", res.status, res.body)
	}
	p := adminGet(t, adminBase, "fleet")
	if p["key_origin"] != "storage" || p["ready"] != true || p["last_success"] != first["last_success"] || !strings.HasPrefix(fmt.Sprint(p["keys_age"]), "30m") {
		t.Fatalf("after the restart: %v", p)
	}

	fleetNode(t, dir, idp, tok)

	clk.advance(31 * time.Minute)
	if res := call(t, tc, "/", tok); res.status != http.StatusServiceUnavailable {
		t.Fatalf("61m after the original fetch: %d %q, want 503", res.status, res.body)
	}

	// A corrupt entry: Caddy starts as without persistence.
	newIntegrationTester(t, stopped, "caddyfile")
	if err := os.WriteFile(entryFile, []byte(`{"version":1,"jwks":`), 0o600); err != nil {
		t.Fatal(err)
	}
	tc = newIntegrationTester(t, config, "caddyfile")
	if res := call(t, tc, "/", tok); res.status != http.StatusServiceUnavailable {
		t.Fatalf("corrupt entry, provider down: %d %q, want 503", res.status, res.body)
	}
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// fleetNode runs a second Caddy process (this test binary through Caddy's
// main) on the storage directory dir while the provider is down: its first
// answer to tok is 200 and its admin API says the keys came from storage.
func fleetNode(t *testing.T, dir string, idp *testIdP, tok string) {
	t.Helper()
	admin, site := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n\tauto_https off\n\tskip_install_trust\n\tstorage file_system %s\n}\n", admin, dir) +
		persistSite(site, idp)
	cfgFile := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	args, _ := json.Marshal([]string{"caddy", "run", "--config", cfgFile, "--adapter", "caddyfile"})
	self, err := os.Executable() // not os.Args[0]: caddytest rewrites os.Args to start its Caddy
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^TestPersistCaddyProcessHelper$")
	cmd.Env = append(os.Environ(), "OAUTH2JWT_PERSIST_CADDY_ARGS="+string(args), "HOME="+home,
		"XDG_DATA_HOME="+filepath.Join(home, "data"), "XDG_CONFIG_HOME="+filepath.Join(home, "config"))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("second Caddy's output:\n%s", logs.String())
		}
	}()

	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, "http://"+site+"/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "hello user-42" {
				t.Fatalf("second Caddy's first answer: %d %q, want 200", resp.StatusCode, body)
			}
			break
		}
		select {
		case <-exited:
			t.Fatalf("second Caddy exited before serving")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("second Caddy not serving after 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p := adminGet(t, "http://"+admin, "fleet"); p == nil || p["key_origin"] != "storage" {
		t.Fatalf("second Caddy's admin API: %v", p)
	}
}

// TestPersistCaddyProcessHelper is the second Caddy of fleetNode.
func TestPersistCaddyProcessHelper(t *testing.T) {
	args := os.Getenv("OAUTH2JWT_PERSIST_CADDY_ARGS")
	if args == "" {
		t.Skip("helper process for TestIntegrationPersistRestartAndFleet")
	}
	if err := json.Unmarshal([]byte(args), &os.Args); err != nil {
		t.Fatal(err)
	}
	caddycmd.Main()
	os.Exit(0)
}
