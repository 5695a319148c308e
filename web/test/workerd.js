/**
 * Workers in workerd, the runtime of a real edge platform, through Miniflare (from npm; the
 * workerd binary ships in its package). A worker gets the package's modules by name
 * (`index.js`, `lib/*.js`, `pkg/clearance.js`, `edge/*.js`, `jose`) and the module's bytes as a
 * compiled module, so it imports them as a deployed worker does. Requests reach it with
 * `dispatchFetch`, over loopback.
 *
 * The compatibility date is an older one on purpose: a worker at such a date has no
 * `FinalizationRegistry`, and the package must run there too.
 */

import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Miniflare } from 'miniflare';

const WEB = fileURLToPath(new URL('../', import.meta.url));
const JOSE = fileURLToPath(new URL('../node_modules/jose/dist/webapi/', import.meta.url));

/** The compatibility date of the test workers. */
export const COMPATIBILITY_DATE = '2024-09-23';

/**
 * Every `.js` file under `dir`, as paths.
 *
 * @param {string} dir
 * @returns {string[]}
 */
function jsFiles(dir) {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js')).map((f) => `${dir}${f}`);
}

/**
 * Starts a worker whose entry is `entry` (a path under `web/`), with the package's modules,
 * the module's bytes (`wasm`, default `pkg/clearance_bg.wasm`) and `bindings` (strings).
 * `env.MODULE_SHA256` is the SHA-256 of the bytes given. Dispose of it when done.
 *
 * @param {string} entry e.g. `edge/worker.js`
 * @param {{bindings?: {[name: string]: string}, wasm?: Uint8Array}} [options]
 * @returns {{mf: Miniflare, moduleHash: string}}
 */
export function startWorker(entry, { bindings = {}, wasm } = {}) {
  const bytes = wasm ?? readFileSync(`${WEB}pkg/clearance_bg.wasm`);
  const moduleHash = createHash('sha256').update(bytes).digest('hex');
  /** @type {{type: 'ESModule' | 'CompiledWasm', path: string, contents?: string | Uint8Array}[]} */
  const modules = [
    { type: 'ESModule', path: `${WEB}${entry}` },
    { type: 'ESModule', path: `${WEB}index.js` },
    ...jsFiles(`${WEB}lib/`).map((path) => ({ type: /** @type {const} */ ('ESModule'), path })),
    { type: 'ESModule', path: `${WEB}pkg/clearance.js` },
    { type: 'CompiledWasm', path: `${WEB}pkg/clearance_bg.wasm`, contents: bytes },
  ];
  if (entry.startsWith('edge/')) {
    modules.push({ type: 'ESModule', path: `${WEB}edge/handler.js` }, { type: 'ESModule', path: `${WEB}edge/token.js` });
    // `import ... from 'jose'` in `edge/token.js`: workerd looks a bare name up beside
    // the module importing it, so `edge/jose` is jose's build for web runtimes (what a
    // bundler resolves for a deployment).
    modules.push({ type: 'ESModule', path: `${WEB}edge/jose`, contents: "export * from '../node_modules/jose/dist/webapi/index.js';\n" });
    for (const f of jsFiles(JOSE)) modules.push({ type: 'ESModule', path: f });
  }
  const mf = new Miniflare({
    modulesRoot: WEB,
    modules,
    compatibilityDate: COMPATIBILITY_DATE,
    bindings: { ...bindings, MODULE_SHA256: moduleHash },
  });
  return { mf, moduleHash };
}
