//! The runtime: one wasmtime `Engine`, the module compiled once (and cached as `.cwasm`
//! by artifact hash), an `InstancePre`, the pooling allocator, and a pool of long-lived
//! instances that each hold the current snapshot. Calls run on tokio's blocking pool
//! behind a semaphore, so load is bounded and excess callers wait; a caller's large work
//! waits for its own turns first, so it never holds every instance. Every call has a
//! deadline (epoch interruption, ticked by a thread of the runtime) and every instance a
//! memory cap.

use crate::codes::Code;
use clearance_core::ErrorData;
use clearance_core::protocol::Info;
use clearance_core::wire::{WireDecision, decode_decisions};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Memory, Module, OptLevel,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, TypedFunc,
};

/// How the runtime bounds its work.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Instances that may run at once (and the pool's size).
    pub instances: u32,
    /// The memory cap of one instance, in bytes.
    pub memory_limit: usize,
    /// The deadline of one call, before the per-query allowance.
    pub call_deadline: Duration,
    /// Extra time per query of a binary batch.
    pub per_query: Duration,
    /// The deadline for loading a snapshot.
    pub load_deadline: Duration,
    /// Callers that may wait for an instance; one more is answered `host.busy` at once.
    pub queue: u32,
    /// How long a caller waits for an instance before it is answered `host.busy`.
    pub queue_timeout: Duration,
    /// Where compiled modules are cached (`<sha256>.cwasm`, with the digest of its own
    /// bytes beside it); none disables the cache. The host must own the directory: one
    /// that others may write to is refused.
    pub cache_dir: Option<PathBuf>,
    /// Writes `/tmp/perf-<pid>.map` so `perf` can name the module's functions (a module
    /// built with its name section): for profiling only.
    pub perf_map: bool,
    /// Changes the instances apply in place before an instance's bytes become the new
    /// base (so a fresh instance replays at most about this many).
    pub rebase_after: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            instances: 4,
            memory_limit: 1 << 30,
            call_deadline: Duration::from_millis(500),
            per_query: Duration::from_micros(20),
            load_deadline: Duration::from_secs(30),
            queue: 1024,
            queue_timeout: Duration::from_secs(5),
            cache_dir: None,
            perf_map: false,
            rebase_after: 4096,
        }
    }
}

/// What went wrong at the host: always a denial for the requests concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The module's bytes are not the artifact that was built.
    #[error("module hash `{actual}` differs from the built artifact `{expected}`")]
    ModuleMismatch {
        /// The hash the build recorded.
        expected: String,
        /// The hash of the bytes given.
        actual: String,
    },
    /// wasmtime refused the module or its configuration.
    #[error("the wasm runtime could not start: {0}")]
    Setup(String),
    /// The module trapped: past its deadline, out of memory, or a fault.
    #[error("the module trapped: {0}")]
    Trap(String),
    /// The module answered with an error.
    #[error("{}: {}", .0.code, .0.message)]
    Module(ErrorData),
    /// The module's answer could not be read.
    #[error("unreadable answer from the module: {0}")]
    Protocol(String),
    /// No snapshot was loaded yet.
    #[error("no snapshot is loaded")]
    NotLoaded,
    /// Every instance is busy and the queue is full, or the wait for one ran out.
    #[error("every instance is busy: {0}")]
    Busy(String),
}

impl HostError {
    /// The code of a failure of the host's (a module's own error has the module's code).
    pub fn code(&self) -> Code {
        match self {
            HostError::ModuleMismatch { .. } => Code::HostModuleMismatch,
            HostError::Setup(_) => Code::HostSetup,
            HostError::Trap(_) => Code::HostTrap,
            HostError::Protocol(_) | HostError::Module(_) => Code::HostProtocol,
            HostError::Busy(_) => Code::HostBusy,
            HostError::NotLoaded => Code::HostNotLoaded,
        }
    }

    /// The error as data for a boundary.
    pub fn data(&self) -> ErrorData {
        match self {
            HostError::Module(e) => e.clone(),
            other => {
                let code = other.code();
                ErrorData {
                    code: code.as_str().into(),
                    message: other.to_string(),
                    help: code.help().into(),
                }
            }
        }
    }
}

/// One decision from the host: the module's decision, or a denial because of an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or deny; always deny when `error` is set.
    pub allowed: bool,
    /// The module's decision, when it decided.
    pub decision: Option<WireDecision>,
    /// Why there is no decision.
    pub error: Option<ErrorData>,
}

struct HostState {
    limits: StoreLimits,
}

/// A long-lived instance with the exports the host calls.
struct Worker {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    free: TypedFunc<(i32, i32), ()>,
    call: TypedFunc<(i32, i32), i64>,
    check: TypedFunc<(i32, i32), i64>,
    load: TypedFunc<(i32, i32), i64>,
    snapshot: TypedFunc<(), i64>,
    generation: u64,
    /// The revision this instance holds, within its generation.
    revision: u64,
}

