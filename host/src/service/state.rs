//! The live service: its configuration, what it serves (facts, snapshot, policy, keys)
//! published as one value, and what it tells about itself (revision, metrics, readiness).

use crate::auth::{DemoIssuer, Keys, TokenVerifier};
use crate::clock::now_seconds;
use crate::limits::Places;
use crate::runtime::Runtime;
use crate::schemas;
use crate::service::error::ServiceError;
use crate::service::queue::QueuedWrite;
use crate::service::quota::Creations;
use crate::signer::SliceSigner;
use crate::store::{Change, FactStore, StoreError};
use clearance_core::slice::{Projected, Reads};
use clearance_core::{Facts, Schema, Source};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Mutex, broadcast, mpsc, watch};

/// How the service bounds its work and its followers.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Changes kept for live followers; one that falls further behind gets a `reset`.
    pub feed_buffer: usize,
    /// Changes read from the store per page when a follower catches up.
    pub feed_page: usize,
    /// About how many bytes of stored changes a page may hold (at least one change).
    pub feed_page_bytes: usize,
    /// Followers of the change feed at once; one more is answered `host.busy`.
    pub max_subscribers: usize,
    /// Followers of the change feed one caller (a key or a user) may hold at once, so one
    /// caller cannot take every place.
    pub max_feeds_per_caller: usize,
    /// The largest request body, in bytes.
    pub body_limit: usize,
    /// Start on the policy files even when the store holds another policy, after
    /// checking every stored fact against them; the adoption is stored as a change.
    pub adopt_policy: bool,
    /// How user tokens are verified; without it only service keys are accepted.
    pub tokens: Option<Arc<TokenVerifier>>,
    /// The OpenID Connect provider whose key set `tokens` holds: a token naming a key the
    /// set does not hold has the set fetched again first (at most once per its least
    /// interval).
    pub oidc: Option<Arc<crate::oidc::Provider>>,
    /// The demo token issuer (`serve --demo` only): `POST /demo/token` gives a token for
    /// a user of the facts.
    pub demo: Option<Arc<DemoIssuer>>,
    /// How often the service keys are read again from the store (a new or revoked key
    /// takes effect within this).
    pub keys_refresh: Duration,
    /// The most deltas one write may carry.
    pub max_deltas: usize,
    /// The most requests one batch may carry.
    pub max_batch: usize,
    /// Requests a second each caller (a key, or a user) may make, with as many at once;
    /// past it the caller is answered 429 with `retry-after`. `None`: no limit.
    pub rate_limit: Option<std::num::NonZeroU32>,
    /// Work a second each caller may ask for, whatever the number of requests: a batch
    /// costs its requests and a write its deltas (refused or not), any other request 1;
    /// as much at once, or the largest batch or write if more. Past it the caller is
    /// answered 429 with `retry-after`, naming the cost and the budget. `None`: no limit.
    pub work_limit: Option<std::num::NonZeroU32>,
    /// Failed authentications (`auth.invalid`) a minute one network address may make,
    /// with as many at once; past it every request from the address is answered 429 with
    /// `retry-after` until its budget refills, before any credential is checked. Behind a
    /// proxy every caller shares the proxy's address. `None`: no limit.
    pub auth_failure_limit: Option<std::num::NonZeroU32>,
    /// Entities one author may create an hour through writes, with as many at once; past
    /// it a write creating more is answered 429 `write.quota` with `retry-after`, before it
    /// is judged. An admin key's writes are not counted. `None`: no quota.
    pub author_creations_per_hour: Option<std::num::NonZeroU32>,
    /// The same for all the authors of one account together.
    pub account_creations_per_hour: Option<std::num::NonZeroU32>,
    /// The key slices are signed with; without one a key is made at start-up (its public
    /// half is served at `GET /v1/slice-keys`).
    pub slice_signer: Option<Arc<SliceSigner>>,
    /// How long a signed slice may be loaded after it is issued.
    pub slice_ttl: Duration,
    /// Seconds added to the system clock where the server's clock decides (user
    /// decisions and writes): 0, except for a demo whose data is dated (`--demo-time`).
    /// Token lifetimes and change times always use the system clock.
    pub clock_offset: i64,
    /// A checkpoint is written once this many changes follow the last one (0: never
    /// for the count). Start-up then applies at most about this many changes.
    pub checkpoint_changes: u64,
    /// A checkpoint is written once this long has passed since the last one, if any
    /// change followed it (zero: never for the time). A policy change is checkpointed
    /// at once.
    pub checkpoint_interval: Duration,
    /// The least time between two checkpoints, so that a steady stream of writes does
    /// not keep one core writing checkpoints.
    pub checkpoint_gap: Duration,
    /// How often the service asks the store whether another host (or process) appended,
    /// besides the store's own signal (PostgreSQL's NOTIFY), and so learns whether the
    /// store answers (`/readyz`); zero: every second.
    pub follow_interval: Duration,
    /// How far behind the store's last revision the host may be and still be ready
    /// (`/readyz`).
    pub ready_lag: u64,
    /// How many times a group of writes is judged again after another host took its
    /// revision first, each time on the state caught up; past it the writes are answered
    /// 409 (`revision.conflict`).
    pub conflict_retries: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            feed_buffer: 1024,
            feed_page: 256,
            feed_page_bytes: 1 << 20,
            max_subscribers: 1024,
            max_feeds_per_caller: 16,
            body_limit: 1 << 20,
            adopt_policy: false,
            tokens: None,
            oidc: None,
            demo: None,
            keys_refresh: Duration::from_secs(1),
            max_deltas: 10_000,
            max_batch: 10_000,
            clock_offset: 0,
            rate_limit: None,
            work_limit: None,
            auth_failure_limit: None,
            author_creations_per_hour: std::num::NonZeroU32::new(2_000),
            account_creations_per_hour: std::num::NonZeroU32::new(20_000),
            slice_signer: None,
            slice_ttl: Duration::from_secs(900),
            checkpoint_changes: 50_000,
            checkpoint_interval: Duration::from_secs(600),
            checkpoint_gap: Duration::from_secs(30),
            follow_interval: Duration::from_secs(1),
            ready_lag: 1_000,
            conflict_retries: 8,
        }
    }
}

