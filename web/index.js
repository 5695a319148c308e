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
 * This file imports nothing at the top level, so it runs unchanged in browsers and Node.
 * Its public types are those of `index.d.ts`, which the JSDoc below imports.
 */

/**
 * @import { AccessMatrix, Bytes, ClearanceModule, DecisionView, Denial, ErrorData, Explanation, Info, Outline, Query, ReasonView, Request, Resolved, ServerEvent, Slice, SliceOptions, Source, Time, WireDecision, WriteAnswer } from './index.js'
 */

/**
 * The namespace of the glue (`pkg/clearance.js`, written by wasm-bindgen).
 *
 * @typedef {typeof import('./pkg/clearance.js')} Glue
 */

/**
 * One session object of the glue.
 *
 * @typedef {import('./pkg/clearance.js').Clearance} RawSession
 */

/**
 * The public face of a session, as `index.d.ts` declares it; `Session` implements it.
 *
 * @typedef {import('./index.js').Session} SessionApi
 */

/**
 * The state of one module instance, shared by its sessions.
 *
 * @typedef {object} InstanceState
 * @property {Glue} glue the initialised glue
 * @property {string} moduleHash the hex SHA-256 of the module's bytes
 * @property {ErrorData | null} poison the error that made the instance unusable, or null
 */

const GLUE_URL = './pkg/clearance.js';
const WASM_URL = './pkg/clearance_bg.wasm';

/** The size of an encoded query (`clearance_core::wire::QUERY_LEN`). */
export const QUERY_LEN = 24;

/** The bit that marks a page in an encoded resource (`clearance_core::wire::PAGE`). */
export const PAGE = 0x80000000;

/**
 * The stable reason codes, indexed by their byte on the wire (`Code::ALL` and
 * `Code::as_str` in clearance-core). On the wire a failed gate is `gate`; JSON answers
 * name it `gate.<name>`.
 */
export const CODES = Object.freeze([
  'granted',
  'request.invalid',
  'entity.unknown',
  'action.unknown',
  'principal.invalid',
  'target.invalid',
  'gate',
  'account.mismatch',
  'relation.missing',
  'relation.expired',
  'condition.failed',
  'exclusion.matched',
  'role.none_assigned',
  'role.missing_permission',
  'feature.disabled',
  'setup_mode.off',
  'authorization.missing',
  'authorization.expired',
  'authorization.not_yet_valid',
  'authorization.revoked',
  'authorization.out_of_scope',
  'evaluation.too_deep',
  'duty.conflict',
]);

/**
 * What the module's class builds its answers with: plain objects made here, by object
 * literals, one call from the module each (a property set from the module is a call of its
 * own, and most of a check's time was such calls). `fill` puts the fields of the request
 * being answered, which `ask` gave before the call, into a message the module keeps as a
 * template (`\0p` principal, `\0a` action, `\0r` resource, `\0t` target). For code
 * that drives the glue directly: `new glue.Clearance(new Answers())`, and `ask` before
 * each `checkValue` or `allowedActionsValue`.
 */
export class Answers {
  principal = '';
  action = '';
  resource = '';
  /** @type {string | null | undefined} */
  target = null;
  /** The templates seen, split at their markers; as many as the policy has. */
  /** @type {Map<string, string[]>} */
  #templates = new Map();

  /**
   * The request the next answer is for.
   *
   * @param {string} principal
   * @param {string} action
   * @param {string} resource
   * @param {string | null | undefined} target
   */
  ask(principal, action, resource, target) {
    this.principal = principal;
    this.action = action;
    this.resource = resource;
    this.target = target;
  }

  /**
   * @param {boolean} allowed
   * @param {ReasonView[]} reasons
   * @param {number} revision
   * @param {string} policy_hash
   * @param {string | undefined} valid_until
   * @returns {DecisionView}
   */
  decision(allowed, reasons, revision, policy_hash, valid_until) {
    return valid_until === undefined
      ? { allowed, reasons, revision, policy_hash }
      : { allowed, reasons, revision, policy_hash, valid_until };
  }

  /**
   * @param {boolean} allowed
   * @param {ReasonView} reason
   * @param {number} revision
   * @param {string} policy_hash
   * @param {string | undefined} valid_until
   * @returns {DecisionView}
   */
  decision1(allowed, reason, revision, policy_hash, valid_until) {
    return valid_until === undefined
      ? { allowed, reasons: [reason], revision, policy_hash }
      : { allowed, reasons: [reason], revision, policy_hash, valid_until };
  }

  /**
   * @param {string} code
   * @param {string} rule
   * @param {string} message
   * @param {string | undefined} at
   * @returns {ReasonView}
   */
  reason(code, rule, message, at) {
    return at === undefined ? { code, rule, message } : { code, rule, message, at };
  }

  /**
   * @param {string} template
   * @returns {string}
   */
  fill(template) {
    let parts = this.#templates.get(template);
    if (parts === undefined) {
      // Split once per template: its text, then per marker the field's letter and the
      // text after it. A regular expression per call was a tenth of a check.
      parts = template.split('\0');
      this.#templates.set(template, parts);
    }
    let out = parts[0];
    for (let i = 1; i < parts.length; i += 1) {
      const part = parts[i];
      const f = part[0];
      if (f === 'p') out += this.principal;
      else if (f === 'a') out += this.action;
      else if (f === 'r') out += this.resource;
      else if (f === 't') out += this.target ?? '';
      else out += '\0';
      out += f === 'p' || f === 'a' || f === 'r' || f === 't' ? part.slice(1) : part;
    }
    return out;
  }

