// loadBrowser under Node: the module fetched over HTTP from a local server, hashed with
// WebCrypto and compiled asynchronously, as a browser does it.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';
import { loadBrowser, loadNode } from '../index.js';
import { WASM_SHA256_URL, WASM_URL, codes, policySources, req, worldText } from './fixtures.js';

/** @type {import('node:http').Server} */
let server;
/** @type {string} */
let base;

before(async () => {
  const wasm = readFileSync(WASM_URL);
  server = createServer((request, response) => {
    if (request.url === '/clearance_bg.wasm') {
      response.writeHead(200, { 'content-type': 'application/wasm' });
      response.end(wasm);
    } else {
      response.writeHead(404);
      response.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object', 'the server listens on a TCP port');
  base = `http://127.0.0.1:${address.port}`;
});

after(() => new Promise((resolve) => server.close(resolve)));

test('loadBrowser fetches, hashes and runs the module', async () => {
  const module = await loadBrowser(`${base}/clearance_bg.wasm`);
  assert.equal(module.moduleHash, readFileSync(WASM_SHA256_URL, 'utf8').trim().split(/\s+/)[0]);
  assert.equal(module.moduleHash, (await loadNode()).moduleHash);
  const session = new module.Session();
  session.loadPolicy(policySources());
  session.loadFacts(worldText('airline'));
  assert.equal(session.check(req('user:aeroserv_tech', 'view', 'event:aog_lhr')).allowed, true);
  assert.deepEqual(codes(session.check(req('user:former_controller', 'view', 'event:aog_lhr'))), ['gate.active']);
});

test('loadBrowser rejects when the fetch fails', async () => {
  await assert.rejects(loadBrowser(`${base}/missing.wasm`), /404/);
});

test('loadNode rejects a file that is not the module', async () => {
  await assert.rejects(loadNode(new URL('../package.json', import.meta.url)));
});
