// Real decisions through the JavaScript face: the default policies on the airline world,
// the listing calls, explanations, the matrix, snapshots, deltas and the binary batch.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { decodeQueries, encodeQueries, isError, loadNode } from '../index.js';
import { NOW, WASM_SHA256_URL, WASM_URL, codes, failure, loadedSession, ok, policySources, present, req, worldText } from './fixtures.js';

/** @import { ClearanceModule, Request, Session } from '../index.js' */

const EVENT = 'event:aog_lhr';

/** Requests over the airline world: allows, denials of every kind, and unresolvable ones. */
const REQUESTS = [
  req('user:aeroserv_tech', 'view', EVENT),
  req('user:jetfix_tech', 'view', EVENT),
  req('invitee:g_sms', 'view', EVENT),
  req('invitee:g_sms', 'view', EVENT, '2026-05-01T19:00:00Z'),
  req('user:former_controller', 'view', EVENT),
  req('user:occ_controller', 'view', EVENT),
  req('user:occ_controller', 'update', EVENT),
  req('user:aeroserv_tech', 'update', EVENT),
  req('user:lhr_tech', 'view', 'event:check_jfk'),
  req('user:occ_controller', 'internal', 'organization:skyways_occ'),
  req('user:aeroserv_tech', 'internal', 'organization:aeroserv'),
  req('user:aeroserv_tech', 'view', EVENT, 1777629600),
  req('user:nobody', 'view', EVENT),
  req('user:aeroserv_tech', 'fly', EVENT),
  req('user:aeroserv_tech', 'view', EVENT, 'yesterday'),
];

