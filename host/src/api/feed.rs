//! The change feed (`/v1/changes`, server-sent events): each follower takes only its
//! accounts' part of a change, a user only the projection on its slice, live and on
//! replay; a feed is reset, never silently cut, when it falls behind or its caller's
//! grants change.

use crate::api::access::{Access, user_gates};
use crate::api::extract::{ApiQuery, S};
use crate::auth::{Caller, Scope};
use crate::codes::Code;
use crate::service::commit::BULK_DELTAS;
use crate::service::error::{ServiceError, forbidden};
use crate::service::state::Service;
use crate::store::Change;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use clearance_core::Delta;
use clearance_core::slice::Projected;
use futures_util::stream::{self, Stream, StreamExt};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::broadcast;

pub(crate) fn change_json(c: &Change) -> Value {
    let mut v =
        json!({ "revision": c.revision, "author": c.author, "at": c.at, "deltas": c.deltas });
    if let Some(obj) = v.as_object_mut() {
        if let Some(p) = &c.policy {
            obj.insert("policy_hash".into(), Value::from(p.hash.clone()));
        }
        if let Some(via) = &c.via {
            obj.insert("via".into(), Value::from(via.clone()));
        }
    }
    v
}

/// `?since=`.
#[derive(Deserialize, JsonSchema)]
pub(crate) struct Since {
    /// Follow from after this revision (default: the current one).
    pub(crate) since: Option<u64>,
}

/// Counts a follower of the change feed while its stream lives, and shows the last
/// revision it sent to `/metrics` (its lag).
pub(crate) struct Subscriber {
    pub(crate) count: Arc<AtomicUsize>,
    pub(crate) marks: Arc<std::sync::Mutex<HashMap<u64, Arc<AtomicU64>>>>,
    pub(crate) id: u64,
    /// The last revision the feed sent.
    pub(crate) mark: Arc<AtomicU64>,
}

impl Subscriber {
    /// Counts a follower of `s`'s feed that has sent up to `after`.
    pub(crate) fn new(s: &Service, after: u64) -> Subscriber {
        let id = s.feed_ids.fetch_add(1, Ordering::Relaxed);
        let mark = Arc::new(AtomicU64::new(after));
        s.feed_marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, Arc::clone(&mark));
        Subscriber {
            count: Arc::clone(&s.subscribers),
            marks: Arc::clone(&s.feed_marks),
            id,
            mark,
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Counts one caller's follower of the change feed while its stream lives.
pub(crate) struct CallerFeed {
    pub(crate) feeds: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    pub(crate) caller: String,
}

impl CallerFeed {
    /// Takes a place for `caller`, unless it holds `limit` already (then `Err` with the
    /// count it holds).
    pub(crate) fn take(
        feeds: &Arc<std::sync::Mutex<HashMap<String, usize>>>,
        caller: String,
        limit: usize,
    ) -> Result<CallerFeed, usize> {
        let mut map = feeds.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(caller.clone()).or_insert(0);
        if *n >= limit {
            return Err(*n);
        }
        *n += 1;
        Ok(CallerFeed {
            feeds: Arc::clone(feeds),
            caller,
        })
    }
}

impl Drop for CallerFeed {
    fn drop(&mut self) {
        let mut map = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.caller);
            }
        }
    }
}

pub(crate) enum Phase {
    /// Reading stored changes after `after`, a page at a time.
    Paging,
    /// Following new changes as they are made.
    Live,
    /// The stream ends after what is queued.
    Done,
}

pub(crate) struct Feed {
    pub(crate) service: Arc<Service>,
    pub(crate) rx: broadcast::Receiver<Arc<Change>>,
    /// The last revision sent.
    pub(crate) after: u64,
    pub(crate) phase: Phase,
    /// The accounts the follower may see; `None` for an admin, who sees every change.
    pub(crate) filter: Option<Vec<String>>,
    /// The key the follower proved itself with: the stream ends once it is revoked.
    pub(crate) key: Option<String>,
    /// The user following its account: the stream ends once it fails its gates.
    pub(crate) user: Option<String>,
    pub(crate) _own: CallerFeed,
    pub(crate) subscriber: Subscriber,
}

