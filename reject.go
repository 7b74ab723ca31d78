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

// authScheme is the authentication scheme a request's token came with, or
// schemeNone when none was found (or the header was malformed). It picks
// the challenge that carries the error (RFC 9449 section 7.2).
type authScheme uint8

const (
	schemeNone authScheme = iota
	schemeBearer
	schemeDPoP
	schemeCount
)

// reject answers a failed authentication: the challenge header, the reason
// placeholder, a debug log line, and a Caddy error with the status.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, p *provider, e *authError, s authScheme) error {
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
	hdr.Set("WWW-Authenticate", h.req.challenges[s][e.reason])
	if e.reason == reasonUnavailable {
		hdr.Set("Retry-After", retryAfterHeader(e.retryAfter))
	}
	if d := h.bind.dpop; d != nil {
		if e.reason == reasonDPoPNonceRequired && d.nonce != nil {
			hdr.Set("DPoP-Nonce", d.nonce.mint(h.verifier.now()))
			hdr.Set("Cache-Control", "no-store")
		}
		if r.Header.Get("Origin") != "" {
			// Browser clients read the challenge and the nonce.
			hdr.Add("Access-Control-Expose-Headers", "WWW-Authenticate, DPoP-Nonce")
		}
	} else if r.Header.Get("Origin") != "" {
		hdr.Add("Access-Control-Expose-Headers", "WWW-Authenticate")
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

// challenges holds the WWW-Authenticate values for every scheme and
// reason, computed once at Provision so that rejections do no string
// formatting.
type challenges [schemeCount][reasonCount]string

// dpopChallenge is what the DPoP challenge needs of the dpop block.
type dpopChallenge struct {
	algs     string // the algs attribute
	required bool   // Bearer is not offered
}

// buildChallenges computes the challenges. scopes is the space-separated
// list of every scope the handler's rules name (the scope attribute of
// insufficient_scope: all the scopes a token needs, in one challenge, so
// that a client asks for them at once), metadataURL the RFC 9728 resource
// metadata URL. With metadataURL, 401 and 403 challenges carry
// resource_metadata, and 401 challenges carry the scopes too (MCP clients
// read them to choose the scopes of their first authorization request).
//
// With dpop (RFC 9449 section 7.1, 7.2), a request without credentials
// gets both a Bearer and a `DPoP algs="..."` challenge (only DPoP under
// mode required), and the error goes in the challenge of the scheme the
// token came with; an invalid request (both schemes at once, say) has it
// in both.
func buildChallenges(realm string, missingStatus int, scopes, metadataURL string, dpop *dpopChallenge) challenges {
	var c challenges
	for r := reason(1); r < reasonCount; r++ {
		info := reasons[r]
		var errParams, tail []string
		status := info.status
		switch r {
		case reasonMissingToken:
			status = missingStatus
			if missingStatus != http.StatusUnauthorized {
				errParams = append(errParams, `error="invalid_request"`, "error_description="+quote(info.description))
			}
			// With 401, RFC 6750 section 3.1: no error code when the
			// request carried no authentication information.
		case reasonInvalidRequest:
			errParams = append(errParams, `error="invalid_request"`, "error_description="+quote(info.description))
		case reasonUnavailable:
		case reasonForbidden:
			errParams = append(errParams, `error="insufficient_scope"`, "error_description="+quote(info.description))
			if scopes != "" {
				errParams = append(errParams, "scope="+quote(scopes))
			}
		case reasonDPoPProofMissing, reasonDPoPProofInvalid, reasonDPoPProofReplayed:
			errParams = append(errParams, `error="invalid_dpop_proof"`, "error_description="+quote(info.description))
		case reasonDPoPNonceRequired:
			errParams = append(errParams, `error="use_dpop_nonce"`, "error_description="+quote(info.description))
		default:
			errParams = append(errParams, `error="invalid_token"`, "error_description="+quote(info.description))
		}
		if metadataURL != "" && (status == http.StatusUnauthorized || status == http.StatusForbidden) {
			if status == http.StatusUnauthorized && scopes != "" {
				tail = append(tail, "scope="+quote(scopes))
			}
			tail = append(tail, "resource_metadata="+quote(metadataURL))
		}
		var head []string
		if realm != "" {
			head = append(head, "realm="+quote(realm))
		}
		bearer := func(withError bool) string {
			params := append([]string(nil), head...)
			if withError {
				params = append(params, errParams...)
			}
			params = append(params, tail...)
			if len(params) == 0 {
				return "Bearer"
			}
			return "Bearer " + strings.Join(params, ", ")
		}
		if dpop == nil {
			for s := range schemeCount {
				c[s][r] = bearer(true)
			}
			continue
		}
		dpopCh := func(withError bool) string {
			params := append([]string(nil), head...)
			if withError {
				params = append(params, errParams...)
			}
			params = append(params, "algs="+quote(dpop.algs))
			params = append(params, tail...)
			return "DPoP " + strings.Join(params, ", ")
		}
		both := func(bearerErr, dpopErr bool) string {
			if dpop.required && !bearerErr {
				return dpopCh(dpopErr)
			}
			return bearer(bearerErr) + ", " + dpopCh(dpopErr)
		}
		c[schemeNone][r] = both(len(errParams) > 0 && !dpop.required, len(errParams) > 0)
		c[schemeBearer][r] = both(true, false)
		c[schemeDPoP][r] = both(false, true)
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
