#!/usr/bin/env node
/**
 * The module's JS faces measured in Node and in headless Chromium (Debian's, driven by
 * playwright-core) on the medium world: the same measuring code (`faces.mjs`) in both.
 * Reads what `cargo run --release -p clearance-benches --example js_inputs` writes to
 * `target/bench-js/`.
 *
 *   node web/bench/js-face.mjs [dir] [--node-only]
 */

import { readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Answers, isError, loadNode } from '../index.js';
import { measure } from './faces.mjs';

const root = fileURLToPath(new URL('../../', import.meta.url));
const args = process.argv.slice(2);
const dir = args.find((a) => !a.startsWith('--')) ?? join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'bench-js');
const wasmPath = fileURLToPath(new URL('../pkg/clearance_bg.wasm', import.meta.url));

/**
 * @param {string} runtime
 * @param {any} result
 */
function report(runtime, result) {
  for (const call of ['check', 'allowedActions', 'batch64']) {
    const faces = Object.entries(result[call]).map(([f, v]) => `${f} ${v.p50.toFixed(2)}/${v.p99.toFixed(2)}`).join(', ');
    console.log(`report js-face ${runtime} ${call} p50/p99 us: ${faces}`);
  }
}

const snapshot = readFileSync(join(dir, 'medium.snapshot'));
const requests = JSON.parse(readFileSync(join(dir, 'medium.requests.json'), 'utf8'));
console.log(`report js-face module_bytes=${statSync(wasmPath).size} node=${process.version} requests=${requests.length}`);

const glue = await import(new URL('../pkg/clearance.js?face', import.meta.url).href);
glue.initSync({ module: readFileSync(wasmPath) });
const module = await loadNode();
const session = new module.Session();
const loaded = session.loadSnapshot(snapshot);
if (isError(loaded)) throw new Error(loaded.error.message);
report('node', measure(glue, Answers, session, snapshot, requests));

if (!args.includes('--node-only')) {
  const { launch } = await import('../browser/chromium.mjs');
  const web = join(root, 'web');
  /** @type {{[extension: string]: string}} */
  const types = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm' };
  const http = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname === '/') {
        res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>faces</title>');
        return;
      }
      const rel = normalize(url.pathname).replace(/^[/\\]+/, '');
      if (rel.startsWith('..')) throw new Error('outside');
      const file = rel.startsWith('inputs/') ? join(dir, rel.slice(7)) : join(web, rel);
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => http.listen(0, '127.0.0.1', () => resolve(undefined)));
  const browser = await launch();
  try {
    const address = http.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${address.port}/`);
    const result = await page.evaluate(async () => {
      const g = await import('/pkg/clearance.js');
      await g.default({ module_or_path: '/pkg/clearance_bg.wasm' });
      const c = await import('/index.js');
      const { measure: m } = await import('/bench/faces.mjs');
      const snap = new Uint8Array(await (await fetch('/inputs/medium.snapshot')).arrayBuffer());
      const rs = await (await fetch('/inputs/medium.requests.json')).json();
      const mod = await c.loadBrowser('/pkg/clearance_bg.wasm');
      const s = new mod.Session();
      s.loadSnapshot(snap);
      return { ua: navigator.userAgent.match(/Chrome\/[\d.]+/)?.[0], r: m(g, c.Answers, s, snap, rs, 4) };
    });
    console.log(`report js-face chromium=${result.ua}`);
    report('chromium', result.r);
  } finally {
    await browser.close();
    http.close();
  }
}