  /**
   * @param {string[]} actions
   * @param {DecisionView | undefined} denied
   * @returns {{actions: string[], denied?: DecisionView}}
   */
  actions(actions, denied) {
    return denied === undefined ? { actions } : { actions, denied };
  }
}

const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

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

/**
 * The internal state of each module instance, keyed by its `ClearanceModule`.
 *
 * @type {WeakMap<ClearanceModule, InstanceState>}
 */
const instances = new WeakMap();

/**
 * Lifetimes of the glue's objects. The glue frees an object from a FinalizationRegistry
 * of its own when the object is collected; on a poisoned instance that call traps again,
 * outside any caller, and takes the process down. So every glue object stays reachable:
 * from its Session while it lives, from `reclaim` (which frees it once the Session is
 * collected, through the glue's `free`, which also unregisters it from the glue's
 * registry), and, once its instance is poisoned, from `quarantine` for good. The
 * instance's memory lives as long as the process anyway (an imported ES module is never
 * unloaded).
 *
 * @type {Set<RawSession>}
 */
const quarantine = new Set();
/**
 * Null where the runtime has no `FinalizationRegistry` (an edge runtime at an older
 * compatibility date): there, a session's memory in the module is freed by `free()` only.
 *
 * @type {FinalizationRegistry<{raw: RawSession, state: InstanceState}> | null}
 */
const reclaim = typeof FinalizationRegistry === 'function'
  ? new FinalizationRegistry(({ raw, state }) => release(raw, state))
  : null;

/**
 * Frees a glue object, or quarantines it if its instance is unusable.
 *
 * @param {RawSession} raw
 * @param {InstanceState} state
 */
function release(raw, state) {
  if (state.poison === null) {
    try {
      raw.free();
      return;
    } catch (e) {
      poisonInstance(state, e);
    }
  }
  quarantine.add(raw);
}

/**
 * Marks an instance unusable after an exception inside the module; gives the denial. A
 * `WebAssembly.RuntimeError`, or the host's stack overflow while the module runs, is a
 * trap; anything else is `wasm.error`. Either leaves the instance in an unknown state.
 *
 * @param {InstanceState} state
 * @param {unknown} e what was thrown
 * @returns {Denial}
 */
function poisonInstance(state, e) {
  const trap = e instanceof WebAssembly.RuntimeError || (e instanceof RangeError && /call stack/i.test(e.message));
  const message = e instanceof Error ? e.message : String(e);
  const error = trap
    ? deny('wasm.trap', `the module trapped: ${message}`, 'the module instance is unusable now; load the module again')
    : deny('wasm.error', `the module failed: ${message}`, 'the module instance is unusable now; load the module again');
  if (state.poison === null) state.poison = error.error;
  return error;
}

/**
 * Wraps a glue namespace that is already initialised (`initSync` or `init` done), for
 * callers that instantiate the module themselves. `moduleHash` is reported as given: the
 * caller vouches that it is the SHA-256 of the bytes instantiated.
 *
 * @param {object} glue the namespace of `pkg/clearance.js`, initialised
 * @param {string} moduleHash the hex SHA-256 of the module's bytes
 * @returns {ClearanceModule}
 */
export function fromGlue(glue, moduleHash) {
  /** @type {InstanceState} */
  const state = { glue: /** @type {Glue} */ (glue), moduleHash, poison: null };
  /** @type {ClearanceModule} */
  const module = {
    moduleHash,
    /** The error that made this instance unusable, or null. */
    get poisoned() {
      return state.poison;
    },
    /** A session bound to this module instance: `new module.Session()`. */
    Session: class extends Session {
      constructor() {
        super(module);
      }
    },
  };
  instances.set(module, state);
  return Object.freeze(module);
}

/**
 * A denial: `{allowed: false, error: {code, message, help}}`.
 *
 * @param {string} code
 * @param {string} message
 * @param {string} [help]
 * @returns {Denial}
 */
function deny(code, message, help = '') {
  return { allowed: false, error: { code, message, help } };
}

/**
 * A failure of a session's method: bad input, nothing loaded, a session freed, a trap in
 * the module. An `Error` whose `code` is the stable code (`request.malformed`,
 * `session.not_loaded`, `wasm.trap`, ...), `message` says what was wrong and where, and
 * `help` what to do. A decision that denies is an answer, not an error: only what could not
 * be decided is thrown, so no failure can pass for an allow.
 */
export class ClearanceError extends Error {
  /**
   * @param {ErrorData} error
   */
  constructor({ code, message, help }) {
    super(message);
    this.name = 'ClearanceError';
    /** The stable code. */
    this.code = code;
    /** What to do about it. */
    this.help = help;
  }

  /** The error as data: `{code, message, help}`. */
  toJSON() {
    return { code: this.code, message: this.message, help: this.help };
  }
}

/**
 * A method's answer, or its denial thrown as a `ClearanceError`.
 *
 * @template T
 * @param {T | Denial} answer
 * @returns {T}
 */
function thrown(answer) {
  if (isError(answer)) throw new ClearanceError(answer.error);
  return answer;
}

/**
 * Whether a method's answer is a denial with an error (rather than its `ok` value).
 *
 * @param {unknown} answer
 * @returns {answer is Denial}
 */
export function isError(answer) {
  return answer !== null && typeof answer === 'object' && !Array.isArray(answer) && 'allowed' in answer && answer.allowed === false && 'error' in answer && typeof answer.error === 'object' && answer.error !== null;
}

/**
 * The message of what was thrown, which may be anything: an object's `message` (an
 * Error's), else the value itself as text (`null` included).
 *
 * @param {unknown} e
 */
function thrownMessage(e) {
  if (e === null || (typeof e !== 'object' && typeof e !== 'function')) return String(e);
  return `${/** @type {{message?: unknown}} */ (e).message}`;
}

