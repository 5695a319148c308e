//! Following the store: changes another host appended (or a restore) applied in order,
//! a resync from the store when the live state falls behind, and checkpoints written in
//! the background.

use crate::clock::now_seconds;
use crate::codes::Code;
use crate::service::error::ServiceError;
use crate::service::state::{LiveFacts, Served, Service, blocking};
use crate::store::{Change, StoredPolicy};
use clearance_core::{Schema, Snapshot, Source};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Service {
    /// Reads the served state again from the store (after an append whose outcome was
    /// unknown), under the writer's lock. Followers page the changes they missed.
    pub(crate) async fn resync(&self) -> Result<(), ServiceError> {
        if !self.needs_resync.load(Ordering::Acquire) {
            return Ok(());
        }
        let sources = self.served().sources.as_ref().clone();
        let latest = self
            .store
            .latest(None)
            .await
            .map_err(|e| ServiceError::store(e, "nothing was written; retry"))?;
        let ((served, snapshot, _, _), adopted) = blocking(move || {
            replay_with(latest, sources, false, &|_| {}).map_err(|m| {
                ServiceError::new(Code::StoreFailed, m).help("nothing was written; retry")
            })
        })
        .await?;
        if let Some(change) = adopted {
            // Only a store that kept no policy adopts one here, and a started service
            // has stored its own.
            self.store
                .append(change)
                .await
                .map_err(|e| ServiceError::store(e, "nothing was written; retry"))?;
        }
        let bytes = blocking(move || {
            snapshot
                .to_bytes()
                .map_err(|e| ServiceError::internal(e.to_string()))
        })
        .await?;
        let prepared = self.runtime.prepare(bytes).await?;
        self.runtime.install(prepared);
        tracing::info!(
            "read the state again from the store: revision {}",
            served.revision
        );
        self.publish(served);
        self.needs_resync.store(false, Ordering::Release);
        Ok(())
    }
}

/// Whether a stored change is this one.
pub(crate) fn same_change(stored: &Change, ours: &Change) -> bool {
    stored.revision == ours.revision
        && stored.author == ours.author
        && stored.at == ours.at
        && stored.policy == ours.policy
        && serde_json::to_string(&stored.deltas).ok() == serde_json::to_string(&ours.deltas).ok()
}

/// Recovers what a store holds (`latest`: its latest checkpoint and the changes after
/// it, or the base and every change), handing the snapshot carried from a checkpoint to
/// `carried` as soon as it is ready ([`crate::store::checkpoint::recover_with`]); then applies
/// the start rule for the policy files. Returns what to serve, its snapshot, the base
/// revision, the revision recovery began from with the changes applied after it, and the
/// change adopting the policy files, for the caller to store before serving. Blocking.
pub(crate) fn replay_with(
    latest: crate::store::Latest,
    files: Vec<Source>,
    adopt: bool,
    carried: &(dyn Fn(&Snapshot) + Sync),
) -> Result<(Started, Option<Change>), String> {
    let recovered = crate::store::checkpoint::recover_with(latest, carried)?;
    let mut adopted = None;
    let base_revision = recovered.base_revision;
    let started_from = (
        recovered.from,
        u64::try_from(recovered.replayed).unwrap_or(u64::MAX),
    );
    let carried = recovered.snapshot;
    let policy = recovered.policy;
    let schema = recovered.schema;
    let mut facts = recovered.facts;
    let file_policy = StoredPolicy::of(&files).map_err(|e| format!("the policy files: {e}"))?;
    let differs = policy.as_ref().is_none_or(|p| p.hash != file_policy.hash);
    let (schema, sources) = match (schema, policy) {
        (Some(schema), Some(p)) if !differs || !adopt => {
            if differs {
                tracing::warn!(
                    "the policy files (hash {}) differ from the stored policy (hash {}); serving the stored policy. Start with --adopt-policy to adopt the files, or reload them through the API",
                    file_policy.hash,
                    p.hash
                );
            }
            (schema, p.sources)
        }
        (stored_schema, _) => {
            // Adopt the files: every stored fact must hold under them first.
            let schema = Arc::new(Schema::compile(&files).map_err(|e| e.to_string())?);
            Snapshot::build(Arc::clone(&schema), &facts)
                .map_err(|e| format!("the stored facts do not hold under the policy files: {e}"))?;
            facts.revision += 1;
            let change = Change {
                revision: facts.revision,
                author: "host:start".into(),
                at: now_seconds(),
                deltas: Vec::new(),
                policy: Some(file_policy.clone()),
                via: None,
                accounts: Some(Vec::new()),
            };
            adopted = Some(change);
            tracing::info!(
                "adopted the policy files (hash {}) at revision {}{}",
                file_policy.hash,
                facts.revision,
                if stored_schema.is_some() {
                    " (--adopt-policy)"
                } else {
                    " (the store kept no policy)"
                }
            );
            (schema, files)
        }
    };
    // The snapshot carried from a checkpoint, when it is of the policy served.
    let snapshot =
        match carried.filter(|c| c.schema.hash == schema.hash && c.revision == facts.revision) {
            Some(c) => c,
            None => Snapshot::build(Arc::clone(&schema), &facts).map_err(|e| e.to_string())?,
        };
    Ok((
        (
            Served {
                revision: facts.revision,
                schema,
                sources: Arc::new(sources),
                facts: LiveFacts::new(facts),
            },
            snapshot,
            base_revision,
            started_from,
        ),
        adopted,
    ))
}

