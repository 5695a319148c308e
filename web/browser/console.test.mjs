// The operations console in real Chromium, against the real host: what each persona is
// shown is what the host itself decides, hidden actions carry the module's reasons, and
// the host's refusals reach the page. Screenshots for the docs are written when
// CLEARANCE_SCREENSHOTS is set (`CLEARANCE_SCREENSHOTS=1 node --test web/browser/`).

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isError, verifySlice } from '../index.js';
import { present } from '../test/fixtures.js';
import { ROOT, launch, startHost } from './chromium.mjs';

/**
 * @import { Browser, Page } from 'playwright-core'
 * @import { AccessMatrix, Explanation, SignedSlice } from '../index.js'
 */

/**
 * An entity of a principal slice, as much of it as these tests read.
 *
 * @typedef {{type: string, id: string, attrs: {[name: string]: string}}} SliceEntity
 */

/**
 * A principal slice (the `slice` text of `GET /v1/slice/{principal}`), as much of it as
 * these tests read.
 *
 * @typedef {{facts: {entities: SliceEntity[]}}} Slice
 */

const NOW = '2026-05-01T10:00:00Z';

/** @type {Awaited<ReturnType<typeof startHost>>} */
let host;
/** @type {Browser} */
let browser;

before(async () => {
  host = await startHost();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await host?.stop();
});

/**
 * Opens the console signed in as `persona` on `page` (a console page id).
 *
 * @param {string} persona
 * @param {{now?: string, page?: string, whyNot?: boolean}} [options]
 */
async function open(persona, options = {}) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  /** @type {string[]} */
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const params = new URLSearchParams({ persona, now: options.now ?? NOW, page: options.page ?? 'events' });
  if (options.whyNot) params.set('why-not', '');
  await page.goto(`${host.url}/?${params}`);
  await page.waitForSelector(`body[data-principal="${persona}"]`, { timeout: 30_000 });
  assert.deepEqual(errors, [], 'the page threw');
  return page;
}

/**
 * The rows the page shows: resource → the actions on its buttons.
 *
 * @param {Page} page
 */
function shown(page) {
  return page.$$eval('tr.record:not(.hidden-row)', (trs) => Object.fromEntries(trs.map((tr) => [
    tr.dataset.resource,
    [...tr.querySelectorAll('button.action')].map((b) => /** @type {HTMLButtonElement} */ (b).dataset.action).sort(),
  ])));
}

/**
 * Calls the host's API: GET `path`, or POST `body` to it.
 *
 * @param {string} path
 * @param {unknown} [body]
 */
async function api(path, body) {
  const authorization = `Bearer ${host.adminKey}`;
  const init = body === undefined
    ? { headers: { authorization } }
    : { method: 'POST', headers: { 'content-type': 'application/json', authorization }, body: JSON.stringify(body) };
  const response = await fetch(`${host.url}${path}`, init);
  return { status: response.status, body: await response.json() };
}

/**
 * The slice of `persona` as the host signed it (unverified: the tests that verify it
 * say so).
 *
 * @param {string} persona
 * @returns {Promise<Slice>}
 */
async function sliceOf(persona) {
  const { status, body } = await api(`/v1/slice/${persona}`);
  assert.equal(status, 200, JSON.stringify(body));
  return JSON.parse(body.slice);
}

/**
 * The host's answer for every record of some types in the persona's account.
 *
 * @param {string} persona
 * @param {string[]} types
 * @param {{[type: string]: string}} viewOf the action that shows a record, by type
 */
async function hostView(persona, types, viewOf) {
  const slice = await sliceOf(persona);
  /** @type {{[resource: string]: string[]}} */
  const out = {};
  for (const e of slice.facts.entities.filter((x) => types.includes(x.type))) {
    const resource = `${e.type}:${e.id}`;
    const { body } = await api('/v1/allowed-actions', { principal: persona, resource, now: NOW });
    const view = viewOf[e.type];
    if (view === undefined || body.actions.includes(view)) out[resource] = [...body.actions].sort();
  }
  return out;
}

/** @type {{[type: string]: string}} */
const VIEW = { event: 'view', aircraft: 'read', squawk: 'read', squawk_message: 'read', maintenance_entry: 'read', tracking_item: 'read', flight: 'view', ops_aircraft: 'view', person: 'view' };

