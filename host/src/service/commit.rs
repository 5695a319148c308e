//! The write pipeline: writes queued per caller, judged in order through the module at
//! the latest revision, appended to the store as one group, made current, and each
//! waiting writer answered; a conflict with another host is caught up and judged again.

use crate::auth::Caller;
use crate::codes::Code;
use crate::limits::{FairQueue, Full};
use crate::observe::Decided;
use crate::runtime::HostError;
use crate::service::error::{ServiceError, forbidden};
use crate::service::follow::same_change;
use crate::service::queue::Authored;
use crate::service::queue::QueuedWrite;
use crate::service::queue::Reply;
use crate::service::queue::WriteBody;
use crate::service::queue::WriteResult;
use crate::service::quota::Charge;
use crate::service::state::{Served, Service, account_key, blocking};
use crate::store::{Change, StoreErrorKind};
use clearance_core::ErrorCode;
use clearance_core::protocol::Call;
use clearance_core::protocol::WriteAnswer;
use clearance_core::{Delta, Facts, TimeValue};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

impl Service {
    /// Appends changes to the store, in one transaction, off the async workers. A failed
    /// append is read back: if these very changes are stored after all, they count as
    /// appended; if not,
    /// nothing changed. When the store cannot say, or holds something else at that
    /// revision, the service reads its state again from the store before the next write
    /// ([`Service::resync`]).
    pub(crate) async fn append(&self, changes: &Arc<Vec<Change>>) -> Result<(), ServiceError> {
        let started = std::time::Instant::now();
        let span = tracing::info_span!("store.append", changes = changes.len());
        let appended =
            tracing::Instrument::instrument(self.store.append_all(Arc::clone(changes)), span).await;
        self.metrics.append(started.elapsed());
        if let Err(e) = appended {
            if e.kind == StoreErrorKind::Conflict {
                // Nothing was stored: another host holds the revision.
                return Err(ServiceError::new(Code::RevisionConflict, e.to_string()));
            }
            // One transaction: the last change stored means all of them are.
            let Some(last) = changes.last() else {
                return Err(ServiceError::store(e, "nothing was written; retry"));
            };
            let revision = last.revision;
            let ours = last.clone();
            let read_back = self
                .store
                .changes_page(revision - 1, 1, usize::MAX)
                .await
                .map(|page| {
                    page.first()
                        .filter(|c| c.revision == revision)
                        .map(|c| same_change(c, &ours))
                });
            match read_back {
                Ok(Some(true)) => {
                    tracing::info!(
                        "the append of revision {revision} reported `{e}` but it is stored; serving it"
                    );
                }
                Ok(found) => {
                    if found.is_some() {
                        // Another change holds this revision: memory is behind the store.
                        self.needs_resync.store(true, Ordering::Release);
                    }
                    return Err(ServiceError::store(e, "nothing was written; retry"));
                }
                Err(again) => {
                    // Neither stored nor known not to be: no answer either way; the state
                    // is read again from the store before the next write.
                    self.needs_resync.store(true, Ordering::Release);
                    tracing::warn!(
                        "revision {revision}: the append failed (`{e}`) and the store cannot say whether it holds it (`{again}`)"
                    );
                    return Err(ServiceError::new(Code::StoreUnknown, format!("{e}; reading it back: {again}")).help("whether this write was stored is unknown: read it back after the store recovers"));
                }
            }
        }
        Ok(())
    }

    /// Appends a change and makes `prepared` (a snapshot built whole: a new policy)
    /// current.
    pub(crate) async fn commit(
        &self,
        change: Change,
        prepared: crate::runtime::Prepared,
        next: Served,
    ) -> Result<(), ServiceError> {
        let change = Arc::new(change);
        self.append(&Arc::new(vec![change.as_ref().clone()]))
            .await?;
        self.runtime.install(prepared);
        self.publish(next);
        let _ = self.changes.send(change);
        Ok(())
    }