/// What a follower scoped to `filter` is sent of change `c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sight {
    /// Nothing: the change is of other accounts.
    Hidden,
    /// The change (as [`change_event`] shows it to the follower).
    Whole,
    /// A `reset`: the change touched the follower's accounts and others (an import), and
    /// only its own part may reach it, so it fetches its state again at this revision.
    Reset,
}

/// What a follower scoped to `filter` sees of change `c`: a policy change concerns every
/// follower; a change of facts, those of the accounts it touches, whole when it touches
/// only theirs; a change stored before the store recorded its accounts, only an admin.
pub(crate) fn sight(filter: Option<&[String]>, c: &Change) -> Sight {
    match (filter, &c.policy, &c.accounts) {
        (None, _, _) | (Some(_), Some(_), _) => Sight::Whole,
        (Some(mine), None, Some(touched)) if touched.iter().all(|a| mine.contains(a)) => {
            Sight::Whole
        }
        (Some(mine), None, Some(touched)) if touched.iter().any(|a| mine.contains(a)) => {
            Sight::Reset
        }
        (Some(_), None, _) => Sight::Hidden,
    }
}

/// The event a follower scoped to `filter` (a user: `user`) is sent for change `c`.
pub(crate) fn event_for(
    filter: Option<&[String]>,
    c: &Change,
    user: Option<(&Service, &str)>,
) -> Option<Event> {
    match sight(filter, c) {
        Sight::Hidden => None,
        Sight::Whole => Some(change_event(c, user)),
        Sight::Reset => Some(reset_event(
            c.revision,
            c.revision.saturating_sub(1),
            // The reason says nothing of the other accounts: not even that there were any.
            &format!(
                "revision {} is not sent as deltas; read your accounts' state again",
                c.revision
            ),
        )),
    }
}

/// A change as its follower sees it. A user sees its revision, author, time and the
/// entities it touched, and the deltas as they apply to the user's slice
/// ([`clearance_core::slice::Reads::project`]): only what the slice keeps, attributes cut
/// as the slice cuts them, so no other user's email or guest's address, nor the key that
/// made it. A follower applies them to its slice; a change that cannot be followed so
/// (a policy change, the authorisations the user holds moved) says `refetch`, with why:
/// the follower fetches its slice again.
pub(crate) fn change_event(c: &Change, user: Option<(&Service, &str)>) -> Event {
    // A bulk change (an import) is not sent delta by delta: the follower fetches the
    // state again, at this revision, as after a reset.
    if c.deltas.len() > BULK_DELTAS {
        return reset_event(
            c.revision,
            c.revision.saturating_sub(1),
            &format!(
                "revision {} is a bulk change of {} deltas",
                c.revision,
                c.deltas.len()
            ),
        );
    }
    let data = if let Some((service, principal)) = user {
        let mut touched = std::collections::BTreeSet::new();
        for d in &c.deltas {
            match d {
                Delta::AddEntity { entity } => {
                    touched.insert(clearance_core::facts::entity_key(&entity.ty, &entity.id));
                }
                Delta::RemoveEntity { entity } | Delta::SetAttr { entity, .. } => {
                    touched.insert(entity.clone());
                }
                Delta::AddTuple { tuple } | Delta::RemoveTuple { tuple } => {
                    touched.insert(tuple.resource.clone());
                    touched.insert(tuple.subject.clone());
                }
            }
        }
        let mut v =
            json!({ "revision": c.revision, "author": c.author, "at": c.at, "entities": touched });
        let follow = match &c.policy {
            Some(p) => {
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("policy_hash".into(), Value::from(p.hash.clone()));
                }
                Projected::Refetch("the policy changed".into())
            }
            None => service.project(principal, c),
        };
        if let Some(obj) = v.as_object_mut() {
            match follow {
                Projected::Deltas(ds) => {
                    obj.insert("deltas".into(), json!(ds));
                }
                Projected::Refetch(why) => {
                    obj.insert("refetch".into(), Value::from(why));
                }
            }
        }
        v
    } else {
        change_json(c)
    };
    Event::default()
        .event("change")
        .id(c.revision.to_string())
        .data(data.to_string())
}

