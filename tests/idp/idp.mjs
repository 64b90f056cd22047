// A real OpenID Connect provider (panva/oidc-provider, OpenID-certified) for
// Airlock's tests and demo.  It issues RS256 JWT access tokens (RFC 9068) to
// agents by client credentials, and to people by the device flow, with a
// groups claim.  Everything is in memory; never expose it beyond loopback.
//
// Environment:
//   PORT          listen port; 0 (default) picks a free one
//   HOST          listen address (default 127.0.0.1)
//   ISSUER        issuer URL (default http://HOST:PORT)
//   AUDIENCE      the resource (gateway) the access tokens are for
//   CLIENTS       JSON list: [{"client_id", "client_secret", "groups": [...],
//                 "token_ttl": seconds}]; a client without client_secret is a
//                 public device-flow client; one with "redirect_uris" is a web
//                 app signing people in by the authorization-code flow
//   USERS         JSON object {"username": ["group", ...]} for people's logins
//                 (device flow, authorization code; the groups are also userinfo claims)
//   TOKEN_TTL     default access token lifetime in seconds (default 300)
//   GROUPS_CLAIM  claim name for groups (default "groups"; may be namespaced)
//   SHAPE         issue access tokens shaped like another provider's tokens: okta,
//                 entra, google, keycloak or dex (see shapes.mjs); each client may
//                 carry a "profile" object with that shape's per-client values.
//                 The signature, keys and discovery stay this provider's own.
//   TOKEN_AUDIENCE  JSON string or list: the "aud" of shaped tokens (default
//                 AUDIENCE; some providers use a client id, not a URI)
//   ADMIN_TOKEN   enables POST /admin/rotate[?retire=1] with this bearer token:
//                 adds a new signing key and signs with it from then on;
//                 retire=1 also drops every older key from the JWKS.
//
// Once listening it prints one JSON line {"issuer": ..., "port": ...}.
import { createHash, generateKeyPairSync, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';

import * as oidc from 'oidc-provider';

import { SHAPES } from './shapes.mjs';

const HOST = process.env.HOST || '127.0.0.1';
const AUDIENCE = process.env.AUDIENCE || 'https://airlock.test';
const TOKEN_TTL = Number(process.env.TOKEN_TTL || 300);
const GROUPS_CLAIM = process.env.GROUPS_CLAIM || 'groups';
const ADMIN_TOKEN = process.env.ADMIN_TOKEN || '';
const SHAPE = process.env.SHAPE || '';
const TOKEN_AUDIENCE = process.env.TOKEN_AUDIENCE ? JSON.parse(process.env.TOKEN_AUDIENCE) : AUDIENCE;
if (SHAPE && !SHAPES[SHAPE]) throw new Error(`unknown SHAPE ${SHAPE}`);
const USERS = JSON.parse(process.env.USERS || '{}');
const CLIENTS = JSON.parse(process.env.CLIENTS || JSON.stringify([
  { client_id: 'alice', client_secret: 'alice-secret', groups: ['sre', 'dev'] },
  { client_id: 'bob', client_secret: 'bob-secret', groups: ['dev'] },
]));

const keys = [];
let handler = null;

function newSigningKey() {
  const jwk = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  // RFC 7638 thumbprint: two IdP instances never share a kid.
  const kid = createHash('sha256')
    .update(JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n }))
    .digest('base64url');
  return { ...jwk, kid, use: 'sig', alg: 'RS256' };
}

function clientMetadata(c) {
  const common = {
    client_id: c.client_id, groups: c.groups || [], token_ttl: c.token_ttl || TOKEN_TTL, profile: c.profile || {},
  };
  if (c.redirect_uris) {
    return {
      ...common,
      client_secret: c.client_secret,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: c.redirect_uris,
      token_endpoint_auth_method: 'client_secret_post',
    };
  }
  if (c.client_secret) {
    return {
      ...common,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    };
  }
  return {
    ...common,
    token_endpoint_auth_method: 'none',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
    redirect_uris: [],
    response_types: [],
  };
}

