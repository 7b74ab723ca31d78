package oauth2jwt

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// reject answers a failed authentication: the challenge header, the reason
// placeholder, a debug log line, and a Caddy error with the status.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, p *provider, e *authError) error {
	if p != nil {
		p.counters[e.reason].Inc()
	} else {
		h.obs.anonCount[e.reason].Inc()
	}
	info := reasons[e.reason]
	status := info.status
	if e.reason == reasonMissingToken {
		status = h.req.missing
	}
	hdr := w.Header()
	hdr.Set("WWW-Authenticate", h.req.challenges[e.reason])
	if e.reason == reasonUnavailable {
		hdr.Set("Retry-After", retryAfterHeader(e.retryAfter))
	}
	if repl != nil {
		repl.Set("http.auth.jwt.error", info.code)
		repl.Map(anonymousPlaceholders)
	}
	if h.req.problems != nil {
		hdr.Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		_, err := w.Write(h.req.problems[e.reason])
		h.logRejection(r, p, e, status)
		return err
	}
	h.logRejection(r, p, e, status)
	return caddyhttp.Error(status, e)
}

// logRejection logs a rejection once, at debug level, with what matches
// it to the access log line (method, host, path: never the query, which
// may hold a token) and a detail that is never empty.
func (h *Handler) logRejection(r *http.Request, p *provider, e *authError, status int) {
	if ce := h.obs.logger.Check(zapcore.DebugLevel, "bearer token rejected"); ce != nil {
		name := ""
		if p != nil {
			name = p.name
		}
		ce.Write(zap.String("provider", name), zap.String("reason", reasons[e.reason].code),
			zap.String("detail", e.explain()), zap.Int("status", status),
			zap.String("method", r.Method), zap.String("host", r.Host), zap.String("path", r.URL.Path))
	}
}

// challenges holds the WWW-Authenticate values for every reason, computed
// once at Provision so that rejections do no string formatting.
type challenges [reasonCount]string

// buildChallenges computes the challenges. scopes is the space-separated
// list of every scope the handler's rules name (the scope attribute of
// insufficient_scope: all the scopes a token needs, in one challenge, so
// that a client asks for them at once), metadataURL the RFC 9728 resource
// metadata URL. With metadataURL, 401 and 403 challenges carry
// resource_metadata, and 401 challenges carry the scopes too (MCP clients
// read them to choose the scopes of their first authorization request).
func buildChallenges(realm string, missingStatus int, scopes, metadataURL string) challenges {
	var c challenges
	for r := reason(1); r < reasonCount; r++ {
		info := reasons[r]
		var params []string
		if realm != "" {
			params = append(params, "realm="+quote(realm))
		}
		status := info.status
		switch r {
		case reasonMissingToken:
			status = missingStatus
			if missingStatus != http.StatusUnauthorized {
				params = append(params, `error="invalid_request"`, "error_description="+quote(info.description))
			}
			// With 401, RFC 6750 section 3.1: no error code when the
			// request carried no authentication information.
		case reasonInvalidRequest:
			params = append(params, `error="invalid_request"`, "error_description="+quote(info.description))
		case reasonUnavailable:
		case reasonForbidden:
			params = append(params, `error="insufficient_scope"`, "error_description="+quote(info.description))
			if scopes != "" {
				params = append(params, "scope="+quote(scopes))
			}
		default:
			params = append(params, `error="invalid_token"`, "error_description="+quote(info.description))
		}
		if metadataURL != "" && (status == http.StatusUnauthorized || status == http.StatusForbidden) {
			if status == http.StatusUnauthorized && scopes != "" {
				params = append(params, "scope="+quote(scopes))
			}
			params = append(params, "resource_metadata="+quote(metadataURL))
		}
		if len(params) == 0 {
			c[r] = "Bearer"
		} else {
			c[r] = "Bearer " + strings.Join(params, ", ")
		}
	}
	return c
}

// problems holds RFC 9457 problem+json bodies per reason, for
// error_format json.
type problems [reasonCount][]byte

func buildProblems(missingStatus int) problems {
	var p problems
	for r := reason(1); r < reasonCount; r++ {
		info := reasons[r]
		status := info.status
		if r == reasonMissingToken {
			status = missingStatus
		}
		body, _ := json.Marshal(struct {
			Type   string `json:"type"`
			Title  string `json:"title"`
			Status int    `json:"status"`
			Detail string `json:"detail"`
			Code   string `json:"code"`
		}{"about:blank", http.StatusText(status), status, info.description, info.code})
		p[r] = body
	}
	return p
}

// quote renders s as an RFC 9110 quoted-string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

func retryAfterHeader(seconds int) string {
	if seconds < 1 {
		seconds = 1
	}
	return strconv.Itoa(seconds)
}
