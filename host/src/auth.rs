//! Who is asking. Every `/v1` route but the OpenAPI document names the caller by a
//! verified credential in `Authorization: Bearer …`, never by a body field or a header a
//! client can set:
//!
//! - a **service key** (`clr_<id>_<secret>`): random, shown once when created, stored as
//!   the SHA-256 of its secret, with a scope: `admin` (the policy and every account),
//!   `service` (named accounts: decides for any of their principals and writes on behalf
//!   of a named author, recorded as made through the key) or `read` (decisions for named
//!   accounts, nothing else);
//! - a **user token**: a JWT signed by a key of the configured JWKS (a file, or an OpenID
//!   Connect provider's set kept current as it rotates, [`crate::oidc`]) (ES256, ES384, EdDSA,
//!   RS256; never `none`, never HMAC), from the configured issuer for the configured
//!   audience, within `exp` and `nbf` (with a small leeway), issued no later than now and
//!   valid for at most the maximum token lifetime (24 hours by default). A claim (default
//!   `sub`) names the principal `user:<sub>`, which must exist. A user acts only as itself.
//!
//! The comparison of a key's secret is constant-time; a key's lookup is by its public id.

use crate::codes::Code;
use crate::store::StoredKey;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What a service key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The policy, every account, imports.
    Admin,
    /// Decisions and writes for its accounts, on behalf of their principals.
    Service,
    /// Decisions for its accounts.
    Read,
}

impl Scope {
    /// The scope's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Service => "service",
            Scope::Read => "read",
        }
    }

    /// Reads a scope's name.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "admin" => Some(Scope::Admin),
            "service" => Some(Scope::Service),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
}

/// A proven caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A service key.
    Key {
        /// The key's public id.
        id: String,
        /// What it may do.
        scope: Scope,
        /// The accounts it is for (`service` and `read`), as `account:<id>` keys.
        accounts: Vec<String>,
    },
    /// A user, by a verified token.
    User {
        /// The principal, `user:<sub>`.
        principal: String,
    },
}

impl Caller {
    /// Whether the caller holds an admin key.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Caller::Key {
                scope: Scope::Admin,
                ..
            }
        )
    }

    /// How the caller is named in a change's `via` and in logs.
    pub fn name(&self) -> String {
        match self {
            Caller::Key { id, .. } => format!("key:{id}"),
            Caller::User { principal } => principal.clone(),
        }
    }
}

/// Why a credential was not accepted: the code and what to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// [`Code::AuthMissing`] or [`Code::AuthInvalid`].
    pub code: Code,
    /// What was wrong.
    pub message: String,
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError {
        code: Code::AuthInvalid,
        message: message.into(),
    }
}

/// A key as shown once, at creation: the token to hand to the application, and the
/// record stored.
#[derive(Debug)]
pub struct NewKey {
    /// `clr_<id>_<secret>`; the only time the secret exists outside the caller.
    pub token: String,
    /// What is stored.
    pub stored: StoredKey,
}

const KEY_PREFIX: &str = "clr_";

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness from the system: {e}"))?;
    Ok(b)
}

fn secret_hash(secret: &str) -> String {
    clearance_core::policy::hex(&Sha256::digest(secret.as_bytes()))
}

/// Creates a key (not yet stored): 8 random bytes name it, 32 random bytes are its secret.
pub fn new_key(scope: Scope, accounts: &[String], label: &str, now: i64) -> Result<NewKey, String> {
    match (scope, accounts.is_empty()) {
        (Scope::Admin, false) => return Err("an admin key is for every account: name none".into()),
        (Scope::Service | Scope::Read, true) => {
            return Err(format!(
                "a {} key is for named accounts: name at least one",
                scope.as_str()
            ));
        }
        _ => {}
    }
    let accounts = accounts
        .iter()
        .map(|a| {
            if a.starts_with("account:") {
                a.clone()
            } else {
                format!("account:{a}")
            }
        })
        .collect();
    let id = clearance_core::policy::hex(&random::<8>()?);
    let secret = URL_SAFE_NO_PAD.encode(random::<32>()?);
    Ok(NewKey {
        token: format!("{KEY_PREFIX}{id}_{secret}"),
        stored: StoredKey {
            id,
            hash: secret_hash(&secret),
            scope: scope.as_str().into(),
            accounts,
            label: label.into(),
            created: now,
            revoked: None,
        },
    })
}

