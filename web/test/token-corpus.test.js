// The shared token corpus (host/tests/fixtures/tokens/corpus.json) through the edge handler:
// every token gets the verdict, error code and principal the host's TokenVerifier gives it
// (host/tests/all/token_corpus.rs runs the same cases through the host).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { createHandler } from '../edge/handler.js';
import { createTokenVerifier } from '../edge/token.js';

/**
 * @import { Request as CheckRequest } from '../index.js'
 */

/**
 * @typedef {{name: string, token: string, verdict: 'allow' | 'deny', code?: string, principal?: string, now?: number}} Case
 * @typedef {{issuer: string, audience: string, claim: string, principal_type: string, leeway: number, now: number, cases: Case[]}} Corpus
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
    jwks, issuer: corpus.issuer, audience: corpus.audience, claim: corpus.claim, principalType: corpus.principal_type, leeway: corpus.leeway, clock,
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
  for (const name of ['valid ES256', 'valid EdDSA', 'valid RS256', 'expired', 'not yet valid', 'exp within the leeway', 'forged signature', 'alg none',
    'HS256 keyed with the RSA public key', 'unknown kid', 'wrong audience', 'wrong issuer', 'missing exp', 'missing sub', 'RS256 header on the EC key',
    'malformed: not three parts', 'malformed: bad base64']) {
    assert.ok(names.includes(name), `no case ${name}`);
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

test('the valid tokens of the corpus are valid at the system clock too (until 2100)', async () => {
  const tokens = await createTokenVerifier({ jwks, issuer: corpus.issuer, audience: corpus.audience });
  for (const c of corpus.cases.filter((x) => x.verdict === 'allow' && x.now === undefined)) {
    assert.deepEqual(await tokens.verify(c.token), { principal: c.principal }, c.name);
  }
});
