// The JS package as a package: `npm pack` in web/ gives a tarball that holds every file its
// entry refers to, and that a fresh project installs, offline, and uses by the package's
// name to verify a signed slice and decide checks from it.
//
// Nothing here reaches the network. npm runs with `--offline`, with a cache of its own in a
// temporary directory, and with a registry address nothing listens on. The package's own
// dependencies are packed from web/node_modules, where `npm ci` installed the locked
// versions, and installed alongside the tarball, so npm finds each one already there.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { loadNode } from '../index.js';
import { NOW, WASM_SHA256_URL, ok, policySources, sliceSigner, worldText } from './fixtures.js';

/** @import { Slice } from '../index.js' */

const WEB = fileURLToPath(new URL('..', import.meta.url));
const NODE_MODULES = new URL('../node_modules/', import.meta.url);

/** How long one child process (a pack, the install, the project's script) may run. */
const STEP_TIMEOUT_MS = 90_000;

/** A registry address nothing listens on: a request, were npm to make one, fails here. */
const NO_REGISTRY = 'http://127.0.0.1:9/';

const PRINCIPAL = 'user:aeroserv_tech';
const ACCOUNT = 'skyways';
/** When the test slice was issued (the baseline time), and when it expires. */
const ISSUED = Date.parse(NOW) / 1000;
const EXPIRES = ISSUED + 3600;

/** The two checks the project decides: one the slice allows, one it denies. */
const REQUESTS = [
  { principal: PRINCIPAL, action: 'view', resource: 'event:aog_lhr', now: NOW },
  { principal: PRINCIPAL, action: 'view', resource: 'event:aog_cdg', now: NOW },
];

/**
 * The fresh project's script: it imports the package by its name, verifies the signed
 * slice of `input.json`, loads its policy and facts into a session, decides the requests
 * and prints, as JSON, where the package was found, the module's hash and the decisions.
 */
const SCRIPT = `import { readFile } from 'node:fs/promises';
import { isError, loadNode, verifySlice } from '@clearance/web';

const input = JSON.parse(await readFile(new URL('./input.json', import.meta.url), 'utf8'));
/** @param {string} what @param {unknown} answer */
function must(what, answer) {
  if (isError(answer)) throw new Error(\`\${what}: \${answer.error.code}: \${answer.error.message}\`);
  return answer;
}
const slice = must('slice', await verifySlice(input.signed, { keys: input.keys, principal: input.principal, now: input.now }));
const module = await loadNode();
const session = new module.Session();
const policy = must('policy', session.loadPolicy(slice.policy));
if (policy.policy_hash !== slice.policy_hash) throw new Error('the policy compiled to another hash than the slice says');
must('facts', session.loadFacts(slice.facts));
const decisions = input.requests.map((request) => {
  const decision = session.check(request);
  return isError(decision) ? decision : { allowed: decision.allowed, codes: decision.reasons.map((r) => r.code) };
});
session.free();
const edge = await import('@clearance/web/edge');
const token = await import('@clearance/web/edge/token');
const gate = [typeof edge.createHandler, typeof edge.loadSlice, typeof token.createTokenVerifier];
process.stdout.write(JSON.stringify({ entry: import.meta.resolve('@clearance/web'), moduleHash: module.moduleHash, decisions, gate }));
`;

/** The environment of the child processes: this one's, without the settings npm passes to scripts it runs. */
const CHILD_ENV = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^npm_/i.test(name) && name !== 'NODE_TEST_CONTEXT'));

/**
 * Runs a program (no shell) in `cwd` and gives its standard output; the test fails if it
 * cannot start, exits other than 0, or outlives `STEP_TIMEOUT_MS` (it is killed then).
 *
 * @param {string} command
 * @param {string[]} args
 * @param {string} cwd
 */