/// An instance taken out of the pool with its permit ([`Runtime::write_in_order`]).
/// Dropped, it frees its pool slots before its permit.
pub struct Held {
    worker: Option<Worker>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// What every instance decides on: a snapshot's bytes (a generation: the state loaded
/// at start, after a policy reload, or re-read from the store) and the changes since,
/// each an `apply_deltas` call. An instance loads the bytes once and then applies each
/// change in place as it is taken for a call, so a write never reloads a snapshot.
struct Current {
    generation: u64,
    bytes: Arc<Vec<u8>>,
    /// The revision of `bytes`.
    base: u64,
    /// The changes after `base`, in revision order: the revision each leads to and its
    /// `apply_deltas` call.
    changes: Vec<(u64, Arc<String>)>,
    /// The bytes of those calls.
    bytes_held: usize,
}

/// The bytes of changes held past which an instance's bytes become the new base, however
/// few the changes.
const REBASE_BYTES: usize = 64 << 20;

/// A snapshot loaded into one instance and proven loadable, not yet the one every
/// instance decides on: [`Runtime::install`] makes it so, and cannot fail.
pub struct Prepared {
    generation: u64,
    bytes: Arc<Vec<u8>>,
    info: Info,
}

impl Prepared {
    /// What the module said of the snapshot (`info`).
    pub fn info(&self) -> &Info {
        &self.info
    }
}

/// The wasm module on wasmtime, ready to decide.
pub struct Runtime {
    pre: InstancePre<HostState>,
    engine: Engine,
    config: RuntimeConfig,
    module_hash: String,
    /// Instances not in use. With the permits, at most `config.instances` instances
    /// exist at once, and the pooling allocator has room for every one of them (and a
    /// spare), so taking an instance never fails for want of a slot.
    idle: Mutex<Vec<Worker>>,
    permits: Arc<Semaphore>,
    /// Callers waiting for a permit, bounded by `config.queue`.
    waiting: AtomicUsize,
    current: Mutex<Option<Current>>,
    generations: AtomicU64,
    /// Set while the changes are being folded into new base bytes.
    rebasing: AtomicBool,
    /// Each caller's turns.
    shares: Arc<Shares>,
    stats: Stats,
    ticker: Arc<AtomicBool>,
}

/// Each caller's turns on the instances ([`Runtime::turn`]).
#[derive(Debug)]
struct Shares {
    /// The turns one caller may hold at once.
    per_caller: usize,
    /// The turns of the callers holding or waiting for one, by caller.
    held: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// One of a caller's turns on the instances ([`Runtime::turn`]), given back when dropped.
#[derive(Debug)]
pub struct Turn {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    caller: String,
    shares: Arc<Shares>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut held = self
            .shares
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // No other turn of the caller held or waited for: its entry goes.
        if held
            .get(&self.caller)
            .is_some_and(|turns| Arc::strong_count(turns) == 1)
        {
            held.remove(&self.caller);
        }
    }
}

/// Counters an operator reads: instances replaced, traps, callers turned away.
#[derive(Debug, Default)]
pub struct Stats {
    /// Instances created (the first ones and every replacement).
    pub instances_created: AtomicU64,
    /// Calls that trapped (past their deadline, out of memory, a fault).
    pub traps: AtomicU64,
    /// Callers answered `host.busy`.
    pub busy: AtomicU64,
}

/// How often the deadline clock ticks.
const TICK: Duration = Duration::from_millis(1);

fn ticks(d: Duration) -> u64 {
    u64::try_from((d.as_micros() / TICK.as_micros()).max(1)).unwrap_or(u64::MAX)
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.store(true, Ordering::Relaxed);
    }
}

fn setup(e: impl std::fmt::Display) -> HostError {
    HostError::Setup(e.to_string())
}

