// The operations console: the one wasm module runs in the page on the signed-in persona's
// principal slice, and decides every button the page shows. The slice is loaded only once
// its signature verifies with the host's slice keys. Writes go to the host, which decides
// them again with the same module and refuses stale parity tokens.

import { ClearanceError, isError, loadBrowser, serverEvents, verifySlice } from '/index.js';

/**
 * @import { ClearanceModule, Denial, Outline, Request, Session, Source, TypeOutline, WriteOutline } from '/index.js'
 */

/**
 * A persona of personas.json.
 *
 * @typedef {{principal: string, label: string, note?: string}} Persona
 */

/**
 * An entity of a facts document (docs/facts-format.md).
 *
 * @typedef {{type: string, id: string, account?: string, attrs?: {[name: string]: unknown}}} Entity
 */

/**
 * A tuple of a facts document: `resource` has `relation` to `subject`, until `expires`.
 *
 * @typedef {{resource: string, relation: string, subject: string, expires?: string}} Tuple
 */

/**
 * A principal slice (`GET /v1/slice/{principal}`, once verified): the policy, and the facts
 * of the principal's account.
 *
 * @typedef {object} Slice
 * @property {string} principal
 * @property {string} account
 * @property {number} revision
 * @property {string} policy_hash
 * @property {number} issued
 * @property {number} expires
 * @property {Source[]} policy
 * @property {{revision: number, entities: Entity[], tuples: Tuple[]}} facts
 */

/**
 * A change as the persona's feed gives it: its deltas cut to the persona's slice, or
 * `refetch` (why) when it cannot be followed so.
 *
 * @typedef {{revision: number, author: string, deltas?: object[], refetch?: string}} Change
 */

/**
 * The host's revision (`GET /v1/revision`).
 *
 * @typedef {{revision: number, policy_hash: string, module_hash: string}} HostRevision
 */

/**
 * A page of the console: a page of records, of the `types` it lists, or one of its own.
 *
 * @typedef {{id: string, title: string, types: string[]} | {id: 'matrix' | 'review', title: string}} Page
 */

/**
 * A reason as the console shows it: a decision's, or an error's code and message.
 *
 * @typedef {{code: string, message: string, at?: string}} ShownReason
 */

/**
 * The value of an attribute of `h`: `on…` attributes are event listeners; `null`,
 * `undefined` and `false` leave the attribute out, `true` sets it empty.
 *
 * @typedef {string | number | boolean | null | undefined | ((event: Event) => void)} Attr
 */

/**
 * The pages of the console and the record types each one lists.
 *
 * @type {Page[]}
 */
const PAGES = [
  { id: 'events', title: 'Events', types: ['event'] },
  { id: 'records', title: 'Aircraft records', types: ['aircraft', 'squawk', 'squawk_message', 'maintenance_entry', 'tracking_item'] },
  { id: 'flights', title: 'Flights', types: ['flight', 'ops_aircraft', 'person'] },
  { id: 'maintenance', title: 'Work orders', types: ['work_order', 'task', 'stock_item', 'purchase_order'] },
  { id: 'users', title: 'Users', types: ['user', 'invitee'] },
  { id: 'matrix', title: 'Access rights' },
  { id: 'review', title: 'Access review' },
];

/**
 * Names for the record types.
 *
 * @type {{[type: string]: string}}
 */
const TYPE_TITLES = {
  event: 'Events', aircraft: 'Aircraft', squawk: 'Squawks', squawk_message: 'Messages',
  maintenance_entry: 'Maintenance entries', tracking_item: 'Tracking items', flight: 'Flights',
  ops_aircraft: 'Fleet', person: 'Staff', work_order: 'Work orders', task: 'Tasks',
  stock_item: 'Stock', purchase_order: 'Purchase orders', user: 'Users', invitee: 'Guests',
};

/**
 * An element of the page. Every selector the console asks for names an HTML element of
 * index.html.
 *
 * @param {string} selector
 */
const $ = (selector) => /** @type {HTMLElement} */ (document.querySelector(selector));

/** The clock input of the page. */
const clockInput = () => /** @type {HTMLInputElement} */ ($('#clock'));

/**
 * A session's answer, or what it threw as a denial (`{allowed: false, error}`) for the page
 * to show: a check the page cannot make hides the action, as a denial does.
 *
 * @template T
 * @param {() => T} f
 * @returns {T | Denial}
 */
function attempt(f) {
  try {
    return f();
  } catch (e) {
    if (e instanceof ClearanceError) return { allowed: false, error: e.toJSON() };
    throw e;
  }
}