    /// Commits a group of writes ([`group_commit`]) and answers each: the checks made
    /// before judging, then every write judged in order on one instance, each on the
    /// state the ones before it leave (`writes::write` in the module, kept pending), the
    /// allowed ones appended in one transaction, and only then applied in place to the
    /// facts (under their write lock, for as long as the deltas take) and handed to the
    /// instances, each before its next call. Nothing is copied or rebuilt.
    pub(crate) async fn commit_writes(self: &Arc<Self>, group: Vec<QueuedWrite>) {
        let _writer = self.writer.lock().await;
        self.commit_writes_locked(group).await;
        // Other hosts' appends, if this group held them off and stored nothing.
        if let Err(e) = self.store.release_appends().await {
            tracing::warn!("letting other hosts append again: {e}");
        }
    }

    /// Reads the module's answers to a group judged in order: for each write, its derived
    /// tuples and the accounts it touches when allowed, its refusal when not. The accounts
    /// are those of the entities it names on the facts served, or created by the allowed
    /// writes before it; a write that touches one its caller may not write to is
    /// [`Judged::OutOfScope`].
    pub(crate) fn judged(
        &self,
        served: &Served,
        ready: &[Ready],
        answers: Vec<Result<Box<serde_json::value::RawValue>, HostError>>,
    ) -> Result<Vec<Result<Allowed, ServiceError>>, Box<Judged>> {
        let facts = served.facts.read();
        let mut created = HashMap::new();
        let mut revision = served.revision;
        let mut out = Vec::with_capacity(ready.len());
        for (i, (r, answer)) in ready.iter().zip(answers).enumerate() {
            let derived = match answer {
                Ok(a) => {
                    let answer: WriteAnswer = serde_json::from_str(a.get()).map_err(|e| {
                        Box::new(Judged::Fault(ServiceError::internal(format!(
                            "unreadable answer to a write from the module: {e}"
                        ))))
                    })?;
                    verdict(&answer, revision + 1).map_err(|e| Box::new(Judged::Fault(e)))?
                }
                Err(e) => Err(ServiceError::from(e)),
            };
            let Ok(derived) = derived else {
                out.push(derived.map(|d| (d, Vec::new())));
                continue;
            };
            // The tuples the policy derives on creation are of the created entity's
            // account, so the deltas asked for name every account the change touches.
            let accounts = touched_accounts(&facts, &created, &r.deltas);
            if let Some(mine) = &r.authored.accounts
                && let Some(other) = accounts.iter().find(|a| !mine.contains(a))
            {
                return Err(Box::new(Judged::OutOfScope(
                    i,
                    forbidden(format!(
                        "the write touches `{other}`, which is not an account of this caller; nothing was written"
                    )),
                )));
            }
            created.extend(created_accounts(&r.deltas));
            revision += 1;
            out.push(Ok((derived, accounts)));
        }
        Ok(out)
    }

