// Writes host/tests/fixtures/tokens/corpus.json: user tokens with the verdict both the host's
// TokenVerifier (host/tests/all/token_corpus.rs) and the edge (web/test/token-corpus.test.js)
// must give. Run from anywhere: `node web/tools/make-token-corpus.mjs`. The keys are the test
// keys beside the corpus; every time is fixed, so only the ES256 signatures (randomised)
// change from one run to the next.

import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SignJWT, base64url, importPKCS8 } from 'jose';

const DIR = fileURLToPath(new URL('../../host/tests/fixtures/tokens/', import.meta.url));

/** The issuer and audience of host/tests/all/auth.rs. */
const ISSUER = 'https://idp.test';
const AUDIENCE = 'clearance-test';
const LEEWAY = 30;
/** The corpus's clock: 2026-05-01T10:00:00Z, the time of the tests' world. */
const NOW = 1777629600;
/** 2026-01-01T00:00:00Z: when the valid tokens were issued. */
const ISSUED = 1767225600;
/** 2100-01-01T00:00:00Z: valid tokens stay valid until then. */
const EXP_2100 = 4102444800;
/** 2020-01-01T00:00:00Z: expired tokens expired then. */
const EXP_2020 = 1577836800;
/** 2099-01-01T00:00:00Z: for the cases about the leeway on `exp`, see below. */
const AT_2099 = 4070908800;
const SUB = 'occ_controller';
const PRINCIPAL = `user:${SUB}`;

/**
 * A private key of the fixtures, for jose (PKCS#8; rs256.der is PKCS#1).
 *
 * @param {string} file
 * @param {'pkcs8' | 'pkcs1'} type
 * @param {string} alg
 */
function privateKey(file, type, alg) {
  const pem = createPrivateKey({ key: readFileSync(`${DIR}${file}`), format: 'der', type }).export({ format: 'pem', type: 'pkcs8' });
  return importPKCS8(String(pem), alg);
}

const es256 = await privateKey('es256.der', 'pkcs8', 'ES256');
const rs256 = await privateKey('rs256.der', 'pkcs1', 'RS256');
const eddsa = await privateKey('ed25519.der', 'pkcs8', 'EdDSA');
const forger = await privateKey('forger-ed25519.der', 'pkcs8', 'EdDSA');
/** The RSA test key's public half as PEM text: what a confused verifier would use as an HMAC secret. */
const rsaPublicPem = String(createPublicKey(createPrivateKey({ key: readFileSync(`${DIR}rs256.der`), format: 'der', type: 'pkcs1' })).export({ format: 'pem', type: 'spki' }));
/** @type {{keys: Array<{kid: string, x?: string}>}} */
const jwks = JSON.parse(readFileSync(`${DIR}jwks.json`, 'utf8'));
const edX = jwks.keys.find((k) => k.kid === 'test-eddsa')?.x ?? '';

/**
 * The claims of a valid token, changed by `change` (a value of undefined removes a claim).
 *
 * @param {{[claim: string]: unknown}} [change]
 */
function claims(change = {}) {
  /** @type {{[claim: string]: unknown}} */
  const c = { iss: ISSUER, aud: AUDIENCE, sub: SUB, iat: ISSUED, nbf: ISSUED, exp: EXP_2100, ...change };
  for (const [k, v] of Object.entries(c)) if (v === undefined) delete c[k];
  return c;
}

/**
 * A token of `payload` signed with `key` under the header `{alg, kid}` (no kid when null).
 *
 * @param {{[claim: string]: unknown}} payload
 * @param {string} alg
 * @param {string | null} kid
 * @param {import('jose').CryptoKey | Uint8Array} key
 */
function sign(payload, alg, kid, key) {
  /** @type {import('jose').JWTHeaderParameters} */
  const header = { alg, typ: 'JWT' };
  if (kid !== null) header.kid = kid;
  return new SignJWT(payload).setProtectedHeader(header).sign(key);
}

