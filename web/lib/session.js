/**
 * Sessions on a module instance: `Session`, whose methods give their value or throw a
 * `ClearanceError`, the state each instance shares between its sessions (its glue, the
 * hash of its bytes, the error that poisoned it), and `fromGlue`, which binds an
 * initialised glue to that state.
 *
 * Imports nothing at the top level but its siblings, so it runs unchanged in browsers,
 * Node and workerd.
 */

import { Answers } from './answers.js';
import { ClearanceError, badAnswer, failure, isModuleError, malformed } from './errors.js';
import { QUERY_LEN, decodeDecisions } from './wire.js';
import { MAX_BATCH, TIME_HELP, asBytes, dateSeconds, describe, onlyRequestFields, present, requestArgs, strings, time, timeText } from './values.js';

/**
 * @import { AccessMatrix, Bytes, ClearanceModule, DecisionView, ErrorData, Explanation, Info, Outline, Request, Resolved, Source, Time, WireDecision, WriteAnswer } from '../index.js'
 */

/**
 * The namespace of the glue (`pkg/clearance.js`, written by wasm-bindgen).
 *
 * @typedef {typeof import('../pkg/clearance.js')} Glue
 */

/**
 * One session object of the glue.
 *
 * @typedef {import('../pkg/clearance.js').Clearance} RawSession
 */

/**
 * The public face of a session, as `index.d.ts` declares it; `Session` implements it.
 *
 * @typedef {import('../index.js').Session} SessionApi
 */

/**
 * The state of one module instance, shared by its sessions.
 *
 * @typedef {object} InstanceState
 * @property {Glue} glue the initialised glue
 * @property {string} moduleHash the hex SHA-256 of the module's bytes
 * @property {ErrorData | null} poison the error that made the instance unusable, or null
 */

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
 * Marks an instance unusable after an exception inside the module; gives the error. A
 * `WebAssembly.RuntimeError`, or the host's stack overflow while the module runs, is a
 * trap; anything else is `wasm.error`. Either leaves the instance in an unknown state.
 *
 * @param {InstanceState} state
 * @param {unknown} e what was thrown
 * @returns {ClearanceError}
 */