describe('the console', () => {
  test('the host\'s slices verify with the keys it publishes, and only for their principal', async () => {
    const keys = await fetch(`${host.url}/v1/slice-keys`);
    assert.equal(keys.status, 200, 'the slice keys are served without credentials');
    const jwks = await keys.json();
    assert.ok(jwks.keys.length > 0 && jwks.keys.every((/** @type {{kty: string, crv: string}} */ k) => k.kty === 'OKP' && k.crv === 'Ed25519'), JSON.stringify(jwks));
    /** @type {SignedSlice} */
    const signed = (await api('/v1/slice/user:occ_controller')).body;
    assert.equal(signed.alg, 'EdDSA');
    const verified = await verifySlice(signed, { keys: jwks, principal: 'user:occ_controller' });
    assert.ok(!isError(verified), JSON.stringify(verified));
    assert.equal(verified.principal, 'user:occ_controller');
    assert.ok(verified.issued <= verified.expires);
    const other = await verifySlice(signed, { keys: jwks, principal: 'user:aeroserv_tech' });
    assert.equal(isError(other) && other.error.code, 'slice.wrong_principal');
    const tampered = await verifySlice({ ...signed, slice: signed.slice.replace('occ_controller', 'occ_controllex') }, { keys: jwks });
    assert.equal(isError(tampered) && tampered.error.code, 'slice.bad_signature');
  });

  test('a slice that does not verify is not loaded, and nothing is decided in the page', async () => {
    for (const [what, path, change, expected] of /** @type {const} */ ([
      ['a changed byte', '/v1/slice/', (/** @type {SignedSlice} */ b) => ({ ...b, slice: b.slice.replace('skyways', 'skywayz') }), 'slice.bad_signature'],
      ['another key set', '/v1/slice-keys', () => ({ keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'xNj1XDwp42rDoXKB7K3OUYOTZV1kAz7FvMrws8FRwLY', kid: 'not-the-hosts', alg: 'EdDSA' }] }), 'slice.unknown_key'],
    ])) {
      const page = await browser.newPage();
      await page.route((url) => url.pathname.startsWith(path), async (route) => {
        const response = await route.fetch();
        await route.fulfill({ response, json: change(await response.json()) });
      });
      const params = new URLSearchParams({ persona: 'user:occ_controller', now: NOW });
      await page.goto(`${host.url}/?${params}`);
      await page.waitForSelector(`#notice[data-code="${expected}"]`, { timeout: 30_000 });
      assert.equal(await page.getAttribute('body', 'data-principal'), null, what);
      assert.equal(await page.$$eval('tr.record', (trs) => trs.length), 0, `${what}: the page decided on a slice that did not verify`);
      await page.close();
    }
  });

  test('runs the host\'s module and lists every persona', async () => {
    const page = await open('user:occ_controller');
    const status = present(await page.textContent('#status'));
    assert.match(status, /the same bytes as the host/);
    const revision = (await api('/v1/revision')).body;
    assert.ok(status.includes(revision.module_hash.slice(0, 12)));
    const personas = await page.$$eval('#persona option', (os) => os.map((o) => /** @type {HTMLOptionElement} */ (o).value));
    assert.equal(personas.length, 13);
    for (const p of personas) assert.equal((await api(`/v1/slice/${p}`)).status, 200, `${p} is in the demo data`);
    await page.close();
  });

  test('switching personas shows exactly the actions the host allows', async () => {
    const page = await open('user:occ_controller');
    const controller = await shown(page);
    // The controller's organisation owns the event, and the controller created it.
    assert.deepEqual(controller['event:aog_lhr'], ['close', 'create', 'message', 'update', 'view']);
    await page.selectOption('#persona', 'user:aeroserv_tech');
    await page.waitForSelector('body[data-principal="user:aeroserv_tech"]');
    const contractor = await shown(page);
    // A contractor takes part in the events its organisation is assigned to, and never
    // closes one.
    assert.deepEqual(contractor['event:aog_lhr'], ['message', 'update', 'view']);
    assert.equal(contractor['event:unassigned_jfk'], undefined, 'an event the contractor is not assigned to is hidden');
    assert.deepEqual(contractor, await hostView('user:aeroserv_tech', ['event'], VIEW));
    assert.deepEqual(controller, await hostView('user:occ_controller', ['event'], VIEW));
    await page.close();
  });

  test('every persona sees what the host decides, on every page', async () => {
    const personas = JSON.parse(await (await fetch(`${host.url}/console/personas.json`)).text()).personas;
    for (const { principal } of personas) {
      for (const [id, types] of /** @type {Array<[string, string[]]>} */ ([['events', ['event']], ['records', ['aircraft', 'squawk', 'squawk_message', 'maintenance_entry', 'tracking_item']], ['flights', ['flight', 'ops_aircraft', 'person']]])) {
        const page = await open(principal, { page: id });
        assert.deepEqual(await shown(page), await hostView(principal, types, VIEW), `${principal} on ${id}`);
        await page.close();
      }
    }
  });

  test('pilots see only their own squawks as editable', async () => {
    const page = await open('user:pilot_own_sq', { page: 'records' });
    const rows = await shown(page);
    assert.ok(rows['squawk:sq_radio'].includes('update'), 'their own squawk');
    assert.ok(!rows['squawk:sq_brakes'].includes('update'), 'another pilot\'s squawk');
    assert.ok(rows['squawk:sq_brakes'].includes('read'));
    await page.close();
  });

  test('"why not?" shows hidden actions with the module\'s reasons', async () => {
    const page = await open('user:aeroserv_tech', { whyNot: true });
    const why = await page.$eval('tr[data-resource="event:aog_lhr"] [data-hidden-action="close"]', (el) => [...el.querySelectorAll('.reason')].map((r) => /** @type {HTMLElement} */ (r).dataset.code));
    /** @type {Explanation} */
    const host = (await api('/v1/explain', { principal: 'user:aeroserv_tech', action: 'close', resource: 'event:aog_lhr', now: NOW })).body;
    assert.ok(why.length > 0);
    assert.deepEqual(why, host.decision.reasons.map((r) => r.code));
    // hidden records appear too, greyed, with why the persona may not see them
    const hiddenRow = await page.$('tr.hidden-row[data-resource="event:unassigned_jfk"] [data-hidden-action="view"] .reason');
    assert.ok(hiddenRow, 'the unassigned event is listed as hidden with its reason');
    await page.close();
  });

  test('a deactivated user and a pending invitation are told why everything is denied', async () => {
    for (const [persona, reason] of [['user:former_controller', 'gate.active'], ['user:new_planner', 'gate.invitation_accepted']]) {
      const page = await open(persona);
      const codes = await page.$$eval('#gate .reason', (rs) => rs.map((r) => r.dataset.code));
      assert.ok(codes.length > 0 && codes.every((c) => c !== undefined && c.startsWith('gate.')), `${persona}: ${codes}`);
      assert.ok(codes.includes(reason), `${persona}: ${codes}`);
      assert.deepEqual(await shown(page), {});
      await page.close();
    }
  });

  test('a guest\'s access counts down and ends with the invitation', async () => {
    const page = await open('invitee:g_sms');
    assert.deepEqual(Object.keys(await shown(page)), ['event:aog_lhr']);
    const left = present(await page.textContent('.countdown[data-resource="event:aog_lhr"] .left'));
    // The SMS invitation ends at 18:00, eight hours after the console's clock started.
    const [hh, mm, ss] = present(left.match(/^(\d\d)h (\d\d)m (\d\d)s$/)).slice(1).map(Number);
    const seconds = hh * 3600 + mm * 60 + ss;
    assert.ok(seconds <= 8 * 3600 && seconds > 8 * 3600 - 60, left);
    await page.close();
    const late = await open('invitee:g_sms', { now: '2026-05-01T17:59:58Z' });
    assert.deepEqual(Object.keys(await shown(late)), ['event:aog_lhr']);
    await late.waitForSelector('tr[data-resource="event:aog_lhr"]', { state: 'detached', timeout: 10_000 });
    assert.equal(await late.$('.countdown'), null);
    await late.close();
  });

  test('the access-rights matrix is the host\'s, colour-coded by level', async () => {
    const page = await open('user:a_administrator', { page: 'matrix' });
    const cells = await page.$$eval('section[data-matrix="operations"] tr[data-role]', (trs) => Object.fromEntries(trs.map((tr) => [tr.dataset.role, [...tr.querySelectorAll('td')].map((td) => td.textContent)])));
    /** @type {AccessMatrix} */
    const host = (await api('/v1/matrix/operations?account=skyline_charter')).body;
    assert.equal(Object.keys(cells).length, host.roles.length);
    for (const role of host.roles) assert.deepEqual(cells[role.name], role.cells.map((c) => c || '—'), role.name);
    /** @param {string} sel */
    const colour = (sel) => page.$eval(sel, (el) => getComputedStyle(el).backgroundColor);
    const read = await colour('td.lvl-read');
    const write = await colour('td.lvl-write');
    const none = await colour('td.lvl-none');
    assert.notEqual(read, write);
    assert.notEqual(read, none);
    assert.ok(await page.$('tr.mine[data-role="administrator"]'), 'the persona\'s own role is marked');
    if (process.env.CLEARANCE_SCREENSHOTS) await page.screenshot({ path: join(ROOT, 'docs/console-matrix.png'), fullPage: false });
    await page.close();
  });

  test('an administrator creates, changes and removes an access-right type; others are refused', async () => {
    const editor = 'div[data-role-editor="operations"]';
    /** @param {Page} page */
    const saved = async (page) => {
      await page.click(`${editor} button[data-save-role]`);
      await page.waitForSelector('#notice[data-code]:not([data-code=""])');
      return page.$eval('#notice', (n) => ({ code: n.dataset.code, text: n.textContent ?? '' }));
    };
    /** @param {Page} page */
    const clear = (page) => page.$eval('#notice', (n) => { n.dataset.code = ''; });
    /** @returns {Promise<{name: string, custom: boolean, cells: string[]}[]>} */
    const hostRoles = async () => (await api('/v1/matrix/operations?account=skyline_charter')).body.roles;
    const rows = /** @type {string[]} */ ((await api('/v1/matrix/operations?account=skyline_charter')).body.rows);
    const bookings = rows.indexOf('bookings');

    const admin = await open('user:a_administrator', { page: 'matrix' });
    await admin.fill(`${editor} input[name="name"]`, 'weekend_desk');
    await admin.selectOption(`${editor} select[name="extends"]`, 'sales_read');
    await admin.fill(`${editor} input[name="cells"]`, 'bookings:write');
    await clear(admin);
    assert.equal((await saved(admin)).code, 'written');
    const made = (await hostRoles()).find((r) => r.name === 'weekend_desk');
    assert.ok(made?.custom, 'the host serves the new type');
    assert.equal(made.cells[bookings], 'write');
    await admin.waitForSelector('section[data-matrix="operations"] tr[data-role="weekend_desk"]');

    await admin.click(`${editor} button[data-edit-role="weekend_desk"]`);
    assert.equal(await admin.inputValue(`${editor} input[name="cells"]`), 'bookings:write');
    await admin.fill(`${editor} input[name="cells"]`, 'bookings:read');
    await clear(admin);
    assert.equal((await saved(admin)).code, 'written');
    assert.equal((await hostRoles()).find((r) => r.name === 'weekend_desk')?.cells[bookings], 'read');

    // A type still held is not removed; the refusal names who holds it.
    await clear(admin);
    await admin.click(`${editor} button[data-remove-role="night_dispatch"]`);
    await admin.waitForSelector('#notice[data-code="facts.unknown_role"]');
    assert.match(present(await admin.textContent('#notice')), /user:a_night_dispatch/);
    await clear(admin);
    await admin.click(`${editor} button[data-remove-role="weekend_desk"]`);
    await admin.waitForSelector('#notice[data-code="written"]');
    assert.equal((await hostRoles()).some((r) => r.name === 'weekend_desk'), false);
    await admin.close();

    // A manager may not grant access (OP4): the refusal lists the failed checks.
    const manager = await open('user:a_manager', { page: 'matrix' });
    await manager.fill(`${editor} input[name="name"]`, 'manager_desk');
    await manager.fill(`${editor} input[name="cells"]`, 'bookings:write');
    await clear(manager);
    const refused = await saved(manager);
    assert.equal(refused.code, 'write.denied');
    assert.match(refused.text, /role\.missing_permission/);
    assert.equal((await hostRoles()).some((r) => r.name === 'manager_desk'), false);
    await manager.close();
  });

  test('the access review lists what a user may do, as the host does', async () => {
    const page = await open('user:a_crew', { page: 'review' });
    await page.waitForSelector('table[data-review="user:a_crew"]');
    const text = present(await page.textContent('table[data-review="user:a_crew"]'));
    const flights = (await api('/v1/resources', { principal: 'user:a_crew', action: 'view', type: 'flight', now: NOW })).body;
    assert.ok(flights.length > 0);
    // Flight numbers are read by no rule, so the slice leaves them out: the review names
    // each flight by its id.
    for (const f of flights) assert.ok(text.includes(f.split(':')[1]), `${f} is in the review`);
    assert.match(text, /page operations:crew_app/);
    await page.close();
  });

  test('an allowed write goes through the host', async () => {
    const page = await open('user:pilot_own_sq', { page: 'records' });
    await page.click('tr[data-resource="squawk:sq_radio"] button[data-action="update"]');
    await page.waitForSelector('#notice[data-code="written"]');
    // Titles are read by no rule, so the host's facts show the edit, not the slice.
    const facts = (await api('/v1/facts?account=skyways')).body;
    assert.match(present(facts.entities.find((/** @type {{id: string}} */ e) => e.id === 'sq_radio')).attrs.title, /\(edited /);
    if (process.env.CLEARANCE_SCREENSHOTS) await page.screenshot({ path: join(ROOT, 'docs/console-records.png'), fullPage: false });
    await page.close();
  });

  test('a write the host refuses shows its reason', async () => {
    const page = await open('user:pilot_own_sq', { page: 'records', whyNot: true });
    await page.click('tr[data-resource="squawk:sq_brakes"] [data-hidden-action="update"] button[data-try]');
    await page.waitForSelector('#notice[data-kind="refusal"]');
    assert.equal(await page.getAttribute('#notice', 'data-code'), 'write.denied');
    assert.match(present(await page.textContent('#notice')), /refused/);
    // The host's denial, with every failed check, is shown with the refusal.
    const reasons = await page.$$eval('#notice .reason', (els) => els.map((e) => e.getAttribute('data-code')));
    assert.ok(reasons.length > 0, 'the refusal shows none of the host\'s reasons');
    await page.close();
  });

  test('the page follows its account\'s changes by their deltas, and fetches its slice again after a policy change', async () => {
    const page = await open('user:aeroserv_tech', { whyNot: false });
    assert.ok((await shown(page))['event:aog_lhr'].includes('update'));
    // The controller unassigns the contractor: the page applies the change's deltas and
    // no longer shows the event, without fetching its slice again.
    /** @type {string[]} */
    const slices = [];
    page.on('request', (r) => { if (r.url().includes('/v1/slice/')) slices.push(r.url()); });
    const unassign = await api('/v1/facts', { author: 'user:occ_controller', now: NOW, deltas: [{ op: 'remove_tuple', tuple: { resource: 'event:aog_lhr', relation: 'assigned', subject: 'organization:aeroserv' } }] });
    assert.equal(unassign.status, 200, JSON.stringify(unassign.body));
    await page.waitForSelector(`body[data-revision="${unassign.body.revision}"]`, { timeout: 10_000 });
    await page.waitForSelector('tr[data-resource="event:aog_lhr"]', { state: 'detached' });
    assert.equal(await page.isHidden('#stale'), true);
    assert.deepEqual(slices, [], 'the page fetched its slice again for a change it could follow');
    // A policy change cannot be followed by deltas: the page fetches its slice again.
    const reload = await api('/v1/policy/reload', {});
    assert.equal(reload.status, 200, JSON.stringify(reload.body));
    await page.waitForSelector(`body[data-revision="${reload.body.revision}"]`, { timeout: 10_000 });
    assert.equal(slices.length, 1, `slices fetched: ${slices}`);
    if (process.env.CLEARANCE_SCREENSHOTS) {
      const shot = await open('user:occ_controller', { whyNot: true });
      await shot.screenshot({ path: join(ROOT, 'docs/console-events.png'), fullPage: false });
      await shot.close();
    }
    await page.close();
  });
});
