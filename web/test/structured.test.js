// The structured calls through the module's value face: an argument given as a value reads
// exactly as its JSON text did (the same answer, or the same error but for its place in a
// text), and an answer is what `JSON.parse` gave of the module's JSON answer. Each call is
// held to what the package did before: `JSON.stringify` of the argument, the glue's JSON
// face, `JSON.parse` of its answer.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { Answers, ClearanceError, loadNode } from '../index.js';
import { NOW, WASM_URL, policySources, req, worldText } from './fixtures.js';

/** @import { Session } from '../index.js' */

/**
 * An outcome: the answer, or the error.
 *
 * @typedef {{ok: unknown} | {error: {code: string, message: string, help: string}}} Outcome
 */

/** How many glue instances the tests imported. */
let imports = 0;

/**
 * A package session, and the glue's JSON face on an instance of its own: each is given
 * the same calls.
 *
 * @returns {Promise<{session: Session, json: any}>}
 */
async function pair() {
  const module = await loadNode();
  imports += 1;
  const glue = await import(new URL(`../pkg/clearance.js?instance=structured-${imports}`, import.meta.url).href);
  glue.initSync({ module: readFileSync(WASM_URL) });
  return { session: new module.Session(), json: new glue.Clearance(new Answers()) };
}

/**
 * What `f` gives, or the `ClearanceError` it throws, as data.
 *
 * @param {() => unknown} f
 * @returns {Outcome}
 */
function outcome(f) {
  try {
    return { ok: f() };
  } catch (e) {
    if (e instanceof ClearanceError) return { error: e.toJSON() };
    throw e;
  }
}

/**
 * What the JSON face answered, read as the package read it.
 *
 * @param {string} text
 * @returns {Outcome}
 */
function parsed(text) {
  const v = JSON.parse(text);
  return 'ok' in v ? { ok: v.ok } : { error: v.error };
}

/**
 * An outcome with the places in a text (`at line 1 column 9`) taken out of its message:
 * a value has none.
 *
 * @param {Outcome} o
 * @returns {Outcome}
 */
function unplaced(o) {
  if (!('error' in o)) return o;
  return { error: { ...o.error, message: o.error.message.replace(/ at line \d+ column \d+/g, '') } };
}

/**
 * Asserts that the package's call and the JSON face's give the same outcome; gives it.
 *
 * @param {() => unknown} byValue
 * @param {() => string} byText
 * @param {string} what
 */
function same(byValue, byText, what) {
  const got = unplaced(outcome(byValue));
  assert.deepEqual(got, unplaced(parsed(byText())), what);
  return got;
}

/** A small policy with what JSON and JS values disagree on: a key `__proto__`, integers, times. */
const EDGE_POLICY = [{
  name: 'edge.policy',
  text: `type user principal {
}

type thing {
  __proto__: int?
  n: int?
  at: timestamp?
  owner: user
  permission view = owner
}
`,
}];

/**
 * The edge policy's facts, with `thing:t`'s attributes and tuple as given.
 *
 * @param {object | undefined} attrs
 * @param {object} [tuple]
 */
function edgeFacts(attrs, tuple = {}) {
  return {
    entities: [
      { type: 'account', id: 'a' },
      { type: 'user', id: 'u', account: 'a' },
      { type: 'thing', id: 't', account: 'a', attrs },
    ],
    tuples: [{ resource: 'thing:t', relation: 'owner', subject: 'user:u', ...tuple }],
  };
}

/**
 * A value nested `depth` arrays deep.
 *
 * @param {number} depth
 */
function nested(depth) {
  /** @type {unknown} */
  let v = 1;
  for (let i = 0; i < depth; i += 1) v = [v];
  return v;
}