/**
 * Creates an element with attributes and children.
 *
 * @param {string} tag
 * @param {{[name: string]: Attr}} [attrs]
 * @param {...unknown} children nodes, or values shown as text (arrays are flattened once)
 */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    // An `on…` attribute is a listener (see Attr).
    if (k.startsWith('on')) el.addEventListener(k.slice(2), /** @type {(event: Event) => void} */ (v));
    else if (k === 'class') el.className = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/**
 * The console's state. `module`, `session` and `host` are set by boot() before anything
 * else runs; `principal`, `slice` and `outline` once a persona is signed in, before the
 * page first renders.
 *
 * @type {{
 *   module: ClearanceModule | null,
 *   session: Session | null,
 *   host: HostRevision | null,
 *   personas: Persona[],
 *   principal: string | null,
 *   slice: Slice | null,
 *   outline: Outline | null,
 *   page: string,
 *   whyNot: boolean,
 *   latest: number,
 *   clock: {start: number, at: number},
 *   open: string | null,
 *   timer: ReturnType<typeof setInterval> | null,
 *   token: string | null,
 *   feed: AbortController | null,
 * }}
 */
const state = {
  module: null,
  session: null,
  host: null,
  personas: [],
  principal: null,
  slice: null,
  outline: null,
  page: 'events',
  whyNot: false,
  latest: 0,
  clock: { start: 0, at: 0 },
  open: null,
  timer: null,
  token: null,
  feed: null,
};

/**
 * A part of the state that boot() or signIn() has loaded; throws if it has not. The page
 * renders, and so decides, only once a persona's slice is loaded.
 *
 * @template T
 * @param {T | null} value
 * @param {string} what
 * @returns {T}
 */
function loaded(value, what) {
  if (value === null) throw new Error(`the console has not loaded ${what} yet`);
  return value;
}

const wasmModule = () => loaded(state.module, 'the module');
const session = () => loaded(state.session, 'the module');
const host = () => loaded(state.host, 'the host\'s revision');
const slice = () => loaded(state.slice, 'a slice');
const outline = () => loaded(state.outline, 'a slice');

/** The console's clock in seconds: starts at the demo time and runs in real time. */
function now() {
  return Math.floor(state.clock.start + (Date.now() - state.clock.at) / 1000);
}

/** @param {number} seconds */
function setClock(seconds) {
  state.clock = { start: seconds, at: Date.now() };
}

/** @param {number} seconds */
function iso(seconds) {
  return new Date(seconds * 1000).toISOString().replace('.000Z', 'Z');
}

/**
 * @param {string} text
 * @returns {number | null}
 */
function parseTime(text) {
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : Math.floor(ms / 1000);
}

/** @param {number} seconds */
function duration(seconds) {
  const s = Math.max(0, seconds);
  const d = Math.floor(s / 86400);
  const parts = [Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60), s % 60];
  const [hh, mm, ss] = parts.map((n) => String(n).padStart(2, '0'));
  return `${d > 0 ? `${d}d ` : ''}${hh}h ${mm}m ${ss}s`;
}

/**
 * Fetches `url` and reads its JSON body (an error of the console's own if it is not JSON).
 *
 * @param {string} url
 * @param {RequestInit} [init]
 */
async function json(url, init = {}) {
  // The host's API names its caller: the signed-in persona's token, from the demo issuer.
  const headers = new Headers(init.headers);
  if (state.token !== null && url.startsWith('/v1/')) headers.set('authorization', `Bearer ${state.token}`);
  const response = await fetch(url, { ...init, headers });
  let body;
  try {
    body = await response.json();
  } catch {
    body = { error: { code: 'http.unreadable', message: `${response.status} ${response.statusText}`, help: '' } };
  }
  return { ok: response.ok, status: response.status, body };
}

/**
 * @param {HTMLElement} el
 * @param {string} kind
 * @param {...(Node | string)} content
 */
function show(el, kind, ...content) {
  el.hidden = false;
  el.className = `banner ${kind}`;
  el.dataset.kind = kind;
  el.replaceChildren(...content);
}

/**
 * @param {string} kind
 * @param {...(Node | string)} content
 */
function notice(kind, ...content) {
  show($('#notice'), kind, ...content);
}

/** @param {string} text */
function code(text) {
  return h('span', { class: 'code' }, text);
}

/**
 * Reasons of a denial as text: `code — message` each.
 *
 * @param {ShownReason[]} reasons
 */
function reasonList(reasons) {
  return reasons.map((r) => h('div', { class: 'reason', 'data-code': r.code }, code(r.code), ' ', r.message, r.at ? h('span', { class: 'id' }, ` (${r.at})`) : null));
}

// --- The slice and the facts it holds ---------------------------------------------------

/** @param {string} type */
function entities(type) {
  return slice().facts.entities.filter((e) => e.type === type);
}

/**
 * What to call an entity: its title, number, name... or its id.
 *
 * @param {{id: string, attrs?: {[name: string]: unknown}}} e
 * @returns {unknown}
 */
function label(e) {
  const a = e.attrs ?? {};
  return a.title ?? a.number ?? a.registration ?? a.name ?? a.email ?? a.address ?? e.id;
}

/** @param {string} key `type:id` */
function entityByKey(key) {
  const [type, ...rest] = key.split(':');
  const id = rest.join(':');
  return slice().facts.entities.find((e) => e.type === type && e.id === id);
}

/** @param {string} type */
function typeOutline(type) {
  return outline().types.find((t) => t.name === type);
}

function principal() {
  return loaded(state.principal, 'a persona');
}

