//! Who is asking, over real HTTP on loopback: every route refuses a caller without
//! credentials or with a token that is expired, forged, for another audience or
//! unsigned; a user decides, writes and reads only as itself and at the server's clock;
//! keys act within their scope and accounts; nothing refused is written or revealed.

use super::service::{NOW, serve_config, temp_db};
use super::{ADMIN, add_key, block, client_with, root};
use clearance_host::api::ROUTES;
use clearance_host::auth::{Scope, TokenRules, TokenVerifier};
use clearance_host::routes::Callers;
use clearance_host::service::ServiceConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::Arc;

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "clearance-test";
const SERVICE_SKYWAYS: &str = "clr_5e5e5e5e5e5e5e5e_service-key-of-skyways-for-the-tests-only";
const SERVICE_BLUEAIR: &str = "clr_b1b1b1b1b1b1b1b1_service-key-of-blueair-for-the-tests-only";
const READ_SKYWAYS: &str = "clr_4e4e4e4e4e4e4e4e_read-key-of-skyways-for-the-tests-only-xx";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("host/tests/fixtures/tokens").join(name)).unwrap()
}

fn now() -> i64 {
    clearance_host::clock::now_seconds()
}

fn claims(sub: &str) -> Value {
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now(), "nbf": now() - 5, "exp": now() + 600 })
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_der(&fixture("ed25519.der"))
}

/// A valid user token, signed by the Ed25519 test key.
fn user(sub: &str) -> String {
    sign(Algorithm::EdDSA, "test-eddsa", &ed_key(), &claims(sub))
}

fn b64(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Tokens that must be refused, each with what is wrong with it.
fn bad_tokens() -> Vec<(&'static str, String)> {
    let sub = "occ_controller";
    let mut expired = claims(sub);
    expired["exp"] = json!(now() - 3600);
    let mut early = claims(sub);
    early["nbf"] = json!(now() + 3600);
    let mut other_aud = claims(sub);
    other_aud["aud"] = json!("another-service");
    let mut other_iss = claims(sub);
    other_iss["iss"] = json!("https://evil.test");
    let mut no_exp = claims(sub);
    no_exp.as_object_mut().unwrap().remove("exp");
    let forger = EncodingKey::from_ed_der(&fixture("forger-ed25519.der"));
    let none = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT", "kid": "test-eddsa" })),
        b64(&claims(sub))
    );
    // HMAC keyed with the RSA key's public modulus: a public key must never verify HMAC.
    let jwks: Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    let modulus = jwks["keys"][1]["n"].as_str().unwrap().to_string();
    let hmac = sign(
        Algorithm::HS256,
        "test-rs256",
        &EncodingKey::from_secret(modulus.as_bytes()),
        &claims(sub),
    );
    vec![
        ("malformed", "not.a.token".to_string()),
        (
            "expired",
            sign(Algorithm::EdDSA, "test-eddsa", &ed_key(), &expired),
        ),
        (
            "not yet valid",
            sign(Algorithm::EdDSA, "test-eddsa", &ed_key(), &early),
        ),
        (
            "wrong signature",
            sign(Algorithm::EdDSA, "test-eddsa", &forger, &claims(sub)),
        ),
        (
            "unknown kid",
            sign(Algorithm::EdDSA, "nobody", &ed_key(), &claims(sub)),
        ),
        (
            "wrong audience",
            sign(Algorithm::EdDSA, "test-eddsa", &ed_key(), &other_aud),
        ),
        (
            "wrong issuer",
            sign(Algorithm::EdDSA, "test-eddsa", &ed_key(), &other_iss),
        ),
        (
            "no exp",
            sign(Algorithm::EdDSA, "test-eddsa", &ed_key(), &no_exp),
        ),
        ("alg none", none),
        ("HMAC with a public key", hmac),
        (
            "a key of no store",
            "clr_0123456789abcdef_no-such-key-was-ever-created-here".into(),
        ),
    ]
}

fn config() -> ServiceConfig {
    let verifier = TokenVerifier::from_file(
        &root().join("host/tests/fixtures/tokens/jwks.json"),
        TokenRules {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            ..TokenRules::default()
        },
    )
    .unwrap();
    ServiceConfig {
        tokens: Some(Arc::new(verifier)),
        ..ServiceConfig::default()
    }
}

/// A server with user tokens configured and a service and a read key for `skyways`
/// and a service key for `blueair`.
async fn server(name: &str) -> (String, Arc<clearance_host::service::Service>) {
    let db = temp_db(name);
    let (base, service) = serve_config(&db, config()).await;
    add_key(&db, SERVICE_SKYWAYS, Scope::Service, &["skyways"]);
    add_key(&db, SERVICE_BLUEAIR, Scope::Service, &["blueair"]);
    add_key(&db, READ_SKYWAYS, Scope::Read, &["skyways"]);
    service.refresh_keys().await.unwrap();
    (base, service)
}

async fn call(c: &reqwest::Client, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let r = match (method, body) {
        ("get", _) => c.get(url).send().await.unwrap(),
        (_, Some(b)) => c.post(url).json(&b).send().await.unwrap(),
        (_, None) => c.post(url).json(&json!({})).send().await.unwrap(),
    };
    let status = r.status().as_u16();
    if url.contains("/v1/changes") && status == 200 {
        return (status, Value::Null);
    }
    (status, r.json().await.unwrap_or(Value::Null))
}

fn url(base: &str, path: &str) -> String {
    format!(
        "{base}{}",
        path.replace("{matrix}", "operations")
            .replace("{principal}", "user:occ_controller")
    )
}

