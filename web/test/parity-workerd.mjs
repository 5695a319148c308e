#!/usr/bin/env node
/**
 * The workerd side of the parity suite: decides every job's binary queries with the wasm
 * module inside workerd (through Miniflare, `workerd.js`), in the worker
 * `workers/parity.js`, and writes the raw decision bytes for comparison byte
 * for byte with the other runtimes.
 *
 *   node web/test/parity-workerd.mjs --work <dir> --jobs <n>
 *
 * Reads `<dir>/job<i>.snapshot`, `<dir>/job<i>.changes` and `<dir>/job<i>.queries` for
 * i < n (as the Node runner takes them), and writes `<dir>/job<i>.workerd`: the decisions
 * without the frame byte, in query order. On success, stdout is one line of JSON:
 * `{"module_sha256", "decisions", "jobs", "runtime"}`; on any error, one line
 * `{"error": {code, message, help}}` and exit code 1.
 */

import { readFile, writeFile } from 'node:fs/promises';
import { jobArgs } from './jobs.js';
import { COMPATIBILITY_DATE, startWorker } from './workerd.js';

/** @import { Miniflare } from 'miniflare' */

const USAGE = 'usage: node web/test/parity-workerd.mjs --work <dir> --jobs <n>';
/** The most queries decided in one request (24 bytes each). */
const CHUNK = 65536;
const ORIGIN = 'http://parity.worker';

/**
 * A request to the worker; throws with the worker's error unless it answers 2xx.
 *
 * @param {Miniflare} mf
 * @param {string} path
 * @param {string} method
 * @param {Uint8Array | string} body
 * @param {string} what for the error
 */
async function send(mf, path, method, body, what) {
  const res = await mf.dispatchFetch(`${ORIGIN}${path}`, { method, body });
  if (!res.ok) throw new Error(`${what}: ${res.status} ${await res.text()}`);
  return res;
}

/**
 * Runs on command-line arguments; gives the summary line's object.
 *
 * @param {string[]} argv
 */
async function run(argv) {
  const args = jobArgs(argv, USAGE);
  if ('error' in args) return args;
  const { work, jobs } = args;
  const { mf, moduleHash } = startWorker('workers/parity.js');
  try {
    let decisions = 0;
    for (let i = 0; i < jobs; i++) {
      await send(mf, '/snapshot', 'PUT', await readFile(`${work}/job${i}.snapshot`), `job ${i}: the snapshot`);
      await send(mf, '/changes', 'POST', await readFile(`${work}/job${i}.changes`, 'utf8'), `job ${i}: the changes`);
      const queries = await readFile(`${work}/job${i}.queries`);
      /** @type {Uint8Array[]} */
      const parts = [];
      for (let at = 0; at < queries.length; at += CHUNK * 24) {
        const res = await send(mf, '/check', 'POST', queries.subarray(at, Math.min(queries.length, at + CHUNK * 24)), `job ${i}: the queries`);
        parts.push(new Uint8Array(await res.arrayBuffer()));
      }
      await writeFile(`${work}/job${i}.workerd`, Buffer.concat(parts));
      decisions += queries.length / 24;
    }
    return { module_sha256: moduleHash, decisions, jobs, runtime: `workerd (compatibility date ${COMPATIBILITY_DATE})` };
  } finally {
    await mf.dispose();
  }
}

async function main() {
  try {
    const result = await run(process.argv.slice(2));
    process.stdout.write(`${JSON.stringify(result)}\n`);
    if ('error' in result) process.exitCode = 1;
  } catch (e) {
    process.stdout.write(`${JSON.stringify({ error: { code: 'runner.failed', message: e instanceof Error ? e.message : String(e), help: '' } })}\n`);
    process.exitCode = 1;
  }
}

// `node --test web/test/` loads every file here; run only when called as a command.
if (!(process.argv.length === 2 && process.env.NODE_TEST_CONTEXT !== undefined)) await main();
