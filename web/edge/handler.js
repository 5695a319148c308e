/**
 * An edge-function gate for Clearance: a `fetch(request) → Response` handler, of the shape
 * edge runtimes use, that decides every API request with the WebAssembly module alone (no
 * server call per request), from a principal slice (`GET /v1/slice/{principal}`) loaded
 * beforehand with `loadSlice`.
 *
 * The caller is named by a user token in `Authorization: Bearer …`, verified here by the
 * host's rules (see `token.js`); no header or body field names a principal. The slice is
 * verified too: `loadSlice` loads only a slice signed by a key of the host's
 * `GET /v1/slice-keys`, for the expected principal, not expired. A slice decides exactly
 * only for its own principal (the host cuts other principals' gate attributes, roles and
 * relations out of it), so a handler serves that one principal: a token of any other is
 * 403 `edge.wrong_principal`, and is never decided on the slice.
 *
 * It fails closed: a missing credential is 401 `auth.missing`, a bad one 401 `auth.invalid`,
 * another principal's 403 `edge.wrong_principal`, an unknown route 404, and anything that is
 * not a clean allow from the session (a denial, a session error, a throw, a malformed
 * answer) is 403.
 */

import { ClearanceError, isError, serverEvents, verifySlice } from '../index.js';
import { bearer } from './token.js';

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
export const DEFAULT_MAX_AGE = 60;

/**
 * The principal of the slice each session was last given by `loadSlice`: null while one
 * loads or after one failed to load. A session `loadSlice` never saw (any object with
 * `check`) is not here.
 *
 * @type {WeakMap<object, string | null>}
 */
const sliceOf = new WeakMap();

/**
 * Why `session` cannot serve `principal`, or null: its last slice, loaded by `loadSlice`,
 * is another principal's, or did not load.
 *
 * @param {object} session
 * @param {string} principal
 * @returns {ErrorData | null}
 */
function sliceMismatch(session, principal) {
  const loaded = sliceOf.get(session);
  if (loaded === undefined || loaded === principal) return null;
  if (loaded === null) {
    return errorData('slice.not_loaded', 'the session\'s last slice did not load', 'load the slice of the principal this gate serves again (loadSlice)');
  }
  return errorData('slice.wrong_principal', `the session holds the slice of \`${loaded}\`, not of \`${principal}\``, 'load the slice of the principal this gate serves (loadSlice with its `principal`)');
}

/**
 * An error as data, like the session's: `{code, message, help}`.
 *
 * @param {string} code
 * @param {string} message
 * @param {string} [help]
 * @returns {ErrorData}
 */
function errorData(code, message, help = '') {
  return { code, message, help };
}

/**
 * A JSON response.
 *
 * @param {number} status
 * @param {unknown} body
 * @param {{[name: string]: string}} [headers]
 */
function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

/**
 * A refusal: `{allowed: false, reasons, error?}`, never cached.
 *
 * @param {number} status
 * @param {string[]} reasons
 * @param {unknown} [error] the handler's error, or the session's as it gave it
 */
function refuse(status, reasons, error) {
  /** @type {{allowed: false, reasons: string[], error?: unknown}} */
  const body = { allowed: false, reasons };
  if (error) body.error = error;
  return json(status, body, { 'cache-control': 'no-store' });
}

/**
 * Splits a path into its segments (no empty ones, so `/a//b/` is `a`, `b`).
 *
 * @param {string} path
 */
function segments(path) {
  return path.split('/').filter((s) => s !== '');
}

/**
 * Compiles a route; throws a TypeError on a malformed one (a setup error, not a request).
 *
 * @param {Route} route
 * @param {number} i
 * @returns {CompiledRoute}
 */
