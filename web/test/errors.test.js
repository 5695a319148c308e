// Bad input through the JavaScript face: every failure is a ClearanceError with a code,
// never another throw and never an allow; a trap inside the module poisons its instance.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { before, describe, test } from 'node:test';
import { ClearanceError, Session, QUERY_LEN, encodeQueries, fromGlue, isError, loadNode } from '../index.js';
import { NOW, WASM_URL, failure, invalid, loadedSession, ok, policySources, present, req } from './fixtures.js';

/** @import { Denial, Session as SessionApi } from '../index.js' */

const EVENT = 'event:aog_lhr';

/**
 * Asserts that `f` throws a `ClearanceError` of `code` (any code if not given), with a
 * message and help; gives it.
 *
 * @param {() => unknown} f
 * @param {string} [code]
 * @returns {ClearanceError}
 */
function assertDenial(f, code) {
  const e = failure(f, code);
  assert.ok(e.code.length > 0 && e.message.length > 0);
  assert.equal(typeof e.help, 'string');
  assert.deepEqual(Object.keys(e.toJSON()).sort(), ['code', 'help', 'message']);
  return e;
}

/**
 * Asserts that nothing in an answer is an allow.
 *
 * @param {unknown} answer
 */
function assertNoAllow(answer) {
  const text = JSON.stringify(answer, (_, v) => (v instanceof Uint8Array ? [...v] : v)) ?? '';
  assert.ok(!text.includes('"allowed":true'), text.slice(0, 300));
}