/**
 * A request of the signed-in persona, now.
 *
 * @param {string} action
 * @param {string} resource
 * @param {string} [target]
 */
function request(action, resource, target) {
  /** @type {Request} */
  const r = { principal: principal(), action, resource, now: now() };
  if (target) r.target = target;
  return r;
}

// --- Loading ---------------------------------------------------------------------------

async function boot() {
  const params = new URLSearchParams(location.search);
  const personas = await json('/console/personas.json');
  if (!personas.ok) throw new Error('cannot read /console/personas.json');
  state.personas = personas.body.personas;
  const first = params.get('persona') ?? state.personas[0]?.principal;
  await token(first);
  const host = await json('/v1/revision');
  if (!host.ok) throw new Error(`cannot read /v1/revision: ${host.body.error?.message ?? host.status}`);
  state.host = host.body;
  setClock(parseTime(params.get('now') ?? personas.body.now ?? '') ?? Math.floor(Date.now() / 1000));
  state.module = await loadBrowser('/pkg/clearance_bg.wasm');
  state.session = new state.module.Session();
  const select = /** @type {HTMLSelectElement} */ ($('#persona'));
  for (const p of state.personas) select.append(h('option', { value: p.principal }, `${p.label} (${p.principal})`));
  select.addEventListener('change', () => signIn(select.value));
  const whyNot = /** @type {HTMLInputElement} */ ($('#why-not'));
  whyNot.addEventListener('change', () => {
    state.whyNot = whyNot.checked;
    render();
  });
  const clock = clockInput();
  clock.addEventListener('change', () => {
    const t = parseTime(clock.value);
    if (t === null) {
      notice('refusal', code('clock.invalid'), ` \`${clock.value}\` is not an RFC 3339 time`);
      return;
    }
    setClock(t);
    render();
  });
  state.page = params.get('page') ?? 'events';
  state.whyNot = params.has('why-not');
  whyNot.checked = state.whyNot;
  select.value = first;
  await signIn(first);
  state.timer = setInterval(tick, 1000);
}

/**
 * Gets a token for `who` from the demo issuer (a host started with `--demo`). A real
 * deployment signs users in through its identity provider instead.
 *
 * @param {string} who
 */
