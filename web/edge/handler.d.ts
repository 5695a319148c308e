/**
 * The `max-age` of an allow: the whole seconds from `now` until `validUntil`, at least 0;
 * `fallback` when the decision has no `valid_until` or a time does not parse.
 *
 * @param {Time | bigint | null | undefined} validUntil
 * @param {Time | bigint} now
 * @param {number} [fallback]
 * @returns {number}
 */
export function maxAge(validUntil: Time | bigint | null | undefined, now: Time | bigint, fallback?: number): number;
/**
 * A `fetch(request) → Response` handler gating requests with `session` alone.
 *
 * - `session`: a loaded `Session` (see `loadSlice`), or anything with `check(request)`.
 * - `principal`: the principal (`type:id`) the session's slice was loaded for (the
 *   `principal` given to `loadSlice`). The handler serves it alone: a verified token of any
 *   other principal is answered 403 `edge.wrong_principal` without a decision, since the
 *   slice lacks what decides for others (their gate attributes, roles, relations).
 * - `tokens`: the verifier of user tokens (`createTokenVerifier` of `token.js`); the token of
 *   `Authorization: Bearer …` names the principal.
 * - `now`: the time of a decision (RFC 3339 text or epoch seconds), called per request.
 * - `routes`: `[{method, pattern, action, resource}]`; `pattern` like `/events/:id`,
 *   `resource` a function of the params giving `type:id`. The first match wins.
 * - `upstream(request, {principal, action, resource, params, decision})`: called for an
 *   allow only; its response is passed on with `cache-control` set. Default: a 200 JSON
 *   `{allowed: true, action, resource, valid_until}`.
 * - `defaultMaxAge`: the `max-age` of an allow without `valid_until` (60).
 *
 * An allow carries `cache-control: private, max-age=N` (N: the seconds until the decision's
 * `valid_until`) and `vary: authorization`: it is one principal's answer, so a shared cache
 * must not serve it to another.
 *
 * Throws a `ClearanceError` (`edge.no_principal`) without a principal, or (`slice.wrong_principal`,
 * `slice.not_loaded`) when `loadSlice` gave the session another principal's slice or none,
 * and a TypeError for any other malformed option.
 *
 * @param {HandlerOptions} options
 * @returns {(request: Request) => Promise<Response>}
 */
export function createHandler({ session, principal: served, tokens, now, routes, upstream, defaultMaxAge, }?: HandlerOptions): (request: Request) => Promise<Response>;
/**
 * Verifies a signed principal slice (the body of `GET /v1/slice/{principal}`, as text or
 * parsed) with `verifySlice` (its signature by a key of `options.keys`, the JWKS of
 * `GET /v1/slice-keys`; its principal, if `options.principal` is given; its expiry at
 * `options.now`), then loads it into `session`: its policy, checked against the slice's
 * `policy_hash`, then its facts. Gives the session's info, or a denial (`{allowed: false,
 * error}`) like the session's methods, with the codes `slice.no_keys`, `slice.unsigned`,
 * `slice.unknown_key`, `slice.bad_signature`, `slice.invalid`, `slice.wrong_principal`,
 * `slice.expired` or `slice.policy_mismatch`, or the session's own. Nothing is loaded from
 * a slice that does not verify; after a denial from loading, do not serve with this session.
 * The session is then known to hold the slice's principal: `createHandler` refuses to make
 * a handler of another principal on it, and a handler made on it refuses every request
 * (403) once it holds another principal's slice or its last slice failed to load.
 *
 * @param {Session} session
 * @param {unknown} signed the signed slice, as JSON text or parsed
 * @param {SliceOptions} options
 * @returns {Promise<Info | Denial>}
 */
export function loadSlice(session: Session, signed: unknown, options: SliceOptions): Promise<Info | Denial>;
/**
 * How `followChanges` follows the host.
 *
 * @typedef {object} FollowOptions
 * @property {string} url the host's origin, e.g. `https://clearance.example`
 * @property {string} token the user token of the slice's principal
 * @property {number} revision the revision of the slice loaded
 * @property {() => Promise<number>} refetch loads the slice again (`loadSlice` on a fresh
 *   `GET /v1/slice/{principal}`) and gives its revision
 * @property {AbortSignal} [signal] stops following
 * @property {typeof globalThis.fetch} [fetch] the fetch to use (default: the global one)
 */
/**
 * Keeps a session loaded from a principal's slice at the host's revision, as the console
 * does: follows the host's change feed (`GET /v1/changes?since=…` with the principal's
 * token) and applies each change's deltas, which the host cuts to the slice, to the session
 * in place. A change it cannot follow so (`refetch`: a policy change, the authorisations the
 * principal holds moved; a `reset`: changes were skipped; deltas the session refuses) calls
 * `options.refetch()`, and the feed goes on from the revision it gives. Settles, with the
 * revision the session is at, when the feed ends (the host closed it or went away, or
 * answered other than 200) or `options.signal` aborts.
 *
 * @param {{applyDeltas(deltas: object[]): unknown}} session
 * @param {FollowOptions} options
 * @returns {Promise<number>}
 */
