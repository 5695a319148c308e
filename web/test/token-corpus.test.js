// The shared token corpus (host/tests/fixtures/tokens/corpus.json) through the edge handler:
// every token gets the verdict, error code and principal the host's TokenVerifier gives it,
// and every key the host refuses is refused here (host/tests/all/token_corpus.rs runs the
// same cases through the host).

import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { SignJWT, importPKCS8 } from 'jose';
import { createHandler } from '../edge/handler.js';
import { createTokenVerifier } from '../edge/token.js';

/**
 * @import { Request as CheckRequest } from '../index.js'
 */

/**
 * @typedef {{name: string, token: string, verdict: 'allow' | 'deny', code?: string, principal?: string, now?: number}} Case
 * @typedef {{name: string, jwk: {kty: string, [member: string]: string}}} RefusedKey
 * @typedef {{issuer: string, audience: string, claim: string, principal_type: string, leeway: number, max_lifetime: number, now: number, cases: Case[], refused_keys: RefusedKey[]}} Corpus
 */

const DIR = new URL('../../host/tests/fixtures/tokens/', import.meta.url);

/** @type {Corpus} */
const corpus = JSON.parse(readFileSync(new URL('corpus.json', DIR), 'utf8'));
const jwks = JSON.parse(readFileSync(new URL('jwks.json', DIR), 'utf8'));

/**
 * A handler whose tokens are checked at `clock()` and whose session allows everything,
 * recording the principal it was asked about.
 *
 * @param {() => number} clock
 */
async function handlerAt(clock) {
  const tokens = await createTokenVerifier({
    jwks, issuer: corpus.issuer, audience: corpus.audience, claim: corpus.claim, principalType: corpus.principal_type, leeway: corpus.leeway, maxLifetime: corpus.max_lifetime, clock,
  });
  /** @type {string[]} */
  const asked = [];
  const session = {
    /** @param {CheckRequest} r */
    check: (r) => {
      asked.push(r.principal);
      return { allowed: true, reasons: [{ code: 'granted', rule: 'event.view', message: '' }], revision: 0, policy_hash: '' };
    },
  };
  const handle = createHandler({
    session, principal: `${corpus.principal_type}:occ_controller`, tokens, routes: [{ method: 'GET', pattern: '/events/:id', action: 'view', resource: (p) => `event:${p.id}` }],
  });
  return { handle, asked };
}

test('the corpus holds the cases both verifiers must agree on', () => {
  const names = corpus.cases.map((c) => c.name);
  assert.equal(new Set(names).size, names.length, 'case names are unique');
  for (const name of ['valid ES256', 'valid ES384', 'valid EdDSA', 'valid RS256', 'expired', 'not yet valid', 'exp within the leeway', 'forged signature', 'alg none',
    'HS256 keyed with the RSA public key', 'unknown kid', 'wrong audience', 'wrong issuer', 'missing exp', 'missing sub', 'RS256 header on the EC key',
    'malformed: not three parts', 'malformed: bad base64', 'exp far ahead (1e17)', 'iat 28 hours in the future',
    'exp one second more than the maximum lifetime after iat', 'RS384 under the RSA key', 'RS512 under the RSA key']) {
    assert.ok(names.includes(name), `no case ${name}`);
  }
  const keys = corpus.refused_keys.map((k) => k.name);
  for (const name of ['an RSA key for RS384', 'an RSA key for RS512', 'a P-521 key', 'a symmetric key']) {
    assert.ok(keys.includes(name), `no refused key ${name}`);
  }
});

test('every key the corpus refuses is refused at the edge, and the JWKS of the corpus is not', async () => {
  const rules = { issuer: corpus.issuer, audience: corpus.audience };
  await createTokenVerifier({ ...rules, jwks });
  assert.deepEqual(jwks.keys.map((/** @type {{alg: string}} */ k) => k.alg).sort(), ['ES256', 'ES384', 'EdDSA', 'RS256']);
  for (const { name, jwk } of corpus.refused_keys) {
    await assert.rejects(createTokenVerifier({ ...rules, jwks: { keys: [jwk] } }), TypeError, name);
    // Beside good keys too: one refused key refuses the whole JWKS.
    await assert.rejects(createTokenVerifier({ ...rules, jwks: { keys: [...jwks.keys, jwk] } }), TypeError, name);
  }
});

test('every token of the corpus gets its verdict at the edge', async () => {
  let now = corpus.now;
  const { handle, asked } = await handlerAt(() => now);
  for (const c of corpus.cases) {
    now = c.now ?? corpus.now;
    asked.length = 0;
    const response = await handle(new Request('https://edge.example/events/aog_lhr', { headers: { authorization: `Bearer ${c.token}` } }));
    const body = await response.json();
    if (c.verdict === 'allow') {
      assert.equal(response.status, 200, `${c.name}: ${JSON.stringify(body)}`);
      assert.deepEqual(asked, [c.principal], c.name);
    } else {
      assert.equal(response.status, 401, `${c.name}: ${JSON.stringify(body)}`);
      assert.equal(body.allowed, false, c.name);
      assert.equal(body.error.code, c.code, `${c.name}: ${body.error.message}`);
      assert.ok(body.error.message.length > 0, c.name);
      assert.deepEqual(asked, [], `${c.name}: the session was asked`);
    }
  }
});

test('without a clock, tokens are checked at the system clock', async () => {
  const tokens = await createTokenVerifier({ jwks, issuer: corpus.issuer, audience: corpus.audience });
  // The corpus's valid tokens expired an hour after its clock, long before the system's.
  const valid = corpus.cases.filter((x) => x.verdict === 'allow' && x.now === undefined);
  assert.ok(valid.length > 0);
  for (const c of valid) {
    const got = await tokens.verify(c.token);
    assert.ok('error' in got && got.error.code === 'auth.invalid', `${c.name}: ${JSON.stringify(got)}`);
  }
  // A token issued now by a key of the JWKS is valid now.
  const pem = createPrivateKey({ key: readFileSync(new URL('es384.der', DIR)), format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' });
  const key = await importPKCS8(String(pem), 'ES384');
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ iss: corpus.issuer, aud: corpus.audience, sub: 'occ_controller', iat: now, exp: now + 600 })
    .setProtectedHeader({ alg: 'ES384', kid: 'test-es384' })
    .sign(key);
  assert.deepEqual(await tokens.verify(token), { principal: 'user:occ_controller' });
});
