package oauth2jwt

import (
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
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spf13/cobra"
)

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
