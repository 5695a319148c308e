#!/usr/bin/env node
/**
 * The Chromium side of the parity suite: decides every job's binary queries with the wasm
 * module inside headless Chromium (Debian's, driven by playwright-core) and writes the raw
 * decision bytes, for comparison byte for byte with the other runtimes.
 *
 *   node web/browser/parity-chromium.mjs --work <dir> --jobs <n>
 *
 * Reads `<dir>/job<i>.snapshot`, `<dir>/job<i>.changes` (applied in place after the
 * snapshot loads) and `<dir>/job<i>.queries` for i < n (as the Node runner takes them), and writes `<dir>/job<i>.chromium`: the decisions without the frame byte,
 * in query order. The page loads `index.js` and the module over HTTP from a local server,
 * as a browser does. On success, stdout is one line of JSON:
 * `{"module_sha256", "decisions", "jobs", "browser"}`; on any error, one line
 * `{"error": {code, message, help}}` and exit code 1.
 */

import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { jobArgs } from '../test/jobs.js';
import { ROOT, launch } from './chromium.mjs';

const USAGE = 'usage: node web/browser/parity-chromium.mjs --work <dir> --jobs <n>';
/** @type {{[extension: string]: string}} */
const TYPES = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html' };

/**
 * Serves `web/` read-only, the work directory's inputs, and takes the decisions back.
 *
 * @param {string} work
 */
function server(work) {
  const web = join(ROOT, 'web');
  return createServer(async (req, res) => {
    try {
      // A server's requests always have a URL.
      if (req.url === undefined) throw new Error('a request without a URL');
      const url = new URL(req.url, 'http://localhost');
      if (req.method === 'PUT' && /^\/out\/job\d+$/.test(url.pathname)) {
        const chunks = [];
        for await (const c of req) chunks.push(c);
        await writeFile(join(work, `${url.pathname.slice(5)}.chromium`), Buffer.concat(chunks));
        res.writeHead(204).end();
        return;
      }
      if (url.pathname === '/') {
        res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>parity</title>');
        return;
      }
      const rel = normalize(url.pathname).replace(/^[/\\]+/, '');
      if (rel.startsWith('..')) throw new Error('outside');
      const file = /^jobs\/job\d+\.(snapshot|queries|changes)$/.test(rel) ? join(work, rel.slice(5)) : join(web, rel);
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
}

/**
 * Runs inside the page: decides every job, sends the decisions back.
 *
 * @param {{jobs: number, chunk: number}} options
 */
async function decideAll({ jobs, chunk }) {
  const c = await import('/index.js');
  const module = await c.loadBrowser('/pkg/clearance_bg.wasm');
  const session = new module.Session();
  let decisions = 0;
  /** @param {string} path */
  const bytes = async (path) => new Uint8Array(await (await fetch(path)).arrayBuffer());
  for (let i = 0; i < jobs; i++) {
    const loaded = session.loadSnapshot(await bytes(`/jobs/job${i}.snapshot`));
    if (c.isError(loaded)) return { error: { ...loaded.error, message: `job ${i}: ${loaded.error.message}` } };
    // Each change applied in place, as a following copy applies it.
    for (const deltas of await (await fetch(`/jobs/job${i}.changes`)).json()) {
      const applied = session.applyDeltas(deltas);
      if (c.isError(applied)) return { error: { ...applied.error, message: `job ${i}: ${applied.error.message}` } };
    }
    const queries = await bytes(`/jobs/job${i}.queries`);
    /** @type {Uint8Array[]} */
    const parts = [];
    for (let at = 0; at < queries.length; at += chunk * c.QUERY_LEN) {
      const raw = session.checkIdsRaw(queries.subarray(at, Math.min(queries.length, at + chunk * c.QUERY_LEN)));
      if (c.isError(raw)) return { error: { ...raw.error, message: `job ${i}: ${raw.error.message}` } };
      parts.push(raw);
    }
    // The module's answers are copies in the page's own memory (no SharedArrayBuffer).
    const put = await fetch(`/out/job${i}`, { method: 'PUT', body: new Blob(/** @type {Uint8Array<ArrayBuffer>[]} */ (parts)) });
    if (!put.ok) return { error: { code: 'runner.io', message: `job ${i}: the decisions were not taken (${put.status})`, help: '' } };
    decisions += queries.length / c.QUERY_LEN;
  }
  session.free();
  return { module_sha256: module.moduleHash, decisions, jobs, browser: navigator.userAgent.match(/Chrome\/[\d.]+/)?.[0] ?? navigator.userAgent };
}

/**
 * Runs on command-line arguments; gives the summary line's object.
 *
 * @param {string[]} argv the arguments after the script
 */
async function run(argv) {
  const args = jobArgs(argv, USAGE);
  if ('error' in args) return args;
  const { work, jobs } = args;
  const http = server(work);
  await new Promise((resolve) => http.listen(0, '127.0.0.1', () => resolve(undefined)));
  const browser = await launch();
  try {
    const address = http.address();
    if (address === null || typeof address === 'string') throw new Error('the server has no TCP port');
    const page = await browser.newPage();
    /** @type {string[]} */
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${address.port}/`);
    const result = await page.evaluate(decideAll, { jobs, chunk: 65536 });
    if (errors.length && !result.error) return { error: { code: 'runner.page', message: errors.join('; '), help: '' } };
    return result;
  } finally {
    await browser.close();
    http.close();
  }
}

try {
  const result = await run(process.argv.slice(2));
  process.stdout.write(`${JSON.stringify(result)}\n`);
  if (result.error) process.exitCode = 1;
} catch (e) {
  process.stdout.write(`${JSON.stringify({ error: { code: 'runner.failed', message: e instanceof Error ? e.message : String(e), help: '' } })}\n`);
  process.exitCode = 1;
}
