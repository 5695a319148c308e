/**
 * The binary batch format of `clearance_core::wire`, in JS: queries encoded and decoded
 * (24 bytes each) and decisions decoded, with the reason codes by their byte.
 *
 * Imports nothing at the top level but its siblings, so it runs unchanged in browsers,
 * Node and workerd.
 */

import { asBytes } from './values.js';

/** @import { Bytes, Query, WireDecision } from '../index.js' */

/** The size of an encoded query (`clearance_core::wire::QUERY_LEN`). */
export const QUERY_LEN = 24;

/** The bit that marks a page in an encoded resource (`clearance_core::wire::PAGE`). */
export const PAGE = 0x80000000;

/**
 * The stable reason codes, indexed by their byte on the wire (`Code::ALL` and
 * `Code::as_str` in clearance-core). On the wire a failed gate is `gate`; JSON answers
 * name it `gate.<name>`.
 */
export const CODES = Object.freeze([
  'granted',
  'request.invalid',
  'entity.unknown',
  'action.unknown',
  'principal.invalid',
  'target.invalid',
  'gate',
  'account.mismatch',
  'relation.missing',
  'relation.expired',
  'condition.failed',
  'exclusion.matched',
  'role.none_assigned',
  'role.missing_permission',
  'feature.disabled',
  'setup_mode.off',
  'authorization.missing',
  'authorization.expired',
  'authorization.not_yet_valid',
  'authorization.revoked',
  'authorization.out_of_scope',
  'evaluation.too_deep',
  'duty.conflict',
]);

const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

/**
 * An unsigned integer of `bits` bits, or a TypeError naming `what`.
 *
 * @param {number} value
 * @param {number} bits
 * @param {string} what
 * @returns {number}
 */
function unsigned(value, bits, what) {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
    throw new TypeError(`clearance: ${what} must be an integer in 0..2^${bits}, got ${String(value)}`);
  }
  return value;
}

/**
 * An i64 as a BigInt, or a TypeError naming `what`.
 *
 * @param {number | bigint} value
 * @param {string} what
 * @returns {bigint}
 */
function int64(value, what) {
  let v;
  if (typeof value === 'bigint') v = value;
  else if (Number.isSafeInteger(value)) v = BigInt(value);
  else throw new TypeError(`clearance: ${what} must be a safe integer or a BigInt, got ${String(value)}`);
  if (v < I64_MIN || v > I64_MAX) throw new TypeError(`clearance: ${what} is outside the i64 range`);
  return v;
}

/**
 * A BigInt as a Number when exact, else as it is.
 *
 * @param {bigint} v
 * @returns {number | bigint}
 */
function exact(v) {
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : v;
}

/**
 * Encodes resolved queries as `clearance_core::wire::encode_query` does: 24 bytes each,
 * little endian. A query is `{principal, resource, action, target?, now}` where
 * `resource` is an entity id or a page `{matrix, row}`, `target` an entity id (absent or
 * null for none) and `now` seconds (a Number or BigInt). Throws a TypeError on a field out
 * of its range.
 *
 * @param {Query[]} queries
 * @returns {Uint8Array}
 */
export function encodeQueries(queries) {
  if (!Array.isArray(queries)) throw new TypeError('clearance: encodeQueries takes an array of queries');
  const out = new Uint8Array(queries.length * QUERY_LEN);
  const view = new DataView(out.buffer);
  queries.forEach((q, i) => {
    const at = i * QUERY_LEN;
    const what = `query ${i}`;
    if (q === null || typeof q !== 'object') throw new TypeError(`clearance: ${what} is not an object`);
    let resource;
    if (typeof q.resource === 'number') {
      resource = unsigned(q.resource, 32, `${what}.resource`);
    } else if (q.resource !== null && typeof q.resource === 'object') {
      const matrix = unsigned(q.resource.matrix, 16, `${what}.resource.matrix`);
      const row = unsigned(q.resource.row, 16, `${what}.resource.row`);
      resource = (PAGE | (matrix << 16) | row) >>> 0;
    } else {
      throw new TypeError(`clearance: ${what}.resource must be an entity id or {matrix, row}`);
    }
    const target = q.target;
    const hasTarget = target !== undefined && target !== null;
    view.setUint32(at, unsigned(q.principal, 32, `${what}.principal`), true);
    view.setUint32(at + 4, resource, true);
    view.setUint16(at + 8, unsigned(q.action, 16, `${what}.action`), true);
    view.setUint16(at + 10, hasTarget ? 1 : 0, true);
    view.setUint32(at + 12, hasTarget ? unsigned(target, 32, `${what}.target`) : 0, true);
    view.setBigInt64(at + 16, int64(q.now, `${what}.now`), true);
  });
  return out;
}

/**
 * Decodes queries as `clearance_core::wire::decode_query` does; null unless the length is
 * a multiple of 24. `now` is a Number when exact, else a BigInt; `target` is null when the
 * flag is off.
 *
 * @param {Bytes} bytes
 * @returns {Query[] | null}
 */
export function decodeQueries(bytes) {
  const b = asBytes(bytes);
  if (b === null || b.length % QUERY_LEN !== 0) return null;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = [];
  for (let at = 0; at < b.length; at += QUERY_LEN) {
    const r = view.getUint32(at + 4, true);
    const resource = (r & PAGE) !== 0 ? { matrix: ((r & ~PAGE) >>> 16) & 0xffff, row: r & 0xffff } : r;
    const flags = view.getUint16(at + 10, true);
    out.push({
      principal: view.getUint32(at, true),
      resource,
      action: view.getUint16(at + 8, true),
      target: (flags & 1) === 1 ? view.getUint32(at + 12, true) : null,
      now: exact(view.getBigInt64(at + 16, true)),
    });
  }
  return out;
}

/**
 * Decodes decisions as `clearance_core::wire::decode_decisions` does: per decision
 * `allowed u8, n u8, n × (code u8, rule u32), valid_until i64`, little endian. Gives
 * `{allowed, reasons: [{code, rule}], valid_until}` with `code` the text of `CODES` and
 * `valid_until` seconds as a Number (null for i64::MIN, "none"); null if the bytes are
 * truncated or carry an unknown code.
 *
 * @param {Bytes} bytes
 * @returns {WireDecision[] | null}
 */
export function decodeDecisions(bytes) {
  const b = asBytes(bytes);
  if (b === null) return null;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = [];
  let at = 0;
  while (at < b.length) {
    if (at + 2 > b.length) return null;
    const allowed = b[at] === 1;
    const n = b[at + 1];
    at += 2;
    const reasons = [];
    for (let i = 0; i < n; i += 1) {
      if (at + 5 > b.length) return null;
      const code = CODES[b[at]];
      if (code === undefined) return null;
      reasons.push({ code, rule: view.getUint32(at + 1, true) });
      at += 5;
    }
    if (at + 8 > b.length) return null;
    const until = view.getBigInt64(at, true);
    at += 8;
    out.push({ allowed, reasons, valid_until: until === I64_MIN ? null : Number(until) });
  }
  return out;
}
