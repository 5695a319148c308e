/**
 * Shared fixtures of the tests: the default policies, the worlds and sessions loaded with
 * them. Paths are relative to this file, so the tests run from any directory.
 */

import { readFileSync, readdirSync } from 'node:fs';
import { loadNode } from '../index.js';

const POLICIES = new URL('../../policies/', import.meta.url);
const WORLDS = new URL('../../tests/worlds/', import.meta.url);

/** The module's bytes and the hash the build wrote next to them. */
export const WASM_URL = new URL('../pkg/clearance_bg.wasm', import.meta.url);
export const WASM_SHA256_URL = new URL('../pkg/clearance_bg.wasm.sha256', import.meta.url);

/** The baseline time of the scenarios. */
export const NOW = '2026-05-01T10:00:00Z';

/** The default policy set, `[{name, text}]`, in file-name order. */
export function policySources() {
  return readdirSync(POLICIES)
    .filter((f) => f.endsWith('.policy'))
    .sort()
    .map((name) => ({ name, text: readFileSync(new URL(name, POLICIES), 'utf8') }));
}

/** The facts document of `tests/worlds/<name>.json`, as text. */
export function worldText(name) {
  return readFileSync(new URL(`${name}.json`, WORLDS), 'utf8');
}

/** A request at `now` (the baseline unless given). */
export function req(principal, action, resource, now = NOW, target = undefined) {
  return target === undefined ? { principal, action, resource, now } : { principal, action, resource, target, now };
}

/**
 * A fresh module instance and a session with the default policies and the world `name`;
 * throws if either does not load (a test fixture, not the API under test).
 */
export async function loadedSession(name = 'airline') {
  const module = await loadNode();
  const session = new module.Session();
  const policy = session.loadPolicy(policySources());
  if (policy.error) throw new Error(`policy: ${policy.error.message}`);
  const facts = session.loadFacts(worldText(name));
  if (facts.error) throw new Error(`facts: ${facts.error.message}`);
  return { module, session };
}

/** The reason codes of a decision view. */
export function codes(decision) {
  return decision.reasons.map((r) => r.code);
}
