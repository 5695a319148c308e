#!/usr/bin/env node
/**
 * The JS path in Node: the module loaded with `loadNode`, the medium world's snapshot
 * loaded, then binary batches (`checkIdsRaw`), single checks by name (`check`, the value
 * face) and changes applied in place (`applyDeltas`, a value in and out) timed. Reads what `cargo bench --bench runtimes` writes to
 * `target/bench-js/`; run by `cargo xtask bench`.
 *
 *   node web/bench/js-path.mjs [dir]
 */

import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QUERY_LEN, isError, loadNode } from '../index.js';

/** @import { Denial, Request } from '../index.js' */

const root = fileURLToPath(new URL('../../', import.meta.url));
const dir = process.argv[2] ?? join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'bench-js');

/**
 * The value of a session call; throws its error.
 *
 * @template T
 * @param {T | Denial} answer
 * @returns {T}
 */
function must(answer) {
  if (isError(answer)) throw new Error(`${answer.error.code}: ${answer.error.message}`);
  return answer;
}

/**
 * The `p` quantile of `values` (nearest rank below).
 *
 * @param {number[]} values
 * @param {number} p
 */
function pct(values, p) {
  const v = [...values].sort((a, b) => a - b);
  return v[Math.floor((v.length - 1) * p)];
}

let snapshot;
let queries;
/** @type {Request[]} */
let requests;
try {
  snapshot = readFileSync(join(dir, 'medium.snapshot'));
  queries = readFileSync(join(dir, 'medium.queries'));
  requests = JSON.parse(readFileSync(join(dir, 'medium.requests.json'), 'utf8'));
} catch (e) {
  console.error(`js-path: ${e instanceof Error ? e.message : String(e)}; run \`cargo bench -p clearance-benches --bench runtimes\` first`);
  process.exit(1);
}

let t = performance.now();
const module = await loadNode();
const compiled = performance.now() - t;
t = performance.now();
const session = new module.Session();
const info = must(session.loadSnapshot(snapshot));
const load = performance.now() - t;

// Binary batches: the whole query file per call, repeated.
const n = queries.length / QUERY_LEN;
must(session.checkIdsRaw(queries));
const rounds = 20;
t = performance.now();
for (let i = 0; i < rounds; i++) must(session.checkIdsRaw(queries));
const batchMs = (performance.now() - t) / rounds;

// Single checks by names through `Session.check` (the value face), one call each.
for (const r of requests.slice(0, 200)) session.check(r);
const per = requests.map((r) => {
  const s = performance.now();
  for (let i = 0; i < 8; i++) session.check(r);
  return ((performance.now() - s) / 8) * 1e3;
});

// Changes applied in place (`applyDeltas`), one change of one delta per call: the users
// of the requests deactivated, then active again, each timed.
const users = [...new Set(requests.map((r) => r.principal).filter((p) => p.startsWith('user:')))].slice(0, 500);
/** @type {number[]} */
const applied = [];
for (const status of ['deactivated', 'active']) {
  for (const entity of users) {
    const s = performance.now();
    must(session.applyDeltas([{ op: 'set_attr', entity, attr: 'status', value: status }]));
    applied.push((performance.now() - s) * 1e3);
  }
}

const wasmBytes = statSync(fileURLToPath(new URL('../pkg/clearance_bg.wasm', import.meta.url))).size;
console.log(`report js-path node=${process.version} module_bytes=${wasmBytes} module_sha256=${module.moduleHash.slice(0, 12)} compile_ms=${compiled.toFixed(1)} load_snapshot_ms=${load.toFixed(1)} entities=${info.entities} tuples=${info.tuples}`);
console.log(`report js-path batch: ${n} queries in ${batchMs.toFixed(2)} ms = ${(n / batchMs / 1e3).toFixed(2)} M checks/s (${((batchMs * 1e6) / n).toFixed(0)} ns per check)`);
console.log(`report js-path check by names (Session.check): p50 ${pct(per, 0.5).toFixed(2)} us, p99 ${pct(per, 0.99).toFixed(2)} us over ${per.length} requests`);
console.log(`report js-path applyDeltas (one delta, a value in and out): p50 ${pct(applied, 0.5).toFixed(2)} us, p99 ${pct(applied, 0.99).toFixed(2)} us over ${applied.length} changes`);
session.free();