    /// Applies stored changes of facts in place, off the async workers: to the facts,
    /// then to the instances (each before its next call); then serves them. False when the
    /// facts refused one (they are then not to be trusted: the caller reads the store
    /// again).
    pub(crate) async fn apply_stored(
        self: &Arc<Self>,
        served: &Served,
        group: &Arc<Vec<Change>>,
    ) -> bool {
        let Some(last) = group.last() else {
            return true;
        };
        let (facts, changes) = (Arc::clone(&served.facts), Arc::clone(group));
        let applied = tokio::task::spawn_blocking(move || {
            // The tuples that entities removed take with them are found while others read;
            // the write lock is then held only for what the changes change.
            let lists = || changes.iter().map(|c| c.deltas.as_slice());
            let mut found = facts.read().removals(lists());
            let mut facts = facts.write();
            if found.revision() != facts.revision {
                found = facts.removals(lists());
            }
            for change in changes.iter() {
                facts
                    .extend_found(&change.deltas, &mut found)
                    .map_err(|e| format!("revision {}: {e}", change.revision))?;
                facts.revision = change.revision;
            }
            Ok::<(), String>(())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        if let Err(e) = applied {
            tracing::warn!(
                "the facts refused a stored change the module took ({e}); reading the store again"
            );
            return false;
        }
        for change in group.iter() {
            let call = Call::ApplyDeltas {
                deltas: change.deltas.clone(),
            }
            .to_json();
            match call {
                Ok(call) => self.runtime.push_change(change.revision, call),
                Err(e) => {
                    // Not expected (the deltas were read from JSON); the instances are
                    // given the whole state again instead.
                    tracing::warn!("revision {}: {e:?}", change.revision);
                    return false;
                }
            }
        }
        self.publish(Served {
            revision: last.revision,
            schema: Arc::clone(&served.schema),
            sources: Arc::clone(&served.sources),
            facts: Arc::clone(&served.facts),
        });
        true
    }

    /// Serves the changes other hosts (or processes) appended after the revision served,
    /// in order, applied in place as this host's own writes are, and hands them to the
    /// change feeds. A policy change among them is served by reading the state again.
    /// Called under the writer's lock.
    pub(crate) async fn catch_up(self: &Arc<Self>) -> Result<(), ServiceError> {
        loop {
            let served = self.served();
            let page = self
                .store
                .changes_page(
                    served.revision,
                    self.config.feed_page,
                    self.config.feed_page_bytes,
                )
                .await
                .map_err(|e| ServiceError::store(e, "nothing was written; retry"))?;
            let Some(first) = page.first() else {
                return Ok(());
            };
            let facts_only: Vec<Change> = page
                .iter()
                .take_while(|c| c.policy.is_none())
                .cloned()
                .collect();
            if first.revision != served.revision + 1 || facts_only.is_empty() {
                // A policy change (or changes this host cannot apply in place): the whole
                // state is read again; followers of the feed page what they missed.
                self.needs_resync.store(true, Ordering::Release);
                self.resync().await?;
                let _ = self.changes.send(Arc::new(first.clone()));
                continue;
            }
            let group = Arc::new(facts_only);
            if !self.apply_stored(&served, &group).await {
                self.needs_resync.store(true, Ordering::Release);
                self.resync().await?;
                continue;
            }
            for change in group.iter() {
                let _ = self.changes.send(Arc::new(change.clone()));
            }
        }
    }
}

/// The entities `deltas` create, with their accounts (`account:<id>`).
pub(crate) fn created_accounts(deltas: &[Delta]) -> HashMap<String, String> {
    deltas
        .iter()
        .filter_map(|d| match d {
            Delta::AddEntity { entity } => Some((
                clearance_core::facts::entity_key(&entity.ty, &entity.id),
                account_key(entity.account.as_deref().unwrap_or(&entity.id)),
            )),
            _ => None,
        })
        .collect()
}

/// The accounts whose facts `deltas` touch: those of the entities they name, from the
/// facts before them or, for an entity they or the allowed writes before them in the same
/// group (`earlier`) create, from its creation.
/// The accounts (`account:<id>`) whose facts `deltas` touch, applied to `before`: what a
/// change records, so that followers scoped to accounts see it.
pub fn accounts_touched(before: &Facts, deltas: &[Delta]) -> Vec<String> {
    touched_accounts(before, &HashMap::new(), deltas)
}

pub(crate) fn touched_accounts(
    before: &Facts,
    earlier: &HashMap<String, String>,
    deltas: &[Delta],
) -> Vec<String> {
    let created = created_accounts(deltas);
    let mut declared = Vec::new();
    let mut out = std::collections::BTreeSet::new();
    let mut see = |key: &str| {
        // An entity that exists is of its own account, whatever a write claims.
        if let Some(e) = before.entities.get(key) {
            out.insert(account_key(&e.account));
        } else if let Some(a) = created.get(key).or_else(|| earlier.get(key)) {
            out.insert(a.clone());
        }
    };
    for d in deltas {
        match d {
            // The account it names, and the one of an entity of that name already there.
            Delta::AddEntity { entity } => {
                see(&clearance_core::facts::entity_key(&entity.ty, &entity.id));
                declared.push(account_key(entity.account.as_deref().unwrap_or(&entity.id)));
            }
            Delta::RemoveEntity { entity } | Delta::SetAttr { entity, .. } => see(entity),
            Delta::AddTuple { tuple } | Delta::RemoveTuple { tuple } => {
                see(&tuple.resource);
                see(&tuple.subject);
            }
        }
    }
    out.extend(declared);
    out.into_iter().collect()
}

/// Queues an authorised write for the group commit and waits for its answer. A large one
/// is judged on an instance before it is queued, so that one the policy refuses never
/// takes the writer; a caller may have at most [`WRITES_PER_CALLER`] writes waiting.
pub(crate) async fn queue_write(
    s: &Service,
    caller: &Caller,
    body: WriteBody,
    authored: Authored,
    charge: Option<Charge>,
) -> WriteResult {
    let n = body.deltas.len();
    let body = if n > PREJUDGED_DELTAS && body.parity.is_none() {
        prejudge(s, caller, body, &authored).await?
    } else {
        body
    };
    let name = caller.name();
    let place = s.write_places.take(&name).map_err(|full| {
        ServiceError::new(
            Code::HostBusy,
            match full {
                Full::Caller(n) => format!("`{name}` has {n} writes waiting already"),
                Full::All(n) => format!("{n} writes are already waiting"),
            },
        )
        .help("retry later; nothing was written")
    })?;
    // The group commit's task, not this one, carries the write through: a client hanging
    // up cannot stop a write between the store and memory.
    let (to, answer) = tokio::sync::oneshot::channel();
    s.writes
        .try_send(QueuedWrite {
            body,
            authored,
            reply: Reply { to, charge },
            caller: name,
            _place: place,
        })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ServiceError::new(
                Code::HostBusy,
                format!("{WRITE_QUEUE} writes are already waiting"),
            )
            .help("retry later; nothing was written"),
            mpsc::error::TrySendError::Closed(_) => {
                ServiceError::internal("the service is stopping; nothing was written")
            }
        })?;
    answer
        .await
        .map_err(|_| ServiceError::internal("the write's task ended without an answer"))?
}