async function token(who) {
  state.token = null;
  const answer = await json('/demo/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ principal: who }) });
  if (!answer.ok) throw new Error(`no token for ${who}: ${answer.body.error?.message ?? answer.status}`);
  state.token = answer.body.token;
}

/**
 * Follows the host's change feed as the signed-in persona (the changes of its account),
 * applying each change's deltas, cut to the persona's slice by the host, to the loaded
 * slice. Server-sent events read through fetch, since an EventSource cannot send the
 * token.
 */
async function follow() {
  state.feed?.abort();
  const controller = new AbortController();
  state.feed = controller;
  try {
    const since = state.slice === null ? '' : `?since=${state.slice.revision}`;
    const response = await fetch(`/v1/changes${since}`, { headers: { authorization: `Bearer ${state.token}` }, signal: controller.signal });
    if (!response.ok || response.body === null) return;
    for await (const { event, data } of serverEvents(response.body)) {
      // A sign-in since follows on its own feed.
      if (controller.signal.aborted) return;
      if (event === 'change') changed(/** @type {Change} */ (data));
      // Changes were skipped: the slice is fetched again at the host's revision.
      else if (event === 'reset') refetch();
    }
  } catch {
    // Aborted by the next sign-in, or the host went away: the page keeps deciding.
  }
}

/**
 * A change on the host, as the persona's feed gives it: its deltas, cut to the persona's
 * slice, or `refetch` when it cannot be followed so (a policy change, the authorisations
 * the persona holds moved).
 *
 * @param {Change} change
 */
function changed(change) {
  state.latest = Math.max(state.latest, change.revision);
  const mine = state.slice;
  if (mine === null || change.revision <= mine.revision) return;
  if (Array.isArray(change.deltas) && applied(mine, change.revision, change.deltas)) return;
  refetch();
}

/**
 * Applies a change's deltas to the loaded slice in the module, in place; the page then
 * decides on the change's revision without fetching its slice again. False when they do
 * not apply, and nothing changed.
 *
 * @param {Slice} mine
 * @param {number} revision
 * @param {object[]} deltas
 */
function applied(mine, revision, deltas) {
  const s = session();
  if (isError(attempt(() => s.applyDeltas(deltas)))) return false;
  const facts = attempt(() => s.facts());
  if (isError(facts)) return false;
  state.slice = { ...mine, revision, facts: /** @type {Slice['facts']} */ (facts) };
  if (state.latest <= revision) $('#stale').hidden = true;
  document.body.dataset.revision = String(revision);
  render();
  return true;
}

/**
 * A change the page cannot follow by deltas: it says so, and fetches the persona's slice
 * again.
 */
function refetch() {
  const mine = state.slice;
  if (mine === null) return;
  show($('#stale'), 'stale', `Revision ${state.latest} is on the host; this page decides on revision ${mine.revision} and is fetching its slice again. `,
    h('button', { onclick: () => signIn(principal()) }, 'Refresh'));
  void signIn(principal());
}

/**
 * Empties the page when no slice is loaded: what it showed was decided on another
 * persona's slice, so nothing is shown or decided until one is.
 *
 * @param {string} status
 */
function unload(status) {
  state.feed?.abort();
  state.slice = null;
  state.outline = null;
  for (const id of ['#pages', '#page', '#countdowns']) $(id).replaceChildren();
  $('#gate').hidden = true;
  $('#status').replaceChildren(status);
}

/**
 * A refusal to sign in, with its code on the notice.
 *
 * @param {string} errorCode
 * @param {string} message
 */
function refuseSignIn(errorCode, message) {
  unload('No slice is loaded: nothing is decided in the page.');
  delete document.body.dataset.principal;
  notice('refusal', code(errorCode), ` ${message}`);
  $('#notice').dataset.code = errorCode;
}

/**
 * A persona the host lets read nothing, since it fails a gate of its type (a deactivated
 * user, an invitation not accepted): signed in, and told why every action is denied.
 *
 * @param {string} who
 * @param {ShownReason} reason the host's refusal of the slice
 */
function gated(who, reason) {
  unload(`${who} may read nothing: the host refuses its slice.`);
  show($('#gate'), 'refusal', h('strong', {}, 'Every action is denied. '), ...reasonList([reason]));
  document.body.dataset.principal = who;
}

/**
 * Signs in as a persona: fetches its signed principal slice and the host's slice keys, and
 * loads the slice into the module only if its signature verifies, for this persona, and it
 * has not expired (by the system clock: the page's clock is the decisions' only).
 *
 * @param {string} who
 */
async function signIn(who) {
  state.principal = who;
  state.open = null;
  $('#stale').hidden = true;
  try {
    await token(who);
  } catch (e) {
    notice('refusal', code('auth.failed'), ` ${e instanceof Error ? e.message : String(e)}`);
    return;
  }
  const [answer, keys] = await Promise.all([json(`/v1/slice/${encodeURIComponent(who)}`), json('/v1/slice-keys')]);
  if (!answer.ok) {
    const error = { code: String(answer.body.error?.code ?? 'slice.failed'), message: String(answer.body.error?.message ?? answer.status) };
    if (answer.status === 403 && error.code.startsWith('gate.')) gated(who, error);
    else refuseSignIn(error.code, error.message);
    return;
  }
  if (!keys.ok) {
    refuseSignIn('slice.no_keys', `the host's slice keys (GET /v1/slice-keys) could not be read: ${keys.body.error?.message ?? keys.status}`);
    return;
  }
  const verified = await verifySlice(answer.body, { keys: keys.body, principal: who });
  if (isError(verified)) {
    refuseSignIn(verified.error.code, verified.error.message);
    return;
  }
  const loadedSlice = /** @type {Slice} */ (verified);
  const s = session();
  const policy = attempt(() => s.loadPolicy(loadedSlice.policy));
  if (isError(policy)) throw new Error(policy.error.message);
  const info = attempt(() => s.loadFacts(loadedSlice.facts));
  if (isError(info)) throw new Error(info.error.message);
  const schema = attempt(() => s.schema());
  if (isError(schema)) throw new Error(schema.error.message);
  state.slice = loadedSlice;
  state.outline = schema;
  // A change announced while the slice was on its way may already be in it.
  if (state.latest <= loadedSlice.revision) $('#stale').hidden = true;
  document.body.dataset.principal = who;
  document.body.dataset.revision = String(info.revision);
  render();
  void follow();
}

// --- Rendering -------------------------------------------------------------------------

function render() {
  clockInput().value = iso(now());
  // Nothing is shown before a persona's slice is loaded (the controls can change before).
  if (state.slice === null) return;
  const persona = state.personas.find((p) => p.principal === state.principal);
  const same = wasmModule().moduleHash === host().module_hash;
  $('#status').replaceChildren(
    `${persona?.label ?? state.principal} · account `, code(slice().account),
    ' · revision ', code(String(slice().revision)),
    ' · policy ', code(slice().policy_hash.slice(0, 12)),
    ' · module ', code(wasmModule().moduleHash.slice(0, 12)),
    same ? ' (the same bytes as the host)' : h('strong', {}, ' (NOT the host\'s module: decisions may differ)'),
    ` · ${slice().facts.entities.length} entities decided in the page`,
  );
  renderGate();
  renderCountdowns();
  const nav = $('#pages');
  nav.replaceChildren(...PAGES.map((p) => h('button', {
    'data-page': p.id,
    'aria-current': p.id === state.page ? 'page' : null,
    onclick: () => { state.page = p.id; render(); },
  }, p.title)));
  const page = PAGES.find((p) => p.id === state.page) ?? PAGES[0];
  const main = $('#page');
  if (page.id === 'matrix') main.replaceChildren(...matrixPage());
  else if (page.id === 'review') main.replaceChildren(...reviewPage());
  else if ('types' in page) main.replaceChildren(...recordsPage(page));
  $('#footer').textContent = 'Every button above was decided in this page by the wasm module; the host decides every write again with the same bytes.';
}

/**
 * Why every check of `who` is denied (deactivated, invitation pending), or null.
 *
 * @param {string} who
 * @returns {ShownReason[] | null}
 */
function gateReasons(who) {
  const t = typeOutline(who.split(':')[0]);
  const a = t?.actions.find((x) => !x.target);
  if (!a) return null;
  const d = attempt(() => session().check({ principal: who, action: a.name, resource: who, now: now() }));
  if (isError(d)) return [{ code: d.error.code, message: d.error.message }];
  const gates = d.allowed ? [] : d.reasons.filter((r) => r.code.startsWith('gate.') || r.code.startsWith('principal.'));
  return gates.length ? gates : null;
}

/** A persona every check denies is told why, once. */
function renderGate() {
  const gate = $('#gate');
  const reasons = gateReasons(principal());
  if (reasons) show(gate, 'refusal', h('strong', {}, 'Every action is denied. '), ...reasonList(reasons));
  else gate.hidden = true;
}

/** Time-limited access (a guest's) counts down to the decision's `valid_until`. */
function renderCountdowns() {
  const box = $('#countdowns');
  const items = [];
  for (const e of entities('event')) {
    const d = attempt(() => session().check(request('view', `event:${e.id}`)));
    if (!isError(d) && d.allowed && d.valid_until) {
      const until = parseTime(d.valid_until);
      // The module writes `valid_until` in RFC 3339, which always parses.
      if (until === null) continue;
      items.push(h('div', { class: 'countdown', 'data-resource': `event:${e.id}`, 'data-until': until },
        'Your access to ', h('em', {}, label(e)), ' ends in ', h('strong', { class: 'left' }, duration(until - now())),
        h('span', { class: 'until' }, ` (at ${iso(until)})`)));
    }
  }
  box.replaceChildren(...items);
}

/** Once a second: countdowns tick, and a decision whose time is up is made again. */
function tick() {
  if (!state.slice) return;
  let expired = false;
  for (const el of document.querySelectorAll('[data-until]')) {
    const left = Number(el.getAttribute('data-until')) - now();
    const text = el.querySelector('.left');
    if (text) text.textContent = duration(left);
    if (left <= 0) expired = true;
  }
  if (expired) render();
  else {
    const clock = clockInput();
    clock.value = document.activeElement === clock ? clock.value : iso(now());
  }
}

/**
 * The action that names the record's read permission, if the type has one.
 *
 * @param {TypeOutline} t
 */
function viewAction(t) {
  return t.actions.find((a) => !a.target && (a.name === 'view' || a.name === 'read'))?.name ?? null;
}

/**
 * The write rule behind an action on a type: `set <attr>` or `delete`.
 *
 * @param {TypeOutline} t
 * @param {string} action
 */
function writeFor(t, action) {
  return t.writes.find((w) => w.action === action && (w.change === 'set' || w.change === 'delete')) ?? null;
}

/** @param {{title: string, types: string[]}} page */
function recordsPage(page) {
  const sections = [];
  for (const type of page.types) {
    const t = typeOutline(type);
    const list = entities(type);
    if (!t || list.length === 0) continue;
    const view = viewAction(t);
    const rows = [];
    for (const e of list) {
      const key = `${type}:${e.id}`;
      const answer = attempt(() => session().allowedActions(principal(), key, now()));
      const allowed = isError(answer) ? [] : answer.actions;
      const visible = view === null ? !isError(answer) && !answer.denied : allowed.includes(view);
      if (!visible && !state.whyNot) continue;
      rows.push(recordRow(t, e, key, allowed, visible, view));
      if (state.open === key && visible) rows.push(detailRow(t, e, key));
    }
    sections.push(h('section', { class: 'type', 'data-type': type },
      h('h2', {}, TYPE_TITLES[type] ?? type),
      rows.length
        ? h('table', {}, h('tr', {}, h('th', {}, 'Record'), h('th', {}, 'Actions you may take')), rows)
        : h('p', { class: 'empty' }, 'Nothing here you may see.')));
  }
  if (sections.length === 0) sections.push(h('p', { class: 'empty' }, `No ${page.title.toLowerCase()} in account ${slice().account}.`));
  return sections;
}

/**
 * A record's row: its name and key, and a button per allowed action (with "why not?", a
 * line per other action).
 *
 * @param {TypeOutline} t
 * @param {Entity} e
 * @param {string} key `type:id` of `e`
 * @param {string[]} allowed
 * @param {boolean} visible
 * @param {string | null} view
 */
function recordRow(t, e, key, allowed, visible, view) {
  const buttons = allowed.map((action) => actionButton(t, e, key, action));
  const cells = [h('div', {}, buttons)];
  if (state.whyNot) {
    for (const a of t.actions) {
      if (a.target || allowed.includes(a.name)) continue;
      cells.push(whyNot(t, e, key, a.name));
    }
  }
  const until = [];
  if (visible && view) {
    const d = attempt(() => session().check(request(view, key)));
    if (!isError(d) && d.valid_until) until.push(h('div', { class: 'until' }, `decision holds until ${d.valid_until}`));
  }
  return h('tr', { class: visible ? 'record' : 'record hidden-row', 'data-resource': key },
    h('td', {}, h('div', {}, label(e)), h('div', { class: 'id' }, key), until),
    h('td', {}, cells));
}

/**
 * @param {TypeOutline} t
 * @param {Entity} e
 * @param {string} key
 * @param {string} action
 */
function actionButton(t, e, key, action) {
  const w = writeFor(t, action);
  if (w) {
    return h('button', { class: 'action write', 'data-action': action, onclick: () => doWrite(t, e, key, action, w, true) }, w.change === 'delete' ? action : `${action} ${w.member}`);
  }
  return h('button', {
    class: 'action',
    'data-action': action,
    onclick: () => {
      if (action === viewAction(t)) {
        state.open = state.open === key ? null : key;
        render();
      } else {
        explainAllowed(action, key);
      }
    },
  }, action);
}

/**
 * A hidden action, shown by "why not?" with the reasons the module gives.
 *
 * @param {TypeOutline} t
 * @param {Entity} e
 * @param {string} key `type:id` of `e`
 * @param {string} action
 */
function whyNot(t, e, key, action) {
  const x = attempt(() => session().explain(request(action, key)));
  const reasons = isError(x) ? [{ code: x.error.code, message: x.error.message }] : x.decision.reasons;
  const w = writeFor(t, action);
  return h('div', { class: 'why', 'data-hidden-action': action },
    h('span', { class: 'hidden-action' }, action), ' ',
    reasonList(reasons),
    w ? h('button', { 'data-try': action, onclick: () => doWrite(t, e, key, action, w, false) }, 'try anyway (the host decides)') : null);
}

/**
 * @param {string} action
 * @param {string} key
 */
function explainAllowed(action, key) {
  const x = attempt(() => session().explain(request(action, key)));
  if (isError(x)) {
    notice('refusal', code(x.error.code), ` ${x.error.message}`);
    return;
  }
  notice('ok', h('strong', {}, `${action} on ${key} is allowed`), ` (decided in the page at revision ${x.decision.revision}). Granted by:`, ...reasonList(x.held));
}

/**
 * Details of an open record: its facts, and the actions about a second record.
 *
 * @param {TypeOutline} t
 * @param {Entity} e
 * @param {string} key `type:id` of `e`
 */
function detailRow(t, e, key) {
  const facts = slice().facts.tuples.filter((x) => x.resource === key)
    .map((x) => h('div', { class: 'id' }, `${x.relation} → ${x.subject}${x.expires ? ` (until ${x.expires})` : ''}`));
  const attrs = Object.entries(e.attrs ?? {}).map(([k, v]) => h('div', { class: 'id' }, `${k} = ${JSON.stringify(v)}`));
  const targeted = [];
  for (const a of t.actions) {
    const target = a.target;
    if (!target) continue;
    const w = t.writes.find((x) => x.action === a.name && x.change === 'add');
    const candidates = entities(target).filter((c) => {
      const d = attempt(() => session().check(request(a.name, key, `${target}:${c.id}`)));
      return !isError(d) && d.allowed;
    });
    if (candidates.length === 0) continue;
    const select = /** @type {HTMLSelectElement} */ (h('select', { 'data-target-for': a.name }, candidates.map((c) => h('option', { value: `${target}:${c.id}` }, label(c)))));
    targeted.push(h('div', {}, `${a.name}: `, select, w
      ? h('button', { class: 'action write', 'data-action': a.name, onclick: () => doAdd(key, a.name, w, select.value) }, `${w.change} ${w.member}`)
      : null));
  }
  return h('tr', { class: 'detail', 'data-detail': key }, h('td', { colspan: 2 }, attrs, facts, targeted));
}

// --- Writes ------------------------------------------------------------------------------

/**
 * Sets an attribute of a record (a demo edit) or deletes it, through the host.
 *
 * @param {TypeOutline} t
 * @param {Entity} e
 * @param {string} key `type:id` of `e`
 * @param {string} action
 * @param {WriteOutline} w the `set` or `delete` rule of `action`
 * @param {boolean} allowedInPage
 */
async function doWrite(t, e, key, action, w, allowedInPage) {
  const deltas = w.change === 'delete'
    ? [{ op: 'remove_entity', entity: key }]
    : [{ op: 'set_attr', entity: key, attr: w.member, value: editedValue(e, w.member) }];
  await post(deltas, request(action, key), allowedInPage);
}

/**
 * Adds a tuple from a record to a target, through the host.
 *
 * @param {string} key
 * @param {string} action
 * @param {WriteOutline} w the `add` rule of `action`
 * @param {string} target
 */
async function doAdd(key, action, w, target) {
  await post([{ op: 'add_tuple', tuple: { resource: key, relation: w.member, subject: target } }], request(action, key, target), true);
}

/**
 * The new value of an attribute for a demo edit.
 *
 * @param {Entity} e
 * @param {string | null} attr the attribute a `set` rule names (a `set` rule always names one)
 */
function editedValue(e, attr) {
  const old = attr === null ? undefined : e.attrs?.[attr];
  const time = typeof old === 'string' ? parseTime(old) : null;
  if (typeof old === 'string' && time !== null && /\d{4}-\d{2}-\d{2}T/.test(old)) return iso(time + 1800);
  const base = typeof old === 'string' ? old.replace(/ \(edited [^)]*\)$/, '') : String(old ?? '');
  return `${base} (edited ${iso(now()).slice(11, 16)})`;
}