/**
 * A token of `payload` under exactly `header`, signed with the test Ed25519 key through
 * WebCrypto rather than jose, which refuses to sign the headers a verifier must refuse.
 *
 * @param {{[claim: string]: unknown}} payload
 * @param {{[parameter: string]: unknown}} header its `alg` must be EdDSA
 */
async function signWith(payload, header) {
  const input = `${b64json(header)}.${b64json(payload)}`;
  const signature = await crypto.subtle.sign('Ed25519', /** @type {CryptoKey} */ (eddsa), new TextEncoder().encode(input));
  return `${input}.${base64url.encode(new Uint8Array(signature))}`;
}

/** @param {unknown} value */
const b64json = (value) => base64url.encode(JSON.stringify(value));

/** A valid EdDSA token with another payload spliced in, keeping the signature. */
async function tampered() {
  const [h, , s] = (await sign(claims(), 'EdDSA', 'test-eddsa', eddsa)).split('.');
  return `${h}.${b64json(claims({ sub: 'root' }))}.${s}`;
}

/**
 * @typedef {{name: string, token: string, verdict: 'allow' | 'deny', code?: string, principal?: string, now?: number}} Case
 */

/** @param {string} name @param {string | Promise<string>} token @param {number} [now] @returns {Promise<Case>} */
const allow = async (name, token, now) => ({ name, token: await token, verdict: 'allow', principal: PRINCIPAL, ...(now === undefined ? {} : { now }) });
/** @param {string} name @param {string | Promise<string>} token @param {number} [now] @returns {Promise<Case>} */
const deny = async (name, token, now) => ({ name, token: await token, verdict: 'deny', code: 'auth.invalid', ...(now === undefined ? {} : { now }) });