describe('bad input', () => {
  /** @type {SessionApi} */
  let session;
  before(async () => {
    ({ session } = await loadedSession('airline'));
  });

  test('garbage snapshot bytes are refused and the loaded snapshot keeps serving', () => {
    const info = session.info();
    assertDenial(() => session.loadSnapshot(Uint8Array.from([1, 2, 3])), 'snapshot.malformed');
    assertDenial(() => session.loadSnapshot(new Uint8Array(0)), 'snapshot.malformed');
    const real = ok(session.snapshotBytes());
    const flipped = real.slice(0, real.length - 7);
    assertDenial(() => session.loadSnapshot(flipped), 'snapshot.malformed');
    assertDenial(() => session.loadSnapshot(invalid('snapshot')), 'request.malformed');
    assertDenial(() => session.loadSnapshot(invalid(null)), 'request.malformed');
    assert.deepEqual(session.info(), info);
    assert.equal(session.check(req('user:aeroserv_tech', 'view', EVENT)).allowed, true);
  });

  test('malformed JSON strings are refused', () => {
    assertDenial(() => session.check('{"principal": '), 'request.malformed');
    assertDenial(() => session.checkBatch('[{]'), 'request.malformed');
    assertDenial(() => session.explain('not json'), 'request.malformed');
    assertDenial(() => session.loadFacts('{'), 'request.malformed');
    assertDenial(() => session.loadPolicy('[{"name": "a.policy"'), 'request.malformed');
    assertDenial(() => session.applyDeltas('[,]'), 'request.malformed');
    assertDenial(() => session.resolve('[{'), 'request.malformed');
    assertDenial(() => session.call('{"op": "check"'), 'request.malformed');
    assertDenial(() => session.call({ op: 'launch' }), 'request.malformed');
    assertDenial(() => session.check(invalid({ ...req('user:aeroserv_tech', 'view', EVENT), extra: true })), 'request.malformed');
    assert.equal(ok(session.info()).revision, 0, 'nothing was applied');
  });

  test('values that are not JSON are refused before the module', () => {
    const cyclic = {};
    cyclic.self = cyclic;
    assertDenial(() => session.check(invalid(cyclic)), 'request.malformed');
    assertDenial(() => session.check(invalid({ ...req('user:aeroserv_tech', 'view', EVENT), now: 1.5 })), 'request.malformed');
    assertDenial(() => session.check(invalid(undefined)), 'request.malformed');
    assertDenial(() => session.allowedActions('user:aeroserv_tech', EVENT, 1.5), 'request.malformed');
    assertDenial(() => session.allowedActions(invalid(1), invalid(2), 3), 'request.malformed');
    assertDenial(() => session.listResources('user:aeroserv_tech', 'view', invalid(null), NOW), 'request.malformed');
    assertDenial(() => session.listPrincipals(EVENT, 'view', NOW, invalid(7)), 'request.malformed');
    assertDenial(() => session.matrix(invalid(undefined)), 'request.malformed');
    assertDenial(() => session.checkIds(invalid([0, 0, 0])), 'request.malformed');
  });

  test('unknown names are denials', () => {
    const d = ok(session.check(req('user:nobody', 'view', EVENT)));
    assert.equal(d.allowed, false);
    assert.equal(d.reasons[0].code, 'entity.unknown');
    assert.equal(session.check(req('user:aeroserv_tech', 'view', 'event:nope')).allowed, false);
    assert.equal(ok(session.check(req('user:aeroserv_tech', 'fly', EVENT))).reasons[0].code, 'action.unknown');
    assert.equal(ok(session.check(req('user:aeroserv_tech', 'view', EVENT, 'yesterday'))).reasons[0].code, 'request.invalid');
    assertDenial(() => session.listResources('user:nobody', 'view', 'event', NOW), 'request.invalid');
    assertDenial(() => session.listResources('user:aeroserv_tech', 'view', 'spaceship', NOW), 'request.invalid');
    assertDenial(() => session.listPrincipals('event:nope', 'view', NOW), 'request.invalid');
    assertDenial(() => session.matrix('nope'), 'request.invalid');
    assertDenial(() => session.matrix('operations', 'no_such_account'));
  });

  test('more than 1 << 20 queries is too large', () => {
    assertDenial(() => session.checkIds(new Uint8Array(((1 << 20) + 1) * QUERY_LEN)), 'request.too_large');
    assertDenial(() => session.checkIdsRaw(new Uint8Array(((1 << 20) + 1) * QUERY_LEN)), 'request.too_large');
  });

  test('a query buffer that is not a multiple of 24 bytes is malformed', () => {
    for (const n of [1, 23, 25, 47]) assertDenial(() => session.checkIds(new Uint8Array(n)), 'request.malformed');
    assert.deepEqual(session.checkIds(new Uint8Array(0)), []);
  });

  test('forged ids are denials, never allows', () => {
    const [resolved] = ok(session.resolve([req('user:aeroserv_tech', 'view', EVENT)]));
    assert.ok('query' in resolved);
    const { query } = resolved;
    const good = new DataView(query.buffer);
    const base = { principal: good.getUint32(0, true), resource: good.getUint32(4, true), action: 0, now: 1777629600 };
    const forged = [
      { ...base, principal: 0xffffffff },
      { ...base, principal: 86 },
      { ...base, resource: 0x7fffffff },
      { ...base, resource: { matrix: 0x7fff, row: 0 } },
      { ...base, action: 0xffff },
      { ...base, target: 0 },
      { ...base, principal: base.resource },
    ];
    const decisions = ok(session.checkIds(encodeQueries(forged)));
    assert.equal(decisions.length, forged.length);
    decisions.forEach((d, i) => {
      assert.equal(d.allowed, false, JSON.stringify(forged[i]));
      assert.ok(d.reasons.length > 0);
    });
    assert.equal(ok(session.checkIds(query))[0].allowed, true, 'the unforged query allows');
  });

  test('random query bytes never throw and never allow an unknown principal', () => {
    let seed = 0x2545f491;
    const random = () => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return seed >>> 0;
    };
    const n = 4096;
    const bytes = new Uint8Array(n * QUERY_LEN);
    const words = new DataView(bytes.buffer);
    for (let i = 0; i < bytes.length; i += 4) words.setUint32(i, random());
    const entities = ok(session.info()).entities;
    const decisions = ok(session.checkIds(bytes));
    assert.equal(decisions.length, n);
    decisions.forEach((d, i) => {
      if (words.getUint32(i * QUERY_LEN, true) >= entities) assert.equal(d.allowed, false);
    });
  });

  test('policies and facts that do not load are errors, and change nothing', async () => {
    const fresh = new (await loadNode()).Session();
    assertDenial(() => fresh.check(req('user:aeroserv_tech', 'view', EVENT)), 'session.not_loaded');
    assertDenial(() => fresh.snapshotBytes(), 'session.not_loaded');
    assertDenial(() => fresh.info(), 'session.not_loaded');
    assertDenial(() => fresh.checkIds(new Uint8Array(QUERY_LEN)), 'session.not_loaded');
    assertDenial(() => fresh.loadFacts({ revision: 0, entities: [], tuples: [] }), 'session.no_policy');
    assertDenial(() => fresh.loadPolicy([{ name: 'x.policy', text: 'type foo { relation bar: nope }' }]), 'policy.invalid');
    assertDenial(() => fresh.loadPolicy(invalid([{ name: 'x.policy' }])), 'request.malformed');
    fresh.loadPolicy(policySources());
    assertDenial(() => fresh.loadFacts({ revision: 0, entities: [{ type: 'spaceship', id: 'x', account: 'a', attrs: {} }], tuples: [] }), 'facts.unknown_type');
    assertDenial(() => fresh.info(), 'session.not_loaded');
  });

  test('every method answers or throws a ClearanceError on any garbage argument, never another throw or an allow', () => {
    const garbage = [undefined, null, 0, -1, NaN, 1n, true, '', '{', '[]', '{}', 'x'.repeat(10000), {}, [], [1, 2], new Uint8Array(5), new ArrayBuffer(24), Symbol('s'), () => 1];
    const methods = /** @type {const} */ (['call', 'loadSnapshot', 'check', 'checkBatch', 'resolve', 'checkIds', 'checkIdsRaw', 'explain', 'allowedActions', 'listResources', 'listPrincipals', 'matrix']);
    const valid = { principal: 'user:aeroserv_tech', resource: EVENT, action: 'view', type: 'event', now: NOW };
    /** @type {{[method: string]: unknown[]}} */
    const args = {
      allowedActions: [valid.principal, valid.resource, valid.now],
      listResources: [valid.principal, valid.action, valid.type, valid.now],
      listPrincipals: [valid.resource, valid.action, valid.now, ''],
      matrix: ['operations', ''],
    };
    for (const method of methods) {
      const arity = (args[method] ?? [null]).length;
      for (let pos = 0; pos < arity; pos += 1) {
        for (const g of garbage) {
          const call = [...(args[method] ?? [undefined])];
          call[pos] = g;
          /** @type {unknown} */
          let answer;
          try {
            // Any method, with any arguments: the cast drops their types.
            answer = /** @type {(...args: unknown[]) => unknown} */ (session[method])(...call);
          } catch (e) {
            assert.ok(e instanceof ClearanceError, `${method} arg ${pos} = ${String(g).slice(0, 20)}: ${String(e)}`);
          }
          assertNoAllow(answer);
        }
      }
    }
    assert.equal(session.check(req('user:aeroserv_tech', 'view', EVENT)).allowed, true, 'the session still works');
  });

  test('a freed session throws session.freed', async () => {
    const { session: e } = await loadedSession('airline');
    e.free();
    e.free();
    assert.equal(e.usable, false);
    assertDenial(() => e.check(req('user:aeroserv_tech', 'view', EVENT)), 'session.freed');
    assertDenial(() => e.snapshotBytes(), 'session.freed');
  });

  test('a Session needs a loaded module', () => {
    assert.throws(() => new Session(invalid({})), TypeError);
  });
});

