//! User tokens from an OpenID Connect provider (`serve --oidc-issuer`), against a local
//! issuer served here over TLS with a throwaway CA: its keys are found by discovery; a
//! key rotated in is accepted without a restart; a key withdrawn verifies nothing more,
//! even for a token already accepted; tokens naming made-up keys make the host fetch the
//! set at most once per its least interval; a set the provider marks as short-lived is
//! fetched again unasked; a host that cannot trust the provider refuses every user token
//! and still serves its keys.

use crate::faults::start_in;
use crate::tls::{Ca, ca, leaf};
use crate::{ADMIN, add_key, block, root, scratch};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clearance_host::auth::Scope;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AUDIENCE: &str = "clearance-oidc-test";

/// A signing key of the issuer: Ed25519 from 32 bytes named by `kid`.
struct Key {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn key(kid: &str) -> Key {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use sha2::Digest;
    let seed: [u8; 32] = sha2::Sha256::digest(kid.as_bytes()).into();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let der = signing.to_pkcs8_der().unwrap();
    Key {
        kid: kid.to_string(),
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        jwk: json!({
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes()),
        }),
    }
}

/// What the issuer publishes, and how often its key set was asked for.
#[derive(Default)]
struct Published {
    keys: Vec<Value>,
    max_age: Option<u64>,
    fetches: usize,
}

/// An OpenID Connect issuer on a loopback port, over TLS with a certificate of `ca`.
struct Issuer {
    url: String,
    published: Arc<Mutex<Published>>,
    _runtime: tokio::runtime::Runtime,
}

impl Issuer {
    fn start(ca: &Ca, dir: &Path) -> Issuer {
        use axum::routing::get;
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::service::TowerToHyperService;
        let (cert, key) = leaf(ca);
        std::fs::write(dir.join("issuer-cert.pem"), cert).unwrap();
        std::fs::write(dir.join("issuer-key.pem"), key).unwrap();
        let tls = clearance_host::tls::Tls::from_files(
            &dir.join("issuer-cert.pem"),
            &dir.join("issuer-key.pem"),
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let published = Arc::new(Mutex::new(Published::default()));
        let (p, issuer) = (Arc::clone(&published), url.clone());
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let issuer = issuer.clone();
                    async move {
                        axum::Json(json!({
                            "issuer": issuer,
                            "jwks_uri": format!("{issuer}/keys"),
                            "id_token_signing_alg_values_supported": ["EdDSA"],
                        }))
                    }
                }),
            )
            .route(
                "/keys",
                get(move || {
                    let p = Arc::clone(&p);
                    async move {
                        let mut p = p.lock().unwrap();
                        p.fetches += 1;
                        let cache = p
                            .max_age
                            .map_or("no-store".to_string(), |s| format!("public, max-age={s}"));
                        (
                            [("cache-control", cache)],
                            axum::Json(json!({ "keys": p.keys })),
                        )
                    }
                }),
            );
        let acceptor = tls.acceptor();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(io) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
                        .await;
                });
            }
        });
        Issuer {
            url,
            published,
            _runtime: runtime,
        }
    }

    fn publish(&self, keys: &[&Key], max_age: Option<u64>) {
        let mut p = self.published.lock().unwrap();
        p.keys = keys.iter().map(|k| k.jwk.clone()).collect();
        p.max_age = max_age;
    }

    fn fetches(&self) -> usize {
        self.published.lock().unwrap().fetches
    }

    /// A token for `user:<sub>` signed by `key`, as this issuer.
    fn token(&self, key: &Key, sub: &str) -> String {
        let now = clearance_host::clock::now_seconds();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let claims = json!({
            "iss": self.url, "aud": AUDIENCE, "sub": sub,
            "iat": now, "nbf": now - 5, "exp": now + 600,
        });
        jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
    }
}

/// Starts a server whose user tokens come from `issuer`, trusting `trusted` for https.
fn serve(dir: &Path, name: &str, issuer: &Issuer, trusted: &Ca) -> crate::faults::Server {
    let db = dir.join(format!("{name}.db"));
    let ca_file = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&ca_file, &trusted.pem).unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "--data".into(),
        db.clone().into(),
        "--seed".into(),
        root().join("tests/worlds").into(),
        "--oidc-issuer".into(),
        issuer.url.clone().into(),
        "--token-audience".into(),
        AUDIENCE.into(),
        "--ca-cert".into(),
        ca_file.into(),
        "--oidc-min-refresh-interval".into(),
        "1".into(),
        // Every made-up token reaches the verifier: none is held back by the limit on
        // failed authentications.
        "--auth-failure-limit".into(),
        "0".into(),
    ];
    start_in(
        Path::new(env!("CARGO_BIN_EXE_clearance")),
        &root(),
        &args,
        &|| add_key(&db, ADMIN, Scope::Admin, &[]),
    )
    .unwrap_or_else(|log| panic!("the server did not start: {log}"))
}