/**
 * Sends a write with the parity token of the page's decision; shows the host's answer.
 *
 * @param {object[]} deltas
 * @param {Request | null} req the request the page decided, if any
 * @param {boolean} allowedInPage
 */
async function post(deltas, req, allowedInPage) {
  // The host checks a write at its own clock, as the signed-in user (its token). A write
  // that no decision in the page stands for (a new access-right type) carries no token.
  const body = {
    author: principal(),
    deltas,
    ...(req ? {
      parity: {
        module_hash: wasmModule().moduleHash,
        policy_hash: slice().policy_hash,
        revision: slice().revision,
        request: req,
        allowed: allowedInPage,
      },
    } : {}),
  };
  const answer = await json('/v1/facts', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!answer.ok) {
    const err = answer.body.error ?? { code: 'write.failed', message: `HTTP ${answer.status}` };
    // A refusal by the policy carries the denial, with every failed check.
    const reasons = answer.body.refusal?.decision?.reasons ?? [];
    notice('refusal', h('strong', {}, 'The host refused the write: '), code(err.code), ` ${err.message}`,
      ...(err.help ? [h('div', { class: 'id' }, err.help)] : []), ...reasonList(reasons));
    $('#notice').dataset.code = err.code;
    return;
  }
  await signIn(principal());
  notice('ok', h('strong', {}, `Written at revision ${answer.body.revision}. `), 'The host decided it again with the same module.');
  $('#notice').dataset.code = 'written';
}

