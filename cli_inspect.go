package oauth2jwt

import (
	"context"
	"crypto"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"
)

func inspectCommand() *cobra.Command {
	var configFile, adapter, proof, proofFile, method, rawURL string
	var introspect bool
	c := &cobra.Command{
		Use:   "inspect [--config <file>] [--adapter <name>] [--introspect] [--dpop <proof> --method GET --url <url>] < token",
		Short: "Explain why a token (read on stdin) is accepted or rejected",
		Long: `Reads a token on stdin (a leading "Bearer " is ignored) and prints its header
and claims.

With --config, finds every oauth2_jwt handler of that config (naming the server,
listen address, host and path it sits under), fetches their keys as the module
would, and runs every check in order, saying which one fails and why: for an
unknown issuer the issuers that would be accepted, for a wrong audience the
token's audiences and the accepted ones. The config is read as "caddy run"
reads it: the caddyfile adapter for files named Caddyfile*, *.caddyfile, else
JSON, unless --adapter is given.

With --dpop <proof> (or --dpop-file), the token is taken as sent with
"Authorization: DPoP" and that proof, for the request --method --url (the URL
the client called, as the proof's htu must name it): after the token's own
checks, the handler's DPoP proof checks (RFC 9449) and its cnf binding run, and
the first that fails is named with its reason (dpop_proof_invalid,
dpop_nonce_required, key_binding_mismatch...). Without --dpop, a token bound to
a DPoP key (cnf.jkt) is refused as the module refuses it when sent as Bearer.
inspect presents no client certificate, so a certificate-bound token
(cnf.x5t#S256) fails its binding check.

An opaque token (not a compact JWS) goes, as in the module, to the
introspection provider its token_prefix selects. With --introspect, inspect
asks that provider's endpoint (RFC 7662; RFC 9701 with jwt_response) with the
configured client credentials, through the module's own client, prints the
answer and checks it by the module's rules, naming the reason of a refusal
(inactive, bad_audience, expired, bad_claim for a refresh token...). A provider
with introspect_jwts has its verified JWTs introspected too. Without
--introspect no endpoint is asked, and such a token is undecided (exit 2).

Without --config, only the token's shape and its exp, nbf and iat are checked
(with the module's default leeway of 60s); the signature, issuer and audience
are not.

Exit codes:
  0  accepted by at least one handler (without --config: a JWT within its
     validity period)
  1  rejected by every handler; without --config: expired, not yet valid,
     without exp, or not a JWT at all
  2  inspect could not run: no token on stdin, or the config cannot be
     read, adapted or provisioned, or has no oauth2_jwt handler; or it
     could not decide: the token needs introspection and --introspect was
     not given, or the introspection endpoint could not answer (down,
     5xx, refusing the client credentials: the module answers 503)`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &exitError{exitUsage, errors.New("inspect takes no arguments: it reads the token on stdin, e.g. caddy oauth2-jwt inspect < token.txt")}
			}
			in := cmd.InOrStdin()
			if f, ok := in.(*os.File); ok {
				if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "Reading a token from the terminal; paste it and end with Ctrl-D.")
				}
			}
			data, err := io.ReadAll(io.LimitReader(in, 1<<20))
			if err != nil {
				return &exitError{exitUsage, fmt.Errorf("reading the token from stdin: %w", err)}
			}
			token := strings.TrimSpace(string(data))
			if len(token) >= 6 && strings.EqualFold(token[:6], "bearer") && (len(token) == 6 || token[6] == ' ' || token[6] == '\t') {
				token = strings.TrimSpace(token[6:])
			}
			if token == "" {
				return &exitError{exitUsage, errors.New("no token on stdin: pipe one in, e.g. caddy oauth2-jwt inspect < token.txt")}
			}
			pr, err := presentedFromFlags(cmd, proof, proofFile, method, rawURL)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			pr.introspect = introspect
			var ok bool
			if configFile == "" {
				if adapter != "" {
					return &exitError{exitUsage, errors.New("--adapter needs --config")}
				}
				if pr.proof != "" {
					return &exitError{exitUsage, errors.New("--dpop needs --config: the proof is checked by a handler's dpop block")}
				}
				if introspect {
					return &exitError{exitUsage, errors.New("--introspect needs --config: the endpoint, the client credentials and the rules the answer is checked by (issuer, audiences, leeway) are a provider's introspection block")}
				}
				ok = inspectToken(cmd.OutOrStdout(), token)
			} else {
				base, restore, err := quietCaddy()
				if err != nil {
					return &exitError{exitUsage, err}
				}
				defer restore()
				cfg, err := loadConfigJSON(configFile, adapter)
				if err != nil {
					return &exitError{exitUsage, err}
				}
				ok, err = inspectPresented(base, cmd.OutOrStdout(), token, cfg, pr)
				if err != nil {
					return &exitError{exitUsage, err}
				}
			}
			if !ok {
				return &exitError{code: exitRejected}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&configFile, "config", "c", "", "Caddy config file (Caddyfile or JSON) holding oauth2_jwt handlers")
	c.Flags().StringVarP(&adapter, "adapter", "a", "", `config adapter (default: "caddyfile" for files named Caddyfile* or *.caddyfile, else JSON)`)
	c.Flags().BoolVar(&introspect, "introspect", false, "ask the introspection endpoint of the provider the token goes to (RFC 7662)")
	c.Flags().StringVar(&proof, "dpop", "", "the DPoP proof sent with the token (the DPoP header's value)")
	c.Flags().StringVar(&proofFile, "dpop-file", "", "a file holding the DPoP proof")
	c.Flags().StringVar(&method, "method", http.MethodGet, "with --dpop: the request's method")
	c.Flags().StringVar(&rawURL, "url", "", "with --dpop: the URL the client requested")
	return c
}

