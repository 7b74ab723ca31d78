// Command memory drives Caddy + oauth2_jwt with many distinct valid tokens
// and samples the Caddy process's resident memory (VmRSS), to show that the
// verified-token cache stops growing at its bound. bench/memory.sh runs it.
//
// Tokens are minted in-process with the demo key (ES256, issuer
// http://127.0.0.1:9081, audience demo-api), each with its own sub and jti,
// by the same goroutines that send them: nothing is kept in memory.
package main

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

type sample struct {
	n       int64
	rssKiB  int64
	elapsed time.Duration
}

func main() {
	url := flag.String("url", "", "URL of the protected site")
	pid := flag.Int("pid", 0, "pid of the Caddy process to sample")
	tokens := flag.Int64("tokens", 1_000_000, "distinct tokens to send")
	conns := flag.Int("conns", 64, "concurrent keep-alive connections")
	every := flag.Int64("every", 50_000, "sample VmRSS every this many requests")
	keyFile := flag.String("key", "demo/demo-private.jwk", "private JWK to sign with")
	flag.Parse()
	if *url == "" || *pid == 0 || *tokens <= 0 || *conns <= 0 || *every <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*url, *pid, *tokens, *conns, *every, *keyFile); err != nil {
		fmt.Fprintln(os.Stderr, "memory:", err)
		os.Exit(1)
	}
}

func run(url string, pid int, tokens int64, conns int, every int64, keyFile string) error {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	var key jose.JSONWebKey
	if err := json.Unmarshal(data, &key); err != nil {
		return fmt.Errorf("%s: %w", keyFile, err)
	}
	priv, ok := key.Key.(*ecdsa.PrivateKey)
	if !ok || key.Algorithm != "ES256" {
		return fmt.Errorf("%s: not an ES256 private key", keyFile)
	}
	// The header is the same for every token: encode it once.
	header := base64.RawURLEncoding.EncodeToString(
		[]byte(`{"alg":"ES256","kid":"` + key.KeyID + `","typ":"JWT"}`))
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			DisableCompression:  true,
		},
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	now := time.Now()
	iat := strconv.FormatInt(now.Unix(), 10)
	exp := strconv.FormatInt(now.Add(2*time.Hour).Unix(), 10)
	// Every claim but sub and jti is the same for every token.
	claimsTail := `,"iss":"http://127.0.0.1:9081","aud":"demo-api","iat":` + iat +
		`,"nbf":` + iat + `,"exp":` + exp + `,"scope":"read:demo"}`

	start := time.Now()
	rss0, err := rssKiB(pid)
	if err != nil {
		return err
	}
	var (
		next, done, failed atomic.Int64
		mu                 sync.Mutex
		samples            = []sample{{0, rss0, 0}}
		firstErr           atomic.Value
		wg                 sync.WaitGroup
	)
	for range conns {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > tokens || failed.Load() > 100 {
					return
				}
				id := strconv.FormatInt(i, 10)
				payload := `{"sub":"user-` + id + `","jti":"` + run + "-" + id + `"` + claimsTail
				tok, err := signES256(priv, header, payload)
				if err == nil {
					err = send(client, url, tok)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				n := done.Add(1)
				if n%every == 0 || n == tokens {
					if kib, err := rssKiB(pid); err == nil {
						mu.Lock()
						samples = append(samples, sample{n, kib, time.Since(start)})
						mu.Unlock()
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d failed requests, first: %v", f, firstErr.Load())
	}

	sort.Slice(samples, func(i, j int) bool { return samples[i].n < samples[j].n })
	fmt.Printf("%10s %10s %8s\n", "requests", "RSS MiB", "time")
	for _, s := range samples {
		fmt.Printf("%10d %10.1f %7.0fs\n", s.n, mib(s.rssKiB), s.elapsed.Seconds())
	}
	// Plateau: median of the samples in the second half of the run.
	var tail []int64
	for _, s := range samples {
		if s.n > tokens/2 {
			tail = append(tail, s.rssKiB)
		}
	}
	sort.Slice(tail, func(i, j int) bool { return tail[i] < tail[j] })
	peak := int64(0)
	for _, s := range samples {
		peak = max(peak, s.rssKiB)
	}
	fmt.Printf("sent %d distinct tokens in %.0fs (%.0f req/s), 0 failed\n",
		done.Load(), elapsed.Seconds(), float64(done.Load())/elapsed.Seconds())
	fmt.Printf("RSS start %.1f MiB, peak %.1f MiB\n", mib(rss0), mib(peak))
	// Machine-readable line for bench/memory.sh.
	fmt.Printf("PLATEAU_KIB %d\n", tail[len(tail)/2])
	return nil
}

// signES256 returns the compact JWS of payload: go-jose's signer does the
// same with more allocations, and the client shares the CPU with Caddy.
func signES256(priv *ecdsa.PrivateKey, header, payload string) (string, error) {
	input := header + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, priv, digest[:])
	if err != nil {
		return "", err
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig[:]), nil
}

func send(client *http.Client, url, tok string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// rssKiB reads VmRSS from /proc/<pid>/status.
func rssKiB(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func mib(kib int64) float64 { return float64(kib) / 1024 }
