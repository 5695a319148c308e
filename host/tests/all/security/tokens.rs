//! Finding 12 of the review (tokens): a token valid for longer than the maximum lifetime, or
//! issued in the future, is refused; the host accepts exactly the algorithms the edge does.

use crate::service::{serve_config, temp_db};
use crate::{block, root};
use clearance_host::auth::{TokenRules, TokenVerifier};
use clearance_host::service::ServiceConfig;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::Arc;

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "clearance-test";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("host/tests/fixtures/tokens").join(name)).unwrap()
}

fn now() -> i64 {
    clearance_host::service::now_seconds()
}

fn rules() -> TokenRules {
    TokenRules {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        ..TokenRules::default()
    }
}

fn verifier(rules: TokenRules) -> TokenVerifier {
    TokenVerifier::from_file(&root().join("host/tests/fixtures/tokens/jwks.json"), rules).unwrap()
}

/// A token for `user:occ_controller` with the times `times` (each `Some` sets a claim),
/// signed by the Ed25519 test key.
fn token(iat: Option<i64>, exp: Value) -> String {
    let mut claims = json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": "occ_controller", "exp": exp });
    if let Some(iat) = iat {
        claims["iat"] = json!(iat);
    }
    signed(
        Algorithm::EdDSA,
        "test-eddsa",
        &fixture("ed25519.der"),
        &claims,
    )
}

fn signed(alg: Algorithm, kid: &str, der: &[u8], claims: &Value) -> String {
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_der(der),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_der(der),
        _ => EncodingKey::from_rsa_der(der),
    };
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

/// A server that verifies user tokens by the test JWKS with the default rules, and
/// refuses an address after `failures` failed authentications a minute.
async fn server(name: &str, failures: u32) -> (String, Arc<clearance_host::service::Service>) {
    let config = ServiceConfig {
        tokens: Some(Arc::new(verifier(rules()))),
        auth_failure_limit: std::num::NonZeroU32::new(failures),
        ..ServiceConfig::default()
    };
    serve_config(&temp_db(name), config).await
}

/// The user's own check, with `token`: the status and the body.
async fn check_as(base: &str, token: &str) -> (u16, Value) {
    let r = crate::client_with(token)
        .post(format!("{base}/v1/check"))
        .json(&json!({ "principal": "user:occ_controller", "action": "view", "resource": "event:aog_lhr" }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Finding 12 (tokens): `exp` 10^17 and `iat` 28 hours ahead were accepted. A token whose
/// `exp` is more than the maximum lifetime (24 h, plus the leeway) ahead of the server's
/// clock, or more than the maximum after its `iat`, or whose `iat` is past the leeway in
/// the future, is 401 `auth.invalid` with a message naming the claim; tokens within the
/// bounds are served.
#[test]
fn a_token_valid_too_long_or_issued_in_the_future_is_refused() {
    block(async {
        let (base, _service) = server("token-lifetime", 1000).await;
        let n = now();
        let refused = [
            (
                "exp 10^17",
                token(Some(n), json!(99_999_999_999_999_999_i64)),
                "`exp`",
            ),
            (
                "exp two days ahead",
                token(Some(n), json!(n + 2 * 86_400)),
                "`exp`",
            ),
            (
                "no iat, exp two days ahead",
                token(None, json!(n + 2 * 86_400)),
                "`exp`",
            ),
            (
                "iat 28 hours ahead",
                token(Some(n + 28 * 3600), json!(n + 28 * 3600 + 600)),
                "`iat`",
            ),
            (
                "iat a minute ahead",
                token(Some(n + 60), json!(n + 600)),
                "`iat`",
            ),
            (
                "issued two days ago, for two days and an hour",
                token(Some(n - 2 * 86_400), json!(n + 3600)),
                "`iat`",
            ),
        ];
        for (what, t, claim) in refused {
            let (status, body) = check_as(&base, &t).await;
            assert_eq!(status, 401, "{what}: {body}");
            assert_eq!(body["error"]["code"], "auth.invalid", "{what}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(claim), "{what}: {message}");
            assert!(
                message.contains("86400 s") || claim == "`iat`",
                "{what}: {message}"
            );
        }
        let served = [
            ("an hour", token(Some(n), json!(n + 3600))),
            ("23 hours", token(Some(n), json!(n + 23 * 3600))),
            ("iat within the leeway", token(Some(n + 20), json!(n + 600))),
            ("no iat, an hour", token(None, json!(n + 3600))),
        ];
        for (what, t) in served {
            let (status, body) = check_as(&base, &t).await;
            assert_eq!(status, 200, "{what}: {body}");
        }
    });
}

/// Finding 12 (tokens): the maximum lifetime is the host's token rules' (`serve
/// --token-max-lifetime`), and a token remembered as verified is held to it as well.
#[test]
fn the_maximum_lifetime_is_configured_and_holds_for_remembered_tokens() {
    let v = verifier(TokenRules {
        max_lifetime: 3600,
        ..rules()
    });
    let n = now();
    let two_hours = token(Some(n), json!(n + 7200));
    let e = v.verify(&two_hours, n).unwrap_err();
    assert_eq!(e.code, "auth.invalid");
    assert!(e.message.contains("3600 s"), "{}", e.message);
    let half = token(Some(n), json!(n + 1800));
    assert_eq!(v.verify(&half, n), Ok("user:occ_controller".into()));
    // Remembered: still checked at the clock it is presented at.
    assert_eq!(v.verify(&half, n), Ok("user:occ_controller".into()));
    assert!(v.verify(&half, n - 60).is_err(), "issued in the future");
    assert_eq!(v.verify(&half, n + 600), Ok("user:occ_controller".into()));
    assert!(v.verify(&half, n + 1800 + 30).is_err(), "expired");
    assert_eq!(rules().max_lifetime, 86_400);
}

/// Finding 12 (algorithms): the host accepted RS384 and RS512 keys the edge refuses. Both
/// now accept exactly ES256, ES384, EdDSA and RS256, one per key (the corpus holds the same
/// keys for both); an ES384 token verifies, an RS384 or RS512 one does not.
#[test]
fn the_host_accepts_exactly_the_algorithms_the_edge_does() {
    let rsa: Value = serde_json::from_slice::<Value>(&fixture("jwks.json")).unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "test-rs256")
        .unwrap()
        .clone();
    for alg in ["RS384", "RS512"] {
        let mut key = rsa.clone();
        key["alg"] = json!(alg);
        let jwks: JwkSet = serde_json::from_value(json!({ "keys": [key] })).unwrap();
        let e = TokenVerifier::new(&jwks, rules()).unwrap_err();
        assert!(e.contains(alg) && e.contains("RS256 only"), "{alg}: {e}");
    }
    block(async {
        let (base, _service) = server("token-algorithms", 1000).await;
        let n = now();
        let claims = json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": "occ_controller", "iat": n, "exp": n + 600 });
        let es384 = signed(
            Algorithm::ES384,
            "test-es384",
            &fixture("es384.der"),
            &claims,
        );
        assert_eq!(check_as(&base, &es384).await.0, 200);
        for alg in [Algorithm::RS384, Algorithm::RS512] {
            let t = signed(alg, "test-rs256", &fixture("rs256.der"), &claims);
            let (status, body) = check_as(&base, &t).await;
            assert_eq!(
                (status, &body["error"]["code"]),
                (401, &json!("auth.invalid")),
                "{alg:?}"
            );
        }
    });
}