// presented is how inspect takes the token to be sent: as Bearer (zero
// value), or with Authorization: DPoP, a proof, and the request it is for.
type presented struct {
	proof, method, url string
	// introspect lets inspect ask an introspection endpoint
	// (--introspect), as the module would for this token.
	introspect bool
}

// presentedFromFlags checks inspect's DPoP flags.
func presentedFromFlags(cmd *cobra.Command, proof, proofFile, method, rawURL string) (presented, error) {
	if proof != "" && proofFile != "" {
		return presented{}, errors.New("give --dpop or --dpop-file, not both")
	}
	if proofFile != "" {
		data, err := os.ReadFile(proofFile)
		if err != nil {
			return presented{}, fmt.Errorf("reading --dpop-file: %w", err)
		}
		if proof = strings.TrimSpace(string(data)); proof == "" {
			return presented{}, fmt.Errorf("--dpop-file %s is empty", proofFile)
		}
	}
	if proof == "" {
		if cmd.Flags().Changed("method") || cmd.Flags().Changed("url") {
			return presented{}, errors.New("--method and --url describe the request of a DPoP proof: give --dpop or --dpop-file too")
		}
		return presented{}, nil
	}
	if rawURL == "" {
		return presented{}, errors.New("--dpop needs --url, the URL the proof was made for")
	}
	if _, err := bindingRequest(method, rawURL, ""); err != nil {
		return presented{}, err
	}
	return presented{proof: proof, method: method, url: rawURL}, nil
}

// bindingRequest builds the request checkBinding sees: method and URL
// as a client sends them, with the proof (if any) as its DPoP header.
func bindingRequest(method, rawURL, proof string) (*http.Request, error) {
	if rawURL == "" {
		rawURL = "http://localhost/"
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want an absolute http or https URL", rawURL)
	}
	if method == "" || strings.ContainsAny(method, " \t\r\n") {
		return nil, fmt.Errorf("--method %q: want an HTTP method such as GET", method)
	}
	r := &http.Request{Method: method, URL: u, Host: u.Host, Header: http.Header{}, RequestURI: u.RequestURI()}
	if u.Scheme == "https" {
		r.TLS = &tls.ConnectionState{} // the scheme the htu is built from; no client certificate
	}
	if proof != "" {
		r.Header["Dpop"] = []string{proof}
	}
	return r, nil
}

// quietCaddy silences Caddy's logging until restore is called, and returns
// a caddy.Context whose loggers discard: Provision and the key caches log
// through ctx.Logger() and caddy.Log(), whose JSON lines must not mix with
// inspect's human output. It replaces Caddy's default logger, which is
// process-wide; restore puts the previous one back.
func quietCaddy() (caddy.Context, func(), error) {
	// Replacing the default logger logs "redirected default logger" to
	// the old one; with the old one buffering, that line is flushed into
	// the new, discarding logger instead of reaching stderr.
	_, orig, _ := caddy.BufferedLog()
	restore := func() {
		caddy.BufferedLog()
		caddy.UnbufferDefaultLogger(orig)
	}
	ctx, err := caddy.ProvisionContext(&caddy.Config{
		Logging: &caddy.Logging{Logs: map[string]*caddy.CustomLog{
			caddy.DefaultLoggerName: {BaseLog: caddy.BaseLog{WriterRaw: json.RawMessage(`{"output":"discard"}`)}},
		}},
	})
	if err != nil {
		restore()
		return caddy.Context{}, nil, fmt.Errorf("silencing Caddy's logs: %w", err)
	}
	return ctx, restore, nil
}

