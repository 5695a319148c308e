// The binary formats of clearance_core::wire, mirrored in JavaScript: byte layouts written
// out by hand, round trips, and malformed input.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CODES, PAGE, QUERY_LEN, decodeDecisions, decodeQueries, encodeQueries } from '../index.js';
import { invalid, present } from './fixtures.js';

const I64_MAX = (1n << 63n) - 1n;

/**
 * Little-endian bytes of an unsigned integer of `n` bytes.
 *
 * @param {number | bigint} value
 * @param {number} n
 */
function le(value, n) {
  const out = [];
  let v = BigInt.asUintN(n * 8, BigInt(value));
  for (let i = 0; i < n; i += 1) {
    out.push(Number(v & 0xffn));
    v >>= 8n;
  }
  return out;
}

describe('queries', () => {
  test('an entity query has the layout of wire::encode_query', () => {
    const bytes = encodeQueries([{ principal: 7, resource: 9, action: 3, target: 11, now: -5 }]);
    const expected = [...le(7, 4), ...le(9, 4), ...le(3, 2), ...le(1, 2), ...le(11, 4), ...le(-5, 8)];
    assert.equal(bytes.length, QUERY_LEN);
    assert.deepEqual([...bytes], expected);
  });

  test('a page sets the PAGE bit with the matrix in the high half and the row in the low', () => {
    const bytes = encodeQueries([{ principal: 1, resource: { matrix: 2, row: 300 }, action: 4, now: 0 }]);
    const view = new DataView(bytes.buffer);
    assert.equal(view.getUint32(4, true), (PAGE | (2 << 16) | 300) >>> 0);
    assert.equal(view.getUint16(10, true), 0, 'no target flag');
    assert.equal(view.getUint32(12, true), 0, 'no target is encoded as 0');
  });

  test('queries round trip, i64 extremes included', () => {
    const queries = [
      { principal: 7, resource: 9, action: 3, target: 11, now: -5 },
      { principal: 1, resource: { matrix: 2, row: 300 }, action: 4, target: null, now: I64_MAX },
      { principal: 0xffffffff, resource: 0x7fffffff, action: 0xffff, target: 0, now: -(1n << 63n) },
      { principal: 0, resource: { matrix: 0x7fff, row: 0xffff }, action: 0, target: null, now: 1777629600 },
    ];
    const back = decodeQueries(encodeQueries(queries));
    assert.deepEqual(back, queries);
    assert.deepEqual(encodeQueries(back), encodeQueries(queries));
  });

  test('a BigInt now that fits a Number decodes as a Number', () => {
    const [q] = present(decodeQueries(encodeQueries([{ principal: 1, resource: 2, action: 0, now: 1777629600n }])));
    assert.equal(q.now, 1777629600);
  });

  test('decoding needs a whole number of queries', () => {
    assert.equal(decodeQueries(new Uint8Array(25)), null);
    assert.equal(decodeQueries(invalid('not bytes')), null);
    assert.deepEqual(decodeQueries(new Uint8Array(0)), []);
  });

  test('fields out of range are refused with a TypeError', () => {
    const ok = { principal: 1, resource: 2, action: 3, now: 4 };
    for (const bad of [
      { ...ok, principal: -1 },
      { ...ok, principal: 2 ** 32 },
      { ...ok, principal: 1.5 },
      { ...ok, resource: 'event:e1' },
      { ...ok, resource: { matrix: 1 << 16, row: 0 } },
      { ...ok, action: 1 << 16 },
      { ...ok, target: -3 },
      { ...ok, now: 2 ** 60 },
      { ...ok, now: 1n << 63n },
      { ...ok, now: '2026-05-01T10:00:00Z' },
    ]) {
      assert.throws(() => encodeQueries(invalid([bad])), TypeError, JSON.stringify(bad, (_, v) => (typeof v === 'bigint' ? `${v}n` : v)));
    }
    assert.throws(() => encodeQueries(invalid('queries')), TypeError);
    assert.throws(() => encodeQueries(invalid([null])), TypeError);
  });
});

describe('decisions', () => {
  /**
   * The bytes wire::encode_decision writes.
   *
   * @param {boolean} allowed
   * @param {Array<[number, number]>} reasons `[code, rule]` each
   * @param {number | bigint} until
   */
  function decisionBytes(allowed, reasons, until) {
    return [allowed ? 1 : 0, reasons.length, ...reasons.flatMap(([code, rule]) => [code, ...le(rule, 4)]), ...le(until, 8)];
  }
  const NONE = -(1n << 63n);

  test('decisions decode as wire::decode_decisions does', () => {
    const gate = CODES.indexOf('gate');
    const mismatch = CODES.indexOf('account.mismatch');
    const bytes = Uint8Array.from([
      ...decisionBytes(false, [[gate, 77], [mismatch, 1]], 1_777_680_000),
      ...decisionBytes(false, [[gate, 77], [mismatch, 1]], NONE),
      ...decisionBytes(true, [[0, 0xfffffffe]], -1),
    ]);
    assert.deepEqual(decodeDecisions(bytes), [
      { allowed: false, reasons: [{ code: 'gate', rule: 77 }, { code: 'account.mismatch', rule: 1 }], valid_until: 1_777_680_000 },
      { allowed: false, reasons: [{ code: 'gate', rule: 77 }, { code: 'account.mismatch', rule: 1 }], valid_until: null },
      { allowed: true, reasons: [{ code: 'granted', rule: 0xfffffffe }], valid_until: -1 },
    ]);
  });

  test('only the byte 1 is an allow', () => {
    const [d] = present(decodeDecisions(Uint8Array.from(decisionBytes(true, [], NONE).map((b, i) => (i === 0 ? 2 : b)))));
    assert.equal(d.allowed, false);
  });

  test('a decision inside a larger buffer decodes at its offset', () => {
    const whole = Uint8Array.from([9, 9, 9, ...decisionBytes(true, [[0, 5]], 42)]);
    assert.deepEqual(decodeDecisions(whole.subarray(3)), [{ allowed: true, reasons: [{ code: 'granted', rule: 5 }], valid_until: 42 }]);
  });

  test('truncated bytes and unknown codes do not decode', () => {
    const one = decisionBytes(false, [[8, 3]], NONE);
    for (let cut = 1; cut < one.length; cut += 1) {
      assert.equal(decodeDecisions(Uint8Array.from(one.slice(0, cut))), null, `cut at ${cut}`);
    }
    assert.equal(decodeDecisions(Uint8Array.from(decisionBytes(false, [[CODES.length, 3]], NONE))), null);
    assert.deepEqual(decodeDecisions(new Uint8Array(0)), []);
    assert.equal(decodeDecisions(invalid([1, 0])), null, 'not bytes');
  });

  test('the code table matches Code::ALL', () => {
    assert.equal(CODES.length, 23);
    assert.equal(CODES[0], 'granted');
    assert.equal(CODES[8], 'relation.missing');
    assert.equal(CODES[21], 'evaluation.too_deep');
    assert.equal(CODES[22], 'duty.conflict');
    assert.ok(Object.isFrozen(CODES));
  });
});