pub(crate) fn reset_event(revision: u64, after: u64, reason: &str) -> Event {
    Event::default()
        .event("reset")
        .id(revision.to_string())
        .data(
            json!({ "revision": revision, "last_sent": after, "reason": reason, "help": "changes were skipped: fetch the state again (a slice or /v1/facts) at this revision; the feed goes on from it" })
                .to_string(),
        )
}

/// The last event of a feed whose key was revoked (and the feed marked done), if it was.
pub(crate) fn revoked(f: &mut Feed) -> Option<Event> {
    let id = f.key.as_ref()?;
    if matches!(f.phase, Phase::Done) || f.service.live_keys().is_live(id) {
        return None;
    }
    f.phase = Phase::Done;
    Some(Event::default().event("error").data(
        json!({ "code": Code::AuthInvalid.as_str(), "message": "the key this feed was opened with was revoked", "help": "follow again with a live credential" }).to_string(),
    ))
}

/// Ends a user's feed once the user fails its gates (deactivated, removed, its
/// invitation taken back), before anything more is sent.
pub(crate) async fn gated(f: &mut Feed) -> Option<Event> {
    let principal = f.user.clone()?;
    if matches!(f.phase, Phase::Done) {
        return None;
    }
    let e = user_gates(&f.service, &Caller::User { principal })
        .await
        .err()?;
    f.phase = Phase::Done;
    Some(Event::default().event("error").data(
        json!({ "code": e.data.code, "message": e.data.message, "help": e.data.help }).to_string(),
    ))
}