function compileRoute(route, i) {
  if (route === null || typeof route !== 'object') throw new TypeError(`routes[${i}] must be an object`);
  const { method, pattern, action, resource } = route;
  if (typeof method !== 'string' || method === '') throw new TypeError(`routes[${i}].method must be a method name`);
  if (typeof pattern !== 'string' || !pattern.startsWith('/')) throw new TypeError(`routes[${i}].pattern must be a path starting with "/"`);
  if (typeof action !== 'string' || action === '') throw new TypeError(`routes[${i}].action must be an action name`);
  if (typeof resource !== 'function') throw new TypeError(`routes[${i}].resource must be a function of the params`);
  const parts = segments(pattern).map((s) => (s.startsWith(':') ? { param: s.slice(1) } : { literal: s }));
  for (const p of parts) {
    if (p.param === '') throw new TypeError(`routes[${i}].pattern has an unnamed parameter`);
  }
  return { method: method.toUpperCase(), parts, action, resource };
}

/**
 * The params of `path` under a compiled route, or null if it does not match.
 *
 * @param {CompiledRoute} route
 * @param {string} method
 * @param {string[]} pathParts
 * @returns {Params | null}
 */
function matchRoute(route, method, pathParts) {
  if (route.method !== method || route.parts.length !== pathParts.length) return null;
  /** @type {Params} */
  const params = Object.create(null);
  for (let i = 0; i < route.parts.length; i++) {
    const part = route.parts[i];
    const seg = pathParts[i];
    if ('literal' in part) {
      if (part.literal !== seg) return null;
      continue;
    }
    let value;
    try {
      value = decodeURIComponent(seg);
    } catch {
      return null;
    }
    params[part.param] = value;
  }
  return params;
}

/**
 * A time (RFC 3339 text or seconds since the epoch) in milliseconds, or NaN.
 *
 * @param {unknown} time
 */
function millis(time) {
  if (typeof time === 'number') return time * 1000;
  if (typeof time === 'bigint') return Number(time) * 1000;
  if (typeof time === 'string') return Date.parse(time);
  return NaN;
}

/**
 * The `max-age` of an allow: the whole seconds from `now` until `validUntil`, at least 0;
 * `fallback` when the decision has no `valid_until` or a time does not parse.
 *
 * @param {Time | bigint | null | undefined} validUntil
 * @param {Time | bigint} now
 * @param {number} [fallback]
 * @returns {number}
 */
export function maxAge(validUntil, now, fallback = DEFAULT_MAX_AGE) {
  if (validUntil === undefined || validUntil === null) return fallback;
  const until = millis(validUntil);
  const at = millis(now);
  if (!Number.isFinite(until) || !Number.isFinite(at)) return 0;
  return Math.max(0, Math.floor((until - at) / 1000));
}

/**
 * Whether a session answer is a clean allow (anything else is a deny).
 *
 * @param {unknown} decision
 * @returns {decision is DecisionView}
 */
function isAllow(decision) {
  return decision !== null && typeof decision === 'object' && 'allowed' in decision && decision.allowed === true
    && !('error' in decision && decision.error) && 'reasons' in decision && Array.isArray(decision.reasons);
}

/**
 * The reason codes of a session answer, whatever its shape.
 *
 * @param {unknown} decision
 * @returns {string[]}
 */
function reasonCodes(decision) {
  if (decision === null || typeof decision !== 'object' || !('reasons' in decision) || !Array.isArray(decision.reasons)) return [];
  return decision.reasons.map((r) => (r && typeof r.code === 'string' ? r.code : 'unknown'));
}

/**
 * The default upstream: the decision itself, as a 200.
 *
 * @type {Upstream}
 */
