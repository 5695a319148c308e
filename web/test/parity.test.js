// The parity runner as the Rust parity suite runs it: a snapshot and queries on disk, the
// runner in a child process, and its decision bytes compared with the session's own.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { QUERY_LEN, decodeDecisions, encodeQueries } from '../index.js';
import { loadedSession, ok, present, req } from './fixtures.js';

/** @import { ClearanceModule, Request, Session } from '../index.js' */

/**
 * What `promisify(execFile)` rejects with when the child fails: its exit code (a number;
 * a string for a spawn error) and its output.
 *
 * @typedef {Error & {code?: number | string, stdout: string}} ExecFailure
 */

const RUNNER = fileURLToPath(new URL('./parity-runner.mjs', import.meta.url));
const CHUNK = 65536;

/**
 * Runs the runner; gives its exit code and its stdout lines.
 *
 * @param {string[]} args
 */
async function runner(args) {
  // The child is a command, not a test: keep the test runner's marker out of its env.
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [RUNNER, ...args], { env, maxBuffer: 1 << 20 });
    return { code: 0, lines: stdout.split('\n').filter(Boolean) };
  } catch (e) {
    const failure = /** @type {ExecFailure} */ (e);
    if (typeof failure.code !== 'number') throw e;
    return { code: failure.code, lines: failure.stdout.split('\n').filter(Boolean) };
  }
}

describe('parity-runner.mjs', () => {
  /** @type {string} */
  let dir;
  /** @type {ClearanceModule} */
  let module;
  /** @type {Session} */
  let session;
  /** @type {Uint8Array} */
  let queries;
  /** @param {string} name */
  const file = (name) => join(dir, name);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'clearance-parity-'));
    ({ module, session } = await loadedSession('airline'));
    // Revision 1, so the runner has to report the snapshot's own revision.
    session.applyDeltas([{ op: 'add_tuple', tuple: { resource: 'event:aog_lhr', relation: 'assigned', subject: 'organization:jetfix' } }]);
    await writeFile(file('snapshot.bin'), ok(session.snapshotBytes()));
    /** @type {Request[]} */
    const requests = [];
    for (const principal of ['user:aeroserv_tech', 'user:jetfix_tech', 'invitee:g_sms', 'user:former_controller', 'user:occ_controller', 'user:lhr_tech']) {
      for (const action of ['view', 'update', 'message']) {
        for (const now of ['2026-05-01T10:00:00Z', '2026-05-01T19:00:00Z', 1777629600]) requests.push(req(principal, action, 'event:aog_lhr', now));
      }
    }
    const resolved = ok(session.resolve(requests)).flatMap((r) => ('query' in r ? [r.query] : []));
    assert.ok(resolved.length > 40);
    // More than one chunk, with forged queries mixed in.
    const n = CHUNK + 4321;
    queries = new Uint8Array(n * QUERY_LEN);
    for (let i = 0; i < n; i += 1) queries.set(resolved[i % resolved.length], i * QUERY_LEN);
    queries.set(encodeQueries([{ principal: 0xffffffff, resource: 0, action: 0, now: 0 }]), 7 * QUERY_LEN);
    queries.set(encodeQueries([{ principal: 1, resource: { matrix: 99, row: 0 }, action: 0, now: 0 }]), (CHUNK + 1) * QUERY_LEN);
    await writeFile(file('queries.bin'), queries);
  });

  after(async () => {
    session.free();
    await rm(dir, { recursive: true, force: true });
  });

  test('writes the decisions the session makes and reports one JSON line', async () => {
    const { code, lines } = await runner(['--snapshot', file('snapshot.bin'), '--queries', file('queries.bin'), '--out', file('decisions.bin')]);
    assert.equal(code, 0, lines.join('\n'));
    assert.equal(lines.length, 1);
    const info = ok(session.info());
    assert.deepEqual(JSON.parse(lines[0]), {
      module_sha256: module.moduleHash,
      decisions: queries.length / QUERY_LEN,
      policy_hash: info.policy_hash,
      revision: 1,
    });
    const written = new Uint8Array(await readFile(file('decisions.bin')));
    assert.deepEqual(written, session.checkIdsRaw(queries));
    const decisions = present(decodeDecisions(written));
    assert.equal(decisions.length, queries.length / QUERY_LEN);
    assert.equal(decisions[7].allowed, false);
    assert.equal(decisions[CHUNK + 1].allowed, false);
    assert.ok(decisions.some((d) => d.allowed) && decisions.some((d) => !d.allowed));
  });

  test('no queries is no decisions', async () => {
    await writeFile(file('none.bin'), new Uint8Array(0));
    const { code, lines } = await runner(['--snapshot', file('snapshot.bin'), '--queries', file('none.bin'), '--out', file('none.out')]);
    assert.equal(code, 0, lines.join('\n'));
    assert.equal(JSON.parse(lines[0]).decisions, 0);
    assert.equal((await readFile(file('none.out'))).length, 0);
  });

  test('errors are one JSON line and exit code 1, and nothing is written', async () => {
    await writeFile(file('garbage.bin'), Uint8Array.from([1, 2, 3, 4, 5]));
    await writeFile(file('ragged.bin'), queries.subarray(0, QUERY_LEN * 3 + 5));
    /** @type {Array<[string[], string]>} */
    const cases = [
      [['--snapshot', file('garbage.bin'), '--queries', file('queries.bin'), '--out', file('e1.bin')], 'snapshot.malformed'],
      [['--snapshot', file('snapshot.bin'), '--queries', file('ragged.bin'), '--out', file('e2.bin')], 'request.malformed'],
      [['--snapshot', file('missing.bin'), '--queries', file('queries.bin'), '--out', file('e3.bin')], 'runner.io'],
      [['--snapshot', file('snapshot.bin'), '--queries', file('queries.bin')], 'runner.usage'],
      [['--snapshot', file('snapshot.bin'), '--queries', file('queries.bin'), '--out', file('e5.bin'), '--fast'], 'runner.usage'],
      [['--snapshot', file('snapshot.bin'), '--queries', file('queries.bin'), '--out', file('e6.bin'), '--wasm', file('garbage.bin')], 'runner.module'],
      [[], 'runner.usage'],
    ];
    for (const [args, expected] of cases) {
      const { code, lines } = await runner(args);
      assert.equal(code, 1, args.join(' '));
      assert.equal(lines.length, 1);
      const { error } = JSON.parse(lines[0]);
      assert.equal(error.code, expected, error.message);
      assert.equal(typeof error.message, 'string');
      assert.equal(typeof error.help, 'string');
    }
    for (const name of ['e1.bin', 'e2.bin', 'e3.bin', 'e5.bin', 'e6.bin']) {
      await assert.rejects(readFile(file(name)), { code: 'ENOENT' }, name);
    }
  });
});
