/**
 * Failures as the package gives them: `ClearanceError` (thrown by a session's methods), a
 * denial `{allowed: false, error}` (the signed-slice helpers' answer), and the few denials
 * every module of the package makes.
 *
 * Imports nothing at the top level but its siblings, so it runs unchanged in browsers,
 * Node and workerd.
 */

/** @import { Denial, ErrorData } from '../index.js' */

/**
 * A denial: `{allowed: false, error: {code, message, help}}`.
 *
 * @param {string} code
 * @param {string} message
 * @param {string} [help]
 * @returns {Denial}
 */
export function deny(code, message, help = '') {
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
 * A `ClearanceError` of `code`, to throw.
 *
 * @param {string} code
 * @param {string} message
 * @param {string} [help]
 */
export function failure(code, message, help = '') {
  return new ClearanceError({ code, message, help });
}

/**
 * A `request.malformed` error, to throw.
 *
 * @param {string} message
 * @param {string} [help]
 */
export function malformed(message, help = '') {
  return failure('request.malformed', message, help);
}

/**
 * A `wasm.bad_answer` error, to throw: the module answered something the package cannot
 * read.
 *
 * @param {string} message
 */
export function badAnswer(message) {
  return failure('wasm.bad_answer', `the module gave an answer that cannot be read: ${message}`, 'this is a bug in the module or its glue; report it');
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
export function thrownMessage(e) {
  if (e === null || (typeof e !== 'object' && typeof e !== 'function')) return String(e);
  return `${/** @type {{message?: unknown}} */ (e).message}`;
}

/**
 * Whether a thrown value is an error the module threw on purpose: an `Error` with a
 * string `code`, not a trap.
 *
 * @param {unknown} e
 * @returns {e is Error & {code: string, help?: unknown}}
 */
export function isModuleError(e) {
  return e instanceof Error && !(e instanceof WebAssembly.RuntimeError) && typeof (/** @type {{code?: unknown}} */ (e).code) === 'string';
}