describe('a trap inside the module', () => {
  test('throws wasm.trap, then poisons every session of the instance', async () => {
    // An instance of our own, so the test can exhaust its memory: a 4 GiB wasm32 memory
    // grown to the limit from outside leaves the module's allocator nothing, and the next
    // allocation aborts, which is the `unreachable` trap.
    const bytes = readFileSync(WASM_URL);
    /** @type {typeof import('../pkg/clearance.js')} */
    const glue = await import(new URL('../pkg/clearance.js?instance=trap-test', import.meta.url).href);
    const exports = glue.initSync({ module: bytes });
    const module = fromGlue(glue, 'trap-test');
    const session = new module.Session();
    const bystander = new module.Session();
    assert.ok(!isError(session.loadPolicy(policySources())));
    for (let pages = 1 << 16; pages >= 1; pages >>= 1) {
      try {
        for (;;) exports.memory.grow(pages);
      } catch {
        // Fewer than `pages` pages are left below the limit.
      }
    }
    assertDenial(() => session.check(req('x'.repeat(1 << 24), 'view', EVENT)), 'wasm.trap');
    assert.equal(present(module.poisoned).code, 'wasm.trap');
    assert.equal(session.usable, false);
    assertDenial(() => session.check(req('user:aeroserv_tech', 'view', EVENT)), 'instance.poisoned');
    assertDenial(() => session.checkIds(new Uint8Array(QUERY_LEN)), 'instance.poisoned');
    assertDenial(() => session.snapshotBytes(), 'instance.poisoned');
    assertDenial(() => bystander.info(), 'instance.poisoned');
    assertDenial(() => new module.Session().info(), 'instance.poisoned');
    session.free();

    // Other instances are untouched, and a new one loads.
    const { session: fresh } = await loadedSession('airline');
    assert.equal(fresh.check(req('user:aeroserv_tech', 'view', EVENT)).allowed, true);
  });
});

