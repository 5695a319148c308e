/**
 * A session's arguments checked before they reach the module: requests, times, strings
 * and bytes, each refused with a `request.malformed` error that names what is wrong.
 *
 * Imports nothing at the top level but its siblings, so it runs unchanged in browsers,
 * Node and workerd.
 */

import { malformed } from './errors.js';

/** The most requests one batch may carry (`clearance_core::protocol::MAX_BATCH`). */
export const MAX_BATCH = 1 << 20;

export const TIME_HELP = 'pass a Date, whole seconds since the epoch, or RFC 3339 text';
const REQUEST_HELP = 'a request is `{principal, action, resource, target?, now}`';
const REQUEST_FIELDS = new Set(['principal', 'action', 'resource', 'target', 'now']);

/**
 * What a value is, for an error message.
 *
 * @param {unknown} value
 * @returns {string}
 */
export function describe(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}

/**
 * A structured argument as the module reads it: JSON text as it is, any other value as
 * `JSON.stringify` would write it (the module reads it so). A value of which JSON writes
 * nothing (`undefined`, a function, a symbol) or that it cannot write (a BigInt) is
 * thrown as a `request.malformed` error.
 *
 * @param {unknown} value
 * @param {string} what the argument, for the error
 * @returns {unknown}
 */
export function present(value, what) {
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') {
    throw malformed(`${what} is missing`, `pass ${what} as plain data or JSON text`);
  }
  if (typeof value === 'bigint') throw malformed(`${what} cannot be written as JSON: a BigInt is not JSON data`, `pass ${what} as plain data or JSON text`);
  return value;
}

/**
 * Checks that every named argument is a string; the first that is not is thrown as a
 * `request.malformed` error.
 *
 * @param {{[name: string]: unknown}} args
 */
export function strings(args) {
  for (const [name, value] of Object.entries(args)) {
    if (typeof value !== 'string') throw malformed(`\`${name}\` must be a string, got ${describe(value)}`);
  }
}

/**
 * Whether every enumerable field of `request` is a field of a request.
 *
 * @param {object} request
 */
export function onlyRequestFields(request) {
  for (const field in request) {
    if (field !== 'principal' && field !== 'action' && field !== 'resource' && field !== 'target' && field !== 'now') return false;
  }
  return true;
}

/**
 * `now` as the module's value face takes it: a Date, whole seconds (a BigInt as a Number
 * when exact) or text; null for anything else.
 *
 * @param {unknown} now
 * @returns {Date | number | string | null}
 */
export function timeArg(now) {
  if (typeof now === 'string' || now instanceof Date) return now;
  if (typeof now === 'number') return Number.isSafeInteger(now) ? now : null;
  if (typeof now === 'bigint') return Number.isSafeInteger(Number(now)) ? Number(now) : null;
  return null;
}

/**
 * `now` as the value face takes it, or a thrown `request.malformed` error.
 *
 * @param {unknown} now
 * @returns {Date | number | string}
 */
export function time(now) {
  const t = timeArg(now);
  if (t === null) throw malformed(`\`now\` must be a Date, RFC 3339 text or whole seconds, got ${describe(now)}`, TIME_HELP);
  return t;
}

/**
 * A Date's whole second since the epoch (as the module reads a Date), or null for an
 * invalid Date.
 *
 * @param {Date} date
 * @returns {number | null}
 */
export function dateSeconds(date) {
  const ms = date.getTime();
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
}

/**
 * A request's fields as the value face takes them, or a thrown `request.malformed` error
 * naming what is wrong: not an object, an unknown field, a field of the wrong type.
 *
 * @param {unknown} request
 * @param {string} what the argument, for the error
 * @returns {{principal: string, action: string, resource: string, target: string | undefined, now: Date | number | string}}
 */
export function requestArgs(request, what) {
  if (request === null || typeof request !== 'object' || Array.isArray(request)) {
    throw malformed(`${what} must be an object, got ${describe(request)}`, REQUEST_HELP);
  }
  const r = /** @type {{[field: string]: unknown}} */ (request);
  for (const field of Object.keys(r)) {
    if (!REQUEST_FIELDS.has(field)) throw malformed(`${what} has an unknown field \`${field}\``, REQUEST_HELP);
  }
  const { principal, action, resource, target, now } = r;
  if (typeof principal !== 'string') throw malformed(`\`principal\` must be a string, got ${describe(principal)}`, REQUEST_HELP);
  if (typeof action !== 'string') throw malformed(`\`action\` must be a string, got ${describe(action)}`, REQUEST_HELP);
  if (typeof resource !== 'string') throw malformed(`\`resource\` must be a string, got ${describe(resource)}`, REQUEST_HELP);
  if (target !== undefined && target !== null && typeof target !== 'string') {
    throw malformed(`\`target\` must be a string, got ${describe(target)}`, REQUEST_HELP);
  }
  const t = timeArg(now);
  if (t === null) throw malformed(`\`now\` must be a Date, RFC 3339 text or whole seconds, got ${describe(now)}`, TIME_HELP);
  return { principal, action, resource, target: target ?? undefined, now: t };
}

/**
 * `now` as the text the module reads: RFC 3339, or whole seconds; or a thrown
 * `request.malformed` error.
 *
 * @param {unknown} now
 * @returns {string}
 */
export function timeText(now) {
  if (typeof now === 'string') return now;
  if (now instanceof Date) {
    const seconds = dateSeconds(now);
    if (seconds !== null) return String(seconds);
  } else if (typeof now === 'bigint' || (typeof now === 'number' && Number.isInteger(now))) {
    return String(now);
  }
  throw malformed(`\`now\` must be RFC 3339 text or whole seconds, got ${describe(now)}`);
}

/**
 * Bytes as a Uint8Array over the same memory, or null if `value` is not binary.
 *
 * @param {unknown} value
 * @returns {Uint8Array | null}
 */
export function asBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return null;
}