/**
 * @param {string} message
 * @param {string} [help]
 */
function malformed(message, help = '') {
  return deny('request.malformed', message, help);
}

/** @param {string} message */
function badAnswer(message) {
  return deny('wasm.bad_answer', `the module gave an answer that cannot be read: ${message}`, 'this is a bug in the module or its glue; report it');
}

/**
 * An error object from the module, kept to its three fields.
 *
 * @param {{code?: unknown, message?: unknown, help?: unknown}} e
 * @returns {ErrorData}
 */
function errorData(e) {
  return { code: String(e.code ?? ''), message: String(e.message ?? ''), help: String(e.help ?? '') };
}

/**
 * Reads a JSON answer of the module: its `ok` value, or a denial. The type of the `ok`
 * value, `T`, is the one the caller expects (from its declared return type): the module's
 * protocol fixes each call's answer, and no checker sees across the JSON.
 *
 * @template T
 * @param {string} text
 * @returns {T | Denial}
 */
function answer(text) {
  /** @type {unknown} */
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return badAnswer(`not JSON (${thrownMessage(e)})`);
  }
  if (v !== null && typeof v === 'object') {
    if ('error' in v && v.error !== null && typeof v.error === 'object') return { allowed: false, error: errorData(v.error) };
    if ('ok' in v && v.ok !== undefined && v.ok !== null) return /** @type {T} */ (v.ok);
  }
  return badAnswer('neither `ok` nor `error`');
}

/**
 * A decision answer: a decision view (an object with a boolean `allowed`) or a denial.
 *
 * @param {unknown} v
 * @returns {DecisionView | Denial}
 */
function decision(v) {
  if (isError(v)) return v;
  if (v === null || typeof v !== 'object' || !('allowed' in v) || typeof v.allowed !== 'boolean') return badAnswer('not a decision');
  // The module's answer to a check, with its boolean `allowed`: a decision view.
  return /** @type {DecisionView} */ (v);
}

/**
 * JSON text of an argument: strings pass as they are (the module reports bad JSON).
 *
 * @param {unknown} value
 * @param {string} what the argument, for the denial
 * @returns {{text: string} | {denial: Denial}}
 */
function jsonText(value, what) {
  if (typeof value === 'string') return { text: value };
  let text;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    return { denial: malformed(`${what} cannot be written as JSON: ${thrownMessage(e)}`, `pass ${what} as plain data or JSON text`) };
  }
  if (typeof text !== 'string') return { denial: malformed(`${what} is missing`, `pass ${what} as plain data or JSON text`) };
  return { text };
}

/**
 * Checks that every named argument is a string; the first that is not gives a denial.
 *
 * @param {{[name: string]: unknown}} args
 * @returns {Denial | null}
 */
function strings(args) {
  for (const [name, value] of Object.entries(args)) {
    if (typeof value !== 'string') return malformed(`\`${name}\` must be a string, got ${describe(value)}`);
  }
  return null;
}

/** The most requests one batch may carry (`clearance_core::protocol::MAX_BATCH`). */
const MAX_BATCH = 1 << 20;

const TIME_HELP = 'pass a Date, whole seconds since the epoch, or RFC 3339 text';
const REQUEST_HELP = 'a request is `{principal, action, resource, target?, now}`';
const REQUEST_FIELDS = new Set(['principal', 'action', 'resource', 'target', 'now']);

/**
 * Whether a thrown value is an error the module threw on purpose: an `Error` with a
 * string `code`, not a trap.
 *
 * @param {unknown} e
 * @returns {e is Error & {code: string, help?: unknown}}
 */
function isModuleError(e) {
  return e instanceof Error && !(e instanceof WebAssembly.RuntimeError) && typeof (/** @type {{code?: unknown}} */ (e).code) === 'string';
}

/**
 * Whether every enumerable field of `request` is a field of a request.
 *
 * @param {object} request
 */
function onlyRequestFields(request) {
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
function timeArg(now) {
  if (typeof now === 'string' || now instanceof Date) return now;
  if (typeof now === 'number') return Number.isSafeInteger(now) ? now : null;
  if (typeof now === 'bigint') return Number.isSafeInteger(Number(now)) ? Number(now) : null;
  return null;
}

/**
 * A Date's whole second since the epoch (as the module reads a Date), or null for an
 * invalid Date.
 *
 * @param {Date} date
 * @returns {number | null}
 */
function dateSeconds(date) {
  const ms = date.getTime();
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
}

/**
 * A request's fields as the value face takes them, or a denial naming what is wrong:
 * not an object, an unknown field, a field of the wrong type.
 *
 * @param {unknown} request
 * @param {string} what the argument, for the denial
 * @returns {{principal: string, action: string, resource: string, target: string | undefined, now: Date | number | string} | {denial: Denial}}
 */
function requestArgs(request, what) {
  if (request === null || typeof request !== 'object' || Array.isArray(request)) {
    return { denial: malformed(`${what} must be an object, got ${describe(request)}`, REQUEST_HELP) };
  }
  const r = /** @type {{[field: string]: unknown}} */ (request);
  for (const field of Object.keys(r)) {
    if (!REQUEST_FIELDS.has(field)) return { denial: malformed(`${what} has an unknown field \`${field}\``, REQUEST_HELP) };
  }
  const { principal, action, resource, target, now } = r;
  if (typeof principal !== 'string') return { denial: malformed(`\`principal\` must be a string, got ${describe(principal)}`, REQUEST_HELP) };
  if (typeof action !== 'string') return { denial: malformed(`\`action\` must be a string, got ${describe(action)}`, REQUEST_HELP) };
  if (typeof resource !== 'string') return { denial: malformed(`\`resource\` must be a string, got ${describe(resource)}`, REQUEST_HELP) };
  if (target !== undefined && target !== null && typeof target !== 'string') {
    return { denial: malformed(`\`target\` must be a string, got ${describe(target)}`, REQUEST_HELP) };
  }
  const t = timeArg(now);
  if (t === null) return { denial: malformed(`\`now\` must be a Date, RFC 3339 text or whole seconds, got ${describe(now)}`, TIME_HELP) };
  return { principal, action, resource, target: target ?? undefined, now: t };
}

/**
 * `now` as the text the module reads: RFC 3339, or whole seconds.
 *
 * @param {unknown} now
 * @returns {string | null}
 */
function timeText(now) {
  if (typeof now === 'string') return now;
  if (now instanceof Date) {
    const seconds = dateSeconds(now);
    return seconds === null ? null : String(seconds);
  }
  if (typeof now === 'bigint' || (typeof now === 'number' && Number.isInteger(now))) return String(now);
  return null;
}

/**
 * @param {unknown} value
 * @returns {string}
 */
function describe(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}

/**
 * Bytes as a Uint8Array over the same memory, or null if `value` is not binary.
 *
 * @param {unknown} value
 * @returns {Uint8Array | null}
 */
function asBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return null;
}