// loadConfigJSON reads a config file and adapts it to JSON, choosing the
// adapter as "caddy run --config" does (it is Caddy's own loader).
func loadConfigJSON(file, adapter string) ([]byte, error) {
	if file == "-" {
		return nil, errors.New("--config -: stdin carries the token; give the config as a file")
	}
	cfg, _, _, err := caddycmd.LoadConfig(file, adapter)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", file, err)
	}
	return cfg, nil
}

// foundHandler is an oauth2_jwt handler of a JSON config and where it sits.
type foundHandler struct {
	raw json.RawMessage
	at  site
}

// site is where a handler sits: its server, and the matchers of the routes
// enclosing it.
type site struct {
	path   []string // JSON keys and indexes from the root
	server string   // name under apps.http.servers
	listen []string
	errors bool       // in the server's error routes
	hosts  []string   // host matchers of the enclosing routes
	paths  [][]string // path matchers, one list per route level
	others []string   // names of other matchers
}

func (s site) String() string {
	var parts []string
	if s.server == "" {
		return strings.Join(s.path, ".")
	}
	where := "apps.http.servers." + s.server
	if s.errors {
		where += " (error routes)"
	}
	parts = append(parts, where)
	if len(s.listen) > 0 {
		parts = append(parts, "listen "+strings.Join(s.listen, " "))
	}
	if len(s.hosts) > 0 {
		parts = append(parts, "host "+strings.Join(s.hosts, " "))
	} else {
		parts = append(parts, "any host")
	}
	if len(s.paths) > 0 {
		levels := make([]string, len(s.paths))
		for i, l := range s.paths {
			levels[i] = strings.Join(l, " ")
		}
		parts = append(parts, "path "+strings.Join(levels, " > "))
	}
	if len(s.others) > 0 {
		parts = append(parts, "other matchers: "+strings.Join(s.others, " "))
	}
	return strings.Join(parts, ", ")
}

// within returns s one level down, at key.
func (s site) within(key string) site {
	s.path = append(slices.Clip(s.path), key)
	return s
}

// route adds the matchers of a route object to s.
func (s site) route(r map[string]any) site {
	sets, _ := r["match"].([]any)
	var paths []string
	for _, set := range sets {
		m, _ := set.(map[string]any)
		names := make([]string, 0, len(m))
		for name := range m {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			switch name {
			case "host":
				for _, h := range strs(m[name]) {
					if !slices.Contains(s.hosts, h) {
						s.hosts = append(slices.Clip(s.hosts), h)
					}
				}
			case "path":
				paths = append(paths, strs(m[name])...)
			default:
				if !slices.Contains(s.others, name) {
					s.others = append(slices.Clip(s.others), name)
				}
			}
		}
	}
	if len(paths) > 0 {
		s.paths = append(slices.Clip(s.paths), paths)
	}
	return s
}

func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// findHandlers returns every oauth2_jwt handler object in a JSON config,
// with the server and routes it sits under.
func findHandlers(v any, at site, out *[]foundHandler) {
	switch t := v.(type) {
	case map[string]any:
		p := at.path
		switch {
		case len(p) == 4 && p[0] == "apps" && p[1] == "http" && p[2] == "servers":
			at.server, at.listen = p[3], strs(t["listen"])
		case len(p) == 5 && at.server != "" && p[4] == "errors":
			at.errors = true
		case len(p) >= 2 && p[len(p)-2] == "routes":
			at = at.route(t)
		}
		if t["handler"] == "oauth2_jwt" {
			b, _ := json.Marshal(t)
			*out = append(*out, foundHandler{raw: b, at: at})
			return
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			findHandlers(t[k], at.within(k), out)
		}
	case []any:
		for i, e := range t {
			findHandlers(e, at.within(strconv.Itoa(i)), out)
		}
	}
}

// checkSteps are the checks of verify, in order, as inspect prints them.
var checkSteps = stepNames[stepShape:stepRequire]