// --- Access rights matrix (OP7) and access review (MX11) --------------------------------

/**
 * @param {string} cell
 * @param {boolean} levels
 */
function levelClass(cell, levels) {
  if (!cell || cell === 'none') return 'lvl-none';
  if (!levels) return 'lvl-actions';
  const word = cell.split('(')[0].trim();
  return `lvl-${['none', 'own', 'limited', 'read', 'write', 'use'].includes(word) ? word : 'none'}`;
}

/**
 * The roles of a user entity (`attrs.roles`), none if it has none.
 *
 * @param {Entity | undefined} e
 * @returns {string[]}
 */
function rolesOf(e) {
  const roles = e?.attrs?.roles ?? [];
  // The policy declares `roles` a set of strings, so the core loads no other value.
  return /** @type {string[]} */ (roles);
}

function myRoles() {
  const me = entityByKey(principal());
  return new Set(rolesOf(me));
}

function matrixPage() {
  const out = [];
  const mine = myRoles();
  // The matrix of the persona's own roles first.
  const matrices = [...outline().matrices].sort((a, b) => Number(b.roles.some((r) => mine.has(r))) - Number(a.roles.some((r) => mine.has(r))));
  for (const m of matrices) {
    const answer = attempt(() => session().matrix(m.name, slice().account));
    if (isError(answer)) {
      out.push(h('p', { class: 'empty' }, `${m.name}: ${answer.error.message}`));
      continue;
    }
    const head = h('tr', {}, h('th', {}, 'role'), answer.rows.map((r) => h('th', {}, r)));
    const rows = answer.roles.map((role) => h('tr', { class: mine.has(role.name) ? 'mine' : null, 'data-role': role.name },
      h('th', { class: 'role' }, role.name, role.custom ? ' (this account)' : ''),
      role.cells.map((c, i) => h('td', { class: levelClass(c, answer.levels), 'data-row': answer.rows[i] }, c || '—'))));
    out.push(h('section', { class: 'type', 'data-matrix': m.name },
      h('h2', {}, `Matrix ${m.name}: roles × pages${answer.levels ? ' with levels' : ''}`),
      answer.levels
        ? h('p', { class: 'legend' }, ['none', 'own', 'limited', 'read', 'write', 'use'].map((l) => h('span', { class: `lvl-${l}` }, l)))
        : null,
      h('div', { style: 'overflow-x: auto' }, h('table', { class: 'matrix' }, head, rows)),
      roleEditor(m.name, answer.roles)));
  }
  return out;
}