/// The stored form of a key made elsewhere (`clr_<id>_<secret>`), for provisioning a
/// known key: tests, or a key kept in an operator's secret store.
pub fn stored_key(
    token: &str,
    scope: Scope,
    accounts: &[String],
    label: &str,
    now: i64,
) -> Result<StoredKey, String> {
    let (id, secret) = token
        .strip_prefix(KEY_PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .ok_or("a service key is clr_<id>_<secret>")?;
    if id.is_empty() || secret.len() < 32 {
        return Err("a key's id is not empty and its secret is at least 32 characters".into());
    }
    let mut made = new_key(scope, accounts, label, now)?;
    made.stored.id = id.to_string();
    made.stored.hash = secret_hash(secret);
    Ok(made.stored)
}

/// The live keys, by id, as last read from the store.
#[derive(Debug, Default)]
pub struct Keys(HashMap<String, StoredKey>);

impl Keys {
    /// The keys that are not revoked, of a known scope.
    pub fn new(all: Vec<StoredKey>) -> Keys {
        Keys(
            all.into_iter()
                .filter(|k| k.revoked.is_none() && Scope::parse(&k.scope).is_some())
                .map(|k| (k.id.clone(), k))
                .collect(),
        )
    }

    /// How many live keys there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a key of this id is live.
    pub fn is_live(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    /// The caller a service key names, or why not.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let rest = token
            .strip_prefix(KEY_PREFIX)
            .ok_or_else(|| invalid("not a service key"))?;
        let (id, secret) = rest
            .split_once('_')
            .ok_or_else(|| invalid("a service key is clr_<id>_<secret>"))?;
        let Some(key) = self.0.get(id) else {
            return Err(invalid(
                "no live service key has this id (revoked, or never created)",
            ));
        };
        let given = secret_hash(secret);
        if !bool::from(given.as_bytes().ct_eq(key.hash.as_bytes())) {
            return Err(invalid("the service key's secret does not match"));
        }
        let scope =
            Scope::parse(&key.scope).ok_or_else(|| invalid("the key's scope is unknown"))?;
        Ok(Caller::Key {
            id: key.id.clone(),
            scope,
            accounts: key.accounts.clone(),
        })
    }
}

/// How user tokens are checked.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// The one issuer (`iss`) accepted.
    pub issuer: String,
    /// The audience (`aud`) the token must name.
    pub audience: String,
    /// The claim that names the principal.
    pub claim: String,
    /// The principal's type: the claim holds its id (`user` and `sub` by default give
    /// `user:<sub>`). `None`: the claim holds the whole `type:id`.
    pub principal_type: Option<String>,
    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: u64,
    /// The longest a token may be valid, in seconds: a token whose `exp` is further than
    /// this (plus the leeway) past the server's clock, or further than this past its own
    /// `iat`, is refused, so that a token leaked or issued by mistake is not good for ever.
    pub max_lifetime: u64,
}

/// The longest a user token may be valid unless the rules say otherwise: 24 hours.
pub const DEFAULT_MAX_LIFETIME: u64 = 24 * 60 * 60;

impl Default for TokenRules {
    fn default() -> Self {
        TokenRules {
            issuer: String::new(),
            audience: String::new(),
            claim: "sub".into(),
            principal_type: Some("user".into()),
            leeway: 30,
            max_lifetime: DEFAULT_MAX_LIFETIME,
        }
    }
}

/// The times a token carries, in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Times {
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
}

/// The public keys user tokens are verified with, by `kid`.
pub type KeyRing = HashMap<String, (DecodingKey, Algorithm)>;

/// A token verified once, remembered: the principal it proves, its times, and the key
/// that signed it (a token is good only while its key is still configured).
#[derive(Clone)]
struct Remembered {
    principal: String,
    times: Times,
    kid: String,
}

/// Verifies user tokens against a set of public keys.
///
/// A signature check costs tens to hundreds of microseconds (EdDSA, RS256, ES256), so a
/// verified token is remembered, by its SHA-256, with its principal, times and key, until
/// it expires: a client sending the same token again pays a hash, a lookup and the checks
/// of its times, and of its key being still in the set. The set is fixed for a JWKS file
/// and replaced as an identity provider rotates its keys ([`crate::oidc`]); a token whose
/// key has left the set is refused, remembered or not.
pub struct TokenVerifier {
    keys: std::sync::RwLock<Arc<KeyRing>>,
    rules: TokenRules,
    verified: std::sync::Mutex<HashMap<[u8; 32], Remembered>>,
}

