//! The shared token corpus (`host/tests/fixtures/tokens/corpus.json`, written by
//! `web/tools/make-token-corpus.mjs`) through the host's `TokenVerifier`: every token gets
//! the verdict, error code and principal the corpus says, and every key it lists as refused
//! is refused, as the edge handler does (`web/test/token-corpus.test.js`).

use super::root;
use clearance_host::auth::{TokenRules, TokenVerifier};
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

fn corpus() -> Value {
    let path = root().join("host/tests/fixtures/tokens/corpus.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn text(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not text"))
        .to_string()
}

#[test]
fn every_token_of_the_corpus_gets_its_verdict_from_the_host() {
    let corpus = corpus();
    let rules = TokenRules {
        issuer: text(&corpus, "issuer"),
        audience: text(&corpus, "audience"),
        claim: text(&corpus, "claim"),
        principal_type: Some(text(&corpus, "principal_type")),
        leeway: corpus["leeway"].as_u64().unwrap(),
        max_lifetime: corpus["max_lifetime"].as_u64().unwrap(),
    };
    let verifier =
        TokenVerifier::from_file(&root().join("host/tests/fixtures/tokens/jwks.json"), rules)
            .unwrap();
    let corpus_now = corpus["now"].as_i64().unwrap();
    let cases = corpus["cases"].as_array().unwrap();
    assert!(cases.len() >= 16, "the corpus has {} cases", cases.len());
    for case in cases {
        let name = text(case, "name");
        let token = text(case, "token");
        // A case checked at another time than the corpus's names it.
        let now = case.get("now").map_or(corpus_now, |n| n.as_i64().unwrap());
        let got = verifier.verify(&token, now);
        // Once more: a token verified before is answered from memory, with the same verdict.
        assert_eq!(verifier.verify(&token, now), got, "{name}: a second time");
        match text(case, "verdict").as_str() {
            "allow" => assert_eq!(got, Ok(text(case, "principal")), "{name}"),
            "deny" => match got {
                Err(e) => {
                    assert_eq!(e.code, text(case, "code"), "{name}: {}", e.message);
                    assert!(!e.message.is_empty(), "{name}");
                }
                Ok(p) => panic!("{name}: allowed as `{p}`"),
            },
            other => panic!("{name}: verdict `{other}`"),
        }
    }
}

/// Finding 12 of the review: the host accepted RS384 and RS512 keys that the edge refused.
/// Every key the corpus lists as refused is refused by the host too (a JWKS holding it
/// makes no verifier, alone or beside good keys), and the corpus's JWKS, one key of each
/// algorithm accepted, is not.
#[test]
fn every_key_the_corpus_refuses_is_refused_by_the_host() {
    let corpus = corpus();
    let rules = || TokenRules {
        issuer: text(&corpus, "issuer"),
        audience: text(&corpus, "audience"),
        ..TokenRules::default()
    };
    let good: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("host/tests/fixtures/tokens/jwks.json")).unwrap(),
    )
    .unwrap();
    let mut algs: Vec<&str> = good["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    algs.sort_unstable();
    assert_eq!(algs, ["ES256", "ES384", "EdDSA", "RS256"]);
    assert!(TokenVerifier::new(&serde_json::from_value(good.clone()).unwrap(), rules()).is_ok());
    let refused = corpus["refused_keys"].as_array().unwrap();
    assert!(refused.len() >= 6, "{} refused keys", refused.len());
    for case in refused {
        let name = text(case, "name");
        let mut beside = good["keys"].as_array().unwrap().clone();
        beside.push(case["jwk"].clone());
        for keys in [json!([case["jwk"]]), Value::Array(beside)] {
            let jwks: JwkSet = serde_json::from_value(json!({ "keys": keys }))
                .unwrap_or_else(|e| panic!("{name}: not a JWKS: {e}"));
            let made = TokenVerifier::new(&jwks, rules());
            assert!(made.is_err(), "{name}: a verifier was made");
        }
    }
}
