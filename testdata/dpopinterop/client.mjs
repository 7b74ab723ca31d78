// A DPoP client for dpop_interop_test.go, built on panva's dpop package
// (an implementation independent of the module): it gets a DPoP-bound
// access token from the authorization server (with a proof for the token
// endpoint, RFC 9449 section 5), then calls the API through Caddy and
// prints one JSON line per request with what it saw.
//
// Environment: AS_ISSUER, AS_RESOURCE, AS_CLIENT_ID, AS_CLIENT_SECRET;
// API_URL (a URL of the API, may carry a query), NONCE_URL (optional: a
// URL whose handler requires server nonces).
import { generateKeyPair, generateProof, calculateThumbprint } from 'dpop';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const print = (obj) => console.log(JSON.stringify(obj));

// htu is the URI without query and fragment (RFC 9449 section 4.2).
const htu = (url) => {
  const u = new URL(url);
  u.search = '';
  u.hash = '';
  return u.href;
};

const keypair = await generateKeyPair('ES256');
const jkt = await calculateThumbprint(keypair.publicKey);

// Token request, with a proof for the token endpoint.
const discovery = await (await fetch(new URL('/.well-known/openid-configuration', env('AS_ISSUER')))).json();
const tokenEndpoint = discovery.token_endpoint;
const tokenRes = await fetch(tokenEndpoint, {
  method: 'POST',
  headers: {
    authorization: 'Basic ' + Buffer.from(`${env('AS_CLIENT_ID')}:${env('AS_CLIENT_SECRET')}`).toString('base64'),
    'content-type': 'application/x-www-form-urlencoded',
    dpop: await generateProof(keypair, tokenEndpoint, 'POST'),
  },
  body: new URLSearchParams({ grant_type: 'client_credentials', resource: env('AS_RESOURCE'), scope: 'api:read' }),
});
const tokenBody = await tokenRes.json();
if (tokenRes.status !== 200) {
  throw new Error(`token endpoint: ${tokenRes.status} ${JSON.stringify(tokenBody)}`);
}
const token = tokenBody.access_token;
const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
print({
  case: 'token',
  jkt,
  token_type: tokenBody.token_type,
  cnf_jkt: claims.cnf?.jkt ?? '',
  dpop_signing_alg_values_supported: discovery.dpop_signing_alg_values_supported ?? [],
});

// call sends one request and prints what came back.
const call = async (name, url, { scheme = 'DPoP', proof, method = 'GET' } = {}) => {
  const headers = { authorization: `${scheme} ${token}` };
  if (proof) headers.dpop = proof;
  const res = await fetch(url, { method, headers });
  const out = {
    case: name,
    status: res.status,
    body: (await res.text()).trim(),
    www_authenticate: res.headers.get('www-authenticate') ?? '',
    dpop_nonce: res.headers.get('dpop-nonce') ?? '',
    cache_control: res.headers.get('cache-control') ?? '',
  };
  print(out);
  return out;
};

const api = env('API_URL');
const good = await generateProof(keypair, htu(api), 'GET', undefined, token);
await call('good', api, { proof: good });
await call('replayed', api, { proof: good });
await call('bearer', api, { scheme: 'Bearer' });
await call('no_proof', api);
await call('other_url', api, { proof: await generateProof(keypair, htu(new URL('/api/other', api).href), 'GET', undefined, token) });
await call('other_method', api, { proof: await generateProof(keypair, htu(api), 'POST', undefined, token) });
await call('no_ath', api, { proof: await generateProof(keypair, htu(api), 'GET') });

// RFC 9449 section 9: a server nonce, then the retry with it.
if (process.env.NONCE_URL) {
  const nonceURL = process.env.NONCE_URL;
  const first = await call('nonce_challenge', nonceURL, { proof: await generateProof(keypair, htu(nonceURL), 'GET', undefined, token) });
  await call('nonce_retry', nonceURL, { proof: await generateProof(keypair, htu(nonceURL), 'GET', first.dpop_nonce || undefined, token) });
}