/**
 * Splits a framed answer (`0` then payload, or `1` then JSON): the payload or a denial.
 *
 * @param {unknown} framed
 * @returns {Uint8Array | Denial}
 */
function unframe(framed) {
  if (!(framed instanceof Uint8Array) || framed.length === 0) return badAnswer('an empty framed answer');
  if (framed[0] === 0) return framed.subarray(1);
  if (framed[0] === 1) {
    const v = answer(new TextDecoder().decode(framed.subarray(1)));
    return isError(v) ? v : badAnswer('a framed error without an error');
  }
  return badAnswer(`a framed answer starting with ${framed[0]}`);
}

/**
 * One session: a policy, facts or a snapshot, and the decisions made on them. Create it
 * with `new module.Session()` (or `new Session(module)`) on a module from `loadNode` or
 * `loadBrowser`. Every method gives its value or throws a `ClearanceError`.
 *
 * @implements {SessionApi}
 */
export class Session {
  /** @type {InstanceState} */
  #state;
  /** @type {RawSession | null} */
  #raw = null;
  #answers = new Answers();
  #freed = false;

  /**
   * @param {ClearanceModule} module a module from `loadNode`, `loadBrowser` or `fromGlue`
   */
  constructor(module) {
    const state = instances.get(module);
    if (state === undefined) throw new TypeError('clearance: a Session needs a module from loadNode(), loadBrowser() or fromGlue()');
    this.#state = state;
    if (state.poison === null) {
      try {
        this.#raw = new state.glue.Clearance(this.#answers);
        reclaim?.register(this, { raw: this.#raw, state }, this);
      } catch (e) {
        poisonInstance(state, e);
      }
    }
  }

  /** The hex SHA-256 of the module's bytes. */
  get moduleHash() {
    return this.#state.moduleHash;
  }

  /** Whether the session can still answer (not freed, its module instance not poisoned). */
  get usable() {
    return !this.#freed && this.#state.poison === null && this.#raw !== null;
  }

  /**
   * Runs `f` on the glue object, turning any exception into a denial.
   *
   * @template T
   * @param {(raw: RawSession) => T} f
   * @returns {T | Denial}
   */
  #run(f) {
    const poison = this.#state.poison;
    if (poison !== null) {
      return deny('instance.poisoned', `the module instance is unusable since an earlier error (${poison.code}: ${poison.message})`, 'load the module again and build a new session');
    }
    if (this.#freed || this.#raw === null) return deny('session.freed', 'the session was freed', 'build a new session');
    try {
      return f(this.#raw);
    } catch (e) {
      return this.#caught(e);
    }
  }

  /**
   * What was thrown in the module as a denial. The module throws its own errors as Error
   * objects with a code; they leave the instance as it was. Anything else is a trap or
   * worse, and poisons the instance.
   *
   * @param {unknown} e
   * @returns {Denial}
   */
  #caught(e) {
    if (isModuleError(e)) return deny(e.code, e.message, typeof e.help === 'string' ? e.help : '');
    return poisonInstance(this.#state, e);
  }

  /**
   * Runs a glue method that takes one JSON argument and answers JSON; `T` is the type of
   * its `ok` value (see `answer`).
   *
   * @template T
   * @param {'call' | 'loadPolicy' | 'loadFacts' | 'applyDeltas' | 'check' | 'checkBatch' | 'explain'} method
   * @param {unknown} value
   * @param {string} what the argument, for a denial
   * @returns {T | Denial}
   */
  #json(method, value, what) {
    const arg = jsonText(value, what);
    if ('denial' in arg) return arg.denial;
    return this.#run((raw) => answer(raw[method](arg.text)));
  }

  /**
   * `call`, with a failure as a denial.
   *
   * @param {object | string} call
   * @returns {unknown}
   */
  #call(call) {
    return this.#json('call', call, 'the call');
  }

  /**
   * `loadPolicy`, with a failure as a denial.
   *
   * @param {Source[] | string} sources
   * @returns {{policy_hash: string} | Denial}
   */
  #loadPolicy(sources) {
    return this.#json('loadPolicy', sources, 'the sources');
  }