/**
 * OP6, MX12: the account's own types (custom roles) of a matrix, edited as data. Any
 * signed-in user sees the form; the host decides the write (`role.edit`) and a refusal
 * names the failed checks. A type still held is not removed: the refusal names who holds it.
 *
 * @param {string} matrix
 * @param {{name: string, custom: boolean}[]} roles
 */
function roleEditor(matrix, roles) {
  const account = slice().account;
  const field = (/** @type {string} */ name, /** @type {string} */ hint) => /** @type {HTMLInputElement} */ (h('input', { name, placeholder: hint, size: name === 'cells' ? 60 : 18 }));
  const name = field('name', 'type name');
  const base = /** @type {HTMLSelectElement} */ (h('select', { name: 'extends' }, h('option', { value: '' }, '(extends nothing)'),
    roles.map((r) => h('option', { value: r.name }, r.name))));
  const cells = field('cells', 'row:cell, row:cell (e.g. bookings:write, dispatch:read(owner))');
  // A custom role's name is its id less `<account>.`: the matrix, principals' roles and
  // other roles' `extends` name it by its name alone. A write creates it as
  // `<account>.<name>`; facts loaded from files may give it its bare name as its id.
  /** @param {string} typeName */
  const ownType = (typeName) => [`role:${account}.${typeName}`, `role:${typeName}`]
    .map((key) => ({ key, e: entityByKey(key) }))
    .find(({ e }) => e && e.account === account);
  /** @param {string} typeName */
  const keyOf = (typeName) => ownType(typeName)?.key ?? `role:${account}.${typeName}`;
  const save = () => {
    const typeName = name.value.trim();
    const list = cells.value.split(',').map((c) => c.trim()).filter((c) => c);
    const key = keyOf(typeName);
    if (ownType(typeName)) {
      /** @type {object[]} */
      const deltas = [{ op: 'set_attr', entity: key, attr: 'cells', value: list }];
      deltas.push({ op: 'set_attr', entity: key, attr: 'extends', value: base.value || null });
      return post(deltas, request('edit', key), true);
    }
    const attrs = { matrix, cells: list, ...(base.value ? { extends: base.value } : {}) };
    return post([{ op: 'add_entity', entity: { type: 'role', id: `${account}.${typeName}`, account, attrs } }], null, true);
  };
  const custom = roles.filter((r) => r.custom && ownType(r.name));
  return h('div', { class: 'role-editor', 'data-role-editor': matrix },
    h('h3', {}, `This account's own types of ${matrix}`),
    custom.length
      ? h('ul', {}, custom.map((r) => {
        const e = ownType(r.name)?.e;
        const its = /** @type {string[]} */ (e?.attrs?.cells ?? []);
        return h('li', { 'data-custom-role': r.name }, h('strong', {}, r.name), ` ${its.join(', ') || '(no cells)'} `,
          h('button', { class: 'action', 'data-edit-role': r.name, onclick: () => {
            name.value = r.name;
            base.value = String(e?.attrs?.extends ?? '');
            cells.value = its.join(', ');
          } }, 'edit'),
          h('button', { class: 'action', 'data-remove-role': r.name, onclick: () => post([{ op: 'remove_entity', entity: keyOf(r.name) }], request('edit', keyOf(r.name)), true) }, 'remove'));
      }))
      : h('p', { class: 'empty' }, 'None yet.'),
    h('div', {}, name, ' ', base, ' ', cells, ' ', h('button', { class: 'action write', 'data-save-role': matrix, onclick: save }, 'save type')));
}

