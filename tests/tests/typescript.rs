//! The package's TypeScript declarations (`web/index.d.ts`) against the Rust types they
//! describe: every type that crosses the JS face has an interface of the same name whose
//! fields are the type's JSON Schema's properties (from `schemars`, as the host's OpenAPI
//! document uses them), each optional exactly when the schema does not require it, and of
//! the type the schema gives. A field renamed, added, removed or retyped on either side
//! fails here, and `tsc` then holds the package, its tests and its examples to the
//! declarations.

// A test: it indexes what it parses and unwraps its own fixtures.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, missing_docs)]

use clearance_core::api::{AccessMatrix, DecisionView, Explanation, MatrixRole, ReasonView};
use clearance_core::protocol::Actions;
use clearance_core::writes::WriteRefusal;
use clearance_core::{ErrorData, Request};
use schemars::{JsonSchema, schema_for};
use serde_json::Value;
use std::collections::BTreeMap;

/// An interface's fields: name → (optional, type).
type Fields = BTreeMap<String, (bool, String)>;

/// The fields of each `export interface` of a declaration file, by interface.
fn interfaces(text: &str) -> BTreeMap<String, Fields> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Fields)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("export interface ") {
            let name = rest
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string();
            current = Some((name, BTreeMap::new()));
            continue;
        }
        if line.starts_with('}') {
            if let Some((name, fields)) = current.take() {
                out.insert(name, fields);
            }
            continue;
        }
        let Some((_, fields)) = current.as_mut() else {
            continue;
        };
        let l = line.trim();
        if l.starts_with("/**") || l.starts_with('*') || l.is_empty() {
            continue;
        }
        let Some((name, ty)) = l.trim_end_matches(';').split_once(':') else {
            continue;
        };
        let optional = name.ends_with('?');
        fields.insert(
            name.trim_end_matches('?').to_string(),
            (optional, ty.trim().to_string()),
        );
    }
    out
}

/// A TypeScript type as a sorted set of union members, for comparison. `Time` is the JS
/// face's time: what the JSON Schema says (text or seconds), plus what only JS has
/// (`bigint`, `Date`), which the face turns into seconds.
fn members(ts: &str) -> Vec<String> {
    let mut v: Vec<String> = ts
        .split('|')
        .map(|m| m.trim().to_string())
        .flat_map(|m| {
            if m == "Time" {
                vec!["string".to_string(), "number".to_string()]
            } else {
                vec![m]
            }
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The TypeScript type of a JSON Schema, as union members: a reference to a type with
/// properties by its name (its own interface, compared on its own), any other reference
/// (an untagged enum such as `TimeValue`) by what it is.
fn ts_of(schema: &Value, defs: &Value) -> Vec<String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return match defs.get(name) {
            Some(def) if def.get("properties").is_none() => ts_of(def, defs),
            _ => vec![name.to_string()],
        };
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            let mut v: Vec<String> = list.iter().flat_map(|x| ts_of(x, defs)).collect();
            v.sort();
            v.dedup();
            return v;
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|v| format!("'{}'", v.as_str().unwrap_or_default()))
            .collect();
    }
    let one = |t: &str| -> String {
        match t {
            "string" => "string".into(),
            "integer" | "number" => "number".into(),
            "boolean" => "boolean".into(),
            "null" => "null".into(),
            "array" => {
                let items = schema
                    .get("items")
                    .map(|x| ts_of(x, defs))
                    .unwrap_or_default();
                if items.len() == 1 {
                    format!("{}[]", items[0])
                } else {
                    format!("({})[]", items.join(" | "))
                }
            }
            other => other.into(),
        }
    };
    let mut v: Vec<String> = match schema.get("type") {
        Some(Value::String(t)) => vec![one(t)],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(one).collect(),
        _ => vec!["unknown".into()],
    };
    v.sort();
    v.dedup();
    v
}

/// The differences between the interface `name` of the declarations and the Rust type `T`.
fn compare<T: JsonSchema>(name: &str, declared: &BTreeMap<String, Fields>) -> Vec<String> {
    let schema = serde_json::to_value(schema_for!(T)).unwrap();
    let Some(fields) = declared.get(name) else {
        return vec![format!("index.d.ts declares no interface `{name}`")];
    };
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut diffs = Vec::new();
    for (field, prop) in &props {
        let is_required = required.contains(&field.as_str());
        let Some((optional, ty)) = fields.get(field) else {
            diffs.push(format!(
                "{name}.{field}: in the Rust type, not in index.d.ts"
            ));
            continue;
        };
        if *optional == is_required {
            diffs.push(format!(
                "{name}.{field}: {} in the Rust type, {} in index.d.ts",
                if is_required { "required" } else { "optional" },
                if *optional { "optional" } else { "required" }
            ));
        }
        let mut want = ts_of(prop, schema.get("$defs").unwrap_or(&Value::Null));
        // A field left out when absent is never null on the wire.
        if !is_required {
            want.retain(|m| m != "null");
        }
        let got = members(ty);
        if want != got {
            diffs.push(format!(
                "{name}.{field}: `{}` in the Rust type, `{ty}` in index.d.ts",
                want.join(" | ")
            ));
        }
    }
    for field in fields.keys() {
        if !props.contains_key(field) {
            diffs.push(format!(
                "{name}.{field}: in index.d.ts, not in the Rust type"
            ));
        }
    }
    diffs
}

fn declarations() -> String {
    let path = clearance_tests::root().join("web/index.d.ts");
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn the_typescript_declarations_are_the_rust_types() {
    let declared = interfaces(&declarations());
    let diffs: Vec<String> = [
        compare::<Request>("Request", &declared),
        compare::<ReasonView>("ReasonView", &declared),
        compare::<DecisionView>("DecisionView", &declared),
        compare::<Explanation>("Explanation", &declared),
        compare::<AccessMatrix>("AccessMatrix", &declared),
        compare::<MatrixRole>("MatrixRole", &declared),
        compare::<ErrorData>("ErrorData", &declared),
        compare::<WriteRefusal>("WriteRefusal", &declared),
        compare::<Actions>("AllowedActions", &declared),
    ]
    .concat();
    assert!(
        diffs.is_empty(),
        "web/index.d.ts and the Rust types differ:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn a_renamed_field_is_found() {
    let text = declarations().replacen("  policy_hash: string;", "  policyHash: string;", 1);
    assert_ne!(
        text,
        declarations(),
        "the declarations have no `policy_hash: string;`"
    );
    let diffs = compare::<DecisionView>("DecisionView", &interfaces(&text));
    assert!(
        diffs.iter().any(|d| d.contains("DecisionView.policy_hash"))
            && diffs.iter().any(|d| d.contains("DecisionView.policyHash")),
        "{diffs:?}"
    );
    let text = declarations().replacen("  revision: number;", "  revision: string;", 1);
    let diffs = compare::<DecisionView>("DecisionView", &interfaces(&text));
    assert!(
        diffs.iter().any(|d| d.contains("DecisionView.revision")),
        "{diffs:?}"
    );
}