describe('the airline world', () => {
  /** @type {ClearanceModule} */
  let module;
  /** @type {Session} */
  let session;
  before(async () => {
    ({ module, session } = await loadedSession('airline'));
  });

  test('moduleHash is the SHA-256 of the module and matches the build', () => {
    const recorded = readFileSync(WASM_SHA256_URL, 'utf8').trim().split(/\s+/)[0];
    const computed = createHash('sha256').update(readFileSync(WASM_URL)).digest('hex');
    assert.match(module.moduleHash, /^[0-9a-f]{64}$/);
    assert.equal(module.moduleHash, recorded);
    assert.equal(module.moduleHash, computed);
    assert.equal(session.moduleHash, recorded);
  });

  test('info reports what is loaded', () => {
    const info = ok(session.info());
    assert.equal(info.revision, 0);
    assert.equal(info.entities, 86);
    assert.match(info.policy_hash, /^[0-9a-f]{64}$/);
    assert.equal(typeof info.core_version, 'string');
  });

  test('a contractor technician assigned to the event may view it', () => {
    const d = session.check(req('user:aeroserv_tech', 'view', EVENT));
    assert.equal(d.allowed, true);
    assert.deepEqual(codes(d), ['granted']);
    assert.equal(d.reasons[0].rule, 'event.view');
    assert.equal(d.valid_until, undefined);
    assert.equal(d.policy_hash, ok(session.info()).policy_hash);
  });

  test('a contractor technician not assigned may not, with every failed check', () => {
    const d = ok(session.check(req('user:jetfix_tech', 'view', EVENT)));
    assert.equal(d.allowed, false);
    assert.deepEqual(codes(d), ['relation.missing', 'relation.missing', 'relation.missing']);
    assert.ok(d.reasons.every((r) => r.rule === 'event.view' && /^events\.policy:\d+:\d+$/.test(String(r.at))));
  });

  test('a guest with an expiring invitation is allowed until it expires', () => {
    const d = session.check(req('invitee:g_sms', 'view', EVENT));
    assert.equal(d.allowed, true);
    assert.equal(d.valid_until, '2026-05-01T18:00:00Z');
    const later = session.check(req('invitee:g_sms', 'view', EVENT, '2026-05-01T19:00:00Z'));
    assert.equal(later.allowed, false);
    assert.equal(codes(later).at(-1), 'relation.expired');
  });

  test('a deactivated user is stopped by the gate', () => {
    const d = session.check(req('user:former_controller', 'view', EVENT));
    assert.equal(d.allowed, false);
    assert.deepEqual(codes(d), ['gate.active']);
  });

  test('an unknown principal is a structural denial', () => {
    const d = ok(session.check(req('user:nobody', 'view', EVENT)));
    assert.equal(d.allowed, false);
    assert.deepEqual(d.reasons.map((r) => [r.code, r.rule]), [['entity.unknown', 'request.principal']]);
  });

  test('now may be seconds as well as RFC 3339', () => {
    assert.equal(session.check(req('user:aeroserv_tech', 'view', EVENT, 1777629600)).allowed, true);
  });

  test('a batch decides like single checks, in order', () => {
    const batch = ok(session.checkBatch(REQUESTS));
    assert.equal(batch.length, REQUESTS.length);
    batch.forEach((d, i) => assert.deepEqual(d, session.check(REQUESTS[i]), JSON.stringify(REQUESTS[i])));
  });

  test('allowedActions lists the actions on the event', () => {
    const { actions, denied } = ok(session.allowedActions('user:aeroserv_tech', EVENT, NOW));
    assert.ok(actions.includes('view'));
    assert.equal(denied, undefined);
    for (const a of actions) assert.equal(session.check(req('user:aeroserv_tech', a, EVENT)).allowed, true, a);
    assert.deepEqual(ok(session.allowedActions('user:jetfix_tech', EVENT, NOW)).actions, []);
    assert.deepEqual(ok(session.allowedActions('user:former_controller', EVENT, '1777629600')).actions, []);
  });

  test('allowedActions of an unknown principal gives no actions and the denial', () => {
    const a = ok(session.allowedActions('user:nobody', EVENT, NOW));
    assert.deepEqual(a.actions, []);
    const denied = present(a.denied);
    assert.equal(denied.allowed, false);
    assert.deepEqual(codes(denied), ['entity.unknown']);
  });

  test('listResources lists the events a principal may view', () => {
    assert.deepEqual(session.listResources('user:aeroserv_tech', 'view', 'event', NOW), [EVENT]);
    assert.deepEqual(ok(session.listResources('user:jetfix_tech', 'view', 'event', NOW)).includes(EVENT), false);
    const occ = ok(session.listResources('user:occ_controller', 'view', 'event', NOW));
    for (const e of occ) assert.equal(session.check(req('user:occ_controller', 'view', e)).allowed, true, e);
  });

  test('listPrincipals agrees with check', () => {
    const who = ok(session.listPrincipals(EVENT, 'view', NOW));
    assert.ok(who.includes('user:aeroserv_tech'));
    assert.ok(who.includes('invitee:g_sms'));
    assert.ok(!who.includes('user:jetfix_tech'));
    assert.ok(!who.includes('user:former_controller'));
    for (const p of who) assert.equal(session.check(req(p, 'view', EVENT)).allowed, true, p);
    assert.ok(!ok(session.listPrincipals(EVENT, 'view', '2026-05-01T19:00:00Z')).includes('invitee:g_sms'));
  });

  test('explain gives the decision and, for an allow, the checks that held', () => {
    const allow = ok(session.explain(req('user:aeroserv_tech', 'view', EVENT)));
    assert.deepEqual(allow.decision, session.check(req('user:aeroserv_tech', 'view', EVENT)));
    assert.ok(allow.held.length > 0);
    assert.ok(allow.held.every((r) => r.code === 'granted'));
    const deny = ok(session.explain(req('user:jetfix_tech', 'view', EVENT)));
    assert.equal(deny.decision.allowed, false);
    assert.deepEqual(deny.held, []);
  });

  test('matrix("operations") gives one cell per row for every role', () => {
    const m = ok(session.matrix('operations'));
    assert.equal(m.matrix, 'operations');
    assert.equal(m.levels, true);
    assert.ok(m.rows.includes('dispatch') && m.rows.includes('crew_app'));
    assert.ok(m.roles.length > 0);
    for (const role of m.roles) {
      assert.equal(role.cells.length, m.rows.length, role.name);
      assert.equal(role.custom, false);
    }
    assert.deepEqual(session.matrix('operations', 'skyways'), m, 'skyways has no custom roles');
  });

  test('resolved queries decided with checkIds agree with check', () => {
    const resolved = ok(session.resolve(REQUESTS));
    assert.equal(resolved.length, REQUESTS.length);
    /** @type {number[]} */
    const asked = [];
    resolved.forEach((r, i) => {
      if ('denied' in r) {
        assert.deepEqual(r.denied, session.check(REQUESTS[i]), 'an unresolvable request carries its denial');
        assert.equal(r.denied.allowed, false);
      } else {
        assert.equal(r.query.length, 24);
        asked.push(i);
      }
    });
    assert.deepEqual(resolved.filter((r) => 'denied' in r).length, 3, 'unknown principal, unknown action, bad time');
    const queries = new Uint8Array(asked.flatMap((i) => {
      const r = resolved[i];
      assert.ok('query' in r);
      return [...r.query];
    }));
    const decisions = ok(session.checkIds(queries));
    assert.equal(decisions.length, asked.length);
    decisions.forEach((d, k) => {
      const view = ok(session.check(REQUESTS[asked[k]]));
      const label = JSON.stringify(REQUESTS[asked[k]]);
      assert.equal(d.allowed, view.allowed, label);
      assert.deepEqual(d.reasons.map((r) => r.code), codes(view).map((c) => (c.startsWith('gate.') ? 'gate' : c)), label);
      assert.equal(d.valid_until, view.valid_until === undefined ? null : Date.parse(view.valid_until) / 1000, label);
    });
    assert.deepEqual(encodeQueries(present(decodeQueries(queries))), queries, 'the JS codec reproduces the module\'s queries');
  });

  test('the JSON call face answers like the methods', () => {
    const r = req('user:aeroserv_tech', 'view', EVENT);
    assert.deepEqual(session.call({ op: 'check', request: r }), session.check(r));
    assert.deepEqual(session.call(JSON.stringify({ op: 'info' })), session.info());
    // The wire form of a resolved query: its bytes as a list of numbers.
    const [{ query }] = /** @type {Array<{query: unknown}>} */ (session.call({ op: 'resolve', requests: [r] }));
    assert.ok(Array.isArray(query) && query.length === 24);
  });

  test('a snapshot round trip decides the same on a new session and a new instance', async () => {
    const bytes = ok(session.snapshotBytes());
    assert.ok(bytes instanceof Uint8Array && bytes.length > 0);
    const same = new module.Session();
    const other = new (await loadNode()).Session();
    for (const e of [same, other]) {
      const info = e.loadSnapshot(bytes);
      assert.deepEqual(info, session.info());
      assert.deepEqual(e.checkBatch(REQUESTS), session.checkBatch(REQUESTS));
      assert.deepEqual(e.snapshotBytes(), bytes, 'snapshot bytes are deterministic');
      assert.deepEqual(e.matrix('operations'), session.matrix('operations'));
    }
    const queries = encodeQueries(present(decodeQueries(new Uint8Array(ok(session.resolve(REQUESTS)).flatMap((r) => ('query' in r ? [...r.query] : []))))));
    assert.deepEqual(other.checkIdsRaw(queries), session.checkIdsRaw(queries));
    // A snapshot carries no facts, yet a write is judged on it as on the facts (in
    // place, then undone), and deltas it applies in place.
    const reactivate = [{ op: 'set_attr', entity: 'user:former_controller', attr: 'status', value: 'active' }];
    const facts = (await loadedSession('airline')).session;
    for (const author of ['user:occ_controller', 'user:former_controller']) {
      assert.deepEqual(other.authorizeDeltas(author, reactivate, NOW), facts.authorizeDeltas(author, reactivate, NOW));
    }
    assert.deepEqual(other.snapshotBytes(), bytes, 'judging a write leaves the snapshot as it was');
    assert.equal(ok(other.applyDeltas(reactivate)).revision, ok(facts.applyDeltas(reactivate)).revision);
    const back = req('user:former_controller', 'view', EVENT);
    assert.equal(other.check(back).allowed, true);
    assert.deepEqual(other.checkBatch([...REQUESTS, back]), facts.checkBatch([...REQUESTS, back]));
    same.free();
    other.free();
  });
});

