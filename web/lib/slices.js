/**
 * Signed principal slices: `verifySlice` checks the host's Ed25519 signature of a slice
 * with WebCrypto and gives the slice, or a denial its caller branches on.
 *
 * Imports nothing at the top level but its siblings, so it runs unchanged in browsers,
 * Node and workerd.
 */

import { deny, thrownMessage } from './errors.js';

/** @import { Denial, Slice, SliceOptions } from '../index.js' */

/**
 * What a slice's signature covers comes first: the signed bytes are the UTF-8 of
 * `SLICE_CONTEXT + slice`, so no other signed text of the host can pass for a slice. Its
 * version is the slice format's: a slice of another version does not verify.
 */
export const SLICE_CONTEXT = 'clearance.slice.v2\n';

const SLICE_HELP = 'give the body of GET /v1/slice/{principal} and the keys of GET /v1/slice-keys';

/**
 * The bytes of base64url text without padding, or null if it is not that.
 *
 * @param {unknown} text
 */
function base64urlBytes(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return null;
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/**
 * The time of `options.now` in seconds: a Date, seconds since the epoch, or the system clock.
 *
 * @param {Date | number | undefined} now
 */
function sliceSeconds(now) {
  if (now instanceof Date) return now.getTime() / 1000;
  if (typeof now === 'number') return now;
  return Date.now() / 1000;
}

/**
 * Whether a parsed slice has the fields of one.
 *
 * @param {unknown} s
 * @returns {s is Slice}
 */
function isSlice(s) {
  if (s === null || typeof s !== 'object' || Array.isArray(s)) return false;
  const o = /** @type {{[field: string]: unknown}} */ (s);
  return typeof o.principal === 'string' && typeof o.account === 'string' && typeof o.revision === 'number'
    && typeof o.policy_hash === 'string' && typeof o.issued === 'number' && typeof o.expires === 'number'
    && Array.isArray(o.policy) && o.facts !== null && typeof o.facts === 'object' && !Array.isArray(o.facts);
}

/**
 * Verifies a signed principal slice, the body of `GET /v1/slice/{principal}`:
 * `{slice, alg: "EdDSA", key_id, signature}`, `signature` the base64url Ed25519 signature
 * of `SLICE_CONTEXT + slice` by the key of `options.keys` (the JWKS of
 * `GET /v1/slice-keys`) named `key_id`. Gives the slice, parsed, or a denial: without keys
 * `slice.no_keys`; not signed (or not with EdDSA) `slice.unsigned`; no Ed25519 key of that
 * name `slice.unknown_key`; a signature that does not verify `slice.bad_signature`; not a
 * slice `slice.invalid`; for another principal than `options.principal` (when given)
 * `slice.wrong_principal`; at or past its `expires` (at `options.now`, default the system
 * clock) `slice.expired`. Uses WebCrypto's Ed25519, so it runs in browsers and Node alike.
 *
 * @param {unknown} signed the signed slice, as JSON text or parsed
 * @param {SliceOptions} options
 * @returns {Promise<Slice | Denial>}
 */
export async function verifySlice(signed, options) {
  const keys = options?.keys;
  if (keys === null || typeof keys !== 'object' || !Array.isArray(keys.keys)) {
    return deny('slice.no_keys', 'no keys to verify the slice with: `options.keys` is not a JWKS', 'pass the JWKS of GET /v1/slice-keys as `options.keys`');
  }
  let envelope = signed;
  if (typeof envelope === 'string') {
    try {
      envelope = JSON.parse(envelope);
    } catch (e) {
      return deny('slice.invalid', `the signed slice is not JSON: ${thrownMessage(e)}`, SLICE_HELP);
    }
  }
  if (envelope === null || typeof envelope !== 'object' || Array.isArray(envelope)) {
    return deny('slice.invalid', 'a signed slice is `{slice, alg, key_id, signature}`', SLICE_HELP);
  }
  const { slice: text, alg, key_id: kid, signature } = /** @type {{[field: string]: unknown}} */ (envelope);
  if (typeof text !== 'string' || typeof signature !== 'string' || typeof kid !== 'string') {
    return deny('slice.unsigned', 'the slice carries no signature: expected `{slice, alg, key_id, signature}`', 'fetch the slice from a host that signs slices');
  }
  if (alg !== 'EdDSA') {
    return deny('slice.unsigned', `the slice is signed with \`${String(alg)}\`, expected \`EdDSA\``, 'fetch the slice from a host that signs slices');
  }
  const jwk = keys.keys.find((k) => k !== null && typeof k === 'object' && k.kid === kid && k.kty === 'OKP' && k.crv === 'Ed25519'
    && (k.alg === undefined || k.alg === 'EdDSA' || k.alg === 'Ed25519'));
  if (jwk === undefined) {
    return deny('slice.unknown_key', `no Ed25519 key of \`options.keys\` is named \`${kid}\``, 'fetch the keys of GET /v1/slice-keys again: the host may have a new key');
  }
  const x = base64urlBytes(jwk.x);
  if (x === null || x.length !== 32) {
    return deny('slice.unknown_key', `the key \`${kid}\` is not a 32-byte Ed25519 key`, 'fetch the keys of GET /v1/slice-keys again');
  }
  const sig = base64urlBytes(signature);
  if (sig === null || sig.length !== 64) {
    return deny('slice.bad_signature', 'the slice\'s signature is not 64 bytes of base64url', 'fetch the slice again; do not load this one');
  }
  let verified;
  try {
    const key = await globalThis.crypto.subtle.importKey('raw', x, { name: 'Ed25519' }, false, ['verify']);
    verified = await globalThis.crypto.subtle.verify({ name: 'Ed25519' }, key, sig, new TextEncoder().encode(SLICE_CONTEXT + text));
  } catch (e) {
    return deny('slice.bad_signature', `the signature could not be checked: ${thrownMessage(e)}`, 'Ed25519 needs WebCrypto with Ed25519 (Node 20, current browsers)');
  }
  if (!verified) {
    return deny('slice.bad_signature', `the slice's signature does not verify with key \`${kid}\`: it was changed, or signed by another key`, 'fetch the slice again; do not load this one');
  }
  let slice;
  try {
    slice = JSON.parse(text);
  } catch (e) {
    return deny('slice.invalid', `the signed slice is not JSON: ${thrownMessage(e)}`, SLICE_HELP);
  }
  if (!isSlice(slice)) {
    return deny('slice.invalid', 'a slice has `principal`, `account`, `revision`, `policy_hash`, `issued`, `expires`, `policy` and `facts`', SLICE_HELP);
  }
  if (options.principal !== undefined && slice.principal !== options.principal) {
    return deny('slice.wrong_principal', `the slice is for \`${slice.principal}\`, expected \`${options.principal}\``, 'fetch the slice of the principal being served');
  }
  const now = sliceSeconds(options.now);
  if (!(now < slice.expires)) {
    return deny('slice.expired', `the slice expired at ${new Date(slice.expires * 1000).toISOString()}`, 'fetch the slice again');
  }
  return slice;
}
