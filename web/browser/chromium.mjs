/**
 * What the browser tests share: Debian's Chromium driven by playwright-core (never a
 * downloaded browser), and the host (`clearance serve`) started on a free port with a
 * fresh store seeded with the demo data.
 */

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

/** The repository's root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The Chromium binary: `$CHROMIUM`, else Debian's. */
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** Flags for a quiet, headless Chromium in a container. */
export const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** Launches Chromium, or fails saying how to install it. */
export async function launch() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: run scripts/install-test-deps (apt-get install -y chromium)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
}

/** The host binary built by `cargo build --release` (or `$CLEARANCE_BIN`). */
export function hostBinary() {
  if (process.env.CLEARANCE_BIN) return process.env.CLEARANCE_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target');
  return join(target, 'release', 'clearance');
}

/** The demo data's time: the host's clock for decisions and writes starts there. */
export const DEMO_TIME = '2026-05-01T10:00:00Z';

/**
 * Starts `clearance serve --demo` on a free port with a new store (its clock at the demo
 * data's time); resolves when it listens, with the admin key the demo made.
 *
 * @returns {Promise<{url: string, adminKey: string, stop: () => Promise<void>, log: () => string}>}
 */
export async function startHost() {
  const bin = hostBinary();
  if (!existsSync(bin)) throw new Error(`no host binary at ${bin}: build it with \`cargo build --release --workspace\``);
  const dir = mkdtempSync(join(tmpdir(), 'clearance-console-'));
  const child = spawn(bin, ['serve', '--addr', '127.0.0.1:0', '--data', join(dir, 'store.db'), '--demo', '--demo-time', DEMO_TIME], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  /** @type {string} */
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the host did not start in 60 s:\n${log}`)), 60_000);
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const m = /console at (http:\/\/[^/\s]+)\//.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the host exited (${code}) before listening:\n${log}`));
    });
  });
  const key = /created an admin key \(shown once\): (clr_[A-Za-z0-9_-]+)/.exec(log);
  if (key === null) throw new Error(`the demo host printed no admin key:\n${log}`);
  return {
    url,
    adminKey: key[1],
    log: () => log,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.on('exit', resolve));
        child.kill('SIGINT');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
