// An authorization server for introspect_interop_test.go: panva's
// oidc-provider issuing opaque access tokens by the client_credentials
// grant for one resource indicator (RFC 8707), and answering token
// introspection (RFC 7662), signed on request for one client (RFC 9701),
// and revocation (RFC 7009).
//
// Clients: AS_APP_ID (gets and revokes tokens; client_secret_basic), and
// four resource-server clients that introspect: rs-basic
// (client_secret_basic), rs-post (client_secret_post), rs-jwt
// (private_key_jwt with the public JWK in AS_RS_JWK) and rs-signed
// (client_secret_basic, for the route asking for signed answers). Every secret is AS_SECRET.
//
// POST /test/refresh_token mints a refresh token for AS_APP_ID through
// oidc-provider's own Grant and RefreshToken models (the grants that issue
// refresh tokens need a browser login), for the test that sends one as an
// access token.
//
// Environment: AS_ISSUER (http://127.0.0.1:<port>), AS_RESOURCE (the
// resource and audience); AS_LISTEN_FD, when set, is an inherited
// listening socket (the Go test's). Prints {"ready":...} once listening.
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
const appID = env('AS_APP_ID');
const secret = env('AS_SECRET');

// An ephemeral ES256 signing key, for the signed introspection answers:
// the resource server finds it through discovery (jwks_uri).
const signing = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  .privateKey.export({ format: 'jwk' });

const rs = (client_id, extra) => ({
  client_id,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  // The only signing key is ES256 (the defaults, RS256, would make the
  // client metadata invalid); an introspection answer is signed only when
  // asked for (Accept: application/token-introspection+jwt).
  id_token_signed_response_alg: 'ES256',
  introspection_signed_response_alg: 'ES256',
  ...extra,
});

const provider = new Provider(issuer, {
  clients: [
    rs(appID, { client_secret: secret, token_endpoint_auth_method: 'client_secret_basic', scope: 'api:read offline_access' }),
    rs('rs-basic', { client_secret: secret, token_endpoint_auth_method: 'client_secret_basic' }),
    rs('rs-post', { client_secret: secret, token_endpoint_auth_method: 'client_secret_post' }),
    rs('rs-jwt', {
      token_endpoint_auth_method: 'private_key_jwt',
      jwks: { keys: [JSON.parse(env('AS_RS_JWK'))] },
    }),
    rs('rs-signed', { client_secret: secret, token_endpoint_auth_method: 'client_secret_basic' }),
  ],
  jwks: { keys: [{ ...signing, kid: 'as-es256', alg: 'ES256', use: 'sig' }] },
  scopes: ['api:read', 'offline_access'],
  ttl: { ClientCredentials: 300, RefreshToken: 3600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    jwtIntrospection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator) => {
        if (indicator !== resource) throw new Provider.errors.InvalidTarget();
        return {
          scope: 'api:read',
          audience: resource,
          accessTokenFormat: 'opaque',
          accessTokenTTL: 300,
        };
      },
    },
  },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

// mintRefreshToken saves a grant and a refresh token of it for the app
// client, and returns the token's value.
async function mintRefreshToken() {
  const client = await provider.Client.find(appID);
  const grant = new provider.Grant({ clientId: appID, accountId: 'alice' });
  grant.addOIDCScope('openid offline_access');
  const grantId = await grant.save();
  const token = new provider.RefreshToken({
    client, accountId: 'alice', grantId, gty: 'authorization_code', scope: 'openid offline_access',
  });
  return token.save();
}

const callback = provider.callback();
const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/test/refresh_token') {
    mintRefreshToken().then((value) => {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ refresh_token: value }));
    }, (err) => {
      console.error('minting a refresh token', err);
      res.statusCode = 500;
      res.end();
    });
    return;
  }
  callback(req, res);
});
const ready = () => console.log(JSON.stringify({ ready: issuer }));
if (process.env.AS_LISTEN_FD) {
  server.listen({ fd: Number(process.env.AS_LISTEN_FD) }, ready);
} else {
  server.listen(Number(new URL(issuer).port), '127.0.0.1', ready);
}
// The Go test ends the server by closing stdin (or killing it).
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
