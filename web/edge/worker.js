/**
 * The edge gate (`handler.js`) as a worker for an edge platform built on workerd: an ES
 * module with `export default { fetch(request, env) }` that imports the module's bytes as a
 * compiled module (`../pkg/clearance_bg.wasm`) and decides every request with it alone.
 *
 * Its settings are the worker's bindings, all text, all set by the operator (never by a
 * caller):
 *
 * - `SLICE`: a signed slice, the body of `GET /v1/slice/{principal}`; `SLICE_KEYS`: the
 *   JWKS of `GET /v1/slice-keys`; `SLICE_PRINCIPAL`: the principal it must be for, and the
 *   only one the worker serves (another principal's token is 403 `edge.wrong_principal`).
 * - `TOKEN_JWKS`, `TOKEN_ISSUER`, `TOKEN_AUDIENCE`: the verifier of user tokens
 *   (`token.js`); `TOKEN_PRINCIPAL_TYPE` (default `user`; `-` for tokens whose subject is a
 *   whole `type:id`).
 * - `ROUTES`: JSON `[{method, pattern, action, resource}]`, `resource` a template such as
 *   `event:{id}` filled from the pattern's parameters (`/events/:id`).
 * - `MODULE_SHA256`: the hex SHA-256 of the module's bytes, reported as the session's.
 * - `DECISION_TIME` (for tests only): a fixed time of every decision instead of the clock.
 *
 * The gate is made on the first request and kept for the worker's life. If it cannot be
 * made (a setting missing or malformed, a slice that does not verify or load), every
 * request is a 503 `edge.unavailable` with the reason, and nothing is allowed.
 */

import * as glue from '../pkg/clearance.js';
import wasm from '../pkg/clearance_bg.wasm';
import { fromGlue, isError } from '../index.js';
import { createHandler, loadSlice } from './handler.js';
import { createTokenVerifier } from './token.js';

/** @import { Route } from './handler.js' */

/**
 * The worker's bindings.
 *
 * @typedef {{[name: string]: unknown}} Env
 */

/** @type {Promise<(request: Request) => Promise<Response>> | null} */
let gate = null;

/**
 * A required text binding, or a thrown error naming it.
 *
 * @param {Env} env
 * @param {string} name
 */
function setting(env, name) {
  const v = env[name];
  if (typeof v !== 'string' || v === '') throw new Error(`the binding \`${name}\` is not set`);
  return v;
}

/**
 * A JSON binding, parsed, or a thrown error naming it.
 *
 * @param {Env} env
 * @param {string} name
 */
function jsonSetting(env, name) {
  try {
    return JSON.parse(setting(env, name));
  } catch (e) {
    throw new Error(`the binding \`${name}\` is not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * The routes of `ROUTES`, each resource template made a function of the parameters.
 *
 * @param {unknown} list
 * @returns {Route[]}
 */
function routes(list) {
  if (!Array.isArray(list)) throw new Error('the binding `ROUTES` is not a list of routes');
  return list.map((r, i) => {
    const { method, pattern, action, resource } = /** @type {{[field: string]: unknown}} */ (r ?? {});
    if (typeof method !== 'string' || typeof pattern !== 'string' || typeof action !== 'string' || typeof resource !== 'string') {
      throw new Error(`route ${i} of \`ROUTES\` needs the strings method, pattern, action and resource`);
    }
    // A parameter the pattern does not have leaves the resource unfilled: the gate then
    // denies with `entity.unknown`, never allows.
    return { method, pattern, action, resource: (params) => resource.replace(/\{(\w+)\}/g, (_, name) => params[name] ?? `{${name}}`) };
  });
}

/**
 * Makes the gate from the bindings: the module instantiated, the slice verified and
 * loaded, the token verifier made.
 *
 * @param {Env} env
 */
async function makeGate(env) {
  glue.initSync({ module: wasm });
  const module = fromGlue(glue, setting(env, 'MODULE_SHA256'));
  const session = new module.Session();
  const principal = setting(env, 'SLICE_PRINCIPAL');
  const loaded = await loadSlice(session, setting(env, 'SLICE'), { keys: jsonSetting(env, 'SLICE_KEYS'), principal });
  if (isError(loaded)) throw new Error(`the slice does not load: ${loaded.error.code}: ${loaded.error.message}`);
  const type = typeof env.TOKEN_PRINCIPAL_TYPE === 'string' ? env.TOKEN_PRINCIPAL_TYPE : 'user';
  const tokens = await createTokenVerifier({
    jwks: jsonSetting(env, 'TOKEN_JWKS'),
    issuer: setting(env, 'TOKEN_ISSUER'),
    audience: setting(env, 'TOKEN_AUDIENCE'),
    principalType: type === '-' ? null : type,
  });
  const fixed = typeof env.DECISION_TIME === 'string' && env.DECISION_TIME !== '' ? env.DECISION_TIME : null;
  return createHandler({
    session,
    principal,
    tokens,
    routes: routes(jsonSetting(env, 'ROUTES')),
    ...(fixed === null ? {} : { now: () => fixed }),
  });
}

export default {
  /**
   * @param {Request} request
   * @param {Env} env
   * @returns {Promise<Response>}
   */
  async fetch(request, env) {
    gate ??= makeGate(env);
    let handle;
    try {
      handle = await gate;
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      return Response.json(
        { allowed: false, reasons: [], error: { code: 'edge.unavailable', message, help: 'fix the worker\'s bindings and deploy it again' } },
        { status: 503, headers: { 'cache-control': 'no-store' } },
      );
    }
    return handle(request);
  },
};
