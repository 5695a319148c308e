/**
 * User tokens at the edge: the bearer credential of a request, verified with the rules of
 * the host's `TokenVerifier` (host/src/auth.rs) so that a token the host refuses is refused
 * here too (host/tests/fixtures/tokens/corpus.json holds the cases both are tested on).
 *
 * A token is a JWT signed by a key of the configured JWKS, each key verifying exactly one
 * algorithm (its `alg`, or the one its type implies): ES256 (P-256), ES384 (P-384), EdDSA
 * (Ed25519) or RS256, the host's set; never `none`, never HMAC (a JWKS with an `oct` key is
 * refused). The token names its key (`kid`); it must come from the configured issuer
 * (`iss`) for the configured audience (`aud`), carry `exp`, be within `exp` and `nbf` with
 * a leeway (30 s), not be issued (`iat`) in the future, and be valid for at most the
 * maximum lifetime (24 h): from now (plus the leeway) and from its `iat`. A claim (default
 * `sub`) names the principal `<principalType>:<claim>` (default `user`).
 * Signatures are checked by `jose`; nothing here is cryptography.
 */

import { base64url, decodeProtectedHeader, importJWK, jwtVerify } from 'jose';

/**
 * @import { ErrorData } from '../index.js'
 */

/**
 * A public key of a JWKS, as much of it as is read here.
 *
 * @typedef {object} Jwk
 * @property {string} kty
 * @property {string} [kid]
 * @property {string} [alg]
 * @property {string} [crv]
 * @property {string} [x]
 * @property {string} [y]
 * @property {string} [n]
 * @property {string} [e]
 */

/**
 * How user tokens are checked (the host's `TokenRules`); `jwks`, `issuer` and `audience`
 * are required.
 *
 * @typedef {object} TokenRules
 * @property {{keys: Jwk[]}} jwks the public keys, each with a `kid`
 * @property {string} issuer the one issuer (`iss`) accepted
 * @property {string} audience the audience (`aud`) a token must name
 * @property {string} [claim] the claim naming the principal (`sub`)
 * @property {string | null} [principalType] the principal's type (`user`): the claim holds
 *   its id; `null`: the claim holds the whole `type:id`
 * @property {number} [leeway] seconds of clock skew allowed on `exp`, `nbf` and `iat` (30)
 * @property {number} [maxLifetime] the longest a token may be valid, in seconds (86400):
 *   its `exp` no further than this (plus the leeway) past `clock()`, nor past its `iat`
 * @property {() => number} [clock] the time tokens are checked at, in seconds since the
 *   epoch (the system clock; decisions have their own clock)
 */

/**
 * What a credential proves: its principal, or why not (`auth.missing`, `auth.invalid`).
 *
 * @typedef {{principal: string} | {error: ErrorData}} Proof
 */

/**
 * A token verifier, made by `createTokenVerifier`.
 *
 * @typedef {object} TokenVerifier
 * @property {(token: string, now?: number) => Promise<Proof>} verify the principal a token
 *   proves, at `now` (seconds; default the rules' clock)
 */

/** Seconds of clock skew allowed on `exp`, `nbf` and `iat` unless the rules say otherwise. */
export const DEFAULT_LEEWAY = 30;

/** The longest a token may be valid unless the rules say otherwise, in seconds: 24 hours. */
export const DEFAULT_MAX_LIFETIME = 24 * 60 * 60;

/** The longest principal id a claim may hold, in UTF-8 bytes, as the host allows. */
const MAX_CLAIM_BYTES = 256;

/** What to do about a refused credential, as the host says it. */
const HELP = 'send `Authorization: Bearer <token>`: a user token from the configured issuer';

/**
 * A refusal of a credential.
 *
 * @param {string} message
 * @returns {{error: ErrorData}}
 */
function invalid(message) {
  return { error: { code: 'auth.invalid', message, help: HELP } };
}

/**
 * The bearer credential of an `Authorization` header (null when there is none), or why
 * not: the host's `bearer`.
 *
 * @param {string | null} value
 * @returns {{credential: string} | {error: ErrorData}}
 */
export function bearer(value) {
  if (value === null) {
    return { error: { code: 'auth.missing', message: 'no credentials: send `Authorization: Bearer <user token>`', help: HELP } };
  }
  const space = value.indexOf(' ');
  const scheme = space < 0 ? '' : value.slice(0, space);
  const credential = space < 0 ? '' : value.slice(space + 1).trim();
  if (scheme.toLowerCase() !== 'bearer' || credential === '' || credential.length > 8192) {
    return invalid('the Authorization header is `Bearer <credential>`');
  }
  return { credential };
}

