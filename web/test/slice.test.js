// Signed slices: `verifySlice` (index.js) and `loadSlice` (edge/handler.js) load only a
// slice signed by a key of the host's slice keys, for the expected principal, not expired;
// anything else is refused with its code and nothing of it is loaded.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { isError, loadNode, verifySlice } from '../index.js';
import { loadSlice } from '../edge/handler.js';
import { errorOf, failure, invalid, ok, policySources, sliceSigner, worldText } from './fixtures.js';

/**
 * @import { ClearanceModule, Jwks, SignedSlice, Slice } from '../index.js'
 */

const PRINCIPAL = 'user:aeroserv_tech';
/** When the test slice was issued, and when it expires (an hour later). */
const ISSUED = 1777629600;
const EXPIRES = ISSUED + 3600;

/** @type {ClearanceModule} */
let module;
/** @type {Slice} */
let slice;
/** @type {Awaited<ReturnType<typeof sliceSigner>>} */
let signer;
/** @type {SignedSlice} */
let signed;
/** @type {Jwks} */
let keys;

before(async () => {
  module = await loadNode();
  const scratch = new module.Session();
  const policyHash = ok(scratch.loadPolicy(policySources())).policy_hash;
  scratch.free();
  const world = JSON.parse(worldText('airline'));
  slice = {
    principal: PRINCIPAL, account: 'skyways', revision: world.revision, policy_hash: policyHash, issued: ISSUED, expires: EXPIRES, policy: policySources(), facts: world,
  };
  signer = await sliceSigner('slice-1');
  keys = signer.keys;
  signed = await signer.sign(slice);
});

/**
 * The error code `loadSlice` gives, after checking that the session it was given holds
 * nothing.
 *
 * @param {unknown} envelope
 * @param {unknown} options
 */
async function refusal(envelope, options) {
  const session = new module.Session();
  const answer = await loadSlice(session, envelope, invalid(options));
  const { code, message, help } = errorOf(answer);
  assert.ok(message.length > 0 && help.length > 0, code);
  assert.equal(failure(() => session.info()).code, 'session.not_loaded', `${code}: something was loaded`);
  session.free();
  return code;
}

/**
 * `text` with the character at `at` changed.
 *
 * @param {string} text
 * @param {number} at
 */
function changeAt(text, at) {
  return `${text.slice(0, at)}${text[at] === 'a' ? 'b' : 'a'}${text.slice(at + 1)}`;
}

