//! The JavaScript face: a `Clearance` class whose methods take and give strings (JSON),
//! bytes and numbers, which keeps the module small and its TypeScript types exact. Its
//! calls that take and give JS values instead are in `values.rs` (the check path) and
//! `structured.rs` (the other calls).

use clearance_core::protocol::{Call, Op, Session, err, framed_error};
use clearance_core::{ErrorData, TimeValue};
use wasm_bindgen::prelude::*;

/// One engine: a policy, facts or a snapshot, and the decisions made on them.
#[wasm_bindgen]
pub struct Clearance {
    pub(crate) session: Session,
    pub(crate) cache: crate::values::Cache,
}

/// `now` as text: whole seconds, or RFC 3339.
pub fn time(now: &str) -> TimeValue {
    match now.trim().parse::<i64>() {
        Ok(s) => TimeValue::Seconds(s),
        Err(_) => TimeValue::Text(now.to_string()),
    }
}

#[wasm_bindgen]
impl Clearance {
    /// An empty session whose answers `builder` makes (see `index.js`).
    #[wasm_bindgen(constructor)]
    pub fn new(builder: crate::values::Builder) -> Clearance {
        Clearance {
            session: Session::default(),
            cache: crate::values::Cache::new(builder),
        }
    }

    /// Runs a JSON call (`{"op": ...}`) and gives the JSON answer: `{"ok": ...}` or
    /// `{"error": {code, message, help}, "allowed": false}`.
    pub fn call(&mut self, json: &str) -> String {
        self.session.call(json)
    }

    /// Compiles a policy set given as JSON `[{"name": ..., "text": ...}]`.
    #[wasm_bindgen(js_name = loadPolicy)]
    pub fn load_policy(&mut self, sources_json: &str) -> String {
        self.with(sources_json, Op::LoadPolicy)
    }

    /// Loads facts (the JSON facts document) and builds the snapshot.
    #[wasm_bindgen(js_name = loadFacts)]
    pub fn load_facts(&mut self, facts_json: &str) -> String {
        self.with(facts_json, Op::LoadFacts)
    }

    /// Applies a JSON list of deltas, all or nothing.
    #[wasm_bindgen(js_name = applyDeltas)]
    pub fn apply_deltas(&mut self, deltas_json: &str) -> String {
        self.with(deltas_json, Op::ApplyDeltas)
    }

    /// Loads a snapshot from its bytes (policy included).
    #[wasm_bindgen(js_name = loadSnapshot)]
    pub fn load_snapshot(&mut self, bytes: &[u8]) -> String {
        self.session.load_snapshot(bytes)
    }

    /// The loaded snapshot's bytes (empty if none is loaded).
    #[wasm_bindgen(js_name = snapshotBytes)]
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        self.session.snapshot_bytes().unwrap_or_default()
    }

    /// Decides one request given as JSON.
    pub fn check(&mut self, request_json: &str) -> String {
        self.with(request_json, Op::Check)
    }

    /// Decides a JSON list of requests.
    #[wasm_bindgen(js_name = checkBatch)]
    pub fn check_batch(&mut self, requests_json: &str) -> String {
        self.with(requests_json, Op::CheckBatch)
    }

    /// Decides binary queries (24 bytes each) and gives binary decisions; on an error, the
    /// first byte is 1 and JSON follows, else it is 0 and the decisions follow.
    #[wasm_bindgen(js_name = checkIds)]
    pub fn check_ids(&self, queries: &[u8]) -> Vec<u8> {
        self.session.check_ids(queries)
    }

    /// The actions `principal` may take on `resource` at `now` (RFC 3339 or seconds).
    #[wasm_bindgen(js_name = allowedActions)]
    pub fn allowed_actions(&mut self, principal: &str, resource: &str, now: &str) -> String {
        self.session.answer(Call::AllowedActions {
            principal: principal.into(),
            resource: resource.into(),
            now: time(now),
        })
    }

    /// The resources of `type` on which `principal` may take `action` at `now`.
    #[wasm_bindgen(js_name = listResources)]
    pub fn list_resources(&mut self, principal: &str, action: &str, ty: &str, now: &str) -> String {
        self.session.answer(Call::ListResources {
            principal: principal.into(),
            action: action.into(),
            ty: ty.into(),
            now: time(now),
        })
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
        self.session.answer(Call::ListPrincipals {
            resource: resource.into(),
            action: action.into(),
            now: time(now),
            account: (!account.is_empty()).then(|| account.to_string()),
        })
    }

    /// Decides and explains one request given as JSON.
    pub fn explain(&mut self, request_json: &str) -> String {
        self.with(request_json, Op::Explain)
    }

    /// The access-rights matrix of `matrix`, as `account` (may be empty) sees it.
    pub fn matrix(&mut self, matrix: &str, account: &str) -> String {
        self.session.answer(Call::Matrix {
            matrix: matrix.into(),
            account: (!account.is_empty()).then(|| account.to_string()),
        })
    }
}

impl Clearance {
    /// Reads the one JSON argument of a call as the type that call takes (in the core,
    /// so its JSON readers are not compiled a second time in this crate), and runs it.
    fn with(&mut self, arg: &str, op: Op) -> String {
        match Call::from_arg(op, arg) {
            Ok(call) => self.session.answer(call),
            Err(e) => err(&malformed_json(&e)),
        }
    }
}

/// The error of a call's argument that is not the JSON its op takes.
pub fn malformed_json(e: &serde_json::Error) -> ErrorData {
    ErrorData {
        code: "request.malformed".into(),
        message: format!(
            "malformed JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ),
        help: "pass a JSON document".into(),
    }
}

/// `0` then the payload, or `1` then the error as JSON.
pub fn framed(r: Result<Vec<u8>, ErrorData>) -> Vec<u8> {
    match r {
        Ok(mut b) => {
            b.insert(0, 0);
            b
        }
        Err(e) => framed_error(&e),
    }
}