#[test]
fn every_route_but_the_document_refuses_missing_and_bad_credentials() {
    block(async {
        let (base, service) = server("auth-bad").await;
        let before = service.revision();
        let anonymous = reqwest::Client::new();
        for route in ROUTES.iter().filter(|r| r.is_served(service.deployment())) {
            let u = url(&base, route.path);
            let method = route.method.as_str();
            let (status, body) = call(&anonymous, method, &u, None).await;
            // Public documents: the API's, and the keys that verify slices.
            if route.callers == Callers::Anyone {
                assert!(route.who.starts_with("anyone"), "{}", route.path);
                assert_eq!(status, 200, "{} is open", route.path);
                continue;
            }
            assert!(
                !route.who.starts_with("anyone"),
                "{} says anyone",
                route.path
            );
            assert_eq!(
                status, 401,
                "{method} {} without credentials: {body}",
                route.path
            );
            assert_eq!(body["error"]["code"], "auth.missing", "{body}");
            assert_eq!(body["allowed"], false);
            for (what, token) in bad_tokens() {
                let (status, body) = call(&client_with(&token), method, &u, None).await;
                assert_eq!(
                    status, 401,
                    "{method} {} with a token {what}: {body}",
                    route.path
                );
                assert_eq!(body["error"]["code"], "auth.invalid", "{what}: {body}");
            }
        }
        // Two Authorization headers, even both valid: refused.
        let twice = reqwest::Client::new()
            .get(format!("{base}/v1/revision"))
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("authorization", format!("Bearer {ADMIN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(twice.status().as_u16(), 401);
        let answer: Value = twice.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "auth.invalid", "{answer}");
        // A scheme other than Bearer, and a header that is not text.
        let basic = reqwest::Client::new()
            .get(format!("{base}/v1/revision"))
            .header("authorization", format!("Basic {ADMIN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status().as_u16(), 401);
        assert_eq!(
            service.revision(),
            before,
            "a refused caller wrote something"
        );
    });
}

#[test]
fn each_algorithm_of_the_jwks_verifies_and_names_its_principal() {
    let verifier = TokenVerifier::from_file(
        &root().join("host/tests/fixtures/tokens/jwks.json"),
        TokenRules {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            ..TokenRules::default()
        },
    )
    .unwrap();
    let es = EncodingKey::from_ec_der(&fixture("es256.der"));
    let rs = EncodingKey::from_rsa_der(&fixture("rs256.der"));
    for (alg, kid, key) in [
        (Algorithm::ES256, "test-es256", &es),
        (Algorithm::RS256, "test-rs256", &rs),
        (Algorithm::EdDSA, "test-eddsa", &ed_key()),
    ] {
        let token = sign(alg, kid, key, &claims("ana"));
        assert_eq!(
            verifier.verify(&token, now()),
            Ok("user:ana".to_string()),
            "{alg:?}"
        );
        // The key of one algorithm does not verify a token claiming another.
        let swapped = sign(alg, "test-eddsa", key, &claims("ana"));
        if alg != Algorithm::EdDSA {
            assert!(
                verifier.verify(&swapped, now()).is_err(),
                "{alg:?} under the EdDSA kid"
            );
        }
    }
    for (what, token) in bad_tokens() {
        assert!(
            verifier.verify(&token, now()).is_err(),
            "a token {what} was accepted"
        );
    }
    // The server's clock decides expiry: a token valid now is expired an hour later, also
    // once it is remembered as verified.
    let token = user("ana");
    assert!(verifier.verify(&token, now()).is_ok());
    assert!(verifier.verify(&token, now()).is_ok());
    assert_eq!(
        verifier
            .verify(&token, now() + 3600)
            .map_err(|e| e.code.as_str()),
        Err("auth.invalid")
    );
    assert!(verifier.verify(&token, now() + 3600).is_err());
    // A JWKS with a symmetric key, or an Ed25519 key of the wrong length, is refused.
    let oct =
        serde_json::from_value(json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0", "kid": "s" }] }))
            .unwrap();
    assert!(
        TokenVerifier::new(
            &oct,
            TokenRules {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                ..TokenRules::default()
            }
        )
        .is_err()
    );
    let short = serde_json::from_value(
        json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short" }] }),
    )
    .unwrap();
    assert!(
        TokenVerifier::new(
            &short,
            TokenRules {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                ..TokenRules::default()
            }
        )
        .is_err()
    );
}

fn check_body(principal: &str, now: bool) -> Value {
    let mut b = json!({ "principal": principal, "action": "view", "resource": "event:aog_lhr" });
    if now {
        b["now"] = json!(NOW);
    }
    b
}

/// A key may leave `now` out, as a client with no clock of its own would: its request is
/// decided at the server's clock, exactly as a user's is (and it may still give one).
#[test]
fn a_key_without_now_is_decided_at_the_servers_clock() {
    block(async {
        let (base, _service) = server("auth-key-clock").await;
        let me = client_with(&user("occ_controller"));
        let key = client_with(SERVICE_SKYWAYS);
        for (path, body) in [
            ("/v1/check", check_body("user:occ_controller", false)),
            ("/v1/explain", check_body("user:occ_controller", false)),
            (
                "/v1/allowed-actions",
                json!({ "principal": "user:occ_controller", "resource": "event:aog_lhr" }),
            ),
            (
                "/v1/resources",
                json!({ "principal": "user:occ_controller", "action": "view", "type": "event" }),
            ),
            (
                "/v1/check/batch",
                json!({ "requests": [check_body("user:occ_controller", false)] }),
            ),
        ] {
            let (by_user, user_answer) =
                call(&me, "post", &format!("{base}{path}"), Some(body.clone())).await;
            let (by_key, key_answer) =
                call(&key, "post", &format!("{base}{path}"), Some(body)).await;
            assert_eq!((by_user, by_key), (200, 200), "{path}: {key_answer}");
            assert_eq!(user_answer, key_answer, "{path}");
        }
        // Who may act on a resource is for keys only: without `now`, at the server's clock.
        let (status, answer) = call(
            &key,
            "post",
            &format!("{base}/v1/principals"),
            Some(json!({ "resource": "event:aog_lhr", "action": "view" })),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        // A key's own `now` is still what it is decided at.
        let (status, answer) = call(
            &key,
            "post",
            &format!("{base}/v1/check"),
            Some(check_body("user:occ_controller", true)),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    });
}

#[test]
fn a_user_token_acts_only_as_itself_and_at_the_servers_clock() {
    block(async {
        let (base, service) = server("auth-user").await;
        let me = client_with(&user("occ_controller"));
        // Its own decision, at the server's clock.
        let (status, body) = call(
            &me,
            "post",
            &format!("{base}/v1/check"),
            Some(check_body("user:occ_controller", false)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["allowed"].is_boolean());
        // A `now` of its own is refused.
        let (status, body) = call(
            &me,
            "post",
            &format!("{base}/v1/check"),
            Some(check_body("user:occ_controller", true)),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("request.now_not_allowed"))
        );
        // Deciding, listing and explaining for another principal are refused.
        for (path, body) in [
            ("/v1/check", check_body("user:aeroserv_tech", false)),
            ("/v1/explain", check_body("user:aeroserv_tech", false)),
            (
                "/v1/allowed-actions",
                json!({ "principal": "user:aeroserv_tech", "resource": "event:aog_lhr" }),
            ),
            (
                "/v1/resources",
                json!({ "principal": "user:aeroserv_tech", "action": "view", "type": "event" }),
            ),
            (
                "/v1/check/batch",
                json!({ "requests": [check_body("user:occ_controller", false), check_body("user:aeroserv_tech", false)] }),
            ),
            (
                "/v1/principals",
                json!({ "resource": "event:aog_lhr", "action": "view", "now": NOW }),
            ),
            ("/v1/policy/validate", json!({ "sources": [] })),
            ("/v1/policy/reload", json!({})),
        ] {
            let (status, answer) = call(&me, "post", &format!("{base}{path}"), Some(body)).await;
            assert_eq!(status, 403, "{path}: {answer}");
            assert_eq!(answer["error"]["code"], "auth.forbidden", "{path}");
        }
        // An admin route refuses a caller that is not an admin before it reads the body:
        // what the body holds (here, not a policy body at all) tells it nothing.
        for path in ["/v1/policy/validate", "/v1/policy/reload"] {
            let (status, answer) = call(
                &me,
                "post",
                &format!("{base}{path}"),
                Some(json!({ "sources": 7 })),
            )
            .await;
            assert_eq!(
                (status, answer["error"]["code"].as_str()),
                (403, Some("auth.forbidden")),
                "{path}: {answer}"
            );
        }
        // Slices: its own, not another's; the facts are not for users.
        assert_eq!(
            call(
                &me,
                "get",
                &format!("{base}/v1/slice/user:occ_controller"),
                None
            )
            .await
            .0,
            200
        );
        assert_eq!(
            call(
                &me,
                "get",
                &format!("{base}/v1/slice/user:aeroserv_tech"),
                None
            )
            .await
            .0,
            403
        );
        assert_eq!(
            call(&me, "get", &format!("{base}/v1/facts"), None).await.0,
            403
        );
        // Writes: as another author, or with a `now`, are refused and store nothing.
        let before = service.revision();
        let deltas = super::create_event("auth_probe");
        let (status, answer) = call(
            &me,
            "post",
            &format!("{base}/v1/facts"),
            Some(json!({ "author": "user:aog_desk", "deltas": deltas })),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (403, Some("auth.forbidden")),
            "{answer}"
        );
        let (status, answer) = call(
            &me,
            "post",
            &format!("{base}/v1/facts"),
            Some(json!({ "deltas": deltas, "now": NOW })),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("request.now_not_allowed")),
            "{answer}"
        );
        // A parity token about another principal would tell whether it is allowed.
        let probe = json!({ "deltas": deltas, "parity": {
            "module_hash": service.module_hash(), "policy_hash": service.policy_hash(), "revision": 0,
            "request": check_body("user:aeroserv_tech", true), "allowed": true } });
        let (status, answer) = call(&me, "post", &format!("{base}/v1/facts"), Some(probe)).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (403, Some("auth.forbidden")),
            "{answer}"
        );
        assert_eq!(service.revision(), before, "a refused write was stored");
        let facts = call(
            &client_with(ADMIN),
            "get",
            &format!("{base}/v1/facts"),
            None,
        )
        .await
        .1;
        assert!(
            !facts["entities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["id"] == "auth_probe"),
            "a refused write is in the facts"
        );
        // A token for a principal that does not exist is no caller.
        let ghost = client_with(&user("nobody_here"));
        assert_eq!(
            call(&ghost, "get", &format!("{base}/v1/revision"), None)
                .await
                .0,
            401
        );
    });
}

#[test]
fn keys_act_within_their_scope_and_accounts() {
    block(async {
        let (base, service) = server("auth-keys").await;
        let skyways = client_with(SERVICE_SKYWAYS);
        let blueair = client_with(SERVICE_BLUEAIR);
        let read = client_with(READ_SKYWAYS);
        // A service key decides for its accounts' principals (with a `now` of its own).
        let ok = call(
            &skyways,
            "post",
            &format!("{base}/v1/check"),
            Some(check_body("user:occ_controller", true)),
        )
        .await;
        assert_eq!(ok.0, 200, "{}", ok.1);
        // Not for another account's, nor their slice or facts.
        let (status, answer) = call(
            &blueair,
            "post",
            &format!("{base}/v1/check"),
            Some(check_body("user:occ_controller", true)),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (403, Some("auth.forbidden"))
        );
        assert_eq!(
            call(
                &blueair,
                "get",
                &format!("{base}/v1/slice/user:occ_controller"),
                None
            )
            .await
            .0,
            403
        );
        assert_eq!(
            call(
                &blueair,
                "get",
                &format!("{base}/v1/facts?account=skyways"),
                None
            )
            .await
            .0,
            403
        );
        assert_eq!(
            call(&blueair, "get", &format!("{base}/v1/facts"), None)
                .await
                .0,
            403
        );
        // Its own account's facts hold that account only.
        let (status, facts) = call(
            &skyways,
            "get",
            &format!("{base}/v1/facts?account=skyways"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        let entities = facts["entities"].as_array().unwrap();
        assert!(!entities.is_empty());
        assert!(
            entities
                .iter()
                .all(|e| e["account"] == "skyways" || e["id"] == "skyways"),
            "another account's entity leaked"
        );
        // Policy routes need an admin key.
        assert_eq!(
            call(
                &skyways,
                "post",
                &format!("{base}/v1/policy/reload"),
                Some(json!({}))
            )
            .await
            .0,
            403
        );
        // A read key decides, and does nothing else.
        assert_eq!(
            call(
                &read,
                "post",
                &format!("{base}/v1/check"),
                Some(check_body("user:occ_controller", true))
            )
            .await
            .0,
            200
        );
        assert_eq!(
            call(
                &read,
                "get",
                &format!("{base}/v1/slice/user:occ_controller"),
                None
            )
            .await
            .0,
            403
        );
        assert_eq!(
            call(&read, "get", &format!("{base}/v1/changes"), None)
                .await
                .0,
            403
        );
        let before = service.revision();
        let w = json!({ "author": "user:occ_controller", "deltas": super::create_event("by_read_key") });
        assert_eq!(
            call(&read, "post", &format!("{base}/v1/facts"), Some(w))
                .await
                .0,
            403
        );
        // A service key writes on behalf of an author of its account, recorded as such;
        // for an author of another account it is refused.
        let w = json!({ "author": "user:occ_controller", "deltas": super::create_event("by_blueair_key") });
        assert_eq!(
            call(&blueair, "post", &format!("{base}/v1/facts"), Some(w))
                .await
                .0,
            403
        );
        assert_eq!(service.revision(), before, "a refused write was stored");
        let w = json!({ "author": "user:occ_controller", "deltas": super::create_event("by_service_key") });
        let (status, answer) = call(&skyways, "post", &format!("{base}/v1/facts"), Some(w)).await;
        assert_eq!(status, 200, "{answer}");
        let revision = answer["revision"].as_u64().unwrap();
        let mut feed = client_with(ADMIN)
            .get(format!("{base}/v1/changes?since={}", revision - 1))
            .send()
            .await
            .unwrap();
        let chunk = String::from_utf8(feed.chunk().await.unwrap().unwrap().to_vec()).unwrap();
        assert!(
            chunk.contains("\"via\":\"key:5e5e5e5e5e5e5e5e\""),
            "{chunk}"
        );
        assert!(
            chunk.contains("\"author\":\"user:occ_controller\""),
            "{chunk}"
        );
        // A write of nothing is refused, not stored as a revision.
        let (status, answer) = call(
            &skyways,
            "post",
            &format!("{base}/v1/facts"),
            Some(json!({ "author": "user:occ_controller", "deltas": [] })),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("request.empty"))
        );
        // A write with a `now` needs an admin key.
        let w = json!({ "author": "user:occ_controller", "deltas": super::create_event("dated"), "now": NOW });
        assert_eq!(
            call(
                &skyways,
                "post",
                &format!("{base}/v1/facts"),
                Some(w.clone())
            )
            .await
            .0,
            400
        );
        assert_eq!(
            call(
                &client_with(ADMIN),
                "post",
                &format!("{base}/v1/facts"),
                Some(w)
            )
            .await
            .0,
            200
        );
    });
}

#[test]
fn a_caller_past_its_rate_is_told_to_wait_and_others_are_not() {
    block(async {
        let db = temp_db("auth-rate");
        let config = ServiceConfig {
            rate_limit: std::num::NonZeroU32::new(5),
            ..config()
        };
        let (base, service) = serve_config(&db, config).await;
        add_key(&db, SERVICE_SKYWAYS, Scope::Service, &["skyways"]);
        service.refresh_keys().await.unwrap();
        let busy = client_with(SERVICE_SKYWAYS);
        let mut limited = None;
        for _ in 0..20 {
            let r = busy
                .get(format!("{base}/v1/revision"))
                .send()
                .await
                .unwrap();
            if r.status().as_u16() == 429 {
                limited = Some(r);
                break;
            }
        }
        let r = limited.expect("20 requests at once at a rate of 5 a second were all served");
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait >= 1);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "auth.rate_limited");
        // Another caller has a budget of its own.
        let other = client_with(ADMIN);
        assert_eq!(
            call(&other, "get", &format!("{base}/v1/revision"), None)
                .await
                .0,
            200
        );
    });
}

/// A client sending `token` from the loopback address `from` (127.0.0.0/8 all reach the
/// server on 127.0.0.1).
fn client_from(token: &str, from: [u8; 4]) -> reqwest::Client {
    super::bearer(token)
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap()
}

#[test]
fn an_address_failing_to_authenticate_is_refused_before_its_credentials_are_checked() {
    block(async {
        let db = temp_db("auth-failures");
        let config = ServiceConfig {
            auth_failure_limit: std::num::NonZeroU32::new(5),
            ..config()
        };
        let (base, _service) = serve_config(&db, config).await;
        let revision = format!("{base}/v1/revision");
        // Guesses at a key and forged tokens from one address: the first five are told
        // the credential is not valid, then every answer is 429 with a wait.
        let guesses: Vec<String> = (0..4)
            .map(|i| format!("clr_{i:016x}_a-guess-at-a-service-key-of-forty-chars"))
            .chain(bad_tokens().into_iter().map(|(_, t)| t))
            .take(10)
            .collect();
        let mut statuses = Vec::new();
        for guess in &guesses {
            let (status, body) =
                call(&client_from(guess, [127, 0, 0, 7]), "get", &revision, None).await;
            if status == 429 {
                assert_eq!(body["error"]["code"], "auth.rate_limited", "{body}");
            } else {
                assert_eq!(body["error"]["code"], "auth.invalid", "{body}");
            }
            statuses.push(status);
        }
        assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
        assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
        // While it waits, the address is refused whatever it sends, a good key included:
        // nothing more is learnt from it about which credentials are valid.
        let r = client_from(ADMIN, [127, 0, 0, 7])
            .get(&revision)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 429);
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "retry-after {wait}");
        // Another address has its own budget, and missing credentials spend none of it.
        for _ in 0..8 {
            let (status, body) = call(&reqwest::Client::new(), "get", &revision, None).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("auth.missing"))
            );
        }
        let (status, body) =
            call(&client_from(ADMIN, [127, 0, 0, 8]), "get", &revision, None).await;
        assert_eq!(status, 200, "{body}");
    });
}