// printToken prints a token's size, header and claims, and returns the
// claims when the token has three segments whose header and claims are
// JSON objects (nil otherwise).
func printToken(out io.Writer, token string) map[string]any {
	parts := strings.Split(token, ".")
	fmt.Fprintf(out, "Token: %d bytes, %d segments\n", len(token), len(parts))
	if len(parts) < 2 {
		return nil
	}
	var claims map[string]any
	decoded := len(parts) == 3
	for i, title := range []string{"Header", "Claims"} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			fmt.Fprintf(out, "%s: not base64url (%v)\n", title, err)
			decoded = false
			continue
		}
		var pretty any
		if err := json.Unmarshal(raw, &pretty); err != nil {
			fmt.Fprintf(out, "%s: not JSON (%v)\n", title, err)
			decoded = false
			continue
		}
		b, _ := json.MarshalIndent(pretty, "", "  ")
		fmt.Fprintf(out, "%s:\n%s\n", title, b)
		m, ok := pretty.(map[string]any)
		if !ok {
			decoded = false
			continue
		}
		if i == 1 {
			claims = m
			for _, name := range []string{"iat", "nbf", "exp"} {
				if f, ok := m[name].(float64); ok {
					t := time.Unix(int64(f), 0)
					fmt.Fprintf(out, "  %s = %s (%s)\n", name, t.UTC().Format(time.RFC3339), relative(t))
				}
			}
		}
	}
	if !decoded {
		return nil
	}
	return claims
}

// inspectToken prints a token and judges it without a config: it must be
// a JWT within its validity period, with the module's default leeway. It
// reports whether the token passes.
func inspectToken(out io.Writer, token string) bool {
	claims := printToken(out, token)
	fmt.Fprintln(out, "\n(no --config given: signature, issuer and audience not checked)")
	if claims == nil {
		fmt.Fprintln(out, "  result: REJECTED, not a JWT: want three base64url segments, the first two JSON objects")
		return false
	}
	now := time.Now()
	date := func(name string) (time.Time, bool, bool) {
		v, present := claims[name]
		if !present {
			return time.Time{}, false, true
		}
		f, ok := v.(float64)
		return time.Unix(int64(f), 0), true, ok
	}
	exp, hasExp, ok := date("exp")
	switch {
	case !hasExp:
		fmt.Fprintln(out, "  result: REJECTED, no exp claim (the module requires one)")
		return false
	case !ok:
		fmt.Fprintln(out, "  result: REJECTED, exp is not a number")
		return false
	case !now.Before(exp.Add(defaultLeeway)):
		fmt.Fprintf(out, "  result: REJECTED, expired %s ago (beyond the default leeway of %s)\n",
			now.Sub(exp).Round(time.Second), defaultLeeway)
		return false
	}
	for _, name := range []string{"nbf", "iat"} {
		t, present, ok := date(name)
		switch {
		case present && !ok:
			fmt.Fprintf(out, "  result: REJECTED, %s is not a number\n", name)
			return false
		case present && now.Add(defaultLeeway).Before(t):
			fmt.Fprintf(out, "  result: REJECTED, not yet valid: %s is %s (beyond the default leeway of %s)\n",
				name, relative(t), defaultLeeway)
			return false
		}
	}
	fmt.Fprintf(out, "  result: within its validity period (expires %s)\n", relative(exp))
	return true
}

// inspect prints a token's header and claims and the outcome of every
// check of every oauth2_jwt handler of cfgJSON. Handlers are provisioned
// in children of base. It reports whether any handler accepts the token.
func inspect(base caddy.Context, out io.Writer, token string, cfgJSON []byte) (bool, error) {
	return inspectPresented(base, out, token, cfgJSON, presented{})
}

// inspectPresented is inspect for a token presented as pr says.
func inspectPresented(base caddy.Context, out io.Writer, token string, cfgJSON []byte, pr presented) (bool, error) {
	if base.Context == nil {
		base.Context = context.Background()
	}
	claims := printToken(out, token)
	if pr.proof != "" {
		printProof(out, pr)
	}
	var root any
	if err := json.Unmarshal(cfgJSON, &root); err != nil {
		return false, fmt.Errorf("config is not JSON: %w", err)
	}
	var handlers []foundHandler
	findHandlers(root, site{}, &handlers)
	if len(handlers) == 0 {
		return false, errors.New("the config has no oauth2_jwt handler")
	}
	accepted := false
	var undecided error
	for i, fh := range handlers {
		var h Handler
		if err := json.Unmarshal(fh.raw, &h); err != nil {
			return false, fmt.Errorf("handler %d (%s): %w", i+1, fh.at, err)
		}
		v, err := inspectWith(base, out, i+1, len(handlers), fh.at, &h, token, claims, pr)
		var ue *undecidedError
		switch {
		case errors.As(err, &ue):
			undecided = errors.Join(undecided, err)
		case err != nil:
			return false, err
		}
		accepted = accepted || v == verdictAccepted
	}
	if !accepted && undecided != nil {
		return false, undecided
	}
	return accepted, nil
}

