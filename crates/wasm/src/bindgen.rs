//! The JavaScript face: a `Clearance` class whose methods take and give strings (JSON),
//! bytes and numbers, which keeps the module small and its TypeScript types exact.

use crate::ops::{Engine, err};
use clearance_core::{ErrorData, TimeValue};
use serde_json::json;
use wasm_bindgen::prelude::*;

/// One engine: a policy, facts or a snapshot, and the decisions made on them.
#[wasm_bindgen]
#[derive(Default)]
pub struct Clearance {
    engine: Engine,
}

fn time(now: &str) -> TimeValue {
    match now.trim().parse::<i64>() {
        Ok(s) => TimeValue::Seconds(s),
        Err(_) => TimeValue::Text(now.to_string()),
    }
}

#[wasm_bindgen]
impl Clearance {
    /// An empty engine.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Clearance {
        Clearance::default()
    }

    /// Runs a JSON call (`{"op": ...}`) and gives the JSON answer: `{"ok": ...}` or
    /// `{"error": {code, message, help}, "allowed": false}`.
    pub fn call(&mut self, json: &str) -> String {
        self.engine.call(json)
    }

    /// Compiles a policy set given as JSON `[{"name": ..., "text": ...}]`.
    #[wasm_bindgen(js_name = loadPolicy)]
    pub fn load_policy(&mut self, sources_json: &str) -> String {
        self.with(sources_json, |s| json!({"op": "load_policy", "sources": s}))
    }

    /// Loads facts (the JSON facts document) and builds the snapshot.
    #[wasm_bindgen(js_name = loadFacts)]
    pub fn load_facts(&mut self, facts_json: &str) -> String {
        self.with(facts_json, |f| json!({"op": "load_facts", "facts": f}))
    }

    /// Applies a JSON list of deltas, all or nothing.
    #[wasm_bindgen(js_name = applyDeltas)]
    pub fn apply_deltas(&mut self, deltas_json: &str) -> String {
        self.with(deltas_json, |d| json!({"op": "apply_deltas", "deltas": d}))
    }

    /// Loads a snapshot from its bytes (policy included).
    #[wasm_bindgen(js_name = loadSnapshot)]
    pub fn load_snapshot(&mut self, bytes: &[u8]) -> String {
        self.engine.load_snapshot(bytes)
    }

    /// The loaded snapshot's bytes (empty if none is loaded).
    #[wasm_bindgen(js_name = snapshotBytes)]
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        self.engine.snapshot_bytes().unwrap_or_default()
    }

    /// Decides one request given as JSON.
    pub fn check(&mut self, request_json: &str) -> String {
        self.with(request_json, |r| json!({"op": "check", "request": r}))
    }

    /// Decides a JSON list of requests.
    #[wasm_bindgen(js_name = checkBatch)]
    pub fn check_batch(&mut self, requests_json: &str) -> String {
        self.with(
            requests_json,
            |r| json!({"op": "check_batch", "requests": r}),
        )
    }

    /// Decides binary queries (24 bytes each) and gives binary decisions; on an error, the
    /// first byte is 1 and JSON follows, else it is 0 and the decisions follow.
    #[wasm_bindgen(js_name = checkIds)]
    pub fn check_ids(&self, queries: &[u8]) -> Vec<u8> {
        framed(self.engine.check_ids(queries))
    }

    /// Checks a write (X4) against the snapshot of the facts after it: `write_json` is
    /// `{"author", "now", "deltas"}`; the loaded snapshot is the before.
    #[wasm_bindgen(js_name = authorizeAgainst)]
    pub fn authorize_against(&self, write_json: &str, after: &[u8]) -> String {
        let mut input = (write_json.len() as u32).to_le_bytes().to_vec();
        input.extend_from_slice(write_json.as_bytes());
        input.extend_from_slice(after);
        self.engine.authorize_against(&input)
    }

    /// The actions `principal` may take on `resource` at `now` (RFC 3339 or seconds).
    #[wasm_bindgen(js_name = allowedActions)]
    pub fn allowed_actions(&mut self, principal: &str, resource: &str, now: &str) -> String {
        self.run(json!({"op": "allowed_actions", "principal": principal, "resource": resource, "now": time(now)}))
    }

    /// The resources of `type` on which `principal` may take `action` at `now`.
    #[wasm_bindgen(js_name = listResources)]
    pub fn list_resources(&mut self, principal: &str, action: &str, ty: &str, now: &str) -> String {
        self.run(json!({"op": "list_resources", "principal": principal, "action": action, "type": ty, "now": time(now)}))
    }

    /// The principals who may take `action` on `resource` at `now`; for a page, `account`
    /// (may be empty) limits the answer to one account.
    #[wasm_bindgen(js_name = listPrincipals)]
    pub fn list_principals(
        &mut self,
        resource: &str,
        action: &str,
        now: &str,
        account: &str,
    ) -> String {
        let account = (!account.is_empty()).then_some(account);
        self.run(json!({"op": "list_principals", "resource": resource, "action": action, "now": time(now), "account": account}))
    }

    /// Decides and explains one request given as JSON.
    pub fn explain(&mut self, request_json: &str) -> String {
        self.with(request_json, |r| json!({"op": "explain", "request": r}))
    }

    /// The access-rights matrix of `matrix`, as `account` (may be empty) sees it.
    pub fn matrix(&mut self, matrix: &str, account: &str) -> String {
        let account = (!account.is_empty()).then_some(account);
        self.run(json!({"op": "matrix", "matrix": matrix, "account": account}))
    }
}

impl Clearance {
    fn run(&mut self, call: serde_json::Value) -> String {
        self.engine.call(&call.to_string())
    }

    fn with(
        &mut self,
        arg: &str,
        wrap: impl FnOnce(serde_json::Value) -> serde_json::Value,
    ) -> String {
        match serde_json::from_str(arg) {
            Ok(v) => self.run(wrap(v)),
            Err(e) => err(&ErrorData {
                code: "request.malformed".into(),
                message: format!(
                    "malformed JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
                help: "pass a JSON document".into(),
            }),
        }
    }
}

/// `0` then the payload, or `1` then the error as JSON.
pub fn framed(r: Result<Vec<u8>, ErrorData>) -> Vec<u8> {
    match r {
        Ok(mut b) => {
            b.insert(0, 0);
            b
        }
        Err(e) => {
            let mut b = vec![1];
            b.extend_from_slice(err(&e).as_bytes());
            b
        }
    }
}