function poisonInstance(state, e) {
  const trap = e instanceof WebAssembly.RuntimeError || (e instanceof RangeError && /call stack/i.test(e.message));
  const message = e instanceof Error ? e.message : String(e);
  const error = trap
    ? failure('wasm.trap', `the module trapped: ${message}`, 'the module instance is unusable now; load the module again')
    : failure('wasm.error', `the module failed: ${message}`, 'the module instance is unusable now; load the module again');
  if (state.poison === null) state.poison = error.toJSON();
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
   * Runs `f` on the glue object. What the module throws is thrown as a `ClearanceError`
   * (see `#caught`); so is a session that cannot answer.
   *
   * @template T
   * @param {(raw: RawSession) => T} f
   * @returns {T}
   */
  #run(f) {
    const poison = this.#state.poison;
    if (poison !== null) {
      throw failure('instance.poisoned', `the module instance is unusable since an earlier error (${poison.code}: ${poison.message})`, 'load the module again and build a new session');
    }
    if (this.#freed || this.#raw === null) throw failure('session.freed', 'the session was freed', 'build a new session');
    try {
      return f(this.#raw);
    } catch (e) {
      throw this.#caught(e);
    }
  }

  /**
   * What was thrown in the module, as the error to throw. The module throws its own
   * errors as Error objects with a code; they leave the instance as it was, and so does a
   * `ClearanceError` of the package. Anything else is a trap or worse, and poisons the
   * instance.
   *
   * @param {unknown} e
   * @returns {ClearanceError}
   */
  #caught(e) {
    if (e instanceof ClearanceError) return e;
    if (isModuleError(e)) return failure(e.code, e.message, typeof e.help === 'string' ? e.help : '');
    return poisonInstance(this.#state, e);
  }

  /**
   * Runs the op `op` of the module on its one argument, a value or JSON text, which the
   * module reads; `T` is the type of its answer, which the module's protocol fixes for
   * each op (no checker sees into the module).
   *
   * @template T
   * @param {'load_policy' | 'load_facts' | 'apply_deltas' | 'check' | 'check_batch' | 'explain' | 'resolve'} op
   * @param {unknown} arg
   * @param {string} what the argument, for an error
   * @returns {T}
   */
  #with(op, arg, what) {
    const value = present(arg, what);
    return this.#run((raw) => raw.callWith(op, value));
  }

  /**
   * Runs any call of the module's protocol (`{op: ...}`, see ARCHITECTURE.md) and gives
   * its answer. Takes the call as an object (read as its JSON text would be) or as JSON
   * text.
   *
   * @param {object | string} call
   * @returns {unknown}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  call(call) {
    const value = present(call, 'the call');
    return this.#run((raw) => raw.callValue(value));
  }

  /**
   * Compiles a policy set; facts loaded so far are rebuilt under it.
   *
   * @param {Source[] | string} sources
   * @returns {{policy_hash: string}}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  loadPolicy(sources) {
    return this.#with('load_policy', sources, 'the sources');
  }

  /**
   * Loads facts (the facts document of docs/facts-format.md) and builds the snapshot.
   *
   * @param {object | string} facts
   * @returns {Info}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  loadFacts(facts) {
    return this.#with('load_facts', facts, 'the facts');
  }

  /**
   * Applies a list of deltas, all or nothing (the revision goes up by one).
   *
   * @param {object[] | string} deltas
   * @returns {Info}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  applyDeltas(deltas) {
    return this.#with('apply_deltas', deltas, 'the deltas');
  }

  /**
   * Loads a snapshot from its bytes (policy included).
   *
   * @param {Bytes} bytes
   * @returns {Info}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  loadSnapshot(bytes) {
    const b = asBytes(bytes);
    if (b === null) throw malformed(`a snapshot is bytes, got ${describe(bytes)}`, 'pass a Uint8Array from snapshotBytes()');
    return this.#run((raw) => raw.loadSnapshotValue(b));
  }

  /**
   * The loaded snapshot's bytes, to load elsewhere with `loadSnapshot`.
   *
   * @returns {Uint8Array}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  snapshotBytes() {
    const bytes = this.#run((raw) => raw.snapshotBytes());
    if (bytes.length > 0) return bytes;
    // No bytes: why not, as `info` says (nothing loaded), or that they could not be
    // written.
    this.info();
    throw failure('snapshot.unavailable', 'the snapshot could not be written as bytes', '');
  }

  /**
   * What is loaded: core version, policy hash, revision, entity and tuple counts.
   *
   * @returns {Info}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  info() {
    // The module's answer to `info`.
    return /** @type {Info} */ (this.call({ op: 'info' }));
  }

  /**
   * The loaded facts as a facts document: what loading and writes left behind.
   *
   * @returns {object}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  facts() {
    // The module's answer to `facts`.
    return /** @type {object} */ (this.call({ op: 'facts' }));
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
    return this.#write('write', author, deltas, now);
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
    return this.#write('authorize_deltas', author, deltas, now);
  }

  /**
   * The call of `write` and `authorizeDeltas`, which differ only in their op.
   *
   * @param {'write' | 'authorize_deltas'} op
   * @param {string} author
   * @param {object[]} deltas
   * @param {Time} now
   * @returns {WriteAnswer}
   */
  #write(op, author, deltas, now) {
    strings({ author });
    if (!Array.isArray(deltas)) throw malformed(`\`deltas\` must be an array of deltas, got ${describe(deltas)}`);
    const arg = time(now);
    const t = arg instanceof Date ? dateSeconds(arg) : arg;
    if (t === null) throw malformed(`\`now\` must be a Date, RFC 3339 text or whole seconds, got ${describe(now)}`, TIME_HELP);
    // The module's answer to a write.
    return /** @type {WriteAnswer} */ (this.call({ op, author, now: t, deltas }));
  }

  /**
   * What the loaded policy declares: its types with their actions and write rules, and
   * its matrices with their rows and roles.
   *
   * @returns {Outline}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  schema() {
    // The module's answer to `schema`.
    return /** @type {Outline} */ (this.call({ op: 'schema' }));
  }

  /**
   * Decides one request.
   *
   * @param {Request | string} request
   * @returns {DecisionView}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  check(request) {
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
          throw this.#caught(e);
        }
      }
    }
    if (typeof request === 'string') return this.#with('check', request, 'the request');
    const r = requestArgs(request, 'the request');
    return this.#run((raw) => {
      this.#answers.ask(r.principal, r.action, r.resource, r.target);
      return raw.checkValue(r.principal, r.action, r.resource, r.target, r.now);
    });
  }

  /**
   * Decides a list of requests (at most 1 << 20), in order.
   *
   * @param {Request[] | string} requests
   * @returns {DecisionView[]}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  checkBatch(requests) {
    if (Array.isArray(requests)) {
      if (requests.length > MAX_BATCH) throw failure('request.too_large', `a batch of ${requests.length} requests is more than ${MAX_BATCH}`, 'split the batch');
      /** @type {DecisionView[]} */
      const out = [];
      for (let i = 0; i < requests.length; i += 1) {
        try {
          out.push(this.check(requests[i]));
        } catch (e) {
          if (e instanceof ClearanceError) throw failure(e.code, `request ${i}: ${e.message}`, e.help);
          throw e;
        }
      }
      return out;
    }
    return this.#with('check_batch', requests, 'the requests');
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
    // The module's answer to `resolve`: a query's bytes as a list of numbers.
    /** @type {({query: number[]} | {denied: DecisionView})[]} */
    const resolved = typeof requests === 'string'
      ? this.#with('resolve', requests, 'the requests')
      : /** @type {({query: number[]} | {denied: DecisionView})[]} */ (this.call({ op: 'resolve', requests }));
    return resolved.map((entry) => ('query' in entry ? { query: Uint8Array.from(entry.query) } : entry));
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
    const b = asBytes(queries);
    if (b === null) {
      throw malformed(`queries are bytes (${QUERY_LEN} per query), got ${describe(queries)}`, 'encode queries with encodeQueries() or take them from resolve()');
    }
    return this.#run((raw) => raw.checkIdsValue(b));
  }

  /**
   * Decides binary queries and gives the decoded decisions, one per query.
   *
   * @param {Bytes} queries
   * @returns {WireDecision[]}
   * @throws {ClearanceError} on a failure (bad input, nothing loaded, a trap)
   */
  checkIds(queries) {
    const raw = this.checkIdsRaw(queries);
    const decisions = decodeDecisions(raw);
    if (decisions === null) throw badAnswer('undecodable decisions');
    // checkIdsRaw decided them, so the queries are bytes.
    const n = /** @type {Uint8Array} */ (asBytes(queries)).length / QUERY_LEN;
    if (decisions.length !== n) throw badAnswer(`${decisions.length} decisions for ${n} queries`);
    return decisions;
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
    // Checked one by one rather than through `strings`, whose object costs a third of
    // this call.
    if (typeof principal !== 'string' || typeof resource !== 'string') strings({ principal, resource });
    const t = time(now);
    return this.#run((raw) => {
      this.#answers.ask(principal, '', resource, null);
      return raw.allowedActionsValue(principal, resource, t);
    });
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
    strings({ principal, action, type });
    const t = timeText(now);
    return this.#run((raw) => raw.listResourcesValue(principal, action, type, t));
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
    const acct = account ?? '';
    strings({ resource, action, account: acct });
    const t = timeText(now);
    return this.#run((raw) => raw.listPrincipalsValue(resource, action, t, acct));
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
    return this.#with('explain', request, 'the request');
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
    const acct = account ?? '';
    strings({ matrix, account: acct });
    return this.#run((raw) => raw.matrixValue(matrix, acct));
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