function decisionUpstream(_request, { action, resource, decision }) {
  return json(200, { allowed: true, action, resource, valid_until: decision.valid_until ?? null });
}

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
export function createHandler({
  session,
  principal: served,
  tokens,
  now = () => new Date().toISOString(),
  routes,
  upstream = decisionUpstream,
  defaultMaxAge = DEFAULT_MAX_AGE,
  // No options at all: the checks below throw their TypeError.
} = /** @type {HandlerOptions} */ ({})) {
  if (session === null || typeof session !== 'object' || typeof session.check !== 'function') {
    throw new TypeError('createHandler needs a session with a check method');
  }
  if (tokens === null || typeof tokens !== 'object' || typeof tokens.verify !== 'function') {
    throw new TypeError('createHandler needs tokens: a verifier of user tokens (createTokenVerifier)');
  }
  if (!Array.isArray(routes)) throw new TypeError('createHandler needs routes: [{method, pattern, action, resource}]');
  if (typeof upstream !== 'function') throw new TypeError('upstream must be a function of the request');
  if (typeof now !== 'function') throw new TypeError('now must be a function giving the time');
  if (typeof served !== 'string' || !/^[^:]+:.+$/s.test(served)) {
    throw new ClearanceError(errorData(
      'edge.no_principal',
      'createHandler needs principal: the principal (`type:id`) whose slice the session holds',
      'pass the `principal` the slice was loaded for; a handler serves that principal alone',
    ));
  }
  const mismatch = sliceMismatch(session, served);
  if (mismatch !== null) throw new ClearanceError(mismatch);
  const compiled = routes.map(compileRoute);

  return async function fetch(request) {
    let url;
    try {
      url = new URL(request.url);
    } catch {
      return refuse(400, [], errorData('request.invalid', 'the request URL does not parse'));
    }
    const method = String(request.method || 'GET').toUpperCase();
    const pathParts = segments(url.pathname);
    /** @type {{route: CompiledRoute, params: Params} | null} */
    let match = null;
    for (const r of compiled) {
      const params = matchRoute(r, method, pathParts);
      if (params !== null) {
        match = { route: r, params };
        break;
      }
    }
    if (match === null) {
      return refuse(404, [], errorData('route.unknown', `no route for ${method} ${url.pathname}`, 'see the routes the handler was made with'));
    }
    const { route, params } = match;

    const credential = bearer(request.headers.get('authorization'));
    if ('error' in credential) return refuse(401, [], credential.error);
    /** @type {Proof} */
    let proof;
    try {
      proof = await tokens.verify(credential.credential);
    } catch (e) {
      proof = { error: errorData('auth.invalid', `the token could not be checked: ${thrownText(e)}`, 'send a user token from the configured issuer') };
    }
    if ('error' in proof) return refuse(401, [], proof.error);
    const { principal } = proof;
    // The slice decides only for its own principal: another's is refused, never decided.
    if (principal !== served) {
      return refuse(403, [], errorData(
        'edge.wrong_principal',
        `the token is for \`${principal}\`; this gate decides only for the principal whose slice it holds`,
        'send the request to the gate of this principal (one loaded with its own slice)',
      ));
    }
    const stale = sliceMismatch(session, served);
    if (stale !== null) return refuse(403, [], stale);

    // Everything from here on fails closed: no path to an allow but a clean session allow.
    let resource;
    let at;
    let decision;
    try {
      resource = route.resource(params);
      if (typeof resource !== 'string' || resource === '') {
        return refuse(403, [], errorData('edge.resource', 'the route gave no resource', 'a route\'s resource must give `type:id`'));
      }
      at = now();
      decision = session.check({ principal, action: route.action, resource, now: at });
    } catch (e) {
      // A session's failure keeps its code (`request.malformed`, `session.not_loaded`, ...).
      const failure = /** @type {{code?: unknown, help?: unknown}} */ (e);
      if (e instanceof Error && typeof failure.code === 'string') {
        return refuse(403, [], errorData(failure.code, e.message, typeof failure.help === 'string' ? failure.help : ''));
      }
      return refuse(403, [], errorData('edge.error', `the check failed: ${thrownText(e)}`, 'the request is denied; check the session and the routes'));
    }
    if (!isAllow(decision)) {
      const error = decision && typeof decision === 'object' && 'error' in decision && decision.error ? decision.error : undefined;
      const reasons = reasonCodes(decision);
      if (!error && reasons.length === 0 && !(decision && typeof decision === 'object' && 'allowed' in decision && decision.allowed === false)) {
        return refuse(403, [], errorData('edge.malformed', 'the session gave no decision', 'the request is denied; check the session'));
      }
      return refuse(403, reasons, error);
    }

    let response;
    try {
      response = await upstream(request, { principal, action: route.action, resource, params: { ...params }, decision });
    } catch (e) {
      return json(502, { error: errorData('edge.upstream', `the upstream failed: ${thrownText(e)}`) }, { 'cache-control': 'no-store' });
    }
    if (!(response instanceof Response)) {
      return json(502, { error: errorData('edge.upstream', 'the upstream gave no Response') }, { 'cache-control': 'no-store' });
    }
    // A copy, since a fetched response's headers may be immutable.
    const out = new Response(response.body, response);
    out.headers.set('cache-control', `private, max-age=${maxAge(decision.valid_until, at, defaultMaxAge)}`);
    out.headers.append('vary', 'authorization');
    return out;
  };
}

