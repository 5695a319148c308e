//! Finding 12 of the review (tokens and the failed-authentication limit): a token valid for
//! longer than the maximum lifetime, or issued in the future, is refused; the host accepts
//! exactly the algorithms the edge does; failed authentications are counted per IPv4
//! address and per IPv6 /64, an IPv4-mapped IPv6 address as its IPv4 address.

use crate::service::{serve_config, temp_db};
use crate::{ADMIN, block, root};
use clearance_host::api::{Peer, router};
use clearance_host::auth::{TokenRules, TokenVerifier};
use clearance_host::service::ServiceConfig;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::Arc;
use tower::ServiceExt as _;

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "clearance-test";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("host/tests/fixtures/tokens").join(name)).unwrap()
}

fn now() -> i64 {
    clearance_host::clock::now_seconds()
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

/// Finding 12 (limiter): the key failed authentications are counted against.
#[test]
fn failures_are_counted_per_ipv4_address_and_per_ipv6_64() {
    let key = |a: &str| Peer(a.parse().unwrap()).failure_key().to_string();
    assert_eq!(key("192.0.2.7"), "192.0.2.7");
    assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
    assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
    assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
    assert_eq!(key("2001:db8:1:3::1"), "2001:db8:1:3::");
    assert_eq!(key("::1"), "::");
    assert_eq!(key("fe80::1:2"), "fe80::");
}

/// GET `/v1/revision` through the router with `token`, as a connection from `peer` (the
/// accept loop puts the connection's address on each request).
async fn revision_from(app: &axum::Router, peer: &str, token: &str) -> (u16, Value) {
    let peer: IpAddr = peer.parse().unwrap();
    let req = axum::http::Request::get("/v1/revision")
        .header("authorization", format!("Bearer {token}"))
        .extension(Peer(peer))
        .body(axum::body::Body::empty())
        .unwrap();
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status().as_u16();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn guess(i: u32) -> String {
    format!("clr_{i:016x}_a-guess-at-a-service-key-of-forty-chars")
}

/// Finding 12 (limiter): a client holding an IPv6 /64 took a fresh budget of failed
/// authentications from every address of it. Its addresses now share one budget; another
/// /64 has its own; an IPv4 client seen through a dual-stack listener (`::ffff:a.b.c.d`)
/// shares the budget of its IPv4 address, and not one with every other IPv4 client (they
/// are all in `::/64`).
#[test]
fn an_ipv6_64_shares_one_budget_of_failed_authentications() {
    block(async {
        let (_base, service) = server("auth-failures-v6", 5).await;
        let app = router(service);
        for i in 0..5 {
            let (status, body) = revision_from(&app, "2001:db8:1:2::a", &guess(i)).await;
            assert_eq!(status, 401, "{body}");
        }
        // The sixth failure, from another address of the /64: past the budget; then the
        // whole /64 is refused, its credentials unchecked.
        let (status, body) = revision_from(&app, "2001:db8:1:2::b", &guess(9)).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (429, &json!("auth.rate_limited")),
            "{body}"
        );
        let (status, body) = revision_from(&app, "2001:db8:1:2:ffff:ffff:ffff:ffff", ADMIN).await;
        assert_eq!(status, 429, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("2001:db8:1:2::/64 failed"), "{message}");
        // Another /64 has its own budget.
        assert_eq!(revision_from(&app, "2001:db8:1:3::a", ADMIN).await.0, 200);

        for i in 0..5 {
            assert_eq!(
                revision_from(&app, "::ffff:10.0.0.1", &guess(i)).await.0,
                401
            );
        }
        // The sixth failure, from the same client seen as IPv4: past the budget.
        assert_eq!(revision_from(&app, "10.0.0.1", &guess(5)).await.0, 429);
        let (status, body) = revision_from(&app, "10.0.0.1", ADMIN).await;
        assert_eq!(status, 429, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("10.0.0.1 failed"),
            "{body}"
        );
        assert_eq!(revision_from(&app, "::ffff:10.0.0.2", ADMIN).await.0, 200);
        assert_eq!(revision_from(&app, "10.0.0.2", ADMIN).await.0, 200);
        assert_eq!(revision_from(&app, "::1", ADMIN).await.0, 200);
    });
}

/// Finding 12 (limiter), over real connections: on the IPv6 loopback (`::1`, whose /64 is
/// `::/64`) and through an IPv6 listener on `::ffff:127.0.0.1` (IPv4 clients seen as
/// IPv4-mapped addresses, all in `::/64` too), each client is counted as itself: a
/// throttled `::1` leaves the IPv4 clients their budgets, and a throttled IPv4 address
/// leaves the others theirs.
#[test]
fn over_ipv6_loopback_failures_are_counted_by_64_and_mapped_ipv4_by_address() {
    block(async {
        let (_base, service) = server("auth-failures-loopback-v6", 5).await;
        let v6 = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let v6_port = v6.local_addr().unwrap().port();
        tokio::spawn(clearance_host::api::serve(v6, Arc::clone(&service)));
        let mapped = tokio::net::TcpListener::bind("[::ffff:127.0.0.1]:0")
            .await
            .unwrap();
        let mapped_port = mapped.local_addr().unwrap().port();
        tokio::spawn(clearance_host::api::serve(mapped, Arc::clone(&service)));

        let get = |from: IpAddr, url: String, token: String| async move {
            let r = crate::bearer(&token)
                .local_address(from)
                .build()
                .unwrap()
                .get(url)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        };
        let loopback6: IpAddr = "::1".parse().unwrap();
        let on_v6 = format!("http://[::1]:{v6_port}/v1/revision");
        let on_mapped = format!("http://127.0.0.1:{mapped_port}/v1/revision");

        for i in 0..5 {
            assert_eq!(get(loopback6, on_v6.clone(), guess(i)).await.0, 401);
        }
        assert_eq!(get(loopback6, on_v6.clone(), guess(5)).await.0, 429);
        let (status, body) = get(loopback6, on_v6.clone(), ADMIN.into()).await;
        assert_eq!(status, 429, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("::/64 failed"), "{message}");
        // IPv4 clients, seen as `::ffff:127.0.0.x`, are not in the budget of `::/64`.
        let from = |last: u8| IpAddr::from([127, 0, 0, last]);
        assert_eq!(get(from(7), on_mapped.clone(), ADMIN.into()).await.0, 200);
        for i in 0..5 {
            assert_eq!(get(from(7), on_mapped.clone(), guess(i)).await.0, 401);
        }
        assert_eq!(get(from(7), on_mapped.clone(), guess(5)).await.0, 429);
        let (status, body) = get(from(7), on_mapped.clone(), ADMIN.into()).await;
        assert_eq!(status, 429, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("127.0.0.7 failed"), "{message}");
        assert_eq!(get(from(8), on_mapped.clone(), ADMIN.into()).await.0, 200);
    });
}
