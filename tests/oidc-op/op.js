// A real, independently written OpenID Provider for porteiro's end-to-end
// tests: panva's `oidc-provider` (certified OpenID Connect implementation)
// with its built-in development login and consent pages.
//
//   node op.js PORT [OPTIONS_JSON]
//
// PORT 0 picks a free port. The issuer is `http://127.0.0.1:<port>`; once the
// provider listens, the port alone is printed on the first line of stdout.
// OPTIONS_JSON (all optional):
//   clients        [{client_id, client_secret, redirect_uris, token_endpoint_auth_method,
//                  post_logout_redirect_uris, backchannel_logout_uri,
//                  backchannel_logout_session_required}]
//   conform        true: claims beyond `sub` go to userinfo only, as the
//                  OpenID Connect spec describes (default false: the ID token
//                  carries every claim of the granted scopes)
//   agency_scope   the scope that releases the Niara agency* claims
//                  (default "profile", so the usual scopes suffice)
//   cookie_prefix  prefix of the provider's cookie names, so two providers
//                  on 127.0.0.1 (cookies ignore ports) keep their sessions apart
//
// Logout: RP-Initiated Logout (`end_session_endpoint` = {issuer}/session/end,
// a confirmation page with a form) and Back-Channel Logout are on. The
// provider posts logout tokens to each client's `backchannel_logout_uri`;
// since the tests publish porteiro under a name only their own HTTP client
// resolves, two test-only routes (never part of the provider) steer that:
//   POST /__test/hosts        JSON {"name": "127.0.0.1:port", ...}: requests
//                             the provider makes to http://name/... go to
//                             that address instead (loopback allowed)
//   GET  /__test/backchannel  JSON list of the logout tokens sent so far:
//                             {client_id, sid, ok, error}
//
// Refresh tokens: issued as oidc-provider does by default (the client
// allows the refresh_token grant, the scope has offline_access, which it
// keeps only with prompt=consent), and rotated on every use (each one is
// single use; a reused one revokes the grant). Test-only routes:
//   GET  /__test/refreshes    JSON {ok, refused}: refresh_token grants
//                             answered and refused so far, per client_id
//   GET  /__test/refresh-tokens  JSON list of every refresh token issued
//                             (so a test can look for them in logs)
//   POST /__test/revoke       JSON {"login": "ana"}: revokes every grant of
//                             that account (its refresh tokens stop working)
//   POST /__test/account      JSON {"login": "ana", "claims": {...}}:
//                             changes a known account's claims from now on
//
// Accounts: the development login page takes any login and any password.
// Known logins get the claims in ACCOUNTS; `bruno` lacks `agencydocument`.
// Any other login gets `<login>@example.com` and no agency claims.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const AGENCY_CLAIMS = [
  'agencyid',
  'agencyname',
  'agencybusinessname',
  'agencycountry',
  'agencydocument',
  'agencybackofficecode',
];

const ACCOUNTS = {
  ana: {
    email: 'ana.souza@viagens-sj.example.com',
    email_verified: true,
    name: 'Ana Souza',
    preferred_username: 'ana',
    groups: ['agents', 'finance'],
    agencyid: '4711',
    agencyname: 'Viagens São João Ltda',
    agencybusinessname: 'SJ Turismo',
    agencycountry: 'BR',
    agencydocument: '12.345.678/0001-90',
    agencybackofficecode: 'BO-0042',
  },
  bruno: {
    email: 'bruno@viagens-sj.example.com',
    email_verified: true,
    name: 'Bruno Lima',
    preferred_username: 'bruno',
    groups: ['agents'],
    agencyid: '4711',
    agencyname: 'Viagens São João Ltda',
    agencybusinessname: 'SJ Turismo',
    agencycountry: 'BR',
    agencybackofficecode: 'BO-0042',
  },
  carla: {
    email: 'carla@outra-agencia.example.com',
    email_verified: true,
    name: 'Carla Dias',
    preferred_username: 'carla',
    groups: ['managers'],
    agencyid: '9001',
    agencyname: 'Outra Agência SA',
    agencybusinessname: 'Outra',
    agencycountry: 'PT',
    agencydocument: 'PT509876543',
    agencybackofficecode: 'BO-9001',
  },
};

const port = Number(process.argv[2] ?? '0');
const options = JSON.parse(process.argv[3] ?? '{}');
const agencyScope = options.agency_scope ?? 'profile';
const prefix = options.cookie_prefix ?? 'op';

