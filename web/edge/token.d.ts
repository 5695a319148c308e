/**
 * The bearer credential of an `Authorization` header (null when there is none), or why
 * not: the host's `bearer`.
 *
 * @param {string | null} value
 * @returns {{credential: string} | {error: ErrorData}}
 */
export function bearer(value: string | null): {
    credential: string;
} | {
    error: ErrorData;
};
/**
 * A verifier for the public keys of `rules.jwks`: the host's `TokenVerifier::new`. Every key
 * is imported here, so a JWKS or a rule that cannot work is refused at start-up (a
 * TypeError) rather than at the first request.
 *
 * @param {TokenRules} rules
 * @returns {Promise<TokenVerifier>}
 */
export function createTokenVerifier(rules: TokenRules): Promise<TokenVerifier>;
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
export const DEFAULT_LEEWAY: 30;
/** The longest a token may be valid unless the rules say otherwise, in seconds: 24 hours. */
export const DEFAULT_MAX_LIFETIME: number;
/**
 * A public key of a JWKS, as much of it as is read here.
 */
export type Jwk = {
    kty: string;
    kid?: string;
    alg?: string;
    crv?: string;
    x?: string;
    y?: string;
    n?: string;
    e?: string;
};
/**
 * How user tokens are checked (the host's `TokenRules`); `jwks`, `issuer` and `audience`
 * are required.
 */
export type TokenRules = {
    /**
     * the public keys, each with a `kid`
     */
    jwks: {
        keys: Jwk[];
    };
    /**
     * the one issuer (`iss`) accepted
     */
    issuer: string;
    /**
     * the audience (`aud`) a token must name
     */
    audience: string;
    /**
     * the claim naming the principal (`sub`)
     */
    claim?: string;
    /**
     * the principal's type (`user`): the claim holds
     * its id; `null`: the claim holds the whole `type:id`
     */
    principalType?: string | null;
    /**
     * seconds of clock skew allowed on `exp`, `nbf` and `iat` (30)
     */
    leeway?: number;
    /**
     * the longest a token may be valid, in seconds (86400):
     * its `exp` no further than this (plus the leeway) past `clock()`, nor past its `iat`
     */
    maxLifetime?: number;
    /**
     * the time tokens are checked at, in seconds since the
     * epoch (the system clock; decisions have their own clock)
     */
    clock?: () => number;
};
/**
 * What a credential proves: its principal, or why not (`auth.missing`, `auth.invalid`).
 */
export type Proof = {
    principal: string;
} | {
    error: ErrorData;
};
/**
 * A token verifier, made by `createTokenVerifier`.
 */
export type TokenVerifier = {
    /**
     * the principal a token
     * proves, at `now` (seconds; default the rules' clock)
     */
    verify: (token: string, now?: number) => Promise<Proof>;
};
import type { ErrorData } from '../index.js';
