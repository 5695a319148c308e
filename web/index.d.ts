/**
 * The JavaScript face of Clearance: the one WebAssembly module, loaded and wrapped in a
 * `Session` that takes and gives plain objects. A session method gives its value or throws
 * a `ClearanceError` for what could not be decided; a denying decision is a value.
 */

/** An error as data: a stable code, what happened, and what to do. */
export interface ErrorData {
  code: string;
  message: string;
  help: string;
}

/**
 * What a session's method throws when it fails (bad input, nothing loaded, a session freed,
 * a trap): an `Error` with a stable `code` and `help`. A denying decision is not an error.
 */
export class ClearanceError extends Error {
  constructor(error: ErrorData);
  readonly code: string;
  readonly help: string;
  toJSON(): ErrorData;
}

/** What the slice helpers (`verifySlice`, `loadSlice`) give when they fail: a deny with an error. */
export interface Denial {
  allowed: false;
  error: ErrorData;
}

/**
 * A time: RFC 3339 text (`2026-05-01T10:00:00Z`), whole seconds since the epoch (a Number,
 * or a BigInt a Number holds exactly), or a `Date` (its whole second).
 */
export type Time = string | number | bigint | Date;

/** A request by names (docs/facts-format.md). */
export interface Request {
  principal: string;
  action: string;
  /** An entity `type:id`, or a page `matrix:row`. */
  resource: string;
  target?: string;
  now: Time;
}

/** One reason of a decision, with its stable code. */
export interface ReasonView {
  /** E.g. `granted`, `relation.missing`, `gate.active`. */
  code: string;
  /** The rule or request field it is about, e.g. `event.view`, `request.principal`. */
  rule: string;
  message: string;
  /** Where the rule is written, `file:line:col`. */
  at?: string;
}

/** A decision. */
export interface DecisionView {
  allowed: boolean;
  reasons: ReasonView[];
  revision: number;
  policy_hash: string;
  /** When time alone could change the decision (RFC 3339). */
  valid_until?: string;
}

/** The actions a principal may take on a resource, or none and the denial that says why. */
export interface AllowedActions {
  actions: string[];
  denied?: DecisionView;
}

/** A decision with, for an allow, the checks that held (innermost first). */
export interface Explanation {
  decision: DecisionView;
  held: ReasonView[];
}

/** One role's line of an access-rights matrix. */
export interface MatrixRole {
  name: string;
  custom: boolean;
  cells: string[];
}

/** An access-rights matrix: roles × rows. */
export interface AccessMatrix {
  matrix: string;
  levels: boolean;
  rows: string[];
  roles: MatrixRole[];
}

/** What is loaded. */
export interface Info {
  core_version: string;
  policy_hash: string;
  revision: number;
  entities: number;
  tuples: number;
}

/** An action of a type; `target` names the second entity's type, if any. */
export interface ActionOutline {
  name: string;
  target: string | null;
}

/** A write rule: `on <change> <member> = <action>`. */
export interface WriteOutline {
  change: 'add' | 'remove' | 'set' | 'create' | 'delete';
  member: string | null;
  action: string;
}

/** A type as the policy declares it. */
export interface TypeOutline {
  name: string;
  principal: boolean;
  actions: ActionOutline[];
  writes: WriteOutline[];
}

/** A matrix as the policy declares it. */
export interface MatrixOutline {
  name: string;
  levels: boolean;
  actions: string[];
  rows: string[];
  operations: string[];
  roles: string[];
}

/** What a policy declares, by name. */
export interface Outline {
  policy_hash: string;
  types: TypeOutline[];
  matrices: MatrixOutline[];
}

/** A policy source. */
export interface Source {
  name: string;
  text: string;
}

/** A resolved query (`clearance_core::wire`). */
export interface Query {
  principal: number;
  /** An entity id, or a page. */
  resource: number | { matrix: number; row: number };
  /** A permission index (entities) or an action bit (pages). */
  action: number;
  /** The target's entity id; absent or null for none. */
  target?: number | null;
  /** Seconds since the epoch. */
  now: number | bigint;
}

/** One reason on the wire: its code (text of `CODES`) and the rule id. */
export interface WireReason {
  code: string;
  rule: number;
}

/** A decision as the wire carries it. */
export interface WireDecision {
  allowed: boolean;
  reasons: WireReason[];
  /** Seconds, or null for none. */
  valid_until: number | null;
}