/// The lowercase hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Decrements the count of waiting callers when a wait ends, however it ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Runtime {
    /// Starts a runtime on `wasm`, refusing bytes whose SHA-256 is not `expected_sha256`.
    pub fn new(
        wasm: &[u8],
        expected_sha256: &str,
        config: RuntimeConfig,
    ) -> Result<Runtime, HostError> {
        let actual = sha256_hex(wasm);
        let expected = expected_sha256.trim().to_lowercase();
        if actual != expected {
            return Err(HostError::ModuleMismatch { expected, actual });
        }
        if config.instances == 0 {
            return Err(HostError::Setup("at least one instance is needed".into()));
        }
        // Room for every instance the permits allow, and one spare. An instance's store
        // takes two memories of the pool: its linear memory and its GC heap (the module's
        // externref table), so memories are twice the instances.
        let slots = config.instances + 1;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(slots)
            .total_memories(2 * slots)
            .total_gc_heaps(slots)
            .total_tables(2 * slots)
            .total_stacks(slots)
            .max_tables_per_module(2)
            .max_memory_size(config.memory_limit);
        let mut wc = Config::new();
        wc.epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if config.perf_map {
            wc.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wc).map_err(setup)?;
        let module = load_module(&engine, wasm, &actual, config.cache_dir.as_deref())?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        linker
            .define_unknown_imports_as_traps(&module)
            .map_err(setup)?;
        let pre = linker.instantiate_pre(&module).map_err(setup)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (clock, done) = (engine.clone(), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("clearance-deadlines".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    clock.increment_epoch();
                }
            })
            .map_err(setup)?;
        let shares = Arc::new(Shares {
            per_caller: (config.instances as usize).saturating_sub(1).max(1),
            held: Mutex::default(),
        });
        Ok(Runtime {
            ticker: stop,
            pre,
            engine,
            permits: Arc::new(Semaphore::new(config.instances as usize)),
            waiting: AtomicUsize::new(0),
            config,
            module_hash: actual,
            idle: Mutex::new(Vec::new()),
            current: Mutex::new(None),
            generations: AtomicU64::new(0),
            rebasing: AtomicBool::new(false),
            shares,
            stats: Stats::default(),
        })
    }

    /// The SHA-256 of the module this runtime runs.
    pub fn module_hash(&self) -> &str {
        &self.module_hash
    }

    /// The runtime's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// How many instances are free now: no caller holds their permit.
    pub fn instances_free(&self) -> usize {
        self.permits.available_permits()
    }

    fn worker(&self) -> Result<Worker, HostError> {
        if let Some(w) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(w);
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.config.memory_limit)
            .instances(1)
            .build();
        let mut store = Store::new(&self.engine, HostState { limits });
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(ticks(self.config.load_deadline));
        // The pool has a slot for every permit; failing here is a fault of the host's
        // set-up, reported as such (never as a trap of the request).
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| HostError::Setup(format!("cannot start an instance: {e:#}")))?;
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| HostError::Protocol("no exported memory".into()))?;
        let f = |store: &mut Store<HostState>, name: &str| {
            instance
                .get_func(&mut *store, name)
                .ok_or_else(|| HostError::Protocol(format!("no export `{name}`")))
        };
        let alloc = f(&mut store, "clr_alloc")?
            .typed(&store)
            .map_err(|e| HostError::Protocol(e.to_string()))?;
        let free = f(&mut store, "clr_free")?
            .typed(&store)
            .map_err(|e| HostError::Protocol(e.to_string()))?;
        let call = f(&mut store, "clr_call")?
            .typed(&store)
            .map_err(|e| HostError::Protocol(e.to_string()))?;
        let check = f(&mut store, "clr_check")?
            .typed(&store)
            .map_err(|e| HostError::Protocol(e.to_string()))?;
        let load = f(&mut store, "clr_load_snapshot")?
            .typed(&store)
            .map_err(|e| HostError::Protocol(e.to_string()))?;
        let snapshot = f(&mut store, "clr_snapshot")?
            .typed(&store)
            .map_err(|e| HostError::Protocol(e.to_string()))?;
        Ok(Worker {
            store,
            memory,
            alloc,
            free,
            call,
            check,
            load,
            snapshot,
            generation: 0,
            revision: 0,
        })
    }

    /// Waits for a permit: at most `config.queue` callers wait, each at most
    /// `config.queue_timeout`; anyone else is answered `host.busy` at once.
    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, HostError> {
        if let Ok(p) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(p);
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if queued >= self.config.queue as usize {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            return Err(HostError::Busy(format!(
                "{} callers are already waiting for one of {} instances",
                queued, self.config.instances
            )));
        }
        match tokio::time::timeout(
            self.config.queue_timeout,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(setup(e)),
            Err(_) => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                Err(HostError::Busy(format!(
                    "no instance was free within {} ms",
                    self.config.queue_timeout.as_millis()
                )))
            }
        }
    }

    /// Waits for one of `caller`'s turns for large work (a large batch, a large write
    /// judged first, a large body read). A caller holds at most one instance fewer than
    /// there are (at least one) at once, so however much large work one caller sends, an
    /// instance is left to the others, and its work past its turns waits behind its own,
    /// not in the queue every caller shares. Past `queue_timeout` the wait is answered
    /// `host.busy`.
    pub async fn turn(&self, caller: &str) -> Result<Turn, HostError> {
        let per_caller = self.shares.per_caller;
        let turns = {
            let mut held = self
                .shares
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match held.get(caller) {
                Some(turns) => Arc::clone(turns),
                None => {
                    let turns = Arc::new(Semaphore::new(per_caller));
                    held.insert(caller.to_string(), Arc::clone(&turns));
                    turns
                }
            }
        };
        let permit = match Arc::clone(&turns).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(self.config.queue_timeout, turns.acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => return Err(setup(e)),
                    Err(_) => {
                        self.stats.busy.fetch_add(1, Ordering::Relaxed);
                        return Err(HostError::Busy(format!(
                            "`{caller}` holds its {per_caller} turns on the instances, and no turn came within {} ms",
                            self.config.queue_timeout.as_millis()
                        )));
                    }
                }
            }
        };
        Ok(Turn {
            permit: Some(permit),
            caller: caller.to_string(),
            shares: Arc::clone(&self.shares),
        })
    }

    /// Runs `f` on a worker holding the current snapshot, on the blocking pool, behind the
    /// semaphore. A worker whose call trapped is dropped (its pool slots are freed before
    /// its permit is), so the next call gets a fresh instance. A module error (a bad
    /// request) is an answer, not a fault: the worker stays.
    async fn with_worker<T: Send + 'static>(
        self: &Arc<Self>,
        needs_snapshot: bool,
        f: impl FnOnce(&mut Worker) -> Result<T, HostError> + Send + 'static,
    ) -> Result<T, HostError> {
        let permit = self.permit().await?;
        let this = Arc::clone(self);
        let (answer, answered) = tokio::sync::oneshot::channel();
        let joined = tokio::task::spawn_blocking(move || {
            let mut w = match this.worker() {
                Ok(w) => w,
                Err(e) => {
                    drop(permit);
                    let _ = answer.send(Err(e));
                    return;
                }
            };
            let result = this
                .ensure_loaded(&mut w, needs_snapshot)
                .and_then(|()| f(&mut w));
            let keep = this.keeps(&result);
            if keep && needs_snapshot && result.is_ok() {
                // The caller is answered first; then the changes made meanwhile are
                // applied before the instance goes back, its permit still held: whoever
                // holds an instance while changes come in pays for them, not the next
                // caller, who may have come for one check.
                let _ = answer.send(result);
                let current = this.ensure_loaded(&mut w, true).is_ok();
                this.put_back(w, current);
                drop(permit);
            } else {
                this.put_back(w, keep);
                drop(permit);
                let _ = answer.send(result);
            }
        });
        match answered.await {
            Ok(result) => result,
            Err(_) => Err(HostError::Trap(match joined.await {
                Err(e) => format!("the worker thread failed: {e}"),
                Ok(()) => "the worker thread ended without an answer".into(),
            })),
        }
    }

    /// Runs `f` on this thread when an instance is free at once and already holds the
    /// current state: a short call then costs no hop to the blocking pool and back (two
    /// thread switches, most of a single check's time in the service). Gives `f` back,
    /// not run, when no permit or no such instance is free at once; the caller then takes
    /// the pool's way, which waits, loads and applies changes as needed.
    fn try_inline<T, F: FnOnce(&mut Worker) -> Result<T, HostError>>(
        &self,
        f: F,
    ) -> Result<Result<T, HostError>, F> {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return Err(f);
        };
        let Some(mut w) = self.idle.lock().ok().and_then(|mut v| v.pop()) else {
            return Err(f);
        };
        if !self.is_current(&w) {
            self.put_back(w, true);
            drop(permit);
            return Err(f);
        }
        let result = f(&mut w);
        let keep = self.keeps(&result);
        self.put_back(w, keep);
        drop(permit);
        Ok(result)
    }

    /// Whether an instance may be used again after answering `result`: not after a trap
    /// or a fault of the host.
    fn keeps<T>(&self, result: &Result<T, HostError>) -> bool {
        match result {
            Ok(_) | Err(HostError::Module(_) | HostError::NotLoaded) => true,
            Err(HostError::Trap(_)) => {
                self.stats.traps.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(_) => false,
        }
    }

    /// Whether `w` holds the current snapshot with every change made since.
    fn is_current(&self, w: &Worker) -> bool {
        self.current.lock().ok().is_some_and(|c| {
            c.as_ref().is_some_and(|c| {
                c.generation == w.generation
                    && w.generation != 0
                    && w.revision >= c.base
                    && c.changes.last().is_none_or(|(r, _)| *r <= w.revision)
            })
        })
    }

    /// Gives an instance back to the pool when `keep`, or drops it (freeing its pool
    /// slots, before its permit is given back).
    fn put_back(&self, w: Worker, keep: bool) {
        if keep && let Ok(mut idle) = self.idle.lock() {
            idle.push(w);
        }
    }

    /// Brings `w` to the current state: the current bytes loaded (unless it holds them,
    /// or a later revision of the same generation), then every change it has not applied.
    fn ensure_loaded(&self, w: &mut Worker, needs_snapshot: bool) -> Result<(), HostError> {
        let plan = self.current.lock().ok().and_then(|c| {
            c.as_ref().map(|c| {
                let reload = c.generation != w.generation || w.revision < c.base;
                let from = if reload { c.base } else { w.revision };
                let start = c.changes.partition_point(|(r, _)| *r <= from);
                let todo: Vec<(u64, Arc<String>)> =
                    c.changes.get(start..).unwrap_or_default().to_vec();
                (
                    c.generation,
                    reload.then(|| (Arc::clone(&c.bytes), c.base)),
                    todo,
                )
            })
        });
        let Some((generation, reload, todo)) = plan else {
            return if needs_snapshot {
                Err(HostError::NotLoaded)
            } else {
                Ok(())
            };
        };
        if let Some((bytes, base)) = reload {
            // Whatever it held is gone once a load starts.
            w.generation = 0;
            w.store.set_epoch_deadline(ticks(self.config.load_deadline));
            let answer = w.exchange(|w, p, l| w.load.call(&mut w.store, (p, l)), &bytes)?;
            raw_ok(&answer)?;
            w.generation = generation;
            w.revision = base;
        }
        for (revision, call) in todo {
            w.store.set_epoch_deadline(ticks(self.config.load_deadline));
            let answer = w
                .exchange(|w, p, l| w.call.call(&mut w.store, (p, l)), call.as_bytes())
                .and_then(|a| raw_ok(&a));
            match answer {
                Ok(_) => w.revision = revision,
                // A change every other instance took and this one refuses: this instance
                // is not to be trusted with any later decision.
                Err(e) => {
                    w.generation = 0;
                    return Err(HostError::Trap(format!(
                        "an instance could not apply the change to revision {revision}: {e}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Makes the change leading to `revision` (its deltas, as an `apply_deltas` call)
    /// part of what every instance decides on: each applies it in place before its next
    /// call. Past `rebase_after` changes, an instance's bytes become the new base, so a
    /// fresh instance replays a bounded list.
    pub fn push_change(self: &Arc<Self>, revision: u64, apply_call: String) {
        let mut c = match self.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(cur) = c.as_mut() else { return };
        cur.bytes_held = cur.bytes_held.saturating_add(apply_call.len());
        cur.changes.push((revision, Arc::new(apply_call)));
        let long = cur.changes.len() > self.config.rebase_after || cur.bytes_held > REBASE_BYTES;
        drop(c);
        if long && !self.rebasing.swap(true, Ordering::AcqRel) {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = this.rebase().await {
                    tracing::warn!("the instances' base was not renewed: {e}");
                }
                this.rebasing.store(false, Ordering::Release);
            });
        }
    }

    /// The revision of the bytes a fresh instance starts from (the changes after it are
    /// applied in place), when a snapshot is loaded.
    pub fn base_revision(&self) -> Option<u64> {
        let c = match self.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        c.as_ref().map(|cur| cur.base)
    }

    /// Takes the bytes of an instance holding the latest change as the new base.
    async fn rebase(self: &Arc<Self>) -> Result<(), HostError> {
        let deadline = ticks(self.config.load_deadline);
        let (generation, revision, bytes) = self
            .with_worker(true, move |w| {
                w.store.set_epoch_deadline(deadline);
                let packed = w
                    .snapshot
                    .call(&mut w.store, ())
                    .map_err(|e| HostError::Trap(format!("{e:#}")))?;
                let framed = w.take(packed)?;
                match framed.split_first() {
                    Some((0, rest)) => Ok((w.generation, w.revision, rest.to_vec())),
                    Some((1, rest)) => Err(module_error(rest)),
                    _ => Err(HostError::Protocol("empty answer".into())),
                }
            })
            .await?;
        let mut c = match self.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(cur) = c.as_mut()
            && cur.generation == generation
            && revision > cur.base
        {
            cur.bytes = Arc::new(bytes);
            cur.base = revision;
            cur.changes.retain(|(r, _)| *r > revision);
            cur.bytes_held = cur.changes.iter().map(|(_, c)| c.len()).sum();
        }
        Ok(())
    }

    /// Runs `calls` (each a `write` call that keeps what it is allowed to do) in order on
    /// one instance at the latest revision, so each is judged on the state the ones before
    /// it leave; gives each call's answer (a module error is that call's answer) and the
    /// instance, held out of the pool until [`Runtime::release`]. A call that traps fails
    /// the run, with its index (the instance is dropped); a failure before any call has
    /// none.
    pub async fn write_in_order(
        self: &Arc<Self>,
        calls: Vec<String>,
    ) -> Result<(Vec<Result<Box<RawValue>, HostError>>, Held), (Option<usize>, HostError)> {
        let permit = self.permit().await.map_err(|e| (None, e))?;
        let this = Arc::clone(self);
        let deadline = ticks(self.config.load_deadline);
        tokio::task::spawn_blocking(move || {
            let mut w = this.worker().map_err(|e| (None, e))?;
            this.ensure_loaded(&mut w, true).map_err(|e| (None, e))?;
            let mut answers = Vec::with_capacity(calls.len());
            for (i, call) in calls.into_iter().enumerate() {
                w.store.set_epoch_deadline(deadline);
                let answer = w
                    .exchange(|w, p, l| w.call.call(&mut w.store, (p, l)), call.as_bytes())
                    .and_then(|a| raw_ok(&a));
                if let Err(e @ (HostError::Trap(_) | HostError::Protocol(_))) = answer {
                    this.stats.traps.fetch_add(1, Ordering::Relaxed);
                    return Err((Some(i), e));
                }
                answers.push(answer);
            }
            Ok((
                answers,
                Held {
                    worker: Some(w),
                    _permit: permit,
                },
            ))
        })
        .await
        .map_err(|e| {
            (
                None,
                HostError::Trap(format!("the worker thread failed: {e}")),
            )
        })?
    }

    /// Gives back an instance from [`Runtime::write_in_order`]: at `revision` when what it
    /// kept was stored (and handed to the others with [`Runtime::push_change`]), or
    /// dropped when it was not (it holds changes no one else will).
    pub fn release(&self, mut held: Held, revision: Option<u64>) {
        if let (Some(mut w), Some(r)) = (held.worker.take(), revision) {
            w.revision = r;
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(w);
            }
        }
    }

    /// The revision the instances decide on (the current base and its changes).
    pub fn revision(&self) -> Option<u64> {
        let c = self.current.lock().ok()?;
        c.as_ref()
            .map(|c| c.changes.last().map_or(c.base, |(r, _)| *r))
    }

    /// Loads `bytes` (a snapshot, policy included) into one instance, proving the module
    /// reads it, without changing what any other call decides on. The instance is tagged
    /// with a generation of its own, so it reloads the current snapshot for its next call
    /// unless [`Runtime::install`] makes this one current.
    pub async fn prepare(self: &Arc<Self>, bytes: Vec<u8>) -> Result<Prepared, HostError> {
        let bytes = Arc::new(bytes);
        let probe = Arc::clone(&bytes);
        let generation = self.generations.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = ticks(self.config.load_deadline);
        let info = self
            .with_worker(false, move |w| {
                w.generation = 0;
                w.store.set_epoch_deadline(deadline);
                let answer = w.exchange(|w, p, l| w.load.call(&mut w.store, (p, l)), &probe)?;
                let info: Info = serde_json::from_str(raw_ok(&answer)?.get())
                    .map_err(|e| HostError::Protocol(format!("unreadable `info`: {e}")))?;
                w.generation = generation;
                w.revision = info.revision;
                Ok(info)
            })
            .await?;
        Ok(Prepared {
            generation,
            bytes,
            info,
        })
    }

    /// Makes a prepared snapshot the one every instance decides on. It cannot fail:
    /// instances load it before their next call.
    pub fn install(&self, prepared: Prepared) {
        let mut c = match self.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let base = prepared.info.revision;
        *c = Some(Current {
            generation: prepared.generation,
            bytes: prepared.bytes,
            base,
            changes: Vec::new(),
            bytes_held: 0,
        });
    }

    /// Makes `bytes` (a snapshot, policy included) the snapshot every instance decides on.
    /// It is loaded into one instance first, so a bad snapshot is refused and the old one
    /// keeps serving.
    pub async fn load_snapshot(self: &Arc<Self>, bytes: Vec<u8>) -> Result<Info, HostError> {
        let prepared = self.prepare(bytes).await?;
        let info = prepared.info.clone();
        self.install(prepared);
        Ok(info)
    }

    /// A typed call of the protocol (`clearance_core::protocol`) on the current snapshot.
    pub async fn run(
        self: &Arc<Self>,
        call: &clearance_core::protocol::Call,
    ) -> Result<serde_json::Value, HostError> {
        let raw = self.run_raw(call).await?;
        serde_json::from_str(raw.get()).map_err(|e| HostError::Protocol(e.to_string()))
    }

    /// A typed call on the current snapshot, answered with its result as the module
    /// wrote it (JSON text, unparsed): what an HTTP answer passes on as it is.
    pub async fn run_raw(
        self: &Arc<Self>,
        call: &clearance_core::protocol::Call,
    ) -> Result<Box<RawValue>, HostError> {
        Ok(self.run_raw_with(call, |_| ()).await?.0)
    }

    /// [`Runtime::run_raw`], and `read` of the answer, on the thread that called the
    /// module, while it holds the instance's permit: what is read of a large answer is
    /// work of the instances, shared between callers as their calls are, not work beside
    /// them.
    pub async fn run_raw_with<T: Send + 'static>(
        self: &Arc<Self>,
        call: &clearance_core::protocol::Call,
        read: fn(&str) -> T,
    ) -> Result<(Box<RawValue>, T), HostError> {
        let json = call.to_json().map_err(HostError::Module)?;
        let deadline = self.config.call_deadline;
        let answer = move |w: &mut Worker| {
            let raw = w.call_raw(json.as_bytes(), deadline)?;
            let read = read(raw.get());
            Ok((raw, read))
        };
        let answer = if short(call) {
            match self.try_inline(answer) {
                Ok(answered) => return answered,
                Err(answer) => answer,
            }
        } else {
            answer
        };
        self.with_worker(true, answer).await
    }

    /// A JSON call (see ARCHITECTURE.md) on the current snapshot.
    pub async fn call(self: &Arc<Self>, json: String) -> Result<serde_json::Value, HostError> {
        self.call_typed(json).await
    }

    /// A JSON call on the current snapshot, its answer read as `T`.
    pub async fn call_typed<T: serde::de::DeserializeOwned>(
        self: &Arc<Self>,
        json: String,
    ) -> Result<T, HostError> {
        let raw = self.call_within(json, self.config.call_deadline).await?;
        serde_json::from_str(raw.get()).map_err(|e| HostError::Protocol(e.to_string()))
    }

    async fn call_within(
        self: &Arc<Self>,
        json: String,
        deadline: Duration,
    ) -> Result<Box<RawValue>, HostError> {
        self.with_worker(true, move |w| w.call_raw(json.as_bytes(), deadline))
            .await
    }

    /// Decides binary queries (`clearance_core::wire`), through the module.
    pub async fn check_ids(
        self: &Arc<Self>,
        queries: Vec<u8>,
    ) -> Result<Vec<WireDecision>, HostError> {
        // Only the deadline depends on `n`, and it saturates.
        let n = u32::try_from(queries.len() / clearance_core::wire::QUERY_LEN).unwrap_or(u32::MAX);
        let deadline = ticks(
            self.config
                .call_deadline
                .saturating_add(self.config.per_query.saturating_mul(n)),
        );
        let raw = self
            .with_worker(true, move |w| {
                w.store.set_epoch_deadline(deadline);
                w.exchange(|w, p, l| w.check.call(&mut w.store, (p, l)), &queries)
            })
            .await?;
        match raw.split_first() {
            Some((0, rest)) => decode_decisions(rest)
                .ok_or_else(|| HostError::Protocol("undecodable decisions".into())),
            Some((1, rest)) => Err(module_error(rest)),
            _ => Err(HostError::Protocol("empty answer".into())),
        }
    }

    /// Decides binary queries; any error denies every query of the batch, with the error.
    pub async fn check_or_deny(self: &Arc<Self>, queries: Vec<u8>) -> Vec<Verdict> {
        let n = queries.len() / clearance_core::wire::QUERY_LEN;
        match self.check_ids(queries).await {
            Ok(ds) if ds.len() == n => ds
                .into_iter()
                .map(|d| Verdict {
                    allowed: d.allowed,
                    decision: Some(d),
                    error: None,
                })
                .collect(),
            Ok(ds) => deny_all(
                n.max(1),
                HostError::Protocol(format!("{} decisions for {n} queries", ds.len())).data(),
            ),
            Err(e) => deny_all(n.max(1), e.data()),
        }
    }
}

fn deny_all(n: usize, error: ErrorData) -> Vec<Verdict> {
    (0..n)
        .map(|_| Verdict {
            allowed: false,
            decision: None,
            error: Some(error.clone()),
        })
        .collect()
}

fn module_error(json: &[u8]) -> HostError {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: ErrorData,
    }
    match serde_json::from_slice::<Envelope>(json) {
        Ok(e) => HostError::Module(e.error),
        Err(e) => HostError::Protocol(format!("unreadable error: {e}")),
    }
}

/// The `ok` of a module's answer as the module wrote it, unparsed; its error otherwise.
fn raw_ok(answer: &[u8]) -> Result<Box<RawValue>, HostError> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        ok: Option<&'a RawValue>,
    }
    let envelope: Envelope<'_> =
        serde_json::from_slice(answer).map_err(|e| HostError::Protocol(e.to_string()))?;
    match envelope.ok {
        Some(ok) => Ok(ok.to_owned()),
        None => Err(module_error(answer)),
    }
}

