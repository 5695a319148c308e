//! The shared token corpus (`host/tests/fixtures/tokens/corpus.json`, written by
//! `web/tools/make-token-corpus.mjs`) through the host's `TokenVerifier`: every token gets
//! the verdict, error code and principal the corpus says, the same the edge handler gives
//! it (`web/test/token-corpus.test.js`).

use super::root;
use clearance_host::auth::{TokenRules, TokenVerifier};
use serde_json::Value;

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