export function followChanges(session: {
    applyDeltas(deltas: object[]): unknown;
}, { url, token, revision, refetch, signal, fetch: get }: FollowOptions): Promise<number>;
/**
 * @import { DecisionView, Denial, ErrorData, Info, Request as CheckRequest, Session, Slice, SliceOptions, Time } from '../index.js'
 * @import { Proof, TokenVerifier } from './token.js'
 */
/**
 * What the handler needs of a session: `check`. Its answer is used only if it is a clean
 * allow, so it may be anything.
 *
 * @typedef {{check(request: CheckRequest): unknown}} Checker
 */
/**
 * The parameters of a matched route, by name (`/events/:id` gives `id`).
 *
 * @typedef {{[name: string]: string}} Params
 */
/**
 * A route: requests with `method` whose path matches `pattern` are checked for `action` on
 * the resource `resource(params)` gives (`type:id`).
 *
 * @typedef {object} Route
 * @property {string} method
 * @property {string} pattern a path like `/events/:id`
 * @property {string} action
 * @property {(params: Params) => string} resource
 */
/**
 * A route ready to match: its method in upper case, its pattern in segments.
 *
 * @typedef {object} CompiledRoute
 * @property {string} method
 * @property {Array<{param: string} | {literal: string}>} parts
 * @property {string} action
 * @property {(params: Params) => string} resource
 */
/**
 * What the upstream is told of an allowed request.
 *
 * @typedef {object} UpstreamContext
 * @property {string} principal
 * @property {string} action
 * @property {string} resource
 * @property {Params} params
 * @property {DecisionView} decision the session's allow
 */
/**
 * Serves an allowed request.
 *
 * @typedef {(request: Request, context: UpstreamContext) => Response | Promise<Response>} Upstream
 */
/**
 * The options of `createHandler`; `session`, `principal`, `tokens` and `routes` are
 * required.
 *
 * @typedef {object} HandlerOptions
 * @property {Checker} session
 * @property {string} principal the principal (`type:id`) the session's slice was loaded
 *   for: the only one the handler serves
 * @property {TokenVerifier} tokens
 * @property {() => Time} [now]
 * @property {Route[]} routes
 * @property {Upstream} [upstream]
 * @property {number} [defaultMaxAge]
 */
/** The default `max-age` of an allow whose decision has no `valid_until`, in seconds. */
export const DEFAULT_MAX_AGE: 60;
/**
 * How `followChanges` follows the host.
 */
export type FollowOptions = {
    /**
     * the host's origin, e.g. `https://clearance.example`
     */
    url: string;
    /**
     * the user token of the slice's principal
     */
    token: string;
    /**
     * the revision of the slice loaded
     */
    revision: number;
    /**
     * loads the slice again (`loadSlice` on a fresh
     * `GET /v1/slice/{principal}`) and gives its revision
     */
    refetch: () => Promise<number>;
    /**
     * stops following
     */
    signal?: AbortSignal;
    /**
     * the fetch to use (default: the global one)
     */
    fetch?: typeof globalThis.fetch;
};
/**
 * What the handler needs of a session: `check`. Its answer is used only if it is a clean
 * allow, so it may be anything.
 */
export type Checker = {
    check(request: CheckRequest): unknown;
};
/**
 * The parameters of a matched route, by name (`/events/:id` gives `id`).
 */
export type Params = {
    [name: string]: string;
};
/**
 * A route: requests with `method` whose path matches `pattern` are checked for `action` on
 * the resource `resource(params)` gives (`type:id`).
 */
export type Route = {
    method: string;
    /**
     * a path like `/events/:id`
     */
    pattern: string;
    action: string;
    resource: (params: Params) => string;
};
/**
 * A route ready to match: its method in upper case, its pattern in segments.
 */
export type CompiledRoute = {
    method: string;
    parts: Array<{
        param: string;
    } | {
        literal: string;
    }>;
    action: string;
    resource: (params: Params) => string;
};
/**
 * What the upstream is told of an allowed request.
 */
export type UpstreamContext = {
    principal: string;
    action: string;
    resource: string;
    params: Params;
    /**
     * the session's allow
     */
    decision: DecisionView;
};
/**
 * Serves an allowed request.
 */
export type Upstream = (request: Request, context: UpstreamContext) => Response | Promise<Response>;
/**
 * The options of `createHandler`; `session`, `principal`, `tokens` and `routes` are
 * required.
 */
export type HandlerOptions = {
    session: Checker;
    /**
     * the principal (`type:id`) the session's slice was loaded
     * for: the only one the handler serves
     */
    principal: string;
    tokens: TokenVerifier;
    now?: () => Time;
    routes: Route[];
    upstream?: Upstream;
    defaultMaxAge?: number;
};
import type { Time } from '../index.js';
import type { Session } from '../index.js';
import type { SliceOptions } from '../index.js';
import type { Info } from '../index.js';
import type { Denial } from '../index.js';
import type { Request as CheckRequest } from '../index.js';
import type { DecisionView } from '../index.js';
import type { TokenVerifier } from './token.js';
