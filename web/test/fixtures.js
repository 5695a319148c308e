/**
 * Shared fixtures of the tests: the default policies, the worlds and sessions loaded with
 * them. Paths are relative to this file, so the tests run from any directory.
 */

import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { ClearanceError, SLICE_CONTEXT, isError, loadNode } from '../index.js';

/** @import { DecisionView, Denial, ErrorData, Jwks, Request, SignedSlice, Source, Time } from '../index.js' */
/** @import { Jwk } from '../edge/token.js' */

const POLICIES = new URL('../../policies/', import.meta.url);
const WORLDS = new URL('../../tests/worlds/', import.meta.url);

/** The module's bytes and the hash the build wrote next to them. */
export const WASM_URL = new URL('../pkg/clearance_bg.wasm', import.meta.url);
export const WASM_SHA256_URL = new URL('../pkg/clearance_bg.wasm.sha256', import.meta.url);

/** The baseline time of the scenarios. */
export const NOW = '2026-05-01T10:00:00Z';

/** The default policy set, `[{name, text}]`, in file-name order. */
export function policySources() {
  return readdirSync(POLICIES)
    .filter((f) => f.endsWith('.policy'))
    .sort()
    .map((name) => ({ name, text: readFileSync(new URL(name, POLICIES), 'utf8') }));
}

/**
 * The default policy set as the December 2026 review found it: any user of an account may
 * register a guest (`invitee.register = true`). A gate failing open on a slice of another
 * principal allowed a revoked guest that register (finding 8).
 */
export function reviewedPolicySources() {
  const registered = 'permission register = registered_by->internal';
  return policySources().map(({ name, text }) => {
    if (name !== 'events.policy') return { name, text };
    if (!text.includes(registered)) throw new Error(`events.policy no longer has \`${registered}\``);
    return { name, text: text.replace(registered, 'permission register = true') };
  });
}

/**
 * The facts document of `tests/worlds/<name>.json`, as text.
 *
 * @param {string} name
 */
export function worldText(name) {
  return readFileSync(new URL(`${name}.json`, WORLDS), 'utf8');
}

/**
 * A request at `now` (the baseline unless given).
 *
 * @param {string} principal
 * @param {string} action
 * @param {string} resource
 * @param {Time} [now]
 * @param {string} [target]
 * @returns {Request}
 */
export function req(principal, action, resource, now = NOW, target = undefined) {
  return target === undefined ? { principal, action, resource, now } : { principal, action, resource, target, now };
}

/**
 * A fresh module instance and a session with the default policies and the world `name`;
 * throws if either does not load (a test fixture, not the API under test).
 */
export async function loadedSession(name = 'airline') {
  const module = await loadNode();
  const session = new module.Session();
  const policy = session.loadPolicy(policySources());
  if (isError(policy)) throw new Error(`policy: ${policy.error.message}`);
  const facts = session.loadFacts(worldText(name));
  if (isError(facts)) throw new Error(`facts: ${facts.error.message}`);
  return { module, session };
}

/**
 * The reason codes of a decision view (an assertion fails on a denial).
 *
 * @param {DecisionView | Denial} decision
 */
export function codes(decision) {
  return ok(decision).reasons.map((r) => r.code);
}

/**
 * The `ok` value of a session's answer; an assertion fails on a denial.
 *
 * @template T
 * @param {T | Denial} answer
 * @returns {T}
 */
export function ok(answer) {
  if (isError(answer)) assert.fail(`expected a value, got a denial: ${JSON.stringify(answer)}`);
  return answer;
}

/**
 * A value that must be there; an assertion fails on null or undefined.
 *
 * @template T
 * @param {T | null | undefined} value
 * @returns {T}
 */
export function present(value) {
  if (value === null || value === undefined) assert.fail(`expected a value, got ${value}`);
  return value;
}

/**
 * The error of a denial; an assertion fails on anything else.
 *
 * @param {unknown} answer
 * @returns {ErrorData}
 */
export function errorOf(answer) {
  if (!isError(answer)) assert.fail(`expected a denial, got ${JSON.stringify(answer)}`);
  return answer.error;
}

/**
 * The `ClearanceError` that `f` throws; an assertion fails if it returns or throws anything
 * else, or (when `code` is given) another code.
 *
 * @param {() => unknown} f
 * @param {string} [code]
 * @returns {ClearanceError}
 */
export function failure(f, code) {
  let answer;
  try {
    answer = f();
  } catch (e) {
    if (!(e instanceof ClearanceError)) assert.fail(`expected a ClearanceError, got ${String(e)}`);
    if (code !== undefined) assert.equal(e.code, code, e.message);
    return e;
  }
  return assert.fail(`expected a ClearanceError, got ${JSON.stringify(answer)?.slice(0, 300)}`);
}

/**
 * A value given where the types forbid it, as JavaScript callers may: the tests of bad
 * input pass them on purpose, to see them refused at run time.
 *
 * @param {unknown} value
 * @returns {never}
 */
export function invalid(value) {
  return /** @type {never} */ (value);
}