// inspectWith provisions handler n of the config and judges the token
// with it, printing every check.
func inspectWith(base caddy.Context, out io.Writer, n, total int, at site, h *Handler, token string, claims map[string]any, pr presented) (verdict, error) {
	cctx, cancel := caddy.NewContext(base)
	defer cancel()
	h.deps.noStorage = true // a diagnosis neither reads nor writes a Caddy's stored keys
	if err := h.Provision(cctx); err != nil {
		return verdictRejected, fmt.Errorf("handler %d (%s): %w", n, at, err)
	}
	defer func() { _ = h.Cleanup() }()
	fmt.Fprintf(out, "\nHandler %d of %d (providers: %s) at %s\n", n, total, strings.Join(h.names, ", "), at)

	// Wait for the first key fetch of every remote provider, as bounded
	// as the module itself would be.
	for _, p := range h.providers {
		c, ok := p.keys.(*jwksCache)
		if !ok {
			continue
		}
		wait, cancelWait := context.WithTimeout(base, c.cfg.fetchTimeout+time.Second)
		_ = c.awaitFirstFetch(wait)
		cancelWait()
		if st := c.status(); !st.usable {
			fmt.Fprintf(out, "  provider %q: keys not loaded from %s: %v\n", p.name, c.cfg.sourceURL(), st.lastErr)
		}
	}

	if pr.proof != "" && h.bind.dpop == nil {
		fmt.Fprintf(out, "  [FAIL] proof: the handler has no dpop block, so Authorization: DPoP is no credential here\n")
		fmt.Fprintf(out, "  result: REJECTED, %d %s\n", h.req.missing, reasonMissingToken)
		return verdictRejected, nil
	}
	now := h.verifier.now()
	if h.intro.any() && !hasSeparator(token) {
		if _, _, ok := compactParts(token); !ok {
			return inspectOpaque(base, out, h, token, pr, now)
		}
	}
	verified, p, _, aerr := h.verifier.verify(base, token, now)
	if p != nil {
		fmt.Fprintf(out, "  selects provider %q (issuer %s)\n", p.name, p.issuer)
	}
	steps := checkSteps
	var req *http.Request
	if aerr == nil {
		// The module's own binding checks, as acceptBound runs them.
		verified.cnf, aerr = parseCnf(verified.top)
		if aerr == nil {
			var bound bool
			var err error
			if req, bound, aerr, err = inspectBinding(h, p, verified, token, pr, now); err != nil {
				return verdictRejected, err
			} else if bound {
				steps = append(slices.Clip(steps), stepProof.String(), stepBinding.String())
			}
		}
	}
	failed := ""
	if aerr != nil {
		failed = aerr.step.String()
	}
	for _, step := range steps {
		if step == failed {
			fmt.Fprintf(out, "  [FAIL] %s: %s (%s)\n", step, aerr.reason, explain(aerr))
			explainStep(out, step, h, p, claims)
			explainBinding(out, aerr, h, req, pr, verified, now)
			break
		}
		if step == stepProof.String() && pr.proof == "" {
			fmt.Fprintf(out, "  [--]   %s (no --dpop: the token is sent as Bearer)\n", step)
			continue
		}
		fmt.Fprintf(out, "  [ok]   %s\n", step)
	}
	if aerr != nil {
		return printRejected(out, h, aerr), nil
	}
	if p.intro != nil && p.intro.cfg.jwts {
		// introspect_jwts: the module asks the endpoint whether the
		// verified JWT is still active (revocation).
		if !pr.introspect {
			fmt.Fprintf(out, "  [--]   introspection (introspect_jwts: the module also asks the endpoint; give --introspect)\n")
			return verdictUndecided, &undecidedError{fmt.Errorf("provider %q introspects its JWTs (introspect_jwts): give --introspect to ask its endpoint whether this one is revoked", p.name)}
		}
		top, raw, fault := p.intro.ask(base, p, token)
		if fault != nil {
			return printFault(out, p, fault)
		}
		printAnswer(out, raw)
		if _, aerr, err := checkAnswer(p, top, raw, now); err != nil {
			return printFault(out, p, &introFault{err: err, retryAfter: 1})
		} else if aerr != nil {
			fmt.Fprintf(out, "  [FAIL] introspection: %s (%s)\n", aerr.reason, explain(aerr))
			return printRejected(out, h, aerr), nil
		}
		fmt.Fprintf(out, "  [ok]   introspection (active)\n")
	}
	return printRequire(out, h, verified), nil
}

// verdict is one handler's judgement of the token in inspect.
type verdict int

const (
	verdictRejected  verdict = iota
	verdictAccepted          // every check passes
	verdictUndecided         // only the introspection endpoint can say, and it did not
)

// undecidedError is why no handler could decide: an introspection
// endpoint that could not answer, or one inspect was not told to ask. It
// is exit code 2, as the token may be fine.
type undecidedError struct{ err error }