describe('a signed slice', () => {
  test('verifies and loads, as text or parsed, at a time before it expires', async () => {
    const verified = await verifySlice(signed, { keys, principal: PRINCIPAL, now: ISSUED + 60 });
    assert.ok(!isError(verified), JSON.stringify(verified));
    assert.deepEqual(verified, slice);
    /** @type {Array<[unknown, Date | number]>} */
    const ways = [[signed, ISSUED], [JSON.stringify(signed), new Date((EXPIRES - 1) * 1000)]];
    for (const [envelope, now] of ways) {
      const session = new module.Session();
      const info = await loadSlice(session, envelope, { keys, principal: PRINCIPAL, now });
      assert.ok(!isError(info), JSON.stringify(info));
      assert.equal(info.policy_hash, slice.policy_hash);
      assert.ok(info.entities > 0);
      session.free();
    }
  });

  test('a changed byte, another signer, or a signature without the context is a bad signature', async () => {
    const options = { keys, now: ISSUED };
    const at = signed.slice.indexOf('skyways');
    assert.equal(await refusal({ ...signed, slice: changeAt(signed.slice, at) }, options), 'slice.bad_signature');
    assert.equal(await refusal({ ...signed, slice: `${signed.slice} ` }, options), 'slice.bad_signature');
    assert.equal(await refusal({ ...signed, signature: changeAt(signed.signature, 10) }, options), 'slice.bad_signature');
    assert.equal(await refusal({ ...signed, signature: signed.signature.slice(0, -2) }, options), 'slice.bad_signature');
    assert.equal(await refusal({ ...signed, signature: `${signed.signature}==` }, options), 'slice.bad_signature');
    // Signed by another key that claims the known key's name.
    const forger = await sliceSigner('slice-1');
    assert.equal(await refusal(await forger.sign(slice), options), 'slice.bad_signature');
    // The right key's signature over the slice alone, without the context line, is not a
    // slice's signature.
    assert.equal(await refusal(await signer.sign(slice, { context: '' }), options), 'slice.bad_signature');
  });

  test('an expired slice is refused, by the clock given or the system\'s', async () => {
    assert.equal(await refusal(signed, { keys, now: EXPIRES }), 'slice.expired');
    assert.equal(await refusal(signed, { keys, now: new Date((EXPIRES + 3600) * 1000) }), 'slice.expired');
    // The test slice expired in 2026: the system clock is later.
    assert.equal(await refusal(signed, { keys }), 'slice.expired');
  });

  test('a key the host did not publish is unknown', async () => {
    const other = await sliceSigner('slice-2');
    assert.equal(await refusal(await other.sign(slice), { keys, now: ISSUED }), 'slice.unknown_key');
    // The name alone of a key of another type is no Ed25519 key.
    const rsa = { keys: [{ kty: 'RSA', n: 'AQAB', e: 'AQAB', kid: 'slice-1' }] };
    assert.equal(await refusal(signed, { keys: rsa, now: ISSUED }), 'slice.unknown_key');
  });

  test('a slice for another principal is refused', async () => {
    assert.equal(await refusal(signed, { keys, now: ISSUED, principal: 'user:jetfix_tech' }), 'slice.wrong_principal');
  });

  test('without keys nothing verifies', async () => {
    for (const options of [undefined, {}, { keys: null }, { keys: {} }, { keys: { keys: 'none' } }]) {
      assert.equal(await refusal(signed, options), 'slice.no_keys', JSON.stringify(options));
    }
    assert.equal(errorOf(await verifySlice(signed, invalid(undefined))).code, 'slice.no_keys');
  });

  test('an unsigned slice, or one signed otherwise, is refused', async () => {
    const options = { keys, now: ISSUED };
    // The bare slice, as hosts answered before slices were signed.
    assert.equal(await refusal(slice, options), 'slice.unsigned');
    assert.equal(await refusal(JSON.stringify(slice), options), 'slice.unsigned');
    assert.equal(await refusal({ slice: signed.slice }, options), 'slice.unsigned');
    assert.equal(await refusal({ ...signed, alg: 'none', signature: '' }, options), 'slice.unsigned');
    assert.equal(await refusal({ ...signed, alg: 'HS256' }, options), 'slice.unsigned');
  });

  test('what is not a slice is invalid', async () => {
    const options = { keys, now: ISSUED };
    assert.equal(await refusal('{not json', options), 'slice.invalid');
    assert.equal(await refusal(null, options), 'slice.invalid');
    assert.equal(await refusal([signed], options), 'slice.invalid');
    // Signed, but not a slice.
    assert.equal(await refusal(await signer.sign('{not json'), options), 'slice.invalid');
    const { expires: _, ...noExpiry } = slice;
    assert.equal(await refusal(await signer.sign(noExpiry), options), 'slice.invalid');
    assert.equal(await refusal(await signer.sign({ ...slice, facts: [] }), options), 'slice.invalid');
  });
});

/** The relations the aircraft's seats count (`count(...)` in `policies/aircraft.policy`). */
const SEATS = ['co_owner', 'pilot_own_records', 'pilot_own_squawks', 'pilot_all_squawks', 'mechanic_read', 'mechanic_full', 'mechanic_own_records', 'visitor'];

/**
 * The airline world as a slice of `principal` carries the aircraft's seats: the tuples
 * of the counted relations naming anyone else left out, and in their place how many
 * subjects each aircraft has and when each stops counting (`counts`).
 *
 * @param {string} principal
 */