  /**
   * `loadFacts`, with a failure as a denial.
   *
   * @param {object | string} facts
   * @returns {Info | Denial}
   */
  #loadFacts(facts) {
    return this.#json('loadFacts', facts, 'the facts');
  }

  /**
   * `applyDeltas`, with a failure as a denial.
   *
   * @param {object[] | string} deltas
   * @returns {Info | Denial}
   */
  #applyDeltas(deltas) {
    return this.#json('applyDeltas', deltas, 'the deltas');
  }

  /**
   * `loadSnapshot`, with a failure as a denial.
   *
   * @param {Bytes} bytes
   * @returns {Info | Denial}
   */
  #loadSnapshot(bytes) {
    const b = asBytes(bytes);
    if (b === null) return malformed(`a snapshot is bytes, got ${describe(bytes)}`, 'pass a Uint8Array from snapshotBytes()');
    return this.#run((raw) => answer(raw.loadSnapshot(b)));
  }

  /**
   * `snapshotBytes`, with a failure as a denial.
   *
   * @returns {Uint8Array | Denial}
   */
  #snapshotBytes() {
    const bytes = this.#run((raw) => raw.snapshotBytes());
    if (!(bytes instanceof Uint8Array) || bytes.length > 0) return bytes;
    const info = this.#info();
    return isError(info) ? info : deny('snapshot.unavailable', 'the snapshot could not be written as bytes', '');
  }

  /**
   * `info`, with a failure as a denial.
   *
   * @returns {Info | Denial}
   */
  #info() {
    // The module's answer to `info`.
    return /** @type {Info | Denial} */ (this.#call({ op: 'info' }));
  }

  /**
   * `facts`, with a failure as a denial.
   *
   * @returns {object | Denial}
   */
  #facts() {
    // The module's answer to `facts`.
    return /** @type {object | Denial} */ (this.#call({ op: 'facts' }));
  }

  /**
   * @param {'write' | 'authorize_deltas'} op
   * @param {string} author
   * @param {object[]} deltas
   * @param {Time} now
   * @returns {WriteAnswer | Denial}
   */
  #write(op, author, deltas, now) {
    const bad = strings({ author });
    if (bad) return bad;
    if (!Array.isArray(deltas)) return malformed(`\`deltas\` must be an array of deltas, got ${describe(deltas)}`);
    const arg = timeArg(now);
    const t = arg instanceof Date ? dateSeconds(arg) : arg;
    if (t === null) return malformed(`\`now\` must be a Date, RFC 3339 text or whole seconds, got ${describe(now)}`, TIME_HELP);
    return /** @type {WriteAnswer | Denial} */ (this.#call({ op, author, now: t, deltas }));
  }

  /**
   * `schema`, with a failure as a denial.
   *
   * @returns {Outline | Denial}
   */
  #schema() {
    // The module's answer to `schema`.
    return /** @type {Outline | Denial} */ (this.#call({ op: 'schema' }));
  }

  /**
   * `check`, with a failure as a denial.
   *
   * @param {Request | string} request
   * @returns {DecisionView | Denial}
   */
  #check(request) {
    // The common case straight to the module: a plain request of the right types on a
    // usable session. Anything else takes the path that names what is wrong.
    const raw = this.#raw;
    if (request !== null && typeof request === 'object' && raw !== null && !this.#freed && this.#state.poison === null) {
      const { principal, action, resource, target, now } = /** @type {{[field: string]: unknown}} */ (/** @type {unknown} */ (request));
      if (typeof principal === 'string' && typeof action === 'string' && typeof resource === 'string'
        && (target === undefined || target === null || typeof target === 'string')
        && (typeof now === 'string' || typeof now === 'number' || now instanceof Date)
        && onlyRequestFields(request)) {
        this.#answers.ask(principal, action, resource, target);
        try {
          return typeof now === 'number'
            ? raw.checkAt(principal, action, resource, target ?? undefined, now)
            : raw.checkValue(principal, action, resource, target ?? undefined, now);
        } catch (e) {
          return this.#caught(e);
        }
      }
    }
    if (typeof request === 'string') return decision(this.#json('check', request, 'the request'));
    const r = requestArgs(request, 'the request');
    if ('denial' in r) return r.denial;
    return this.#run((raw) => {
      this.#answers.ask(r.principal, r.action, r.resource, r.target);
      return raw.checkValue(r.principal, r.action, r.resource, r.target, r.now);
    });
  }

  /**
   * `checkBatch`, with a failure as a denial.
   *
   * @param {Request[] | string} requests
   * @returns {DecisionView[] | Denial}
   */
  #checkBatch(requests) {
    if (Array.isArray(requests)) {
      if (requests.length > MAX_BATCH) return deny('request.too_large', `a batch of ${requests.length} requests is more than ${MAX_BATCH}`, 'split the batch');
      /** @type {DecisionView[]} */
      const out = [];
      for (let i = 0; i < requests.length; i += 1) {
        const d = this.#check(requests[i]);
        if (isError(d)) return { allowed: false, error: { ...d.error, message: `request ${i}: ${d.error.message}` } };
        out.push(d);
      }
      return out;
    }
    /** @type {unknown} */
    const v = this.#json('checkBatch', requests, 'the requests');
    if (isError(v)) return v;
    if (!Array.isArray(v)) return badAnswer('not a list of decisions');
    for (const d of v) if (isError(decision(d))) return badAnswer('not a list of decisions');
    return v;
  }

  /**
   * `resolve`, with a failure as a denial.
   *
   * @param {Request[] | string} requests
   * @returns {Resolved[] | Denial}
   */
  #resolve(requests) {
    /** @type {unknown} */
    let list = requests;
    if (typeof requests === 'string') {
      try {
        list = JSON.parse(requests);
      } catch (e) {
        return malformed(`malformed JSON: ${thrownMessage(e)}`, 'pass a JSON list of requests');
      }
    }
    const v = this.#call({ op: 'resolve', requests: list });
    if (isError(v)) return v;
    if (!Array.isArray(v)) return badAnswer('not a list');
    return v.map((entry) => (Array.isArray(entry?.query) ? { query: Uint8Array.from(entry.query) } : entry));
  }

  /**
   * `checkIdsRaw`, with a failure as a denial.
   *
   * @param {Bytes} queries
   * @returns {Uint8Array | Denial}
   */
  #checkIdsRaw(queries) {
    const b = asBytes(queries);
    if (b === null) {
      return malformed(`queries are bytes (${QUERY_LEN} per query), got ${describe(queries)}`, 'encode queries with encodeQueries() or take them from resolve()');
    }
    return this.#run((raw) => unframe(raw.checkIds(b)));
  }

  /**
   * `checkIds`, with a failure as a denial.
   *
   * @param {Bytes} queries
   * @returns {WireDecision[] | Denial}
   */
  #checkIds(queries) {
    const raw = this.#checkIdsRaw(queries);
    if (isError(raw)) return raw;
    const decisions = decodeDecisions(raw);
    if (decisions === null) return badAnswer('undecodable decisions');
    // checkIdsRaw decided them, so the queries are bytes.
    const n = /** @type {Uint8Array} */ (asBytes(queries)).length / QUERY_LEN;
    if (decisions.length !== n) return badAnswer(`${decisions.length} decisions for ${n} queries`);
    return decisions;
  }

  /**
   * `allowedActions`, with a failure as a denial.
   *
   * @param {string} principal
   * @param {string} resource an entity or a page `matrix:row`
   * @param {Time} now RFC 3339 or seconds since the epoch
   * @returns {{actions: string[], denied?: DecisionView} | Denial}
   */
  #allowedActions(principal, resource, now) {
    // Checked one by one rather than through `strings`, whose object costs a third of
    // this call.
    if (typeof principal !== 'string' || typeof resource !== 'string') {
      const bad = strings({ principal, resource });
      if (bad) return bad;
    }
    const t = timeArg(now);
    if (t === null) return malformed(`\`now\` must be a Date, RFC 3339 text or whole seconds, got ${describe(now)}`, TIME_HELP);
    return this.#run((raw) => {
      this.#answers.ask(principal, '', resource, null);
      return raw.allowedActionsValue(principal, resource, t);
    });
  }

  /**
   * `listResources`, with a failure as a denial.
   *
   * @param {string} principal
   * @param {string} action
   * @param {string} type
   * @param {Time} now
   * @returns {string[] | Denial}
   */
  #listResources(principal, action, type, now) {
    const bad = strings({ principal, action, type });
    if (bad) return bad;
    const t = timeText(now);
    if (t === null) return malformed(`\`now\` must be RFC 3339 text or whole seconds, got ${describe(now)}`);
    return this.#run((raw) => answer(raw.listResources(principal, action, type, t)));
  }

  /**
   * `listPrincipals`, with a failure as a denial.
   *
   * @param {string} resource
   * @param {string} action
   * @param {Time} now
   * @param {string} [account]
   * @returns {string[] | Denial}
   */
  #listPrincipals(resource, action, now, account) {
    const acct = account ?? '';
    const bad = strings({ resource, action, account: acct });
    if (bad) return bad;
    const t = timeText(now);
    if (t === null) return malformed(`\`now\` must be RFC 3339 text or whole seconds, got ${describe(now)}`);
    return this.#run((raw) => answer(raw.listPrincipals(resource, action, t, acct)));
  }

  /**
   * `explain`, with a failure as a denial.
   *
   * @param {Request | string} request
   * @returns {Explanation | Denial}
   */
  #explain(request) {
    return this.#json('explain', request, 'the request');
  }

  /**
   * `matrix`, with a failure as a denial.
   *
   * @param {string} matrix
   * @param {string} [account]
   * @returns {AccessMatrix | Denial}
   */
  #matrix(matrix, account) {
    const acct = account ?? '';
    const bad = strings({ matrix, account: acct });
    if (bad) return bad;
    return this.#run((raw) => answer(raw.matrix(matrix, acct)));
  }

  /**
   * Runs any JSON call (`{op: ...}`, see ARCHITECTURE.md) and gives its `ok` value or a
   * denial. Takes the call as an object or as JSON text.
   *
   * @param {object | string} call
   * @returns {unknown}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  call(call) {
    return thrown(this.#call(call));
  }

  /**
   * Compiles a policy set; facts loaded so far are rebuilt under it.
   *
   * @param {Source[] | string} sources
   * @returns {{policy_hash: string}}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  loadPolicy(sources) {
    return thrown(this.#loadPolicy(sources));
  }

  /**
   * Loads facts (the facts document of docs/facts-format.md) and builds the snapshot.
   *
   * @param {object | string} facts
   * @returns {Info}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  loadFacts(facts) {
    return thrown(this.#loadFacts(facts));
  }

  /**
   * Applies a list of deltas, all or nothing (the revision goes up by one).
   *
   * @param {object[] | string} deltas
   * @returns {Info}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  applyDeltas(deltas) {
    return thrown(this.#applyDeltas(deltas));
  }

  /**
   * Loads a snapshot from its bytes (policy included).
   *
   * @param {Bytes} bytes
   * @returns {Info}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  loadSnapshot(bytes) {
    return thrown(this.#loadSnapshot(bytes));
  }

  /**
   * The loaded snapshot's bytes, to load elsewhere with `loadSnapshot`.
   *
   * @returns {Uint8Array}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  snapshotBytes() {
    return thrown(this.#snapshotBytes());
  }

  /**
   * What is loaded: core version, policy hash, revision, entity and tuple counts.
   *
   * @returns {Info}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  info() {
    return thrown(this.#info());
  }

  /**
   * The loaded facts as a facts document: what loading and writes left behind.
   *
   * @returns {object}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  facts() {
    return thrown(this.#facts());
  }

  /**
   * Makes `deltas` as `author` at `now` if the policy's write rules allow every change
   * (X4), all or nothing, through the core's one write pipeline: the tuples the policy
   * adds by itself on creation (EV5) join the change and are named in `derived`, as on a
   * host. A refusal is an answer (`allowed: false` with the `refusal`), not an error.
   *
   * @param {string} author
   * @param {object[]} deltas
   * @param {Time} now
   * @returns {WriteAnswer}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  write(author, deltas, now) {
    return thrown(this.#write('write', author, deltas, now));
  }

  /**
   * Whether `author` may make `deltas` at `now` ([`write`] without applying them).
   *
   * @param {string} author
   * @param {object[]} deltas
   * @param {Time} now
   * @returns {WriteAnswer}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  authorizeDeltas(author, deltas, now) {
    return thrown(this.#write('authorize_deltas', author, deltas, now));
  }

  /**
   * What the loaded policy declares: its types with their actions and write rules, and
   * its matrices with their rows and roles.
   *
   * @returns {Outline}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  schema() {
    return thrown(this.#schema());
  }

  /**
   * Decides one request.
   *
   * @param {Request | string} request
   * @returns {DecisionView}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  check(request) {
    return thrown(this.#check(request));
  }

  /**
   * Decides a list of requests (at most 1 << 20), in order.
   *
   * @param {Request[] | string} requests
   * @returns {DecisionView[]}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  checkBatch(requests) {
    return thrown(this.#checkBatch(requests));
  }

  /**
   * Resolves requests to their 24-byte binary queries: one entry per request, either
   * `{query: Uint8Array}` or `{denied: DecisionView}` for a request that cannot resolve.
   *
   * @param {Request[] | string} requests
   * @returns {Resolved[]}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  resolve(requests) {
    return thrown(this.#resolve(requests));
  }

  /**
   * Decides binary queries (`encodeQueries`, or the queries of `resolve`) and gives the
   * raw decision bytes of `clearance_core::wire`, without the frame byte.
   *
   * @param {Bytes} queries
   * @returns {Uint8Array}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  checkIdsRaw(queries) {
    return thrown(this.#checkIdsRaw(queries));
  }

  /**
   * Decides binary queries and gives the decoded decisions, one per query.
   *
   * @param {Bytes} queries
   * @returns {WireDecision[]}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  checkIds(queries) {
    return thrown(this.#checkIds(queries));
  }

  /**
   * The actions `principal` may take on `resource` at `now`; a request that cannot be
   * decided gives no actions and its denial.
   *
   * @param {string} principal
   * @param {string} resource an entity or a page `matrix:row`
   * @param {Time} now RFC 3339 or seconds since the epoch
   * @returns {{actions: string[], denied?: DecisionView}}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  allowedActions(principal, resource, now) {
    return thrown(this.#allowedActions(principal, resource, now));
  }

  /**
   * The resources of type `type` on which `principal` may take `action` at `now`.
   *
   * @param {string} principal
   * @param {string} action
   * @param {string} type
   * @param {Time} now
   * @returns {string[]}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  listResources(principal, action, type, now) {
    return thrown(this.#listResources(principal, action, type, now));
  }

  /**
   * The principals who may take `action` on `resource` at `now`; for a page, `account`
   * limits the answer to one account.
   *
   * @param {string} resource
   * @param {string} action
   * @param {Time} now
   * @param {string} [account]
   * @returns {string[]}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  listPrincipals(resource, action, now, account) {
    return thrown(this.#listPrincipals(resource, action, now, account));
  }

  /**
   * Decides and explains one request: the decision, and for an allow the checks that
   * held.
   *
   * @param {Request | string} request
   * @returns {Explanation}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  explain(request) {
    return thrown(this.#explain(request));
  }

  /**
   * The access-rights matrix `matrix`, as `account` (the policy's roles if omitted) sees
   * it.
   *
   * @param {string} matrix
   * @param {string} [account]
   * @returns {AccessMatrix}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  matrix(matrix, account) {
    return thrown(this.#matrix(matrix, account));
  }

  /** Frees the session's memory in the module now; later calls throw `session.freed`. */
  free() {
    if (this.#freed) return;
    this.#freed = true;
    const raw = this.#raw;
    this.#raw = null;
    if (raw !== null) {
      reclaim?.unregister(this);
      release(raw, this.#state);
    }
  }

  /** Frees the session (for `using`). */
  [Symbol.dispose]() {
    this.free();
  }
}


/**
 * An unsigned integer of `bits` bits, or a TypeError naming `what`.
 *
 * @param {number} value
 * @param {number} bits
 * @param {string} what
 * @returns {number}
 */
function unsigned(value, bits, what) {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
    throw new TypeError(`clearance: ${what} must be an integer in 0..2^${bits}, got ${String(value)}`);
  }
  return value;
}