func (e *undecidedError) Error() string { return e.err.Error() }
func (e *undecidedError) Unwrap() error { return e.err }

// inspectBinding runs the module's binding checks (DPoP proof, cnf,
// client certificate) on verified claims c, as acceptBound does, when
// the token or the handler calls for them (bound). req is the request
// they were checked against.
func inspectBinding(h *Handler, p *provider, c *Claims, token string, pr presented, now time.Time) (req *http.Request, bound bool, aerr *authError, err error) {
	if c.cnf == nil && h.bind.dpop == nil && !h.bind.cert.required && pr.proof == "" {
		return nil, false, nil, nil
	}
	method := pr.method
	if pr.proof == "" {
		method = http.MethodGet // only the client certificate (none) matters
	}
	if req, err = bindingRequest(method, pr.url, pr.proof); err != nil {
		return nil, true, nil, err
	}
	_, aerr = h.checkBinding(req, token, pr.proof != "", p, c, now)
	return req, true, aerr, nil
}

// printRejected prints the result line of a refusal, with the status
// the module answers.
func printRejected(out io.Writer, h *Handler, aerr *authError) verdict {
	status := reasons[aerr.reason].status
	if aerr.reason == reasonMissingToken {
		status = h.req.missing
	}
	fmt.Fprintf(out, "  result: REJECTED, %d %s\n", status, aerr.reason)
	return verdictRejected
}

// printRequire applies the handler's require rules to accepted claims
// and prints the result.
func printRequire(out io.Writer, h *Handler, c *Claims) verdict {
	if len(h.Require) > 0 && !satisfied(h.Require, c) {
		fmt.Fprintf(out, "  [FAIL] require: the token lacks a required scope or claim\n  result: REJECTED, 403 forbidden\n")
		return verdictRejected
	}
	fmt.Fprintf(out, "  result: ACCEPTED (sub %q)\n", c.Subject())
	return verdictAccepted
}

// inspectOpaque judges a token that is not a compact JWS as the module
// does: routed by token_prefix to an introspection provider, whose
// endpoint is asked (with --introspect) through the module's own client,
// and whose answer is checked by the module's own rules, then the
// binding and require checks.
func inspectOpaque(ctx context.Context, out io.Writer, h *Handler, token string, pr presented, now time.Time) (verdict, error) {
	const indent = "         "
	fmt.Fprintf(out, "  opaque token (not a compact JWS): judged by token introspection (RFC 7662)\n")
	p := h.intro.route(token)
	if p == nil {
		fmt.Fprintf(out, "  [FAIL] issuer: %s (%s)\n", errOpaqueNoRoute.reason, explain(errOpaqueNoRoute))
		for i, ip := range h.providers {
			if ip.intro == nil {
				continue
			}
			label := "accepted:  "
			if i > 0 {
				label = strings.Repeat(" ", len(label))
			}
			fmt.Fprintf(out, "%s%stokens starting with %q (provider %s)\n", indent, label, ip.intro.cfg.prefix, ip.name)
		}
		return printRejected(out, h, errOpaqueNoRoute), nil
	}
	in := p.intro
	route := "the introspection provider without token_prefix"
	if in.cfg.prefix != "" {
		route = fmt.Sprintf("token_prefix %q", in.cfg.prefix)
	}
	fmt.Fprintf(out, "  selects provider %q (issuer %s) by %s\n", p.name, p.issuer, route)
	if !pr.introspect {
		fmt.Fprintf(out, "  [--]   introspection (give --introspect to ask %s)\n", in.endpointNow())
		return verdictUndecided, &undecidedError{fmt.Errorf("provider %q judges this opaque token by introspection: give --introspect to ask its endpoint", p.name)}
	}
	top, raw, fault := in.ask(ctx, p, token)
	// After ask, the endpoint is known even when read from discovery.
	fmt.Fprintf(out, "  asked %s as client %q (%s)\n", in.endpointNow(), in.cfg.clientID, in.authMethod())
	if fault != nil {
		return printFault(out, p, fault)
	}
	printAnswer(out, raw)
	c, aerr, err := checkAnswer(p, top, raw, now)
	if err != nil {
		return printFault(out, p, &introFault{err: err, retryAfter: 1})
	}
	if aerr != nil {
		if aerr != errInactive {
			fmt.Fprintf(out, "  [ok]   introspection (active)\n")
		}
		fmt.Fprintf(out, "  [FAIL] %s: %s (%s)\n", aerr.step, aerr.reason, explain(aerr))
		if aerr.step == stepAudience || aerr.step == stepIssuer {
			var answer map[string]any
			_ = json.Unmarshal(raw, &answer)
			explainStep(out, aerr.step.String(), h, p, answer)
		}
		return printRejected(out, h, aerr), nil
	}
	for _, step := range []string{"introspection (active)", "issuer", "claims (an access token)", "time", "audience"} {
		fmt.Fprintf(out, "  [ok]   %s\n", step)
	}
	req, bound, aerr, err := inspectBinding(h, p, c, token, pr, now)
	if err != nil {
		return verdictRejected, err
	}
	if bound {
		for _, st := range []step{stepProof, stepBinding} {
			switch {
			case aerr != nil && aerr.step == st:
				fmt.Fprintf(out, "  [FAIL] %s: %s (%s)\n", st, aerr.reason, explain(aerr))
				explainBinding(out, aerr, h, req, pr, c, now)
				return printRejected(out, h, aerr), nil
			case st == stepProof && pr.proof == "":
				fmt.Fprintf(out, "  [--]   %s (no --dpop: the token is sent as Bearer)\n", st)
			default:
				fmt.Fprintf(out, "  [ok]   %s\n", st)
			}
		}
	}
	return printRequire(out, h, c), nil
}