describe('deltas', () => {
  test('reactivating a user bumps the revision and lets them through the gate', async () => {
    const { session } = await loadedSession('airline');
    const r = req('user:former_controller', 'view', EVENT);
    assert.equal(session.check(r).allowed, false);
    const info = ok(session.applyDeltas([{ op: 'set_attr', entity: 'user:former_controller', attr: 'status', value: 'active' }]));
    assert.equal(info.revision, 1);
    const d = session.check(r);
    assert.equal(d.allowed, true);
    assert.equal(d.revision, 1);
  });

  test('a failed delta list changes nothing', async () => {
    const { session } = await loadedSession('airline');
    const before = session.snapshotBytes();
    const bad = failure(() => session.applyDeltas([
      { op: 'set_attr', entity: 'user:former_controller', attr: 'status', value: 'active' },
      { op: 'set_attr', entity: 'user:nobody', attr: 'status', value: 'active' },
    ]));
    assert.equal(bad.code, 'facts.unknown_entity');
    assert.equal(ok(session.info()).revision, 0);
    assert.deepEqual(session.snapshotBytes(), before);
    assert.equal(session.check(req('user:former_controller', 'view', EVENT)).allowed, false);
  });

  test('a write is judged by the write rules, and creating an event assigns its station\'s organisation (X4, EV5)', async () => {
    const { session } = await loadedSession('airline');
    const key = 'event:w_lhr';
    /** @param {string} relation @param {string} subject */
    const add = (relation, subject) => ({ op: 'add_tuple', tuple: { resource: key, relation, subject } });
    const create = [
      { op: 'add_entity', entity: { type: 'event', id: 'w_lhr', account: 'skyways', attrs: { ends_at: '2026-05-03T00:00:00Z' } } },
      add('station', 'station:lhr'),
      add('owner_org', 'organization:skyways_occ'),
      add('created_by', 'user:lhr_tech'),
    ];
    // A maintenance technician creates no event: refused, and nothing changes.
    const before = session.snapshotBytes();
    const refused = ok(session.write('user:lhr_tech', create, NOW));
    assert.equal(refused.allowed, false);
    assert.equal(refused.refusal?.code, 'write.denied');
    assert.deepEqual(session.snapshotBytes(), before);
    // Asking changes nothing either.
    create[3] = add('created_by', 'user:occ_controller');
    assert.equal(ok(session.authorizeDeltas('user:occ_controller', create, NOW)).allowed, true);
    assert.deepEqual(session.snapshotBytes(), before);
    // An internal user creates it: the LHR engineering organisation is assigned with it.
    const written = ok(session.write('user:occ_controller', create, NOW));
    assert.deepEqual(written, { allowed: true, revision: 1, derived: [add('assigned', 'organization:skyways_lhr_mx')] });
    assert.equal(session.check(req('user:lhr_tech', 'view', key)).allowed, true);
    const tuples = /** @type {{tuples: Array<{resource: string, relation: string, subject: string}>}} */ (ok(session.facts())).tuples;
    assert.ok(tuples.some((t) => t.resource === key && t.relation === 'assigned' && t.subject === 'organization:skyways_lhr_mx'));
    // Bad arguments are errors, not writes.
    assert.equal(failure(() => session.write('user:occ_controller', /** @type {any} */ ('[]'), NOW)).code, 'request.malformed');
    assert.equal(failure(() => session.write('user:occ_controller', [], 1.5)).code, 'request.malformed');
    // An entity that does not exist is refused as one of another account is, with the
    // same answer: a refusal, before anything is applied.
    const missing = session.write('user:occ_controller', [{ op: 'set_attr', entity: 'user:nobody', attr: 'status', value: 'active' }], NOW);
    assert.equal(missing.allowed, false);
    assert.equal(missing.refusal?.code, 'write.outside_account');
  });

  test('loading another policy rebuilds the facts under it', async () => {
    const { session } = await loadedSession('airline');
    const hash = ok(session.info()).policy_hash;
    const sources = policySources();
    sources[0] = { ...sources[0], text: `${sources[0].text}\n` };
    const loaded = session.loadPolicy(sources);
    assert.ok(!isError(loaded));
    assert.notEqual(loaded.policy_hash, hash);
    assert.equal(ok(session.info()).policy_hash, loaded.policy_hash);
    assert.equal(session.check(req('user:aeroserv_tech', 'view', EVENT)).allowed, true);
  });
});