/// Writes of more deltas than this are judged on an instance, in their caller's turn,
/// before they are queued for the writer ([`prejudge`]).
pub(crate) const PREJUDGED_DELTAS: usize = 64;

/// Judges a large write on an instance at the latest revision, in its caller's turn
/// (`authorize_deltas`: the write pipeline, undone whatever it finds), before it takes the
/// writer, and answers a refusal at once: a refused write changes nothing, so refusing it
/// on the revision it was judged on is as if it had been judged in order there. An allowed
/// write is given back, to be judged again in order by the group commit.
pub(crate) async fn prejudge(
    s: &Service,
    caller: &Caller,
    mut body: WriteBody,
    authored: &Authored,
) -> Result<WriteBody, ServiceError> {
    let call = Call::AuthorizeDeltas {
        author: authored.author.clone(),
        now: body.now.clone().unwrap_or(TimeValue::Seconds(s.clock())),
        deltas: std::mem::take(&mut body.deltas),
    };
    let turn = s.runtime.turn(&caller.name()).await?;
    // Its text is written off the async workers, which serve other callers meanwhile.
    let (json, deltas) = blocking(move || {
        let json = call.to_json().map_err(ServiceError::bad);
        let Call::AuthorizeDeltas { deltas, .. } = call else {
            return Err(ServiceError::internal("the judgement's call changed"));
        };
        Ok((json, deltas))
    })
    .await?;
    body.deltas = deltas;
    let answer: WriteAnswer = s.runtime.call_typed(json?).await?;
    drop(turn);
    if !answer.allowed
        && let Ok(Err(refused)) = verdict(&answer, 0)
    {
        return Err(refused);
    }
    Ok(body)
}

/// A change of more deltas than this (an import) reaches change feeds as a `reset`.
pub(crate) const BULK_DELTAS: usize = 10_000;

/// Writes that may wait for the group commit; one more is answered 503 `host.busy`.
pub(crate) const WRITE_QUEUE: usize = 1024;

/// Writes one caller may have waiting for the group commit; one more is answered 503
/// `host.busy`, so that no caller takes every place.
pub(crate) const WRITES_PER_CALLER: usize = WRITE_QUEUE / 4;

/// Writes committed together at most: one store transaction, one sync to disk.
pub(crate) const GROUP: usize = 64;