function reviewPage() {
  // A slice holds only what decides for its own principal (others' roles and
  // authorisations stay on the host), so the page reviews the signed-in user; other
  // users are reviewed with a service key through /v1/allowed-actions and /v1/resources.
  const me = entityByKey(principal());
  const who = principal();
  const select = h('strong', { id: 'review-user' }, `${me?.id ?? who} (${rolesOf(me).join(', ') || 'no roles'})`);
  const rows = [];
  for (const m of outline().matrices) {
    for (const row of m.rows) {
      const answer = attempt(() => session().allowedActions(who, `${m.name}:${row}`, now()));
      if (isError(answer) || answer.actions.length === 0) continue;
      rows.push(h('tr', {}, h('td', {}, `page ${m.name}:${row}`), h('td', {}, answer.actions.join(', '))));
    }
  }
  for (const t of outline().types) {
    if (entities(t.name).length === 0) continue;
    for (const a of t.actions.filter((x) => !x.target)) {
      const list = attempt(() => session().listResources(who, a.name, t.name, now()));
      if (isError(list) || list.length === 0) continue;
      rows.push(h('tr', {}, h('td', {}, `${a.name} ${t.name}`), h('td', {}, list.map((k) => label(entityByKey(k) ?? { id: k })).join(', '))));
    }
  }
  const gate = gateReasons(who);
  return [
    h('section', { class: 'type' },
      h('h2', {}, `Access review in account ${slice().account}: what you can do`),
      h('p', {}, 'User ', select, ' (a slice holds only its own user\'s access; review others with a service key through the API)'),
      gate ? h('div', { class: 'banner refusal' }, reasonList(gate)) : null,
      rows.length ? h('table', { 'data-review': who }, h('tr', {}, h('th', {}, 'may'), h('th', {}, 'on')), rows) : h('p', { class: 'empty' }, 'This user may do nothing.')),
  ];
}

boot().catch((e) => {
  $('#status').textContent = `The console could not start: ${e.message}`;
  document.body.dataset.failed = e.message;
});