function seatCountedWorld(principal) {
  /** @type {{revision: number, entities: object[], tuples: Array<{resource: string, relation: string, subject: string, expires?: string | number}>}} */
  const world = JSON.parse(worldText('airline'));
  const counted = (/** @type {{resource: string, relation: string}} */ t) => t.resource.startsWith('aircraft:') && SEATS.includes(t.relation);
  /** @type {Map<string, Map<string, number[]>>} */
  const ends = new Map();
  for (const t of world.tuples.filter(counted)) {
    const id = t.resource.slice('aircraft:'.length);
    const holders = ends.get(id) ?? new Map();
    const end = t.expires === undefined ? Infinity : typeof t.expires === 'number' ? t.expires : Date.parse(t.expires) / 1000;
    holders.set(t.subject, [...(holders.get(t.subject) ?? []), end]);
    ends.set(id, holders);
  }
  /** @type {Array<{id: string, subjects: number, subject_ends?: number[], tuple_ends?: number[]}>} */
  const of = [];
  for (const [id, holders] of [...ends].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const last = [...holders.values()].map((e) => Math.max(...e)).filter(Number.isFinite).sort((a, b) => a - b);
    const others = [...new Set([...holders.values()].flat().filter((e) => Number.isFinite(e) && !last.includes(e)))].sort((a, b) => a - b);
    of.push({ id, subjects: holders.size, ...(last.length > 0 ? { subject_ends: last } : {}), ...(others.length > 0 ? { tuple_ends: others } : {}) });
  }
  return {
    ...world,
    tuples: world.tuples.filter((t) => !counted(t) || t.subject === principal),
    counts: [{ type: 'aircraft', relations: SEATS, of }],
  };
}

describe('a slice carrying counts', () => {
  test('decides the seats of every aircraft as the whole world, before and after a grant ends', async () => {
    const principal = 'user:ac_coowner';
    const facts = seatCountedWorld(principal);
    assert.ok(!JSON.stringify(facts.tuples).includes('user:mech_gone'), 'a grant holder is named');
    const session = new module.Session();
    const info = await loadSlice(session, await signer.sign({ ...slice, principal, facts }), { keys, principal, now: ISSUED });
    assert.ok(!isError(info), JSON.stringify(info));
    const whole = new module.Session();
    ok(whole.loadPolicy(policySources()));
    ok(whole.loadFacts(worldText('airline')));
    const world = JSON.parse(worldText('airline'));
    /** @type {string[]} */
    const aircraft = world.entities.filter((/** @type {{type: string}} */ e) => e.type === 'aircraft').map((/** @type {{id: string}} */ e) => `aircraft:${e.id}`);
    /** @type {string[]} */
    const users = world.entities.filter((/** @type {{type: string, account?: string}} */ e) => e.type === 'user' && e.account === 'skyways').map((/** @type {{id: string}} */ e) => `user:${e.id}`);
    // The visitor's grant on `aircraft:g_skyc` ends at 12:00: its seat is free after.
    const requests = [];
    for (const now of ['2026-05-01T10:00:00Z', '2026-05-01T11:59:59Z', '2026-05-01T12:00:00Z', '2026-05-02T00:00:00Z']) {
      for (const resource of aircraft) {
        requests.push({ principal, action: 'read', resource, now });
        for (const target of users) {
          for (const action of ['invite', 'grant', 'change_grant']) requests.push({ principal, action, resource, target, now });
        }
      }
    }
    const want = whole.checkBatch(requests);
    const got = session.checkBatch(requests);
    assert.deepEqual(got, want);
    assert.ok(want.some((d) => d.allowed) && want.some((d) => !d.allowed), 'every decision is the same');
    // Who holds a seat is not in the slice, so a change of seats cannot be followed here.
    const grant = { op: 'add_tuple', tuple: { resource: 'aircraft:g_skyb', relation: 'visitor', subject: 'user:engineer' } };
    failure(() => session.applyDeltas([grant]), 'facts.counted');
    session.free();
    whole.free();
  });
});
