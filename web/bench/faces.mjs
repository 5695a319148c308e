/**
 * The measurement of the module's JS faces, the same code in Node and in a page: a check
 * by names, `allowedActions` and a batch of 64 requests through each face the module
 * exports, on the medium world's snapshot. Faces:
 *
 * - `json`: JSON text in and out (`check(JSON.stringify(r))`, then `JSON.parse`);
 * - `values`: a request's fields as string arguments (a batch as a loop of those),
 *   decisions built from kept JS strings by calls from the module to a JS builder;
 * - `api`: the package's `Session` (whatever face it uses).
 *
 * Calls are interleaved face by face, request by request, so a noisy machine slows all
 * alike; each figure is the median (and the highest) over 40 blocks of the requests of
 * the mean per call in the block, each block run once untimed first.
 */

/**
 * @param {number[]} values
 * @param {number} p
 */
function pct(values, p) {
  const v = [...values].sort((a, b) => a - b);
  return v[Math.floor((v.length - 1) * p)];
}

/**
 * @param {{Clearance: any}} glue an initialised wasm-bindgen glue
 * @param {any} Answers the package's builder of answers (its class)
 * @param {any} session a package Session on its own instance, loaded with the same snapshot
 * @param {Uint8Array} snapshot the medium snapshot's bytes
 * @param {any[]} requests requests by names
 * @param {number} [scale] how many times more calls per block (a coarse clock needs more)
 */
export function measure(glue, Answers, session, snapshot, requests, scale = 1) {
  const answers = new Answers();
  const raw = new glue.Clearance(answers);
  const loaded = JSON.parse(raw.loadSnapshot(snapshot));
  if (!loaded.ok) throw new Error(`the snapshot does not load: ${JSON.stringify(loaded)}`);
  const nowText = requests[0].now;
  /** @type {{[face: string]: (r: any) => unknown}} */
  const check = {
    json: (r) => JSON.parse(raw.check(JSON.stringify(r))),
    values: (r) => {
      answers.ask(r.principal, r.action, r.resource, r.target);
      return raw.checkValue(r.principal, r.action, r.resource, r.target, r.now);
    },
    at: (r) => {
      answers.ask(r.principal, r.action, r.resource, r.target);
      return raw.checkAt(r.principal, r.action, r.resource, r.target, r.now);
    },
    api: (r) => session.check(r),
  };
  /** @type {{[face: string]: (r: any) => unknown}} */
  const actions = {
    json: (r) => JSON.parse(raw.allowedActions(r.principal, r.resource, String(r.now))),
    values: (r) => {
      answers.ask(r.principal, '', r.resource, null);
      return raw.allowedActionsValue(r.principal, r.resource, r.now);
    },
    api: (r) => session.allowedActions(r.principal, r.resource, r.now),
  };
  /** @type {{[face: string]: (rs: any[]) => unknown}} */
  const batch = {
    json: (rs) => JSON.parse(raw.checkBatch(JSON.stringify(rs))),
    values: (rs) => rs.map((r) => {
      answers.ask(r.principal, r.action, r.resource, r.target);
      return raw.checkValue(r.principal, r.action, r.resource, r.target, r.now);
    }),
    api: (rs) => session.checkBatch(rs),
  };
  const faces = Object.keys(check).filter((f) => f !== 'api' || session !== null);
  // The same answers from every face, or the comparison is meaningless.
  for (const r of requests.slice(0, 50)) {
    const want = JSON.stringify(/** @type {{ok: unknown}} */ (check.json(r)).ok);
    for (const f of faces.filter((x) => x !== 'json')) {
      const got = JSON.stringify(check[f](r));
      if (got !== want) throw new Error(`face ${f} disagrees on ${JSON.stringify(r)}:\n${got}\n${want}`);
    }
  }
  /**
   * @param {{[face: string]: (x: any) => unknown}} table
   * @param {any[]} inputs
   * @param {number} reps
   */
  const time = (table, inputs, reps) => {
    const names = Object.keys(table).filter((f) => f !== 'api' || session !== null);
    /** @type {{[face: string]: number[]}} */
    const per = Object.fromEntries(names.map((f) => [f, []]));
    for (const f of names) for (const x of inputs.slice(0, 200)) table[f](x);
    // Blocks of inputs timed together: a page's clock ticks in steps of up to 100 us.
    const block = Math.max(1, Math.floor(inputs.length / 40));
    for (let at = 0; at + block <= inputs.length; at += block) {
      const part = inputs.slice(at, at + block);
      for (const f of names) {
        // One pass untimed first: the session's face runs on its own module instance and
        // snapshot, which the other faces' blocks evict from the caches.
        for (const x of part) table[f](x);
        const s = performance.now();
        for (let i = 0; i < reps; i++) for (const x of part) table[f](x);
        per[f].push(((performance.now() - s) / (reps * block)) * 1e3);
      }
    }
    return Object.fromEntries(names.map((f) => [f, { p50: pct(per[f], 0.5), p99: pct(per[f], 0.99) }]));
  };
  const batches = [];
  for (let at = 0; at + 64 <= requests.length; at += 64) batches.push(requests.slice(at, at + 64));
  const out = {
    check: time(check, requests, 8 * scale),
    allowedActions: time(actions, requests, 4 * scale),
    batch64: time(batch, batches, 2 * scale),
    nowText,
  };
  raw.free();
  return out;
}