/// Deltas a group holds at most, unless its first write alone has more: a write waits for
/// about this much of others' work, or one large write, before its own group.
pub(crate) const GROUP_DELTAS: usize = 1024;

/// A write that passed the checks made before judging, about to be judged.
pub(crate) struct Ready {
    pub(crate) call: String,
    pub(crate) authored: Authored,
    pub(crate) deltas: Vec<Delta>,
    pub(crate) reply: Reply,
}

/// An allowed write of a group: the tuples the policy derived, and the accounts it touches.
pub(crate) type Allowed = (Vec<Delta>, Vec<String>);

/// Why a group judged in order cannot be stored as judged.
pub(crate) enum Judged {
    /// The module and the host disagree (on a revision, say): nothing of it is stored.
    Fault(ServiceError),
    /// The write at this index touches an account its caller may not write to.
    OutOfScope(usize, ServiceError),
}

/// The group commit: takes the writes waiting, a caller at a time in turn (up to
/// [`GROUP`] writes and [`GROUP_DELTAS`] deltas, or one larger write alone), judges them in
/// order on one instance (each on the state the ones before it leave), appends the
/// allowed ones in one transaction, then applies them and answers each. Runs for as long
/// as the service lives. One caller's many or large writes so delay another's by a group
/// at most.
///
/// A write with a parity token starts a group of its own making, so the decision it relied
/// on is checked again on the state it is judged on. Each group runs in a task of its own:
/// were one to panic, its writes are answered 500 and the next group goes on.
pub(crate) async fn group_commit(
    service: std::sync::Weak<Service>,
    mut queue: mpsc::Receiver<QueuedWrite>,
) {
    let mut waiting: FairQueue<QueuedWrite> = FairQueue::default();
    loop {
        if waiting.is_empty() {
            match queue.recv().await {
                Some(w) => waiting.push(&w.caller.clone(), w),
                None => return,
            }
        }
        while let Ok(w) = queue.try_recv() {
            waiting.push(&w.caller.clone(), w);
        }
        let mut batch: Vec<QueuedWrite> = Vec::new();
        let mut deltas = 0;
        while batch.len() < GROUP {
            let first = batch.is_empty();
            let next = waiting.pop_if(|w| {
                first || (w.body.parity.is_none() && deltas + w.body.deltas.len() <= GROUP_DELTAS)
            });
            let Some(w) = next else { break };
            deltas += w.body.deltas.len();
            batch.push(w);
        }
        let Some(s) = service.upgrade() else { return };
        let _ = tokio::spawn(async move { s.commit_writes(batch).await }).await;
    }
}

/// The checks of one write made before it is judged, on the state being served: its
/// parity token, and the accounts it touches (`created`: the accounts of the entities
/// created by the writes before it in the same group).
pub(crate) async fn prepare_write(
    s: &Arc<Service>,
    served: &Served,
    body: WriteBody,
    authored: Authored,
) -> Result<(String, Vec<Delta>, Authored), ServiceError> {
    if let Some(p) = &body.parity {
        if p.module_hash != s.runtime.module_hash() || p.policy_hash != served.schema.hash_hex() {
            return Err(ServiceError::new(Code::ParityStale, format!(
                    "the client decided on module {} and policy {}, the host runs module {} and policy {}",
                    p.module_hash,
                    p.policy_hash,
                    s.runtime.module_hash(),
                    served.schema.hash_hex()
                )).help("reload the module and the policy, decide again, then write"));
        }
        if p.revision > served.revision {
            return Err(ServiceError::new(
                Code::ParityFuture,
                format!(
                    "the client decided on revision {}, ahead of the host's {}",
                    p.revision, served.revision
                ),
            ));
        }
        if let (Some(request), Some(allowed)) = (&p.request, p.allowed)
            && p.revision < served.revision
        {
            let mut request = request.clone();
            if authored.user {
                request.now = TimeValue::Seconds(s.clock());
            }
            let now = s.runtime.run_raw(&Call::Check { request }).await?;
            let now = Decided::read(now.get());
            if now.each.first().map(|d| d.allowed) != Some(allowed) {
                return Err(ServiceError::new(Code::ParityOutcomeChanged, format!(
                        "the client's decision (allowed: {allowed}) was made at revision {}; at revision {} it is no longer so",
                        p.revision, served.revision
                    )).help("decide again on the current facts, then write"));
            }
        }
    }
    let now = body.now.unwrap_or(TimeValue::Seconds(s.clock()));
    // The core's write pipeline (`writes::write`), run in the module on the bytes every
    // runtime runs, keeping what it allows until the group is stored or dropped.
    let call = Call::Write {
        author: authored.author.clone(),
        now,
        deltas: body.deltas,
    };
    let json = call.to_json().map_err(ServiceError::bad)?;
    let Call::Write { deltas, .. } = call else {
        return Err(ServiceError::internal("the write's call changed"));
    };
    Ok((json, deltas, authored))
}

