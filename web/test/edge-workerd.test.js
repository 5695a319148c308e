// The edge gate in workerd, an edge platform's runtime (through Miniflare): the worker
// `edge/worker.js` with the module's bytes as a compiled module, a signed slice and a
// token issuer as its bindings. Each request gets the answer the same handler gives in
// Node, status, body and caching headers alike; a worker that cannot verify its slice
// allows nothing, and a worker serves the principal of its slice alone.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SignJWT, base64url, generateKeyPair } from 'jose';
import { loadNode } from '../index.js';
import { createHandler, loadSlice } from '../edge/handler.js';
import { createTokenVerifier } from '../edge/token.js';
import { AUDIENCE, ISSUER, NOW, buildSlice, cutAsTheHost, ok, policySources, reviewedPolicySources, sliceSigner, tokenIssuer } from './fixtures.js';
import { startWorker } from './workerd.js';

/**
 * @import { Miniflare } from 'miniflare'
 * @import { Route } from '../edge/handler.js'
 */

const ORIGIN = 'https://edge.example';
const ROUTES = [
  { method: 'GET', pattern: '/events/:id', action: 'view', resource: 'event:{id}' },
  { method: 'POST', pattern: '/events/:id/messages', action: 'message', resource: 'event:{id}' },
];

/** @type {Awaited<ReturnType<typeof tokenIssuer>>} */
let idp;
/** @type {Awaited<ReturnType<typeof sliceSigner>>} */
let signer;
/** @type {import('./fixtures.js').Slice} */
let slice;
/** @type {string} */
let policyHash;

/**
 * The worker's bindings for `signed`, the signed slice, as its operator would set them.
 *
 * @param {unknown} signed
 * @param {string} [principal]
 */
function bindings(signed, principal = 'user:aeroserv_tech') {
  return {
    SLICE: JSON.stringify(signed),
    SLICE_KEYS: JSON.stringify(signer.keys),
    SLICE_PRINCIPAL: principal,
    TOKEN_JWKS: JSON.stringify(idp.jwks),
    TOKEN_ISSUER: ISSUER,
    TOKEN_AUDIENCE: AUDIENCE,
    TOKEN_PRINCIPAL_TYPE: '-',
    ROUTES: JSON.stringify(ROUTES),
    DECISION_TIME: NOW,
  };
}

/**
 * A response as what a client sees of it.
 *
 * @param {Response} r
 */
async function seen(r) {
  return { status: r.status, body: await r.json(), cacheControl: r.headers.get('cache-control'), vary: r.headers.get('vary') };
}

