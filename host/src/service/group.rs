//! A group of writes through the commit, as a small state machine: each step is a named
//! function that takes the group where the step before left it and says which step comes
//! next, and every waiting writer is answered in one place, [`Commit::finish`], once the
//! group is done.
//!
//! ```text
//! Ready ─▶ Prepare ─▶ Judge ─▶ Append ─▶ Install ─▶ Done
//!                       ▲         │
//!                       └─────────┘ another host took the revision: catch up, judge again
//! ```
//!
//! A write that cannot go on (its body does not prepare, it traps the module, it touches
//! an account its caller may not write to) is answered and taken out, and the rest go on;
//! a failure of the whole group (the store, a fault) answers every write still in it.

use crate::clock::now_seconds;
use crate::codes::Code;
use crate::runtime::Held;
use crate::schemas;
use crate::service::commit::{Allowed, Judged, Ready, prepare_write};
use crate::service::error::ServiceError;
use crate::service::queue::{QueuedWrite, Reply, WriteResult};
use crate::service::state::{Served, Service};
use crate::store::Change;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Each write's verdict, in the group's order: allowed (with what the policy derived and
/// the accounts it touches) or refused.
type Verdicts = Vec<Result<Allowed, ServiceError>>;

/// Where a group stands.
enum Step {
    /// Catch up with the store, and on a store other hosts append to, hold their appends
    /// off, so that the group is judged on the latest state.
    Ready(Vec<QueuedWrite>),
    /// Read each write into its call to the module, on the facts served.
    Prepare(Vec<QueuedWrite>),
    /// Judge the writes in order on one instance, each on the state the ones before it
    /// leave.
    Judge,
    /// Append the allowed writes' changes to the store in one transaction.
    Append(Held, Verdicts),
    /// Apply the stored changes in memory, hand them to the instances and publish them.
    Install(Held, Verdicts, Arc<Vec<Change>>),
    /// Every write has its answer.
    Done,
}

/// A group on its way through the commit.
struct Commit<'s> {
    s: &'s Arc<Service>,
    /// The state the group is judged on.
    served: Arc<Served>,
    /// The writes still in the group, in order.
    ready: Vec<Ready>,
    /// Appends lost to another host so far.
    attempts: u32,
    /// The answers, sent by [`Commit::finish`].
    answers: Vec<(Reply, WriteResult)>,
}

impl Service {
    /// [`Service::commit_writes`], under the writer's lock: the group through its steps,
    /// then every writer answered.
    pub(crate) async fn commit_writes_locked(self: &Arc<Self>, group: Vec<QueuedWrite>) {
        let mut commit = Commit {
            s: self,
            served: self.served(),
            ready: Vec::new(),
            attempts: 0,
            answers: Vec::with_capacity(group.len()),
        };
        let mut step = Step::Ready(group);
        loop {
            step = match step {
                Step::Ready(group) => commit.ready(group).await,
                Step::Prepare(group) => commit.prepare(group).await,
                Step::Judge => commit.judge().await,
                Step::Append(held, verdicts) => commit.append(held, verdicts).await,
                Step::Install(held, verdicts, changes) => {
                    commit.install(held, verdicts, changes).await
                }
                Step::Done => break,
            };
        }
        commit.finish();
    }
}

