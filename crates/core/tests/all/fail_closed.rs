//! Fail closed: malformed policies, facts and requests give structured errors and denials,
//! never a panic; random bytes and random mutations of the default policies and worlds
//! never panic the parser, the loader or the evaluator.

use crate::{default_schema, policy_sources, root, world};
use clearance_core::{Facts, Request, Schema, Snapshot, Source, TimeValue};
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};

fn schema() -> Arc<Schema> {
    static SCHEMA: OnceLock<Arc<Schema>> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| default_schema().unwrap_or_else(|e| panic!("{e}"))))
}

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        Snapshot::build(
            schema(),
            &world("airline").unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The sources of the default policies, which the fuzzing mutates: a missing or empty
/// `policies/` fails the test instead of fuzzing nothing.
fn default_sources() -> &'static [Source] {
    static SOURCES: OnceLock<Vec<Source>> = OnceLock::new();
    SOURCES.get_or_init(|| {
        let sources = policy_sources().unwrap_or_else(|e| panic!("{e}"));
        assert!(!sources.is_empty(), "policies/ holds no policy");
        sources
    })
}

/// The airline world as JSON text, which the fuzzing mutates: a missing, empty or
/// broken file fails the test instead of fuzzing nothing.
fn airline_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let path = root().join("tests/worlds/airline.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!text.trim().is_empty(), "{} is empty", path.display());
        if let Err(e) = Facts::from_json(&text) {
            panic!("{}: {e}", path.display());
        }
        text
    })
}

fn errors_of(text: &str) -> Vec<String> {
    match Schema::compile(&[Source::new("t.policy", text)]) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|x| x.to_string()).collect(),
    }
}

/// Load errors name the file, line and column and say what was expected.
#[test]
fn policy_errors_say_where_and_what_was_expected() {
    let cases: &[(&str, &str)] = &[
        (
            "type a {\n  b: nosuchtype\n}",
            "t.policy:2:6: unknown type `nosuchtype`",
        ),
        (
            "type a {\n  permission p = nosuch\n}",
            "t.policy:2:18: `a` has no member `nosuch`",
        ),
        (
            "type a {\n  r: a\n  permission p = r->missing\n}",
            "t.policy:3:21: no subject type of `a.r` has a member `missing`",
        ),
        (
            "type a {\n  permission p = role(nomatrix.x.y)\n}",
            "t.policy:2:23: unknown matrix `nomatrix`",
        ),
        (
            "matrix m {\n  actions view\n  row r\n}\nrole x: m {\n  r: fly\n}",
            "t.policy:6:6: unknown action `fly` of matrix `m`",
        ),
        (
            "matrix m {\n  actions view\n  row r\n}\nrole x: m extends nobody {\n}",
            "t.policy:5:19: unknown role `nobody` to extend",
        ),
        (
            "type a {\n  n: int\n  permission p = n == \"x\"\n}",
            "t.policy:3:18: cannot compare `n` (int) with `\"x\"` (string)",
        ),
        (
            "type a {\n  permission p = \n}",
            "t.policy:3:1: expected an expression",
        ),
        (
            "type a {\n  e: timestamp\n  r: a until nope\n}",
            "t.policy:3:14: `until nope`: expected a timestamp attribute of `a`",
        ),
        (
            "type a { gate g = true else \"x\" }",
            "t.policy:1:15: gate `g` on `a`: gates belong to principal types",
        ),
        (
            "type a {\n  b: int\n  b: int\n}",
            "t.policy:3:3: `a.b` is declared twice",
        ),
        (
            "type a {\n  s: \"unterminated\n}",
            "t.policy:2:6: unterminated string",
        ),
        (
            "type a {\n  permission p = x $ y\n}",
            "t.policy:2:20: unexpected character `$`",
        ),
    ];
    for (text, expected) in cases {
        let errors = errors_of(text);
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "policy:\n{text}\nexpected an error starting `{expected}`, got {errors:?}"
        );
    }
}

/// Every error of a set is reported at once, not only the first.
#[test]
fn policy_errors_are_all_reported() {
    let errors =
        errors_of("type a {\n  b: nosuch\n  permission p = missing\n  permission q = gone\n}");
    assert_eq!(errors.len(), 3, "{errors:?}");
}

