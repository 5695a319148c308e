// Writes host/tests/fixtures/tokens/corpus.json: user tokens with the verdict both the host's
// TokenVerifier (host/tests/all/token_corpus.rs) and the edge (web/test/token-corpus.test.js)
// must give, and the public keys both must refuse. Run from anywhere:
// `node web/tools/make-token-corpus.mjs`. The keys are the test keys beside the corpus; every
// time is fixed, so only the ECDSA signatures (randomised) change from one run to the next.

import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SignJWT, base64url, importPKCS8 } from 'jose';

const DIR = fileURLToPath(new URL('../../host/tests/fixtures/tokens/', import.meta.url));

/** The issuer and audience of host/tests/all/auth.rs. */
const ISSUER = 'https://idp.test';
const AUDIENCE = 'clearance-test';
const LEEWAY = 30;
/** The longest a token may be valid (both verifiers' default): 24 hours. */
const MAX_LIFETIME = 86400;
/** The corpus's clock: 2026-05-01T10:00:00Z, the time of the tests' world. */
const NOW = 1777629600;
/** When the valid tokens were issued: a minute before the corpus's clock. */
const ISSUED = NOW - 60;
/** When the valid tokens expire: an hour after they were issued. */
const EXP = ISSUED + 3600;
/** 2020-01-01T00:00:00Z: expired tokens expired then. */
const EXP_2020 = 1577836800;
/** 2099-01-01T00:00:00Z: not-yet-valid tokens become valid then. */
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
const es384 = await privateKey('es384.der', 'pkcs8', 'ES384');
/** The RSA test key, for the RSA algorithms neither verifier accepts. */
const rs384 = await privateKey('rs256.der', 'pkcs1', 'RS384');
const rs512 = await privateKey('rs256.der', 'pkcs1', 'RS512');
const rs256 = await privateKey('rs256.der', 'pkcs1', 'RS256');
const eddsa = await privateKey('ed25519.der', 'pkcs8', 'EdDSA');
const forger = await privateKey('forger-ed25519.der', 'pkcs8', 'EdDSA');
/** The RSA test key's public half as PEM text: what a confused verifier would use as an HMAC secret. */
const rsaPublicPem = String(createPublicKey(createPrivateKey({ key: readFileSync(`${DIR}rs256.der`), format: 'der', type: 'pkcs1' })).export({ format: 'pem', type: 'spki' }));
/** @type {{keys: Array<{[member: string]: string}>}} */
const jwks = JSON.parse(readFileSync(`${DIR}jwks.json`, 'utf8'));
/**
 * The public members of a key of the JWKS.
 *
 * @param {string} kid
 */
function publicKey(kid) {
  const k = jwks.keys.find((j) => j.kid === kid);
  if (k === undefined) throw new Error(`no key ${kid} in jwks.json`);
  const { alg: _alg, use: _use, kid: _kid, ...members } = k;
  return members;
}
const edX = publicKey('test-eddsa').x ?? '';

/**
 * The claims of a valid token, changed by `change` (a value of undefined removes a claim).
 *
 * @param {{[claim: string]: unknown}} [change]
 */
