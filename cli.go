package oauth2jwt

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "oauth2-jwt",
		Usage: "inspect|token|keygen",
		Short: "Inspect, mint and sign bearer tokens for the oauth2_jwt module",
		Long: `
Tools for the oauth2_jwt module:

  inspect   reads a token on stdin, prints its header and claims and, given a
            config, which provider it selects and which check passes or fails
  token     mints a token signed with a private key, for local testing
  keygen    writes a private key (JWK) and the matching public JWKS
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(inspectCommand(), tokenCommand(), keygenCommand())
		},
	})
}

func inspectCommand() *cobra.Command {
	var configFile, adapter string
	c := &cobra.Command{
		Use:   "inspect [--config <file>] [--adapter caddyfile]",
		Short: "Explain why a token (read on stdin) is accepted or rejected",
		Long: `Reads a token on stdin and prints its header and claims. With --config, finds the
oauth2_jwt handlers of that config, fetches their keys as the module would, and runs
every check in order, saying which one fails and why. Exits 0 when the token is
accepted, 1 when it is rejected.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20))
			if err != nil {
				return fmt.Errorf("reading the token: %w", err)
			}
			token := strings.TrimSpace(string(data))
			token = strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(token, "Bearer "), "bearer "))
			var cfg []byte
			if configFile != "" {
				cfg, err = loadConfigJSON(configFile, adapter)
				if err != nil {
					return err
				}
			}
			ok, err := inspect(cmd.Context(), cmd.OutOrStdout(), token, cfg)
			if err != nil {
				return err
			}
			if !ok {
				os.Exit(1)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&configFile, "config", "c", "", "Caddy config file (Caddyfile or JSON) holding oauth2_jwt handlers")
	c.Flags().StringVarP(&adapter, "adapter", "a", "", "config adapter (default: caddyfile for files named Caddyfile*, else JSON)")
	return c
}

// loadConfigJSON reads a config file and adapts it to JSON.
func loadConfigJSON(file, adapter string) ([]byte, error) {
	body, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if adapter == "" && strings.HasPrefix(strings.ToLower(baseName(file)), "caddyfile") {
		adapter = "caddyfile"
	}
	if adapter == "" || adapter == "json" {
		return body, nil
	}
	a := caddyconfig.GetAdapter(adapter)
	if a == nil {
		return nil, fmt.Errorf("unknown config adapter %q", adapter)
	}
	out, _, err := a.Adapt(body, map[string]any{"filename": file})
	if err != nil {
		return nil, fmt.Errorf("adapting config: %w", err)
	}
	return out, nil
}

