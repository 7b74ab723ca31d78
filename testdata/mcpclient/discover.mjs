// Runs the MCP TypeScript SDK's own client code against an MCP server
// protected by oauth2_jwt (mcp_test.go starts one): the first request gets
// a 401, the SDK reads resource_metadata from its WWW-Authenticate header,
// fetches the RFC 9728 document there, and selects the authorization server
// and the resource indicator from it, as its auth() flow does. With
// MCP_TOKEN set, it then connects with that token and lists the tools.
//
// Usage: MCP_URL=http://localhost:9080/mcp [MCP_TOKEN=...] node discover.mjs
// Prints one JSON object on stdout; exits non-zero on any failure.

import {
  discoverOAuthProtectedResourceMetadata,
  extractResourceMetadataUrl,
  extractWWWAuthenticateParams,
  selectResourceURL,
} from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';

const serverUrl = new URL(process.env.MCP_URL ?? '');
const out = {};

// 1. An unauthenticated MCP request, as a client sends it first.
const res = await fetch(serverUrl, {
  method: 'POST',
  headers: {
    'Content-Type': 'application/json',
    Accept: 'application/json, text/event-stream',
    'MCP-Protocol-Version': LATEST_PROTOCOL_VERSION,
  },
  body: JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: {
      protocolVersion: LATEST_PROTOCOL_VERSION,
      capabilities: {},
      clientInfo: { name: 'oauth2jwt-test', version: '1' },
    },
  }),
});
await res.body?.cancel();
out.status = res.status;
out.www_authenticate = res.headers.get('WWW-Authenticate');

// 2. The challenge, parsed by the SDK.
const params = extractWWWAuthenticateParams(res);
out.resource_metadata = params.resourceMetadataUrl?.href ?? null;
out.scope = params.scope ?? null;
out.error = params.error ?? null;
out.resource_metadata_deprecated = extractResourceMetadataUrl(res)?.href ?? null;
if (!params.resourceMetadataUrl) {
  throw new Error(`no resource_metadata in the challenge: ${out.www_authenticate}`);
}

// 3. The document at the URL the challenge names, and the resource
// indicator the SDK would send to the authorization server.
const prm = await discoverOAuthProtectedResourceMetadata(serverUrl, {
  resourceMetadataUrl: params.resourceMetadataUrl,
});
out.authorization_servers = prm.authorization_servers ?? [];
out.scopes_supported = prm.scopes_supported ?? [];
out.resource = prm.resource;
out.selected_resource = (await selectResourceURL(serverUrl, {}, prm))?.href ?? null;

// 4. Without the hint, the SDK's path-aware well-known discovery.
const found = await discoverOAuthProtectedResourceMetadata(serverUrl);
out.discovered_resource = found.resource;

// 5. With a token: a whole MCP session through the proxy.
if (process.env.MCP_TOKEN) {
  const transport = new StreamableHTTPClientTransport(serverUrl, {
    requestInit: { headers: { Authorization: `Bearer ${process.env.MCP_TOKEN}` } },
  });
  const client = new Client({ name: 'oauth2jwt-test', version: '1' });
  await client.connect(transport);
  const { tools } = await client.listTools();
  out.tools = tools.map((t) => t.name);
  const called = await client.callTool({ name: 'whoami', arguments: {} });
  out.whoami = called.content?.[0]?.text ?? null;
  await client.close();
}

console.log(JSON.stringify(out));
console.error(`authorization server: ${out.authorization_servers.join(' ')}`);
