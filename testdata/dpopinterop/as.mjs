// An authorization server for dpop_interop_test.go: panva's oidc-provider
// issuing DPoP-bound (RFC 9449) JWT access tokens (RFC 9068) by the
// client_credentials grant, for one resource indicator (RFC 8707).
//
// Environment: AS_ISSUER (http://127.0.0.1:<port>), AS_RESOURCE (the
// resource and audience), AS_CLIENT_ID, AS_CLIENT_SECRET; AS_LISTEN_FD,
// when set, is an inherited listening socket (the Go test's), else the
// server listens on the issuer's port. Prints {"ready":...} once listening.
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const issuer = env('AS_ISSUER');
const resource = env('AS_RESOURCE');

// An ephemeral ES256 signing key: the resource server finds it through
// discovery (jwks_uri).
const signing = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  .privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: [{
    client_id: env('AS_CLIENT_ID'),
    client_secret: env('AS_CLIENT_SECRET'),
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256', // the only signing key is ES256
    scope: 'api:read',
  }],
  jwks: { keys: [{ ...signing, kid: 'as-es256', alg: 'ES256', use: 'sig' }] },
  scopes: ['api:read'],
  ttl: { ClientCredentials: 300 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    dPoP: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator) => {
        if (indicator !== resource) throw new Provider.errors.InvalidTarget();
        return {
          scope: 'api:read',
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const server = createServer(provider.callback());
const ready = () => console.log(JSON.stringify({ ready: issuer }));
if (process.env.AS_LISTEN_FD) {
  server.listen({ fd: Number(process.env.AS_LISTEN_FD) }, ready);
} else {
  server.listen(Number(new URL(issuer).port), '127.0.0.1', ready);
}
// The Go test ends the server by closing stdin (or killing it).
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