#[test]
fn a_revoked_key_stops_working() {
    block(async {
        let db = temp_db("auth-revoke");
        let (base, service) = serve_config(&db, config()).await;
        add_key(&db, SERVICE_SKYWAYS, Scope::Service, &["skyways"]);
        service.refresh_keys().await.unwrap();
        let c = client_with(SERVICE_SKYWAYS);
        assert_eq!(
            call(&c, "get", &format!("{base}/v1/revision"), None)
                .await
                .0,
            200
        );
        // A feed opened with the key before it is revoked.
        let mut feed = c.get(format!("{base}/v1/changes")).send().await.unwrap();
        assert_eq!(feed.status().as_u16(), 200);
        {
            let mut store = clearance_host::store::SqliteFile::open(&db).unwrap();
            assert!(store.revoke_key("5e5e5e5e5e5e5e5e", now()).unwrap());
        }
        // The periodic refresh picks the revocation up within its interval.
        let mut status = 200;
        for _ in 0..60 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            status = call(&c, "get", &format!("{base}/v1/revision"), None)
                .await
                .0;
            if status == 401 {
                break;
            }
        }
        assert_eq!(status, 401, "a revoked key still works");
        // The open feed ends rather than deliver the next change of its account.
        add_key(&db, ADMIN, Scope::Admin, &[]);
        service.refresh_keys().await.unwrap();
        let w = json!({ "author": "user:occ_controller", "deltas": super::create_event("after_revoke"), "now": NOW });
        assert_eq!(
            call(
                &client_with(ADMIN),
                "post",
                &format!("{base}/v1/facts"),
                Some(w)
            )
            .await
            .0,
            200
        );
        let mut text = String::new();
        while let Ok(Some(chunk)) = feed.chunk().await {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert!(text.contains("auth.invalid"), "{text}");
        assert!(
            !text.contains("after_revoke"),
            "a revoked key's feed delivered a change: {text}"
        );
    });
}