/**
 * An i64 as a BigInt, or a TypeError naming `what`.
 *
 * @param {number | bigint} value
 * @param {string} what
 * @returns {bigint}
 */
function int64(value, what) {
  let v;
  if (typeof value === 'bigint') v = value;
  else if (Number.isSafeInteger(value)) v = BigInt(value);
  else throw new TypeError(`clearance: ${what} must be a safe integer or a BigInt, got ${String(value)}`);
  if (v < I64_MIN || v > I64_MAX) throw new TypeError(`clearance: ${what} is outside the i64 range`);
  return v;
}

/**
 * A BigInt as a Number when exact, else as it is.
 *
 * @param {bigint} v
 * @returns {number | bigint}
 */
function exact(v) {
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : v;
}

/**
 * Encodes resolved queries as `clearance_core::wire::encode_query` does: 24 bytes each,
 * little endian. A query is `{principal, resource, action, target?, now}` where
 * `resource` is an entity id or a page `{matrix, row}`, `target` an entity id (absent or
 * null for none) and `now` seconds (a Number or BigInt). Throws a TypeError on a field out
 * of its range.
 *
 * @param {Query[]} queries
 * @returns {Uint8Array}
 */
export function encodeQueries(queries) {
  if (!Array.isArray(queries)) throw new TypeError('clearance: encodeQueries takes an array of queries');
  const out = new Uint8Array(queries.length * QUERY_LEN);
  const view = new DataView(out.buffer);
  queries.forEach((q, i) => {
    const at = i * QUERY_LEN;
    const what = `query ${i}`;
    if (q === null || typeof q !== 'object') throw new TypeError(`clearance: ${what} is not an object`);
    let resource;
    if (typeof q.resource === 'number') {
      resource = unsigned(q.resource, 32, `${what}.resource`);
    } else if (q.resource !== null && typeof q.resource === 'object') {
      const matrix = unsigned(q.resource.matrix, 16, `${what}.resource.matrix`);
      const row = unsigned(q.resource.row, 16, `${what}.resource.row`);
      resource = (PAGE | (matrix << 16) | row) >>> 0;
    } else {
      throw new TypeError(`clearance: ${what}.resource must be an entity id or {matrix, row}`);
    }
    const target = q.target;
    const hasTarget = target !== undefined && target !== null;
    view.setUint32(at, unsigned(q.principal, 32, `${what}.principal`), true);
    view.setUint32(at + 4, resource, true);
    view.setUint16(at + 8, unsigned(q.action, 16, `${what}.action`), true);
    view.setUint16(at + 10, hasTarget ? 1 : 0, true);
    view.setUint32(at + 12, hasTarget ? unsigned(target, 32, `${what}.target`) : 0, true);
    view.setBigInt64(at + 16, int64(q.now, `${what}.now`), true);
  });
  return out;
}