describe('structured calls by value', () => {
  test('loading a policy and facts reads a value as its JSON text', async () => {
    const { session, json } = await pair();
    const sources = policySources();
    for (const bad of [[{ name: 'x.policy' }], [{ ...sources[0], extra: 1 }], [{ name: 'x.policy', text: undefined }], { name: 'x.policy' }, [[sources[0].name, sources[0].text]]]) {
      same(() => session.loadPolicy(/** @type {any} */ (bad)), () => json.loadPolicy(JSON.stringify(bad)), JSON.stringify(bad));
    }
    same(() => session.loadPolicy(sources), () => json.loadPolicy(JSON.stringify(sources)), 'the policies');
    const world = JSON.parse(worldText('airline'));
    same(() => session.loadFacts(world), () => json.loadFacts(JSON.stringify(world)), 'the airline world');
    same(() => session.facts(), () => json.call('{"op":"facts"}'), 'the facts');
  });

  test('values JSON writes differently from JS read as JSON wrote them', async () => {
    const { session, json } = await pair();
    same(() => session.loadPolicy(EDGE_POLICY), () => json.loadPolicy(JSON.stringify(EDGE_POLICY)), 'the edge policy');
    /** @type {[string, object][]} */
    const cases = [
      ['plain', edgeFacts({ n: 1 })],
      ['undefined fields are left out', { ...edgeFacts(undefined), revision: undefined }],
      ['a Date is its time', edgeFacts({ at: new Date(1777629600000) }, { expires: new Date(1777629600500) })],
      ['an invalid Date is null', edgeFacts({ at: new Date(NaN) })],
      ['NaN is null', edgeFacts({ n: NaN })],
      ['Infinity is null', edgeFacts({ n: -Infinity })],
      ['-0 is 0', edgeFacts({ n: -0 })],
      ['2^53 + 2', edgeFacts({ n: 2 ** 53 + 2 })],
      ['2^60', edgeFacts({ n: 2 ** 60 })],
      ['-2^62', edgeFacts({ n: -(2 ** 62) })],
      ['2^64 is no integer', edgeFacts({ n: 2 ** 64 })],
      ['1.5 is no integer', edgeFacts({ n: 1.5 })],
      ['a revision past 2^53', { ...edgeFacts({ n: 1 }), revision: 2 ** 60 }],
      ['a revision of 1.5', { ...edgeFacts({ n: 1 }), revision: 1.5 }],
      ['a revision of 1e21', { ...edgeFacts({ n: 1 }), revision: 1e21 }],
      ['a revision of -1', { ...edgeFacts({ n: 1 }), revision: -1 }],
      ['a key __proto__', edgeFacts(JSON.parse('{"__proto__": 7, "n": 1}'))],
      ['a misspelt field is refused', edgeFacts({}, { expiry: 5 })],
      ['functions and symbols are left out', { ...edgeFacts({ n: 1 }), f: () => 1, s: Symbol('s') }],
      ['a hole is null', { ...edgeFacts({}), tuples: [, { resource: 'thing:t', relation: 'owner', subject: 'user:u' }] }], // eslint-disable-line no-sparse-arrays
      ['toJSON is asked', edgeFacts({ n: { toJSON: () => 7 } })],
      ['toJSON gets its key', edgeFacts({ n: { toJSON: (/** @type {string} */ key) => key.length } })],
      ['nested 127 deep', edgeFacts({ n: nested(125) })],
      ['nested 128 deep', edgeFacts({ n: nested(126) })],
      ['a string is not a number', edgeFacts({ n: '1' })],
      ['an object is not a list', { ...edgeFacts({}), entities: {} }],
    ];
    for (const [what, facts] of cases) {
      const loaded = same(() => session.loadFacts(facts), () => json.loadFacts(JSON.stringify(facts)), what);
      if ('ok' in loaded) {
        same(() => session.facts(), () => json.call('{"op":"facts"}'), `${what}: the facts`);
        same(() => session.info(), () => json.call('{"op":"info"}'), `${what}: info`);
      }
    }
    const facts = /** @type {{entities: {type: string, attrs?: object}[]}} */ (session.facts());
    const thing = facts.entities.find((e) => e.type === 'thing');
    assert.ok(thing !== undefined && Object.getPrototypeOf(thing.attrs) === Object.prototype, 'a key `__proto__` is a property');
  });

  test('what JSON cannot write is refused, and the session keeps serving', async () => {
    const { session } = await pair();
    session.loadPolicy(EDGE_POLICY);
    session.loadFacts(edgeFacts({ n: 1 }));
    const cyclic = edgeFacts({});
    /** @type {any} */ (cyclic).entities[2].attrs.n = cyclic;
    for (const facts of [cyclic, edgeFacts({ n: 1n }), edgeFacts({ n: 1 }, { subject: 'user:\ud800' }), edgeFacts({ n: { toJSON: () => { throw new Error('no'); } } })]) {
      assert.throws(() => session.loadFacts(facts), (e) => e instanceof ClearanceError && e.code === 'request.malformed');
    }
    /** @type {object[]} */
    const sparse = [];
    sparse.length = 2 ** 30;
    assert.throws(() => session.applyDeltas(sparse), (e) => e instanceof ClearanceError && e.code === 'request.malformed');
    for (const missing of [undefined, () => 1, Symbol('s')]) {
      assert.throws(() => session.loadFacts(/** @type {any} */ (missing)), { code: 'request.malformed', message: 'the facts is missing' });
    }
    assert.throws(() => session.call(/** @type {object} */ (/** @type {unknown} */ (1n))), { code: 'request.malformed' });
    assert.equal(session.info().tuples, 1, 'the facts loaded before are served');
    assert.equal(session.check(req('user:u', 'view', 'thing:t')).allowed, true);
  });

  test('changes and writes read a value as its JSON text', async () => {
    const { session, json } = await pair();
    session.loadPolicy(EDGE_POLICY);
    json.loadPolicy(JSON.stringify(EDGE_POLICY));
    session.loadFacts(edgeFacts({ n: 1 }));
    json.loadFacts(JSON.stringify(edgeFacts({ n: 1 })));
    const thing = 'thing:t';
    /** @type {[string, object[]][]} */
    const changes = [
      ['an undefined value is no value', [{ op: 'set_attr', entity: thing, attr: 'n', value: undefined }]],
      ['null clears', [{ op: 'set_attr', entity: thing, attr: 'n', value: null }]],
      ['a Date', [{ op: 'set_attr', entity: thing, attr: 'at', value: new Date(5000) }]],
      ['a tuple until a Date', [{ op: 'add_tuple', tuple: { resource: thing, relation: 'owner', subject: 'user:u', expires: new Date(1777633200000) } }]],
      ['an unknown op', [{ op: 'paint', entity: thing }]],
      ['a field of another op', [{ op: 'remove_entity', entity: thing, attr: 'n' }]],
      ['an entity that is a name', [{ op: 'add_entity', entity: thing }]],
      ['a new entity', [{ op: 'add_entity', entity: { type: 'thing', id: 'v', account: 'a', attrs: { n: 2 ** 60, at: undefined } } }]],
    ];
    for (const [what, deltas] of changes) {
      same(() => session.applyDeltas(deltas), () => json.applyDeltas(JSON.stringify(deltas)), what);
      same(() => session.facts(), () => json.call('{"op":"facts"}'), `${what}: the facts`);
    }
    for (const op of /** @type {const} */ (['authorize_deltas', 'write'])) {
      const deltas = [{ op: 'set_attr', entity: thing, attr: 'at', value: new Date(7000) }, { op: 'add_entity', entity: { type: 'thing', id: op, account: 'a' } }];
      const f = op === 'write' ? () => session.write('user:u', deltas, NOW) : () => session.authorizeDeltas('user:u', deltas, NOW);
      same(f, () => json.call(JSON.stringify({ op, author: 'user:u', now: NOW, deltas })), op);
      same(() => session.facts(), () => json.call('{"op":"facts"}'), `${op}: the facts`);
    }
  });

  test('questions read a value as its JSON text, and answer what JSON.parse gave', async () => {
    const { session, json } = await pair();
    const sources = policySources();
    const world = worldText('airline');
    session.loadPolicy(sources);
    session.loadFacts(world);
    json.loadPolicy(JSON.stringify(sources));
    json.loadFacts(world);
    // Requests as a caller may write them, well formed or not.
    /** @type {any[]} */
    const requests = [
      req('user:aeroserv_tech', 'view', 'event:aog_lhr'),
      req('user:aeroserv_tech', 'view', 'event:aog_lhr', new Date(Date.parse(NOW))),
      { ...req('user:aeroserv_tech', 'view', 'event:aog_lhr'), target: undefined },
      req('user:jetfix_tech', 'view', 'event:aog_lhr'),
      req('user:nobody', 'view', 'event:aog_lhr'),
      { ...req('user:aeroserv_tech', 'view', 'event:aog_lhr'), extra: 1 },
      { principal: 'user:aeroserv_tech', action: 'view', resource: 'event:aog_lhr' },
    ];
    for (const r of requests) {
      same(() => session.explain(r), () => json.explain(JSON.stringify(r)), `explain ${JSON.stringify(r)}`);
      same(() => session.explain(JSON.stringify(r)), () => json.explain(JSON.stringify(r)), `explain text ${JSON.stringify(r)}`);
      same(() => session.check(JSON.stringify(r)), () => json.check(JSON.stringify(r)), `check text ${JSON.stringify(r)}`);
    }
    const batch = requests.slice(0, 5);
    same(() => session.checkBatch(JSON.stringify(batch)), () => json.checkBatch(JSON.stringify(batch)), 'a batch as text');
    /**
     * @param {unknown} v
     * @returns {unknown}
     */
    const bytes = (v) => (Array.isArray(v) ? v.map((e) => ('query' in e ? { query: Uint8Array.from(e.query) } : e)) : v);
    for (const list of [batch, requests, JSON.stringify(batch)]) {
      const text = typeof list === 'string' ? list : JSON.stringify(list);
      const got = outcome(() => session.resolve(list));
      const want = parsed(json.call(JSON.stringify({ op: 'resolve', requests: JSON.parse(text) })));
      assert.deepEqual(unplaced(got), unplaced('ok' in want ? { ok: bytes(want.ok) } : want), `resolve ${text}`);
    }
    same(() => session.listResources('user:aeroserv_tech', 'view', 'event', NOW), () => json.listResources('user:aeroserv_tech', 'view', 'event', NOW), 'listResources');
    same(() => session.listResources('user:aeroserv_tech', 'view', 'event', Date.parse(NOW) / 1000), () => json.listResources('user:aeroserv_tech', 'view', 'event', String(Date.parse(NOW) / 1000)), 'listResources at seconds');
    same(() => session.listResources('user:nobody', 'view', 'event', NOW), () => json.listResources('user:nobody', 'view', 'event', NOW), 'listResources of nobody');
    same(() => session.listPrincipals('event:aog_lhr', 'view', NOW), () => json.listPrincipals('event:aog_lhr', 'view', NOW, ''), 'listPrincipals');
    same(() => session.listPrincipals('event:nope', 'view', NOW), () => json.listPrincipals('event:nope', 'view', NOW, ''), 'listPrincipals of nothing');
    for (const account of [undefined, 'skyways', 'no_such_account']) {
      same(() => session.matrix('operations', account), () => json.matrix('operations', account ?? ''), `matrix as ${account}`);
    }
    same(() => session.matrix('nope'), () => json.matrix('nope', ''), 'an unknown matrix');
    same(() => session.schema(), () => json.call('{"op":"schema"}'), 'schema');
    same(() => session.info(), () => json.call('{"op":"info"}'), 'info');
    for (const call of [{ op: 'gates', principal: 'user:aeroserv_tech', now: NOW }, { op: 'info', colour: 1 }, { op: 'launch' }, { op: 'check' }, { op: 'info', note: undefined }, '{"op": "info"', '{"op": "info"}']) {
      const text = typeof call === 'string' ? call : JSON.stringify(call);
      same(() => session.call(call), () => json.call(text), `call ${text}`);
    }
    const snapshot = session.snapshotBytes();
    same(() => session.loadSnapshot(snapshot), () => json.loadSnapshot(snapshot), 'loadSnapshot');
    same(() => session.loadSnapshot(snapshot.subarray(0, 9)), () => json.loadSnapshot(snapshot.subarray(0, 9)), 'a cut snapshot');
  });
});
