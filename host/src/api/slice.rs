//! Principal slices (signed, for browsers and edges) and the policy routes: validate a
//! policy, reload the one served.

use crate::api::access::{Access, user_gates};
use crate::api::error::{ApiResult, answer};
use crate::api::extract::{ApiJson, ApiPath, S};
use crate::auth::{Caller, Scope};
use crate::clock::now_seconds;
use crate::codes::Code;
use crate::policy_dir::read_policies;
use crate::schemas;
use crate::service::error::{ServiceError, forbidden};
use crate::service::policy::{apply_reload, policy_errors};
use crate::service::state::blocking;
use axum::Json;
use axum::extract::State;
use clearance_core::{ErrorData, Schema, Source};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The facts that can influence a principal's decisions, with the policy to load them
/// under, signed: of its account only (tenancy is structural, so nothing outside the
/// account can matter), and of that only what the policy reads for this principal.
pub(crate) async fn slice(
    State(s): S,
    caller: Caller,
    ApiPath(principal): ApiPath<String>,
) -> ApiResult {
    let served = s.served();
    if matches!(
        caller,
        Caller::Key {
            scope: Scope::Read,
            ..
        }
    ) {
        return Err(forbidden("a read key decides only; it cannot fetch facts"));
    }
    Access {
        caller: &caller,
        served: &served,
    }
    .decide_for(&principal)?;
    user_gates(&s, &caller).await?;
    // A slice is built off the instances, but as large as what its principal may reach
    // (a guest list of thousands): it takes one of its caller's turns, so one caller's
    // slices are built one fewer at a time than there are instances, however many it
    // sends.
    let turn = s.runtime.turn(&caller.name()).await?;
    let (signer, ttl) = (Arc::clone(&s.signer), s.config.slice_ttl);
    blocking(move || {
        let _turn = turn;
        let live = served.facts.read();
        let Some(p) = live.entities.get(&principal) else {
            return Err(ServiceError::new(Code::EntityUnknown, format!("no principal `{principal}`")).help("name a principal as `type:id`"));
        };
        let account = p.account.clone();
        // Only what the policy reads when it decides for this principal (core's
        // `principal_slice`): other users' emails, guests' addresses, others' roles and
        // authorisations stay on the server.
        let facts = clearance_core::principal_slice(&served.schema, &live, &principal)
            .map_err(|e| ServiceError::bad(ErrorData::from(e)))?;
        let revision = live.revision;
        drop(live);
        let policy: Vec<Value> = served
            .sources
            .iter()
            .map(|s| json!({ "name": s.name, "text": s.text }))
            .collect();
        // Issued and expiring by the wall clock (not a demo's dated one): the expiry
        // bounds how long a copy is trusted where it is loaded.
        let issued = now_seconds();
        let expires = issued.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let slice = json!({ "principal": principal, "account": account, "revision": revision, "policy_hash": served.schema.hash_hex(), "issued": issued, "expires": expires, "policy": policy, "facts": facts });
        Ok(Json(signer.sign(slice.to_string())))
    })
    .await
}

/// The public keys that verify slices, as a JWKS.
pub(crate) async fn slice_keys(State(s): S) -> Json<Value> {
    Json(s.signer.jwks())
}

/// `{sources?}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyBody {
    /// The policy's sources; for a reload, without them the policy directory is read
    /// again.
    pub(crate) sources: Option<Vec<SourceBody>>,
}

/// A policy source.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceBody {
    /// The file name its errors are reported under.
    pub(crate) name: String,
    /// The policy text.
    pub(crate) text: String,
}

pub(crate) fn sources_of(body: PolicyBody) -> Option<Vec<Source>> {
    body.sources.map(|list| {
        list.into_iter()
            .map(|s| Source::new(s.name, s.text))
            .collect()
    })
}

pub(crate) async fn validate(ApiJson(body): ApiJson<PolicyBody>) -> ApiResult {
    let sources = sources_of(body).unwrap_or_default();
    blocking(move || {
        let schema = Schema::compile(&sources).map_err(policy_errors)?;
        answer(schemas::Validated {
            valid: true,
            policy_hash: schema.hash_hex(),
        })
    })
    .await
}

/// Replaces the policy atomically: the new one must compile and every fact must hold under
/// it; otherwise it is refused with its errors and the old one keeps serving. An accepted
/// policy is stored as a change (its sources and hash), so a restart serves it.
pub(crate) async fn reload(State(s): S, ApiJson(body): ApiJson<PolicyBody>) -> ApiResult {
    let sources = match sources_of(body) {
        Some(list) => list,
        None => match &s.policy_dir {
            Some(dir) => {
                let dir = dir.clone();
                blocking(move || {
                    read_policies(&dir).map_err(|m| ServiceError::new(Code::PolicyUnreadable, m))
                })
                .await?
            }
            None => {
                return Err(ServiceError::new(
                    Code::PolicyMissing,
                    "no sources given and no policy directory",
                ));
            }
        },
    };
    let reloaded = tokio::spawn(async move { apply_reload(&s, sources).await })
        .await
        .map_err(|e| ServiceError::internal(format!("the reload's task failed: {e}")))??;
    answer(reloaded)
}
