package oauth2jwt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	// maxBodySize caps every JWKS and discovery response (and jwks_file).
	maxBodySize = 1 << 20
	// maxRedirects caps redirects followed by a key fetch.
	maxRedirects = 3
	// minDerivedRefresh and maxDerivedRefresh bound a refresh interval
	// taken from the response's Cache-Control max-age.
	minDerivedRefresh = time.Minute
	maxDerivedRefresh = 24 * time.Hour
)

// fetcher gets key documents (JWKS, discovery) over HTTP with the module's
// policy: one timeout per request, a body cap, at most maxRedirects
// redirects and never from https to http, and the URL policy of
// checkFetchURL on every hop.
type fetcher struct {
	client  *http.Client
	timeout time.Duration
}

func newFetcher(timeout time.Duration, insecureHTTP bool) *fetcher {
	return &fetcher{
		timeout: timeout,
		client: &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				Proxy:                 http.ProxyFromEnvironment,
				DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
				TLSHandshakeTimeout:   timeout,
				ResponseHeaderTimeout: timeout,
				MaxIdleConns:          2,
				IdleConnTimeout:       90 * time.Second,
				ForceAttemptHTTP2:     true,
			},
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) > maxRedirects {
					return fmt.Errorf("stopped after %d redirects", maxRedirects)
				}
				if via[len(via)-1].URL.Scheme == "https" && req.URL.Scheme != "https" {
					return errors.New("refusing a redirect from https to " + req.URL.Scheme)
				}
				return checkFetchURL(req.URL, insecureHTTP)
			},
		},
	}
}

// close drops the fetcher's idle connections.
func (f *fetcher) close() { f.client.CloseIdleConnections() }

// get fetches one document with the size cap, and returns its body, status
// and Cache-Control max-age.
func (f *fetcher) get(ctx context.Context, rawURL string) ([]byte, int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, 0, 0, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	req.Header.Set("User-Agent", "caddy-oauth2-jwt")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, 0, 0, f.timeoutErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, resp.StatusCode, 0, fmt.Errorf("unexpected HTTP status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "text/html" {
			return nil, resp.StatusCode, 0, errors.New("response is an HTML page, not JSON")
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodySize+1))
	if err != nil {
		return nil, resp.StatusCode, 0, fmt.Errorf("reading body: %w", f.timeoutErr(err))
	}
	if len(body) > maxBodySize {
		return nil, resp.StatusCode, 0, fmt.Errorf("response body exceeds %d bytes", maxBodySize)
	}
	return body, resp.StatusCode, maxAge(resp.Header.Get("Cache-Control")), nil
}

// timeoutErr names a timeout as one, whichever layer noticed it.
func (f *fetcher) timeoutErr(err error) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("timed out after fetch_timeout %s: %w", f.timeout, err)
	}
	return err
}

// maxAge returns the max-age of a Cache-Control header, or 0.
func maxAge(cc string) time.Duration {
	for part := range strings.SplitSeq(cc, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || !strings.EqualFold(name, "max-age") {
			continue
		}
		n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
		if err != nil || n <= 0 {
			return 0
		}
		if n > int64(maxDerivedRefresh/time.Second) {
			return maxDerivedRefresh
		}
		return time.Duration(n) * time.Second
	}
	return 0
}

// checkFetchURL allows https, and http only for loopback hosts unless
// insecureHTTP is set.
func checkFetchURL(u *url.URL, insecureHTTP bool) error {
	switch u.Scheme {
	case "https":
	case "http":
		if !insecureHTTP && !isLoopbackHost(u.Hostname()) {
			return fmt.Errorf("%q is plain http on a non-loopback host (use https, or set insecure_http)", u.Redacted())
		}
	default:
		return fmt.Errorf("%q: scheme must be https (or http)", u.Redacted())
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", u.Redacted())
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