/**
 * Decodes queries as `clearance_core::wire::decode_query` does; null unless the length is
 * a multiple of 24. `now` is a Number when exact, else a BigInt; `target` is null when the
 * flag is off.
 *
 * @param {Bytes} bytes
 * @returns {Query[] | null}
 */
export function decodeQueries(bytes) {
  const b = asBytes(bytes);
  if (b === null || b.length % QUERY_LEN !== 0) return null;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = [];
  for (let at = 0; at < b.length; at += QUERY_LEN) {
    const r = view.getUint32(at + 4, true);
    const resource = (r & PAGE) !== 0 ? { matrix: ((r & ~PAGE) >>> 16) & 0xffff, row: r & 0xffff } : r;
    const flags = view.getUint16(at + 10, true);
    out.push({
      principal: view.getUint32(at, true),
      resource,
      action: view.getUint16(at + 8, true),
      target: (flags & 1) === 1 ? view.getUint32(at + 12, true) : null,
      now: exact(view.getBigInt64(at + 16, true)),
    });
  }
  return out;
}

/**
 * Decodes decisions as `clearance_core::wire::decode_decisions` does: per decision
 * `allowed u8, n u8, n × (code u8, rule u32), valid_until i64`, little endian. Gives
 * `{allowed, reasons: [{code, rule}], valid_until}` with `code` the text of `CODES` and
 * `valid_until` seconds as a Number (null for i64::MIN, "none"); null if the bytes are
 * truncated or carry an unknown code.
 *
 * @param {Bytes} bytes
 * @returns {WireDecision[] | null}
 */