describe('pages', () => {
  test('a page request resolves to a PAGE query that decides like check', async () => {
    const { session } = await loadedSession('operations');
    const requests = [req('user:a_crew', 'read', 'operations:crew_app'), req('user:a_crew', 'write', 'operations:settings')];
    const resolved = ok(session.resolve(requests));
    const queries = new Uint8Array(resolved.flatMap((r) => {
      assert.ok('query' in r, 'a page request resolves');
      return [...r.query];
    }));
    const decoded = present(decodeQueries(queries));
    for (const q of decoded) assert.equal(typeof q.resource, 'object', 'a page, not an entity');
    const matrix = ok(session.matrix('operations'));
    const page = decoded[0].resource;
    assert.ok(typeof page === 'object');
    assert.equal(page.row, matrix.rows.indexOf('crew_app'));
    assert.deepEqual(encodeQueries(decoded), queries);
    const views = requests.map((r) => session.check(r));
    assert.deepEqual(views.map((v) => v.allowed), [true, false]);
    assert.deepEqual(ok(session.checkIds(queries)).map((d) => d.allowed), [true, false]);
    assert.deepEqual(ok(session.checkIds(queries))[1].reasons.map((r) => r.code), codes(views[1]));
    assert.deepEqual(ok(session.allowedActions('user:a_crew', 'operations:crew_app', NOW)).actions, ['own', 'limited', 'read', 'write']);
    assert.ok(ok(session.listPrincipals('operations:crew_app', 'read', NOW, 'skyline_charter')).includes('user:a_crew'));
  });

  test('worlds load from their JSON text as well as objects', async () => {
    const module = await loadNode();
    const a = new module.Session();
    const b = new module.Session();
    a.loadPolicy(policySources());
    b.loadPolicy(JSON.stringify(policySources()));
    assert.deepEqual(a.loadFacts(worldText('maintenance')), b.loadFacts(JSON.parse(worldText('maintenance'))));
    assert.deepEqual(a.snapshotBytes(), b.snapshotBytes());
  });
});

test('schema outlines the policy: actions, write rules and matrices', async () => {
  const { session } = await loadedSession('airline');
  const outline = session.schema();
  assert.ok(!isError(outline));
  assert.equal(outline.policy_hash, ok(session.info()).policy_hash);
  const event = present(outline.types.find((t) => t.name === 'event'));
  assert.deepEqual(event.actions.find((a) => a.name === 'assign'), { name: 'assign', target: 'organization' });
  assert.ok(event.writes.some((w) => w.change === 'set' && w.member === 'title' && w.action === 'update'));
  assert.ok(event.writes.some((w) => w.change === 'add' && w.member === 'guest' && w.action === 'invite_guest'));
  const squawk = present(outline.types.find((t) => t.name === 'squawk'));
  assert.ok(squawk.writes.some((w) => w.change === 'delete' && w.member === null && w.action === 'delete'));
  const ops = present(outline.matrices.find((m) => m.name === 'operations'));
  assert.equal(ops.levels, true);
  assert.ok(ops.rows.includes('dispatch') && ops.operations.includes('grant_access'));
  assert.ok(ops.roles.includes('dispatch_external'));
  const empty = new (await loadNode()).Session();
  assert.equal(failure(() => empty.schema()).code, 'session.no_policy');
});