function claims(change = {}) {
  /** @type {{[claim: string]: unknown}} */
  const c = { iss: ISSUER, aud: AUDIENCE, sub: SUB, iat: ISSUED, nbf: ISSUED, exp: EXP, ...change };
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
  allow('valid ES384', sign(claims(), 'ES384', 'test-es384', es384)),
  allow('audience in a list', sign(claims({ aud: ['another-service', AUDIENCE] }), 'EdDSA', 'test-eddsa', eddsa)),
  allow('no nbf', sign(claims({ nbf: undefined }), 'EdDSA', 'test-eddsa', eddsa)),
  allow('nbf within the leeway', sign(claims({ nbf: NOW + 15 }), 'EdDSA', 'test-eddsa', eddsa)),
  // Both verifiers check every time against their own clock (the case's `now`), never the
  // system's.
  allow('exp within the leeway', sign(claims(), 'EdDSA', 'test-eddsa', eddsa), EXP + 15),
  deny('exp past the leeway', sign(claims(), 'EdDSA', 'test-eddsa', eddsa), EXP + LEEWAY + 15),
  // `exp` is the first second a token is no longer accepted (RFC 7519 4.1.4): at exactly
  // `exp` + leeway it is refused; `nbf` is the first second it is, so at `nbf` - leeway it is not.
  deny('exp at the edge of the leeway', sign(claims(), 'EdDSA', 'test-eddsa', eddsa), EXP + LEEWAY),
  allow('one second before the edge of the leeway on exp', sign(claims(), 'EdDSA', 'test-eddsa', eddsa), EXP + LEEWAY - 1),
  allow('nbf at the edge of the leeway', sign(claims({ nbf: NOW + LEEWAY }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('nbf one second past the edge of the leeway', sign(claims({ nbf: NOW + LEEWAY + 1 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('expired', sign(claims({ iat: EXP_2020 - 3600, nbf: EXP_2020 - 3600, exp: EXP_2020 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('not yet valid', sign(claims({ nbf: AT_2099 }), 'EdDSA', 'test-eddsa', eddsa)),
  // A token is valid for at most the maximum lifetime: its `exp` no further than that (plus
  // the leeway) past the verifier's clock, nor past its `iat`; and it is not issued (`iat`)
  // in the future, past the leeway.
  deny('exp far ahead (1e17)', sign(claims({ exp: 99999999999999999 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('exp in 2100', sign(claims({ iat: undefined, exp: 4102444800 }), 'EdDSA', 'test-eddsa', eddsa)),
  allow('no iat, exp at the maximum lifetime plus the leeway', sign(claims({ iat: undefined, exp: NOW + MAX_LIFETIME + LEEWAY }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('no iat, exp one second past the maximum lifetime plus the leeway', sign(claims({ iat: undefined, exp: NOW + MAX_LIFETIME + LEEWAY + 1 }), 'EdDSA', 'test-eddsa', eddsa)),
  allow('exp the maximum lifetime after iat', sign(claims({ exp: ISSUED + MAX_LIFETIME }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('exp one second more than the maximum lifetime after iat', sign(claims({ exp: ISSUED + MAX_LIFETIME + 1 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('issued two days ago for two days and an hour', sign(claims({ iat: NOW - 2 * 86400, nbf: NOW - 2 * 86400, exp: NOW + 3600 }), 'EdDSA', 'test-eddsa', eddsa)),
  allow('iat at the edge of the leeway', sign(claims({ iat: NOW + LEEWAY, nbf: NOW }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('iat one second past the edge of the leeway', sign(claims({ iat: NOW + LEEWAY + 1, nbf: NOW }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('iat 28 hours in the future', sign(claims({ iat: NOW + 28 * 3600, nbf: undefined, exp: NOW + 28 * 3600 + 600 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('forged signature', sign(claims(), 'EdDSA', 'test-eddsa', forger)),
  deny('tampered payload', tampered()),
  deny('alg none', `${b64json({ alg: 'none', typ: 'JWT', kid: 'test-eddsa' })}.${b64json(claims())}.`),
  deny('HS256 keyed with the RSA public key', sign(claims(), 'HS256', 'test-rs256', new TextEncoder().encode(rsaPublicPem))),
  deny('HS256 keyed with the Ed25519 public key', sign(claims(), 'HS256', 'test-eddsa', base64url.decode(edX))),
  deny('unknown kid', sign(claims(), 'EdDSA', 'nobody', eddsa)),
  deny('no kid', sign(claims(), 'EdDSA', null, eddsa)),
  deny('RS256 header on the EC key', sign(claims(), 'RS256', 'test-es256', rs256)),
  deny('ES256 under the EdDSA key', sign(claims(), 'ES256', 'test-eddsa', es256)),
  // Each key verifies one algorithm: RS384 and RS512 by no key (the RSA key verifies RS256
  // only), ES384 only by the P-384 key, ES256 only by the P-256 key.
  deny('RS384 under the RSA key', sign(claims(), 'RS384', 'test-rs256', rs384)),
  deny('RS512 under the RSA key', sign(claims(), 'RS512', 'test-rs256', rs512)),
  deny('ES384 header on the P-256 key', sign(claims(), 'ES384', 'test-es256', es384)),
  deny('ES256 header on the P-384 key', sign(claims(), 'ES256', 'test-es384', es256)),
  deny('wrong audience', sign(claims({ aud: 'another-service' }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('wrong issuer', sign(claims({ iss: 'https://evil.test' }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('missing exp', sign(claims({ exp: undefined }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('exp not whole seconds', sign(claims({ exp: EXP + 0.5 }), 'EdDSA', 'test-eddsa', eddsa)),
  deny('exp as text', sign(claims({ exp: String(EXP) }), 'EdDSA', 'test-eddsa', eddsa)),
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
  deny('a critical header extension', signWith(claims(), { alg: 'EdDSA', kid: 'test-eddsa', crit: ['exp'], exp: EXP })),
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

/**
 * Public keys every verifier refuses to verify user tokens with (a JWKS holding one is
 * refused when the verifier is made): both accept exactly ES256 (P-256), ES384 (P-384), EdDSA
 * (Ed25519) and RS256, one algorithm per key.
 *
 * @type {Array<{name: string, jwk: {[member: string]: string}}>}
 */
const refusedKeys = [
  { name: 'an RSA key for RS384', jwk: { ...publicKey('test-rs256'), kid: 'rs384', alg: 'RS384' } },
  { name: 'an RSA key for RS512', jwk: { ...publicKey('test-rs256'), kid: 'rs512', alg: 'RS512' } },
  { name: 'an RSA key for PS256', jwk: { ...publicKey('test-rs256'), kid: 'ps256', alg: 'PS256' } },
  { name: 'a P-256 key for ES384', jwk: { ...publicKey('test-es256'), kid: 'p256-es384', alg: 'ES384' } },
  { name: 'a P-384 key for ES256', jwk: { ...publicKey('test-es384'), kid: 'p384-es256', alg: 'ES256' } },
  {
    name: 'a P-521 key',
    jwk: {
      kty: 'EC',
      crv: 'P-521',
      x: 'APoKR3KXotJk0BUDAtI2P_irUF2occk-1EEdSs_iyRUqtEzV9P_amk7udZ72HQ6-7MHE7neB6JzA4Phh6p_uhUeW',
      y: 'ALOAVkeP8NPfj8OZR0WnWDQt3kYF7o51V3VDkF07hiSWrjo-vuvUtdUJbOc_5kS3lH31L_GpmQEDU99B7HvECi3w',
      kid: 'p521',
    },
  },
  { name: 'an Ed25519 key for ES256', jwk: { ...publicKey('test-eddsa'), kid: 'ed-es256', alg: 'ES256' } },
  { name: 'a symmetric key', jwk: { kty: 'oct', k: 'c2VjcmV0LWtleS1vZi10aGUtdGVzdHM', kid: 'oct' } },
];

const corpus = {
  about: 'User tokens and the verdict every verifier of them gives, and public keys every verifier refuses (host: host/tests/all/token_corpus.rs; edge: web/test/token-corpus.test.js). Written by web/tools/make-token-corpus.mjs from the keys of this folder; check each case at its `now`, else at the corpus `now` (seconds).',
  issuer: ISSUER,
  audience: AUDIENCE,
  claim: 'sub',
  principal_type: 'user',
  leeway: LEEWAY,
  max_lifetime: MAX_LIFETIME,
  now: NOW,
  cases,
  refused_keys: refusedKeys,
};
writeFileSync(`${DIR}corpus.json`, `${JSON.stringify(corpus, null, 1)}\n`);
console.log(`wrote ${cases.length} cases to host/tests/fixtures/tokens/corpus.json`);
