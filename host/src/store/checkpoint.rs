//! Checkpoints: the state at a revision (facts, policy, snapshot), kept in the store so
//! that start-up loads the latest one and applies only the changes after it, instead of
//! replaying the whole history and building the snapshot again.
//!
//! Start-up ([`recover`]) reads the facts and the snapshot on two threads: the facts from
//! the checkpoint's document with every later change applied, and the snapshot from the
//! checkpoint's bytes with the same changes applied in place. A snapshot that cannot be
//! carried (no checkpoint, a policy change after it, bytes of another format) is built
//! from the facts instead. A checkpoint is written off the write path
//! ([`write_checkpoint`]): from a second handle on the store, by the same recovery, so it
//! never holds the live facts or the store's appends.

use super::{Checkpoint, FactStore, Latest, StoredPolicy};
use clearance_core::{Facts, FactsJson, Schema, Snapshot};
use std::sync::Arc;

/// The state a store holds at a revision.
pub struct Recovered {
    /// The facts.
    pub facts: Facts,
    /// Their policy (none for a store from before policies were stored).
    pub policy: Option<StoredPolicy>,
    /// The policy compiled.
    pub schema: Option<Arc<Schema>>,
    /// The snapshot of the facts under the policy, when one was carried from a
    /// checkpoint; otherwise it is to be built.
    pub snapshot: Option<Snapshot>,
    /// The revision of the store's base.
    pub base_revision: u64,
    /// The revision of the checkpoint (or base) recovery started from.
    pub from: u64,
    /// Changes applied after it.
    pub replayed: usize,
}

/// The state of `store` at `upto` (the last revision when `None`): the latest checkpoint
/// that verifies, or the base, and the changes after it; the work is done on the
/// blocking pool.
pub async fn recover(store: &dyn FactStore, upto: Option<u64>) -> Result<Recovered, String> {
    let latest = store.latest(upto).await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || recover_with(latest, &|_| {}))
        .await
        .map_err(|e| e.to_string())?
}

/// The state `latest` (read from a store) describes, handing the snapshot carried from
/// the checkpoint to `carried` as soon as it is ready, while the facts are still being
/// read (start-up loads it into the module meanwhile). Blocking.
pub fn recover_with(
    latest: Latest,
    carried: &(dyn Fn(&Snapshot) + Sync),
) -> Result<Recovered, String> {
    let early = carried;
    for why in &latest.passed_over {
        tracing::warn!("passed over {why}; starting from an earlier state");
    }
    let Latest {
        base_revision,
        revision,
        facts,
        policy,
        snapshot,
        changes,
        ..
    } = latest;
    let replayed = changes.len();
    let carried = snapshot.filter(|_| changes.iter().all(|c| c.policy.is_none()));
    let (facts, snapshot) = std::thread::scope(|scope| {
        let snapshot = scope.spawn(|| {
            let s = carry(carried.as_deref(), revision, &changes);
            if let Some(s) = &s {
                early(s);
            }
            s
        });
        let facts = replay(&facts, revision, policy, &changes);
        let snapshot = snapshot.join().unwrap_or_else(|_| {
            tracing::warn!("carrying the checkpoint's snapshot failed; building it");
            None
        });
        (facts, snapshot)
    });
    let (facts, policy, schema) = facts?;
    Ok(Recovered {
        facts,
        policy,
        schema,
        snapshot,
        base_revision,
        from: revision,
        replayed,
    })
}

/// The checkpoint's snapshot with `changes` applied in place; `None` (said why) when it
/// cannot be carried, and is built from the facts instead.
fn carry(bytes: Option<&[u8]>, revision: u64, changes: &[super::Change]) -> Option<Snapshot> {
    let bytes = bytes?;
    if bytes.is_empty() {
        // An import's checkpoint: the facts only (see [`Checkpoint::snapshot`]).
        tracing::info!("the checkpoint at revision {revision} holds no snapshot yet; building it");
        return None;
    }
    let mut snapshot = Snapshot::from_bytes(bytes)
        .map_err(|e| tracing::warn!("the checkpoint's snapshot does not load ({e}); building it"))
        .ok()?;
    if snapshot.revision != revision {
        tracing::warn!(
            "the checkpoint at revision {revision} holds a snapshot of revision {}; building it",
            snapshot.revision
        );
        return None;
    }
    for c in changes {
        if let Err(e) = snapshot.apply(&c.deltas) {
            tracing::warn!(
                "revision {} does not apply to the checkpoint's snapshot ({e}); building it",
                c.revision
            );
            return None;
        }
    }
    Some(snapshot)
}