// printAnswer prints an introspection answer's members, as the claims of
// a JWT are printed.
func printAnswer(out io.Writer, raw []byte) {
	var pretty any
	if json.Unmarshal(raw, &pretty) != nil {
		return
	}
	b, _ := json.MarshalIndent(pretty, "  ", "  ")
	fmt.Fprintf(out, "  introspection answer:\n  %s\n", b)
	if m, ok := pretty.(map[string]any); ok {
		for _, name := range []string{"iat", "nbf", "exp"} {
			if f, ok := m[name].(float64); ok {
				t := time.Unix(int64(f), 0)
				fmt.Fprintf(out, "    %s = %s (%s)\n", name, t.UTC().Format(time.RFC3339), relative(t))
			}
		}
	}
}

// printFault prints an introspection call that gave no answer: the
// module would answer 503, as the token may be fine.
func printFault(out io.Writer, p *provider, f *introFault) (verdict, error) {
	fmt.Fprintf(out, "  [FAIL] introspection: %s (introspection endpoint unavailable: %v)\n", reasonUnavailable, f.err)
	fmt.Fprintf(out, "  result: UNDECIDED, the module answers 503 %s with Retry-After: %d (the token may be fine)\n", reasonUnavailable, max(f.retryAfter, 1))
	return verdictUndecided, &undecidedError{fmt.Errorf("provider %q: the introspection endpoint could not answer: %w", p.name, f.err)}
}

// explainStep says, after a failed issuer or audience check, what would
// have been accepted, next to what the token carries.
func explainStep(out io.Writer, step string, h *Handler, p *provider, claims map[string]any) {
	const indent = "         "
	switch step {
	case "issuer":
		fmt.Fprintf(out, "%stoken iss: %s\n", indent, claimText(claims, "iss"))
		if _, ok := claims["tid"]; ok {
			fmt.Fprintf(out, "%stoken tid: %s\n", indent, claimText(claims, "tid"))
		}
		for i, pr := range h.providers {
			label := "accepted:  "
			if i > 0 {
				label = strings.Repeat(" ", len(label))
			}
			fmt.Fprintf(out, "%s%s%q (provider %s%s)\n", indent, label, pr.issuer, pr.name, tenantsText(pr))
		}
	case "audience":
		fmt.Fprintf(out, "%stoken aud: %s\n", indent, claimText(claims, "aud"))
		if p != nil {
			quoted := make([]string, len(p.audiences))
			for i, a := range p.audiences {
				quoted[i] = strconv.Quote(a)
			}
			fmt.Fprintf(out, "%saccepted:  %s (provider %s)\n", indent, strings.Join(quoted, ", "), p.name)
		}
	}
}

