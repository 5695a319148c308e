// Type-checked by `tsc --noEmit -p web/tsconfig.json` (a step of `cargo xtask test`): how
// a TypeScript user calls the package. Lines marked `@ts-expect-error` must stay errors,
// so types that grow too loose fail the check.

import {
  CODES, ClearanceError, PAGE, QUERY_LEN, SLICE_CONTEXT, decodeDecisions, decodeQueries, encodeQueries, isError, loadBrowser, loadNode, verifySlice,
} from '../index.js';
import type { AccessMatrix, ClearanceModule, DecisionView, Denial, Jwks, Session, Outline, Request, Slice } from '../index.js';

export async function usage(): Promise<void> {
  const module: ClearanceModule = await loadNode();
  const browser: ClearanceModule = await loadBrowser('/pkg/clearance_bg.wasm');
  const session: Session = new module.Session();
  const hash: string = browser.moduleHash;

  const loaded = session.loadPolicy([{ name: 'a.policy', text: 'type user principal {}' }]);
  const policyHash: string = loaded.policy_hash;
  void policyHash;
  const request: Request = { principal: 'user:a', action: 'view', resource: 'event:e', now: '2026-05-01T10:00:00Z' };
  const at: Request = { ...request, now: new Date() };
  try {
    const decision: DecisionView = session.check(at);
    const codes: string[] = decision.reasons.map((r) => r.code);
    const until: string | undefined = decision.valid_until;
    void codes; void until;
  } catch (e) {
    if (e instanceof ClearanceError) {
      const code: string = e.code;
      const help: string = e.help;
      void code; void help;
    }
  }

  const o: Outline = session.schema();
  const writes = o.types.flatMap((t) => t.writes.map((w) => `${w.change} ${w.member ?? ''} = ${w.action}`));
  const rows: string[] = o.matrices.flatMap((m) => m.rows);
  void writes; void rows;

  const names: string[] = session.allowedActions('user:a', 'event:e', 0).actions;
  void names;
  const m: AccessMatrix = session.matrix('operations', 'acme');
  const cells: string[][] = m.roles.map((r) => r.cells);
  void cells;

  const bytes: Uint8Array = encodeQueries([{ principal: 1, resource: { matrix: 0, row: 2 }, action: 0, now: 0n }]);
  const back = decodeQueries(bytes);
  const decisions = decodeDecisions(new Uint8Array(0));
  const page: 0x80000000 = PAGE;
  const len: 24 = QUERY_LEN;
  const first: string | undefined = CODES[0];
  void back; void decisions; void page; void len; void first; void hash;

  const keys: Jwks = { keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'x', kid: 'k', alg: 'EdDSA' }] };
  const verified = await verifySlice('{"slice": "", "alg": "EdDSA", "key_id": "k", "signature": ""}', { keys, principal: 'user:a', now: new Date() });
  if (!isError(verified)) {
    const s: Slice = verified;
    const expires: number = s.expires;
    void expires;
  }
  const context: string = SLICE_CONTEXT;
  void context;
  // @ts-expect-error: a slice is verified with the host's keys
  void verifySlice('{}', {});

  // @ts-expect-error: a request needs a time
  session.check({ principal: 'user:a', action: 'view', resource: 'event:e' });
  // @ts-expect-error: a check gives a decision; what could not be decided is thrown
  const unchecked: Denial = session.check(request);
  // @ts-expect-error: a write outline's change is one of five words
  const change: WriteChange = 'rename';
  void unchecked; void change;
  session.free();
}

type WriteChange = import('../index.js').WriteOutline['change'];