describe('the edge gate in workerd', () => {
  /** @type {Miniflare} */
  let mf;
  /** @type {(request: Request) => Promise<Response>} */
  let inNode;

  before(async () => {
    const module = await loadNode();
    const scratch = new module.Session();
    policyHash = ok(scratch.loadPolicy(policySources())).policy_hash;
    scratch.free();
    slice = buildSlice('user:aeroserv_tech', 'skyways', policyHash);
    signer = await sliceSigner();
    idp = await tokenIssuer();
    const signed = await signer.sign(slice);
    ({ mf } = startWorker('edge/worker.js', { bindings: bindings(signed) }));
    // The same gate in Node, made as the worker makes it.
    const session = new module.Session();
    ok(await loadSlice(session, JSON.stringify(signed), { keys: signer.keys, principal: 'user:aeroserv_tech' }));
    /** @type {Route[]} */
    const routes = ROUTES.map((r) => ({ ...r, resource: (p) => r.resource.replace('{id}', p.id ?? '{id}') }));
    const tokens = await createTokenVerifier({ jwks: idp.jwks, issuer: ISSUER, audience: AUDIENCE, principalType: null });
    inNode = createHandler({ session, principal: 'user:aeroserv_tech', tokens, routes, now: () => NOW });
  });

  after(async () => {
    await mf?.dispose();
  });

  test('answers every request as the gate does in Node', async () => {
    const other = await generateKeyPair('EdDSA');
    const now = Math.floor(Date.now() / 1000);
    const forged = await new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub: 'user:aeroserv_tech', iat: now, nbf: now, exp: now + 600 })
      .setProtectedHeader({ alg: 'EdDSA', kid: 'idp-1' })
      .sign(other.privateKey);
    const unsigned = `${base64url.encode(JSON.stringify({ alg: 'none' }))}.${base64url.encode(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, sub: 'user:aeroserv_tech', exp: now + 600 }))}.`;
    /** @type {[string, string, string | undefined, number][]} */
    const cases = [
      ['GET', '/events/aog_lhr', `Bearer ${await idp.token('user:aeroserv_tech')}`, 200],
      ['POST', '/events/aog_lhr/messages', `Bearer ${await idp.token('user:aeroserv_tech')}`, 200],
      // Any other principal, of this account or another: not the slice's, not decided.
      ['GET', '/events/aog_lhr', `Bearer ${await idp.token('invitee:g_sms')}`, 403],
      ['GET', '/events/aog_lhr', `Bearer ${await idp.token('user:jetfix_tech')}`, 403],
      ['GET', '/events/aog_lhr', `Bearer ${await idp.token('user:blue_pilot')}`, 403],
      ['GET', '/events/no_such_event', `Bearer ${await idp.token('user:aeroserv_tech')}`, 403],
      ['GET', '/events/aog_lhr', undefined, 401],
      ['GET', '/events/aog_lhr', 'Basic dXNlcjpwYXNz', 401],
      ['GET', '/events/aog_lhr', `Bearer ${forged}`, 401],
      ['GET', '/events/aog_lhr', `Bearer ${unsigned}`, 401],
      ['GET', '/events/aog_lhr', `Bearer ${await idp.token('user:aeroserv_tech', { exp: now - 3600 })}`, 401],
      ['GET', '/events/aog_lhr', `Bearer ${await idp.token('user:aeroserv_tech', { aud: 'elsewhere' })}`, 401],
      ['DELETE', '/events/aog_lhr', `Bearer ${await idp.token('user:aeroserv_tech')}`, 404],
      ['GET', '/flights/x', `Bearer ${await idp.token('user:aeroserv_tech')}`, 404],
    ];
    for (const [method, path, authorization, status] of cases) {
      /** @type {{[name: string]: string}} */
      const headers = authorization === undefined ? {} : { authorization };
      const edge = await seen(await mf.dispatchFetch(`${ORIGIN}${path}`, { method, headers }));
      const node = await seen(await inNode(new Request(`${ORIGIN}${path}`, { method, headers })));
      const what = `${method} ${path} ${authorization?.slice(0, 20)}`;
      assert.deepEqual(edge, node, what);
      assert.equal(edge.status, status, `${what}: ${JSON.stringify(edge.body)}`);
      if (status === 200) {
        assert.match(String(edge.cacheControl), /^private, max-age=\d+$/, what);
        assert.match(String(edge.vary), /authorization/, what);
      } else {
        assert.equal(edge.body.allowed, false, what);
      }
    }
  });

  test('a revoked guest\'s token at a worker of user:occ_controller\'s slice is 403, not 200 (finding 8)', async () => {
    // The policy the review attacked, under which anyone registers a guest.
    const module = await loadNode();
    const scratch = new module.Session();
    const reviewedHash = ok(scratch.loadPolicy(reviewedPolicySources())).policy_hash;
    scratch.free();
    const occ = cutAsTheHost({ ...buildSlice('user:occ_controller', 'skyways', policyHash), policy: reviewedPolicySources(), policy_hash: reviewedHash });
    const routes = [{ method: 'POST', pattern: '/guests/:id', action: 'register', resource: 'invitee:{id}' }];
    const { mf: worker } = startWorker('edge/worker.js', {
      bindings: { ...bindings(await signer.sign(occ), 'user:occ_controller'), ROUTES: JSON.stringify(routes) },
    });
    try {
      /** @param {string} principal */
      const register = async (principal) => {
        const r = await worker.dispatchFetch(`${ORIGIN}/guests/g_email`, { method: 'POST', headers: { authorization: `Bearer ${await idp.token(principal)}` } });
        return { status: r.status, body: await r.json() };
      };
      const revoked = await register('invitee:g_revoked');
      assert.equal(revoked.status, 403, JSON.stringify(revoked.body));
      assert.equal(revoked.body.allowed, false);
      assert.equal(revoked.body.error.code, 'edge.wrong_principal');
      const own = await register('user:occ_controller');
      assert.equal(own.status, 200, JSON.stringify(own.body));
      assert.equal(own.body.allowed, true);
    } finally {
      await worker.dispose();
    }
  });

  test('a worker whose slice does not verify or is for another principal allows nothing', async () => {
    const signed = await signer.sign(slice);
    const tampered = { ...signed, slice: signed.slice.replace('"skyways"', '"blueair"') };
    for (const [b, code] of /** @type {const} */ ([
      [bindings(tampered), 'slice.bad_signature'],
      [bindings(signed, 'user:someone_else'), 'slice.wrong_principal'],
      [{ ...bindings(signed), ROUTES: 'not json' }, 'ROUTES'],
    ])) {
      const { mf: broken } = startWorker('edge/worker.js', { bindings: b });
      try {
        const r = await broken.dispatchFetch(`${ORIGIN}/events/aog_lhr`, { headers: { authorization: `Bearer ${await idp.token('user:aeroserv_tech')}` } });
        const body = await r.json();
        assert.equal(r.status, 503, JSON.stringify(body));
        assert.equal(body.allowed, false);
        assert.equal(body.error.code, 'edge.unavailable');
        assert.match(body.error.message, new RegExp(code.replace('.', '\\.')));
        assert.equal(r.headers.get('cache-control'), 'no-store');
      } finally {
        await broken.dispose();
      }
    }
  });
});
