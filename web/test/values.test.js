// The module's value face (`checkValue`, `allowedActionsValue`): JS values in, plain
// objects out, built from strings the module keeps across calls. Held to the JSON-text
// face, which writes every answer anew, on every request the airline world allows.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { NOW, failure, loadedSession, ok, policySources, req } from './fixtures.js';

/** @import { Request, Session } from '../index.js' */

const EVENT = 'event:aog_lhr';

/** @type {Session} */
let session;

before(async () => {
  ({ session } = await loadedSession());
});

/**
 * Every request of the world's principals on its entities and pages, with every action of
 * the resource's type (a target of the same account where one is taken).
 *
 * @param {Session} s
 * @returns {Request[]}
 */
function everyRequest(s) {
  const facts = /** @type {{entities: {type: string, id: string}[]}} */ (ok(s.facts()));
  const schema = ok(s.schema());
  const ids = facts.entities.map((e) => `${e.type}:${e.id}`);
  const principals = ids.filter((id) => id.startsWith('user:')).slice(0, 12);
  /** @type {Request[]} */
  const out = [];
  for (const p of principals) {
    for (const e of facts.entities) {
      const type = schema.types.find((t) => t.name === e.type);
      for (const a of type?.actions ?? []) {
        const target = a.target === null ? undefined : ids.find((id) => id.startsWith(`${a.target}:`));
        out.push(req(p, a.name, `${e.type}:${e.id}`, NOW, target));
      }
    }
    for (const m of schema.matrices) {
      for (const row of m.rows.slice(0, 3)) out.push(req(p, 'read', `${m.name}:${row}`));
    }
  }
  // Requests that cannot be decided: unknown names, a bad time, an unknown action.
  out.push(req('user:nobody', 'view', EVENT), req(principals[0], 'fly', EVENT), req(principals[0], 'view', EVENT, 'yesterday'));
  return out;
}

describe('the value face', () => {
  test('decides every request as the JSON face does, reasons and messages included', () => {
    const requests = everyRequest(session);
    assert.ok(requests.length > 1000, `only ${requests.length} requests`);
    const codes = new Set();
    for (const r of requests) {
      const byValue = ok(session.check(r));
      const byText = ok(session.check(JSON.stringify(r)));
      assert.deepEqual(byValue, byText, JSON.stringify(r));
      for (const x of byValue.reasons) codes.add(x.code);
    }
    // Kept messages, templates and messages written anew were all compared.
    for (const code of ['granted', 'relation.missing', 'entity.unknown', 'action.unknown', 'request.invalid']) {
      assert.ok(codes.has(code), `no ${code} among ${[...codes]}`);
    }
    assert.ok(codes.size >= 8, [...codes].join(', '));
  });

  test('gives the actions as the JSON call does', () => {
    for (const r of everyRequest(session).slice(0, 400)) {
      const byValue = session.allowedActions(r.principal, r.resource, r.now);
      const byText = session.call({ op: 'allowed_actions', principal: r.principal, resource: r.resource, now: r.now });
      assert.deepEqual(byValue, byText, JSON.stringify(r));
    }
  });

  test('a request field with `$` patterns is shown as written, not as a replacement pattern', () => {
    const d = ok(session.check(req("user:$&$'$`$1", 'view', EVENT)));
    assert.deepEqual(d, ok(session.check(JSON.stringify(req("user:$&$'$`$1", 'view', EVENT)))));
    assert.ok(d.reasons.some((x) => x.message.includes("user:$&$'$`$1")), JSON.stringify(d));
  });

  test('takes `now` as a Date, seconds, a BigInt or RFC 3339 text, with one decision', () => {
    const seconds = Date.parse(NOW) / 1000;
    const want = ok(session.check(req('user:aeroserv_tech', 'view', EVENT, NOW)));
    for (const now of [new Date(NOW), seconds, BigInt(seconds)]) {
      assert.deepEqual(ok(session.check({ ...req('user:aeroserv_tech', 'view', EVENT), now })), want, String(now));
    }
    assert.deepEqual(session.allowedActions('user:aeroserv_tech', EVENT, new Date(NOW)), session.allowedActions('user:aeroserv_tech', EVENT, NOW));
  });

  test('bad input throws a request.malformed Error naming what is wrong, and the session goes on', () => {
    /** @type {[unknown, RegExp][]} */
    const cases = [
      [{ ...req('user:aeroserv_tech', 'view', EVENT), now: new Date(Number.NaN) }, /invalid Date/],
      [{ ...req('user:aeroserv_tech', 'view', EVENT), now: 2 ** 60 }, /`now`/],
      [{ ...req('user:aeroserv_tech', 'view', EVENT), now: {} }, /`now`/],
      [{ ...req('user:aeroserv_tech', 'view', EVENT), principal: 7 }, /`principal` must be a string, got number/],
      [{ ...req('user:aeroserv_tech', 'view', EVENT), target: ['x'] }, /`target` must be a string, got an array/],
      [{ principal: 'user:aeroserv_tech', action: 'view', now: NOW }, /`resource` must be a string, got undefined/],
      [{ ...req('user:aeroserv_tech', 'view', EVENT), extra: 1 }, /unknown field `extra`/],
      [null, /must be an object, got null/],
      [[], /must be an object, got an array/],
    ];
    for (const [request, message] of cases) {
      const e = failure(() => session.check(/** @type {Request} */ (request)), 'request.malformed');
      assert.ok(e instanceof Error);
      assert.match(e.message, message);
      assert.ok(e.help.length > 0, e.message);
      assert.equal(ok(session.check(req('user:aeroserv_tech', 'view', EVENT))).allowed, true);
    }
    failure(() => session.allowedActions('user:aeroserv_tech', EVENT, new Date('not a date')), 'request.malformed');
    const batch = failure(() => session.checkBatch([req('user:aeroserv_tech', 'view', EVENT), /** @type {Request} */ (/** @type {unknown} */ ({ principal: 1 }))]), 'request.malformed');
    assert.match(batch.message, /^request 1: /);
  });

  test('what the module keeps follows a new policy', () => {
    const before = ok(session.check(req('user:nobody', 'view', EVENT)));
    const sources = policySources().map((s) => ({ ...s, text: s.text.replace('does not exist', 'does not exist') }));
    // The same policy with one comment more: another hash, the same rules.
    const changed = [...sources.slice(0, -1), { ...sources[sources.length - 1], text: `${sources[sources.length - 1].text}\n# changed\n` }];
    ok(session.loadPolicy(changed));
    const after = ok(session.check(req('user:nobody', 'view', EVENT)));
    assert.notEqual(after.policy_hash, before.policy_hash);
    assert.deepEqual(after, ok(session.check(JSON.stringify(req('user:nobody', 'view', EVENT)))));
    ok(session.loadPolicy(policySources()));
    assert.deepEqual(ok(session.check(req('user:nobody', 'view', EVENT))), before);
  });
});