/// The most verified tokens remembered; past it the memory starts afresh.
const VERIFIED_CAP: usize = 65_536;

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.kids())
            .field("rules", &self.rules)
            .finish()
    }
}

/// The one algorithm a public key verifies: named by the key, or implied by its type:
/// ES256 (P-256), ES384 (P-384), EdDSA (Ed25519) or RS256 (RSA), the algorithms the edge's
/// verifier (`web/edge/token.js`) accepts too. Symmetric keys are refused: a JWKS publishes
/// public keys only.
fn algorithm_of(jwk: &Jwk) -> Result<Algorithm, String> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => {
                return Err(format!(
                    "curve {:?} is not supported (P-256 or P-384)",
                    p.curve
                ));
            }
        },
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Err(format!(
                    "curve {:?} is not supported (Ed25519 only)",
                    p.curve
                ));
            }
            // The verifier reads exactly 32 bytes of key: check them here, once.
            let x = URL_SAFE_NO_PAD
                .decode(p.x.trim_end_matches('='))
                .map_err(|e| format!("its `x` is not base64url: {e}"))?;
            if x.len() != 32 {
                return Err(format!("an Ed25519 key is 32 bytes, this one {}", x.len()));
            }
            Algorithm::EdDSA
        }
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::OctetKey(_) => {
            return Err(
                "a symmetric (`oct`) key cannot verify user tokens: publish public keys only"
                    .into(),
            );
        }
    };
    if let Some(a) = jwk.common.key_algorithm {
        let agrees = matches!(
            (a, implied),
            (KeyAlgorithm::ES256, Algorithm::ES256)
                | (KeyAlgorithm::ES384, Algorithm::ES384)
                | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
                | (KeyAlgorithm::RS256, Algorithm::RS256)
        );
        if !agrees {
            return Err(format!(
                "its `alg` `{a:?}` does not fit its key type ({implied:?} only)"
            ));
        }
    }
    Ok(implied)
}

impl TokenVerifier {
    /// A verifier for the public keys of `jwks` (each with a `kid`).
    pub fn new(jwks: &JwkSet, rules: TokenRules) -> Result<TokenVerifier, String> {
        let keys = key_ring(&jwks.keys)?;
        if keys.is_empty() {
            return Err("the JWKS holds no key".into());
        }
        let verifier = TokenVerifier::without_keys(rules)?;
        verifier.replace_keys(keys);
        Ok(verifier)
    }

    /// A verifier that knows no key yet, for keys fetched later ([`TokenVerifier::replace_keys`]):
    /// until then every token is refused.
    pub fn without_keys(rules: TokenRules) -> Result<TokenVerifier, String> {
        if rules.issuer.is_empty() || rules.audience.is_empty() {
            return Err("user tokens need an issuer and an audience to check".into());
        }
        Ok(TokenVerifier {
            keys: std::sync::RwLock::new(Arc::new(KeyRing::new())),
            rules,
            verified: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The rules tokens are checked by.
    pub fn rules(&self) -> &TokenRules {
        &self.rules
    }

    fn ring(&self) -> Arc<KeyRing> {
        match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The `kid`s of the keys in use, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.ring().keys().cloned().collect();
        kids.sort();
        kids
    }

    /// Whether a key of this `kid` is in use.
    pub fn knows(&self, kid: &str) -> bool {
        self.ring().contains_key(kid)
    }

    /// Verifies with `keys` from now on, in place of the keys before: a token of a key no
    /// longer in the set is refused from the next request, remembered or not.
    pub fn replace_keys(&self, keys: KeyRing) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut k) => *k = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// A verifier for a JWKS file.
    pub fn from_file(path: &Path, rules: TokenRules) -> Result<TokenVerifier, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let jwks: JwkSet = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a JWKS: {e}", path.display()))?;
        TokenVerifier::new(&jwks, rules).map_err(|m| format!("{}: {m}", path.display()))
    }

    /// The principal a token proves (`user:<sub>` by default), or why not. `now` is the server's
    /// clock (seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<String, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Ok(mut seen) = self.verified.lock()
            && let Some(known) = seen.get(&digest)
        {
            // Remembered: only its times, or its key leaving the set, can have changed
            // its verdict.
            let verdict = if self.knows(&known.kid) {
                self.check_times(known.times, now)
            } else {
                Err(invalid(format!(
                    "no configured key is named `{}` (the identity provider no longer publishes it)",
                    known.kid
                )))
            };
            return match verdict {
                Ok(()) => Ok(known.principal.clone()),
                Err(e) => {
                    seen.remove(&digest);
                    Err(e)
                }
            };
        }
        let known = self.verify_signed(token, now)?;
        let principal = known.principal.clone();
        if let Ok(mut seen) = self.verified.lock() {
            if seen.len() >= VERIFIED_CAP {
                seen.clear();
            }
            seen.insert(digest, known);
        }
        Ok(principal)
    }

