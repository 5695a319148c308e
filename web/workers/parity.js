/**
 * The parity suite's worker in workerd (`test/parity-workerd.mjs` drives it): the module's
 * bytes, given by the runner as a compiled module, decide the jobs' binary queries as in
 * every other runtime. Routes, one job at a time: `PUT /snapshot` (the job's snapshot),
 * `POST /changes` (a JSON list of delta lists, applied in place in order), `POST /check`
 * (queries in, the raw decisions out). An error is a 422 with the session's denial.
 */

import * as glue from '../pkg/clearance.js';
import wasm from '../pkg/clearance_bg.wasm';
import { fromGlue, isError } from '../index.js';

/** @import { ClearanceModule, Session } from '../index.js' */

/** @type {ClearanceModule | null} */
let module = null;
/** @type {Session | null} */
let session = null;

/**
 * @param {unknown} answer
 * @returns {Response | null}
 */
function refused(answer) {
  return isError(answer) ? Response.json(answer, { status: 422 }) : null;
}

export default {
  /**
   * @param {Request} request
   * @param {{MODULE_SHA256: string}} env
   */
  async fetch(request, env) {
    if (module === null) {
      glue.initSync({ module: wasm });
      module = fromGlue(glue, env.MODULE_SHA256);
    }
    const { pathname } = new URL(request.url);
    if (pathname === '/snapshot') {
      session?.free();
      session = new module.Session();
      const loaded = session.loadSnapshot(new Uint8Array(await request.arrayBuffer()));
      return refused(loaded) ?? Response.json(loaded);
    }
    if (session === null) return Response.json({ allowed: false, error: { code: 'runner.order', message: 'no snapshot yet', help: '' } }, { status: 409 });
    if (pathname === '/changes') {
      for (const deltas of /** @type {object[][]} */ (await request.json())) {
        const no = refused(session.applyDeltas(deltas));
        if (no !== null) return no;
      }
      return Response.json({ applied: true });
    }
    if (pathname === '/check') {
      const raw = session.checkIdsRaw(new Uint8Array(await request.arrayBuffer()));
      if (isError(raw)) return Response.json(raw, { status: 422 });
      // The module's answers are copies in the worker's own memory (no shared memory).
      return new Response(/** @type {Uint8Array<ArrayBuffer>} */ (raw));
    }
    return new Response('not found', { status: 404 });
  },
};
