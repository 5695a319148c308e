//! What naming the caller adds to a request: the median time to verify a service key and
//! a user token of each algorithm, as the host does for every `/v1` call (the header
//! parsed, the key looked up and its secret hashed and compared, or the token's signature
//! and claims checked). A token is timed the first time it is seen (its signature
//! checked) and again (found among the verified). Rounds interleave the kinds; the figure
//! is the median of rounds.
//!
//! `cargo run --release -p clearance-benches --example auth_cost`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use clearance_host::auth::{Keys, Scope, TokenRules, TokenVerifier, bearer, new_key};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::path::Path;
use std::time::Instant;

const COLD: u32 = 100;
const N: u32 = 2_000;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fixtures = root.join("host/tests/fixtures/tokens");
    let read = |n: &str| std::fs::read(fixtures.join(n)).unwrap();
    let key = new_key(Scope::Service, &["skyways".into()], "bench", 0).unwrap();
    // A store with a thousand keys, the bench's among them.
    let mut all: Vec<_> = (0..999)
        .map(|_| new_key(Scope::Read, &["a".into()], "", 0).unwrap().stored)
        .collect();
    all.push(key.stored.clone());
    let keys = Keys::new(all);
    let rules = TokenRules {
        issuer: "https://idp.test".into(),
        audience: "clearance-test".into(),
        ..TokenRules::default()
    };
    let jwks = fixtures.join("jwks.json");
    let now = clearance_host::clock::now_seconds();
    // COLD distinct tokens per algorithm (a `jti` each), signed beforehand.
    let sign = |alg: Algorithm, kid: &str, k: &EncodingKey, i: u32| {
        let claims = serde_json::json!({ "iss": "https://idp.test", "aud": "clearance-test", "sub": "occ_controller", "exp": now + 3600, "nbf": now, "jti": i });
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        format!("Bearer {}", jsonwebtoken::encode(&h, &claims, k).unwrap())
    };
    let algs = [
        (
            "EdDSA",
            Algorithm::EdDSA,
            "test-eddsa",
            EncodingKey::from_ed_der(&read("ed25519.der")),
        ),
        (
            "ES256",
            Algorithm::ES256,
            "test-es256",
            EncodingKey::from_ec_der(&read("es256.der")),
        ),
        (
            "RS256",
            Algorithm::RS256,
            "test-rs256",
            EncodingKey::from_rsa_der(&read("rs256.der")),
        ),
    ];
    let tokens: Vec<(&str, Vec<String>)> = algs
        .iter()
        .map(|(n, alg, kid, k)| (*n, (0..COLD).map(|i| sign(*alg, kid, k, i)).collect()))
        .collect();
    let service_header = format!("Bearer {}", key.token);
    let mut results: Vec<(String, Vec<f64>)> = vec![("service key".into(), Vec::new())];
    for (n, _) in &tokens {
        results.push((format!("{n} token, first seen"), Vec::new()));
        results.push((format!("{n} token, seen before"), Vec::new()));
    }
    for _round in 0..9 {
        let t = Instant::now();
        for _ in 0..N {
            let credential = bearer(Some(&service_header)).unwrap();
            std::hint::black_box(keys.verify(credential).unwrap());
        }
        results[0]
            .1
            .push(t.elapsed().as_nanos() as f64 / f64::from(N));
        for (i, (_, headers)) in tokens.iter().enumerate() {
            // A fresh verifier: every token is new to it.
            let verifier = TokenVerifier::from_file(&jwks, rules.clone()).unwrap();
            let t = Instant::now();
            for h in headers {
                std::hint::black_box(verifier.verify(bearer(Some(h)).unwrap(), now).unwrap());
            }
            results[1 + 2 * i]
                .1
                .push(t.elapsed().as_nanos() as f64 / f64::from(COLD));
            let t = Instant::now();
            for k in 0..N {
                let h = &headers[(k % COLD) as usize];
                std::hint::black_box(verifier.verify(bearer(Some(h)).unwrap(), now).unwrap());
            }
            results[2 + 2 * i]
                .1
                .push(t.elapsed().as_nanos() as f64 / f64::from(N));
        }
    }
    for (name, mut v) in results {
        v.sort_by(f64::total_cmp);
        println!(
            "report auth {name}: median {:.1} µs per request (9 interleaved rounds; min {:.1}, max {:.1})",
            v[4] / 1000.0,
            v[0] / 1000.0,
            v[8] / 1000.0
        );
    }
}