/// What the service serves: replaced whole by each change, read by readers without
/// waiting on a write. The facts are shared by every `Served` of one policy and changed
/// in place by each write ([`LiveFacts`]).
pub(crate) struct Served {
    pub(crate) revision: u64,
    pub(crate) schema: Arc<Schema>,
    pub(crate) sources: Arc<Vec<Source>>,
    pub(crate) facts: Arc<LiveFacts>,
}

/// The facts being served. A write changes them in place under the write lock, which it
/// holds only while it applies its deltas in memory (after they were judged and stored),
/// at a cost in proportion to the change; readers hold the read lock while they read.
/// Their own `revision` says which change they are at.
pub(crate) struct LiveFacts(pub(crate) std::sync::RwLock<Facts>);

impl LiveFacts {
    pub(crate) fn new(facts: Facts) -> Arc<LiveFacts> {
        Arc::new(LiveFacts(std::sync::RwLock::new(facts)))
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, Facts> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, Facts> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The service's state.
pub struct Service {
    pub(crate) runtime: Arc<Runtime>,
    /// Held by the one group of writes (or reload) in progress.
    pub(crate) writer: Mutex<()>,
    /// Writes waiting for the group commit ([`group_commit`]).
    pub(crate) writes: mpsc::Sender<QueuedWrite>,
    /// The places of the writes waiting, per caller and in all.
    pub(crate) write_places: Arc<Places>,
    /// Groups of writes appended, and the writes in them.
    pub(crate) groups: std::sync::atomic::AtomicU64,
    pub(crate) grouped: std::sync::atomic::AtomicU64,
    pub(crate) served: RwLock<Arc<Served>>,
    pub(crate) store: Arc<dyn FactStore>,
    pub(crate) changes: broadcast::Sender<Arc<Change>>,
    pub(crate) revision: watch::Sender<u64>,
    /// The revision of the store's base: changes before it are not kept.
    pub(crate) base_revision: u64,
    pub(crate) subscribers: Arc<AtomicUsize>,
    /// Set when memory may be behind the store; the next write reads it again first.
    pub(crate) needs_resync: AtomicBool,
    pub(crate) policy_dir: Option<PathBuf>,
    pub(crate) config: ServiceConfig,
    /// The live service keys, read again from the store every `keys_refresh`.
    pub(crate) keys: RwLock<Arc<Keys>>,
    /// Requests per caller, when limited.
    pub(crate) limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
    /// Work per caller (a batch's requests, a write's deltas), when limited.
    pub(crate) work: Option<governor::DefaultKeyedRateLimiter<String>>,
    /// The entity creation quotas, per author and per account.
    pub(crate) creations: Arc<Creations>,
    /// Failed authentications per network address, when limited.
    pub(crate) failures: Option<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Addresses past their failure budget, and until when.
    pub(crate) throttled: std::sync::Mutex<HashMap<std::net::IpAddr, std::time::Instant>>,
    /// Signs every slice served.
    pub(crate) signer: Arc<SliceSigner>,
    /// Open change feeds per caller.
    pub(crate) feeds: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    /// Held while a checkpoint is written: one at a time.
    pub(crate) checkpointing: Mutex<()>,
    /// Wakes the checkpoint task before its time (a policy change).
    pub(crate) checkpoint_soon: Arc<tokio::sync::Notify>,
    /// The revision of the checkpoint (or base) start-up began from, and the changes it
    /// applied after it.
    pub(crate) started_from: (u64, u64),
    /// What the served policy reads, by its hash: how changes are cut for slices.
    pub(crate) reads: std::sync::Mutex<Option<(String, Arc<Reads>)>>,
    /// Wakes the follower ([`follow`]) before its time.
    pub(crate) follow_soon: Arc<tokio::sync::Notify>,
    /// Set when the host shuts down: change-feed streams end.
    pub(crate) closing: watch::Sender<bool>,
    /// What the follower last learnt of the store, for `/readyz`: when it last answered
    /// and its last revision then, or the error it gave.
    pub(crate) store_health: std::sync::Mutex<StoreHealth>,
    /// The counters and histograms `/metrics` serves.
    pub(crate) metrics: crate::observe::Metrics,
    /// The last revision each open change feed sent, by feed: its lag at a scrape.
    pub(crate) feed_marks: Arc<std::sync::Mutex<HashMap<u64, Arc<AtomicU64>>>>,
    /// Numbers change feeds.
    pub(crate) feed_ids: AtomicU64,
}

/// The store as the follower last found it.
#[derive(Debug, Clone)]
pub(crate) struct StoreHealth {
    /// When the store last answered, and with which last revision.
    pub(crate) answered: Option<(std::time::Instant, u64)>,
    /// Whether the last try failed.
    pub(crate) failing: bool,
}

/// Runs CPU-heavy work (compiling, building snapshots) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::internal(format!("a worker thread failed: {e}")))?
}

impl Service {
    /// Writes a checkpoint at the revision served, off the async workers and through a
    /// second handle on the store, so that writes and reads go on meanwhile. `None` when
    /// the latest checkpoint is already there.
    pub async fn checkpoint(&self) -> Result<Option<crate::store::checkpoint::Written>, String> {
        let _one = self.checkpointing.lock().await;
        let upto = self.revision();
        let t = std::time::Instant::now();
        let written = crate::store::checkpoint::write_checkpoint(self.store.as_ref(), upto).await?;
        if let Some(w) = &written {
            tracing::info!(
                "checkpoint at revision {} ({} bytes of facts, {} of snapshot, {} changes applied to the one before) in {} ms, {} ms of it storing",
                w.revision,
                w.facts_bytes,
                w.snapshot_bytes,
                w.replayed,
                t.elapsed().as_millis(),
                w.stored_in.as_millis()
            );
        }
        Ok(written)
    }

