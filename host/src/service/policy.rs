//! Policy reloads: the new policy compiled, the live facts checked against it and the
//! change stored like any other, so every host serves it at the same revision.

use crate::clock::now_seconds;
use crate::schemas;
use crate::service::error::ServiceError;
use crate::service::state::{LiveFacts, Served, Service, blocking};
use crate::store::{Change, StoredPolicy};
use clearance_core::ErrorData;
use clearance_core::{Schema, Snapshot, Source};
use serde_json::{Value, json};
use std::sync::Arc;

/// Reloads the policy to `sources`: compiled, the live facts built into a snapshot under
/// it (refused, nothing stored, if they do not fit it), then stored and made current.
pub(crate) async fn apply_reload(
    s: &Arc<Service>,
    sources: Vec<Source>,
) -> Result<schemas::Reloaded, ServiceError> {
    let compiled = sources.clone();
    let schema = blocking(move || {
        Schema::compile(&compiled)
            .map(Arc::new)
            .map_err(policy_errors)
    })
    .await?;
    let _writer = s.writer.lock().await;
    s.resync().await?;
    let served = s.served();
    let (facts, next_schema) = (Arc::clone(&served.facts), Arc::clone(&schema));
    let (next, bytes) = blocking(move || {
        let mut next = facts.read().clone();
        next.revision += 1;
        let bytes = Snapshot::build(next_schema, &next)
            .and_then(|s| s.to_bytes())
            .map_err(|e| ServiceError::bad(e.into()))?;
        Ok((next, bytes))
    })
    .await?;
    let prepared = s.runtime.prepare(bytes).await?;
    let hash = schema.hash_hex();
    let revision = next.revision;
    let change = Change {
        revision,
        author: "operator".into(),
        at: now_seconds(),
        deltas: Vec::new(),
        policy: Some(StoredPolicy {
            hash: hash.clone(),
            sources: sources.clone(),
        }),
        via: None,
        accounts: Some(Vec::new()),
    };
    s.commit(
        change,
        prepared,
        Served {
            revision,
            schema,
            sources: Arc::new(sources),
            facts: LiveFacts::new(next),
        },
    )
    .await?;
    // Start-up after a policy change builds the snapshot unless a checkpoint follows it.
    s.checkpoint_soon.notify_one();
    Ok(schemas::Reloaded {
        reloaded: true,
        policy_hash: hash,
        revision,
    })
}

pub(crate) fn policy_errors(e: clearance_core::PolicyErrors) -> ServiceError {
    let list: Vec<Value> = e.0.iter().map(|x| json!({ "file": x.span.file, "line": x.span.line, "col": x.span.col, "message": x.message })).collect();
    let mut err = ServiceError::bad(ErrorData::from(e));
    err.extra = Some(json!({ "errors": list }));
    err
}
