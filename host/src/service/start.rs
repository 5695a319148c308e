//! Start-up: a store opened (SQLite, created and seeded when absent, or PostgreSQL), the
//! state recovered from its latest checkpoint and the changes after it, and the writer,
//! follower and checkpoint tasks started.

use crate::auth::Keys;
use crate::limits::Places;
use crate::runtime::Runtime;
use crate::service::commit::{WRITE_QUEUE, WRITES_PER_CALLER, group_commit};
use crate::service::follow::{checkpoints, follow, replay_with};
use crate::service::quota::Creations;
use crate::service::state::{Service, ServiceConfig, StoreHealth, budget_burst};
use crate::signer::SliceSigner;
use crate::store::{FactStore, SqliteFile, SqliteStore, StoreError, StoredPolicy};
use clearance_core::{Facts, Snapshot, Source};
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Mutex, broadcast, mpsc, watch};

impl Service {
    /// Opens the SQLite store at `data` (creating it, seeded with `seed()` under the
    /// policy `files`, when no file is there) and starts the service on it.
    pub async fn open(
        runtime: Arc<Runtime>,
        files: Vec<Source>,
        data: &FsPath,
        seed: impl FnOnce() -> Result<Facts, String> + Send + 'static,
        policy_dir: Option<PathBuf>,
        config: ServiceConfig,
    ) -> Result<Arc<Service>, String> {
        let (data, seed_files) = (data.to_path_buf(), files.clone());
        let file = tokio::task::spawn_blocking(move || {
            SqliteFile::open_or_create(&data, || {
                let facts = seed()?;
                tracing::info!(
                    "created the store at {} ({} entities, {} tuples seeded)",
                    data.display(),
                    facts.entities.len(),
                    facts.tuples.len()
                );
                Ok((facts, StoredPolicy::of(&seed_files)?))
            })
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .0;
        let store = Arc::new(SqliteStore::new(file));
        Service::start(runtime, files, store, policy_dir, config).await
    }

    /// Connects to the PostgreSQL store at `url` (its schema migrated: `clearance
    /// migrate`), seeds it with `seed()` under the policy `files` when it holds no facts
    /// yet, and starts the service on it. Several hosts may share one database.
    pub async fn open_postgres(
        runtime: Arc<Runtime>,
        files: Vec<Source>,
        url: &str,
        seed: impl FnOnce() -> Result<Facts, String> + Send + 'static,
        policy_dir: Option<PathBuf>,
        config: ServiceConfig,
    ) -> Result<Arc<Service>, String> {
        let store = crate::store::postgres::PgStore::connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let (where_, seed_files) = (store.describe(), files.clone());
        store
            .seed_if_empty(move || {
                let facts = seed()?;
                tracing::info!(
                    "seeded {where_} ({} entities, {} tuples)",
                    facts.entities.len(),
                    facts.tuples.len()
                );
                Ok((facts, StoredPolicy::of(&seed_files)?))
            })
            .await
            .map_err(|e| e.to_string())?;
        Service::start(runtime, files, Arc::new(store), policy_dir, config).await
    }

    /// Stores a new service key and serves it at once.
    pub async fn add_key(&self, key: crate::store::StoredKey) -> Result<(), StoreError> {
        self.store.add_key(key).await?;
        self.refresh_keys().await
    }

    /// Starts the service on a store: its facts replayed under its stored policies
    /// (verified on the way), compiled and loaded into the module.
    ///
    /// The stored policy wins over the `files`: when they differ the service says so and
    /// serves the stored one, unless `config.adopt_policy`, which checks every fact
    /// against the files and stores them as a change. A store from before policies were
    /// stored adopts the files the same way.
    pub async fn start(
        runtime: Arc<Runtime>,
        files: Vec<Source>,
        store: Arc<dyn FactStore>,
        policy_dir: Option<PathBuf>,
        config: ServiceConfig,
    ) -> Result<Arc<Service>, String> {
        let adopt = config.adopt_policy;
        let latest = store.latest(None).await.map_err(|e| e.to_string())?;
        // A checkpoint an import wrote holds no snapshot: the one built here completes it.
        let bare = latest
            .snapshot
            .as_deref()
            .is_some_and(<[u8]>::is_empty)
            .then_some(latest.revision);
        // The snapshot carried from a checkpoint is loaded into the module while the facts
        // are still being read; it is kept if start-up serves it.
        let early: Arc<std::sync::Mutex<Option<Early>>> = Arc::default();
        let (slot, rt, handle) = (
            Arc::clone(&early),
            Arc::clone(&runtime),
            tokio::runtime::Handle::current(),
        );
        let ((served, snapshot, base_revision, started_from), adopted) =
            tokio::task::spawn_blocking(move || {
                let load = move |s: &Snapshot| {
                    let prepared = s.to_bytes().map_err(|e| e.to_string()).and_then(|bytes| {
                        handle
                            .block_on(rt.prepare(bytes))
                            .map_err(|e| e.to_string())
                    });
                    match (prepared, slot.lock()) {
                        (Ok(p), Ok(mut slot)) => *slot = Some((s.revision, s.schema.hash, p)),
                        (Err(e), _) => {
                            tracing::warn!("loading the checkpoint's snapshot early: {e}");
                        }
                        (Ok(_), Err(_)) => {}
                    }
                };
                replay_with(latest, files, adopt, &load)
            })
            .await
            .map_err(|e| e.to_string())??;
        if let Some(change) = adopted {
            store.append(change).await.map_err(|e| e.to_string())?;
        }
        let carried = early.lock().ok().and_then(|mut e| e.take());
        let served_at = served.revision;
        match carried {
            Some((revision, hash, prepared))
                if revision == served.revision && hash == served.schema.hash =>
            {
                runtime.install(prepared);
            }
            _ => {
                let bytes = tokio::task::spawn_blocking(move || snapshot.to_bytes())
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                if bare == Some(served.revision) {
                    let (store, bytes) = (Arc::clone(&store), bytes.clone());
                    tokio::spawn(async move {
                        if let Err(e) =
                            crate::store::checkpoint::complete(store.as_ref(), served_at, bytes)
                                .await
                        {
                            tracing::warn!(
                                "adding the snapshot to the checkpoint at revision {served_at}: {e}"
                            );
                        }
                    });
                }
                runtime
                    .load_snapshot(bytes)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        if started_from.0 != base_revision {
            // Start-up from a checkpoint did not read the base; it is checked now, so that
            // a damaged store is reported while it can still be restored.
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                if let Err(e) = store.verify_base().await {
                    tracing::warn!("checking the store's base: {e}");
                }
            });
        }
        let (changes, _) = broadcast::channel(config.feed_buffer.max(1));
        let (revision, _) = watch::channel(served.revision);
        let keys = store.keys().await.map_err(|e| e.to_string())?;
        let signer = match &config.slice_signer {
            Some(s) => Arc::clone(s),
            None => Arc::new(SliceSigner::generate()?),
        };
        let limiter = config
            .rate_limit
            .map(|n| governor::RateLimiter::dashmap(governor::Quota::per_second(n)));
        let work = config.work_limit.map(|n| {
            let quota = governor::Quota::per_second(n).allow_burst(budget_burst(&config, n));
            governor::RateLimiter::dashmap(quota)
        });
        let failures = config
            .auth_failure_limit
            .map(|n| governor::RateLimiter::dashmap(governor::Quota::per_minute(n)));
        let creations = Arc::new(Creations::new(
            config.author_creations_per_hour,
            config.account_creations_per_hour,
        ));
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let started_revision = served.revision;
        let service = Arc::new(Service {
            runtime,
            writer: Mutex::new(()),
            writes,
            write_places: Arc::new(Places::new(WRITES_PER_CALLER, WRITE_QUEUE)),
            groups: std::sync::atomic::AtomicU64::new(0),
            grouped: std::sync::atomic::AtomicU64::new(0),
            served: RwLock::new(Arc::new(served)),
            store,
            changes,
            revision,
            base_revision,
            subscribers: Arc::new(AtomicUsize::new(0)),
            needs_resync: AtomicBool::new(false),
            policy_dir,
            config,
            limiter,
            work,
            failures,
            creations,
            throttled: std::sync::Mutex::default(),
            keys: RwLock::new(Arc::new(Keys::new(keys))),
            signer,
            feeds: Arc::default(),
            checkpointing: Mutex::new(()),
            checkpoint_soon: Arc::default(),
            started_from,
            reads: std::sync::Mutex::default(),
            follow_soon: Arc::default(),
            closing: watch::channel(false).0,
            store_health: std::sync::Mutex::new(StoreHealth {
                answered: Some((std::time::Instant::now(), started_revision)),
                failing: false,
            }),
            metrics: crate::observe::Metrics::new(),
            feed_marks: Arc::default(),
            feed_ids: AtomicU64::new(0),
        });
        tokio::spawn(follow(
            Arc::downgrade(&service),
            service.store.appended_elsewhere(),
            Arc::clone(&service.follow_soon),
        ));
        tokio::spawn(group_commit(Arc::downgrade(&service), queue));
        tokio::spawn(checkpoints(
            Arc::downgrade(&service),
            started_from.0,
            Arc::clone(&service.checkpoint_soon),
        ));
        // Keys are read again from the store periodically, for as long as the service
        // lives: `clearance keys create|revoke` on the same store takes effect meanwhile.
        let weak = Arc::downgrade(&service);
        let every = service.config.keys_refresh.max(Duration::from_millis(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(s) = weak.upgrade() else { return };
                if let Err(e) = s.refresh_keys().await {
                    tracing::warn!("reading the service keys: {e}");
                }
                // Callers whose budget is full again are forgotten.
                if let Some(l) = &s.limiter {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
                if let Some(l) = &s.failures {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
                let now = std::time::Instant::now();
                if let Ok(mut t) = s.throttled.lock() {
                    t.retain(|_, until| *until > now);
                }
            }
        });
        Ok(service)
    }
}

/// A snapshot loaded into the module early: its revision and policy hash, prepared.
pub(crate) type Early = (u64, [u8; 32], crate::runtime::Prepared);
