/**
 * @module @clearance/web
 *
 * The JavaScript face of Clearance: loads the one WebAssembly module (the bytes of
 * `pkg/clearance_bg.wasm`, reporting their SHA-256) and wraps the wasm-bindgen glue in an
 * `Session` that takes and gives plain objects.
 *
 * A session method gives its value, or throws a `ClearanceError` (an `Error` with `code`,
 * `message` and `help`) for what could not be decided: bad input, nothing loaded, a trap.
 * A decision that denies is a value (`{allowed: false, reasons}`), never an error. A trap
 * inside the module (a `WebAssembly.RuntimeError`) throws the code `wasm.trap`, and it
 * leaves the module instance unusable: every later call of every session on that instance
 * throws `instance.poisoned`. Load the module again for a fresh instance; each load is an
 * instance of its own, which lives as long as the process, so load once and share. The
 * signed-slice helpers (`verifySlice`) give denials as values, as their callers branch on
 * them.
 *
 * The package is this file, which loads the module, and its modules under `lib/`:
 * `session.js` (`Session`, `fromGlue` and the state of an instance), `answers.js` (the
 * builder of the check path's answers), `values.js` (arguments checked), `errors.js`,
 * `wire.js` (the binary batch format), `slices.js` (signed slices) and `feed.js` (the
 * change feed's events). No module imports anything at the top level but its siblings, so
 * the package runs unchanged in browsers, Node and workerd. Its public types are those of
 * `index.d.ts`, which the JSDoc imports.
 */

/** @import { ClearanceModule } from './index.js' */

import { fromGlue } from './lib/session.js';

export { Answers } from './lib/answers.js';
export { ClearanceError, isError } from './lib/errors.js';
export { serverEvents } from './lib/feed.js';
export { Session, fromGlue } from './lib/session.js';
export { SLICE_CONTEXT, verifySlice } from './lib/slices.js';
export { CODES, PAGE, QUERY_LEN, decodeDecisions, decodeQueries, encodeQueries } from './lib/wire.js';

/**
 * The namespace of the glue (`pkg/clearance.js`, written by wasm-bindgen).
 *
 * @typedef {typeof import('./pkg/clearance.js')} Glue
 */

// The glue and the module, beside this file: the package's root.
const GLUE_URL = './pkg/clearance.js';
const WASM_URL = './pkg/clearance_bg.wasm';

/** How many glue instances have been imported; each import gets its own module record. */
let glueImports = 0;

/**
 * Imports a fresh copy of the glue. The glue keeps its instance in module-level state and
 * initialises once, so a new instance (after a trap, or for isolation) needs a new module
 * record, which a distinct URL gives.
 *
 * @returns {Promise<Glue>}
 */
async function freshGlue() {
  glueImports += 1;
  return import(new URL(`${GLUE_URL}?instance=${glueImports}`, import.meta.url).href);
}

/**
 * Lower-case hex of bytes.
 *
 * @param {Uint8Array} bytes
 */
function hex(bytes) {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}

/**
 * Loads the module in Node: reads the wasm bytes (by default `pkg/clearance_bg.wasm` next
 * to this file), hashes them with node:crypto and instantiates exactly those bytes in a
 * fresh glue instance. Rejects if the file cannot be read or is not a valid module.
 *
 * @param {string | URL} [wasmPath] the module's path or file URL
 * @returns {Promise<ClearanceModule>}
 */
export async function loadNode(wasmPath) {
  const [{ readFile }, { createHash }] = await Promise.all([import('node:fs/promises'), import('node:crypto')]);
  const bytes = await readFile(wasmPath ?? new URL(WASM_URL, import.meta.url));
  const moduleHash = createHash('sha256').update(bytes).digest('hex');
  const glue = await freshGlue();
  glue.initSync({ module: bytes });
  return fromGlue(glue, moduleHash);
}

/**
 * Loads the module in a browser (or any runtime with fetch and WebCrypto): fetches the
 * bytes (by default `pkg/clearance_bg.wasm` next to this file), hashes them with
 * `crypto.subtle.digest`, compiles exactly those bytes and instantiates them in a fresh
 * glue instance. Compiling and instantiating are asynchronous, as browsers require for
 * modules of this size on the main thread. Rejects if the fetch fails.
 *
 * @param {string | URL | globalThis.Request} [url] where to fetch the module
 * @returns {Promise<ClearanceModule>}
 */
export async function loadBrowser(url) {
  const response = await fetch(url ?? new URL(WASM_URL, import.meta.url));
  if (!response.ok) {
    throw new Error(`clearance: fetching the module failed: ${response.status} ${response.statusText} (${response.url})`);
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  const moduleHash = hex(new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes)));
  const compiled = await WebAssembly.compile(bytes);
  const glue = await freshGlue();
  await glue.default({ module_or_path: compiled });
  return fromGlue(glue, moduleHash);
}