impl Commit<'_> {
    /// Answers `reply` with `result` once the group is done.
    fn answer(&mut self, reply: Reply, result: WriteResult) {
        self.answers.push((reply, result));
    }

    /// Answers every write still in the group with `e`.
    fn fail(&mut self, e: &ServiceError) -> Step {
        for r in std::mem::take(&mut self.ready) {
            self.answer(r.reply, Err(e.clone()));
        }
        Step::Done
    }

    async fn ready(&mut self, group: Vec<QueuedWrite>) -> Step {
        let s = self.s;
        let caught_up = async {
            s.resync().await?;
            if s.store.appended_elsewhere().is_some() {
                // Their appends wait while this group is caught up, judged and stored, so
                // it never loses the compare-and-set (a loss would cost the judging
                // instance, which holds the group's changes, and a reload).
                s.store
                    .hold_appends()
                    .await
                    .map_err(|e| ServiceError::store(e, "nothing was written; retry"))?;
                s.catch_up().await?;
            }
            Ok::<(), ServiceError>(())
        };
        match caught_up.await {
            Ok(()) => Step::Prepare(group),
            Err(e) => {
                for w in group {
                    self.answer(w.reply, Err(e.clone()));
                }
                Step::Done
            }
        }
    }

    async fn prepare(&mut self, group: Vec<QueuedWrite>) -> Step {
        self.served = self.s.served();
        for w in group {
            match prepare_write(self.s, &self.served, w.body, w.authored).await {
                Ok((call, deltas, authored)) => self.ready.push(Ready {
                    call,
                    authored,
                    deltas,
                    reply: w.reply,
                }),
                Err(e) => self.answer(w.reply, Err(e)),
            }
        }
        Step::Judge
    }

    /// A write that traps, or that turns out to touch an account its caller may not write
    /// to, is answered and taken out, and the rest judged again on a fresh instance (the
    /// ones after it were judged on a state holding it).
    async fn judge(&mut self) -> Step {
        let s = self.s;
        loop {
            if self.ready.is_empty() {
                return Step::Done;
            }
            let calls = self.ready.iter().map(|r| r.call.clone()).collect();
            let (answers, held) = match s.runtime.write_in_order(calls).await {
                Ok(x) => x,
                Err((Some(i), e)) if i < self.ready.len() => {
                    let r = self.ready.remove(i);
                    self.answer(r.reply, Err(ServiceError::from(e)));
                    continue;
                }
                Err((_, e)) => return self.fail(&ServiceError::from(e)),
            };
            match s.judged(&self.served, &self.ready, answers).map_err(|j| *j) {
                Ok(verdicts) => return Step::Append(held, verdicts),
                Err(Judged::Fault(e)) => {
                    // The instance's state and the host's count of revisions disagree:
                    // nothing of the group is stored, and the instance is dropped.
                    s.runtime.release(held, None);
                    return self.fail(&e);
                }
                Err(Judged::OutOfScope(i, e)) => {
                    s.runtime.release(held, None);
                    let r = self.ready.remove(i);
                    self.answer(r.reply, Err(e));
                }
            }
        }
    }

    /// On a conflict (another host took the revision), within the retries: catch up and
    /// judge the group again on the state it left. The refusals were judged after writes
    /// that are not stored: on a failure they are answered with the store's error too, to
    /// be tried again.
    async fn append(&mut self, held: Held, verdicts: Verdicts) -> Step {
        let s = self.s;
        let mut revision = self.served.revision;
        let mut changes = Vec::new();
        for (r, verdict) in self.ready.iter().zip(&verdicts) {
            if let Ok((derived, accounts)) = verdict {
                revision += 1;
                let mut all = r.deltas.clone();
                all.extend(derived.iter().cloned());
                changes.push(Change {
                    revision,
                    author: r.authored.author.clone(),
                    at: now_seconds(),
                    deltas: all,
                    policy: None,
                    via: r.authored.via.clone(),
                    accounts: Some(accounts.clone()),
                });
            }
        }
        let changes = Arc::new(changes);
        if changes.is_empty() {
            return Step::Install(held, verdicts, changes);
        }
        let Err(e) = s.append(&changes).await else {
            return Step::Install(held, verdicts, changes);
        };
        s.runtime.release(held, None);
        if !e.is(Code::RevisionConflict) || self.attempts >= s.config.conflict_retries {
            return self.fail(&e);
        }
        self.attempts += 1;
        if self.attempts > 1 {
            // Lost twice: the other hosts' appends wait while this one catches up and
            // judges again, so it cannot lose a third time.
            if let Err(e) = s.store.hold_appends().await {
                tracing::warn!("holding off other hosts' appends: {e}");
            }
        }
        match s.catch_up().await {
            Ok(()) => {
                self.served = s.served();
                Step::Judge
            }
            Err(caught) => self.fail(&caught),
        }
    }

    /// The stored changes are applied in memory; if the facts refuse one, the judging
    /// instance (which holds them while nothing else does) goes, and the whole state is
    /// read again from the store, which holds them.
    async fn install(&mut self, held: Held, verdicts: Verdicts, changes: Arc<Vec<Change>>) -> Step {
        let s = self.s;
        let revision = changes.last().map_or(self.served.revision, |c| c.revision);
        if !changes.is_empty() {
            s.groups.fetch_add(1, Ordering::Relaxed);
            s.grouped.fetch_add(
                u64::try_from(changes.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        if s.apply_stored(&self.served, &changes).await {
            s.runtime.release(held, Some(revision));
        } else {
            s.runtime.release(held, None);
            s.needs_resync.store(true, Ordering::Release);
            if let Err(e) = s.resync().await {
                tracing::warn!("reading the store again failed: {e:?}");
            }
        }
        for change in changes.iter() {
            let _ = s.changes.send(Arc::new(change.clone()));
        }
        let mut stored = changes.iter();
        for (r, verdict) in std::mem::take(&mut self.ready).into_iter().zip(verdicts) {
            let result = match verdict {
                Ok(_) => match stored.next() {
                    Some(change) => Ok(schemas::Written {
                        allowed: true,
                        revision: change.revision,
                    }),
                    None => Err(ServiceError::internal(
                        "an allowed write without its stored change",
                    )),
                },
                Err(e) => Err(e),
            };
            self.answer(r.reply, result);
        }
        Step::Done
    }

    /// Sends every answer: the one place a waiting writer hears how its write went.
    fn finish(self) {
        for (reply, result) in self.answers {
            let _ = reply.send(result);
        }
    }
}