/// The status and error message of `GET /v1/revision` with `token`.
async fn ask(base: &str, token: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/revision"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn keys_rotated_at_the_identity_provider_are_taken_without_a_restart() {
    let dir = scratch("oidc");
    let (trusted, other) = (ca("oidc"), ca("oidc-other"));
    let issuer = Issuer::start(&trusted, &dir);
    let (k1, k2, k3) = (key("rotation-1"), key("rotation-2"), key("rotation-3"));
    issuer.publish(&[&k1], None);
    let server = serve(&dir, "host", &issuer, &trusted);
    let base = server.base.clone();
    block(async {
        // Found by discovery, fetched once at start.
        let first = issuer.token(&k1, "occ_controller");
        assert_eq!(ask(&base, &first).await.0, 200);
        assert_eq!(issuer.fetches(), 1);
        // A user token decides as the user, at the server's clock.
        let r = reqwest::Client::new()
            .post(format!("{base}/v1/check"))
            .bearer_auth(&first)
            .json(&json!({ "principal": "user:occ_controller", "action": "view", "resource": "event:aog_lhr" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);

        // Rotation: a new key is published, then tokens are signed with it. The first
        // token naming it has the set fetched again and is accepted.
        issuer.publish(&[&k1, &k2], None);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second = issuer.token(&k2, "occ_controller");
        assert_eq!(ask(&base, &second).await, (200, String::new()));
        assert_eq!(issuer.fetches(), 2);

        // A flood of tokens naming made-up keys: all refused, and the set fetched at most
        // once per least interval (1 s here) however many there are.
        let before = issuer.fetches();
        let started = Instant::now();
        let mut refused = 0;
        for round in 0..6 {
            let asks = (0..50).map(|i| {
                let forged = issuer.token(&key(&format!("made-up-{round}-{i}")), "occ_controller");
                let base = base.clone();
                async move { ask(&base, &forged).await }
            });
            for (status, message) in futures_util::future::join_all(asks).await {
                assert_eq!(status, 401, "{message}");
                assert!(message.contains("no configured key is named"), "{message}");
                refused += 1;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let elapsed = started.elapsed();
        let fetched = issuer.fetches() - before;
        let allowed = usize::try_from(elapsed.as_millis().div_ceil(1000)).unwrap() + 1;
        assert!(
            fetched <= allowed,
            "{refused} made-up keys in {:.1} s made {fetched} fetches (at most {allowed})",
            elapsed.as_secs_f64()
        );
        assert!(fetched >= 1, "an unknown key never had the set fetched");

        // The old key is withdrawn. The next fetch (here, for yet another unknown key)
        // drops it: a token of it is refused, although it was accepted before.
        issuer.publish(&[&k2], None);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let unknown = issuer.token(&k3, "occ_controller");
        assert_eq!(ask(&base, &unknown).await.0, 401);
        let (status, message) = ask(&base, &first).await;
        assert_eq!(status, 401, "a token of a withdrawn key was accepted");
        assert!(message.contains("rotation-1"), "{message}");
        assert_eq!(ask(&base, &second).await.0, 200);

        // A set the provider says to keep 1 s is fetched again unasked: k3 published and
        // taken with no token naming it in between.
        issuer.publish(&[&k2, &k3], Some(1));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            ask(&base, &issuer.token(&k3, "occ_controller")).await.0,
            200
        );
        let asked = issuer.fetches();
        let deadline = Instant::now() + Duration::from_secs(10);
        while issuer.fetches() < asked + 2 {
            assert!(
                Instant::now() < deadline,
                "a key set with max-age=1 was not fetched again"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A token for a principal that does not exist: refused, whoever signed it.
        let (status, message) = ask(&base, &issuer.token(&k2, "nobody_here")).await;
        assert_eq!(status, 401);
        assert!(message.contains("does not exist"), "{message}");
    });
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("the identity provider's key set"), "{log}");
    drop(server);

    // A host that trusts another CA cannot fetch the keys: every user token is refused,
    // saying so, and its service keys are served as ever.
    let untrusting = serve(&dir, "untrusting", &issuer, &other);
    let base = untrusting.base.clone();
    block(async {
        let (status, message) = ask(&base, &issuer.token(&k2, "occ_controller")).await;
        assert_eq!(status, 401);
        assert!(
            message.contains("no key to verify user tokens"),
            "{message}"
        );
        assert_eq!(ask(&base, ADMIN).await.0, 200);
    });
    let log = untrusting.log.lock().unwrap().clone();
    assert!(log.contains("could not be fetched"), "{log}");
    drop(untrusting);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_issuer_that_is_not_an_https_url_is_refused_at_start() {
    let dir = scratch("oidc-refused");
    for (issuer, says) in [
        ("http://127.0.0.1:9/realms/ops", "https URL"),
        ("not a url", "not a URL"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clearance"))
            .current_dir(root())
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--data",
                dir.join("facts.db").to_str().unwrap(),
                "--oidc-issuer",
                issuer,
                "--token-audience",
                AUDIENCE,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{issuer} was taken");
        assert!(err.contains(says), "{issuer}: {err}");
    }
}
