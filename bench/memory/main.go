// Command memory drives a Caddy with a churn of distinct valid tokens and
// samples the Caddy process's resident memory, so that bench/memory.sh can
// tell what the verified-token cache costs per entry while it evicts (not
// only once it is full and idle).
//
// The tokens come from a file, one per line (bench/tokens mints them): each
// request sends one drawn uniformly at random, so with 50,000 tokens and
// cache_size 10000 about one request in five is a hit and the rest verify
// a token and evict another. Every -every requests it reads VmRSS from
// /proc/<pid>/status; at the end it prints the samples, the plateau (the
// median of the samples of the second half of the run), the peak (VmHWM,
// the kernel's high-water mark, which no sampling can miss) and the
// machine-readable lines bench/memory.sh reads.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// options are the command-line flags.
type options struct {
	url      string
	pid      int
	file     string
	requests int64
	conns    int
	every    int64
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "", "URL of the site")
	flag.IntVar(&o.pid, "pid", 0, "pid of the Caddy process to sample")
	flag.StringVar(&o.file, "tokens", "", "file of tokens, one per line")
	flag.Int64Var(&o.requests, "requests", 300_000, "requests to send")
	flag.IntVar(&o.conns, "conns", 32, "concurrent keep-alive connections")
	flag.Int64Var(&o.every, "every", 0, "sample VmRSS every this many requests (default requests/40)")
	flag.Parse()
	if o.every == 0 {
		o.every = max(o.requests/40, 1)
	}
	if flag.NArg() > 0 || o.url == "" || o.pid <= 0 || o.file == "" || o.requests <= 0 || o.conns <= 0 || o.every <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "memory:", err)
		os.Exit(1)
	}
}

// sample is one VmRSS reading after n requests.
type sample struct {
	n       int64
	rssKiB  int64
	elapsed time.Duration
}

func run(o options) error {
	tokens, err := readTokens(o.file)
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        o.conns,
			MaxIdleConnsPerHost: o.conns,
			MaxConnsPerHost:     o.conns,
			DisableCompression:  true,
		},
	}
	defer client.CloseIdleConnections()
	rss0, err := procStatusKiB(o.pid, "VmRSS:")
	if err != nil {
		return err
	}
	start := time.Now()
	var (
		next, done, failed atomic.Int64
		firstErr           atomic.Value
		mu                 sync.Mutex
		samples            = []sample{{0, rss0, 0}}
		wg                 sync.WaitGroup
	)
	for g := range o.conns {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g)+1, uint64(start.UnixNano())))
			for next.Add(1) <= o.requests && failed.Load() <= 100 {
				if err := send(client, o.url, tokens[rng.IntN(len(tokens))]); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				if n := done.Add(1); n%o.every == 0 {
					if kib, err := procStatusKiB(o.pid, "VmRSS:"); err == nil {
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
	peak, err := procStatusKiB(o.pid, "VmHWM:")
	if err != nil {
		return err
	}

	slices.SortFunc(samples, func(a, b sample) int { return int(a.n - b.n) })
	fmt.Printf("%10s %10s %8s\n", "requests", "RSS MiB", "time")
	for _, s := range samples {
		fmt.Printf("%10d %10.1f %7.0fs\n", s.n, mib(s.rssKiB), s.elapsed.Seconds())
	}
	var tail []int64
	for _, s := range samples {
		if s.n > o.requests/2 {
			tail = append(tail, s.rssKiB)
		}
	}
	if len(tail) == 0 {
		return errors.New("no sample in the second half of the run: lower -every")
	}
	slices.Sort(tail)
	plateau := tail[len(tail)/2]
	fmt.Printf("sent %d requests over %d distinct tokens in %.0fs (%.0f req/s), 0 failed\n",
		done.Load(), len(tokens), elapsed.Seconds(), float64(done.Load())/elapsed.Seconds())
	fmt.Printf("RSS start %.1f MiB, plateau %.1f MiB, peak (VmHWM) %.1f MiB\n", mib(rss0), mib(plateau), mib(peak))
	// Machine-readable lines for bench/memory.sh.
	fmt.Printf("PLATEAU_KIB %d\nPEAK_KIB %d\n", plateau, peak)
	return nil
}

// readTokens reads the non-empty lines of file.
func readTokens(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no tokens", file)
	}
	return out, nil
}

// send makes one request with tok and checks that it was accepted.
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

// procStatusKiB reads one "Key: N kB" field of /proc/<pid>/status.
func procStatusKiB(pid int, key string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, key); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}

func mib(kib int64) float64 { return float64(kib) / 1024 }