describe('input that nests deeply', () => {
  /**
   * A policy whose one permission nests `depth` parentheses.
   *
   * @param {number} depth
   */
  const deep = (depth) => [{ name: 'deep.policy', text: `type thing {\n  owner: thing\n  permission view = ${'('.repeat(depth)}owner${')'.repeat(depth)}\n}\n` }];

  test('a shallow nesting loads', async () => {
    const session = new (await loadNode()).Session();
    assert.ok(!isError(session.loadPolicy(deep(50))));
  });

  test('a deep nesting is an error (today a trap of the module), never a throw or an allow', async () => {
    // The policy parser recurses once per parenthesis, without a limit; 1000 levels
    // overflow the module's stack. A located policy.invalid error is the intended answer.
    const module = await loadNode();
    const session = new module.Session();
    const error = assertDenial(() => session.loadPolicy(deep(1000)));
    assert.ok(['policy.invalid', 'wasm.trap'].includes(error.code), error.code);
    if (error.code === 'wasm.trap') assertDenial(() => session.info(), 'instance.poisoned');
  });

  test('sessions of a trapped instance are collected without calling into it', async () => {
    // The glue frees its objects from a finalizer; on a trapped instance that call would
    // trap again, uncaught, and end the process. The child traps an instance (by stack
    // overflow when the parser still recurses unboundedly, else by exhausting its memory),
    // drops its sessions and collects them.
    const script = `
      import { readFileSync } from 'node:fs';
      const index = process.env.CLEARANCE_INDEX;
      const { fromGlue } = await import(index);
      const glue = await import(new URL('./pkg/clearance.js?instance=gc-child', index).href);
      const exports = glue.initSync({ module: readFileSync(new URL('./pkg/clearance_bg.wasm', index)) });
      const module = fromGlue(glue, 'gc-child');
      function trap() {
        const sessions = [new module.Session(), new module.Session(), new module.Session()];
        sessions[2].free();
        const text = 'type thing {\\n  owner: thing\\n  permission view = ' + '('.repeat(1000) + 'owner' + ')'.repeat(1000) + '\\n}\\n';
        const code = (f) => { try { f(); return null; } catch (e) { return e.code; } };
        let thrown = code(() => sessions[0].loadPolicy([{ name: 'deep.policy', text }]));
        if (thrown !== 'wasm.trap') {
          for (let pages = 1 << 16; pages >= 1; pages >>= 1) { try { for (;;) exports.memory.grow(pages); } catch {} }
          thrown = code(() => sessions[1].check({ principal: 'x'.repeat(1 << 24), action: 'a', resource: 'b', now: 0 }));
        }
        return thrown;
      }
      const code = trap();
      for (let i = 0; i < 5; i += 1) {
        globalThis.gc();
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      console.log(JSON.stringify({ code, poisoned: module.poisoned?.code ?? null }));
    `;
    /** @type {{[name: string]: string | undefined}} */
    const env = { ...process.env, CLEARANCE_INDEX: new URL('../index.js', import.meta.url).href };
    delete env.NODE_TEST_CONTEXT;
    const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { env });
    assert.deepEqual(JSON.parse(stdout), { code: 'wasm.trap', poisoned: 'wasm.trap' });
  });
});