const cases = await Promise.all([
  allow('valid ES256', sign(claims(), 'ES256', 'test-es256', es256)),
  allow('valid EdDSA', sign(claims(), 'EdDSA', 'test-eddsa', eddsa)),
  allow('valid RS256', sign(claims(), 'RS256', 'test-rs256', rs256)),
  allow('audience in a list', sign(claims({ aud: ['another-service', AUDIENCE] }), 'EdDSA', 'test-eddsa', eddsa)),
  allow('no nbf', sign(claims({ nbf: undefined }), 'EdDSA', 'test-eddsa', eddsa)),
  allow('nbf within the leeway', sign(claims({ nbf: NOW + 15 }), 'EdDSA', 'test-eddsa', eddsa)),
  // The host's JWT library also checks `exp` against the system clock, so a token expired
  // at the case's clock must still be valid at any clock the tests run at: these expire in
  // 2099 and are checked just after.
  allow('exp within the leeway', sign(claims({ exp: AT_2099 }), 'EdDSA', 'test-eddsa', eddsa), AT_2099 + 15),
  deny('exp past the leeway', sign(claims({ exp: AT_2099 }), 'EdDSA', 'test-eddsa', eddsa), AT_2099 + LEEWAY + 15),
  // `exp` is the first second a token is no longer accepted (RFC 7519 4.1.4): at exactly
  // `exp` + leeway it is refused; `nbf` is the first second it is, so at `nbf` - leeway it is not.
  deny('exp at the edge of the leeway', sign(claims({ exp: AT_2099 }), 'EdDSA', 'test-eddsa', eddsa), AT_2099 + LEEWAY),
  allow('one second before the edge of the leeway on exp', sign(claims({ exp: AT_2099 }), 'EdDSA', 'test-eddsa', eddsa), AT_2099 + LEEWAY - 1),
  allow('nbf at the edge of the leeway', sign(claims({ nbf: NOW + LEEWAY }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('nbf one second past the edge of the leeway', sign(claims({ nbf: NOW + LEEWAY + 1 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('expired', sign(claims({ iat: EXP_2020 - 3600, nbf: EXP_2020 - 3600, exp: EXP_2020 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('not yet valid', sign(claims({ nbf: AT_2099 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('forged signature', sign(claims(), 'EdDSA', 'test-eddsa', forger)),
  deny('tampered payload', tampered()),
  deny('alg none', `${b64json({ alg: 'none', typ: 'JWT', kid: 'test-eddsa' })}.${b64json(claims())}.`),
  deny('HS256 keyed with the RSA public key', sign(claims(), 'HS256', 'test-rs256', new TextEncoder().encode(rsaPublicPem))),
  deny('HS256 keyed with the Ed25519 public key', sign(claims(), 'HS256', 'test-eddsa', base64url.decode(edX))),
  deny('unknown kid', sign(claims(), 'EdDSA', 'nobody', eddsa)),
  deny('no kid', sign(claims(), 'EdDSA', null, eddsa)),
  deny('RS256 header on the EC key', sign(claims(), 'RS256', 'test-es256', rs256)),
  deny('ES256 under the EdDSA key', sign(claims(), 'ES256', 'test-eddsa', es256)),
  deny('wrong audience', sign(claims({ aud: 'another-service' }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('wrong issuer', sign(claims({ iss: 'https://evil.test' }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('missing exp', sign(claims({ exp: undefined }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('exp not whole seconds', sign(claims({ exp: EXP_2100 + 0.5 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('exp as text', sign(claims({ exp: String(EXP_2100) }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('missing iss', sign(claims({ iss: undefined }), 'EdDSA', 'test-eddsa', eddsa)),
  // `iss` is one StringOrURI: a list is not an issuer, even one naming the right one, and
  // an empty list names none.
  deny('iss in a list', sign(claims({ iss: [ISSUER] }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('iss an empty list', sign(claims({ iss: [] }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('iss as a number', sign(claims({ iss: 42 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('aud an empty list', sign(claims({ aud: [] }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('iat as text', sign(claims({ iat: String(ISSUED) }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('iat not whole seconds', sign(claims({ iat: ISSUED + 0.5 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('nbf not whole seconds', sign(claims({ nbf: ISSUED + 0.5 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('nbf as text', sign(claims({ nbf: String(ISSUED) }), 'EdDSA', 'test-eddsa', eddsa)),
  // A critical header extension neither verifier implements is refused (RFC 7515 4.1.11).
  deny('a critical header extension', signWith(claims(), { alg: 'EdDSA', kid: 'test-eddsa', crit: ['exp'], exp: EXP_2100 })),
  deny('an empty crit header', signWith(claims(), { alg: 'EdDSA', kid: 'test-eddsa', crit: [] })),
  deny('missing aud', sign(claims({ aud: undefined }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('missing sub', sign(claims({ sub: undefined }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('empty sub', sign(claims({ sub: '' }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('sub longer than 256 bytes', sign(claims({ sub: 'x'.repeat(257) }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('sub not text', sign(claims({ sub: 42 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('malformed: not three parts', 'not-a-token'),
  deny('malformed: two parts', `${b64json({ alg: 'EdDSA', kid: 'test-eddsa' })}.${b64json(claims())}`),
  deny('malformed: bad base64', `${b64json({ alg: 'EdDSA', kid: 'test-eddsa' })}.!!not*base64!!.AAAA`),
  deny('malformed: header not JSON', `${base64url.encode('{"alg":')}.${b64json(claims())}.AAAA`),
]);

const corpus = {
  about: 'User tokens and the verdict every verifier of them gives (host: host/tests/all/token_corpus.rs; edge: web/test/token-corpus.test.js). Written by web/tools/make-token-corpus.mjs from the keys of this folder; check each case at its `now`, else at the corpus `now` (seconds).',
  issuer: ISSUER,
  audience: AUDIENCE,
  claim: 'sub',
  principal_type: 'user',
  leeway: LEEWAY,
  now: NOW,
  cases,
};
writeFileSync(`${DIR}corpus.json`, `${JSON.stringify(corpus, null, 1)}\n`);
console.log(`wrote ${cases.length} cases to host/tests/fixtures/tokens/corpus.json`);