/**
 * Base64url without padding.
 *
 * @param {ArrayBuffer} bytes
 */
function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * A slice signer as the host is one: a fresh Ed25519 key (WebCrypto), its JWKS as
 * `GET /v1/slice-keys` gives it, and `sign(slice)` giving `GET /v1/slice/{principal}`'s
 * envelope (`kid` overrides the `key_id` it claims, `context` what precedes the slice in
 * the signed bytes).
 *
 * @param {string} [kid]
 */
export async function sliceSigner(kid = 'test-slice') {
  const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  const { x } = await crypto.subtle.exportKey('jwk', pair.publicKey);
  /** @type {Jwks} */
  const keys = { keys: [{ kty: 'OKP', crv: 'Ed25519', x: present(x), kid, alg: 'EdDSA', use: 'sig' }] };
  /**
   * @param {unknown} slice a slice (JSON text, or a value written as JSON)
   * @param {{kid?: string, context?: string}} [options]
   * @returns {Promise<SignedSlice>}
   */
  async function sign(slice, options = {}) {
    const text = typeof slice === 'string' ? slice : JSON.stringify(slice);
    const signature = await crypto.subtle.sign({ name: 'Ed25519' }, pair.privateKey, new TextEncoder().encode((options.context ?? SLICE_CONTEXT) + text));
    return { slice: text, alg: 'EdDSA', key_id: options.kid ?? kid, signature: base64url(signature) };
  }
  return { keys, sign };
}

/**
 * A facts document, as much of it as these tests read.
 *
 * @typedef {{revision: number, entities: Array<{type: string, id: string, account?: string, attrs?: {[name: string]: unknown}}>, tuples: Array<{resource: string}>, omitted?: {[type: string]: string[]}}} Facts
 */

/**
 * A principal slice (`GET /v1/slice/{principal}`, the text it signs).
 *
 * @typedef {{principal: string, account: string, revision: number, policy_hash: string, issued: number, expires: number, policy: Source[], facts: Facts}} Slice
 */

/** The issuer of the test user tokens. */
export const ISSUER = 'https://idp.example';
/** The audience of the test user tokens. */
export const AUDIENCE = 'edge-test';


/**
 * The slice of `account` as `GET /v1/slice/{principal}` gives it (host/src/api/slice.rs):
 * the entities whose account (or own id, for accounts) is `account`, the tuples on them;
 * issued now, for an hour.
 *
 * @param {string} principal
 * @param {string} account
 * @param {string} policyHash
 * @returns {Slice}
 */
export function buildSlice(principal, account, policyHash) {
  /** @type {Facts} */
  const world = JSON.parse(worldText('airline'));
  const entities = world.entities.filter((e) => (e.account ?? e.id) === account);
  const keys = new Set(entities.map((e) => `${e.type}:${e.id}`));
  const tuples = world.tuples.filter((t) => keys.has(t.resource));
  const issued = Math.floor(Date.now() / 1000);
  return {
    principal,
    account,
    revision: world.revision,
    policy_hash: policyHash,
    issued,
    expires: issued + 3600,
    policy: policySources(),
    facts: { revision: world.revision, entities, tuples },
  };
}

/**
 * `slice` with its principal attributes cut as the host cuts them (core's `principal_slice`;
 * `demo_slices_leave_out_what_no_rule_reads` in crates/core/tests/all/slice.rs): other
 * principals' gate attributes, roles and contact details left out, the slice's own kept.
 *
 * @param {Slice} slice
 * @returns {Slice}
 */
export function cutAsTheHost(slice) {
  /** @type {{[type: string]: string[]}} */
  const omitted = { user: ['roles', 'email', 'invitation', 'status'], invitee: ['roles', 'channel', 'address', 'revoked'] };
  const entities = slice.facts.entities.map((e) => {
    const drop = omitted[e.type];
    if (drop === undefined || `${e.type}:${e.id}` === slice.principal) return e;
    const { attrs = {}, ...rest } = e;
    return { ...rest, attrs: Object.fromEntries(Object.entries(attrs).filter(([name]) => !drop.includes(name))) };
  });
  return { ...slice, facts: { ...slice.facts, entities, omitted } };
}

/**
 * A token issuer as an identity provider is one: an Ed25519 key, its JWKS, and tokens whose
 * `sub` is the whole principal (`type:id`, for a verifier with `principalType: null`), valid
 * for ten minutes unless `claims` say otherwise.
 */
export async function tokenIssuer(kid = 'idp-1') {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true });
  /** @type {{keys: Jwk[]}} */
  const jwks = { keys: [{ ...(await exportJWK(publicKey)), kty: 'OKP', kid, alg: 'EdDSA' }] };
  /**
   * @param {string} principal
   * @param {{[claim: string]: unknown}} [claims]
   */
  const token = (principal, claims = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub: principal, iat: now, nbf: now, exp: now + 600, ...claims })
      .setProtectedHeader({ alg: 'EdDSA', kid })
      .sign(privateKey);
  };
  return { jwks, token };
}
