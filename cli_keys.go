package oauth2jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spf13/cobra"
)

func tokenCommand() *cobra.Command {
	var keyFile, iss, sub, alg, kid, cnfKey, dpopKey, cnfX5t string
	var aud, claimArgs []string
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "token --key <private JWK or PEM> --iss <issuer> --aud <audience> --sub <subject> [--ttl 1h] [--claim k=v]... [--dpop-key <JWK>] [--cnf-x5t <PEM cert>]",
		Short: "Mint a signed token for local testing",
		Long: `Mints a token signed with --key, for local testing.

--cnf-key (or its alias --dpop-key) binds the token to a DPoP key (RFC 9449):
it adds cnf.jkt, the RFC 7638 SHA-256 thumbprint of that key. The file may hold
a public JWK, a private JWK (its public half is used, e.g. keygen's --private
file) or a JWK set with one key (keygen's --jwks file).

--cnf-x5t binds the token to a client certificate (RFC 8705): it adds
cnf.x5t#S256, the SHA-256 of the first certificate of that PEM file.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keyData, err := os.ReadFile(keyFile)
			if err != nil {
				return fmt.Errorf("reading --key: %w", err)
			}
			o := mintOptions{iss: iss, aud: aud, sub: sub, ttl: ttl, alg: alg, kid: kid, claims: claimArgs}
			if cnfKey != "" && dpopKey != "" {
				return errors.New("--cnf-key and --dpop-key are the same option; give one")
			}
			if f := cnfKey + dpopKey; f != "" {
				data, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("reading --dpop-key: %w", err)
				}
				if o.jkt, err = jwkThumbprintOf(data); err != nil {
					return fmt.Errorf("--dpop-key %s: %w", f, err)
				}
			}
			if cnfX5t != "" {
				data, err := os.ReadFile(cnfX5t)
				if err != nil {
					return fmt.Errorf("reading --cnf-x5t: %w", err)
				}
				if o.x5t, err = certDigestOf(data); err != nil {
					return fmt.Errorf("--cnf-x5t %s: %w", cnfX5t, err)
				}
			}
			tok, err := mintToken(keyData, o)
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
	f.StringVar(&cnfKey, "cnf-key", "", "bind the token to this DPoP key (public or private JWK, or a one-key JWK set): adds cnf.jkt")
	f.StringVar(&dpopKey, "dpop-key", "", "alias of --cnf-key")
	f.StringVar(&cnfX5t, "cnf-x5t", "", "bind the token to this client certificate (PEM): adds cnf.x5t#S256")
	_ = c.MarkFlagRequired("key")
	return c
}

type mintOptions struct {
	iss, sub, alg, kid string
	jkt, x5t           string // cnf members, base64url; "" for none
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
	if o.jkt != "" || o.x5t != "" {
		if _, ok := claims["cnf"]; ok {
			return "", errors.New("--claim cnf=... cannot be combined with --cnf-key, --dpop-key or --cnf-x5t")
		}
		cnf := map[string]string{}
		if o.jkt != "" {
			cnf["jkt"] = o.jkt
		}
		if o.x5t != "" {
			cnf["x5t#S256"] = o.x5t
		}
		claims["cnf"] = cnf
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// readDPoPKey reads a DPoP key for token --dpop-key: a public or private
// JWK, or a JWK set holding exactly one key. It returns the public key,
// refusing keys the module refuses in proofs (symmetric keys, RSA under
// 2048 bits, unknown curves).
func readDPoPKey(data []byte) (*jose.JSONWebKey, error) {
	var probe struct {
		Keys json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("not a JWK: %w", err)
	}
	var jwk jose.JSONWebKey
	if probe.Keys != nil {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(data, &set); err != nil {
			return nil, fmt.Errorf("JWK set: %w", err)
		}
		if len(set.Keys) != 1 {
			return nil, fmt.Errorf("the JWK set holds %d keys; want exactly one", len(set.Keys))
		}
		jwk = set.Keys[0]
	} else if err := jwk.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("JWK: %w", err)
	}
	pub := jwk.Public()
	if !pub.Valid() || publicKeyClass(pub.Key) == 0 {
		return nil, errors.New("not a usable DPoP key: want EC P-256/384/521, Ed25519 or RSA of at least 2048 bits")
	}
	return &pub, nil
}

// jwkThumbprintOf returns the cnf.jkt of a DPoP key file: the RFC 7638
// SHA-256 thumbprint, base64url, computed as the module computes a
// proof's (go-jose's Thumbprint, in dpop.go's checkProof).
func jwkThumbprintOf(data []byte) (string, error) {
	pub, err := readDPoPKey(data)
	if err != nil {
		return "", err
	}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(thumb), nil
}

// certDigestOf returns the cnf.x5t#S256 of a PEM certificate file: the
// base64url SHA-256 of the first certificate's DER.
func certDigestOf(data []byte) (string, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return "", errors.New("no PEM CERTIFICATE block")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return "", fmt.Errorf("certificate: %w", err)
		}
		sum := sha256.Sum256(block.Bytes)
		return base64.RawURLEncoding.EncodeToString(sum[:]), nil
	}
}

func dpopProofCommand() *cobra.Command {
	var keyFile, method, rawURL, token, nonce string
	c := &cobra.Command{
		Use:   "dpop-proof --key <private JWK or PEM> [--method GET] --url <https://host/path> [--token <access token>] [--nonce <nonce>]",
		Short: "Print a DPoP proof (RFC 9449) for one request",
		Long: `Prints a DPoP proof for one request, signed with --key (keygen's --private file
works): send it as the DPoP header, with the token as "Authorization: DPoP <token>".

The proof's header has typ dpop+jwt, the key's alg and its public jwk; its claims
are a random jti, htm (--method), htu (--url without query and fragment), iat
(now), ath (the SHA-256 of --token, when given) and nonce (--nonce, when given:
the DPoP-Nonce the server answered with). A proof is good for one request: the
module refuses a replay.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keyData, err := os.ReadFile(keyFile)
			if err != nil {
				return fmt.Errorf("reading --key: %w", err)
			}
			proof, err := makeProof(keyData, proofOptions{method: method, url: rawURL, token: token, nonce: nonce})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), proof)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&keyFile, "key", "", "private key: a JWK (as written by keygen) or a PEM file")
	f.StringVar(&method, "method", http.MethodGet, "the request's method (htm)")
	f.StringVar(&rawURL, "url", "", "the request's URL (htu; query and fragment are dropped)")
	f.StringVar(&token, "token", "", "the access token sent with the proof (ath)")
	f.StringVar(&nonce, "nonce", "", "the server's DPoP-Nonce")
	_ = c.MarkFlagRequired("key")
	_ = c.MarkFlagRequired("url")
	return c
}