/** The answer of `resolve` for one request. */
export type Resolved = { query: Uint8Array } | { denied: DecisionView };

/** Binary input: bytes, a buffer, or a view of one. */
export type Bytes = Uint8Array | ArrayBuffer | ArrayBufferView;

/** Why a write was refused: the first refused delta, and the denial when a permission was checked. */
export interface WriteRefusal {
  index: number;
  /** `write.denied`, `write.no_rule` or `write.invalid`. */
  code: string;
  message: string;
  decision?: DecisionView;
}

/** The answer of `write` and `authorizeDeltas`. */
export interface WriteAnswer {
  allowed: boolean;
  /** The revision the write makes, when allowed. */
  revision?: number;
  /** The tuples the policy adds by itself (EV5), when allowed. */
  derived?: object[];
  refusal?: WriteRefusal;
}

/** One session on one module instance. */
export class Session {
  /** A new, empty session on `module`; prefer `new module.Session()`. */
  constructor(module: ClearanceModule);
  /** The hex SHA-256 of the module's bytes. */
  readonly moduleHash: string;
  /** Whether the session can still answer. */
  readonly usable: boolean;
  /** Any JSON call (`{op: ...}`). */
  call(call: object | string): unknown;
  /** Compiles a policy set; facts loaded so far are rebuilt under it. */
  loadPolicy(sources: Source[] | string): { policy_hash: string };
  /** Loads facts and builds the snapshot. */
  loadFacts(facts: object | string): Info;
  /** Applies deltas, all or nothing. */
  applyDeltas(deltas: object[] | string): Info;
  /** Loads a snapshot from its bytes (policy included). */
  loadSnapshot(bytes: Bytes): Info;
  /** The loaded snapshot's bytes. */
  snapshotBytes(): Uint8Array;
  /** What is loaded. */
  info(): Info;
  /** What the loaded policy declares: types, actions, write rules, matrices. */
  schema(): Outline;
  /** The loaded facts as a facts document. */
  facts(): object;
  /** Makes deltas as `author` at `now` if the policy allows each (X4), with the derived tuples (EV5). */
  write(author: string, deltas: object[], now: Time): WriteAnswer;
  /** Whether `author` may make deltas at `now`, without making them. */
  authorizeDeltas(author: string, deltas: object[], now: Time): WriteAnswer;
  /** Decides one request. */
  check(request: Request | string): DecisionView;
  /** Decides a list of requests (at most 1 << 20). */
  checkBatch(requests: Request[] | string): DecisionView[];
  /** Resolves requests to 24-byte queries, or their denials. */
  resolve(requests: Request[] | string): Resolved[];
  /** Decides binary queries; the raw decision bytes (without the frame byte). */
  checkIdsRaw(queries: Bytes): Uint8Array;
  /** Decides binary queries; the decoded decisions, one per query. */
  checkIds(queries: Bytes): WireDecision[];
  /** The actions a principal may take on a resource. */
  allowedActions(principal: string, resource: string, now: Time): AllowedActions;
  /** The resources of a type a principal may act on. */
  listResources(principal: string, action: string, type: string, now: Time): string[];
  /** The principals who may act on a resource. */
  listPrincipals(resource: string, action: string, now: Time, account?: string): string[];
  /** Decides and explains one request. */
  explain(request: Request | string): Explanation;
  /** The access-rights matrix as an account sees it. */
  matrix(matrix: string, account?: string): AccessMatrix;
  /** Frees the session now; later calls are denials. */
  free(): void;
  /** Frees the session (for `using`). */
  [Symbol.dispose](): void;
}

/** A loaded module instance. */
export interface ClearanceModule {
  /** The hex SHA-256 of exactly the bytes instantiated. */
  readonly moduleHash: string;
  /** The error that made this instance unusable, or null. */
  readonly poisoned: ErrorData | null;
  /** Sessions on this instance: `new module.Session()`. */
  readonly Session: new () => Session;
}

/** Loads the module in Node (default: `pkg/clearance_bg.wasm` next to index.js). */
/**
 * What the module's class builds its answers with; a `Session` has its own. For code that
 * drives the glue directly: `new glue.Clearance(new Answers())`, and `ask` with the
 * request's fields before each `checkValue` or `allowedActionsValue`.
 */