#[test]
fn a_user_follows_the_changes_of_its_own_account_only() {
    block(async {
        let (base, _service) = server("auth-feed").await;
        let admin = client_with(ADMIN);
        let start = call(&admin, "get", &format!("{base}/v1/revision"), None)
            .await
            .1["revision"]
            .as_u64()
            .unwrap();
        // A change in blueair, then one in skyways.
        let add = |rel: &str, s: &str| json!({ "op": "add_tuple", "tuple": { "resource": "event:blue_probe", "relation": rel, "subject": s } });
        let blue = json!({ "author": "user:blue_controller", "deltas": [
            { "op": "add_entity", "entity": { "type": "event", "id": "blue_probe", "account": "blueair", "attrs": { "ends_at": "2026-05-03T00:00:00Z" } } },
            add("station", "station:ams"),
            add("owner_org", "organization:blueair_occ"),
            add("created_by", "user:blue_controller"),
        ], "now": NOW });
        let (s1, a1) = call(&admin, "post", &format!("{base}/v1/facts"), Some(blue)).await;
        let mut deltas = super::create_event("feed_probe");
        deltas[0]["entity"]["attrs"]["title"] = json!("a title no rule reads");
        let sky = json!({ "author": "user:occ_controller", "deltas": deltas, "now": NOW });
        let (s2, a2) = call(&admin, "post", &format!("{base}/v1/facts"), Some(sky)).await;
        assert_eq!((s1, s2), (200, 200), "{a1} {a2}");
        let mut feed = client_with(&user("occ_controller"))
            .get(format!("{base}/v1/changes?since={start}"))
            .send()
            .await
            .unwrap();
        assert_eq!(feed.status().as_u16(), 200);
        let text = String::from_utf8(feed.chunk().await.unwrap().unwrap().to_vec()).unwrap();
        assert!(
            text.contains("feed_probe"),
            "its own account's change is missing: {text}"
        );
        assert!(
            !text.contains("blue_probe"),
            "another account's change was revealed: {text}"
        );
        // A user is given the deltas cut to its slice, not the values a minimal slice
        // leaves out (a title no rule reads).
        assert!(
            text.contains("\"deltas\"") && !text.contains("a title no rule reads"),
            "the feed gave a user what its slice leaves out: {text}"
        );
        // An admin follows both.
        let mut all = admin
            .get(format!("{base}/v1/changes?since={start}"))
            .send()
            .await
            .unwrap();
        let mut seen = String::new();
        while !seen.contains("feed_probe") {
            let chunk = all.chunk().await.unwrap().unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert!(seen.contains("blue_probe"), "{seen}");
    });
}

/// The change events of an SSE text: `(revision, data)` of each `change`.
fn change_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|block| block.lines().any(|l| l == "event: change"))
        .filter_map(|block| {
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            serde_json::from_str(&data).ok()
        })
        .collect()
}