    /// Change `c` as it applies to `principal`'s slice, cut by what the served policy
    /// reads; entities are placed in accounts by the change's own accounts when it
    /// touches the principal's alone, or else by the facts as they are now.
    pub(crate) fn project(&self, principal: &str, c: &Change) -> Projected {
        let served = self.served();
        let hash = served.schema.hash_hex();
        let reads = {
            let mut cache = self
                .reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &*cache {
                Some((h, r)) if *h == hash => Arc::clone(r),
                _ => {
                    let r = Arc::new(Reads::of(&served.schema));
                    *cache = Some((hash, Arc::clone(&r)));
                    r
                }
            }
        };
        let facts = served.facts.read();
        let Some(account) = facts.entities.get(principal).map(|e| e.account.clone()) else {
            return Projected::Refetch(format!("`{principal}` is gone"));
        };
        let alone = c
            .accounts
            .as_deref()
            .is_some_and(|a| matches!(a, [one] if *one == account_key(&account)));
        reads.project(&served.schema, principal, &account, &c.deltas, |k| {
            if alone {
                Some(account.clone())
            } else {
                facts.entities.get(k).map(|e| e.account.clone())
            }
        })
    }

    /// The revision of the checkpoint (or the base) start-up began from, and how many
    /// changes it applied after it.
    pub fn started_from(&self) -> (u64, u64) {
        self.started_from
    }

    /// The server's clock for decisions and writes (seconds).
    pub fn clock(&self) -> i64 {
        now_seconds().saturating_add(self.config.clock_offset)
    }

    /// Reads the service keys again from the store now.
    pub async fn refresh_keys(&self) -> Result<(), StoreError> {
        let all = self.store.keys().await?;
        match self.keys.write() {
            Ok(mut k) => *k = Arc::new(Keys::new(all)),
            Err(p) => *p.into_inner() = Arc::new(Keys::new(all)),
        }
        Ok(())
    }

    /// How many live service keys the service knows.
    pub fn key_count(&self) -> usize {
        self.live_keys().len()
    }