// Name -> "127.0.0.1:port", set by the test (POST /__test/hosts).
const hosts = {};
// Every back-channel logout the provider sent, with its outcome.
const backchannel = [];
// Refresh token grants, per client_id: answered and refused.
const refreshes = { ok: {}, refused: {} };
// Grant ids by account, for /__test/revoke.
const grants = {};
const refreshTokens = [];
let provider;

// The provider's own outgoing requests. Its default refuses loopback and
// private addresses (SSRF protection), which is right in production and
// exactly where porteiro listens in the tests.
async function testFetch(url, options) {
  const target = new URL(url);
  if (hosts[target.host]) {
    target.host = hosts[target.host];
  }
  const { dispatcher, ...rest } = options;
  return globalThis.fetch(target.href, rest);
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      try {
        resolve(JSON.parse(body || '{}'));
      } catch (e) {
        reject(e);
      }
    });
  });
}

async function testRoute(req, res) {
  if (req.method === 'POST' && req.url === '/__test/hosts') {
    Object.assign(hosts, await readJson(req));
    res.writeHead(204).end();
    return true;
  }
  if (req.method === 'GET' && req.url === '/__test/refreshes') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(refreshes));
    return true;
  }
  if (req.method === 'GET' && req.url === '/__test/refresh-tokens') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(refreshTokens));
    return true;
  }
  if (req.method === 'POST' && req.url === '/__test/revoke') {
    const { login } = await readJson(req);
    for (const grantId of grants[login] ?? []) {
      await provider.RefreshToken.revokeByGrantId(grantId);
      await provider.AccessToken.revokeByGrantId(grantId);
      await provider.Grant.adapter.destroy(grantId);
    }
    res.writeHead(204).end();
    return true;
  }
  if (req.method === 'POST' && req.url === '/__test/account') {
    const { login, claims } = await readJson(req);
    Object.assign(ACCOUNTS[login], claims);
    res.writeHead(204).end();
    return true;
  }
  if (req.method === 'GET' && req.url === '/__test/backchannel') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(backchannel));
    return true;
  }
  return false;
}

const server = createServer();
server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  const issuer = `http://127.0.0.1:${actual}`;

  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: `op-${actual}`, use: 'sig', alg: 'RS256' };

  const claims = {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'groups'],
  };
  claims[agencyScope] = [...(claims[agencyScope] ?? []), ...AGENCY_CLAIMS];

  provider = new Provider(issuer, {
    clients: options.clients ?? [],
    jwks: { keys: [jwk] },
    claims,
    scopes: ['openid', 'offline_access', ...Object.keys(claims).filter((s) => s !== 'openid')],
    conformIdTokenClaims: options.conform ?? false,
    pkce: { required: () => true },
    cookies: {
      keys: [randomBytes(32).toString('hex')],
      names: {
        session: `${prefix}_session`,
        interaction: `${prefix}_interaction`,
        resume: `${prefix}_interaction_resume`,
      },
    },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      backchannelLogout: { enabled: true },
    },
    fetch: testFetch,
    // Every refresh token is single use: a second use of one is refused
    // (and revokes the grant), so a gateway that refreshes twice shows.
    rotateRefreshToken: () => true,
    async findAccount(ctx, id) {
      const known = ACCOUNTS[id] ?? { email: `${id}@example.com`, email_verified: false, name: id };
      return {
        accountId: id,
        async claims() {
          return { sub: id, ...known };
        },
      };
    },
  });
  // Shows on stderr, which the tests print when the provider misbehaves.
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  const count = (table, ctx) => {
    if (ctx.oidc.params?.grant_type === 'refresh_token') {
      const id = ctx.oidc.client?.clientId ?? '-';
      table[id] = (table[id] ?? 0) + 1;
    }
  };
  provider.on('grant.success', (ctx) => count(refreshes.ok, ctx));
  provider.on('grant.error', (ctx) => count(refreshes.refused, ctx));
  provider.on('refresh_token.saved', (token) => refreshTokens.push(token.jti));
  provider.on('authorization_code.consumed', (code) => {
    (grants[code.accountId] ??= []).push(code.grantId);
  });
  provider.on('backchannel.success', (ctx, client, accountId, sid) => {
    backchannel.push({ client_id: client.clientId, sub: accountId, sid, ok: true });
  });
  provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
    console.error('backchannel.error', client.clientId, err);
    backchannel.push({ client_id: client.clientId, sub: accountId, sid, ok: false, error: String(err) });
  });

  const callback = provider.callback();
  server.on('request', async (req, res) => {
    if (req.url.startsWith('/__test/')) {
      if (!(await testRoute(req, res))) {
        res.writeHead(404).end();
      }
      return;
    }
    callback(req, res);
  });
  process.stdout.write(`${actual}\n`);
});

// The test that started this process owns it: end with it.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