/// Facts that break the schema do not load, and say which item and why.
#[test]
fn bad_facts_are_refused_with_the_item_and_the_reason() {
    let base = r#"{"type":"account","id":"a"},{"type":"account","id":"b"},
        {"type":"user","id":"u","account":"a","attrs":{"invitation":"accepted","status":"active"}},
        {"type":"user","id":"v","account":"b","attrs":{"invitation":"accepted","status":"active"}}"#;
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"type":"starship","id":"x","account":"a"}"#,
            "",
            "facts.unknown_type",
        ),
        (
            r#"{"type":"user","id":"w","account":"a","attrs":{"invitation":"accepted","status":"sleeping"}}"#,
            "",
            "facts.invalid_value",
        ),
        (
            r#"{"type":"user","id":"w","account":"a","attrs":{"invitation":"accepted","status":"active","height":3}}"#,
            "",
            "facts.unknown_attribute",
        ),
        (
            r#"{"type":"user","id":"w","account":"a","attrs":{"invitation":"accepted"}}"#,
            "",
            "facts.missing_attribute",
        ),
        (
            r#"{"type":"user","id":"w","account":"a","attrs":{"invitation":"accepted","status":"active","roles":["pilot_of_the_moon"]}}"#,
            "",
            "facts.unknown_role",
        ),
        (
            r#"{"type":"user","id":"w","account":"nowhere","attrs":{"invitation":"accepted","status":"active"}}"#,
            "",
            "facts.unknown_account",
        ),
        (
            r#"{"type":"organization","id":"o","account":"a","attrs":{"kind":"airline"}}"#,
            r#"{"resource":"organization:o","relation":"member","subject":"user:v"}"#,
            "facts.cross_account",
        ),
        (
            r#"{"type":"organization","id":"o","account":"a","attrs":{"kind":"airline"}}"#,
            r#"{"resource":"organization:o","relation":"pilots","subject":"user:u"}"#,
            "facts.unknown_relation",
        ),
        (
            r#"{"type":"organization","id":"o","account":"a","attrs":{"kind":"airline"}}"#,
            r#"{"resource":"organization:o","relation":"member","subject":"account:a"}"#,
            "facts.wrong_subject_type",
        ),
        (
            r#"{"type":"role","id":"r","account":"a","attrs":{"matrix":"maintenance","cells":["work_orders:fly"]}}"#,
            "",
            "facts.invalid_role",
        ),
    ];
    for (extra, tuple, code) in cases {
        let text = format!(r#"{{"entities":[{base},{extra}],"tuples":[{tuple}]}}"#);
        let got = Facts::from_json(&text).and_then(|f| Snapshot::build(schema(), &f).map(|_| ()));
        match got {
            Ok(()) => panic!("facts with {extra} {tuple} loaded; expected {code}"),
            Err(e) => assert_eq!(e.code, *code, "{extra} {tuple}: {e}"),
        }
    }
    let malformed = Facts::from_json("{\"entities\": [").map(|_| ());
    assert!(
        matches!(malformed, Err(e) if e.code == "facts.malformed" && e.at.starts_with("line 1"))
    );
}

