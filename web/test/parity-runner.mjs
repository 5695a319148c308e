#!/usr/bin/env node
/**
 * The JavaScript side of the parity suite: decides binary queries on a snapshot with the
 * wasm module under Node and writes the raw decision bytes, for comparison byte for byte
 * with the other runtimes.
 *
 *   node web/test/parity-runner.mjs --snapshot <snapshot.bin> --queries <queries.bin>
 *                                   --out <decisions.bin> [--changes <changes.json>]
 *                                   [--wasm <clearance_bg.wasm>]
 *
 * With --changes (a JSON list of delta lists), each list is applied in place
 * (applyDeltas), in order, after the snapshot is loaded and before any query.
 *
 * Queries are 24 bytes each (clearance_core::wire); they are decided with checkIds in
 * chunks of at most 65536, and the decisions (without the frame byte) are written to
 * --out, concatenated in query order. On success, stdout is one line of JSON:
 * `{"module_sha256", "decisions", "policy_hash", "revision"}`. On any error, stdout is one
 * line `{"error": {code, message, help}}`, --out is not written, and the exit code is 1.
 */

import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ClearanceError, QUERY_LEN, decodeDecisions, loadNode } from '../index.js';

/** @import { Denial, ErrorData } from '../index.js' */

/** The most queries decided in one call. */
const CHUNK = 65536;

const USAGE = 'usage: node web/test/parity-runner.mjs --snapshot <snapshot.bin> --queries <queries.bin> --out <decisions.bin> [--changes <changes.json>] [--wasm <module.wasm>]';

/** An error carried to the single JSON line of a failed run. */
class RunError extends Error {
  /**
   * @param {ErrorData} data
   */
  constructor(data) {
    super(data.message);
    this.data = data;
  }
}

/**
 * Ends the run with an error.
 *
 * @param {string} code
 * @param {string} message
 * @param {string} [help]
 * @returns {never}
 */
function fail(code, message, help = '') {
  throw new RunError({ code, message, help });
}

/**
 * The message of what was thrown.
 *
 * @param {unknown} e
 */
function messageOf(e) {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Gives the value of a session call, or throws its error as the runner's.
 *
 * @template T
 * @param {() => T} call
 * @returns {T}
 */
function must(call) {
  try {
    return call();
  } catch (e) {
    if (e instanceof ClearanceError) throw new RunError(e.toJSON());
    throw e;
  }
}

/**
 * @param {string} path
 * @param {string} what
 */
async function read(path, what) {
  try {
    return await readFile(path);
  } catch (e) {
    return fail('runner.io', `cannot read the ${what} ${path}: ${messageOf(e)}`);
  }
}

/**
 * Runs the runner on command-line arguments; gives the summary line's object.
 *
 * @param {string[]} argv the arguments after the script
 */
async function run(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { snapshot: { type: 'string' }, queries: { type: 'string' }, out: { type: 'string' }, changes: { type: 'string' }, wasm: { type: 'string' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    fail('runner.usage', messageOf(e), USAGE);
  }
  const parsed = values;
  /** @param {'snapshot' | 'queries' | 'out'} name */
  const required = (name) => parsed[name] || fail('runner.usage', `--${name} is required`, USAGE);
  const snapshotPath = required('snapshot');
  const queriesPath = required('queries');
  const outPath = required('out');
  const snapshot = await read(snapshotPath, 'snapshot');
  const queries = await read(queriesPath, 'queries');
  const module = await loadNode(values.wasm).catch((e) => fail('runner.module', `cannot load the module: ${messageOf(e)}`));
  const session = new module.Session();
  must(() => session.loadSnapshot(snapshot));
  if (values.changes) {
    /** @type {unknown} */
    let changes;
    try {
      changes = JSON.parse(new TextDecoder().decode(await read(values.changes, 'changes')));
    } catch (e) {
      if (e instanceof RunError) throw e;
      fail('runner.changes', `the changes are not JSON: ${messageOf(e)}`);
    }
    if (!Array.isArray(changes)) fail('runner.changes', 'the changes are not a list of delta lists');
    for (const deltas of changes) must(() => session.applyDeltas(deltas));
  }
  const info = must(() => session.info());
  const step = CHUNK * QUERY_LEN;
  const parts = [];
  let decisions = 0;
  for (let at = 0; at < queries.length; at += step) {
    const chunk = queries.subarray(at, Math.min(at + step, queries.length));
    const raw = must(() => session.checkIdsRaw(chunk));
    const n = decodeDecisions(raw)?.length;
    if (n !== chunk.length / QUERY_LEN) {
      fail('runner.decisions', `the module gave ${n ?? 'undecodable'} decisions for ${chunk.length / QUERY_LEN} queries at byte ${at}`);
    }
    decisions += n;
    parts.push(raw);
  }
  try {
    await writeFile(outPath, Buffer.concat(parts));
  } catch (e) {
    fail('runner.io', `cannot write ${outPath}: ${messageOf(e)}`);
  }
  session.free();
  return { module_sha256: module.moduleHash, decisions, policy_hash: info.policy_hash, revision: info.revision };
}

/** Runs as a command: one JSON line on stdout, exit code 1 on any error. */
async function main() {
  try {
    process.stdout.write(`${JSON.stringify(await run(process.argv.slice(2)))}\n`);
  } catch (e) {
    const error = e instanceof RunError ? e.data : { code: 'runner.failed', message: e instanceof Error ? e.message : String(e), help: '' };
    process.stdout.write(`${JSON.stringify({ error })}\n`);
    process.exitCode = 1;
  }
}

// `node --test test/` runs every script under test/, this one included, with no arguments:
// there it is a command, not a test, and does nothing.
if (!(process.argv.length === 2 && process.env.NODE_TEST_CONTEXT !== undefined)) await main();