/// The next events of a feed: a page from the store while catching up, then each new
/// change; a `reset` when the follower fell further behind than the live buffer holds.
pub(crate) async fn feed_step(mut f: Feed) -> Option<(Vec<Result<Event, Infallible>>, Feed)> {
    // Every event before this step has been taken by the connection.
    f.subscriber.mark.store(f.after, Ordering::Relaxed);
    loop {
        if let Some(end) = revoked(&mut f) {
            return Some((vec![Ok(end)], f));
        }
        match f.phase {
            Phase::Done => return None,
            Phase::Paging => {
                let (after, n, bytes) = (
                    f.after,
                    f.service.config.feed_page,
                    f.service.config.feed_page_bytes,
                );
                let page = f.service.store.changes_page(after, n, bytes).await;
                match page {
                    Ok(page) if page.is_empty() => f.phase = Phase::Live,
                    Ok(page) => {
                        f.after = page.last().map_or(f.after, |c| c.revision);
                        let events: Vec<_> = page
                            .iter()
                            .filter_map(|c| {
                                event_for(
                                    f.filter.as_deref(),
                                    c,
                                    f.user.as_deref().map(|p| (f.service.as_ref(), p)),
                                )
                            })
                            .map(Ok)
                            .collect();
                        if !events.is_empty() {
                            if let Some(end) = gated(&mut f).await {
                                return Some((vec![Ok(end)], f));
                            }
                            return Some((events, f));
                        }
                    }
                    Err(e) => {
                        f.phase = Phase::Done;
                        let event = Event::default().event("error").data(
                            json!({ "code": Code::StoreFailed.as_str(), "message": e.to_string(), "help": "reconnect with Last-Event-ID" }).to_string(),
                        );
                        return Some((vec![Ok(event)], f));
                    }
                }
            }
            Phase::Live => match {
                let mut closing = f.service.closing.subscribe();
                tokio::select! {
                    received = f.rx.recv() => Some(received),
                    () = async { let _ = closing.wait_for(|c| *c).await; } => None,
                }
            } {
                None => {
                    // The host is shutting down: the stream ends, so its connection can
                    // close.
                    f.phase = Phase::Done;
                    let event = Event::default().event("error").data(
                        json!({ "code": Code::HostShutdown.as_str(), "message": "the host is shutting down", "help": Code::HostShutdown.help() }).to_string(),
                    );
                    return Some((vec![Ok(event)], f));
                }
                Some(received) => match received {
                    Ok(c) if c.revision <= f.after => {}
                    // The service read its state again from the store: the changes between
                    // are there.
                    Ok(c) if c.revision > f.after + 1 => f.phase = Phase::Paging,
                    Ok(c) => {
                        f.after = c.revision;
                        // The key may have been revoked while the follower waited.
                        if let Some(end) = revoked(&mut f) {
                            return Some((vec![Ok(end)], f));
                        }
                        if sight(f.filter.as_deref(), &c) != Sight::Hidden {
                            if let Some(end) = gated(&mut f).await {
                                return Some((vec![Ok(end)], f));
                            }
                            let user = f.user.as_deref().map(|p| (f.service.as_ref(), p));
                            if let Some(event) = event_for(f.filter.as_deref(), &c, user) {
                                return Some((vec![Ok(event)], f));
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let revision = f.service.revision();
                        let event = reset_event(
                            revision,
                            f.after,
                            &format!("the follower fell {missed} changes behind the live buffer"),
                        );
                        f.after = revision;
                        return Some((vec![Ok(event)], f));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            },
        }
    }
}

pub(crate) async fn changes(
    State(s): S,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<Since>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ServiceError> {
    // An admin follows every change; a service key its accounts'; a user its account's.
    let filter = match &caller {
        Caller::Key {
            scope: Scope::Admin,
            ..
        } => None,
        Caller::Key {
            scope: Scope::Service,
            accounts,
            ..
        } => Some(accounts.clone()),
        Caller::Key {
            scope: Scope::Read, ..
        } => {
            return Err(forbidden(
                "a read key decides only; it cannot follow changes",
            ));
        }
        Caller::User { principal } => {
            let served = s.served();
            let account = Access {
                caller: &caller,
                served: &served,
            }
            .account_of(principal);
            Some(account.into_iter().collect())
        }
    };
    user_gates(&s, &caller).await?;
    // A reconnecting EventSource says where it was; that wins over the query.
    let last_event = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ServiceError::new(
                        Code::RequestMalformed,
                        "`Last-Event-ID` must be a revision number",
                    )
                })?,
        ),
        None => None,
    };
    let current = s.revision();
    let since = last_event.or(q.since).unwrap_or(current);
    if since > current {
        return Err(ServiceError::new(
            Code::RevisionFuture,
            format!("revision {since} is ahead of the host's {current}"),
        ));
    }
    let own =
        CallerFeed::take(&s.feeds, caller.name(), s.config.max_feeds_per_caller).map_err(|n| {
            ServiceError::new(
                Code::FeedTooMany,
                format!(
                    "this caller follows {n} feeds already; the limit is {}",
                    s.config.max_feeds_per_caller
                ),
            )
            .help("close a feed first: one feed carries every change the caller may see")
        })?;
    let count = s.subscribers.fetch_add(1, Ordering::AcqRel);
    let subscriber = Subscriber::new(&s, since.min(current));
    if count >= s.config.max_subscribers {
        return Err(ServiceError::new(
            Code::HostBusy,
            format!(
                "{count} followers already; the limit is {}",
                s.config.max_subscribers
            ),
        )
        .help("retry later"));
    }
    // Subscribed before the first page is read, so nothing falls between the two.
    let rx = s.changes.subscribe();
    let mut first = Vec::new();
    let after = if since < s.base_revision {
        first.push(Ok(reset_event(
            current,
            since,
            &format!("changes before revision {} are not kept", s.base_revision),
        )));
        current
    } else {
        since
    };
    let feed = Feed {
        service: Arc::clone(&s),
        rx,
        after,
        phase: Phase::Paging,
        filter,
        key: match &caller {
            Caller::Key { id, .. } => Some(id.clone()),
            Caller::User { .. } => None,
        },
        user: match &caller {
            Caller::User { principal } => Some(principal.clone()),
            Caller::Key { .. } => None,
        },
        _own: own,
        subscriber,
    };
    let events = stream::iter(first).chain(stream::unfold(feed, feed_step).flat_map(stream::iter));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