// explainBinding says, after a failed proof or binding check, what the
// proof carries next to what the handler expected.
func explainBinding(out io.Writer, aerr *authError, h *Handler, req *http.Request, pr presented, c *Claims, now time.Time) {
	const indent = "         "
	pc := proofParts(pr.proof)
	str := func(name string) string {
		if v, ok := pc.claims[name]; ok {
			b, _ := json.Marshal(v)
			return string(b)
		}
		return "(none)"
	}
	switch aerr {
	case errProofHTM:
		fmt.Fprintf(out, "%sproof htm: %s\n%srequest:   %q (--method)\n", indent, str("htm"), indent, req.Method)
	case errProofHTU:
		fmt.Fprintf(out, "%sproof htu: %s\n%sexpected:  %q (from --url", indent, str("htu"), indent, h.bind.dpop.requestHTU(req))
		if h.bind.dpop.origin != "" {
			fmt.Fprintf(out, " and the dpop block's origin")
		}
		fmt.Fprintln(out, ", normalised)")
	case errProofATH:
		fmt.Fprintf(out, "%sproof ath: %s\n%sexpected:  the base64url SHA-256 of the token on stdin (dpop-proof --token)\n", indent, str("ath"), indent)
	case errProofOld, errProofFuture:
		if f, ok := pc.claims["iat"].(float64); ok {
			fmt.Fprintf(out, "%sproof iat: %s, proof_max_age %s\n", indent, relative(time.Unix(int64(f), 0)), h.bind.dpop.maxAge)
		}
	case errNonceMissing, errNonceStale:
		if h.bind.dpop.nonce != nil {
			fmt.Fprintf(out, "%sthe handler would answer DPoP-Nonce: %s (make a new proof with dpop-proof --nonce)\n", indent, h.bind.dpop.nonce.mint(now))
		}
	case errKeyMismatch:
		fmt.Fprintf(out, "%sproof jwk thumbprint: %s\n%stoken cnf.jkt:        %s\n", indent, pc.thumbprint, indent, c.cnf.jktStr)
	case errBoundAsBearer:
		fmt.Fprintf(out, "%sgive the proof with --dpop (and --method, --url) to check it as the module would\n", indent)
	}
}

// proofView is a proof's decoded, unverified parts, for display.
type proofView struct {
	header, claims map[string]any
	thumbprint     string // of the header's jwk, or "(none)"
}

// proofParts decodes a proof's header and claims without verifying it.
func proofParts(proof string) proofView {
	v := proofView{thumbprint: "(none)"}
	parts := strings.Split(proof, ".")
	for i, dst := range []*map[string]any{&v.header, &v.claims} {
		if i >= len(parts) {
			break
		}
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err == nil {
			_ = json.Unmarshal(raw, dst)
		}
	}
	if jwkJSON, ok := v.header["jwk"]; ok {
		b, _ := json.Marshal(jwkJSON)
		var jwk jose.JSONWebKey
		if jwk.UnmarshalJSON(b) == nil {
			if t, err := jwk.Thumbprint(crypto.SHA256); err == nil {
				v.thumbprint = base64.RawURLEncoding.EncodeToString(t)
			}
		}
	}
	return v
}

// printProof prints a proof's header and claims (not its signature) and
// the request it is checked against.
func printProof(out io.Writer, pr presented) {
	v := proofParts(pr.proof)
	fmt.Fprintf(out, "\nDPoP proof: %d bytes, for %s %s\n", len(pr.proof), pr.method, pr.url)
	for _, part := range []struct {
		title string
		m     map[string]any
	}{{"Proof header", v.header}, {"Proof claims", v.claims}} {
		if part.m == nil {
			fmt.Fprintf(out, "%s: not a base64url JSON object\n", part.title)
			continue
		}
		b, _ := json.MarshalIndent(part.m, "", "  ")
		fmt.Fprintf(out, "%s:\n%s\n", part.title, b)
	}
	if f, ok := v.claims["iat"].(float64); ok {
		t := time.Unix(int64(f), 0)
		fmt.Fprintf(out, "  iat = %s (%s)\n", t.UTC().Format(time.RFC3339), relative(t))
	}
	fmt.Fprintf(out, "  jwk thumbprint = %s\n", v.thumbprint)
}

// claimText renders a claim for explainStep: strings quoted, arrays as
// their items, anything else as JSON; "(none)" when absent.
func claimText(claims map[string]any, name string) string {
	v, ok := claims[name]
	if !ok {
		return "(none)"
	}
	items, isList := v.([]any)
	if !isList {
		items = []any{v}
	}
	texts := make([]string, len(items))
	for i, it := range items {
		if s, ok := it.(string); ok {
			texts[i] = strconv.Quote(s)
			continue
		}
		b, _ := json.Marshal(it)
		texts[i] = string(b)
	}
	if len(texts) == 0 {
		return "[] (empty)"
	}
	return strings.Join(texts, ", ")
}

func tenantsText(p *provider) string {
	if p.tenants == nil {
		return ""
	}
	if p.anyTenant {
		return ", any tenant"
	}
	names := make([]string, 0, len(p.tenants))
	for t := range p.tenants {
		names = append(names, t)
	}
	sort.Strings(names)
	return ", tenants " + strings.Join(names, " ")
}

func explain(e *authError) string {
	if e.detail != "" {
		return e.detail
	}
	return reasons[e.reason].description
}

func relative(t time.Time) string {
	d := time.Until(t).Round(time.Second)
	if d >= 0 {
		return "in " + d.String()
	}
	return (-d).String() + " ago"
}