type Replayed = (Facts, Option<StoredPolicy>, Option<Arc<Schema>>);

/// The facts of a document at `revision` with `changes` applied, and the policy they end
/// under.
fn replay(
    text: &str,
    revision: u64,
    mut policy: Option<StoredPolicy>,
    changes: &[super::Change],
) -> Result<Replayed, String> {
    let at = format!("the facts at revision {revision}");
    let mut doc: FactsJson = serde_json::from_str(text).map_err(|x| format!("{at}: {x}"))?;
    doc.revision = revision;
    let mut facts = Facts::from_doc(doc).map_err(|x| format!("{at}: {x}"))?;
    let mut schema = match &policy {
        Some(p) => Some(p.compile(&format!("the policy at revision {revision}"))?),
        None => None,
    };
    for c in changes {
        match &c.policy {
            Some(p) => {
                schema = Some(p.compile(&format!("revision {}", c.revision))?);
                policy = Some(p.clone());
            }
            None => facts
                .extend(&c.deltas)
                .map_err(|e| format!("replaying revision {}: {e}", c.revision))?,
        }
        facts.revision = c.revision;
    }
    Ok((facts, policy, schema))
}

/// What a checkpoint written holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Its revision.
    pub revision: u64,
    /// The bytes of its facts document and its snapshot.
    pub facts_bytes: usize,
    /// The bytes of its snapshot.
    pub snapshot_bytes: usize,
    /// Changes applied to the checkpoint before it.
    pub replayed: usize,
    /// How long the store took to keep it (one transaction, during which appends
    /// through other handles wait).
    pub stored_in: std::time::Duration,
}

/// Writes a checkpoint of `store` at `upto` (the store's own reads and writes never hold
/// up its appends); `None` when the latest checkpoint is already at `upto`.
pub async fn write_checkpoint(store: &dyn FactStore, upto: u64) -> Result<Option<Written>, String> {
    let r = recover(store, Some(upto)).await?;
    if r.facts.revision != upto {
        return Err(format!(
            "the store holds revision {} where {upto} was asked",
            r.facts.revision
        ));
    }
    if r.from == upto
        && store
            .checkpoints()
            .await
            .map_err(|e| e.to_string())?
            .contains(&upto)
    {
        return Ok(None);
    }
    let (Some(policy), Some(schema)) = (r.policy, r.schema) else {
        return Err("the store keeps no policy yet: no checkpoint before it adopts one".into());
    };
    let replayed = r.replayed;
    let (facts, snapshot) = tokio::task::spawn_blocking(move || {
        let snapshot = match r.snapshot {
            Some(s) => s,
            None => Snapshot::build(schema, &r.facts).map_err(|e| e.to_string())?,
        };
        let snapshot = snapshot.to_bytes().map_err(|e| e.to_string())?;
        let facts = serde_json::to_string(&r.facts.doc()).map_err(|e| e.to_string())?;
        Ok::<_, String>((facts, snapshot))
    })
    .await
    .map_err(|e| e.to_string())??;
    let (facts_bytes, snapshot_bytes) = (facts.len(), snapshot.len());
    let t = std::time::Instant::now();
    store
        .put_checkpoint(Arc::new(Checkpoint {
            revision: upto,
            facts,
            policy,
            snapshot,
        }))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(Written {
        revision: upto,
        facts_bytes,
        snapshot_bytes,
        replayed,
        stored_in: t.elapsed(),
    }))
}

/// Adds `snapshot` (the snapshot at `revision`, built by a host starting on it) to the
/// checkpoint at `revision` that an import wrote with the facts only. Nothing is done
/// when that checkpoint is no longer the latest, or has its snapshot already.
pub async fn complete(
    store: &dyn FactStore,
    revision: u64,
    snapshot: Vec<u8>,
) -> Result<(), String> {
    let latest = store
        .latest(Some(revision))
        .await
        .map_err(|e| e.to_string())?;
    if latest.revision != revision || !latest.snapshot.as_deref().is_some_and(<[u8]>::is_empty) {
        return Ok(());
    }
    let policy = latest
        .policy
        .ok_or("the store keeps no policy: no checkpoint before it adopts one")?;
    let bytes = snapshot.len();
    let t = std::time::Instant::now();
    store
        .put_checkpoint(Arc::new(Checkpoint {
            revision,
            facts: latest.facts,
            policy,
            snapshot,
        }))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        "the checkpoint at revision {revision} now holds its snapshot ({bytes} bytes, stored in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
