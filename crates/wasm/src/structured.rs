//! The structured calls as JS values: a call or its argument given as a JS value (read by
//! [`crate::read`], as its JSON text would be) or as JSON text (read as before), and its
//! answer given as a plain JS value through serde-wasm-bindgen, or its error thrown as an
//! `Error` with `code`, `message` and `help`. The package's `Session` writes and parses
//! no JSON for these calls.
//!
//! Answers are written with `Serializer::json_compatible()`: maps as plain objects, `None`
//! as `null`, integers as numbers, which is what `JSON.parse` gave of the JSON answer.
//! Where serde-wasm-bindgen cannot give that (an integer past 2^53, which it refuses
//! instead of rounding; a key `__proto__`, which its objects would take as their
//! prototype), the answer is given by `JSON.parse` of its JSON, exactly as before.

use crate::bindgen::{Clearance, malformed_json, time};
use crate::read::Reader;
use crate::values::{js_error, malformed};
use clearance_core::facts::FactsJson;
use clearance_core::protocol::{Answer, Call, Op, op_names};
use clearance_core::wire::QUERY_LEN;
use serde::Serialize;
use serde_json::Value;
use wasm_bindgen::prelude::*;

/// The serializer of answers: what `JSON.parse` made of their JSON.
const JSON_COMPATIBLE: serde_wasm_bindgen::Serializer =
    serde_wasm_bindgen::Serializer::json_compatible();

/// Whether a JSON value holds an object with a key `__proto__`.
fn value_has_proto(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("__proto__") || m.values().any(value_has_proto),
        Value::Array(a) => a.iter().any(value_has_proto),
        _ => false,
    }
}

/// Whether facts hold a key `__proto__` (an attribute or a type of that name): the only
/// answers whose keys are not the names of fields.
fn facts_have_proto(doc: &FactsJson) -> bool {
    doc.entities
        .iter()
        .any(|e| e.attrs.contains_key("__proto__") || e.attrs.values().any(value_has_proto))
        || doc.omitted.contains_key("__proto__")
        || doc.omitted.values().any(value_has_proto)
}

/// An answer as a plain JS value.
fn to_js(answer: &Answer) -> Result<JsValue, JsValue> {
    let proto = match answer {
        Answer::Facts(doc) => facts_have_proto(doc),
        _ => false,
    };
    if !proto && let Ok(v) = answer.serialize(&JSON_COMPATIBLE) {
        return Ok(v);
    }
    js_sys::JSON::parse(&answer.to_json())
}

/// The help of a call that cannot be read.
fn call_help() -> String {
    format!(
        "a call is a JSON object with an `op` ({}) and its fields",
        op_names()
    )
}

#[wasm_bindgen]
impl Clearance {
    /// Runs a call (`{op, ...}`) given as a JS value or as JSON text; gives its answer as
    /// a plain value, or throws its error.
    #[wasm_bindgen(js_name = callValue)]
    pub fn call_value(&mut self, call: JsValue) -> Result<JsValue, JsValue> {
        let read = match call.as_string() {
            Some(text) => Call::parse(&text),
            None => Reader::of(call)
                .map_err(|e| format!("malformed call: {e}"))
                .and_then(Call::read),
        };
        let call = read.map_err(|message| malformed(message, &call_help()))?;
        self.run_value(call)
    }

    /// Runs the op named `op` (`load_policy`, `load_facts`, `apply_deltas`, `check`,
    /// `check_batch`, `explain` or `resolve`) on its one argument, given as a JS value or
    /// as JSON text; gives its answer as a plain value, or throws its error.
    #[wasm_bindgen(js_name = callWith)]
    pub fn call_with(&mut self, op: &str, arg: JsValue) -> Result<JsValue, JsValue> {
        let Some(spec) = Op::named(op) else {
            return Err(malformed(
                format!("unknown op `{op}`, expected one of {}", op_names()),
                &call_help(),
            ));
        };
        let call = match arg.as_string() {
            Some(text) => Call::from_arg(spec.op, &text).map_err(|e| js_error(&malformed_json(&e))),
            None => Reader::of(arg)
                .and_then(|r| Call::read_arg(spec.op, r))
                .map_err(|e| malformed(format!("malformed JSON: {e}"), "pass a JSON document")),
        }?;
        self.run_value(call)
    }

    /// Loads a snapshot from its bytes (policy included); gives what is loaded (`info`).
    #[wasm_bindgen(js_name = loadSnapshotValue)]
    pub fn load_snapshot_value(&mut self, bytes: &[u8]) -> Result<JsValue, JsValue> {
        let info = self
            .session
            .load_snapshot_info(bytes)
            .map_err(|e| js_error(&e))?;
        to_js(&Answer::Info(info))
    }

    /// Decides binary queries (24 bytes each); gives the binary decisions, unframed, or
    /// throws the error.
    #[wasm_bindgen(js_name = checkIdsValue)]
    pub fn check_ids_value(&self, queries: &[u8]) -> Result<Vec<u8>, JsValue> {
        // A decision is at least 10 bytes, 15 with one reason.
        let mut out = Vec::with_capacity(queries.len() / QUERY_LEN * 16);
        self.session
            .check_ids_into(queries, &mut out)
            .map_err(|e| js_error(&e))?;
        Ok(out)
    }

    /// The resources of `type` on which `principal` may take `action` at `now` (RFC 3339
    /// or seconds).
    #[wasm_bindgen(js_name = listResourcesValue)]
    pub fn list_resources_value(
        &mut self,
        principal: &str,
        action: &str,
        ty: &str,
        now: &str,
    ) -> Result<JsValue, JsValue> {
        self.run_value(Call::ListResources {
            principal: principal.into(),
            action: action.into(),
            ty: ty.into(),
            now: time(now),
        })
    }

    /// The principals who may take `action` on `resource` at `now`; for a page, `account`
    /// (may be empty) limits the answer to one account.
    #[wasm_bindgen(js_name = listPrincipalsValue)]
    pub fn list_principals_value(
        &mut self,
        resource: &str,
        action: &str,
        now: &str,
        account: &str,
    ) -> Result<JsValue, JsValue> {
        self.run_value(Call::ListPrincipals {
            resource: resource.into(),
            action: action.into(),
            now: time(now),
            account: (!account.is_empty()).then(|| account.to_string()),
        })
    }

    /// The access-rights matrix of `matrix`, as `account` (may be empty) sees it.
    #[wasm_bindgen(js_name = matrixValue)]
    pub fn matrix_value(&mut self, matrix: &str, account: &str) -> Result<JsValue, JsValue> {
        self.run_value(Call::Matrix {
            matrix: matrix.into(),
            account: (!account.is_empty()).then(|| account.to_string()),
        })
    }
}

impl Clearance {
    /// Runs a call read; its answer as a plain value, or its error thrown.
    fn run_value(&mut self, call: Call) -> Result<JsValue, JsValue> {
        let answer = self.session.run(call).map_err(|e| js_error(&e))?;
        to_js(&answer)
    }
}
