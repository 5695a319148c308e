#!/usr/bin/env node
/**
 * The JS package's structured calls timed in Node on the medium world: loading the policy
 * and the facts, applying a change, a write judged, explaining, the matrix, the outline,
 * `info`, listing, resolving, the facts given back and a snapshot loaded. With
 * `--against`, the same calls on another copy of the package (a checkout of an earlier
 * commit with its module built by `cargo xtask wasm`), interleaved call by call (each going
 * first in every other round), so a noisy machine slows both alike. Each figure is the median over the rounds (after one untimed)
 * of the mean per call in the round.
 *
 *   cargo run --release -p clearance-benches --example world_json -- medium medium.json
 *   node web/bench/structured.mjs medium.json [--against <web dir>] [--rounds N]
 */

import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const root = fileURLToPath(new URL('../../', import.meta.url));
const USAGE = 'usage: node web/bench/structured.mjs <medium facts.json> [--against <web dir>] [--rounds N]';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { against: { type: 'string' }, rounds: { type: 'string', default: '7' } },
});
const factsPath = positionals[0];
const rounds = Number(values.rounds);
if (factsPath === undefined || !Number.isInteger(rounds) || rounds < 1) {
  console.error(USAGE);
  process.exit(1);
}

const NOW = '2026-05-01T10:00:00Z';
const sources = readdirSync(join(root, 'policies'))
  .filter((f) => f.endsWith('.policy'))
  .sort()
  .map((name) => ({ name, text: readFileSync(join(root, 'policies', name), 'utf8') }));
/** @type {{entities: {type: string, id: string, account?: string}[]}} */
const facts = JSON.parse(readFileSync(factsPath, 'utf8'));

// Requests on the world: users and the events of their account, 64 of each.
const users = facts.entities.filter((e) => e.type === 'user').filter((_, i) => i % 157 === 0).slice(0, 64);
const events = facts.entities.filter((e) => e.type === 'event');
const requests = users.map((u, i) => {
  const own = events.filter((e) => e.account === u.account);
  const event = own[(i * 7) % own.length] ?? events[0];
  return { principal: `user:${u.id}`, action: 'view', resource: `event:${event.id}`, now: NOW };
});
const user = requests[0].principal;
const change = [{ op: 'set_attr', entity: user, attr: 'status', value: 'active' }];

/**
 * A package's session, loaded with the policy and the medium facts.
 *
 * @param {string} web the package's directory
 */
async function open(web) {
  const pkg = await import(pathToFileURL(join(web, 'index.js')).href);
  const module = await pkg.loadNode();
  const session = new module.Session();
  session.loadPolicy(sources);
  session.loadFacts(facts);
  // A session without facts, for `loadPolicy` alone (with facts, it builds them again).
  const bare = new module.Session();
  return { name: web, session, bare, snapshot: session.snapshotBytes() };
}

/**
 * The calls timed: a name, how many times a round, and the call on a session.
 *
 * @type {[string, number, (p: {session: any, bare: any, snapshot: Uint8Array}) => unknown][]}
 */
const CALLS = [
  ['applyDeltas (one delta)', 200, ({ session }) => session.applyDeltas(change)],
  ['authorizeDeltas (one delta)', 200, ({ session }) => session.authorizeDeltas(user, change, NOW)],
  ['write (one delta)', 200, ({ session }) => session.write(user, change, NOW)],
  ['explain', 4, ({ session }) => requests.forEach((r) => session.explain(r))],
  ['matrix', 50, ({ session }) => session.matrix('operations')],
  ['schema', 50, ({ session }) => session.schema()],
  ['info', 500, ({ session }) => session.info()],
  ['call({op: "info"})', 500, ({ session }) => session.call({ op: 'info' })],
  ['listResources', 20, ({ session }) => session.listResources(user, 'view', 'event', NOW)],
  ['resolve (64 requests)', 20, ({ session }) => session.resolve(requests)],
  ['loadPolicy', 3, ({ bare }) => bare.loadPolicy(sources)],
  // The large calls last, so their garbage is collected after the small calls are timed;
  // `loadSnapshot` leaves a snapshot without facts, and `loadFacts` the facts again.
  ['facts', 1, ({ session }) => session.facts()],
  ['loadSnapshot', 1, ({ session, snapshot }) => session.loadSnapshot(snapshot)],
  ['loadFacts', 1, ({ session }) => session.loadFacts(facts)],
];

/**
 * @param {number[]} v
 */
function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
}

const packages = [await open(join(root, 'web'))];
if (values.against !== undefined) packages.push(await open(resolve(values.against)));
const facts0 = packages[0].session.info();
console.log(`report structured node=${process.version} entities=${facts0.entities} tuples=${facts0.tuples} rounds=${rounds}`);

/** @type {Map<string, number[][]>} per call, per package, the mean of each round (us) */
const times = new Map(CALLS.map(([name]) => [name, packages.map(() => [])]));
// A first round untimed, so every call has run before it is timed.
for (let round = -1; round < rounds; round += 1) {
  for (const [name, n, call] of CALLS) {
    const per = n * (name === 'explain' ? requests.length : 1);
    // Each package goes first in every other round.
    const order = round % 2 === 0 ? packages.map((_, i) => i) : packages.map((_, i) => packages.length - 1 - i);
    for (const i of order) {
      const t = performance.now();
      for (let k = 0; k < n; k += 1) call(packages[i]);
      if (round >= 0) times.get(name)?.[i].push(((performance.now() - t) * 1e3) / per);
    }
  }
}
for (const [name] of CALLS) {
  const figures = packages.map((p, i) => {
    const us = median(times.get(name)?.[i] ?? []);
    return `${i === 0 ? 'this' : 'against'} ${us >= 1000 ? `${(us / 1000).toFixed(1)} ms` : `${us.toFixed(2)} us`}`;
  });
  console.log(`report structured ${name}: ${figures.join(', ')}`);
}
for (const p of packages) {
  p.session.free();
  p.bare.free();
}