/// A user's slice followed by the deltas of its change feed is the slice the host cuts
/// afterwards: each change of its account is applied to the slice as the feed gives it
/// (cut to what the slice keeps), another account's change is not given, and a change
/// that cannot be followed so says `refetch`.
#[test]
fn a_slice_followed_by_its_change_feed_is_the_slice_after() {
    block(async {
        let (base, _service) = server("auth-follow").await;
        let admin = client_with(ADMIN);
        let me = client_with(&user("occ_controller"));
        let slice_of = |c: reqwest::Client| {
            let base = base.clone();
            async move {
                let (_, signed) = call(
                    &c,
                    "get",
                    &format!("{base}/v1/slice/user:occ_controller"),
                    None,
                )
                .await;
                let slice: Value = serde_json::from_str(signed["slice"].as_str().unwrap()).unwrap();
                let facts: clearance_core::FactsJson =
                    serde_json::from_value(slice["facts"].clone()).unwrap();
                (
                    slice["revision"].as_u64().unwrap(),
                    clearance_core::Facts::from_doc(facts).unwrap(),
                )
            }
        };
        let (start, mut mine) = slice_of(me.clone()).await;
        let tuple = |op: &str, r: &str, rel: &str, s: &str| json!({ "op": op, "tuple": { "resource": r, "relation": rel, "subject": s } });
        let mut created = super::create_event("follow_probe");
        created[0]["entity"]["attrs"]["title"] = json!("a title no rule reads");
        let writes = [
            ("user:occ_controller", created),
            (
                "user:occ_controller",
                json!([{ "op": "set_attr", "entity": "event:follow_probe", "attr": "title", "value": "another title" }]),
            ),
            (
                "user:occ_controller",
                json!([tuple(
                    "remove_tuple",
                    "event:follow_probe",
                    "assigned",
                    "organization:skyways_lhr_mx"
                )]),
            ),
            (
                "user:occ_controller",
                json!([{ "op": "set_attr", "entity": "event:follow_probe", "attr": "ends_at", "value": "2026-05-04T00:00:00Z" }]),
            ),
            (
                "user:blue_controller",
                json!([{ "op": "set_attr", "entity": "event:blue_probe_none", "attr": "title", "value": "x" }]),
            ),
            (
                "user:occ_controller",
                json!([tuple(
                    "add_tuple",
                    "event:follow_probe",
                    "assigned",
                    "organization:skyways_lhr_mx"
                )]),
            ),
        ];
        let mut last = start;
        for (author, deltas) in writes {
            let body = json!({ "author": author, "deltas": deltas, "now": NOW });
            let (status, answer) =
                call(&admin, "post", &format!("{base}/v1/facts"), Some(body)).await;
            if author == "user:occ_controller" {
                assert_eq!(status, 200, "{answer}");
                last = answer["revision"].as_u64().unwrap();
            }
        }
        let mut feed = me
            .get(format!("{base}/v1/changes?since={start}"))
            .send()
            .await
            .unwrap();
        assert_eq!(feed.status().as_u16(), 200);
        let mut text = String::new();
        while !text.contains(&format!("id: {last}\n")) {
            let chunk = feed.chunk().await.unwrap().unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        let events = change_events(&text);
        assert_eq!(events.len(), 5, "{text}");
        assert!(
            !text.contains("a title no rule reads") && !text.contains("another title"),
            "{text}"
        );
        for e in &events {
            assert!(e.get("refetch").is_none(), "{e}");
            let deltas: Vec<clearance_core::Delta> =
                serde_json::from_value(e["deltas"].clone()).unwrap();
            mine.extend(&deltas).unwrap();
            mine.revision = e["revision"].as_u64().unwrap();
        }
        let (now, want) = slice_of(me.clone()).await;
        assert_eq!(now, last);
        assert_eq!(mine, want, "the followed slice against the slice cut now");
        // A policy change cannot be followed by deltas.
        let (status, answer) = call(
            &admin,
            "post",
            &format!("{base}/v1/policy/reload"),
            Some(json!({})),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let reloaded = answer["revision"].as_u64().unwrap();
        while !text.contains(&format!("id: {reloaded}\n")) {
            let chunk = feed.chunk().await.unwrap().unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        let policy = change_events(&text).pop().unwrap();
        assert_eq!(policy["refetch"], "the policy changed", "{policy}");
        assert!(policy.get("deltas").is_none(), "{policy}");
    });
}

/// A user reads nothing for itself until it passes its gates at the server's clock: an
/// invited user who has not accepted and a deactivated one get no slice, no matrix and
/// no change feed, and an open feed ends once its user is deactivated.
#[test]
fn a_user_failing_its_gates_reads_nothing() {
    block(async {
        let (base, _service) = server("auth-gates").await;
        for (who, code) in [
            ("new_planner", "gate.invitation_accepted"),
            ("former_controller", "gate.active"),
        ] {
            let c = client_with(&user(who));
            for path in [
                format!("/v1/slice/user:{who}"),
                "/v1/matrix/operations?account=skyways".to_string(),
                "/v1/changes".to_string(),
            ] {
                let (status, answer) = call(&c, "get", &format!("{base}{path}"), None).await;
                assert_eq!(status, 403, "{who} {path}: {answer}");
                assert_eq!(answer["error"]["code"], code, "{who} {path}: {answer}");
                assert!(answer.get("facts").is_none() && answer.get("roles").is_none());
            }
        }
        // Passing its gates, the same user reads; deactivated, its open feed ends.
        let admin = client_with(ADMIN);
        let c = client_with(&user("a_crew"));
        let slice = call(&c, "get", &format!("{base}/v1/slice/user:a_crew"), None).await;
        assert_eq!(slice.0, 200, "{}", slice.1);
        let mut feed = c.get(format!("{base}/v1/changes")).send().await.unwrap();
        assert_eq!(feed.status().as_u16(), 200);
        let off = json!({ "author": "user:a_accountable_manager", "now": NOW, "deltas": [
            { "op": "set_attr", "entity": "user:a_crew", "attr": "status", "value": "deactivated" } ] });
        let (status, answer) = call(&admin, "post", &format!("{base}/v1/facts"), Some(off)).await;
        assert_eq!(status, 200, "{answer}");
        let mut seen = String::new();
        while let Some(chunk) =
            tokio::time::timeout(std::time::Duration::from_secs(10), feed.chunk())
                .await
                .expect("the feed neither ended nor sent anything")
                .unwrap()
        {
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert!(seen.contains("gate.active"), "{seen}");
        assert!(
            !seen.contains("\"revision\""),
            "a change was sent to a deactivated user: {seen}"
        );
    });
}

/// One caller cannot take every place on the change feed: past its own limit it is
/// told so (429), while another caller still follows, and a closed feed frees its place.
#[test]
fn one_caller_holds_a_bounded_number_of_feeds() {
    block(async {
        let db = temp_db("auth-feeds");
        let (base, _service) = serve_config(
            &db,
            ServiceConfig {
                max_feeds_per_caller: 2,
                ..config()
            },
        )
        .await;
        let me = client_with(&user("occ_controller"));
        let open = |c: reqwest::Client| {
            let url = format!("{base}/v1/changes");
            async move { c.get(url).send().await.unwrap() }
        };
        let first = open(me.clone()).await;
        let second = open(me.clone()).await;
        assert_eq!(
            (first.status().as_u16(), second.status().as_u16()),
            (200, 200)
        );
        let third = open(me.clone()).await;
        assert_eq!(third.status().as_u16(), 429);
        let answer: Value = third.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "feed.too_many", "{answer}");
        let other = open(client_with(&user("aog_desk"))).await;
        assert_eq!(
            other.status().as_u16(),
            200,
            "another caller is not held up"
        );
        drop(first);
        // The server sees the closed stream at its next write at the latest (a keep-alive
        // every 15 s); ask until then.
        let mut again = open(me.clone()).await;
        for _ in 0..400 {
            if again.status().as_u16() == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            again = open(me.clone()).await;
        }
        assert_eq!(
            again.status().as_u16(),
            200,
            "a closed feed's place is given back"
        );
        drop(second);
    });
}

/// A route of the caller matrix: method, path, the body a user sends, the body a key
/// sends, whether the user itself may call it, whether its account's service key may.
type MatrixRoute = (
    &'static str,
    String,
    Option<Value>,
    Option<Value>,
    bool,
    bool,
);

/// Every route against the callers that must be refused and the one that may ask: a
/// user of another account, a user acting as another, a service key of another account,
/// and the right user or key. Each refusal is a 403 `auth.forbidden` that reveals
/// nothing, and none of them writes anything.
#[test]
fn every_route_refuses_the_wrong_caller_and_answers_the_right_one() {
    block(async {
        let (base, service) = server("auth-matrix").await;
        let me = "user:occ_controller";
        let own = client_with(&user("occ_controller"));
        let impersonator = client_with(&user("aeroserv_tech"));
        let stranger = client_with(&user("blue_controller"));
        let other_key = client_with(SERVICE_BLUEAIR);
        let right_key = client_with(SERVICE_SKYWAYS);
        let request = |now: bool| check_body(me, now);
        // (method, path, body for a user, body for a key, user may, key may)
        let routes: Vec<MatrixRoute> = vec![
            (
                "post",
                "/v1/check".into(),
                Some(request(false)),
                Some(request(true)),
                true,
                true,
            ),
            (
                "post",
                "/v1/check/batch".into(),
                Some(json!({ "requests": [request(false)] })),
                Some(json!({ "requests": [request(true)] })),
                true,
                true,
            ),
            (
                "post",
                "/v1/allowed-actions".into(),
                Some(json!({ "principal": me, "resource": "event:aog_lhr" })),
                Some(json!({ "principal": me, "resource": "event:aog_lhr", "now": NOW })),
                true,
                true,
            ),
            (
                "post",
                "/v1/resources".into(),
                Some(json!({ "principal": me, "action": "view", "type": "event" })),
                Some(json!({ "principal": me, "action": "view", "type": "event", "now": NOW })),
                true,
                true,
            ),
            (
                "post",
                "/v1/principals".into(),
                Some(json!({ "resource": "event:aog_lhr", "action": "view", "now": NOW })),
                Some(json!({ "resource": "event:aog_lhr", "action": "view", "now": NOW })),
                false,
                true,
            ),
            (
                "post",
                "/v1/explain".into(),
                Some(request(false)),
                Some(request(true)),
                true,
                true,
            ),
            ("get", format!("/v1/slice/{me}"), None, None, true, true),
            (
                "get",
                "/v1/facts?account=skyways".into(),
                None,
                None,
                false,
                true,
            ),
            (
                "post",
                "/v1/facts".into(),
                Some(json!({ "author": me, "deltas": super::create_event("matrix_probe") })),
                Some(json!({ "author": me, "deltas": super::create_event("matrix_probe") })),
                true,
                true,
            ),
            (
                "post",
                "/v1/policy/validate".into(),
                Some(json!({ "sources": [] })),
                Some(json!({ "sources": [] })),
                false,
                false,
            ),
            (
                "post",
                "/v1/policy/reload".into(),
                Some(json!({})),
                Some(json!({})),
                false,
                false,
            ),
        ];
        let before = service.revision();
        for (method, path, user_body, key_body, user_may, key_may) in &routes {
            let url = format!("{base}{path}");
            let wrong = [
                ("a user acting as another", &impersonator, user_body, true),
                ("a user of another account", &stranger, user_body, true),
                (
                    "a service key of another account",
                    &other_key,
                    key_body,
                    true,
                ),
                (
                    "the right user, where users may not",
                    &own,
                    user_body,
                    !user_may,
                ),
                (
                    "the right key, where service keys may not",
                    &right_key,
                    key_body,
                    !key_may,
                ),
            ];
            for (who, client, body, refused) in wrong {
                if !refused {
                    continue;
                }
                let (status, answer) = call(client, method, &url, body.clone()).await;
                assert_eq!(status, 403, "{method} {path} by {who}: {answer}");
                assert_eq!(
                    answer["error"]["code"], "auth.forbidden",
                    "{method} {path} by {who}: {answer}"
                );
                assert_eq!(answer["allowed"], false);
                let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
                assert_eq!(
                    keys,
                    ["allowed", "error"],
                    "{method} {path} by {who} reveals more: {answer}"
                );
            }
        }
        assert_eq!(service.revision(), before, "a refused caller wrote");
        // The right callers are answered (a write by each, so two revisions).
        for (method, path, user_body, key_body, user_may, key_may) in &routes {
            let url = format!("{base}{path}");
            for (who, client, body, may) in [
                ("the user itself", &own, user_body, user_may),
                ("its account's key", &right_key, key_body, key_may),
            ] {
                if !may {
                    continue;
                }
                let mut body = body.clone();
                if let Some(b) = body.as_mut().filter(|_| path == "/v1/facts") {
                    let id = if who == "the user itself" {
                        "matrix_user"
                    } else {
                        "matrix_key"
                    };
                    b["deltas"] = super::create_event(id);
                }
                let (status, answer) = call(client, method, &url, body).await;
                assert_eq!(status, 200, "{method} {path} by {who}: {answer}");
            }
        }
        assert_eq!(service.revision(), before + 2);
    });
}

/// `serve --demo`: an admin key made and printed once, a token issuer for the principals
/// of the facts whose tokens act like any user token, and the demo's dated clock.
#[test]
fn the_demo_issues_tokens_that_act_as_their_user_at_the_demo_time() {
    let dir = super::scratch("demo");
    let server =
        super::faults::start(&dir.join("facts.db"), &["--demo", "--demo-time", NOW]).unwrap();
    let log = server.log.lock().unwrap().clone();
    let key = log
        .split("created an admin key (shown once): ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .next()
        })
        .expect("the demo prints its admin key")
        .to_string();
    let base = server.base.clone();
    block(async {
        let admin = client_with(&key);
        assert_eq!(
            call(&admin, "get", &format!("{base}/v1/facts"), None)
                .await
                .0,
            200
        );
        let anonymous = reqwest::Client::new();
        let (status, answer) = call(
            &anonymous,
            "post",
            &format!("{base}/demo/token"),
            Some(json!({ "principal": "user:aeroserv_tech" })),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let tech = client_with(answer["token"].as_str().unwrap());
        // The event ended long before today but not at the demo's time: the server's
        // clock is the demo's.
        let (status, d) = call(
            &tech,
            "post",
            &format!("{base}/v1/check"),
            Some(check_body("user:aeroserv_tech", false)),
        )
        .await;
        assert_eq!((status, d["allowed"].as_bool()), (200, Some(true)), "{d}");
        assert_eq!(
            call(
                &tech,
                "get",
                &format!("{base}/v1/slice/user:occ_controller"),
                None
            )
            .await
            .0,
            403
        );
        // No token for what is not a principal of the facts.
        let (status, _) = call(
            &anonymous,
            "post",
            &format!("{base}/demo/token"),
            Some(json!({ "principal": "account:skyways" })),
        )
        .await;
        assert_eq!(status, 404);
    });
    drop(server);
    // Without --demo there is no issuer.
    let plain = super::faults::start(&dir.join("facts.db"), &[]).unwrap();
    block(async {
        let (status, _) = call(
            &reqwest::Client::new(),
            "post",
            &format!("{}/demo/token", plain.base),
            Some(json!({ "principal": "user:aeroserv_tech" })),
        )
        .await;
        assert_eq!(status, 404);
    });
    drop(plain);
    let _ = std::fs::remove_dir_all(&dir);
}
