//! Fail closed at the module's JSON boundary: a malformed call to `clearance-wasm`'s
//! `ops::Engine` is a structured error and a denial. The rest of the fail-closed tests
//! need only the core and live in `crates/core/tests/all/fail_closed.rs`; this one calls
//! the wasm crate, so it stays here.

use clearance_tests::{policy_sources, root};

/// A malformed JSON call to the module is an error that says what was wrong, with
/// `"allowed": false`: an unknown op, a field the op does not take, a missing field, a
/// delta of an unknown kind or with the wrong fields, a timestamp of the wrong type.
#[test]
fn malformed_calls_and_deltas_are_refused_with_what_was_wrong() {
    let mut engine = clearance_core::protocol::Session::default();
    let sources: Vec<serde_json::Value> = policy_sources(&root().join("policies"))
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|s| serde_json::json!({ "name": s.name, "text": s.text }))
        .collect();
    let loaded =
        engine.call(&serde_json::json!({ "op": "load_policy", "sources": sources }).to_string());
    assert!(loaded.starts_with("{\"ok\""), "{loaded}");
    let world: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/worlds/airline.json"))
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let loaded =
        engine.call(&serde_json::json!({ "op": "load_facts", "facts": world }).to_string());
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
            serde_json::from_str(&engine.call(call)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer["allowed"], false, "{call}: {answer}");
        assert_eq!(
            answer["error"]["code"], "request.malformed",
            "{call}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{call}: {message}");
    }
    // `"value": null` is present (it clears the attribute), not missing.
    let cleared = engine.call(
        r#"{"op":"apply_deltas","deltas":[{"op":"set_attr","entity":"user:former_controller","attr":"email","value":null}]}"#,
    );
    assert!(!cleared.contains("needs the field"), "{cleared}");
    // And a well-formed delta applies.
    let applied = engine.call(
        r#"{"op":"apply_deltas","deltas":[{"op":"set_attr","entity":"user:former_controller","attr":"email","value":"f@skyways.example"}]}"#,
    );
    assert!(applied.starts_with("{\"ok\""), "{applied}");
}