impl Worker {
    /// Copies the answer buffer `packed` out of module memory and frees it.
    fn take(&mut self, packed: i64) -> Result<Vec<u8>, HostError> {
        let trap = |e: wasmtime::Error| HostError::Trap(format!("{e:#}"));
        let (out_ptr, out_len) = (
            (packed as u64 >> 32) as u32,
            (packed as u64 & 0xffff_ffff) as u32,
        );
        let out = self
            .memory
            .data(&self.store)
            .get(out_ptr as usize..out_ptr as usize + out_len as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| HostError::Protocol("the answer is past the end of memory".into()))?;
        self.free
            .call(&mut self.store, (out_ptr as i32, out_len as i32))
            .map_err(trap)?;
        Ok(out)
    }

    /// Copies `input` into module memory, runs `f` on it, copies the answer out and frees
    /// both buffers.
    fn exchange(
        &mut self,
        f: impl FnOnce(&mut Worker, i32, i32) -> wasmtime::Result<i64>,
        input: &[u8],
    ) -> Result<Vec<u8>, HostError> {
        let trap = |e: wasmtime::Error| HostError::Trap(format!("{e:#}"));
        let len = i32::try_from(input.len())
            .map_err(|_| HostError::Trap("input larger than 2 GiB".into()))?;
        let ptr = self.alloc.call(&mut self.store, len).map_err(trap)?;
        self.memory
            .write(&mut self.store, ptr as u32 as usize, input)
            .map_err(|e| HostError::Trap(e.to_string()))?;
        let packed = f(self, ptr, len).map_err(trap)?;
        self.free.call(&mut self.store, (ptr, len)).map_err(trap)?;
        self.take(packed)
    }