export class Answers {
  ask(principal: string, action: string, resource: string, target: string | null | undefined): void;
  decision(allowed: boolean, reasons: ReasonView[], revision: number, policy_hash: string, valid_until: string | undefined): DecisionView;
  decision1(allowed: boolean, reason: ReasonView, revision: number, policy_hash: string, valid_until: string | undefined): DecisionView;
  reason(code: string, rule: string, message: string, at: string | undefined): ReasonView;
  fill(template: string): string;
  actions(actions: string[], denied: DecisionView | undefined): AllowedActions;
}

export function loadNode(wasmPath?: string | URL): Promise<ClearanceModule>;
/** Loads the module with fetch and WebCrypto (default: `pkg/clearance_bg.wasm`). */
export function loadBrowser(url?: string | URL | globalThis.Request): Promise<ClearanceModule>;
/** Wraps an already initialised glue namespace; the caller vouches for the hash. */
export function fromGlue(glue: object, moduleHash: string): ClearanceModule;
/** Whether an answer is a denial with an error. */
export function isError(answer: unknown): answer is Denial;
/** Encodes queries, 24 bytes each; throws a TypeError on a field out of range. */
export function encodeQueries(queries: Query[]): Uint8Array;
/** Decodes queries; null unless the length is a multiple of 24. */
export function decodeQueries(bytes: Bytes): Query[] | null;
/** Decodes decisions; null if the bytes are truncated or carry an unknown code. */
export function decodeDecisions(bytes: Bytes): WireDecision[] | null;

/** A public key of a JWKS, as much of it as the package reads. */
export interface Jwk {
  kty: string;
  kid?: string;
  alg?: string;
  use?: string;
  crv?: string;
  x?: string;
  [member: string]: unknown;
}

/** A JWK set: `GET /v1/slice-keys`. */
export interface Jwks {
  keys: Jwk[];
}

/** A principal slice: the policy, and the facts of the principal's account. */
export interface Slice {
  principal: string;
  account: string;
  revision: number;
  policy_hash: string;
  /** When the host signed it, in seconds since the epoch. */
  issued: number;
  /** When it stops being loadable, in seconds since the epoch. */
  expires: number;
  policy: Source[];
  /** A facts document (docs/facts-format.md). */
  facts: { [member: string]: unknown };
}

/** A signed slice: `GET /v1/slice/{principal}`. */
export interface SignedSlice {
  /** The slice's JSON text, exactly as signed. */
  slice: string;
  alg: 'EdDSA';
  key_id: string;
  /** Base64url (no padding) Ed25519 signature of `SLICE_CONTEXT + slice`. */
  signature: string;
}

/** How a signed slice is verified. */
export interface SliceOptions {
  /** The host's slice keys (`GET /v1/slice-keys`); without them nothing verifies. */
  keys: Jwks;
  /** The time of the expiry check: a Date or seconds since the epoch (default: now). */
  now?: Date | number;
  /** The principal the slice must be for. */
  principal?: string;
}

/**
 * Verifies a signed slice (a `SignedSlice`, or its JSON text) by a key of `options.keys`: the slice, or a
 * denial (`slice.no_keys`, `slice.unsigned`, `slice.unknown_key`, `slice.bad_signature`,
 * `slice.invalid`, `slice.wrong_principal`, `slice.expired`).
 */
export function verifySlice(signed: unknown, options: SliceOptions): Promise<Slice | Denial>;

/** An event of a server-sent event stream (`GET /v1/changes`). */
export interface ServerEvent {
  /** `change`, `reset`, `error`, or `message` when the event names none. */
  event: string;
  /** The event's id (a change's revision), or empty. */
  id: string;
  /** Its data parsed as JSON, or `null` when it is not JSON. */
  data: unknown;
}

/** The events of a server-sent event stream (the body of `GET /v1/changes`), in order. */
export function serverEvents(body: ReadableStream<Uint8Array<ArrayBuffer>>): AsyncGenerator<ServerEvent>;

/** What a slice's signature covers first: the signed bytes are `SLICE_CONTEXT + slice`. */
export const SLICE_CONTEXT: 'clearance.slice.v2\n';

/** The size of an encoded query. */
export const QUERY_LEN: 24;
/** The bit that marks a page in an encoded resource. */
export const PAGE: 0x80000000;
/** The reason codes, indexed by their byte on the wire. */
export const CODES: readonly string[];
