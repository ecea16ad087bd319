// A real OpenID provider (oidc-provider) for Renkei's end-to-end tests of federated login.
//
//   PROVIDER_CERT=server.pem PROVIDER_KEY=server.key PROVIDER_CLIENTS='[{...}]' node provider.mjs
//
// Listens over HTTPS on 127.0.0.1, port 0, and prints one JSON line {"port":..,"issuer":..} on
// stdout when ready. PROVIDER_CLIENTS is a JSON array of {client_id, client_secret,
// redirect_uris}: confidential clients (client_secret_basic), authorization code only, PKCE
// required.
//
// Logins have no UI. The test says who logs in next, and the interaction page finishes by
// itself with consent for openid email profile:
//   POST /test/login  {"sub":"..","email":"..","email_verified":true}  or  {"error":"access_denied"}
// And it can spoil the ID tokens the token endpoint hands to one client:
//   POST /test/tamper {"client_id":"..","mode":"wrong_audience"|"expired"|"bad_nonce"|
//                      "wrong_issuer"|"bad_signature"|null}
// Both settings stay until changed.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

import { SignJWT, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK } from 'jose';
import Provider from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`provider.mjs: ${name} is not set`);
    process.exit(2);
  }
  return value;
};

const tls = { cert: readFileSync(env('PROVIDER_CERT')), key: readFileSync(env('PROVIDER_KEY')) };
const clients = JSON.parse(env('PROVIDER_CLIENTS')).map((c) => ({
  client_id: c.client_id,
  client_secret: c.client_secret,
  redirect_uris: c.redirect_uris,
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['authorization_code'],
  response_types: ['code'],
}));

// The signing key, ours so that tampered tokens can be signed with it; and a stranger's key
// with the same key ID for bad signatures.
const KID = 'renkei-test';
const signing = await exportJWK((await generateKeyPair('RS256', { extractable: true })).privateKey);
Object.assign(signing, { kid: KID, alg: 'RS256', use: 'sig' });
const signingKey = await importJWK(signing, 'RS256');
const strangerKey = (await generateKeyPair('RS256')).privateKey;

const accounts = new Map(); // sub → { email, email_verified }
let nextLogin = null; // { sub } or { error }
const tamper = new Map(); // client_id → mode

// The server listens first: the issuer names its port.
let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = createServer(tls, (req, res) => handler(req, res));
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `https://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signing] },
  cookies: { keys: [crypto.randomUUID()] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  // Like Keycloak: the ID token of the code flow carries the scopes' claims.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, sub) {
    const account = accounts.get(sub);
    if (!account) return undefined;
    return {
      accountId: sub,
      claims: () => ({ sub, name: `Person ${sub}`, ...account }),
    };
  },
});

async function readJson(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

const MODES = new Set(['wrong_audience', 'expired', 'bad_nonce', 'wrong_issuer', 'bad_signature']);

// The ID token a tampering mode turns the real one into.
async function spoil(idToken, mode) {
  const claims = decodeJwt(idToken);
  const header = decodeProtectedHeader(idToken);
  const now = Math.floor(Date.now() / 1000);
  if (mode === 'wrong_audience') claims.aud = 'someone-else';
  if (mode === 'expired') Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
  if (mode === 'bad_nonce') claims.nonce = 'not-the-nonce-renkei-sent';
  if (mode === 'wrong_issuer') claims.iss = 'https://elsewhere.example';
  const key = mode === 'bad_signature' ? strangerKey : signingKey;
  return new SignJWT(claims).setProtectedHeader({ alg: header.alg, kid: header.kid, typ: header.typ }).sign(key);
}

provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/test/login') {
    const body = await readJson(ctx);
    if (body.error) {
      nextLogin = { error: body.error };
    } else {
      accounts.set(body.sub, { email: body.email, email_verified: body.email_verified });
      nextLogin = { sub: body.sub };
    }
    ctx.status = 204;
    return;
  }
  if (ctx.method === 'POST' && ctx.path === '/test/tamper') {
    const body = await readJson(ctx);
    if (body.mode != null && !MODES.has(body.mode)) {
      ctx.status = 400;
      ctx.body = { error: `unknown mode ${body.mode}` };
      return;
    }
    if (body.mode == null) tamper.delete(body.client_id);
    else tamper.set(body.client_id, body.mode);
    ctx.status = 204;
    return;
  }
  if (ctx.method === 'GET' && ctx.path.startsWith('/interaction/')) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    let result;
    if (!nextLogin) {
      result = { error: 'login_required', error_description: 'the test chose nobody to log in' };
    } else if (nextLogin.error) {
      result = { error: nextLogin.error, error_description: 'refused by the test' };
    } else {
      const grant = new provider.Grant({ accountId: nextLogin.sub, clientId: details.params.client_id });
      grant.addOIDCScope('openid email profile');
      result = { login: { accountId: nextLogin.sub }, consent: { grantId: await grant.save() } };
    }
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
      mergeWithLastSubmission: false,
    });
    ctx.status = 303;
    ctx.redirect(returnTo);
    return;
  }
  await next();
  if (ctx.path === '/token' && ctx.status === 200 && ctx.body?.id_token) {
    const mode = tamper.get([decodeJwt(ctx.body.id_token).aud].flat()[0]);
    if (mode) ctx.body = { ...ctx.body, id_token: await spoil(ctx.body.id_token, mode) };
  }
});

handler = provider.callback();
process.stdout.write(`${JSON.stringify({ port, issuer })}\n`);