    /// A JSON call within `deadline`: its `ok` as the module wrote it, or the module's
    /// error.
    fn call_raw(&mut self, json: &[u8], deadline: Duration) -> Result<Box<RawValue>, HostError> {
        self.store.set_epoch_deadline(ticks(deadline));
        let answer = self.exchange(|w, p, l| w.call.call(&mut w.store, (p, l)), json)?;
        raw_ok(&answer)
    }
}

/// Whether `call` is short enough to run on the caller's thread when an instance is free
/// at once: one decision, or a handful. Everything else goes to the blocking pool.
fn short(call: &clearance_core::protocol::Call) -> bool {
    use clearance_core::protocol::Call;
    match call {
        Call::Check { .. } | Call::Gates { .. } | Call::AllowedActions { .. } => true,
        Call::CheckBatch { requests } => requests.len() <= INLINE_BATCH,
        _ => false,
    }
}

/// The most requests of a batch decided on the caller's thread.
const INLINE_BATCH: usize = 8;

/// Compiles the module, or deserialises it from the cache keyed by its hash.
///
/// A cached `.cwasm` is native code that wasmtime runs without checking it, so it is
/// used only when it is this host's own output: the directory must be the host's alone
/// (no one else may write to it; it is made so, or the cache is not used), and the
/// file's SHA-256 must equal the digest recorded beside it when the host compiled it.
/// The bytes that were hashed are the bytes deserialised. Anything else is discarded and
/// the module compiled again.
fn load_module(
    engine: &Engine,
    wasm: &[u8],
    hash: &str,
    cache: Option<&std::path::Path>,
) -> Result<Module, HostError> {
    let cache = cache.and_then(|d| match own_dir(d) {
        Ok(()) => Some(d),
        Err(e) => {
            tracing::warn!("not caching compiled modules in {}: {e}", d.display());
            None
        }
    });
    let paths = cache.map(|d| {
        (
            d.join(format!("{hash}.cwasm")),
            d.join(format!("{hash}.cwasm.sha256")),
        )
    });
    if let Some((file, digest)) = &paths
        && let (Ok(bytes), Ok(recorded)) = (std::fs::read(file), std::fs::read_to_string(digest))
    {
        if sha256_hex(&bytes) == recorded.trim() {
            // SAFETY: these bytes are this host's own `Module::serialize` output for this
            // artifact: their SHA-256 is the digest the host recorded when it wrote them,
            // in a directory no one else may write to. wasmtime also checks that they
            // were produced by a compatible engine and configuration.
            #[allow(unsafe_code)]
            let module = unsafe { Module::deserialize(engine, &bytes) };
            if let Ok(m) = module {
                return Ok(m);
            }
        }
        tracing::warn!(
            "discarding {}: not this host's compilation; compiling again",
            file.display()
        );
        let _ = std::fs::remove_file(file);
        let _ = std::fs::remove_file(digest);
    }
    let module = Module::new(engine, wasm).map_err(setup)?;
    if let Some((file, digest)) = &paths
        && let Ok(bytes) = module.serialize()
    {
        let tmp = file.with_extension("cwasm.tmp");
        let tmp_digest = digest.with_extension("sha256.tmp");
        let written = std::fs::write(&tmp, &bytes).is_ok()
            && std::fs::write(&tmp_digest, sha256_hex(&bytes)).is_ok()
            && std::fs::rename(&tmp, file).is_ok()
            && std::fs::rename(&tmp_digest, digest).is_ok();
        if !written {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&tmp_digest);
        }
    }
    Ok(module)
}

/// Makes `dir` a directory only its owner may read or write (creating it so), or says
/// why it cannot be: one that someone else owns cannot be changed, and is refused.
fn own_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| e.to_string())?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        // Only the owner may change a directory's mode: success proves it is ours.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("others may write to it and it cannot be made private: {e}"))?;
    }
    Ok(())
}