func baseName(p string) string {
	if i := strings.LastIndexAny(p, `/\`); i >= 0 {
		return p[i+1:]
	}
	return p
}

// findHandlers returns every oauth2_jwt handler object in a JSON config.
func findHandlers(v any, out *[]json.RawMessage) {
	switch t := v.(type) {
	case map[string]any:
		if t["handler"] == "oauth2_jwt" {
			b, _ := json.Marshal(t)
			*out = append(*out, b)
			return
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			findHandlers(t[k], out)
		}
	case []any:
		for _, e := range t {
			findHandlers(e, out)
		}
	}
}

// checkSteps are the checks of verify, in order, as inspect prints them.
var checkSteps = []string{"shape", "header", "payload", "issuer", "algorithm", "time", "audience", "claims", "keys", "key", "signature"}

// stepOf names the check that produced a rejection.
func stepOf(e *authError, providerKnown bool) string {
	switch e.reason {
	case reasonMalformed:
		switch {
		case e == errTooLarge || e == errNotCompact:
			return "shape"
		case e == errPayloadNotObj:
			return "payload"
		}
		return "header"
	case reasonBadAlgorithm:
		if e == errNoKeyForAlg {
			return "key"
		}
		if !providerKnown {
			return "header"
		}
		return "algorithm"
	case reasonUnknownIssuer:
		return "issuer"
	case reasonExpired, reasonNotYetValid:
		return "time"
	case reasonBadAudience:
		return "audience"
	case reasonMissingClaim, reasonBadClaim:
		switch {
		case strings.Contains(e.detail, "iss"):
			return "issuer"
		case strings.Contains(e.detail, "exp") || strings.Contains(e.detail, "nbf") || strings.Contains(e.detail, "iat claim") || strings.HasPrefix(e.detail, "iat"):
			return "time"
		case strings.Contains(e.detail, "aud"):
			return "audience"
		case strings.Contains(e.detail, "tid"):
			return "issuer"
		}
		return "claims"
	case reasonUnavailable:
		return "keys"
	case reasonUnknownKey:
		return "key"
	case reasonBadSignature:
		return "signature"
	}
	return "shape"
}

// inspect prints a token's header and claims and, with a config, the
// outcome of every check. It reports whether the token is accepted.
func inspect(ctx context.Context, out io.Writer, token string, cfgJSON []byte) (bool, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	parts := strings.Split(token, ".")
	fmt.Fprintf(out, "Token: %d bytes, %d segments\n", len(token), len(parts))
	if len(parts) >= 2 {
		for i, title := range []string{"Header", "Claims"} {
			raw, err := base64.RawURLEncoding.DecodeString(parts[i])
			if err != nil {
				fmt.Fprintf(out, "%s: not base64url (%v)\n", title, err)
				continue
			}
			var pretty any
			if err := json.Unmarshal(raw, &pretty); err != nil {
				fmt.Fprintf(out, "%s: not JSON (%v)\n", title, err)
				continue
			}
			b, _ := json.MarshalIndent(pretty, "", "  ")
			fmt.Fprintf(out, "%s:\n%s\n", title, b)
			if m, ok := pretty.(map[string]any); ok && i == 1 {
				for _, name := range []string{"iat", "nbf", "exp"} {
					if f, ok := m[name].(float64); ok {
						t := time.Unix(int64(f), 0)
						fmt.Fprintf(out, "  %s = %s (%s)\n", name, t.UTC().Format(time.RFC3339), relative(t))
					}
				}
			}
		}
	}
	if cfgJSON == nil {
		fmt.Fprintln(out, "\n(no --config given: signature and claims not checked)")
		return false, nil
	}
	var root any
	if err := json.Unmarshal(cfgJSON, &root); err != nil {
		return false, fmt.Errorf("config is not JSON: %w", err)
	}
	var handlers []json.RawMessage
	findHandlers(root, &handlers)
	if len(handlers) == 0 {
		return false, errors.New("the config has no oauth2_jwt handler")
	}
	accepted := false
	for i, raw := range handlers {
		var h Handler
		if err := json.Unmarshal(raw, &h); err != nil {
			return false, fmt.Errorf("handler %d: %w", i+1, err)
		}
		ok, err := inspectWith(ctx, out, i+1, len(handlers), &h, token)
		if err != nil {
			return false, err
		}
		accepted = accepted || ok
	}
	return accepted, nil
}

func inspectWith(ctx context.Context, out io.Writer, n, total int, h *Handler, token string) (bool, error) {
	cctx, cancel := caddy.NewContext(caddy.Context{Context: ctx})
	defer cancel()
	if err := h.Provision(cctx); err != nil {
		return false, fmt.Errorf("handler %d: %w", n, err)
	}
	defer func() { _ = h.Cleanup() }()
	fmt.Fprintf(out, "\nHandler %d of %d (providers: %s)\n", n, total, strings.Join(h.names, ", "))

	// Wait for the first key fetch of every remote provider, as bounded
	// as the module itself would be.
	for _, p := range h.providers {
		c, ok := p.keys.(*jwksCache)
		if !ok {
			continue
		}
		deadline := time.Now().Add(c.cfg.fetchTimeout + time.Second)
		for time.Now().Before(deadline) {
			if _, aerr := c.keys(); aerr == nil {
				break
			}
			c.mu.Lock()
			failed := c.lastErr != nil
			c.mu.Unlock()
			if failed {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, aerr := c.keys(); aerr != nil {
			c.mu.Lock()
			fmt.Fprintf(out, "  provider %q: keys not loaded from %s: %v\n", p.name, c.cfg.sourceURL(), c.lastErr)
			c.mu.Unlock()
		}
	}

	claims, p, _, aerr := h.verifier.verify(ctx, token, time.Now())
	if p != nil {
		fmt.Fprintf(out, "  selects provider %q (issuer %s)\n", p.name, p.issuer)
	}
	failed := ""
	if aerr != nil {
		failed = stepOf(aerr, p != nil)
	}
	for _, step := range checkSteps {
		if step == failed {
			fmt.Fprintf(out, "  [FAIL] %s: %s (%s)\n", step, aerr.reason, explain(aerr))
			break
		}
		fmt.Fprintf(out, "  [ok]   %s\n", step)
	}
	if aerr != nil {
		status := reasons[aerr.reason].status
		if aerr.reason == reasonMissingToken {
			status = h.missing
		}
		fmt.Fprintf(out, "  result: REJECTED, %d %s\n", status, aerr.reason)
		return false, nil
	}
	if len(h.Require) > 0 && !satisfied(h.Require, claims) {
		fmt.Fprintf(out, "  [FAIL] require: the token lacks a required scope or claim\n  result: REJECTED, 403 forbidden\n")
		return false, nil
	}
	fmt.Fprintf(out, "  result: ACCEPTED (sub %q)\n", claims.Subject())
	return true, nil
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

func tokenCommand() *cobra.Command {
	var keyFile, iss, sub, alg, kid string
	var aud, claimArgs []string
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "token --key <private JWK or PEM> --iss <issuer> --aud <audience> --sub <subject> [--ttl 1h] [--claim k=v]...",
		Short: "Mint a signed token for local testing",
		RunE: func(cmd *cobra.Command, _ []string) error {
			keyData, err := os.ReadFile(keyFile)
			if err != nil {
				return fmt.Errorf("reading --key: %w", err)
			}
			tok, err := mintToken(keyData, mintOptions{iss: iss, aud: aud, sub: sub, ttl: ttl, alg: alg, kid: kid, claims: claimArgs})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&keyFile, "key", "", "private key: a JWK (as written by keygen) or a PEM file")
	f.StringVar(&iss, "iss", "", "issuer")
	f.StringSliceVar(&aud, "aud", nil, "audience (repeatable)")
	f.StringVar(&sub, "sub", "", "subject")
	f.DurationVar(&ttl, "ttl", time.Hour, "lifetime")
	f.StringVar(&alg, "alg", "", "signature algorithm (default: the JWK's alg, or the key type's usual one)")
	f.StringVar(&kid, "kid", "", "key id (default: the JWK's kid, or the key's thumbprint)")
	f.StringArrayVar(&claimArgs, "claim", nil, "extra claim name=value; a JSON value (number, array, object) is kept as JSON (repeatable)")
	_ = c.MarkFlagRequired("key")
	return c
}

type mintOptions struct {
	iss, sub, alg, kid string
	aud                []string
	ttl                time.Duration
	claims             []string
	now                time.Time
}

// mintToken signs a token with a private key given as a JWK or PEM.
func mintToken(keyData []byte, o mintOptions) (string, error) {
	key, alg, kid, err := parsePrivateKey(keyData)
	if err != nil {
		return "", err
	}
	if o.alg != "" {
		alg = jose.SignatureAlgorithm(o.alg)
	}
	if o.kid != "" {
		kid = o.kid
	}
	if algBit(alg) == 0 {
		return "", fmt.Errorf("unsupported algorithm %q", alg)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return "", fmt.Errorf("signer: %w", err)
	}
	now := o.now
	if now.IsZero() {
		now = time.Now()
	}
	claims := map[string]any{
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(o.ttl).Unix(),
	}
	if o.iss != "" {
		claims["iss"] = o.iss
	}
	if o.sub != "" {
		claims["sub"] = o.sub
	}
	switch len(o.aud) {
	case 0:
	case 1:
		claims["aud"] = o.aud[0]
	default:
		claims["aud"] = o.aud
	}
	for _, kv := range o.claims {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return "", fmt.Errorf("--claim %q: want name=value", kv)
		}
		var v any
		if err := json.Unmarshal([]byte(val), &v); err != nil {
			v = val
		}
		claims[name] = v
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// parsePrivateKey reads a private JWK or PEM key and returns it with its
// usual algorithm and a key id.
func parsePrivateKey(data []byte) (any, jose.SignatureAlgorithm, string, error) {
	trimmed := strings.TrimSpace(string(data))
	if strings.HasPrefix(trimmed, "{") {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON([]byte(trimmed)); err != nil {
			return nil, "", "", fmt.Errorf("private JWK: %w", err)
		}
		if jwk.IsPublic() {
			return nil, "", "", errors.New("the JWK is a public key; a private key is needed to sign")
		}
		alg := jose.SignatureAlgorithm(jwk.Algorithm)
		if alg == "" {
			alg = defaultAlgFor(jwk.Key)
		}
		return jwk.Key, alg, jwk.KeyID, nil
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", "", errors.New("the key is neither a JWK nor PEM")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, "", "", fmt.Errorf("PEM key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, "", "", errors.New("PEM key cannot sign")
	}
	jwk := jose.JSONWebKey{Key: signer.Public()}
	thumb, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, "", "", err
	}
	return key, defaultAlgFor(key), base64.RawURLEncoding.EncodeToString(thumb), nil
}

func defaultAlgFor(key any) jose.SignatureAlgorithm {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return jose.RS256
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P384():
			return jose.ES384
		case elliptic.P521():
			return jose.ES512
		}
		return jose.ES256
	case ed25519.PrivateKey:
		return jose.EdDSA
	case []byte:
		return jose.HS256
	}
	return ""
}

func keygenCommand() *cobra.Command {
	var alg, kid, privFile, jwksFile string
	c := &cobra.Command{
		Use:   "keygen [--alg ES256] [--kid <id>] [--private private.jwk] [--jwks jwks.json]",
		Short: "Write a private signing key (JWK) and the matching public JWKS",
		RunE: func(cmd *cobra.Command, _ []string) error {
			priv, pub, err := generateKey(jose.SignatureAlgorithm(alg), kid)
			if err != nil {
				return err
			}
			if err := os.WriteFile(privFile, priv, 0o600); err != nil {
				return err
			}
			if err := os.WriteFile(jwksFile, pub, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote private key %s and public JWKS %s\n", privFile, jwksFile)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&alg, "alg", "ES256", "algorithm: RS256, PS256, ES256, ES384, ES512 or EdDSA")
	f.StringVar(&kid, "kid", "", "key id (default: the key's SHA-256 thumbprint)")
	f.StringVar(&privFile, "private", "private.jwk", "where to write the private JWK")
	f.StringVar(&jwksFile, "jwks", "jwks.json", "where to write the public JWK set")
	return c
}

// generateKey makes a key pair and returns the private JWK and the public
// JWK set, both as JSON.
func generateKey(alg jose.SignatureAlgorithm, kid string) ([]byte, []byte, error) {
	var key crypto.Signer
	var err error
	switch algClass(alg) {
	case classRSA:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case classP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case classP384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case classP521:
		key, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case classEd25519:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, nil, fmt.Errorf("--alg %q: want an asymmetric algorithm (RS256, PS256, ES256, ES384, ES512, EdDSA)", alg)
	}
	if err != nil {
		return nil, nil, err
	}
	if kid == "" {
		thumb, err := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, nil, err
		}
		kid = base64.RawURLEncoding.EncodeToString(thumb)
	}
	priv := jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: string(alg), Use: "sig"}
	privJSON, err := json.MarshalIndent(priv, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	pubJSON, err := json.MarshalIndent(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{priv.Public()}}, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	return append(privJSON, '\n'), append(pubJSON, '\n'), nil
}