type proofOptions struct {
	method, url, token, nonce string
	now                       time.Time
}

// makeProof signs a DPoP proof with a private key given as a JWK or PEM.
func makeProof(keyData []byte, o proofOptions) (string, error) {
	key, alg, _, err := parsePrivateKey(keyData)
	if err != nil {
		return "", err
	}
	if alg == dpopEd25519 {
		alg = jose.EdDSA // the same signature; go-jose knows this name
	}
	signer, ok := key.(crypto.Signer)
	if !ok || dpopAlgClass(alg) == 0 {
		return "", fmt.Errorf("a DPoP key must be an asymmetric signing key (alg %q)", alg)
	}
	if publicKeyClass(signer.Public()) != dpopAlgClass(alg) {
		return "", fmt.Errorf("the key does not fit alg %q (RSA needs at least 2048 bits)", alg)
	}
	if o.method == "" || strings.ContainsAny(o.method, " \t\r\n") {
		return "", fmt.Errorf("--method %q: want an HTTP method such as GET", o.method)
	}
	htu := o.url
	if i := strings.IndexAny(htu, "?#"); i >= 0 {
		htu = htu[:i]
	}
	if _, ok := normalizeHTU(htu); !ok {
		return "", fmt.Errorf("--url %q: want an absolute http or https URL", o.url)
	}
	var jti [18]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("jti: %w", err)
	}
	now := o.now
	if now.IsZero() {
		now = time.Now()
	}
	claims := struct {
		JTI   string `json:"jti"`
		HTM   string `json:"htm"`
		HTU   string `json:"htu"`
		IAT   int64  `json:"iat"`
		ATH   string `json:"ath,omitempty"`
		Nonce string `json:"nonce,omitempty"`
	}{
		JTI:   base64.RawURLEncoding.EncodeToString(jti[:]),
		HTM:   o.method,
		HTU:   htu,
		IAT:   now.Unix(),
		Nonce: o.nonce,
	}
	if o.token != "" {
		sum := sha256.Sum256([]byte(o.token))
		claims.ATH = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key},
		(&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"))
	if err != nil {
		return "", fmt.Errorf("signer: %w", err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("signing the proof: %w", err)
	}
	return jws.CompactSerialize()
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
	var force bool
	c := &cobra.Command{
		Use:   "keygen [--alg ES256] [--kid <id>] [--private private.jwk] [--jwks jwks.json] [--force]",
		Short: "Write a private signing key (JWK) and the matching public JWKS",
		Long: `Writes a new private signing key as a JWK (mode 0600) and the matching public JWK
set. An existing file is never overwritten unless --force is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if filepath.Clean(privFile) == filepath.Clean(jwksFile) {
				return fmt.Errorf("--private and --jwks are both %s", privFile)
			}
			if !force {
				// Refuse before generating anything, so that no half of a
				// key pair is written next to an old other half.
				for _, f := range []string{privFile, jwksFile} {
					if _, err := os.Lstat(f); err == nil {
						return fmt.Errorf("%s already exists; pass --force to overwrite it", f)
					}
				}
			}
			priv, pub, err := generateKey(jose.SignatureAlgorithm(alg), kid)
			if err != nil {
				return err
			}
			if err := writeNewFile(privFile, priv, 0o600, force); err != nil {
				return err
			}
			if err := writeNewFile(jwksFile, pub, 0o644, force); err != nil {
				_ = os.Remove(privFile)
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
	f.BoolVar(&force, "force", false, "overwrite existing --private and --jwks files")
	return c
}

// writeNewFile creates file with data and mode, failing if it exists. With
// force an existing file (not a directory) is removed first, so the new
// one gets mode afresh and a symbolic link in its place is not followed.
func writeNewFile(file string, data []byte, mode os.FileMode, force bool) error {
	if force {
		if fi, err := os.Lstat(file); err == nil {
			if fi.IsDir() {
				return fmt.Errorf("%s is a directory", file)
			}
			if err := os.Remove(file); err != nil {
				return fmt.Errorf("replacing %s: %w", file, err)
			}
		}
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; pass --force to overwrite it", file)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", file, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", file, err)
	}
	return nil
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