/// A required attribute may be absent only where the facts list it as `omitted` for its
/// type (as a principal slice does), a listing is an array of names, and it survives the
/// JSON round trip.
#[test]
fn omitted_attributes_may_be_absent() {
    let entities = r#"[{"type":"account","id":"a"},
        {"type":"user","id":"u","account":"a","attrs":{"invitation":"accepted"}}]"#;
    let build = |omitted: &str| {
        let text = format!(r#"{{"entities":{entities}{omitted}}}"#);
        Facts::from_json(&text).and_then(|f| Snapshot::build(schema(), &f).map(|_| f))
    };
    assert_eq!(build("").unwrap_err().code, "facts.missing_attribute");
    assert_eq!(
        build(r#","omitted":{"invitee":["status"]}"#)
            .unwrap_err()
            .code,
        "facts.missing_attribute"
    );
    assert_eq!(
        build(r#","omitted":{"user":"status"}"#).unwrap_err().code,
        "facts.invalid_value"
    );
    let facts = build(r#","omitted":{"user":["email","status"]}"#).unwrap();
    assert!(facts.omits("user", "status") && !facts.omits("user", "invitation"));
    assert_eq!(Facts::from_doc(facts.to_doc()).unwrap(), facts);
}

/// Malformed requests are denials with structural reasons, in the documented order.
#[test]
fn malformed_requests_are_denied_with_their_reasons() {
    let snap = snapshot();
    let principal = snap
        .names
        .iter()
        .find(|n| n.starts_with("user:"))
        .cloned()
        .unwrap_or_default();
    let cases: &[(&str, &str, &str, TimeValue, &[&str])] = &[
        (
            "user:nobody",
            "view",
            "event:nothing",
            TimeValue::Seconds(0),
            &["entity.unknown", "entity.unknown"],
        ),
        (
            &principal,
            "view",
            "event:nothing",
            TimeValue::Text("yesterday".into()),
            &["request.invalid", "entity.unknown"],
        ),
        (
            &principal,
            "fly",
            "maintenance:work_orders",
            TimeValue::Seconds(0),
            &["action.unknown"],
        ),
        (
            "account:skyways",
            "view",
            "maintenance:work_orders",
            TimeValue::Seconds(0),
            &["principal.invalid"],
        ),
        (
            "",
            "",
            "",
            TimeValue::Seconds(0),
            &["entity.unknown", "entity.unknown"],
        ),
    ];
    for (p, a, r, now, codes) in cases {
        let req = Request {
            principal: p.to_string(),
            action: a.to_string(),
            resource: r.to_string(),
            target: None,
            now: now.clone(),
        };
        let d = snap.check(&req);
        assert!(!d.allowed);
        let got: Vec<String> = d.reasons.iter().map(|x| snap.code(x)).collect();
        assert_eq!(got, *codes, "{req:?}");
        let view = snap.view(&d, &req);
        assert!(view.reasons.iter().all(|x| !x.message.is_empty()));
    }
}

fn mutate(text: &str, edits: &[(usize, usize, u8)]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for &(pos, len, b) in edits {
        if bytes.is_empty() {
            break;
        }
        let p = pos % bytes.len();
        match b % 3 {
            0 => {
                let end = (p + len % 16).min(bytes.len());
                bytes.drain(p..end);
            }
            1 => bytes.insert(
                p,
                b"(){}|&-!:.,=<>\"?#a1 \n"
                    .get(len % 21)
                    .copied()
                    .unwrap_or(b' '),
            ),
            _ => {
                if let Some(x) = bytes.get_mut(p) {
                    *x = b;
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random bytes never panic the policy parser or the facts loader.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Schema::compile(&[Source::new("fuzz.policy", text.as_ref())]);
        let _ = Facts::from_json(&text);
        let _ = Snapshot::from_bytes(&bytes);
    }

    /// Random mutations of the default policies either load or give located errors.
    #[test]
    fn mutated_policies_never_panic(file in 0usize..8, edits in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..6)) {
        let sources = default_sources();
        let i = file % sources.len();
        let mutated: Vec<Source> = sources.iter().enumerate().map(|(j, s)| if j == i { Source::new(s.name.clone(), mutate(&s.text, &edits)) } else { s.clone() }).collect();
        if let Err(errors) = Schema::compile(&mutated) {
            prop_assert!(!errors.0.is_empty());
            for e in &errors.0 {
                prop_assert!(e.span.line >= 1 && e.span.col >= 1 && !e.message.is_empty(), "{e}");
            }
        }
    }

    /// Random mutations of a world either load and decide, or give a coded error.
    #[test]
    fn mutated_worlds_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..4)) {
        let mutated = mutate(airline_text(), &edits);
        match Facts::from_json(&mutated).and_then(|f| Snapshot::build(schema(), &f)) {
            Ok(s) => {
                let names = s.names.clone();
                for p in names.iter().take(20) {
                    for r in names.iter().rev().take(20) {
                        let _ = s.allowed_actions(p, r, &TimeValue::Seconds(1_777_600_000));
                    }
                }
            }
            Err(e) => prop_assert!(e.code.as_str().starts_with("facts."), "{e}"),
        }
    }

    /// Random requests against a real world never panic and never allow an unknown name.
    #[test]
    fn random_requests_never_panic(p in "[a-z_:]{0,20}", a in "[a-z_]{0,12}", r in "[a-z_:]{0,24}", t in proptest::option::of("[a-z_:]{0,12}"), now in any::<i64>()) {
        let snap = snapshot();
        let req = Request { principal: p, action: a, resource: r, target: t, now: TimeValue::Seconds(now) };
        let d = snap.check(&req);
        if snap.entity(&req.principal).is_none() {
            prop_assert!(!d.allowed);
        }
        let _ = snap.explain(&req);
    }
}

/// Deeply nested rules are refused with a located error, never a stack overflow.
#[test]
fn deep_nesting_is_a_located_error_not_a_crash() {
    let deep = [
        format!(
            "type a principal {{\n  r: a\n  permission p = {}r{}\n}}",
            "(".repeat(10_000),
            ")".repeat(10_000)
        ),
        format!(
            "type a principal {{\n  r: a\n  permission p = {}r\n}}",
            "!".repeat(10_000)
        ),
        format!(
            "type a principal {{\n  r: a\n  permission p = r{}\n}}",
            " - r".repeat(10_000)
        ),
        format!(
            "type a principal {{\n  r: a\n  permission p = r{}\n}}",
            " - r & r".repeat(10_000)
        ),
    ];
    for text in &deep {
        let errors = errors_of(text);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("t.policy:3:") && e.contains("nests deeper than 64 levels")),
            "{errors:?}"
        );
    }
    // Sixty levels are fine.
    let fine = format!(
        "type a principal {{\n  r: a\n  permission p = {}r{}\n}}",
        "(".repeat(60),
        ")".repeat(60)
    );
    assert!(errors_of(&fine).is_empty());
}

/// A chain of custom roles extending each other is bounded.
#[test]
fn a_long_chain_of_custom_roles_is_refused() {
    let mut entities = vec![r#"{"type":"account","id":"a"}"#.to_string()];
    entities.push(r#"{"type":"role","id":"r0","account":"a","attrs":{"matrix":"maintenance","extends":"planner","cells":[]}}"#.to_string());
    for i in 1..20_000 {
        entities.push(format!(r#"{{"type":"role","id":"r{i}","account":"a","attrs":{{"matrix":"maintenance","extends":"r{}","cells":[]}}}}"#, i - 1));
    }
    let text = format!(r#"{{"entities":[{}]}}"#, entities.join(","));
    let got = Facts::from_json(&text).and_then(|f| Snapshot::build(schema(), &f).map(|_| ()));
    match got {
        Err(e) => assert!(
            e.code == "facts.invalid_role" && e.message.contains("more than 32"),
            "{e}"
        ),
        Ok(()) => panic!("a 20,000-role chain loaded"),
    }
}

/// A snapshot carries its policy's sources and compiles them again when read: a snapshot
/// of another format version, or whose policy no longer compiles, is refused.
#[test]
fn snapshots_of_another_format_or_with_a_broken_policy_are_refused() {
    let bytes = snapshot().to_bytes().unwrap_or_else(|e| panic!("{e}"));
    let again = Snapshot::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.schema.hash, snapshot().schema.hash);
    assert_eq!(
        again.to_bytes().ok(),
        Some(bytes.clone()),
        "the bytes round-trip"
    );
    // The format version is the first varint of the bytes.
    let mut other = bytes.clone();
    if let Some(b) = other.first_mut() {
        *b += 1;
    }
    let refused = Snapshot::from_bytes(&other).map(|_| ()).unwrap_err();
    assert!(
        refused.to_string().contains("snapshot format 6"),
        "{refused}"
    );
    // A policy that no longer compiles: the sources are replaced by a broken one.
    let broken = Schema {
        sources: vec![Source::new("broken.policy", "type user {")],
        ..(*snapshot().schema).clone()
    };
    let mut snap = snapshot().clone();
    snap.schema = Arc::new(broken);
    let bytes = snap.to_bytes().unwrap_or_else(|e| panic!("{e}"));
    let refused = Snapshot::from_bytes(&bytes).map(|_| ()).unwrap_err();
    assert!(
        refused.to_string().contains("does not compile"),
        "{refused}"
    );
    assert!(refused.to_string().contains("broken.policy"), "{refused}");
}

/// A malformed JSON call to the module is an error that says what was wrong, with
/// `"allowed": false`: an unknown op, a field the op does not take, a missing field, a
/// delta of an unknown kind or with the wrong fields, a timestamp of the wrong type.
#[test]
fn malformed_calls_and_deltas_are_refused_with_what_was_wrong() {
    let mut session = clearance_core::protocol::Session::default();
    let sources: Vec<serde_json::Value> = policy_sources()
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|s| serde_json::json!({ "name": s.name, "text": s.text }))
        .collect();
    let loaded =
        session.call(&serde_json::json!({ "op": "load_policy", "sources": sources }).to_string());
    assert!(loaded.starts_with("{\"ok\""), "{loaded}");
    let world: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/worlds/airline.json"))
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let loaded =
        session.call(&serde_json::json!({ "op": "load_facts", "facts": world }).to_string());
    assert!(loaded.starts_with("{\"ok\""), "{loaded}");
    let cases: &[(&str, &str)] = &[
        (
            r#"{"op":"fly"}"#,
            "unknown op `fly`, expected one of load_policy",
        ),
        (
            r#"{"op":"info","sources":[]}"#,
            "`info` takes no field `sources`",
        ),
        (r#"{"op":"check"}"#, "`check` needs the field `request`"),
        (
            r#"{"op":"list_resources","principal":"user:former_controller","action":"view","now":0}"#,
            "`list_resources` needs the field `type`",
        ),
        (r#"{"op":"info","colour":1}"#, "unknown field `colour`"),
        (
            r#"{"op":"check","request":{"principal":"user:former_controller","action":"view","resource":"user:former_controller","now":1.5}}"#,
            "expected RFC 3339 text or seconds since the epoch",
        ),
        (
            r#"{"op":"apply_deltas","deltas":[{"op":"rename"}]}"#,
            "unknown delta op `rename`",
        ),
        (
            r#"{"op":"apply_deltas","deltas":[{"op":"remove_entity","entity":"user:former_controller","attr":"x"}]}"#,
            "the delta `remove_entity` takes no field `attr`",
        ),
        (
            r#"{"op":"apply_deltas","deltas":[{"op":"set_attr","entity":"user:former_controller","attr":"x"}]}"#,
            "the delta `set_attr` needs the field `value`",
        ),
        (
            r#"{"op":"apply_deltas","deltas":[{"op":"add_entity","entity":"user:v"}]}"#,
            "the delta `add_entity` needs an entity object as `entity`",
        ),
        (
            r#"{"op":"apply_deltas","deltas":[{"op":"remove_entity","entity":{"type":"user","id":"u"}}]}"#,
            "the delta `remove_entity` needs a `type:id` as `entity`",
        ),
        (r#"[1,2]"#, "malformed call"),
    ];
    for (call, says) in cases {
        let answer: serde_json::Value =
            serde_json::from_str(&session.call(call)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer["allowed"], false, "{call}: {answer}");
        assert_eq!(
            answer["error"]["code"], "request.malformed",
            "{call}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{call}: {message}");
    }
    // `"value": null` is present (it clears the attribute), not missing.
    let cleared = session.call(
        r#"{"op":"apply_deltas","deltas":[{"op":"set_attr","entity":"user:former_controller","attr":"email","value":null}]}"#,
    );
    assert!(!cleared.contains("needs the field"), "{cleared}");
    // And a well-formed delta applies.
    let applied = session.call(
        r#"{"op":"apply_deltas","deltas":[{"op":"set_attr","entity":"user:former_controller","attr":"email","value":"f@skyways.example"}]}"#,
    );
    assert!(applied.starts_with("{\"ok\""), "{applied}");
}

/// A small facts document drawn from few names, so that duplicate entities, tuples named
/// twice with different expiries, unknown ends, invalid entities and missing accounts all
/// turn up.
fn small_doc() -> impl Strategy<Value = clearance_core::FactsJson> {
    let entity = (0..4usize, 0..5usize, 0..6usize).prop_map(|(t, id, acct)| {
        let ty = ["user", "event", "account", ""][t];
        let account = if acct < 5 {
            serde_json::json!(format!("e{}", acct % 2))
        } else {
            serde_json::Value::Null
        };
        serde_json::json!({
            "type": ty,
            "id": format!("e{id}"),
            "account": account,
        })
    });
    let tuple = (
        0..4usize,
        0..5usize,
        0..3usize,
        0..4usize,
        0..5usize,
        0..3i64,
    )
        .prop_map(|(rt, r, rel, st, s, exp)| {
            let ty = ["user", "event", "account", "squawk"];
            let relation = ["member", "owner", "guest"][rel];
            let expires = if exp == 0 {
                serde_json::Value::Null
            } else {
                serde_json::json!(exp * 1000)
            };
            serde_json::json!({
                "resource": format!("{}:e{r}", ty[rt]),
                "relation": relation,
                "subject": format!("{}:e{s}", ty[st]),
                "expires": expires,
            })
        });
    (
        proptest::collection::vec(entity, 0..12),
        proptest::collection::vec(tuple, 0..16),
    )
        .prop_map(|(mut entities, tuples)| {
            for e in &mut entities {
                if let Some(o) = e.as_object_mut() {
                    o.retain(|_, v| !v.is_null());
                }
            }
            let tuples: Vec<_> = tuples
                .into_iter()
                .map(|mut t| {
                    if let Some(o) = t.as_object_mut() {
                        o.retain(|_, v| !v.is_null());
                    }
                    t
                })
                .collect();
            serde_json::from_value(serde_json::json!({ "entities": entities, "tuples": tuples }))
                .unwrap_or_else(|e| panic!("{e}"))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The facts loader's bulk path (native) and its one-row-at-a-time path (the module)
    /// answer alike: the same facts, or the same first error in document order.
    #[test]
    fn the_bulk_and_the_in_order_facts_loaders_agree(doc in small_doc()) {
        let bulk = Facts::from_doc_sorted(doc.clone());
        let in_order = Facts::from_doc_in_order(doc);
        prop_assert_eq!(bulk, in_order);
    }
}
