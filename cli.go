package oauth2jwt

import (
	"errors"
	"fmt"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "oauth2-jwt",
		Usage: "inspect|token|dpop-proof|keygen",
		Short: "Inspect, mint and sign bearer tokens for the oauth2_jwt module",
		Long: `
Tools for the oauth2_jwt module:

  inspect     reads a token on stdin, prints its header and claims and, given
              a config, which provider it selects and which check passes or
              fails (with --dpop: also the DPoP proof and binding checks)
  token       mints a token signed with a private key, for local testing
              (--dpop-key binds it to a DPoP key, --cnf-x5t to a certificate)
  dpop-proof  prints a DPoP proof for one request, to send with such a token
  keygen      writes a private key (JWK) and the matching public JWKS
`,
		CobraFunc: func(cmd *cobra.Command) {
			for _, sub := range []*cobra.Command{inspectCommand(), tokenCommand(), dpopProofCommand(), keygenCommand()} {
				sub.RunE = withExitCode(sub.RunE)
				cmd.AddCommand(sub)
			}
		},
	})
}

// exitError is a command's outcome other than success: the process exits
// with code, after printing err (when set) on stderr.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// withExitCode is the one place where an exitError becomes the exit status
// of the caddy process. Caddy's main exits 1 for any error a command
// returns, and with the given status for the error made by
// WrapCommandFuncForCobra from a CommandFunc's status above 1; that is
// how a code of 2 reaches it. The message is printed here, once, in place
// of cobra's "Error:" line (or Caddy's JSON log line).
func withExitCode(run func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := run(cmd, args)
		var ee *exitError
		if !errors.As(err, &ee) {
			return err
		}
		cmd.SilenceErrors = true
		if ee.err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "Error: %v\n", ee.err)
		}
		if ee.code <= 1 {
			return err
		}
		return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) {
			return ee.code, nil
		})(cmd, args)
	}
}

// Exit codes of inspect.
const (
	exitRejected = 1 // a check fails, the token is expired or not a JWT
	exitUsage    = 2 // inspect could not run: no token, or an unusable config
)