/**
 * The one algorithm a public key verifies: named by the key, or implied by its type, as the
 * host's `algorithm_of` (host/src/auth.rs) decides it; throws a TypeError for a key that
 * can verify none of ES256, ES384, EdDSA and RS256.
 *
 * @param {Jwk} jwk
 * @returns {'ES256' | 'ES384' | 'EdDSA' | 'RS256'}
 */
function algorithmOf(jwk) {
  /** @type {'ES256' | 'ES384' | 'EdDSA' | 'RS256'} */
  let implied;
  switch (jwk.kty) {
    case 'EC':
      if (jwk.crv === 'P-256') implied = 'ES256';
      else if (jwk.crv === 'P-384') implied = 'ES384';
      else throw new TypeError(`curve \`${jwk.crv}\` is not supported (P-256 or P-384)`);
      break;
    case 'OKP': {
      if (jwk.crv !== 'Ed25519') throw new TypeError(`curve \`${jwk.crv}\` is not supported (Ed25519 only)`);
      let x;
      try {
        x = base64url.decode(String(jwk.x));
      } catch {
        throw new TypeError('its `x` is not base64url');
      }
      if (x.length !== 32) throw new TypeError(`an Ed25519 key is 32 bytes, this one ${x.length}`);
      implied = 'EdDSA';
      break;
    }
    case 'RSA':
      implied = 'RS256';
      break;
    case 'oct':
      throw new TypeError('a symmetric (`oct`) key cannot verify user tokens: publish public keys only');
    default:
      throw new TypeError(`key type \`${jwk.kty}\` is not supported (EC, OKP or RSA)`);
  }
  if (jwk.alg !== undefined && jwk.alg !== implied) {
    throw new TypeError(`its \`alg\` \`${jwk.alg}\` does not fit its key type (${implied} only)`);
  }
  return implied;
}

/**
 * Why a token's times do not let it be used at `now`, or null: the host's `check_times`.
 * Before `exp` and not before `nbf` (each with the leeway, checked by `jose` already),
 * issued (`iat`) no later than `now` plus the leeway, and valid for at most `maxLifetime`:
 * from `now` (plus the leeway) and from its `iat`.
 *
 * @param {{exp: number, iat?: number}} times whole seconds
 * @param {number} now
 * @param {number} leeway
 * @param {number} maxLifetime
 * @returns {string | null}
 */
function timesRefused({ exp, iat }, now, leeway, maxLifetime) {
  if (iat !== undefined && iat - leeway > now) {
    return `the token's \`iat\` is ${iat - now} s ahead of the edge's clock, more than the leeway of ${leeway} s: a token is not issued in the future`;
  }
  const ahead = exp - now;
  if (ahead > maxLifetime + leeway) {
    return `the token's \`exp\` is ${ahead} s ahead of the edge's clock, more than the maximum token lifetime of ${maxLifetime} s (plus the leeway of ${leeway} s)`;
  }
  if (iat !== undefined && exp - iat > maxLifetime) {
    return `the token's \`exp\` is ${exp - iat} s after its \`iat\`, more than the maximum token lifetime of ${maxLifetime} s`;
  }
  return null;
}

/**
 * The public members of a JWK, so that nothing else in it (private members, `key_ops`,
 * `ext`) changes what is imported.
 *
 * @param {Jwk} jwk
 */
function publicMembers(jwk) {
  const { kty, crv, x, y, n, e } = jwk;
  return Object.fromEntries(Object.entries({ kty, crv, x, y, n, e }).filter(([, v]) => v !== undefined));
}

/** The system clock, in whole seconds. */
function systemSeconds() {
  return Math.floor(Date.now() / 1000);
}

/**
 * The message of what was thrown.
 *
 * @param {unknown} e
 */