    /// Whether a token's times let it be used at `now` (the server's clock): before `exp`
    /// and not before `nbf` (each with the leeway), issued (`iat`) no later than now plus
    /// the leeway, and valid for at most the maximum lifetime, from now (plus the leeway)
    /// and from its `iat`.
    fn check_times(&self, times: Times, now: i64) -> Result<(), AuthError> {
        let leeway = i64::try_from(self.rules.leeway).unwrap_or(i64::MAX);
        let max = i64::try_from(self.rules.max_lifetime).unwrap_or(i64::MAX);
        // `exp` is the first second the token is refused (RFC 7519 4.1.4), after the leeway.
        if times.exp.saturating_add(leeway) <= now {
            return Err(invalid("the token has expired"));
        }
        if let Some(nbf) = times.nbf
            && nbf.saturating_sub(leeway) > now
        {
            return Err(invalid("the token is not valid yet"));
        }
        if let Some(iat) = times.iat
            && iat.saturating_sub(leeway) > now
        {
            return Err(invalid(format!(
                "the token's `iat` is {} s ahead of the server's clock, more than the leeway of {leeway} s: a token is not issued in the future",
                iat.saturating_sub(now)
            )));
        }
        let ahead = times.exp.saturating_sub(now);
        if ahead > max.saturating_add(leeway) {
            return Err(invalid(format!(
                "the token's `exp` is {ahead} s ahead of the server's clock, more than the maximum token lifetime of {max} s (plus the leeway of {leeway} s)"
            )));
        }
        if let Some(iat) = times.iat {
            let lifetime = times.exp.saturating_sub(iat);
            if lifetime > max {
                return Err(invalid(format!(
                    "the token's `exp` is {lifetime} s after its `iat`, more than the maximum token lifetime of {max} s"
                )));
            }
        }
        Ok(())
    }

    /// [`TokenVerifier::verify`] without the memory: the principal and the token's times.
    fn verify_signed(&self, token: &str, now: i64) -> Result<Remembered, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| invalid(format!("not a token this host accepts: {e}")))?;
        let kid = header
            .kid
            .ok_or_else(|| invalid("the token names no key (`kid`)"))?;
        let ring = self.ring();
        let Some((key, alg)) = ring.get(&kid) else {
            return Err(invalid(if ring.is_empty() {
                "no key to verify user tokens is loaded yet (the identity provider's keys could not be fetched; the host keeps trying)".to_string()
            } else {
                format!("no configured key is named `{kid}`")
            }));
        };
        if header.alg != *alg {
            return Err(invalid(format!(
                "key `{kid}` verifies {alg:?}, the token says {:?}",
                header.alg
            )));
        }
        // No header extension is implemented here, so a token that marks one critical is
        // refused (RFC 7515 4.1.11), as the edge's verifier refuses it.
        if header.crit.is_some() {
            return Err(invalid(
                "the token marks a header extension critical (`crit`), which this host does not implement",
            ));
        }
        let mut v = Validation::new(*alg);
        v.set_issuer(&[&self.rules.issuer]);
        v.set_audience(&[&self.rules.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        // The library would check `exp` and `nbf` against its own reading of the system
        // clock: every time is checked against the server's clock below instead, by the
        // same rules as the edge's verifier.
        v.validate_exp = false;
        v.validate_nbf = false;
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &v)
                .map_err(|e| invalid(format!("the token was refused: {e}")))?;
        let claims = data.claims;
        // The library accepts `iss` as a list of which the configured issuer is a member, or
        // an empty list: an issuer is one string (RFC 7519 4.1.1), and it is this one.
        if claims.get("iss").and_then(serde_json::Value::as_str) != Some(&self.rules.issuer) {
            return Err(invalid("the token's `iss` is not the configured issuer"));
        }
        // Times are whole seconds.
        let whole = |time: &str| match claims.get(time) {
            None => Ok(None),
            Some(t) => t.as_i64().map(Some).ok_or_else(|| {
                invalid(format!(
                    "the token's `{time}` is not a whole number of seconds"
                ))
            }),
        };
        let times = Times {
            exp: whole("exp")?.ok_or_else(|| invalid("the token has no `exp`"))?,
            nbf: whole("nbf")?,
            iat: whole("iat")?,
        };
        self.check_times(times, now)?;
        let id = claims
            .get(&self.rules.claim)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| {
                invalid(format!(
                    "the token's `{}` claim is missing or not a short string",
                    self.rules.claim
                ))
            })?;
        let principal = match &self.rules.principal_type {
            Some(t) => format!("{t}:{id}"),
            None if id.contains(':') => id.to_string(),
            None => {
                return Err(invalid(format!(
                    "the token's `{}` claim is not a principal `type:id`",
                    self.rules.claim
                )));
            }
        };
        Ok(Remembered {
            principal,
            times,
            kid,
        })
    }
}