/// A module's answer to a write: the derived tuples when allowed, the refusal (403) when
/// not; a fault when the module took it as another revision than `expected`.
pub(crate) fn verdict(
    answer: &WriteAnswer,
    expected: u64,
) -> Result<Result<Vec<Delta>, ServiceError>, ServiceError> {
    if !answer.allowed {
        let (code, message) = answer.refusal.as_ref().map_or_else(
            || (ErrorCode::WriteDenied.as_str(), "refused".to_string()),
            |r| (r.code.as_str(), r.message.clone()),
        );
        let mut e = ServiceError::refused(code, message);
        e.extra = Some(json!({ "refusal": answer.refusal }));
        return Ok(Err(e));
    }
    if answer.revision != Some(expected) {
        return Err(ServiceError::internal(format!(
            "the module took the write as revision {:?}, the host expected {expected}",
            answer.revision
        )));
    }
    // Tuples the policy adds by itself on creation (EV5) join the same change.
    Ok(Ok(answer.derived.clone().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::{HashMap, created_accounts, touched_accounts};
    use clearance_core::{Delta, Facts, FactsJson};

    fn facts() -> Facts {
        let doc: FactsJson = serde_json::from_value(serde_json::json!({
            "entities": [
                { "type": "account", "id": "victim" },
                { "type": "account", "id": "evil" },
                { "type": "station", "id": "x", "account": "victim" }
            ],
            "tuples": []
        }))
        .unwrap_or_default();
        Facts::from_doc(doc).unwrap_or_default()
    }

    fn deltas(v: serde_json::Value) -> Vec<Delta> {
        serde_json::from_value(v).unwrap_or_default()
    }

    /// An entity that exists is of its own account, whatever an earlier write of the group
    /// claimed by creating one of that name; a creation counts the account it names too.
    #[test]
    fn the_accounts_a_write_touches_are_those_of_the_entities_as_they_are() {
        let facts = facts();
        assert_eq!(facts.entities.len(), 3);
        let claim = deltas(serde_json::json!([
            { "op": "add_entity", "entity": { "type": "station", "id": "x", "account": "evil" } }
        ]));
        let earlier: HashMap<String, String> = created_accounts(&claim);
        assert_eq!(
            earlier.get("station:x").map(String::as_str),
            Some("account:evil")
        );
        let set = deltas(serde_json::json!([
            { "op": "set_attr", "entity": "station:x", "attr": "code", "value": "X" }
        ]));
        assert_eq!(touched_accounts(&facts, &earlier, &set), ["account:victim"]);
        let moved = deltas(serde_json::json!([
            { "op": "remove_entity", "entity": "station:x" },
            { "op": "add_entity", "entity": { "type": "station", "id": "x", "account": "evil" } }
        ]));
        assert_eq!(
            touched_accounts(&facts, &HashMap::new(), &moved),
            ["account:evil", "account:victim"]
        );
        let new = deltas(serde_json::json!([
            { "op": "set_attr", "entity": "station:y", "attr": "code", "value": "Y" }
        ]));
        let made = deltas(serde_json::json!([
            { "op": "add_entity", "entity": { "type": "station", "id": "y", "account": "evil" } }
        ]));
        assert_eq!(
            touched_accounts(&facts, &created_accounts(&made), &new),
            ["account:evil"]
        );
    }
}
