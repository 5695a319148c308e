//! The OpenAPI document of the service, built from the same route list the router uses
//! (a test checks that every listed route answers).

use crate::service::ROUTES;
use serde_json::{Map, Value, json};

fn describe(method: &str, path: &str) -> (&'static str, &'static str) {
    match (method, path) {
        ("get", "/v1/revision") => ("The current revision, policy hash and module hash", "none"),
        ("post", "/v1/check") => (
            "Decide one request",
            "a request {principal, action, resource, target?, now, min_revision?}",
        ),
        ("post", "/v1/check/batch") => (
            "Decide many requests",
            "{requests: [request], min_revision?}",
        ),
        ("post", "/v1/allowed-actions") => (
            "Every action a principal may take on a resource",
            "{principal, resource, now}",
        ),
        ("post", "/v1/resources") => (
            "The resources of a type a principal may act on",
            "{principal, action, type, now}",
        ),
        ("post", "/v1/principals") => (
            "The principals who may act on a resource",
            "{resource, action, now, account?}",
        ),
        ("post", "/v1/explain") => (
            "Decide and explain: every failed check, or the granting path",
            "a request",
        ),
        ("get", "/v1/matrix/{matrix}") => (
            "The access-rights matrix: roles x rows with levels",
            "query: account?",
        ),
        ("get", "/v1/facts") => ("Every fact, at the current revision", "none"),
        ("post", "/v1/facts") => (
            "Apply deltas, if the policy allows their author to make them",
            "{author, deltas, now?, parity?: {module_hash, policy_hash, revision, request?, allowed?}}",
        ),
        ("get", "/v1/changes") => (
            "Server-sent events: every change after a revision",
            "query: since?",
        ),
        ("get", "/v1/slice/{principal}") => (
            "The facts that can influence a principal's decisions, with the policy, signed",
            "none",
        ),
        ("post", "/v1/policy/validate") => (
            "Compile a policy set without loading it",
            "{sources: [{name, text}]}",
        ),
        ("post", "/v1/policy/reload") => (
            "Replace the policy atomically (refused with its errors if it does not load)",
            "{sources?: [{name, text}]}",
        ),
        ("get", "/v1/slice-keys") => ("The public keys (a JWKS) that verify signed slices", "none"),
        ("get", "/v1/openapi.json") => ("This document", "none"),
        _ => ("", ""),
    }
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let (method, path) = (route.method, route.path);
        let (summary, body) = describe(method, path);
        let open = route.who.starts_with("anyone");
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(
                method.to_string(),
                json!({
                    "summary": summary,
                    "description": format!("Body: {body}. Who may call it: {}. Errors are {{code, message, help}} with \"allowed\": false.", route.who),
                    "security": if open { json!([]) } else { json!([{ "bearer": [] }]) },
                    "responses": {
                        "200": { "description": "the answer" },
                        "400": { "description": "bad input; nothing was written" },
                        "401": { "description": "no credentials, or credentials that are not valid (auth.missing, auth.invalid)" },
                        "403": { "description": "a caller not scoped to it (auth.forbidden), or a write the policy refuses, with the refusal" },
                        "409": { "description": "a stale parity token" },
                        "413": { "description": "a body, batch or write past its limit" },
                        "503": { "description": "the asked revision is not here yet, or the host is busy" }
                    }
                }),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Clearance", "version": env!("CARGO_PKG_VERSION"), "description": "Access checks for aviation operations, decided by the one wasm module" },
        "paths": paths,
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "a service key (clr_<id>_<secret>, from `clearance keys create`) or a user token (a JWT from the configured issuer)" } } },
    })
}