function thrownText(e) {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A verifier for the public keys of `rules.jwks`: the host's `TokenVerifier::new`. Every key
 * is imported here, so a JWKS or a rule that cannot work is refused at start-up (a
 * TypeError) rather than at the first request.
 *
 * @param {TokenRules} rules
 * @returns {Promise<TokenVerifier>}
 */
export async function createTokenVerifier(rules) {
  if (rules === null || typeof rules !== 'object') throw new TypeError('createTokenVerifier needs rules: {jwks, issuer, audience}');
  const {
    jwks, issuer, audience, claim = 'sub', principalType = 'user', leeway = DEFAULT_LEEWAY, maxLifetime = DEFAULT_MAX_LIFETIME, clock = systemSeconds,
  } = rules;
  if (typeof issuer !== 'string' || issuer === '' || typeof audience !== 'string' || audience === '') {
    throw new TypeError('user tokens need an issuer and an audience to check');
  }
  if (typeof claim !== 'string' || claim === '') throw new TypeError('claim must name a claim of the token');
  if (principalType !== null && (typeof principalType !== 'string' || principalType === '' || principalType.includes(':'))) {
    throw new TypeError('principalType must be a type name, or null for a claim holding `type:id`');
  }
  if (!Number.isInteger(leeway) || leeway < 0) throw new TypeError('leeway must be a whole number of seconds, at least 0');
  if (!Number.isSafeInteger(maxLifetime) || maxLifetime < 1) throw new TypeError('maxLifetime must be a whole number of seconds, at least 1');
  if (typeof clock !== 'function') throw new TypeError('clock must be a function giving seconds since the epoch');
  if (jwks === null || typeof jwks !== 'object' || !Array.isArray(jwks.keys)) throw new TypeError('jwks must be a JWKS: {keys: [...]}');
  if (jwks.keys.length === 0) throw new TypeError('the JWKS holds no key');

  /** @type {Map<string, {alg: string, key: CryptoKey | Uint8Array}>} */
  const keys = new Map();
  for (const [i, jwk] of jwks.keys.entries()) {
    if (jwk === null || typeof jwk !== 'object') throw new TypeError(`key ${i} of the JWKS is not a JWK`);
    const kid = jwk.kid;
    if (typeof kid !== 'string') throw new TypeError(`key ${i} of the JWKS has no \`kid\``);
    if (keys.has(kid)) throw new TypeError(`two keys of the JWKS are named \`${kid}\``);
    let alg;
    let key;
    try {
      alg = algorithmOf(jwk);
      key = await importJWK(publicMembers(jwk), alg);
    } catch (e) {
      throw new TypeError(`key \`${kid}\`: ${thrownText(e)}`);
    }
    keys.set(kid, { alg, key });
  }

  /**
   * The principal a token proves at `now`: the host's `TokenVerifier::verify`.
   *
   * @param {string} token
   * @param {number} [now]
   * @returns {Promise<Proof>}
   */
  async function verify(token, now = clock()) {
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch (e) {
      return invalid(`not a token this edge accepts: ${thrownText(e)}`);
    }
    const { kid } = header;
    if (typeof kid !== 'string') return invalid('the token names no key (`kid`)');
    const named = keys.get(kid);
    if (named === undefined) return invalid(`no configured key is named \`${kid}\``);
    if (header.alg !== named.alg) return invalid(`key \`${kid}\` verifies ${named.alg}, the token says ${String(header.alg)}`);
    let payload;
    try {
      ({ payload } = await jwtVerify(token, named.key, {
        algorithms: [named.alg],
        issuer,
        audience,
        requiredClaims: ['exp', 'iss', 'aud'],
        clockTolerance: leeway,
        currentDate: new Date(now * 1000),
      }));
    } catch (e) {
      return invalid(`the token was refused: ${thrownText(e)}`);
    }
    // The host reads `exp` as whole seconds: anything else is no expiry it can check.
    if (!Number.isSafeInteger(payload.exp)) return invalid('the token\'s `exp` is not a whole number of seconds');
    for (const time of ['iat', 'nbf']) {
      if (Object.hasOwn(payload, time) && !Number.isSafeInteger(payload[time])) {
        return invalid(`the token's \`${time}\` is not a whole number of seconds`);
      }
    }
    const times = { exp: /** @type {number} */ (payload.exp), iat: Object.hasOwn(payload, 'iat') ? payload.iat : undefined };
    const refused = timesRefused(times, now, leeway, maxLifetime);
    if (refused !== null) return invalid(refused);
    const id = Object.hasOwn(payload, claim) ? payload[claim] : undefined;
    if (typeof id !== 'string' || id === '' || new TextEncoder().encode(id).length > MAX_CLAIM_BYTES) {
      return invalid(`the token's \`${claim}\` claim is missing or not a short string`);
    }
    if (principalType !== null) return { principal: `${principalType}:${id}` };
    if (!id.includes(':')) return invalid(`the token's \`${claim}\` claim is not a principal \`type:id\``);
    return { principal: id };
  }

  return { verify };
}