/// The key a token names (`kid` in its header), or why it names none.
pub fn key_id(token: &str) -> Result<String, AuthError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| invalid(format!("not a token this host accepts: {e}")))?;
    header
        .kid
        .ok_or_else(|| invalid("the token names no key (`kid`)"))
}

/// The keys of a JWKS, by `kid`: every key must have a `kid` and be one this host
/// verifies with ([`algorithm_of`]), and no two share a `kid`.
pub fn key_ring(jwks: &[Jwk]) -> Result<KeyRing, String> {
    let mut keys = KeyRing::new();
    for (i, jwk) in jwks.iter().enumerate() {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| format!("key {i} of the JWKS has no `kid`"))?;
        let alg = algorithm_of(jwk).map_err(|m| format!("key `{kid}`: {m}"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key `{kid}`: {e}"))?;
        if keys.insert(kid.clone(), (key, alg)).is_some() {
            return Err(format!("two keys of the JWKS are named `{kid}`"));
        }
    }
    Ok(keys)
}

/// A token issuer for the demo personas: an Ed25519 key made at start-up, never stored,
/// and the JWKS that verifies what it signs. Only `clearance serve --demo` runs one.
pub struct DemoIssuer {
    key: jsonwebtoken::EncodingKey,
    kid: String,
    /// The rules its tokens are made for.
    pub rules: TokenRules,
    /// The public half, as a JWKS.
    pub jwks: JwkSet,
}

impl std::fmt::Debug for DemoIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoIssuer")
            .field("kid", &self.kid)
            .finish()
    }
}

impl DemoIssuer {
    /// A new issuer with a fresh key.
    pub fn new() -> Result<DemoIssuer, String> {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let signing = ed25519_dalek::SigningKey::from_bytes(&random::<32>()?);
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| format!("the demo key: {e}"))?;
        let kid = format!("demo-{}", clearance_core::policy::hex(&random::<4>()?));
        let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        let jwks: JwkSet = serde_json::from_value(serde_json::json!({
            "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig" }]
        }))
        .map_err(|e| format!("the demo JWKS: {e}"))?;
        Ok(DemoIssuer {
            key: jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            kid,
            rules: TokenRules {
                issuer: "clearance-demo".into(),
                audience: "clearance".into(),
                principal_type: None,
                ..TokenRules::default()
            },
            jwks,
        })
    }

    /// A token for `principal` (`type:id`), valid for `ttl` seconds from `now`.
    pub fn token(&self, principal: &str, now: i64, ttl: i64) -> Result<String, String> {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let claims = serde_json::json!({
            "iss": self.rules.issuer, "aud": self.rules.audience, "sub": principal,
            "iat": now, "nbf": now, "exp": now.saturating_add(ttl),
        });
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())
    }
}

/// The bearer credential of a request's `Authorization` header.
pub fn bearer(value: Option<&str>) -> Result<&str, AuthError> {
    let Some(v) = value else {
        return Err(AuthError {
            code: Code::AuthMissing,
            message: "no credentials: send `Authorization: Bearer <service key or user token>`"
                .into(),
        });
    };
    let (scheme, rest) = v
        .split_once(' ')
        .ok_or_else(|| invalid("the Authorization header is `Bearer <credential>`"))?;
    let rest = rest.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || rest.is_empty() || rest.len() > 8192 {
        return Err(invalid("the Authorization header is `Bearer <credential>`"));
    }
    Ok(rest)
}