/**
 * What was thrown, as text: its `message` if it has a truthy one, else the value itself.
 *
 * @param {unknown} e
 */
function thrownText(e) {
  return e && (typeof e === 'object' || typeof e === 'function') && 'message' in e && e.message ? e.message : String(e);
}

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
export async function loadSlice(session, signed, options) {
  const slice = await verifySlice(signed, options);
  if (isError(slice)) return slice;
  // Until it has loaded, the session serves no handler.
  sliceOf.set(session, null);
  try {
    const loaded = loadVerified(session, slice);
    if (!isError(loaded)) sliceOf.set(session, slice.principal);
    return loaded;
  } catch (e) {
    if (e instanceof ClearanceError) return { allowed: false, error: e.toJSON() };
    throw e;
  }
}

/**
 * Loads a verified slice into `session`; the session's failures are thrown.
 *
 * @param {Session} session
 * @param {Slice} slice
 * @returns {Info | Denial}
 */
function loadVerified(session, slice) {
  const policy = session.loadPolicy(slice.policy);
  if (policy.policy_hash !== slice.policy_hash) {
    return {
      allowed: false,
      error: errorData('slice.policy_mismatch', `the policy compiled to ${policy.policy_hash}, the slice says ${slice.policy_hash}`, 'the module and the server differ; use the module of the server\'s version'),
    };
  }
  session.loadFacts(slice.facts);
  return session.info();
}

/**
 * Whether `session` applied `deltas`: false when it refused them, as a denial or a thrown
 * error.
 *
 * @param {{applyDeltas(deltas: object[]): unknown}} session
 * @param {object[]} deltas
 */
function applied(session, deltas) {
  try {
    return !isError(session.applyDeltas(deltas));
  } catch {
    return false;
  }
}

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
export async function followChanges(session, { url, token, revision, refetch, signal, fetch: get = globalThis.fetch }) {
  let at = revision;
  for (;;) {
    /** @type {Response} */
    let response;
    try {
      response = await get(`${url}/v1/changes?since=${at}`, { headers: { authorization: `Bearer ${token}` }, ...(signal ? { signal } : {}) });
    } catch {
      return at;
    }
    if (!response.ok || response.body === null) return at;
    let lost = false;
    try {
      for await (const { event, data } of serverEvents(response.body)) {
        if (signal?.aborted) return at;
        if (event === 'reset') {
          lost = true;
          break;
        }
        // The feed ended for the principal (its key revoked, its gates failed).
        if (event === 'error') return at;
        if (event !== 'change' || data === null || typeof data !== 'object') continue;
        const change = /** @type {{revision?: unknown, deltas?: unknown}} */ (data);
        if (typeof change.revision !== 'number' || change.revision <= at) continue;
        if (Array.isArray(change.deltas) && applied(session, change.deltas)) {
          at = change.revision;
          continue;
        }
        lost = true;
        break;
      }
    } catch {
      return at;
    }
    if (!lost || signal?.aborted) return at;
    at = await refetch();
  }
}