function run(command, args, cwd) {
  const result = spawnSync(command, args, {
    cwd, env: CHILD_ENV, encoding: 'utf8', timeout: STEP_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 64 << 20,
  });
  if (result.error !== undefined || result.status !== 0) {
    const why = result.error?.message ?? `exit status ${result.status}, signal ${result.signal}`;
    assert.fail(`\`${command} ${args.join(' ')}\` failed (${why})\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout;
}

/**
 * Packs the package in `dir` into `into`, which holds nothing else, and gives the
 * tarball's path.
 *
 * @param {string} dir
 * @param {string} into
 * @param {string[]} npmOptions
 * @param {string[]} [extra]
 */
function pack(dir, into, npmOptions, extra = []) {
  mkdirSync(into);
  run('npm', ['pack', '--pack-destination', into, ...npmOptions, ...extra], dir);
  const tarballs = readdirSync(into).filter((f) => f.endsWith('.tgz'));
  assert.equal(tarballs.length, 1, `npm pack in ${dir} wrote ${tarballs.length} tarballs`);
  return join(into, tarballs[0] ?? '');
}

/**
 * The package-relative paths a file refers to. An entry builds its URLs from constants, so
 * every quoted relative path in it counts; in any other module, the specifiers of its
 * imports and the paths of its `new URL(…)`s. A query or fragment is not part of the path.
 *
 * @param {string} file the file's path in the package
 * @param {string} text
 * @param {boolean} entry
 * @returns {string[]} package-relative paths, or `../…` for one outside the package
 */
function references(file, text, entry) {
  const patterns = entry
    ? [/(['"`])(\.\.?\/[^'"`\s$]*)\1/g]
    : [/\bfrom\s*(['"])(\.\.?\/[^'"]*)\1/g, /\bimport\s*\(?\s*(['"])(\.\.?\/[^'"]*)\1/g, /\bnew URL\(\s*(['"`])(\.\.?\/[^'"`$]*)\1/g];
  const base = new URL(file, 'file:///package/');
  /** @type {string[]} */
  const out = [];
  for (const pattern of patterns) {
    for (const match of text.matchAll(pattern)) {
      const path = new URL((match[2] ?? '').replace(/[?#].*$/, ''), base).pathname;
      out.push(path.startsWith('/package/') ? decodeURIComponent(path.slice('/package/'.length)) : `..${path}`);
    }
  }
  return out;
}

/**
 * The files package.json names as entry points: `main`, `types`, `module` and every path
 * of `exports`.
 *
 * @param {{[field: string]: unknown}} manifest
 */
function entryPoints(manifest) {
  /** @type {Set<string>} */
  const out = new Set();
  /** @param {unknown} value */
  const walk = (value) => {
    if (typeof value === 'string') out.add(new URL(value, 'file:///package/').pathname.slice('/package/'.length));
    else if (value !== null && typeof value === 'object') Object.values(value).forEach(walk);
  };
  walk([manifest.main, manifest.types, manifest.module, manifest.exports].filter((v) => v !== undefined));
  return out;
}

describe('the packed package', () => {
  /** The temporary directory that holds everything of this test. */
  let root = '';
  /** The fresh project. */
  let app = '';
  /** The package's tarball. */
  let tarball = '';
  /**
   * The package's manifest.
   *
   * @type {{name: string, dependencies?: {[name: string]: string}, [field: string]: unknown}}
   */
  let manifest = { name: '' };

  before(() => {
    root = realpathSync(mkdtempSync(join(tmpdir(), 'clearance-package-')));
    const npmOptions = ['--cache', join(root, 'npm-cache'), '--offline', '--registry', NO_REGISTRY, '--no-audit', '--no-fund', '--no-update-notifier'];
    manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    tarball = pack(WEB, join(root, 'package'), npmOptions);
    // Each dependency as `npm ci` installed it; packing it runs none of its scripts.
    const dependencies = Object.keys(manifest.dependencies ?? {}).map((name, i) => {
      const dir = fileURLToPath(new URL(`${name}/`, NODE_MODULES));
      const own = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
      assert.deepEqual(own.dependencies ?? {}, {}, `${name} has dependencies of its own, which this test does not install`);
      return pack(dir, join(root, `dependency-${i}`), npmOptions, ['--ignore-scripts']);
    });
    app = join(root, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'fresh-project', version: '1.0.0', private: true, type: 'module' }, null, 2)}\n`);
    run('npm', ['install', ...npmOptions, ...dependencies, tarball], app);
  });

  after(() => {
    if (root !== '') rmSync(root, { recursive: true, force: true });
  });

  test('the tarball holds every file the entry refers to', () => {
    const listed = run('tar', ['-tzf', tarball], root).split('\n').filter((line) => line !== '');
    assert.ok(listed.every((line) => line.startsWith('package/')), 'every entry of the tarball is under package/');
    const packed = new Set(listed.map((line) => line.slice('package/'.length)));
    const entries = entryPoints(manifest);
    const queue = [...entries];
    /** @type {Set<string>} */
    const reached = new Set(queue);
    /** @type {string[]} */
    const missing = [];
    while (queue.length > 0) {
      const file = queue.shift() ?? '';
      if (!packed.has(file)) {
        missing.push(file);
        continue;
      }
      if (!/\.(m?js|d\.ts)$/.test(file)) continue;
      const text = readFileSync(join(WEB, file), 'utf8');
      for (const ref of references(file, text, entries.has(file))) {
        if (!reached.has(ref)) {
          reached.add(ref);
          queue.push(ref);
        }
      }
    }
    assert.deepEqual(missing, [], `files the package refers to but does not pack (package.json "files"): ${missing.join(', ')}`);
    // The entry's URLs were seen: the glue and the module's bytes it loads.
    assert.ok([...reached].some((f) => f.endsWith('.wasm')), `no WebAssembly module among the references: ${[...reached].join(', ')}`);
    assert.ok(reached.size > entries.size, 'the entry refers to no file');
  });

  test('npm accepts it for publishing, with its licence, changelog, edge gate and types', () => {
    const npmOptions = ['--cache', join(root, 'npm-cache'), '--offline', '--registry', NO_REGISTRY, '--no-audit', '--no-fund', '--no-update-notifier'];
    const answer = JSON.parse(run('npm', ['publish', '--dry-run', '--json', ...npmOptions], WEB));
    const published = answer[manifest.name] ?? answer;
    assert.equal(published.id, `${manifest.name}@${manifest.version}`);
    const files = new Set(published.files.map((/** @type {{path: string}} */ f) => f.path));
    for (const file of ['LICENSE', 'CHANGELOG.md', 'index.js', 'index.d.ts', 'edge/handler.js', 'edge/handler.d.ts', 'edge/token.js', 'edge/token.d.ts', 'pkg/clearance_bg.wasm']) {
      assert.ok(files.has(file), `${file} is not published: ${[...files].join(', ')}`);
    }
    // Nothing of the repository's own: tests, tools, the console, the benchmarks.
    const stray = [...files].filter((f) => /^(test|tools|console|bench|browser|workers|types)\//.test(f));
    assert.deepEqual(stray, []);
    // The licence and the changelog are the repository's, copied when packed.
    assert.equal(readFileSync(join(WEB, 'LICENSE'), 'utf8'), readFileSync(join(WEB, '..', 'LICENSE'), 'utf8'));
  });

  test('the edge gate\'s types are the ones its JSDoc gives', () => {
    const out = join(root, 'edge-types');
    run(process.execPath, [join(WEB, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.edge.json', '--outDir', out], WEB);
    for (const name of ['handler.d.ts', 'token.d.ts']) {
      assert.equal(readFileSync(join(WEB, 'edge', name), 'utf8'), readFileSync(join(out, name), 'utf8'), `edge/${name} is stale: run \`npm run types:edge\` in web/`);
    }
  });

  test('a fresh project installs it offline and decides checks from a signed slice', async () => {
    // A slice as the host signs it: the default policies and the airline world's account.
    const module = await loadNode();
    const scratch = new module.Session();
    const policyHash = ok(scratch.loadPolicy(policySources())).policy_hash;
    scratch.free();
    /** @type {{revision: number, entities: Array<{type: string, id: string, account?: string}>, tuples: Array<{resource: string}>}} */
    const world = JSON.parse(worldText('airline'));
    const entities = world.entities.filter((e) => (e.account ?? e.id) === ACCOUNT);
    const keys = new Set(entities.map((e) => `${e.type}:${e.id}`));
    /** @type {Slice} */
    const slice = {
      principal: PRINCIPAL,
      account: ACCOUNT,
      revision: world.revision,
      policy_hash: policyHash,
      issued: ISSUED,
      expires: EXPIRES,
      policy: policySources(),
      facts: { revision: world.revision, entities, tuples: world.tuples.filter((t) => keys.has(t.resource)) },
    };
    const signer = await sliceSigner('slice-1');
    const input = { signed: await signer.sign(slice), keys: signer.keys, principal: PRINCIPAL, now: ISSUED + 60, requests: REQUESTS };
    writeFileSync(join(app, 'input.json'), JSON.stringify(input));
    writeFileSync(join(app, 'decide.js'), SCRIPT);

    const out = JSON.parse(run(process.execPath, ['decide.js'], app));
    // The package came from the project's own install, not from this repository.
    assert.ok(fileURLToPath(out.entry).startsWith(`${join(app, 'node_modules', ...manifest.name.split('/'))}/`), `the package was found at ${out.entry}`);
    // The module it loaded is the one the build wrote.
    assert.equal(out.moduleHash, readFileSync(WASM_SHA256_URL, 'utf8').trim().split(/\s+/)[0]);
    // The edge gate, by the package's name.
    assert.deepEqual(out.gate, ['function', 'function', 'function']);
    const [allow, deny] = out.decisions;
    assert.deepEqual(allow, { allowed: true, codes: ['granted'] }, JSON.stringify(allow));
    assert.equal(deny.allowed, false, JSON.stringify(deny));
    assert.ok(deny.codes.length > 0 && deny.codes.every((/** @type {string} */ c) => c === 'relation.missing'), JSON.stringify(deny));
  });
});