export function decodeDecisions(bytes) {
  const b = asBytes(bytes);
  if (b === null) return null;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = [];
  let at = 0;
  while (at < b.length) {
    if (at + 2 > b.length) return null;
    const allowed = b[at] === 1;
    const n = b[at + 1];
    at += 2;
    const reasons = [];
    for (let i = 0; i < n; i += 1) {
      if (at + 5 > b.length) return null;
      const code = CODES[b[at]];
      if (code === undefined) return null;
      reasons.push({ code, rule: view.getUint32(at + 1, true) });
      at += 5;
    }
    if (at + 8 > b.length) return null;
    const until = view.getBigInt64(at, true);
    at += 8;
    out.push({ allowed, reasons, valid_until: until === I64_MIN ? null : Number(until) });
  }
  return out;
}

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
 * The events of a server-sent event stream (the body of `GET /v1/changes`), in order:
 * `{event, id, data}` with `data` parsed as JSON (`null` if it is not JSON). Ends with the
 * stream.
 *
 * @param {ReadableStream<Uint8Array<ArrayBuffer>>} body
 * @returns {AsyncGenerator<ServerEvent>}
 */
export async function* serverEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replaceAll('\r\n', '\n');
      for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = 'message';
        let id = '';
        const data = [];
        for (const line of block.split('\n')) {
          const colon = line.indexOf(':');
          if (colon === 0) continue;
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event = text;
          else if (field === 'id') id = text;
          else if (field === 'data') data.push(text);
        }
        if (data.length === 0) continue;
        let parsed = null;
        try {
          parsed = JSON.parse(data.join('\n'));
        } catch {
          // Not JSON: given as null.
        }
        yield { event, id, data: parsed };
      }
    }
  } finally {
    // A reader that stops early closes the stream (and its connection).
    await reader.cancel().catch(() => {});
  }
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