/// Follows the changes other hosts (or processes) append to a shared store, for as long
/// as the service lives: on the store's signal, when asked ([`Service::follow_now`]), and
/// every `follow_interval` besides, it asks the store for its last revision and, when
/// that is past the one served, catches up under the writer's lock.
pub(crate) async fn follow(
    service: std::sync::Weak<Service>,
    signal: Option<Arc<tokio::sync::Notify>>,
    soon: Arc<tokio::sync::Notify>,
) {
    let mut failing = false;
    loop {
        let Some(every) = service.upgrade().map(|s| s.config.follow_interval) else {
            return;
        };
        let every = if every.is_zero() {
            Duration::from_secs(1)
        } else {
            every
        };
        let tick = tokio::time::sleep(every);
        let signalled = async {
            match &signal {
                Some(n) => n.notified().await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = tick => {}
            () = signalled => {}
            () = soon.notified() => {}
        }
        let Some(s) = service.upgrade() else { return };
        let answered = s.store.last_revision().await;
        s.note_store(&answered);
        let last = match answered {
            Ok(last) => {
                if failing {
                    tracing::info!("the store answers again ({})", s.store.describe());
                    failing = false;
                }
                last
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("following the store: {e}");
                    failing = true;
                }
                continue;
            }
        };
        if last <= s.revision() {
            continue;
        }
        let _writer = s.writer.lock().await;
        if let Err(e) = s.catch_up().await {
            tracing::warn!("catching up with the store: {e:?}");
        }
    }
}

/// Writes checkpoints for as long as the service lives: once `checkpoint_changes`
/// changes follow the last one, or `checkpoint_interval` has passed with a change since,
/// or at once after a policy change; never two within `checkpoint_gap`.
pub(crate) async fn checkpoints(
    service: std::sync::Weak<Service>,
    mut last: u64,
    soon: Arc<tokio::sync::Notify>,
) {
    let Some(mut revision) = service.upgrade().map(|s| s.revision.subscribe()) else {
        return;
    };
    let mut since = tokio::time::Instant::now();
    let mut urgent = false;
    loop {
        let (every, interval, gap) = match service.upgrade() {
            Some(s) => (
                s.config.checkpoint_changes,
                s.config.checkpoint_interval,
                s.config.checkpoint_gap,
            ),
            None => return,
        };
        let current = *revision.borrow_and_update();
        let enabled = every > 0 || !interval.is_zero();
        let due = enabled
            && current > last
            && (urgent
                || (every > 0 && current - last >= every)
                || (!interval.is_zero() && since.elapsed() >= interval));
        if due && since.elapsed() >= gap {
            let Some(s) = service.upgrade() else { return };
            match s.checkpoint().await {
                Ok(Some(w)) => last = w.revision,
                Ok(None) => last = current,
                Err(e) => tracing::warn!("writing a checkpoint at revision {current}: {e}"),
            }
            drop(s);
            since = tokio::time::Instant::now();
            urgent = false;
            continue;
        }
        // Wait for a change, a policy change, the interval, or the end of the gap.
        let wake = if due {
            gap.saturating_sub(since.elapsed())
        } else if interval.is_zero() {
            Duration::from_secs(3600)
        } else {
            interval
                .saturating_sub(since.elapsed())
                .max(Duration::from_millis(10))
        };
        tokio::select! {
            changed = revision.changed() => if changed.is_err() { return },
            () = soon.notified() => urgent = true,
            () = tokio::time::sleep(wake) => {}
        }
    }
}

/// What start-up serves: the state, its snapshot, the base revision, and the
/// revision recovery began from with the changes applied after it.
pub(crate) type Started = (Served, Snapshot, u64, (u64, u64));