    pub(crate) fn live_keys(&self) -> Arc<Keys> {
        match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Groups of writes appended to the store (each one transaction and one sync to
    /// disk), and the writes in them.
    pub fn group_commits(&self) -> (u64, u64) {
        (
            self.groups.load(Ordering::Relaxed),
            self.grouped.load(Ordering::Relaxed),
        )
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// The SHA-256 of the module the service decides with.
    pub fn module_hash(&self) -> &str {
        self.runtime.module_hash()
    }

    /// The hash of the policy being served.
    pub fn policy_hash(&self) -> String {
        self.served().schema.hash_hex()
    }

    pub(crate) fn served(&self) -> Arc<Served> {
        match self.served.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub(crate) fn publish(&self, next: Served) {
        let revision = next.revision;
        match self.served.write() {
            Ok(mut s) => *s = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
        self.revision.send_replace(revision);
    }

    /// Notes what the store answered the follower, for `/readyz`.
    pub(crate) fn note_store(&self, answered: &Result<u64, StoreError>) {
        let mut h = self
            .store_health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match answered {
            Ok(last) => {
                h.answered = Some((std::time::Instant::now(), *last));
                h.failing = false;
            }
            Err(_) => h.failing = true,
        }
    }

    /// The metrics' text: the counters kept, and what the host holds now.
    pub fn metrics_text(&self) -> Result<String, std::fmt::Error> {
        let served = self.served();
        let stats = self.runtime.stats();
        let store_revision = self
            .store_health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .answered
            .map_or(0, |(_, r)| r);
        let revision = self.revision();
        let (mut lag_max, mut lagging) = (0, 0);
        for mark in self
            .feed_marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            let lag = revision.saturating_sub(mark.load(Ordering::Relaxed));
            lag_max = lag_max.max(lag);
            lagging += u64::from(lag > 0);
        }
        let now = crate::observe::Now {
            module_hash: self.runtime.module_hash().to_string(),
            policy_hash: served.schema.hash_hex(),
            revision,
            store_revision,
            ready: self.readiness().is_ok(),
            subscribers: u64::try_from(self.subscribers.load(Ordering::Acquire))
                .unwrap_or(u64::MAX),
            feed_lag_max: lag_max,
            feed_lagging: lagging,
            traps: stats.traps.load(Ordering::Relaxed),
            instances_created: stats.instances_created.load(Ordering::Relaxed),
            busy: stats.busy.load(Ordering::Relaxed),
        };
        self.metrics.render(&now)
    }

    /// Completes once the host is shutting down.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Whether the host is ready to serve, from what it holds (never waiting on a write
    /// or the store): `Err` says why not.
    pub fn readiness(&self) -> Result<schemas::Ready, String> {
        let revision = self.revision();
        if self.runtime.revision().is_none() {
            return Err("no snapshot is loaded".into());
        }
        let h = self
            .store_health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let every = if self.config.follow_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            self.config.follow_interval
        };
        // The follower asks every `every`; three missed answers mean the store is not
        // answering.
        let stale = every.saturating_mul(3).max(Duration::from_secs(2));
        let Some((at, store_revision)) = h.answered else {
            return Err("the store has not answered yet".into());
        };
        let since = at.elapsed();
        // `/readyz` answers anyone: the store's error itself stays in the host's log.
        if h.failing && since > stale {
            return Err(format!(
                "the store has not answered for {} ms (its error is in the host's log)",
                since.as_millis()
            ));
        }
        let lag = store_revision.saturating_sub(revision);
        if lag > self.config.ready_lag {
            return Err(format!(
                "the host is {lag} revisions behind the store (the bound is {})",
                self.config.ready_lag
            ));
        }
        Ok(schemas::Ready {
            ready: true,
            behind: lag,
            store_answered_ms_ago: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Ends every change-feed stream (each gets an `error` event `host.shutdown`), so
    /// that their connections close while the server drains; for a graceful shutdown.
    pub fn shut_down(&self) {
        self.closing.send_replace(true);
    }

    /// Wakes the follower now, as when a caller asks for a revision this host has not
    /// served yet.
    pub(crate) fn follow_now(&self) {
        self.follow_soon.notify_one();
    }
}

/// `account:<id>` for an account id or key.
pub(crate) fn account_key(a: &str) -> String {
    if a.starts_with("account:") {
        a.to_string()
    } else {
        format!("account:{a}")
    }
}

/// The most a caller's budget of work holds at once: its rate, or the largest batch or
/// write if larger, so that every request the limits allow can be served from a full
/// budget.
pub(crate) fn budget_burst(
    config: &ServiceConfig,
    rate: std::num::NonZeroU32,
) -> std::num::NonZeroU32 {
    let largest = config.max_batch.max(config.max_deltas);
    rate.max(
        std::num::NonZeroU32::new(u32::try_from(largest).unwrap_or(u32::MAX))
            .unwrap_or(std::num::NonZeroU32::MIN),
    )
}
