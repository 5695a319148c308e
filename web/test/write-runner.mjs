#!/usr/bin/env node
/**
 * The module's side of the write differential test (host/tests/all/writes.rs): makes a
 * list of writes through the wasm module under Node, with the session's `write` (the
 * core's one write pipeline), and reports what each answered, the facts left behind and
 * the decisions made on them, for comparison with the same writes made through a host.
 *
 *   node web/test/write-runner.mjs <input.json>
 *
 * The input is `{"sources": [{name, text}], "facts": {...}, "now": <time>, "writes":
 * [{"author", "deltas"}], "requests": [...]}`. On success stdout is one line of JSON:
 * `{"module_sha256", "answers": [...], "facts": {...}, "decisions": [...]}`, where each
 * answer is the module's write answer, or `{"error": {code, message, help}}` for deltas
 * that do not apply. On any other error, stdout is one line `{"error": {...}}` and the
 * exit code is 1.
 */

import { readFile } from 'node:fs/promises';
import { ClearanceError, isError, loadNode } from '../index.js';

/** @import { Denial } from '../index.js' */

/**
 * Gives the value of a session call, or throws its error.
 *
 * @template T
 * @param {T | Denial} answer
 * @param {string} what
 * @returns {T}
 */
function must(answer, what) {
  if (isError(answer)) throw new Error(`${what}: ${answer.error.code}: ${answer.error.message}`);
  return answer;
}

async function run() {
  const [path] = process.argv.slice(2);
  if (path === undefined) throw new Error('usage: node web/test/write-runner.mjs <input.json>');
  const input = JSON.parse(await readFile(path, 'utf8'));
  const module = await loadNode();
  const session = new module.Session();
  must(session.loadPolicy(input.sources), 'the policy');
  must(session.loadFacts(input.facts), 'the facts');
  // A write the session cannot make (a tuple that is not there to remove) throws; it is
  // compared with the host's refusal as `{allowed: false, error}`.
  const answers = input.writes.map((/** @type {{author: string, deltas: object[]}} */ w) => {
    try {
      return session.write(w.author, w.deltas, input.now);
    } catch (e) {
      if (e instanceof ClearanceError) return { allowed: false, error: e.toJSON() };
      throw e;
    }
  });
  const facts = must(session.facts(), 'the facts after the writes');
  const decisions = must(session.checkBatch(input.requests), 'the decisions after the writes');
  session.free();
  return { module_sha256: module.moduleHash, answers, facts, decisions };
}

/** Runs as a command: one JSON line on stdout, exit code 1 on any error. */
async function main() {
  try {
    process.stdout.write(`${JSON.stringify(await run())}\n`);
  } catch (e) {
    process.stdout.write(`${JSON.stringify({ error: { code: 'runner.failed', message: e instanceof Error ? e.message : String(e), help: '' } })}\n`);
    process.exitCode = 1;
  }
}

// `node --test test/` runs every script under test/, this one included, with no arguments:
// there it is a command, not a test, and does nothing.
if (!(process.argv.length === 2 && process.env.NODE_TEST_CONTEXT !== undefined)) await main();