function buildProvider(issuer) {
  const signingKid = keys[0].kid;
  const p = new oidc.Provider(issuer, {
    clients: CLIENTS.map(clientMetadata),
    extraClientMetadata: {
      properties: ['groups', 'token_ttl', 'profile'],
      validator(_ctx, key, value) {
        if (key === 'profile' && (typeof value !== 'object' || value === null || Array.isArray(value))) {
          throw new oidc.errors.InvalidClientMetadata('profile must be an object');
        }
        if (key === 'groups' && (!Array.isArray(value) || value.some((g) => typeof g !== 'string'))) {
          throw new oidc.errors.InvalidClientMetadata('groups must be a list of strings');
        }
        if (key === 'token_ttl' && !(Number.isInteger(value) && value > 0)) {
          throw new oidc.errors.InvalidClientMetadata('token_ttl must be a positive integer');
        }
      },
    },
    jwks: { keys },
    formats: {
      customizers: {
        // Another provider's token shape: its claims replace the payload, signed as usual.
        jwt: SHAPE ? async (_ctx, token, structured) => {
          const client = token.client || {};
          const shaped = SHAPES[SHAPE](structured.payload, {
            account: token.accountId,
            groups: token.accountId ? (USERS[token.accountId] || []) : (client.groups || []),
            profile: client.profile || {},
            audience: TOKEN_AUDIENCE,
          });
          structured.payload = shaped.payload;
          structured.header = shaped.header;
        } : undefined,
      },
    },
    features: {
      clientCredentials: { enabled: true },
      deviceFlow: { enabled: true },
      devInteractions: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Web apps signing people in get userinfo access tokens, not gateway tokens.
        defaultResource: async (_ctx, client) => (client?.redirectUris?.length ? undefined : AUDIENCE),
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource, client) => {
          if (resource !== AUDIENCE) throw new oidc.errors.InvalidTarget();
          return {
            scope: 'kube',
            audience: AUDIENCE,
            accessTokenTTL: client?.token_ttl || TOKEN_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256', kid: signingKid } },
          };
        },
      },
    },
    claims: { openid: ['sub', GROUPS_CLAIM] },
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ sub, [GROUPS_CLAIM]: USERS[sub] || [] }),
    }),
    extraTokenClaims: async (ctx, token) => {
      const groups = token.accountId ? (USERS[token.accountId] || []) : (ctx.oidc.client?.groups || []);
      return { [GROUPS_CLAIM]: groups };
    },
    ttl: {
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL || TOKEN_TTL,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL || TOKEN_TTL,
      DeviceCode: 600,
    },
  });
  p.on('server_error', (_ctx, err) => console.error('server_error', err));
  return p;
}

function adminAuthorized(req) {
  if (!ADMIN_TOKEN) return false;
  const digest = (s) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(req.headers.authorization || ''), digest(`Bearer ${ADMIN_TOKEN}`));
}

function rotate(req, res, query) {
  if (req.method !== 'POST' || !adminAuthorized(req)) {
    res.writeHead(404).end();
    return;
  }
  const key = newSigningKey();
  if (query.get('retire') === '1') keys.length = 0;
  keys.unshift(key);
  handler = buildProvider(issuer).callback();
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ kid: key.kid, kids: keys.map((k) => k.kid) }));
}

keys.push(newSigningKey());
let issuer = null;
const server = createServer((req, res) => {
  if (handler === null) {
    res.writeHead(503).end();
    return;
  }
  const [path, query] = req.url.split('?', 2);
  if (path === '/admin/rotate') {
    rotate(req, res, new URLSearchParams(query));
    return;
  }
  handler(req, res);
});

server.listen(Number(process.env.PORT || 0), HOST, () => {
  const { port } = server.address();
  issuer = process.env.ISSUER || `http://${HOST}:${port}`;
  handler = buildProvider(issuer).callback();
  console.log(JSON.stringify({ issuer, port }));
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
